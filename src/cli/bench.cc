// SPDX-License-Identifier: MIT
//
// `debra bench` and `debra bench connections`.
//
// Shape (the same as bench/nats/nats_load.cc, so the numbers compare): P pairs; pair i is a
// receiver connection (id base+2i) and a sender connection (id base+2i+1) that sends to it. The
// sender keeps at most W messages sent and not yet received by its receiver. Payloads carry the
// shared header (bench/load/latency.h). A warm-up, a measured window of D seconds, then a bounded
// drain of what is in flight; the report goes through the shared printer (tool "debra").
//
// Client design: T worker threads, each one net::EventLoop with many connections on it (one
// ClientEndpoint, so one connected UDP socket, per connection). A worker's before-sleep hook sends
// for every pair whose window has room, before the endpoints' own hooks flush, so one loop
// iteration's messages leave in as few packets as possible. A pair's in-flight count is two atomics
// (published, received); a receiver on another worker wakes the sender's loop through post(), at
// most once per loop iteration.
//
// Ids come from a random base per run: the router keeps (sender, message_id) for a day to make
// retries idempotent and keeps undelivered messages per id, so a run must not reuse an earlier run's
// ids or message ids.
#include "cli/bench.h"

#include <gnutls/crypto.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <limits>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "auth/token.h"
#include "client/protocol_session.h"
#include "load/latency.h"
#include "net/event_loop.h"
#include "quic/client_endpoint.h"
#include "wire/codec.h"

namespace debra::cli {
namespace {

using bench::LatencyHistogram;
using bench::MeasureWindow;
using bench::ReceiveTracker;
using namespace std::chrono_literals;

// How long after the window closes the receivers may still take what is in flight.
constexpr std::uint64_t kDrainGraceNs = 3'000'000'000;
// Paced sends (--rate) are released in ticks of at least this many ns: finer ticks cost more
// wake-ups than they buy accuracy.
constexpr std::uint64_t kPaceTickNs = 50'000;
constexpr auto kPollInterval = 2ms;
constexpr std::uint64_t kUnlimited = std::numeric_limits<std::uint64_t>::max();
// Handshakes in progress at once during a throughput run's set-up: below the router's default
// --retry-threshold (64). Above it every client must do a Retry round trip, and an Initial the
// client retransmitted before it saw the Retry can cost a connection slot on the router until that
// half-made connection times out (seen with 128 connections against the per-address limit of 128).
constexpr std::uint64_t kMaxConnecting = 32;

std::uint64_t random_u64() {
  std::uint64_t value = 0;
  gnutls_rnd(GNUTLS_RND_NONCE, &value, sizeof value);
  return value;
}

// A base id such that base .. base+count-1 are valid ids, random per run.
std::int32_t random_id_base(std::uint64_t count) {
  const std::uint64_t top = std::uint64_t{std::numeric_limits<std::int32_t>::max()} - count;
  return static_cast<std::int32_t>(1 + random_u64() % std::min<std::uint64_t>(top, std::uint64_t{1} << 30));
}

// Mints tokens per id from a router's secret file (routers run with --auth token).
class TokenMinter {
 public:
  static std::optional<TokenMinter> load(const std::string& secret_file) {
    if (secret_file.empty()) return TokenMinter{};
    auto secret = auth::load_secret(secret_file);
    if (!secret) {
      std::fprintf(stderr, "debra bench: %s\n", secret.error().message.c_str());
      return std::nullopt;
    }
    TokenMinter minter;
    minter.secret_ = std::move(*secret);
    return minter;
  }
  std::string token_for(std::int32_t id) const {
    if (!secret_) return {};
    auto token = auth::mint_token(*secret_, id, auth::unix_now() + 3600);
    return token ? *token : std::string();
  }

 private:
  std::optional<auth::TokenSecret> secret_;
};

// Outcome: what a run's connections report back to the main thread.
struct Outcome {
  std::atomic<bool> failed{false};
  std::atomic<bool> closing{false};  // the main thread is closing the connections: closes are expected
  std::atomic<bool> refusal_shown{false};  // the first refusal's reason is printed, the rest counted
  std::atomic<bool> rate_limited{false};

  // Reports the first failure only: the rest are usually its consequences.
  void fail(const std::string& what) {
    if (!failed.exchange(true)) std::fprintf(stderr, "debra bench: %s\n", what.c_str());
  }
};

class Worker;
struct Pair;

// BenchConnection: one registered client connection on a worker's loop.
class BenchConnection final : public quic::ConnectionHandler {
 public:
  BenchConnection(Worker& worker, std::int32_t id, Protocol protocol, std::string token)
      : worker_(worker), session_(id, protocol, std::move(token)) {}

