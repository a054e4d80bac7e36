// SPDX-License-Identifier: MIT
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include "core/router.h"
#include "net/event_loop.h"
#include "quic/server_endpoint.h"
#include "quic/tls.h"
#include "server/session_bridge.h"
#include "store/sync_mode.h"

namespace debra::metrics {
class HttpExporter;
}

namespace debra::server {

// StoreKind: --store (docs/protocol.md, "Durability").
enum class StoreKind {
  None,    // forward to online recipients only
  Log,     // the message log, DATA_DIR/log/ (the default)
  Sqlite,  // SQLite, DATA_DIR/messages.db
};

// ServerConfig: everything the router needs to run; filled from flags by main.cc.
struct ServerConfig {
  // listen: the UDP address the router binds.
  net::Address listen;
  // data_dir: holds the self-signed certificate, its key and the QUIC static secret.
  std::string data_dir = "./debra-data";
  // cert_file / key_file: PEM certificate and key; empty: data_dir/cert.pem and key.pem, created on
  // first start.
  std::string cert_file;
  std::string key_file;
  // token_secret_file: the HMAC key of client tokens (--auth token, `debra token issue`); empty:
  // data_dir/token-secret, created on first start. An explicit file must exist.
  std::string token_secret_file;
  // client_ca_file: PEM CAs that client certificates must chain to (--auth mtls); empty: no client
  // certificates are asked for.
  std::string client_ca_file;
  // policy_file: the send policy (--policy), re-read on SIGHUP; empty: every pair may send. policy
  // is what main.cc loaded from it (a bad file stops the process before the server is created); the
  // server hands it to the router.
  std::string policy_file;
  core::SendPolicy policy;
  // shutdown_timeout_ms: how long a graceful shutdown may take before the process exits anyway.
  std::uint32_t shutdown_timeout_ms = 3000;
  // store: where every accepted message is kept until its recipient acknowledges it; None is the
  // original debra's semantics (forward to online recipients, drop the rest).
  StoreKind store_kind = StoreKind::Log;
  store::SyncMode sync = store::SyncMode::Batch;
  core::StoreLimits store;
  SessionConfig session;
  // rate_limits: what each sending id may send per second (docs/security.md, "Rate limits").
  core::RateLimits rate_limits;
  core::RouterLimits router;
  quic::ServerConfig quic;
  // metrics_listen: where to serve Prometheus metrics at /metrics (--metrics-listen); none: off.
  std::optional<net::Address> metrics_listen;
};

// Server: the composition root of the router process: event loop, QUIC endpoint, routing core and
// one Session per connection. Owns the shutdown order. One thread.
class Server {
 public:
  // Prepares the data dir (certificate, secret) and binds the socket.
  static Result<std::unique_ptr<Server>, Error> create(ServerConfig config);
  ~Server();

  const net::Address& local_address() const { return endpoint_->local_address(); }

  // Runs until SIGINT or SIGTERM, then shuts down gracefully: every connection is closed with
  // ServerShutdown (native clients get an Error frame first) within shutdown_timeout_ms. SIGHUP
  // re-reads the policy file; a bad one is logged and the current policy stays.
  void run();

 private:
  Server(ServerConfig config, quic::TlsServerContext tls, std::unique_ptr<core::MessageStore> store);
  void schedule_expiry();
  quic::ConnectionHandler* accept(quic::Connection& connection);
  void reload_policy();
  void begin_shutdown();
  void check_shutdown_done();
  // Builds the metrics page from the loop's state and hands it to the HTTP thread; repeats itself.
  void publish_metrics();
  std::string metrics_page() const;

  ServerConfig config_;
  quic::TlsServerContext tls_;
  net::EventLoop loop_;
  std::unique_ptr<core::MessageStore> store_;
  core::Router router_;
  net::EventLoop::TimerId expiry_timer_ = 0;
  SessionCounters counters_;
  RateLimiting rate_limiting_;
  std::unique_ptr<quic::ServerEndpoint> endpoint_;
  std::unordered_map<Session*, std::unique_ptr<Session>> sessions_;
  std::vector<std::unique_ptr<Session>> finished_;
  int signal_fd_ = -1;
  bool shutting_down_ = false;
  net::Timestamp shutdown_deadline_ = 0;
  std::unique_ptr<metrics::HttpExporter> metrics_;
};

}  // namespace debra::server
