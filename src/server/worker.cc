// SPDX-License-Identifier: MIT
#include "server/worker.h"

#include <chrono>

namespace debra::server {

std::int64_t wall_clock_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch())
      .count();
}

WorkerFigures& WorkerFigures::operator+=(const WorkerFigures& other) {
  quic += other.quic;
  sessions_total += other.sessions_total;
  connections += other.connections;
  open_connections += other.open_connections;
  sessions += other.sessions;
  queued_bytes += other.queued_bytes;
  loop_iterations += other.loop_iterations;
  return *this;
}

Result<std::unique_ptr<Worker>, Error> Worker::create(quic::ServerConfig quic, const quic::TlsServerContext& tls,
                                                      SharedCore& core, const SessionConfig& session) {
  std::unique_ptr<Worker> worker(new Worker(core, session));
  Worker* raw = worker.get();
  raw->multithreaded_ = quic.threads > 1;
  // Created after the constructor's hook, so the replies and deliveries the router's flush releases
  // leave in the same iteration.
  auto endpoint = quic::ServerEndpoint::create(raw->loop_, std::move(quic), tls,
                                               [raw](quic::Connection& c) { return raw->accept(c); });
  if (!endpoint) return Unexpected{endpoint.error()};
  raw->endpoint_ = std::move(*endpoint);
  return worker;
}

Worker::Worker(SharedCore& core, const SessionConfig& session)
    : core_(core), session_config_(session), mailbox_(loop_) {
  loop_.add_before_sleep([this] {
    handle_sessions();
    finished_.clear();
    if (shutting_down_) check_shutdown_done();
  });
}

Worker::~Worker() = default;

void Worker::run() {
  mailbox_.bind_to_this_thread();
  loop_.run();
}

void Worker::handle_sessions() {
  auto guard = core_.lock();
  mailbox_.drain();
  // Sessions finished this iteration are still alive (finished_), and skip their input.
  for (std::size_t i = 0; i < with_input_.size(); ++i) with_input_[i]->handle_input();
  with_input_.clear();
  // Commits what was routed (on any thread: the batch is the router's) and starts the deliveries
  // that wait for room.
  core_.router.set_wall_clock_ms(wall_clock_ms());
  core_.router.flush();
  // The Accepted replies of this iteration, whatever made them (this thread's input, the mailbox, a
  // commit completed on this thread, or the flush just now): one frame per session.
  for (std::size_t i = 0; i < with_replies_.size(); ++i) with_replies_[i]->write_replies();
  with_replies_.clear();
}

quic::ConnectionHandler* Worker::accept(quic::Connection& connection) {
  if (shutting_down_) return nullptr;
  auto session = std::make_unique<Session>(connection, loop_, core_, multithreaded_ ? &mailbox_ : nullptr,
                                           session_config_, counters_, *this);
  Session* raw = session.get();
  sessions_.emplace(raw, std::move(session));
  return raw;
}

void Worker::on_finished(Session& session) {
  auto it = sessions_.find(&session);
  if (it == sessions_.end()) return;
  finished_.push_back(std::move(it->second));
  sessions_.erase(it);
}

void Worker::shut_down(net::Timestamp deadline) {
  if (shutting_down_) return;
  shutting_down_ = true;
  shutdown_deadline_ = deadline;
  for (auto& [raw, session] : sessions_) session->shut_down();
  endpoint_->close_all(static_cast<std::uint64_t>(wire::ErrorCode::ServerShutdown), "the router is shutting down");
  // Wake up to enforce the deadline even if no packet arrives.
  loop_.add_timer(shutdown_deadline_, [] {});
}

void Worker::check_shutdown_done() {
  // Done once every connection has sent its CONNECTION_CLOSE; the closing periods need not be waited
  // out, since nothing of ours will answer after exit anyway.
  bool all_closed = endpoint_->open_connection_count() == 0;
  if (all_closed || loop_.now() >= shutdown_deadline_) {
    if (!all_closed) spdlog::warn("shutdown deadline reached with connections still open");
    loop_.stop();
  }
}

WorkerFigures Worker::figures() const {
  WorkerFigures figures;
  figures.quic = endpoint_->stats();
  figures.sessions_total = counters_;
  figures.connections = endpoint_->connection_count();
  figures.open_connections = endpoint_->open_connection_count();
  figures.sessions = sessions_.size();
  figures.loop_iterations = loop_.iteration_times();
  auto guard = core_.lock();
  for (const auto& [raw, session] : sessions_) figures.queued_bytes += session->queued_bytes();
  return figures;
}

}  // namespace debra::server