  // Loop thread.
  void connect();
  void close();
  quic::Connection* connection() { return endpoint_ ? endpoint_->connection() : nullptr; }
  const client::ProtocolSession& session() const { return session_; }
  bool registered() const { return registered_; }
  // Writes the acknowledgements this loop iteration batched (the Worker calls it before sleeping).
  void flush_acks() {
    acks_waiting_ = false;
    if (auto* c = connection()) session_.flush_acks(*c);
  }

  Pair* pair = nullptr;
  bool receiver = false;

  // quic::ConnectionHandler
  void on_handshake_completed() override;
  void on_stream_data(quic::StreamId id, std::span<const std::uint8_t> data, bool fin) override;
  void on_closing(const quic::CloseInfo& info) override;
  void on_closed(const quic::CloseInfo& info) override;

 private:
  void handle(const wire::Message& message);
  void set_registered();
  void settle(bool ok, const std::string& reason);

  Worker& worker_;
  client::ProtocolSession session_;
  std::unique_ptr<quic::ClientEndpoint> endpoint_;
  std::string server_error_;
  bool registered_ = false;
  bool settled_ = false;  // counted as registered or failed
  bool closing_ = false;
  bool acks_waiting_ = false;  // in the Worker's list for flush_acks
};

// Pair: one sender and one receiver. Sender fields belong to the sender's worker, receiver fields
// to the receiver's worker; the two atomics are shared.
struct Pair {
  explicit Pair(LatencyHistogram& histogram) : tracker(histogram) {}
  std::int32_t sender_id = 0;
  std::int32_t receiver_id = 0;
  BenchConnection* sender = nullptr;
  BenchConnection* receiver = nullptr;
  Worker* sender_worker = nullptr;
  Worker* receiver_worker = nullptr;

  // Sender side.
  // Paced runs: this pair's schedule starts phase_ns after the run's, so that the pairs' messages
  // arrive evenly spread in time instead of all pairs sending at the same instants.
  std::uint64_t phase_ns = 0;
  std::vector<std::uint8_t> payload;
  std::uint64_t next_seq = 0;       // messages sent, whole run
  std::uint64_t sent_measured = 0;  // sent with a timestamp inside the window
  std::uint64_t next_message_id = 0;
  std::uint64_t replies = 0;
  // After a refusal: no sends before resume_ns, and at most limit_window in flight, halved at each
  // refusal and grown by one per accepted message, so a limited pair settles near the rate it is
  // allowed instead of offering a whole window for every token (or every free slot of a full inbox).
  std::uint64_t resume_ns = 0;
  std::uint64_t limit_window = kUnlimited;
  // The wait after a refusal that names none (a full inbox or disk): doubled at each round of
  // refusals, back to nothing once a message is accepted.
  std::uint64_t backoff_ns = 0;
  // Receiver side.
  ReceiveTracker tracker;
  std::uint64_t malformed = 0;
  // Shared.
  std::atomic<std::uint64_t> published{0};  // next_seq as of the sender's last batch
  std::atomic<std::uint64_t> received{0};   // tracker.received() as of the receiver's last message
  // Refused messages never arrive, but they leave the window: the sender heard the outcome.
  std::atomic<std::uint64_t> refused{0};
  std::uint64_t settled() const {
    return received.load(std::memory_order_acquire) + refused.load(std::memory_order_acquire);
  }
};

// Load: the shared parameters of a throughput run, written before go is set.
struct Load {
  std::atomic<bool> go{false};
  MeasureWindow window;
  std::uint64_t start_ns = 0;    // when sending starts (warm-up included)
  std::uint64_t window_size = 64;
  double per_pair_per_ns = 0;    // paced rate per pair; 0: unpaced
};

// Worker: one thread, one loop, many connections.
class Worker {
 public:
  Worker(client::ClientTransport transport, Outcome& outcome, const Load* load)
      : transport_(std::move(transport)), outcome_(outcome), load_(load) {}
  ~Worker() { connections_.clear(); }  // before the loop: endpoints unregister from it

  BenchConnection& add_connection(std::int32_t id, Protocol protocol, std::string token) {
    connections_.push_back(std::make_unique<BenchConnection>(*this, id, protocol, std::move(token)));
    return *connections_.back();
  }
  void add_sender(Pair* pair) { send_pairs_.push_back(pair); }

