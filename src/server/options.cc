// SPDX-License-Identifier: MIT
#include "server/options.h"

#include <limits>
#include <memory>

#include "server/toml_config.h"

namespace debra::server {

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
  app.add_option("--store", store_kind_,
                 "sqlite: keep every accepted message until its recipient acknowledges it; none: forward to "
                 "online recipients only, as the original debra did")
      ->capture_default_str()
      ->check(CLI::IsMember({"sqlite", "none"}));
  app.add_option("--sync", sync_,
                 "always: fsync every message before acknowledging it; batch: one fsync per event-loop "
                 "iteration; off: no fsync (survives a router crash, not a machine crash)")
      ->capture_default_str()
      ->check(CLI::IsMember({"always", "batch", "off"}));
  app.add_option("--inbox-max-messages", config_.store.max_messages_per_recipient,
                 "Messages held for one recipient at most; more get QuotaExceeded")
      ->capture_default_str();
  app.add_option("--inbox-max-bytes", config_.store.max_bytes_per_recipient,
                 "Payload bytes held for one recipient at most; more get QuotaExceeded")
      ->capture_default_str();
  app.add_option("--message-ttl", ttl_s_, "Seconds a message waits for its recipient before it expires (0: forever)")
      ->capture_default_str();
  app.add_option("--shutdown-timeout-ms", config_.shutdown_timeout_ms,
                 "Longest graceful shutdown on SIGINT/SIGTERM")
      ->capture_default_str();
  app.add_option("--auth", auth_mode_,
                 "none: any client may register any id; token: a native registration must carry a token for "
                 "its id (see `debra token issue` and docs/security.md)")
      ->capture_default_str()
      ->check(CLI::IsMember({"none", "token"}));
  app.add_option("--legacy", legacy_policy_,
                 "allow or deny original (legacy) clients, which cannot present a token; default: allow with "
                 "--auth none, deny with --auth token")
      ->check(CLI::IsMember({"allow", "deny"}));
  app.add_option("--token-secret-file", config_.token_secret_file,
                 "32-byte HMAC key for client tokens (default: DATA_DIR/token-secret, created on first start)");
  app.add_flag("--allow-anonymous", allow_anonymous_,
               "Allow listening on a non-loopback address with --auth none (anyone who reaches it can take any id)");
}

Result<ServerConfig, Error> ServerOptions::finish() {
  auto address = net::Address::parse(listen_);
  if (!address) return make_error("--listen: " + address.error().message);
  config_.listen = *address;
  config_.session.require_token = auth_mode_ == "token";
  config_.session.allow_legacy = legacy_policy_.empty() ? !config_.session.require_token : legacy_policy_ == "allow";
  // Without authentication anyone who can reach the router can register, and take over, any id:
  // only loopback is safe by default.
  if (!config_.session.require_token && !address->is_loopback() && !allow_anonymous_) {
    return make_error("refusing to listen on " + listen_ +
                      " without authentication: anyone who can reach it could register any id. Use --auth token, "
                      "or --allow-anonymous to accept that (docs/security.md)");
  }
  config_.durable = store_kind_ == "sqlite";
  config_.sync = *store::parse_sync_mode(sync_);
  config_.store.ttl_ms = static_cast<std::int64_t>(ttl_s_ * 1000);
  config_.quic.transport.idle_timeout = idle_timeout_s_ * quic::kSecond;
  config_.quic.transport.peer_bidi_streams = 1;
  config_.quic.transport.peer_uni_streams = 0;  // the original server allowed none; neither do we
  return config_;
}

}  // namespace debra::server
