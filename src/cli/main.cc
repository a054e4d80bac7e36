// SPDX-License-Identifier: MIT
//
// debra: the command-line client. Every subcommand is a thin layer over libdebra (debra/client.h),
// except `debra bench`, which drives many connections per thread itself (cli/bench.h).
#include <CLI/CLI.hpp>
#include <debra/client.h>

#include <cctype>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <mutex>
#include <optional>
#include <sstream>
#include <string>

#include "auth/certificate.h"
#include "auth/token.h"
#include "cli/bench.h"
#include "util/log.h"

namespace {

using namespace std::chrono_literals;

// Flags every subcommand takes.
struct CommonFlags {
  std::string server = "127.0.0.1:4433";
  std::string ca_file;
  bool insecure = false;
  bool legacy = false;
  std::string log_level = "warn";
  std::string token;
  std::string token_file;
  std::string cert_file;
  std::string key_file;
  std::size_t max_udp_payload = debra::ClientOptions{}.max_udp_payload;

  void add_to(CLI::App& app) {
    app.add_option("--server", server, "Router address, HOST:PORT or [IPV6]:PORT")->capture_default_str();
    app.add_option("--ca", ca_file, "PEM file the router's certificate must chain to (e.g. DATA_DIR/cert.pem)");
    app.add_flag("--insecure", insecure, "Skip certificate verification, as the original client did");
    app.add_flag("--legacy", legacy, "Speak the original debra protocol (no ALPN, no replies)");
    app.add_option("--log-level", log_level, "trace, debug, info, warn, error or off")->capture_default_str();
    auto* token_option = app.add_option("--token", token, "Token proving your id to a router run with --auth token");
    app.add_option("--token-file", token_file, "Read the token from this file (instead of --token)")
        ->excludes(token_option);
    auto* cert_option =
        app.add_option("--cert", cert_file, "PEM client certificate for a router run with --auth mtls (debra cert issue)");
    auto* key_option = app.add_option("--key", key_file, "PEM private key of --cert");
    cert_option->needs(key_option);
    key_option->needs(cert_option);
    app.add_option("--max-udp-payload", max_udp_payload,
                   "Largest UDP datagram payload sent, as the router's --max-udp-payload (at most 1452 where "
                   "the route carries no more)")
        ->capture_default_str()
        ->check(CLI::Range(std::size_t{1200}, std::size_t{65507}));
  }

  // Reads --token-file into token; false (after saying why) if it cannot.
  bool load_token(const char* command) {
    if (token_file.empty()) return true;
    std::ifstream in(token_file);
    std::stringstream content;
    if (!in || !(content << in.rdbuf())) {
      std::fprintf(stderr, "debra %s: cannot read --token-file %s\n", command, token_file.c_str());
      return false;
    }
    token = content.str();
    // A file written by `debra token issue > FILE` ends with a newline.
    while (!token.empty() && std::isspace(static_cast<unsigned char>(token.back()))) token.pop_back();
    return true;
  }