  // Starts the loop thread; connects at most max_connecting connections at a time.
  void start(std::uint64_t max_connecting) {
    max_connecting_ = std::max<std::uint64_t>(1, max_connecting);
    if (load_ != nullptr) loop_.add_before_sleep([this] { send_due(); });
    loop_.add_before_sleep([this] {
      for (BenchConnection* c : acking_) c->flush_acks();
      acking_.clear();
    });
    thread_ = std::thread([this] { loop_.run(); });
    loop_.post([this] { connect_more(); });
  }
  void post(std::function<void()> work) { loop_.post(std::move(work)); }
  void close_all() {
    loop_.post([this] {
      for (auto& c : connections_) c->close();
    });
  }
  void stop() {
    if (!thread_.joinable()) return;
    loop_.stop();
    thread_.join();
  }
  // Wakes the loop so its before-sleep hook runs; from any thread, at most one post in flight.
  void wake() {
    if (!wake_pending_.exchange(true, std::memory_order_acq_rel)) {
      loop_.post([this] { wake_pending_.store(false, std::memory_order_release); });
    }
  }

  net::EventLoop& loop() { return loop_; }
  const client::ClientTransport& transport() const { return transport_; }
  Outcome& outcome() { return outcome_; }
  LatencyHistogram& histogram() { return histogram_; }
  std::size_t size() const { return connections_.size(); }

  // The window as seen by this worker, once the run has started (nullptr before).
  const MeasureWindow* window() {
    if (!started_ && load_ != nullptr && load_->go.load(std::memory_order_acquire)) started_ = true;
    return started_ ? &load_->window : nullptr;
  }
  // Messages in flight per pair (--window); throughput runs only.
  std::uint64_t window_size() const { return load_ != nullptr ? load_->window_size : 1; }

  // Counters the main thread polls.
  std::atomic<std::uint64_t> registered{0};
  std::atomic<std::uint64_t> failed{0};
  std::atomic<std::uint64_t> closing{0};
  std::atomic<std::uint64_t> last_registered_ns{0};

  // From BenchConnection, loop thread.
  void on_acks_waiting(BenchConnection& connection) { acking_.push_back(&connection); }
  void on_settled() {
    if (connecting_ > 0) --connecting_;
    connect_more();
  }

 private:
  void connect_more() {
    while (connecting_ < max_connecting_ && next_to_connect_ < connections_.size()) {
      ++connecting_;
      connections_[next_to_connect_++]->connect();
    }
  }
  void send_due();
  void send(Pair& pair, std::uint64_t count);
  // When message k of pair is due (paced runs).
  std::uint64_t due_at(const Pair& pair, std::uint64_t k) const;

