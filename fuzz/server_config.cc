// SPDX-License-Identifier: MIT
//
// libFuzzer target for debra-server's --config file: the input is the file. Properties checked
// besides memory safety: the TOML reader never crashes or accepts a name that is not an option, and a
// file means exactly what the same options mean on the command line (same accept/refuse, same
// configuration), so the file cannot slip past a check the flags have.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <sstream>
#include <string>
#include <vector>

#include "server/options.h"
#include "server/toml_config.h"

namespace {

struct Outcome {
  bool accepted = false;
  std::string summary;  // the fields of the ServerConfig that options set, as text
};

std::string summarize(const debra::server::ServerConfig& c) {
  std::ostringstream s;
  s << c.listen.to_string() << ' ' << c.data_dir << ' ' << c.cert_file << ' ' << c.key_file << ' '
    << c.token_secret_file << ' ' << c.shutdown_timeout_ms << ' ' << static_cast<int>(c.store_kind) << ' '
    << static_cast<int>(c.sync)
    << ' ' << c.store.max_messages_per_recipient << ' ' << c.store.max_bytes_per_recipient << ' ' << c.store.ttl_ms
    << ' ' << c.log.segment_bytes
    << ' ' << c.session.max_frame_size << ' ' << c.session.delivery_lanes << ' ' << c.session.require_token << ' '
    << c.session.allow_legacy << ' ' << c.router.max_queued_bytes << ' ' << c.quic.retry_threshold << ' '
    << c.quic.max_connections << ' ' << c.quic.max_connections_per_address << ' ' << c.quic.transport.idle_timeout
    << ' ' << c.quic.transport.handshake_timeout << ' ' << c.quic.transport.max_udp_payload << ' ' << c.session.require_certificate << ' ' << c.client_ca_file
    << ' ' << c.policy_file << ' ' << c.rate_limits.messages_per_second << ' ' << c.rate_limits.message_burst << ' '
    << c.rate_limits.bytes_per_second << ' ' << c.rate_limits.byte_burst << ' '
    << (c.metrics_listen ? c.metrics_listen->to_string() : std::string("-")) << ' ' << c.threads;
  return s.str();
}

template <typename Parse>
Outcome run(Parse parse) {
  CLI::App app{"debra-server"};
  debra::server::ServerOptions options(app);
  try {
    parse(app);
  } catch (const CLI::ParseError& e) {
    if (std::string(e.what()).empty()) std::abort();  // every refusal says why
    return {};
  }
  auto config = options.finish();
  if (!config) return {};
  return {true, summarize(*config)};
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  Outcome from_file = run([&](CLI::App& app) {
    std::istringstream in(text);
    app.parse_from_stream(in);
  });

  // The same options as command-line arguments, from what the reader made of the file.
  std::vector<CLI::ConfigItem> items;
  {
    CLI::App app{"debra-server"};
    debra::server::ServerOptions options(app);
    std::istringstream in(text);
    try {
      items = debra::server::TomlConfig(app).from_config(in);
    } catch (const CLI::ParseError&) {
      if (from_file.accepted) std::abort();  // the file was both unreadable and accepted
      return 0;
    }
    for (const auto& item : items) {
      if (app.get_option_no_throw("--" + item.name) == nullptr) std::abort();
    }
  }
  std::vector<std::string> args;
  for (const auto& item : items) {
    for (const auto& input : item.inputs) {
      // CLI11 reads `--name=` as a missing value, but `--name ""` as the empty value the file gave
      // (`metrics-listen = ""` is metrics off either way). A value is not given as a separate
      // argument otherwise, since one that starts with '-' would read as an option.
      if (input.empty()) {
        args.push_back("--" + item.name);
        args.push_back(input);
      } else {
        args.push_back("--" + item.name + "=" + input);
      }
    }
  }
  Outcome from_flags = run([&](CLI::App& app) {
    std::vector<std::string> reversed(args.rbegin(), args.rend());  // CLI11 takes argv back to front
    app.parse(reversed);
  });
  if (from_file.accepted != from_flags.accepted || from_file.summary != from_flags.summary) std::abort();
  return 0;
}
