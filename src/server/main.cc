// SPDX-License-Identifier: MIT
//
// debra-server: the router process. Flags become a ServerConfig; everything else is in server.cc.
#include <CLI/CLI.hpp>

#include <cstdio>
#include <limits>

#include "policy/policy_file.h"
#include "server/server.h"
#include "util/log.h"

int main(int argc, char** argv) {
  using namespace debra;
  log::init("debra-server");
  CLI::App app{"debra-server: a message router over QUIC"};
  server::ServerConfig config;
  std::string listen = "127.0.0.1:4433";
  std::string log_level = "info";
  std::uint32_t idle_timeout_s = 30;
  std::uint32_t handshake_timeout_s = 10;
  std::string metrics_listen;
  bool metrics_allow_remote = false;
  app.add_option("--listen", listen, "UDP address to listen on: HOST:PORT or [IPV6]:PORT")->capture_default_str();
  app.add_option("--data-dir", config.data_dir, "Directory for the certificate, key and QUIC secret")
      ->capture_default_str();
  app.add_option("--cert", config.cert_file, "PEM certificate (default: a self-signed one in the data dir)");
  app.add_option("--key", config.key_file, "PEM private key for --cert");
  app.add_option("--log-level", log_level, "trace, debug, info, warn, error or off")->capture_default_str();
  app.add_option("--max-frame-size", config.session.max_frame_size, "Largest frame accepted, in bytes")
      ->capture_default_str()
      ->check(CLI::Range(1024u, 64u * 1024 * 1024));
  app.add_option("--max-queued-bytes", config.router.max_queued_bytes,
                 "Per-connection outbound queue limit; above it new messages get RecipientBusy")
      ->capture_default_str();
  app.add_option("--delivery-lanes", config.session.delivery_lanes,
                 "Native mode: unidirectional delivery streams per connection")
      ->capture_default_str()
      ->check(CLI::Range(1u, 64u));
  app.add_option("--retry-threshold", config.quic.retry_threshold,
                 "Handshakes in progress above which clients must validate their address with Retry (0: always)")
      ->capture_default_str();
  app.add_option("--max-connections-per-address", config.quic.max_connections_per_address,
                 "Connections accepted at most from one IP address")
      ->capture_default_str()
      ->check(CLI::Range(std::size_t{1}, std::numeric_limits<std::size_t>::max()));
  app.add_option("--max-connections", config.quic.max_connections, "Connections accepted at most")
      ->capture_default_str();
  app.add_option("--idle-timeout", idle_timeout_s, "Seconds without packets before a connection is closed")
      ->capture_default_str()
      ->check(CLI::Range(1u, 3600u));
  core::RateLimits& rates = config.rate_limits;
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
  app.add_option("--handshake-timeout", handshake_timeout_s,
                 "Seconds a connection may take to finish its handshake before it is dropped")
      ->capture_default_str()
      ->check(CLI::Range(1u, 600u));
  app.add_option("--metrics-listen", metrics_listen,
                 "Serve Prometheus metrics at http://HOST:PORT/metrics (default: off; loopback only unless "
                 "--metrics-allow-remote)");
  app.add_flag("--metrics-allow-remote", metrics_allow_remote,
               "Allow --metrics-listen on a non-loopback address (the endpoint has no authentication)");
  std::string store_kind = "sqlite";
  std::string sync = "batch";
  double ttl_s = static_cast<double>(config.store.ttl_ms) / 1000;
  app.add_option("--store", store_kind,
                 "sqlite: keep every accepted message until its recipient acknowledges it; none: forward to "
                 "online recipients only, as the original debra did")
      ->capture_default_str()
      ->check(CLI::IsMember({"sqlite", "none"}));
  app.add_option("--sync", sync,
                 "always: fsync every message before acknowledging it; batch: one fsync per event-loop "
                 "iteration; off: no fsync (survives a router crash, not a machine crash)")
      ->capture_default_str()
      ->check(CLI::IsMember({"always", "batch", "off"}));
  app.add_option("--inbox-max-messages", config.store.max_messages_per_recipient,
                 "Messages held for one recipient at most; more get QuotaExceeded")
      ->capture_default_str();
  app.add_option("--inbox-max-bytes", config.store.max_bytes_per_recipient,
                 "Payload bytes held for one recipient at most; more get QuotaExceeded")
      ->capture_default_str();
  app.add_option("--message-ttl", ttl_s, "Seconds a message waits for its recipient before it expires (0: forever)")
      ->capture_default_str();
  app.add_option("--shutdown-timeout-ms", config.shutdown_timeout_ms,
                 "Longest graceful shutdown on SIGINT/SIGTERM")
      ->capture_default_str();
  std::string auth_mode = "none";
  std::string legacy_policy;
  bool allow_anonymous = false;
  app.add_option("--auth", auth_mode,
                 "none: any client may register any id; token: a native registration must carry a token for "
                 "its id (see `debra token issue`); mtls: a client certificate for its id, signed by --client-ca "
                 "(see `debra cert`, docs/security.md)")
      ->capture_default_str()
      ->check(CLI::IsMember({"none", "token", "mtls"}));
  app.add_option("--client-ca", config.client_ca_file,
                 "PEM CA certificate(s) client certificates must chain to; required with --auth mtls");
  app.add_option("--legacy", legacy_policy,
                 "allow or deny original (legacy) clients, which cannot present a token or certificate; default: "
                 "allow with --auth none, deny otherwise")
      ->check(CLI::IsMember({"allow", "deny"}));
  app.add_option("--token-secret-file", config.token_secret_file,
                 "32-byte HMAC key for client tokens (default: DATA_DIR/token-secret, created on first start)");
  app.add_flag("--allow-anonymous", allow_anonymous,
               "Allow listening on a non-loopback address with --auth none (anyone who reaches it can take any id)");
  app.add_option("--policy", config.policy_file,
                 "TOML file saying which ids may send to which (docs/security.md); re-read on SIGHUP. Default: "
                 "every id may send to every id");
  CLI11_PARSE(app, argc, argv);

  if (!log::set_level(log_level)) {
    std::fprintf(stderr, "debra-server: unknown --log-level '%s'\n", log_level.c_str());
    return 2;
  }
  auto address = net::Address::parse(listen);
  if (!address) {
    std::fprintf(stderr, "debra-server: --listen: %s\n", address.error().message.c_str());
    return 2;
  }
  config.listen = *address;
  config.session.require_token = auth_mode == "token";
  config.session.require_certificate = auth_mode == "mtls";
  if (config.session.require_certificate != !config.client_ca_file.empty()) {
    std::fprintf(stderr, config.session.require_certificate
                             ? "debra-server: --auth mtls needs --client-ca FILE (the CA that signs client "
                               "certificates, e.g. from `debra cert ca`)\n"
                             : "debra-server: --client-ca is for --auth mtls\n");
    return 2;
  }
  bool authenticated = auth_mode != "none";
  config.session.allow_legacy = legacy_policy.empty() ? !authenticated : legacy_policy == "allow";
  // Without authentication anyone who can reach the router can register, and take over, any id:
  // only loopback is safe by default.
  if (!authenticated && !address->is_loopback() && !allow_anonymous) {
    std::fprintf(stderr,
                 "debra-server: refusing to listen on %s without authentication: anyone who can reach it could "
                 "register any id. Use --auth token or mtls, or --allow-anonymous to accept that "
                 "(docs/security.md)\n",
                 listen.c_str());
    return 2;
  }
  if (!config.policy_file.empty()) {
    auto policy = policy::load_policy_file(config.policy_file);
    if (!policy) {
      std::fprintf(stderr, "debra-server: --policy: %s\n", policy.error().message.c_str());
      return 2;
    }
    config.policy = std::move(*policy);
  }
  if (!metrics_listen.empty()) {
    auto metrics_address = net::Address::parse(metrics_listen);
    if (!metrics_address) {
      std::fprintf(stderr, "debra-server: --metrics-listen: %s\n", metrics_address.error().message.c_str());
      return 2;
    }
    // The figures say who is connected and how busy the router is, to anyone who can reach the port.
    if (!metrics_address->is_loopback() && !metrics_allow_remote) {
      std::fprintf(stderr,
                   "debra-server: refusing to serve metrics on %s, which is not loopback: the endpoint has no "
                   "authentication. Use --metrics-allow-remote to accept that\n",
                   metrics_listen.c_str());
      return 2;
    }
    config.metrics_listen = *metrics_address;
  }
  config.durable = store_kind == "sqlite";
  config.sync = *store::parse_sync_mode(sync);
  config.store.ttl_ms = static_cast<std::int64_t>(ttl_s * 1000);
  config.quic.transport.idle_timeout = idle_timeout_s * quic::kSecond;
  config.quic.transport.handshake_timeout = handshake_timeout_s * quic::kSecond;
  // Fixed by the protocol, not a flag: a client opens its session stream and nothing else (the
  // router opens the delivery lanes). The original server allowed no unidirectional streams either.
  config.quic.transport.peer_bidi_streams = 1;
  config.quic.transport.peer_uni_streams = 0;
  auto server = server::Server::create(std::move(config));
  if (!server) {
    spdlog::error("{}", server.error().message);
    return 1;
  }
  (*server)->run();
  return 0;
}