  client::ClientTransport transport_;
  Outcome& outcome_;
  const Load* load_;
  net::EventLoop loop_;
  std::thread thread_;
  std::vector<std::unique_ptr<BenchConnection>> connections_;
  std::vector<Pair*> send_pairs_;
  std::vector<BenchConnection*> acking_;  // with acknowledgements batched this iteration
  LatencyHistogram histogram_;
  std::atomic<bool> wake_pending_{false};
  bool started_ = false;
  std::uint64_t max_connecting_ = 1;
  std::uint64_t connecting_ = 0;
  std::size_t next_to_connect_ = 0;
  net::EventLoop::TimerId send_timer_ = 0;  // wakes the loop when a paced or rate-limited pair may send
};

// ---- BenchConnection

void BenchConnection::connect() {
  const auto& t = worker_.transport();
  auto endpoint = quic::ClientEndpoint::connect(worker_.loop(), t.server, t.tls, t.settings, *this);
  if (!endpoint) {
    settle(false, endpoint.error().message);
    return;
  }
  endpoint_ = std::move(*endpoint);
}

void BenchConnection::close() {
  closing_ = true;
  if (auto* c = connection(); c != nullptr && c->state() == quic::Connection::State::Open) {
    session_.flush_acks(*c);
    c->close(static_cast<std::uint64_t>(wire::ErrorCode::NoError), "bench done");
  } else if (!settled_) {
    settle(false, "closed before it registered");
  }
}

void BenchConnection::on_handshake_completed() {
  quic::Connection* c = connection();
  if (auto started = session_.start(*c); !started) {
    c->close_now(static_cast<std::uint64_t>(wire::ErrorCode::InternalError), started.error().message);
    return;
  }
  // Legacy mode has no Welcome: the registration is as confirmed as it will ever be.
  if (session_.protocol() == Protocol::Legacy) set_registered();
}

void BenchConnection::on_stream_data(quic::StreamId id, std::span<const std::uint8_t> data, bool) {
  if (auto failure = session_.on_stream_data(id, data, [this](const wire::Message& m) { handle(m); })) {
    server_error_ = "bad data from the router: " + *failure;
    if (auto* c = connection()) c->close_now(static_cast<std::uint64_t>(wire::ErrorCode::ProtocolError), *failure);
  }
}

void BenchConnection::handle(const wire::Message& message) {
  switch (message.type) {
    case wire::MessageType::Welcome: set_registered(); return;
    case wire::MessageType::Error:
      server_error_ = "router closed the connection: " + std::string(wire::to_string(message.error_code)) + ": " +
                      std::string(message.reason);
      return;
    case wire::MessageType::Reply:
      if (pair == nullptr || receiver) return;
      pair->replies += 1 + message.message_ids.size();  // a batched Reply answers several
      if (message.status == wire::DeliveryStatus::Accepted) {
        pair->backoff_ns = 0;
        if (pair->limit_window != kUnlimited) {
          pair->limit_window = std::min(pair->limit_window + 1 + message.message_ids.size(), worker_.window_size());
        }
      }
      if (message.status != wire::DeliveryStatus::Accepted) {
        pair->refused.fetch_add(1 + message.message_ids.size(), std::memory_order_release);
        // As a well-behaved client would: wait as long as the router says after a rate limit (a
        // router that predates retry_after_ms gets a millisecond), and otherwise 0.1 ms, then 0.2,
        // 0.4... up to a second while nothing is accepted (a full inbox frees as its recipient
        // acknowledges, a full disk far later).
        const std::uint64_t now = bench::now_ns();
        const bool new_round = now >= pair->resume_ns;  // the first refusal of what was sent since the last wait
        std::uint64_t wait_ns = 0;
        if (message.error_code == wire::ErrorCode::RateLimited) {
          worker_.outcome().rate_limited.store(true, std::memory_order_relaxed);
          wait_ns = std::max<std::uint64_t>(message.retry_after_ms, 1) * 1'000'000;
        } else {
          if (new_round) pair->backoff_ns = std::clamp<std::uint64_t>(pair->backoff_ns * 2, 100'000, 1'000'000'000);
          wait_ns = pair->backoff_ns;
        }
        if (new_round) {
          pair->limit_window = std::max<std::uint64_t>(1, std::min(pair->limit_window, worker_.window_size()) / 2);
        }
        pair->resume_ns = std::max(pair->resume_ns, now + wait_ns);
        if (!worker_.outcome().refusal_shown.exchange(true)) {
          std::fprintf(stderr, "debra bench: the router refused a message of id %d: %s %.*s\n", session_.id(),
                       std::string(wire::to_string(message.error_code)).c_str(),
                       static_cast<int>(message.reason.size()), message.reason.data());
        }
      }
      return;
    case wire::MessageType::ClientToClient: {
      if (pair == nullptr || !receiver) return;
      const MeasureWindow* window = worker_.window();
      const auto header = bench::read_header(message.payload);
      if (header && window != nullptr) {
        pair->tracker.on_message(*header, bench::now_ns(), *window);
      } else {
        ++pair->malformed;
      }
      if (auto* c = connection(); c != nullptr && session_.acknowledge(*c, message.sequence) && !acks_waiting_) {
        acks_waiting_ = true;
        worker_.on_acks_waiting(*this);
      }
      pair->received.store(pair->tracker.received(), std::memory_order_release);
      if (pair->sender_worker != &worker_) pair->sender_worker->wake();
      return;
    }
    default: return;
  }
}

void BenchConnection::set_registered() {
  registered_ = true;
  settle(true, {});
}

void BenchConnection::settle(bool ok, const std::string& reason) {
  if (settled_) return;
  settled_ = true;
  if (ok) {
    worker_.last_registered_ns.store(bench::now_ns(), std::memory_order_relaxed);
    worker_.registered.fetch_add(1, std::memory_order_release);
  } else {
    worker_.outcome().fail("id " + std::to_string(session_.id()) + " could not register: " + reason);
    worker_.failed.fetch_add(1, std::memory_order_release);
  }
  worker_.on_settled();
}

void BenchConnection::on_closing(const quic::CloseInfo& info) {
  worker_.closing.fetch_add(1, std::memory_order_release);
  if (!closing_ && registered_ && !worker_.outcome().closing.load()) {
    worker_.outcome().fail("the connection of id " + std::to_string(session_.id()) + " closed during the run: " +
                           (server_error_.empty() ? info.to_string() : server_error_));
  }
}

void BenchConnection::on_closed(const quic::CloseInfo& info) {
  if (!settled_) settle(false, server_error_.empty() ? info.to_string() : server_error_);
}

// ---- Worker: sending

void Worker::send_due() {
  const MeasureWindow* window = this->window();
  if (window == nullptr) return;
  const std::uint64_t now = bench::now_ns();
  if (now >= window->end_ns || outcome_.failed.load(std::memory_order_relaxed)) return;
  const bool paced = load_->per_pair_per_ns > 0;
  std::uint64_t next_due_ns = std::numeric_limits<std::uint64_t>::max();
  for (Pair* p : send_pairs_) {
    if (!p->sender->registered()) continue;
    if (now < p->resume_ns) {
      next_due_ns = std::min(next_due_ns, p->resume_ns);
      continue;
    }
    const std::uint64_t in_flight = p->next_seq - std::min(p->next_seq, p->settled());
    const std::uint64_t allowed = std::min(load_->window_size, p->limit_window);
    if (in_flight >= allowed) continue;
    std::uint64_t room = allowed - in_flight;
    if (paced) {
      // Message k of a pair is due at start + phase + k / rate; due counts the messages due by now.
      const std::uint64_t pair_start = load_->start_ns + p->phase_ns;
      std::uint64_t due = 0;
      if (now >= pair_start) {
        due = static_cast<std::uint64_t>(static_cast<double>(now - pair_start) * load_->per_pair_per_ns) + 1;
      }
      if (due <= p->next_seq) {
        next_due_ns = std::min(next_due_ns, due_at(*p, p->next_seq));
        continue;
      }
      room = std::min(room, due - p->next_seq);
    }
    send(*p, room);
    if (paced) next_due_ns = std::min(next_due_ns, due_at(*p, p->next_seq));
  }
  if (send_timer_ == 0 && next_due_ns != std::numeric_limits<std::uint64_t>::max()) {
    const std::uint64_t delay = std::max(kPaceTickNs, next_due_ns > now ? next_due_ns - now : 0);
    send_timer_ = loop_.add_timer(loop_.now() + delay, [this] { send_timer_ = 0; });
  }
}

std::uint64_t Worker::due_at(const Pair& pair, std::uint64_t k) const {
  return load_->start_ns + pair.phase_ns + static_cast<std::uint64_t>(static_cast<double>(k) / load_->per_pair_per_ns);
}

void Worker::send(Pair& pair, std::uint64_t count) {
  quic::Connection* c = pair.sender->connection();
  if (c == nullptr) return;
  const bool native = pair.sender->session().protocol() == Protocol::Native;
  const std::uint64_t send_ns = bench::now_ns();
  const bool measured = load_->window.contains(send_ns);
  for (std::uint64_t k = 0; k < count; ++k) {
    bench::write_header(pair.payload, {send_ns, pair.next_seq});
    pair.sender->session().write(*c, wire::view_client_to_client(pair.sender_id, pair.receiver_id,
                                                                  native ? pair.next_message_id++ : 0, pair.payload));
    ++pair.next_seq;
    if (measured) ++pair.sent_measured;
  }
  pair.published.store(pair.next_seq, std::memory_order_release);
}

// ---- shared by both runs

struct Workers {
  Outcome outcome;
  std::vector<std::unique_ptr<Worker>> list;

