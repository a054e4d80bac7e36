// SPDX-License-Identifier: MIT
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <unordered_map>
#include <vector>

#include "net/event_loop.h"
#include "quic/server_endpoint.h"
#include "quic/tls.h"
#include "server/mailbox.h"
#include "server/session_bridge.h"
#include "server/shared_core.h"
#include "util/duration_histogram.h"

namespace debra::server {

// Milliseconds since the epoch: the router's clock for message deadlines.
std::int64_t wall_clock_ms();

// WorkerFigures: one thread's share of the metrics, copied on that thread.
struct WorkerFigures {
  quic::EndpointStats quic;
  SessionCounters sessions_total;
  std::size_t connections = 0;
  std::size_t open_connections = 0;
  std::size_t sessions = 0;
  std::uint64_t queued_bytes = 0;
  util::DurationHistogram loop_iterations;  // EventLoop::iteration_times

  WorkerFigures& operator+=(const WorkerFigures& other);
};

// Worker: one server thread: an event loop, a QUIC endpoint on the listening address (one socket of
// the SO_REUSEPORT group), the sessions of the connections the kernel steered to that socket, and
// the mailbox through which routing on other threads reaches them. Everything here is used on the
// worker's thread only, but for the loop's post() and what the mailbox documents.
class Worker final : public SessionOwner {
 public:
  // Binds the worker's socket: quic.listen, shared with the other workers when quic.threads > 1.
  static Result<std::unique_ptr<Worker>, Error> create(quic::ServerConfig quic, const quic::TlsServerContext& tls,
                                                       SharedCore& core, const SessionConfig& session);
  ~Worker();
  Worker(const Worker&) = delete;
  Worker& operator=(const Worker&) = delete;

  net::EventLoop& loop() { return loop_; }
  quic::ServerEndpoint& endpoint() { return *endpoint_; }
  const net::Address& local_address() const { return endpoint_->local_address(); }

  // Runs the loop on the calling thread until shut_down has closed every connection.
  void run();

  // Stops accepting, ends every session (native clients hear ServerShutdown), and stops the loop
  // once every connection has sent its CONNECTION_CLOSE, or at deadline.
  void shut_down(net::Timestamp deadline);

  // This thread's figures now; on the worker's thread, or after its loop stopped.
  WorkerFigures figures() const;

 private:
  Worker(SharedCore& core, const SessionConfig& session);
  quic::ConnectionHandler* accept(quic::Connection& connection);
  // Before the loop sleeps, under one taking of the core lock: what other threads' routing left in
  // the mailbox, then the sessions' input, then the router's commit of everything routed.
  void handle_sessions();
  // SessionOwner
  void on_input(Session& session) override { with_input_.push_back(&session); }
  void on_finished(Session& session) override;
  void on_replies(Session& session) override { with_replies_.push_back(&session); }
  void check_shutdown_done();

  net::EventLoop loop_;
  SharedCore& core_;
  const SessionConfig& session_config_;
  Mailbox mailbox_;
  bool multithreaded_ = false;
  SessionCounters counters_;
  std::unique_ptr<quic::ServerEndpoint> endpoint_;
  std::unordered_map<Session*, std::unique_ptr<Session>> sessions_;
  std::vector<Session*> with_input_;
  std::vector<Session*> with_replies_;
  std::vector<std::unique_ptr<Session>> finished_;
  bool shutting_down_ = false;
  net::Timestamp shutdown_deadline_ = 0;
};

}  // namespace debra::server