  debra::ClientOptions options(std::int32_t id) const {
    debra::ClientOptions options;
    options.server = server;
    options.id = id;
    options.ca_file = ca_file;
    options.insecure = insecure;
    options.protocol = legacy ? debra::Protocol::Legacy : debra::Protocol::Native;
    options.token = token;
    options.cert_file = cert_file;
    options.key_file = key_file;
    options.max_udp_payload = max_udp_payload;
    return options;
  }
};

// JSON string escaping for payloads: control characters and quotes escaped, invalid UTF-8 bytes
// replaced by U+FFFD so every line is valid JSON.
std::string json_string(std::string_view text) {
  std::string out = "\"";
  for (std::size_t i = 0; i < text.size();) {
    auto c = static_cast<unsigned char>(text[i]);
    if (c == '"' || c == '\\') {
      out += '\\';
      out += static_cast<char>(c);
      ++i;
    } else if (c < 0x20) {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\u%04x", c);
      out += buf;
      ++i;
    } else if (c < 0x80) {
      out += static_cast<char>(c);
      ++i;
    } else {
      std::size_t length = c >= 0xf0 ? 4 : c >= 0xe0 ? 3 : c >= 0xc0 ? 2 : 0;
      bool valid = length > 0 && c < 0xf5 && i + length <= text.size();
      for (std::size_t k = 1; valid && k < length; ++k) {
        valid = (static_cast<unsigned char>(text[i + k]) & 0xc0) == 0x80;
      }
      if (valid) {
        out.append(text.substr(i, length));
        i += length;
      } else {
        out += "\xef\xbf\xbd";
        ++i;
      }
    }
  }
  out += '"';
  return out;
}

std::unique_ptr<debra::Client> connect_or_report(const char* command, const CommonFlags& flags, std::int32_t id) {
  auto client = debra::Client::connect(flags.options(id));
  if (!client) {
    std::fprintf(stderr, "debra %s: cannot connect to %s as id %d: %s\n", command, flags.server.c_str(), id,
                 client.error().message.c_str());
    return nullptr;
  }
  return std::move(*client);
}

std::string describe(const debra::SendResult& result, std::int32_t recipient) {
  switch (result.status) {
    case debra::SendStatus::Accepted: return "accepted";
    case debra::SendStatus::RecipientOffline:
      return "recipient " + std::to_string(recipient) + " is offline; the router dropped the message";
    default: return std::string(debra::to_string(result.status)) + (result.reason.empty() ? "" : ": " + result.reason);
  }
}

int run_send(const CommonFlags& flags, std::int32_t id, std::int32_t to, const std::vector<std::string>& words,
             double timeout_s, bool want_receipt) {
  std::string text;
  for (const auto& word : words) text += (text.empty() ? "" : " ") + word;
  if (want_receipt && flags.legacy) {
    std::fprintf(stderr, "debra send: --receipt needs the native protocol (drop --legacy)\n");
    return 2;
  }
  auto client = connect_or_report("send", flags, id);
  if (!client) return 1;
  auto deadline = std::chrono::steady_clock::now() + std::chrono::duration_cast<std::chrono::steady_clock::duration>(
                                                         std::chrono::duration<double>(timeout_s));
  std::promise<debra::Receipt> receipt;
  auto receipt_future = receipt.get_future();
  debra::SendOptions options;
  if (want_receipt) options.on_receipt = [&receipt](const debra::Receipt& r) { receipt.set_value(r); };
  auto reply = client->send(to, text, std::move(options));
  if (reply.wait_until(deadline) != std::future_status::ready) {
    std::fprintf(stderr, "debra send: no reply from the router within %.1f s\n", timeout_s);
    return 1;
  }
  auto result = reply.get();
  if (!result.ok()) {
    std::fprintf(stderr, "debra send: %s\n", describe(result, to).c_str());
    return 1;
  }
  if (want_receipt) {
    if (receipt_future.wait_until(deadline) != std::future_status::ready) {
      std::fprintf(stderr, "debra send: accepted, but no delivery receipt within %.1f s (recipient %d has not taken it)\n",
                   timeout_s, to);
      return 1;
    }
    if (!receipt_future.get().delivered) {
      std::fprintf(stderr, "debra send: the message expired before recipient %d took it\n", to);
      return 1;
    }
  }
  client->close();  // waits until the router has the bytes (legacy: the only confirmation there is)
  return 0;
}

int run_listen(const CommonFlags& flags, std::int32_t id, std::uint64_t count, double timeout_s, bool json) {
  auto options = flags.options(id);
  options.auto_acknowledge = false;  // acknowledged once printed: a crash before that means redelivery
  auto connected = debra::Client::connect(options);
  if (!connected) {
    std::fprintf(stderr, "debra listen: cannot connect to %s as id %d: %s\n", flags.server.c_str(), id,
                 connected.error().message.c_str());
    return 1;
  }
  auto client = std::move(*connected);
  auto deadline = std::chrono::steady_clock::now() + std::chrono::duration_cast<std::chrono::steady_clock::duration>(
                                                         std::chrono::duration<double>(timeout_s));
  std::uint64_t received = 0;
  while (count == 0 || received < count) {
    auto now = std::chrono::steady_clock::now();
    if (timeout_s > 0 && now >= deadline) break;
    auto wait = timeout_s > 0 ? std::chrono::duration_cast<std::chrono::milliseconds>(deadline - now) : 1000ms;
    auto message = client->receive(std::max(wait, 1ms));
    if (!message) continue;
    ++received;
    if (json) {
      std::printf("{\"from\":%d,\"message_id\":%llu,\"payload\":%s}\n", message->sender,
                  static_cast<unsigned long long>(message->message_id), json_string(message->text()).c_str());
    } else {
      std::fwrite(std::to_string(message->sender).data(), 1, std::to_string(message->sender).size(), stdout);
      std::fputc('\t', stdout);
      std::fwrite(message->payload.data(), 1, message->payload.size(), stdout);
      std::fputc('\n', stdout);
    }
    std::fflush(stdout);
    client->acknowledge(*message);
  }
  client->close();
  if (count != 0 && received < count) {
    std::fprintf(stderr, "debra listen: timed out after %.1f s with %llu of %llu messages\n", timeout_s,
                 static_cast<unsigned long long>(received), static_cast<unsigned long long>(count));
    return 1;
  }
  return 0;
}

int run_chat(const CommonFlags& flags, std::int32_t id, std::int32_t to) {
  auto client = connect_or_report("chat", flags, id);
  if (!client) return 1;
  std::mutex out;
  client->set_message_handler([&out](debra::Message message) {
    std::lock_guard lock(out);
    std::printf("[%d] %.*s\n", message.sender, static_cast<int>(message.payload.size()),
                reinterpret_cast<const char*>(message.payload.data()));
    std::fflush(stdout);
  });
  client->set_connection_handler([&out](bool connected, const std::string& reason) {
    std::lock_guard lock(out);
    std::printf(connected ? "* reconnected\n" : "* connection lost: %s (reconnecting)\n", reason.c_str());
    std::fflush(stdout);
  });
  {
    std::lock_guard lock(out);
    std::printf("* connected to %s as %d. Type a line to send it to %s; /to N picks the recipient, /quit leaves.\n",
                flags.server.c_str(), id, to > 0 ? std::to_string(to).c_str() : "(pick one with /to N)");
    std::fflush(stdout);
  }
  std::string line;
  while (std::getline(std::cin, line)) {
    if (line == "/quit") break;
    if (line.rfind("/to ", 0) == 0) {
      try {
        to = std::stoi(line.substr(4));
      } catch (const std::exception&) {
        std::lock_guard lock(out);
        std::printf("* /to takes a number\n");
        continue;
      }
      std::lock_guard lock(out);
      std::printf("* now sending to %d\n", to);
      std::fflush(stdout);
      continue;
    }
    if (line.empty()) continue;
    if (to <= 0) {
      std::lock_guard lock(out);
      std::printf("* pick a recipient first: /to N\n");
      std::fflush(stdout);
      continue;
    }
    auto result = client->send(to, line).get();
    if (!result.ok()) {
      std::lock_guard lock(out);
      std::printf("* not delivered: %s\n", describe(result, to).c_str());
      std::fflush(stdout);
    }
  }
  client->close();
  return 0;
}

// "3600", "90s", "15m", "12h", "7d" as seconds; nullopt if it is none of those or not positive.
std::optional<std::int64_t> parse_duration(const std::string& text) {
  if (text.empty()) return std::nullopt;
  std::int64_t unit = 1;
  std::string digits = text;
  switch (text.back()) {
    case 's': unit = 1; digits.pop_back(); break;
    case 'm': unit = 60; digits.pop_back(); break;
    case 'h': unit = 3600; digits.pop_back(); break;
    case 'd': unit = 86400; digits.pop_back(); break;
    default: break;
  }
  if (digits.empty() || digits.size() > 9) return std::nullopt;
  std::int64_t value = 0;
  for (char c : digits) {
    if (c < '0' || c > '9') return std::nullopt;
    value = value * 10 + (c - '0');
  }
  if (value <= 0) return std::nullopt;
  return value * unit;
}

int run_token_issue(std::int32_t id, const std::string& ttl, const std::string& data_dir, const std::string& secret_file) {
  if (id < 1) {
    std::fprintf(stderr, "debra token issue: --id must be in 1..2147483647\n");
    return 2;
  }
  auto seconds = parse_duration(ttl);
  if (!seconds) {
    std::fprintf(stderr, "debra token issue: --ttl '%s' is not a duration like 3600, 90s, 15m, 12h or 7d\n",
                 ttl.c_str());
    return 2;
  }
  // Only the router creates the secret: issuing from a mistyped path must not mint tokens nobody accepts.
  std::string path = secret_file.empty() ? data_dir + "/token-secret" : secret_file;
  auto secret = debra::auth::load_secret(path);
  if (!secret) {
    std::fprintf(stderr, "debra token issue: %s (start the router once to create it, or pass --secret-file)\n",
                 secret.error().message.c_str());
    return 1;
  }
  auto token = debra::auth::mint_token(*secret, id, debra::auth::unix_now() + *seconds);
  if (!token) {
    std::fprintf(stderr, "debra token issue: %s\n", token.error().message.c_str());
    return 1;
  }
  std::printf("%s\n", token->c_str());
  return 0;
}

// Creates dir (and its parents) if needed; false after saying why.
bool make_directory(const char* command, const std::string& dir) {
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) std::fprintf(stderr, "debra %s: %s: %s\n", command, dir.c_str(), ec.message().c_str());
  return !ec;
}