  std::uint64_t sum(std::atomic<std::uint64_t> Worker::*counter) const {
    std::uint64_t total = 0;
    for (const auto& w : list) total += ((*w).*counter).load(std::memory_order_acquire);
    return total;
  }
  // Waits until pred() holds or timeout passes; false on timeout.
  template <typename Pred>
  static bool wait_for(Pred pred, std::chrono::milliseconds timeout) {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    while (!pred()) {
      if (std::chrono::steady_clock::now() >= deadline) return false;
      std::this_thread::sleep_for(kPollInterval);
    }
    return true;
  }
  // Closes every connection, waits (bounded) until each has sent its CONNECTION_CLOSE, stops the loops.
  void shut_down(std::uint64_t opened) {
    outcome.closing.store(true);
    for (auto& w : list) w->close_all();
    wait_for([&] { return sum(&Worker::closing) + sum(&Worker::failed) >= opened; }, 5s);
    for (auto& w : list) w->stop();
  }
};

bool make_workers(Workers& workers, const ClientOptions& options, unsigned threads, const Load* load) {
  for (unsigned t = 0; t < threads; ++t) {
    auto transport = client::make_client_transport(options);
    if (!transport) {
      std::fprintf(stderr, "debra bench: %s\n", transport.error().message.c_str());
      return false;
    }
    workers.list.push_back(std::make_unique<Worker>(std::move(*transport), workers.outcome, load));
  }
  return true;
}

double seconds_between(std::uint64_t from_ns, std::uint64_t to_ns) {
  return to_ns > from_ns ? static_cast<double>(to_ns - from_ns) * 1e-9 : 0.0;
}

// VmRSS of a process in KiB, from /proc/PID/status; nullopt if unreadable.
std::optional<std::uint64_t> rss_kib(int pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/status");
  for (std::string line; std::getline(in, line);) {
    if (line.rfind("VmRSS:", 0) == 0) return std::stoull(line.substr(6));
  }
  return std::nullopt;
}

}  // namespace

int run_bench(const BenchFlags& flags) {
  auto minter = TokenMinter::load(flags.token_secret_file);
  if (!minter) return 2;
  const std::size_t payload_size = bench::effective_payload_size(flags.size);
  const std::uint64_t t0 = bench::now_ns();
  auto phase = [&](const char* what) {
    if (flags.verbose) std::fprintf(stderr, "debra bench: %8.3f s  %s\n", seconds_between(t0, bench::now_ns()), what);
  };

  // Measured on 2 cores with debra-nats-load: keeping a pair on one thread wins once every thread
  // has pairs of its own; with fewer pairs than threads, splitting lets them pipeline.
  const bool by_pair = flags.pairs >= flags.threads;
  const auto threads =
      static_cast<unsigned>(std::min<std::uint64_t>(flags.threads, by_pair ? flags.pairs : 2 * flags.pairs));
  Load load;
  load.window_size = flags.window;
  load.per_pair_per_ns = flags.rate > 0 ? flags.rate / static_cast<double>(flags.pairs) / 1e9 : 0;
  Workers workers;
  if (!make_workers(workers, flags.client, threads, &load)) return 1;

  const std::int32_t base = random_id_base(2 * flags.pairs);
  // Random high bits, a counter below, as libdebra does; never 0.
  const std::uint64_t message_id_base = ((random_u64() & 0xffff'ffffULL) | 1) << 32;
  std::vector<std::unique_ptr<Pair>> pairs;
  for (std::uint64_t i = 0; i < flags.pairs; ++i) {
    Worker& receiver_worker = *workers.list[(by_pair ? i : 2 * i) % threads];
    Worker& sender_worker = *workers.list[(by_pair ? i : 2 * i + 1) % threads];
    auto pair = std::make_unique<Pair>(receiver_worker.histogram());
    pair->receiver_id = base + static_cast<std::int32_t>(2 * i);
    pair->sender_id = pair->receiver_id + 1;
    pair->receiver_worker = &receiver_worker;
    pair->sender_worker = &sender_worker;
    pair->payload.resize(payload_size);
    bench::fill_payload(pair->payload);
    pair->next_message_id = message_id_base;
    // Pair i starts i / rate after pair 0: together the pairs send one message every 1 / rate.
    if (flags.rate > 0) pair->phase_ns = static_cast<std::uint64_t>(static_cast<double>(i) * 1e9 / flags.rate);
    pair->receiver = &receiver_worker.add_connection(pair->receiver_id, flags.client.protocol,
                                                     minter->token_for(pair->receiver_id));
    pair->receiver->pair = pair.get();
    pair->receiver->receiver = true;
    pair->sender =
        &sender_worker.add_connection(pair->sender_id, flags.client.protocol, minter->token_for(pair->sender_id));
    pair->sender->pair = pair.get();
    sender_worker.add_sender(pair.get());
    pairs.push_back(std::move(pair));
  }
  const std::uint64_t connections = 2 * flags.pairs;
  for (auto& w : workers.list) w->start(kMaxConnecting / threads);
  const bool all_registered = Workers::wait_for(
      [&] {
        return workers.sum(&Worker::registered) + workers.sum(&Worker::failed) >= connections;
      },
      std::chrono::milliseconds(flags.client.connect_timeout) + 5s);
  if (!all_registered || workers.outcome.failed.load()) {
    if (!all_registered) workers.outcome.fail("timed out registering the connections");
    workers.shut_down(connections);
    return 1;
  }
  if (flags.client.protocol == Protocol::Legacy) {
    // A legacy registration gets no answer: give the router a moment to process the last ones, so
    // the first messages do not wait in the store for a receiver that is registering.
    std::this_thread::sleep_for(100ms);
  }
  if (flags.verbose) {
    std::fprintf(stderr, "debra bench: %u loop thread(s), %s placement\n", threads, by_pair ? "pair" : "split");
  }
  phase("registered");

  load.start_ns = bench::now_ns();
  load.window.begin_ns = load.start_ns + static_cast<std::uint64_t>(flags.warmup_s * 1e9);
  load.window.end_ns = load.window.begin_ns + static_cast<std::uint64_t>(flags.duration_s * 1e9);
  load.go.store(true, std::memory_order_release);
  for (auto& w : workers.list) w->wake();
  phase("warm-up starts");

  // Run, then drain: every pair's receiver has what its sender sent, or the grace is over.
  std::this_thread::sleep_until(std::chrono::steady_clock::time_point(std::chrono::nanoseconds(load.window.end_ns)));
  const auto sent_everything = [&] {
    return std::all_of(pairs.begin(), pairs.end(), [](const auto& p) {
      return p->settled() >= p->published.load(std::memory_order_acquire);
    });
  };
  // The senders' last batch goes out in the iteration after end_ns at the latest.
  std::this_thread::sleep_for(5ms);
  Workers::wait_for([&] { return sent_everything() || workers.outcome.failed.load(); },
                    std::chrono::milliseconds(kDrainGraceNs / 1'000'000));
  phase("run and drain done");
  workers.shut_down(connections);
  phase("connections closed");

  // The loops are stopped: every field is this thread's now.
  bench::Report report;
  report.tool = "debra";
  report.mode = flags.client.protocol == Protocol::Native ? "native" : "legacy";
  report.pairs = flags.pairs;
  report.size = payload_size;
  report.window = flags.window;
  report.duration_s = load.window.seconds();
  LatencyHistogram histogram;
  for (auto& w : workers.list) histogram.merge(w->histogram());
  std::uint64_t malformed = 0;
  std::uint64_t replies = 0;
  std::uint64_t sent_total = 0;
  std::uint64_t in_flight_left = 0;
  for (auto& p : pairs) {
    in_flight_left += report.add_pair(p->sent_measured, p->next_seq, p->tracker, p->refused.load());
    malformed += p->malformed;
    replies += p->replies;
    sent_total += p->next_seq;
  }
  report.set_latency(histogram);
  if (malformed > 0) {
    std::fprintf(stderr, "debra bench: %llu payloads without the header\n", static_cast<unsigned long long>(malformed));
  }
  if (report.refused > 0) {
    std::fprintf(stderr, "debra bench: the router refused %llu messages; the throughput counts those it accepted\n",
                 static_cast<unsigned long long>(report.refused));
  }
  if (workers.outcome.rate_limited) {
    std::fprintf(stderr,
                 "debra bench: the router's per-id rate limit set the pace; to measure the router itself, start it "
                 "with --rate-messages 0 --rate-bytes 0\n");
  }
  if (flags.client.protocol == Protocol::Native && replies < sent_total && !workers.outcome.failed) {
    std::fprintf(stderr, "debra bench: %llu of %llu messages had no reply when the connections closed\n",
                 static_cast<unsigned long long>(sent_total - replies),
                 static_cast<unsigned long long>(sent_total));
  }
  if (in_flight_left > 0) {
    std::fprintf(stderr, "debra bench: %llu messages still missing after the %.0f s drain\n",
                 static_cast<unsigned long long>(in_flight_left), static_cast<double>(kDrainGraceNs) / 1e9);
  }
  if (workers.outcome.failed) std::fprintf(stderr, "debra bench: the run failed; the numbers below are partial\n");
  bench::print_report(report, flags.json);
  workers.list.clear();
  return workers.outcome.failed ? 1 : 0;
}

int run_bench_connections(const ConnectionsFlags& flags) {
  auto minter = TokenMinter::load(flags.token_secret_file);
  if (!minter) return 2;
  const auto threads = static_cast<unsigned>(std::min<std::uint64_t>(flags.threads, flags.count));
  Workers workers;
  if (!make_workers(workers, flags.client, threads, nullptr)) return 1;
  const std::int32_t base = random_id_base(flags.count);
  for (std::uint64_t k = 0; k < flags.count; ++k) {
    const auto id = base + static_cast<std::int32_t>(k);
    workers.list[k % threads]->add_connection(id, flags.client.protocol, minter->token_for(id));
  }
  std::optional<std::uint64_t> rss_before;
  if (flags.server_pid > 0) {
    rss_before = rss_kib(flags.server_pid);
    if (!rss_before) {
      std::fprintf(stderr, "debra bench connections: cannot read /proc/%d/status\n", flags.server_pid);
      return 2;
    }
  }

  const std::uint64_t start_ns = bench::now_ns();
  for (auto& w : workers.list) w->start((flags.concurrency + threads - 1) / threads);
  // Generous: a loaded machine may take a while, but never hang.
  const auto timeout = std::chrono::milliseconds(flags.client.connect_timeout) + std::chrono::seconds(flags.count / 100 + 10);
  const bool settled = Workers::wait_for(
      [&] { return workers.sum(&Worker::registered) + workers.sum(&Worker::failed) >= flags.count; }, timeout);
  std::uint64_t end_ns = 0;
  for (auto& w : workers.list) end_ns = std::max(end_ns, w->last_registered_ns.load());
  const std::uint64_t connected = workers.sum(&Worker::registered);
  const std::uint64_t failed = workers.sum(&Worker::failed);
  if (!settled) workers.outcome.fail("timed out: " + std::to_string(connected) + " of " + std::to_string(flags.count) +
                                     " connections registered");
  const double elapsed_s = seconds_between(start_ns, end_ns);
  const double per_s = elapsed_s > 0 ? static_cast<double>(connected) / elapsed_s : 0;

  // Idle for a moment, so the router's memory is that of idle connections, not of handshakes.
  std::this_thread::sleep_for(std::chrono::duration<double>(flags.hold_s));
  std::optional<std::uint64_t> rss_after;
  if (flags.server_pid > 0) rss_after = rss_kib(flags.server_pid);
  workers.shut_down(connected + failed);

  const char* mode = flags.client.protocol == Protocol::Native ? "native" : "legacy";
  double per_connection_kib = 0;
  if (rss_before && rss_after && connected > 0) {
    per_connection_kib = (static_cast<double>(*rss_after) - static_cast<double>(*rss_before)) /
                         static_cast<double>(connected);
  }
  char text[512];
  std::snprintf(text, sizeof text,
                "debra connections (%s): %llu of %llu registered, %llu failed, in %.3f s: %.1f handshakes/s\n", mode,
                static_cast<unsigned long long>(connected), static_cast<unsigned long long>(flags.count),
                static_cast<unsigned long long>(failed), elapsed_s, per_s);
  std::string out = text;
  if (rss_before && rss_after) {
    std::snprintf(text, sizeof text, "  server RSS %llu KiB -> %llu KiB: %.2f KiB per idle connection\n",
                  static_cast<unsigned long long>(*rss_before), static_cast<unsigned long long>(*rss_after),
                  per_connection_kib);
    out += text;
  }
  if (flags.json) {
    std::fputs(out.c_str(), stderr);
    std::printf(
        "{\"tool\":\"debra\",\"test\":\"connections\",\"mode\":\"%s\",\"count\":%llu,\"connected\":%llu,"
        "\"failed\":%llu,\"concurrency\":%llu,\"elapsed_s\":%.3f,\"handshakes_per_s\":%.1f,"
        "\"server_rss_before_kib\":%llu,\"server_rss_after_kib\":%llu,\"rss_per_connection_kib\":%.3f}\n",
        mode, static_cast<unsigned long long>(flags.count), static_cast<unsigned long long>(connected),
        static_cast<unsigned long long>(failed), static_cast<unsigned long long>(flags.concurrency), elapsed_s, per_s,
        static_cast<unsigned long long>(rss_before.value_or(0)), static_cast<unsigned long long>(rss_after.value_or(0)),
        per_connection_kib);
  } else {
    std::fputs(out.c_str(), stdout);
  }
  std::fflush(stdout);
  workers.list.clear();
  return workers.outcome.failed ? 1 : 0;
}

}  // namespace debra::cli
