// SPDX-License-Identifier: MIT
#include "server/options.h"

#include <array>
#include <cstdio>
#include <limits>
#include <memory>
#include <string_view>
#include <utility>

#include "policy/policy_file.h"
#include "server/toml_config.h"

namespace debra::server {
namespace {

// --protocol-features: the name of each optional feature the router implements (all of
// kRouterFeatures, which options_test checks).
constexpr std::array<std::pair<std::string_view, wire::Feature>, 2> kFeatureNames{{
    {"batched-acks", wire::Feature::BatchedAcks},
    {"batched-replies", wire::Feature::BatchedReplies},
}};

}  // namespace

ServerOptions::ServerOptions(CLI::App& app) : ttl_s_(static_cast<double>(config_.store.ttl_ms) / 1000) {
  app.config_formatter(std::make_shared<TomlConfig>(app));
  app.set_config("--config", "",
                 "TOML file of options, one `name = value` per flag without its dashes (e.g. `max-connections = "
                 "1000`); flags on the command line win");
  app.add_option("--listen", listen_, "UDP address to listen on: HOST:PORT or [IPV6]:PORT")->capture_default_str();
  app.add_option("--data-dir", config_.data_dir, "Directory for the certificate, key and QUIC secret")
      ->capture_default_str();
  app.add_option("--cert", config_.cert_file, "PEM certificate (default: a self-signed one in the data dir)");
  app.add_option("--key", config_.key_file, "PEM private key for --cert");
  app.add_option("--log-level", log_level_, "Least severe log lines written")
      ->capture_default_str()
      ->check(CLI::IsMember({"trace", "debug", "info", "warn", "error", "off"}));
  app.add_option("--max-frame-size", config_.session.max_frame_size, "Largest frame accepted, in bytes")
      ->capture_default_str()
      ->check(CLI::Range(1024u, 64u * 1024 * 1024));
  app.add_option("--max-queued-bytes", config_.router.max_queued_bytes,
                 "Per-connection outbound queue limit; above it new messages get RecipientBusy")
      ->capture_default_str();
  app.add_option("--delivery-lanes", config_.session.delivery_lanes,
                 "Native mode: unidirectional delivery streams per connection")
      ->capture_default_str()
      ->check(CLI::Range(1u, 64u));
  std::vector<std::string> feature_names{"none"};
  for (const auto& [name, bit] : kFeatureNames) {
    feature_names.emplace_back(name);
    protocol_features_.emplace_back(name);
  }
  app.add_option("--protocol-features", protocol_features_,
                 "Optional protocol features to announce and use (docs/protocol.md, Features), comma-separated, "
                 "or none; one left out is neither offered nor taken, as by a router that predates it")
      ->capture_default_str()
      ->delimiter(',')
      ->check(CLI::IsMember(feature_names));
  app.add_option("--retry-threshold", config_.quic.retry_threshold,
                 "Handshakes in progress above which clients must validate their address with Retry (0: always)")
      ->capture_default_str();
  app.add_option("--max-connections-per-address", config_.quic.max_connections_per_address,
                 "Connections accepted at most from one IP address")
      ->capture_default_str()
      ->check(CLI::Range(std::size_t{1}, std::numeric_limits<std::size_t>::max()));
  app.add_option("--max-connections", config_.quic.max_connections, "Connections accepted at most")
      ->capture_default_str();
  app.add_option("--idle-timeout", idle_timeout_s_, "Seconds without packets before a connection is closed")
      ->capture_default_str()
      ->check(CLI::Range(1u, 3600u));
  app.add_option("--max-udp-payload", config_.quic.transport.max_udp_payload,
                 "Largest UDP datagram payload sent, in bytes. Where the route to a client carries more than Path "
                 "MTU discovery can find (1452: loopback, jumbo frames) datagrams grow to this once the "
                 "handshake is done; at or below 1452 it caps discovery")
      ->capture_default_str()
      ->check(CLI::Range(std::size_t{1200}, std::size_t{65507}));
  core::RateLimits& rates = config_.rate_limits;
  const auto at_least_one = CLI::Range(std::uint64_t{1}, std::numeric_limits<std::uint64_t>::max());
  app.add_option("--rate-messages", rates.messages_per_second,
                 "Messages per second one id may send, sustained (0: unlimited); above it a native sender's "
                 "messages are refused with RateLimited and a legacy sender is slowed down")
      ->capture_default_str();
  app.add_option("--rate-message-burst", rates.message_burst, "Messages one id may send at once before --rate-messages applies")
      ->capture_default_str()
      ->check(at_least_one);
  app.add_option("--rate-bytes", rates.bytes_per_second,
                 "Payload bytes per second one id may send, sustained (0: unlimited)")
      ->capture_default_str();
  app.add_option("--rate-byte-burst", rates.byte_burst,
                 "Payload bytes one id may send at once before --rate-bytes applies (a larger message needs a full "
                 "bucket)")
      ->capture_default_str()
      ->check(at_least_one);
  app.add_option("--handshake-timeout", handshake_timeout_s_,
                 "Seconds a connection may take to finish its handshake before it is dropped")
      ->capture_default_str()
      ->check(CLI::Range(1u, 600u));
  app.add_option("--threads", config_.threads,
                 "Event-loop threads, each with its own socket on --listen (SO_REUSEPORT); 0: one per CPU this "
                 "process may run on")
      ->capture_default_str()
      ->check(CLI::Range(std::size_t{0}, kMaxThreads));
  app.add_option("--metrics-listen", metrics_listen_,
                 "Serve Prometheus metrics at http://HOST:PORT/metrics (default: off; loopback only unless "
                 "--metrics-allow-remote)");
  app.add_flag("--metrics-allow-remote", metrics_allow_remote_,
               "Allow --metrics-listen on a non-loopback address (the endpoint has no authentication)");
  app.add_option("--store", store_kind_,
                 "log: keep every accepted message in the message log (DATA_DIR/log/) until its recipient "
                 "acknowledges it; sqlite: the same in SQLite (DATA_DIR/messages.db); none: forward to online "
                 "recipients only, as the original debra did")
      ->capture_default_str()
      ->check(CLI::IsMember({"log", "sqlite", "none"}));
  app.add_option("--sync", sync_,
                 "always: fsync every message before acknowledging it; batch: one fsync per event-loop "
                 "iteration; off: no fsync (survives a router crash, not a machine crash)")
      ->capture_default_str()
      ->check(CLI::IsMember({"always", "batch", "off"}));
  app.add_option("--log-segment-bytes", config_.log.segment_bytes,
                 "--store log: bytes of records a segment file of the message log takes before the next one "
                 "starts; each takes its disk space when it starts, and a file goes only once no message in it "
                 "is held")
      ->capture_default_str()
      ->check(CLI::Range(std::size_t{64 * 1024}, std::size_t{1024 * 1024 * 1024}));
  app.add_option("--inbox-max-messages", config_.store.max_messages_per_recipient,
                 "Messages held for one recipient at most; more get QuotaExceeded")
      ->capture_default_str();
  app.add_option("--inbox-max-bytes", config_.store.max_bytes_per_recipient,
                 "Payload bytes held for one recipient at most; more get QuotaExceeded")
      ->capture_default_str();
  app.add_option("--message-ttl", ttl_s_, "Seconds a message waits for its recipient before it expires (0: forever)")
      ->capture_default_str();
  app.add_option("--heap-release-threshold", config_.heap_release_threshold,
                 "Bytes of free heap memory above which the router gives it back to the kernel, checked every "
                 "--heap-release-interval (0: never)")
      ->capture_default_str();
  app.add_option("--heap-release-interval", heap_release_interval_s_,
                 "Seconds between checks of the free heap memory")
      ->capture_default_str()
      ->check(CLI::Range(0.1, 3600.0));
  app.add_option("--shutdown-timeout-ms", config_.shutdown_timeout_ms,
                 "Longest graceful shutdown on SIGINT/SIGTERM")
      ->capture_default_str();
  app.add_option("--auth", auth_mode_,
                 "none: any client may register any id; token: a native registration must carry a token for "
                 "its id (see `debra token issue`); mtls: a client certificate for its id, signed by --client-ca "
                 "(see `debra cert`, docs/security.md)")
      ->capture_default_str()
      ->check(CLI::IsMember({"none", "token", "mtls"}));
  app.add_option("--client-ca", config_.client_ca_file,
                 "PEM CA certificate(s) client certificates must chain to; required with --auth mtls");
  app.add_option("--legacy", legacy_policy_,
                 "allow or deny original (legacy) clients, which cannot present a token or certificate; default: "
                 "allow with --auth none, deny otherwise")
      ->check(CLI::IsMember({"allow", "deny"}));
  app.add_option("--token-secret-file", config_.token_secret_file,
                 "32-byte HMAC key for client tokens (default: DATA_DIR/token-secret, created on first start)");
  app.add_flag("--allow-anonymous", allow_anonymous_,
               "Allow listening on a non-loopback address with --auth none (anyone who reaches it can take any id)");
  app.add_option("--policy", config_.policy_file,
                 "TOML file saying which ids may send to which (docs/security.md); re-read on SIGHUP. Default: "
                 "every id may send to every id");
}

Result<ServerConfig, Error> ServerOptions::finish() {
  auto address = net::Address::parse(listen_);
  if (!address) return make_error("--listen: " + address.error().message);
  config_.listen = *address;
  config_.session.features = 0;
  for (const std::string& feature : protocol_features_) {
    if (feature == "none") {
      if (protocol_features_.size() > 1) return make_error("--protocol-features: none goes alone");
      continue;
    }
    for (const auto& [name, bit] : kFeatureNames) {
      if (feature == name) config_.session.features |= static_cast<std::uint64_t>(bit);
    }
  }
  config_.session.require_token = auth_mode_ == "token";
  config_.session.require_certificate = auth_mode_ == "mtls";
  if (config_.session.require_certificate != !config_.client_ca_file.empty()) {
    return make_error(config_.session.require_certificate
                          ? "--auth mtls needs --client-ca FILE (the CA that signs client certificates, e.g. from "
                            "`debra cert ca`)"
                          : "--client-ca is for --auth mtls");
  }
  bool authenticated = auth_mode_ != "none";
  config_.session.allow_legacy = legacy_policy_.empty() ? !authenticated : legacy_policy_ == "allow";
  // Without authentication anyone who can reach the router can register, and take over, any id:
  // only loopback is safe by default.
  if (!authenticated && !address->is_loopback() && !allow_anonymous_) {
    return make_error("refusing to listen on " + listen_ +
                      " without authentication: anyone who can reach it could register any id. Use --auth token "
                      "or mtls, or --allow-anonymous to accept that (docs/security.md)");
  }
  if (!config_.policy_file.empty()) {
    auto policy = policy::load_policy_file(config_.policy_file);
    if (!policy) return make_error("--policy: " + policy.error().message);
    config_.policy = std::move(*policy);
  }
  if (!metrics_listen_.empty()) {
    auto metrics_address = net::Address::parse(metrics_listen_);
    if (!metrics_address) return make_error("--metrics-listen: " + metrics_address.error().message);
    // The figures say who is connected and how busy the router is, to anyone who can reach the port.
    if (!metrics_address->is_loopback() && !metrics_allow_remote_) {
      return make_error("refusing to serve metrics on " + metrics_listen_ +
                        ", which is not loopback: the endpoint has no authentication. Use --metrics-allow-remote "
                        "to accept that");
    }
    config_.metrics_listen = *metrics_address;
  }
  config_.store_kind = store_kind_ == "log"      ? StoreKind::Log
                       : store_kind_ == "sqlite" ? StoreKind::Sqlite
                                                 : StoreKind::None;
  config_.sync = *store::parse_sync_mode(sync_);
  config_.store.ttl_ms = static_cast<std::int64_t>(ttl_s_ * 1000);
  config_.heap_release_interval_ms = static_cast<std::uint32_t>(heap_release_interval_s_ * 1000);
  config_.quic.transport.idle_timeout = idle_timeout_s_ * quic::kSecond;
  config_.quic.transport.handshake_timeout = handshake_timeout_s_ * quic::kSecond;
  // Fixed by the protocol, not a flag: a client opens its session stream and nothing else (the
  // router opens the delivery lanes). The original server allowed no unidirectional streams either.
  config_.quic.transport.peer_bidi_streams = 1;
  config_.quic.transport.peer_uni_streams = 0;
  return config_;
}

}  // namespace debra::server
