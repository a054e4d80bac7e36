// SPDX-License-Identifier: MIT
#pragma once

#include <array>
#include <chrono>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "core/router.h"
#include "net/event_loop.h"
#include "quic/server_endpoint.h"
#include "quic/tls.h"
#include "server/session_bridge.h"
#include "server/shared_core.h"
#include "server/worker.h"
#include "store/log_options.h"
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
  store::LogOptions log;  // --store log's files (--log-segment-bytes)
  SessionConfig session;
  // rate_limits: what each sending id may send per second (docs/security.md, "Rate limits").
  core::RateLimits rate_limits;
  core::RouterLimits router;
  quic::ServerConfig quic;
  // metrics_listen: where to serve Prometheus metrics at /metrics (--metrics-listen); none: off.
  std::optional<net::Address> metrics_listen;
  // threads: event-loop threads (--threads), each with a socket on the listening address; 0: one per
  // CPU the process may run on.
  std::size_t threads = 0;
  // heap_release_*: every interval, if the allocator holds more free memory than the threshold, it
  // goes back to the kernel (--heap-release-threshold, --heap-release-interval; docs/architecture.md,
  // "Memory after a storm"). A threshold of 0: never.
  std::uint64_t heap_release_threshold = 64 << 20;
  std::uint32_t heap_release_interval_ms = 10'000;
};

// The threads a router runs by default: one per CPU this process may run on (its affinity mask), at
// most kMaxThreads.
inline constexpr std::size_t kMaxThreads = 64;
std::size_t default_thread_count();

// Server: the composition root of the router process: the routing core and the store, shared by
// one Worker per thread (an event loop, a socket on the listening address, the sessions of its
// connections), and the process-wide parts: signals, the store's expiry, the metrics page and the
// shutdown order. Worker 0 runs on the thread that calls run() and also carries those.
class Server {
 public:
  // Prepares the data dir (certificate, secret) and binds the sockets.
  static Result<std::unique_ptr<Server>, Error> create(ServerConfig config);
  ~Server();

  const net::Address& local_address() const { return workers_.front()->local_address(); }
  std::size_t thread_count() const { return workers_.size(); }

  // Runs until SIGINT or SIGTERM, then shuts down gracefully: every connection is closed with
  // ServerShutdown (native clients get an Error frame first) within shutdown_timeout_ms. SIGHUP
  // re-reads the policy file; a bad one is logged and the current policy stays.
  void run();

 private:
  // CommitRelay: where the store's sync thread sends a finished commit: worker 0's loop, until the
  // server is being destroyed (completions after that are dropped, as the store documents).
  struct CommitRelay {
    std::mutex mutex;
    net::EventLoop* loop = nullptr;
  };

  Server(ServerConfig config, quic::TlsServerContext tls, std::unique_ptr<core::MessageStore> store);
  Worker& main_worker() { return *workers_.front(); }
  void schedule_expiry();
  // Gives the allocator's free memory back to the kernel when it passes the threshold, a step per
  // loop iteration; repeats itself.
  void schedule_heap_release();
  // free: what the allocator held free before this step; released: what the steps before gave back.
  void release_heap_step(std::chrono::steady_clock::time_point started, std::uint64_t free, std::uint64_t released);
  void reload_policy();
  void begin_shutdown();
  // Gathers every thread's figures, then builds the metrics page on worker 0 and hands it to the
  // HTTP thread; repeats itself.
  void publish_metrics();
  std::string metrics_page(const std::vector<WorkerFigures>& threads);

  ServerConfig config_;
  quic::TlsServerContext tls_;
  std::unique_ptr<core::MessageStore> store_;
  core::Router router_;
  RateLimiting rate_limiting_;
  SharedCore core_;
  std::shared_ptr<CommitRelay> commit_relay_ = std::make_shared<CommitRelay>();
  std::vector<std::unique_ptr<Worker>> workers_;
  int signal_fd_ = -1;
  bool shutting_down_ = false;
  std::uint64_t heap_released_bytes_ = 0;  // on worker 0's thread, as the metrics page is built
  std::uint64_t heap_releases_ = 0;
  std::unique_ptr<metrics::HttpExporter> metrics_;
};

}  // namespace debra::server