int run_cert_ca(const std::string& out_dir, std::int64_t days) {
  if (!make_directory("cert ca", out_dir)) return 1;
  auto ca = debra::auth::mint_client_ca(debra::auth::valid_for_days(days));
  if (!ca) {
    std::fprintf(stderr, "debra cert ca: %s\n", ca.error().message.c_str());
    return 1;
  }
  // Never overwritten: every certificate it signed would stop verifying with a new one.
  const std::string cert = out_dir + "/ca.pem";
  const std::string key = out_dir + "/ca-key.pem";
  if (auto written = debra::auth::write_credentials(*ca, cert, key, /*overwrite=*/false); !written) {
    std::fprintf(stderr, "debra cert ca: %s\n", written.error().message.c_str());
    return 1;
  }
  std::printf("%s: the client CA, for debra-server --client-ca\n%s: its key; whoever has it can mint any id\n",
              cert.c_str(), key.c_str());
  return 0;
}

int run_cert_issue(std::int32_t id, const std::string& ca_dir, const std::string& out_dir, std::int64_t days) {
  if (id < 1) {
    std::fprintf(stderr, "debra cert issue: --id must be in 1..2147483647\n");
    return 2;
  }
  auto ca = debra::auth::read_credentials(ca_dir + "/ca.pem", ca_dir + "/ca-key.pem");
  if (!ca) {
    std::fprintf(stderr, "debra cert issue: %s (create a CA with `debra cert ca --out-dir DIR`)\n",
                 ca.error().message.c_str());
    return 1;
  }
  if (!make_directory("cert issue", out_dir)) return 1;
  auto validity = debra::auth::valid_for_days(days);
  auto issued = debra::auth::mint_client_certificate(*ca, id, validity);
  if (!issued) {
    std::fprintf(stderr, "debra cert issue: %s\n", issued.error().message.c_str());
    return 1;
  }
  // Overwritten: issuing again is how a certificate is renewed.
  const std::string cert = out_dir + "/id-" + std::to_string(id) + ".pem";
  const std::string key = out_dir + "/id-" + std::to_string(id) + "-key.pem";
  if (auto written = debra::auth::write_credentials(*issued, cert, key, /*overwrite=*/true); !written) {
    std::fprintf(stderr, "debra cert issue: %s\n", written.error().message.c_str());
    return 1;
  }
  std::printf("%s, %s: id %d until %s; use with --cert %s --key %s\n", cert.c_str(), key.c_str(), id,
              debra::auth::format_utc(validity.not_after).c_str(), cert.c_str(), key.c_str());
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  debra::log::init("debra");
  CLI::App app{"debra: the command-line client of the debra message router"};
  app.require_subcommand(1);
  CommonFlags flags;

  std::int32_t id = 0;
  std::int32_t to = 0;
  std::vector<std::string> words;
  double send_timeout = 10;
  bool want_receipt = false;
  auto* send = app.add_subcommand("send", "Send one message; exits 0 only once the router stored it durably");
  flags.add_to(*send);
  send->add_option("--id", id, "Your id (1..2147483647)")->required();
  send->add_option("--to", to, "Recipient id")->required();
  send->add_option("--timeout", send_timeout, "Seconds to wait for the router's reply (and the receipt)")
      ->capture_default_str();
  send->add_flag("--receipt", want_receipt, "Wait until the recipient has taken the message (delivery receipt)");
  send->add_option("text", words, "The message")->required();

  std::uint64_t count = 0;
  double listen_timeout = 0;
  bool json = false;
  auto* listen = app.add_subcommand("listen", "Print received messages: sender, a tab, the payload");
  flags.add_to(*listen);
  listen->add_option("--id", id, "Your id (1..2147483647)")->required();
  listen->add_option("--count", count, "Exit after this many messages (0: no limit)");
  listen->add_option("--timeout", listen_timeout, "Exit after this many seconds (0: no limit)");
  listen->add_flag("--json", json, "One JSON object per line: from, message_id, payload");

  auto* chat = app.add_subcommand("chat", "Interactive chat: type lines to send, see what arrives");
  flags.add_to(*chat);
  chat->add_option("--id", id, "Your id (1..2147483647)")->required();
  chat->add_option("--to", to, "Initial recipient (change with /to N)");

  auto* token = app.add_subcommand("token", "Manage authentication tokens (routers run with --auth token)");
  token->require_subcommand(1);
  auto* issue = token->add_subcommand("issue", "Print a token for an id, signed with the router's token secret");
  std::string ttl;
  std::string data_dir = "./debra-data";
  std::string secret_file;
  issue->add_option("--id", id, "The id the token proves (1..2147483647)")->required();
  issue->add_option("--ttl", ttl, "How long it is valid: seconds, or 90s, 15m, 12h, 7d")->required();
  auto* data_dir_option =
      issue->add_option("--data-dir", data_dir, "The router's data dir (its token-secret)")->capture_default_str();
  issue->add_option("--secret-file", secret_file, "The router's --token-secret-file")->excludes(data_dir_option);

  auto* cert = app.add_subcommand("cert", "Mint client certificates (routers run with --auth mtls)");
  cert->require_subcommand(1);
  std::string out_dir;
  std::string ca_dir;
  std::int64_t ca_days = 3650;
  std::int64_t cert_days = 90;
  auto* cert_ca = cert->add_subcommand("ca", "Create a client CA: DIR/ca.pem (for --client-ca) and DIR/ca-key.pem");
  cert_ca->add_option("--out-dir", out_dir, "Where to write them; existing files are not overwritten")->required();
  cert_ca->add_option("--days", ca_days, "Days it is valid")->capture_default_str()->check(CLI::Range(1, 36500));
  auto* cert_issue =
      cert->add_subcommand("issue", "Issue a client certificate for an id: DIR/id-N.pem and DIR/id-N-key.pem");
  cert_issue->add_option("--id", id, "The id it proves (1..2147483647)")->required();
  cert_issue->add_option("--ca-dir", ca_dir, "The directory of `debra cert ca` (ca.pem, ca-key.pem)")->required();
  cert_issue->add_option("--out-dir", out_dir, "Where to write them (replacing an earlier issue)")->required();
  cert_issue->add_option("--days", cert_days, "Days it is valid")->capture_default_str()->check(CLI::Range(1, 36500));
  debra::cli::BenchFlags bench_flags;
  debra::cli::ConnectionsFlags connections_flags;
  std::string bench_mode = "native";
  auto* bench = app.add_subcommand(
      "bench", "Load test: P sender/receiver pairs, at most W un-received messages in flight per pair; reports "
               "msgs/s, MiB/s, one-way latency and lost/reordered/refused counts (docs/benchmarks.md)");
  flags.add_to(*bench);
  auto add_bench_common = [&](CLI::App& command, std::string& token_secret_file, unsigned& threads, bool& json_out,
                              bool& verbose) {
    command.add_option("--mode", bench_mode, "native (debra/1) or legacy (the original protocol)")
        ->capture_default_str()
        ->check(CLI::IsMember({"native", "legacy"}));
    command.add_option("--token-secret-file", token_secret_file,
                       "Mint each connection a token for its id from this router secret (routers run with --auth "
                       "token)")
        ->check(CLI::ExistingFile);
    command.add_option("--threads", threads, "Client event-loop threads")
        ->capture_default_str()
        ->check(CLI::Range(1u, 64u));
    command.add_flag("--json", json_out, "Print one JSON line on stdout (the text report goes to stderr)");
    command.add_flag("-v,--verbose", verbose, "Print the phases of the run on stderr");
  };
  add_bench_common(*bench, bench_flags.token_secret_file, bench_flags.threads, bench_flags.json, bench_flags.verbose);
  bench->add_option("--pairs", bench_flags.pairs, "Sender/receiver pairs (2P connections)")
      ->capture_default_str()
      ->check(CLI::Range(std::uint64_t{1}, std::uint64_t{100000}));
  bench->add_option("--size", bench_flags.size, "Payload bytes (at least 16: the timestamp and sequence header)")
      ->capture_default_str()
      ->check(CLI::Range(std::uint64_t{0}, std::uint64_t{4} << 20));
  bench->add_option("--duration", bench_flags.duration_s, "Measured seconds")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  bench->add_option("--warmup", bench_flags.warmup_s, "Seconds of load before the measured window")
      ->capture_default_str()
      ->check(CLI::NonNegativeNumber);
  bench->add_option("--window", bench_flags.window, "Un-received messages in flight per pair, at most")
      ->capture_default_str()
      ->check(CLI::Range(std::uint64_t{1}, std::uint64_t{1} << 20));
  bench->add_option("--rate", bench_flags.rate,
                    "Messages per second in total, paced evenly over the pairs and in time (0: as fast as the "
                    "window allows)")
      ->capture_default_str()
      ->check(CLI::NonNegativeNumber);

  auto* connections = bench->add_subcommand(
      "connections", "Open N registered idle connections; report handshakes/s and the router's RSS per connection");
  flags.add_to(*connections);
  add_bench_common(*connections, connections_flags.token_secret_file, connections_flags.threads,
                   connections_flags.json, connections_flags.verbose);
  connections->add_option("--count", connections_flags.count, "Connections to open and register")
      ->capture_default_str()
      ->check(CLI::Range(std::uint64_t{1}, std::uint64_t{1000000}));
  connections->add_option("--concurrency", connections_flags.concurrency, "Handshakes in progress at once, at most")
      ->capture_default_str()
      ->check(CLI::Range(std::uint64_t{1}, std::uint64_t{100000}));
  connections->add_option("--server-pid", connections_flags.server_pid,
                          "The router's pid: report its VmRSS (/proc/PID/status) before and after, per connection");
  connections->add_option("--hold", connections_flags.hold_s,
                          "Seconds to hold the idle connections before reading the RSS")
      ->capture_default_str()
      ->check(CLI::NonNegativeNumber);

  CLI11_PARSE(app, argc, argv);
  if (*token) return run_token_issue(id, ttl, data_dir, secret_file);
  if (*cert_ca) return run_cert_ca(out_dir, ca_days);
  if (*cert_issue) return run_cert_issue(id, ca_dir, out_dir, cert_days);
  if (!debra::log::set_level(flags.log_level)) {
    std::fprintf(stderr, "debra: unknown --log-level '%s'\n", flags.log_level.c_str());
    return 2;
  }
  if (!flags.load_token(app.get_subcommands().front()->get_name().c_str())) return 2;
  if (!flags.token.empty() && flags.legacy) {
    // Silently dropping it would leave the user wondering why the router refuses the registration.
    std::fprintf(stderr, "debra: --token needs the native protocol; the legacy protocol cannot carry one\n");
    return 2;
  }
  if (!flags.cert_file.empty() && flags.legacy) {
    std::fprintf(stderr, "debra: --cert needs the native protocol; routers do not check legacy clients' certificates\n");
    return 2;
  }
  if (*bench) {
    if (!flags.token.empty()) {
      std::fprintf(stderr, "debra bench: one --token cannot serve many ids; use --token-secret-file\n");
      return 2;
    }
    debra::ClientOptions options = flags.options(1);
    if (flags.legacy || bench_mode == "legacy") options.protocol = debra::Protocol::Legacy;
    if (*connections) {
      connections_flags.client = options;
      return debra::cli::run_bench_connections(connections_flags);
    }
    bench_flags.client = options;
    return debra::cli::run_bench(bench_flags);
  }
  if (*send) return run_send(flags, id, to, words, send_timeout, want_receipt);
  if (*listen) return run_listen(flags, id, count, listen_timeout, json);
  return run_chat(flags, id, to);
}
