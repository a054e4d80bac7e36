// SPDX-License-Identifier: MIT
//
// debra-nats-load: the load shape of `debra bench`, against a NATS server through libnats (the
// Debian 12 C client, 3.4), so docs/benchmarks.md can put both side by side.
//
// Shape: P pairs; pair i is one publisher connection and one subscriber connection on subject
// bench.<i>. The publisher keeps at most W messages in flight (published minus received by its
// subscriber), so throughput is window-limited exactly like `debra bench`. Payloads carry the shared
// header (bench/load/latency.h). A warm-up, then a measured window of D seconds, then a bounded
// drain of what is still in flight; the report goes through the shared printer (tool "nats").
//
// Client design, so that the client is not the bottleneck on a small machine: libnats normally
// runs a read thread and a flusher thread per connection (the flusher waits ~1 ms to batch). Here
// every connection is attached to one of our own epoll loops instead (natsOptions_SetEventLoop)
// with SendAsap, so libnats creates no per-connection threads. A loop thread reads its sockets,
// drains its synchronous subscriptions, publishes, and writes each connection's buffered
// publications with one TLS write per loop iteration. --threads loops share the 2P connections;
// a pair's in-flight count is two atomics (published, received), and a subscriber loop wakes a
// sleeping publisher loop through an eventfd only when that loop is blocked.
#include <nats/nats.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <latch>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include <CLI/CLI.hpp>

#include "load/latency.h"

namespace {

using debra::bench::LatencyHistogram;
using debra::bench::MeasureWindow;
using debra::bench::ReceiveTracker;

struct Options {
  std::string url = "tls://127.0.0.1:4222";
  std::string ca;
  std::uint64_t pairs = 1;
  std::uint64_t size = 64;
  double duration_s = 5;
  std::uint64_t window = 64;
  double warmup_s = 1;
  unsigned threads = 2;
  std::string placement = "auto";
  bool json = false;
  bool verbose = false;
};

// How long after the window closes the loops keep reading what is still in flight.
constexpr std::uint64_t kDrainGraceNs = 3'000'000'000;

std::atomic<bool> g_failed{false};
std::atomic<bool> g_closing{false};

void fail_run(const char* what) {
  if (!g_failed.exchange(true)) std::fprintf(stderr, "debra-nats-load: %s\n", what);
}

void check(natsStatus s, const char* what) {
  if (s == NATS_OK) return;
  std::fprintf(stderr, "debra-nats-load: %s: %s (%s)\n", what, natsStatus_GetText(s), nats_GetLastError(nullptr));
  std::exit(1);
}

struct Pair;
class Loop;

// Conn: our side of one libnats connection attached to a Loop. libnats calls the adapter callbacks
// below from the thread that triggers them: the loop thread (reads, publishes, writes), the main
// thread (connect, subscribe, flush, close), or its timer thread (PINGs); mu serialises the epoll
// registration between them.
struct Conn {
  Loop* loop = nullptr;
  Pair* pair = nullptr;
  bool subscriber = false;
  natsConnection* nc = nullptr;
  int fd = -1;

  std::mutex mu;
  std::uint32_t events = 0;  // epoll mask registered; 0 = not registered
  // Loop-thread fast path: libnats asked to write; the loop flushes at the end of the iteration
  // without waiting for EPOLLOUT.
  bool want_write = false;
  bool queued = false;
};

// Pair: one publisher/subscriber pair. Fields are owned by the publisher's loop (pub side), the
// subscriber's loop (sub side), or shared through atomics.
struct Pair {
  Pair(std::size_t i, LatencyHistogram& histogram) : subject("bench." + std::to_string(i)), tracker(histogram) {}
  std::string subject;
  Conn pub;
  Conn sub;
  natsSubscription* subscription = nullptr;

  // Publisher side.
  std::uint64_t next_seq = 0;       // messages published, whole run
  std::uint64_t sent_measured = 0;  // published with a send time inside the window
  // Subscriber side.
  ReceiveTracker tracker;
  std::uint64_t malformed = 0;
  bool dirty = false;  // the subscriber connection read something this iteration
  // Shared.
  std::atomic<std::uint64_t> published{0};  // next_seq, as of the publisher's last batch
  std::atomic<std::uint64_t> received{0};   // tracker.received(), as of the subscriber's last drain
  std::atomic<bool> pub_done{false};        // the publisher will publish nothing more
};

thread_local Loop* tl_loop = nullptr;

struct Shared {
  explicit Shared(std::ptrdiff_t loops) : finished(loops) {}
  std::atomic<bool> go{false};
  std::latch finished;            // each loop counts down once its pairs are measured and drained
  std::atomic<bool> quit{false};  // set once every connection is closed
  MeasureWindow window;           // written before go is set
  std::uint64_t window_size = 64;
  std::size_t payload_size = 64;
};

class Loop {
 public:
  Loop() : epfd_(epoll_create1(EPOLL_CLOEXEC)), wakefd_(eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)) {
    if (epfd_ < 0 || wakefd_ < 0) {
      std::perror("epoll_create1/eventfd");
      std::exit(1);
    }
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.ptr = nullptr;  // the wake-up eventfd
    if (epoll_ctl(epfd_, EPOLL_CTL_ADD, wakefd_, &ev) != 0) {
      std::perror("epoll_ctl");
      std::exit(1);
    }
  }
  ~Loop() {
    ::close(wakefd_);
    ::close(epfd_);
  }
  Loop(const Loop&) = delete;
  Loop& operator=(const Loop&) = delete;

  int epfd() const { return epfd_; }
  void add_publisher(Pair* pair) { pub_pairs_.push_back(pair); }
  void add_subscriber(Pair* pair) { sub_pairs_.push_back(pair); }
  void queue_write(Conn* c) {
    if (!c->queued) {
      c->queued = true;
      write_queue_.push_back(c);
    }
  }
  LatencyHistogram& histogram() { return histogram_; }

  // Called by another loop after a pair's window reopened: wakes this loop if it is blocked.
  void wake_if_asleep() {
    if (asleep_.exchange(false)) {
      const std::uint64_t one = 1;
      [[maybe_unused]] const ssize_t n = ::write(wakefd_, &one, sizeof one);
    }
  }

  void start(Shared& shared) {
    thread_ = std::thread([this, &shared] { run(shared); });
  }
  void join() {
    if (thread_.joinable()) thread_.join();
  }

 private:
  void run(Shared& shared);
  void handle_events(int n, bool measuring, const MeasureWindow& window);
  void drain(Pair& pair, const MeasureWindow& window);
  bool has_room(const Shared& shared) const;
  void publish(Pair& pair, const Shared& shared, std::vector<std::uint8_t>& buffer);
  void flush_writes();

  int epfd_;
  int wakefd_;
  std::atomic<bool> asleep_{false};
  std::vector<Pair*> pub_pairs_;
  std::vector<Pair*> sub_pairs_;
  std::vector<Conn*> write_queue_;
  std::vector<epoll_event> events_ = std::vector<epoll_event>(256);
  LatencyHistogram histogram_;
  std::thread thread_;
};

// Sets or clears bits of c's epoll registration.
natsStatus update_events(Conn* c, std::uint32_t bits, bool add) {
  std::lock_guard lock(c->mu);
  if (c->events == 0) return NATS_OK;  // detached
  const std::uint32_t next = add ? (c->events | bits) : (c->events & ~bits);
  if (next == c->events) return NATS_OK;
  epoll_event ev{};
  ev.events = next;
  ev.data.ptr = c;
  if (epoll_ctl(c->loop->epfd(), EPOLL_CTL_MOD, c->fd, &ev) != 0) return NATS_ERR;
  c->events = next;
  return NATS_OK;
}

// ---- libnats event-loop adapter. The `loop` pointer given to natsOptions_SetEventLoop is the Conn.

natsStatus ev_attach(void** user_data, void* loop, natsConnection* nc, natsSock socket) {
  auto* c = static_cast<Conn*>(loop);
  std::lock_guard lock(c->mu);
  if (c->events != 0) return NATS_ILLEGAL_STATE;  // reconnects are disabled
  c->nc = nc;
  c->fd = socket;
  epoll_event ev{};
  ev.events = EPOLLIN;
  ev.data.ptr = c;
  if (epoll_ctl(c->loop->epfd(), EPOLL_CTL_ADD, socket, &ev) != 0) return NATS_ERR;
  c->events = EPOLLIN;
  *user_data = c;
  return NATS_OK;
}

natsStatus ev_read(void* user_data, bool add) { return update_events(static_cast<Conn*>(user_data), EPOLLIN, add); }

natsStatus ev_write(void* user_data, bool add) {
  auto* c = static_cast<Conn*>(user_data);
  if (tl_loop == c->loop) {
    // On the loop thread: no syscall; the loop writes once per iteration.
    c->want_write = add;
    if (add) {
      c->loop->queue_write(c);
      return NATS_OK;
    }
    return update_events(c, EPOLLOUT, false);
  }
  // Another thread: let epoll wake the loop.
  return update_events(c, EPOLLOUT, add);
}

natsStatus ev_detach(void* user_data) {
  auto* c = static_cast<Conn*>(user_data);
  std::lock_guard lock(c->mu);
  if (c->events != 0) {
    epoll_ctl(c->loop->epfd(), EPOLL_CTL_DEL, c->fd, nullptr);
    c->events = 0;
  }
  return NATS_OK;
}

void on_closed(natsConnection*, void*) {
  if (!g_closing.load()) fail_run("a connection closed during the run");
}

void on_async_error(natsConnection*, natsSubscription*, natsStatus err, void*) {
  std::fprintf(stderr, "debra-nats-load: asynchronous error: %s\n", natsStatus_GetText(err));
  if (err == NATS_SLOW_CONSUMER) fail_run("slow consumer: the subscription dropped messages");
}

// ---- the loop

void Loop::run(Shared& shared) {
  tl_loop = this;
  std::vector<std::uint8_t> buffer(shared.payload_size);
  debra::bench::fill_payload(buffer);
  bool started = false;
  bool pubs_done = false;
  bool finished = false;
  MeasureWindow window;
  for (;;) {
    if (!finished && g_failed.load(std::memory_order_relaxed)) {
      finished = true;
      shared.finished.count_down();
    }
    if (finished) {
      // Keep serving I/O (no draining, no publishing) so that closing the connections, which
      // waits for the server's answer, completes: libnats only reads through this loop.
      if (shared.quit.load(std::memory_order_acquire)) break;
      handle_events(epoll_wait(epfd_, events_.data(), static_cast<int>(events_.size()), 5), false, window);
      flush_writes();
      continue;
    }
    if (!started && shared.go.load(std::memory_order_acquire)) {
      started = true;
      window = shared.window;
    }
    const std::uint64_t now = debra::bench::now_ns();
    const bool publishing = started && now < window.end_ns;
    if (started && !publishing) {
      if (!pubs_done) {
        // This loop's last publications went out in the previous iteration.
        for (Pair* p : pub_pairs_) p->pub_done.store(true, std::memory_order_release);
        pubs_done = true;
      }
      const bool all_in = std::all_of(sub_pairs_.begin(), sub_pairs_.end(), [](const Pair* p) {
        return p->pub_done.load(std::memory_order_acquire) &&
               p->tracker.received() >= p->published.load(std::memory_order_acquire);
      });
      if (all_in || now >= window.end_ns + kDrainGraceNs) {
        finished = true;
        shared.finished.count_down();
        continue;
      }
    }

    // Sleep only when nothing can be done without an event. asleep_ is raised before the last look
    // at the windows, so a subscriber loop that reopens one afterwards sees it and wakes us.
    int timeout_ms = 5;
    if (publishing) {
      asleep_.store(true);
      timeout_ms = has_room(shared)
                       ? 0
                       : static_cast<int>(std::min<std::uint64_t>((window.end_ns - now) / 1'000'000 + 1, 100));
    }
    const int n = epoll_wait(epfd_, events_.data(), static_cast<int>(events_.size()), timeout_ms);
    asleep_.store(false, std::memory_order_relaxed);
    handle_events(n, true, window);
    if (publishing) {
      for (Pair* p : pub_pairs_) publish(*p, shared, buffer);
    }
    flush_writes();
  }
  tl_loop = nullptr;
}

void Loop::handle_events(int n, bool measuring, const MeasureWindow& window) {
  if (n < 0 && errno != EINTR) {
    std::perror("epoll_wait");
    fail_run("event loop failed");
    return;
  }
  for (int i = 0; i < n; ++i) {
    const epoll_event& e = events_[static_cast<std::size_t>(i)];
    auto* c = static_cast<Conn*>(e.data.ptr);
    if (c == nullptr) {
      std::uint64_t count = 0;
      [[maybe_unused]] const ssize_t r = ::read(wakefd_, &count, sizeof count);
      continue;
    }
    if (e.events & (EPOLLIN | EPOLLERR | EPOLLHUP)) {
      natsConnection_ProcessReadEvent(c->nc);
      if (c->subscriber) c->pair->dirty = true;
    }
    if (e.events & EPOLLOUT) natsConnection_ProcessWriteEvent(c->nc);
  }
  if (!measuring) return;
  for (Pair* p : sub_pairs_) {
    if (p->dirty) drain(*p, window);
  }
}

void Loop::drain(Pair& pair, const MeasureWindow& window) {
  pair.dirty = false;
  int pending = 0;
  if (natsSubscription_GetPending(pair.subscription, &pending, nullptr) != NATS_OK) {
    fail_run("subscription is no longer valid");
    return;
  }
  if (pending == 0) return;
  const std::uint64_t recv_ns = debra::bench::now_ns();
  for (int i = 0; i < pending; ++i) {
    natsMsg* msg = nullptr;
    const natsStatus s = natsSubscription_NextMsg(&msg, pair.subscription, 0);
    if (s != NATS_OK) {
      if (s == NATS_SLOW_CONSUMER) fail_run("slow consumer: the subscription dropped messages");
      break;
    }
    const auto length = static_cast<std::size_t>(natsMsg_GetDataLength(msg));
    const auto header = debra::bench::read_header(natsMsg_GetData(msg), length);
    if (header) {
      pair.tracker.on_message(*header, recv_ns, window);
    } else {
      ++pair.malformed;
    }
    natsMsg_Destroy(msg);
  }
  pair.received.store(pair.tracker.received());  // seq_cst: ordered before the look at asleep_
  if (pair.pub.loop != this) pair.pub.loop->wake_if_asleep();
}

bool Loop::has_room(const Shared& shared) const {
  return std::any_of(pub_pairs_.begin(), pub_pairs_.end(), [&](const Pair* p) {
    return p->next_seq - std::min(p->next_seq, p->received.load()) < shared.window_size;
  });
}

void Loop::publish(Pair& pair, const Shared& shared, std::vector<std::uint8_t>& buffer) {
  const std::uint64_t received = pair.received.load(std::memory_order_acquire);
  const std::uint64_t in_flight = pair.next_seq - std::min(pair.next_seq, received);
  if (in_flight >= shared.window_size) return;
  const std::uint64_t send_ns = debra::bench::now_ns();
  const bool measured = shared.window.contains(send_ns);
  for (std::uint64_t k = in_flight; k < shared.window_size; ++k) {
    debra::bench::write_header(buffer, {send_ns, pair.next_seq});
    const natsStatus s =
        natsConnection_Publish(pair.pub.nc, pair.subject.c_str(), buffer.data(), static_cast<int>(buffer.size()));
    if (s != NATS_OK) {
      fail_run("publish failed");
      return;
    }
    ++pair.next_seq;
    if (measured) ++pair.sent_measured;
  }
  pair.published.store(pair.next_seq, std::memory_order_release);
}

void Loop::flush_writes() {
  // ProcessWriteEvent only writes, it never queues another connection, so indexing is safe.
  for (std::size_t i = 0; i < write_queue_.size(); ++i) {
    Conn* c = write_queue_[i];
    c->queued = false;
    if (!c->want_write) continue;
    natsConnection_ProcessWriteEvent(c->nc);
    // Not everything went out (a plain-TCP partial write): wait for the socket to drain.
    if (c->want_write) update_events(c, EPOLLOUT, true);
  }
  write_queue_.clear();
}

// ---- set-up

// One options object for every connection: natsOptions_SetSecure loads the system trust store,
// which costs tens of milliseconds, so it is done once. libnats copies the options at connect
// time, the event-loop pointer (our Conn) included.
natsOptions* make_options(const Options& opt) {
  natsOptions* o = nullptr;
  check(natsOptions_Create(&o), "natsOptions_Create");
  check(natsOptions_SetURL(o, opt.url.c_str()), "natsOptions_SetURL");
  check(natsOptions_SetName(o, "debra-nats-load"), "natsOptions_SetName");
  const bool tls = opt.url.rfind("tls://", 0) == 0 || !opt.ca.empty();
  if (tls) check(natsOptions_SetSecure(o, true), "natsOptions_SetSecure");
  if (!opt.ca.empty()) check(natsOptions_LoadCATrustedCertificates(o, opt.ca.c_str()), "loading the CA file");
  check(natsOptions_SetTimeout(o, 10000), "natsOptions_SetTimeout");
  check(natsOptions_SetAllowReconnect(o, false), "natsOptions_SetAllowReconnect");
  check(natsOptions_SetSendAsap(o, true), "natsOptions_SetSendAsap");  // no flusher thread; the loop batches
  check(natsOptions_SetClosedCB(o, on_closed, nullptr), "natsOptions_SetClosedCB");
  check(natsOptions_SetErrorHandler(o, on_async_error, nullptr), "natsOptions_SetErrorHandler");
  return o;
}

natsConnection* connect(const Options& opt, natsOptions* o, Conn& conn) {
  check(natsOptions_SetEventLoop(o, &conn, ev_attach, ev_read, ev_write, ev_detach), "natsOptions_SetEventLoop");
  natsConnection* nc = nullptr;
  check(natsConnection_Connect(&nc, o), ("connecting to " + opt.url).c_str());
  return nc;
}

}  // namespace

int main(int argc, char** argv) {
  Options opt;
  CLI::App app{"debra-nats-load: the `debra bench` load shape (P publisher/subscriber pairs, at most W messages "
               "in flight per pair) against a NATS server over TLS, through libnats"};
  app.add_option("--url", opt.url, "NATS server URL")->capture_default_str();
  app.add_option("--ca", opt.ca, "PEM file of the CA that signed the server certificate (TLS verification)")
      ->check(CLI::ExistingFile);
  app.add_option("--pairs", opt.pairs, "publisher/subscriber pairs (2P connections)")
      ->capture_default_str()
      ->check(CLI::Range(std::uint64_t{1}, std::uint64_t{100000}));
  app.add_option("--size", opt.size, "payload bytes (at least 16: the timestamp and sequence header)")
      ->capture_default_str()
      ->check(CLI::Range(std::uint64_t{0}, std::uint64_t{64} << 20));
  app.add_option("--duration", opt.duration_s, "measured seconds")->capture_default_str()->check(CLI::PositiveNumber);
  app.add_option("--window", opt.window, "messages in flight per pair, at most")
      ->capture_default_str()
      ->check(CLI::Range(std::uint64_t{1}, std::uint64_t{1} << 20));
  app.add_option("--warmup", opt.warmup_s, "seconds of load before the measured window")
      ->capture_default_str()
      ->check(CLI::NonNegativeNumber);
  app.add_option("--threads", opt.threads, "client event-loop threads")
      ->capture_default_str()
      ->check(CLI::Range(1u, 64u));
  app.add_option("--placement", opt.placement,
                 "pair: both connections of pair i on loop i mod threads; split: connection k of 2P (subscriber "
                 "of pair i = 2i, publisher = 2i+1) on loop k mod threads, so with 2 threads publishers and "
                 "subscribers run on different threads; auto: pair when pairs >= threads, else split")
      ->capture_default_str()
      ->check(CLI::IsMember({"auto", "split", "pair"}));
  app.add_flag("--json", opt.json, "print one JSON line on stdout (the text report goes to stderr)");
  app.add_flag("-v,--verbose", opt.verbose, "print the phases of the run on stderr");
  CLI11_PARSE(app, argc, argv);

  const std::size_t payload_size = debra::bench::effective_payload_size(opt.size);
  // Measured on 2 cores: keeping a pair on one thread wins once every thread has pairs of its own
  // (no cross-thread wake-ups); with fewer pairs than threads, splitting lets them pipeline.
  const bool by_pair = opt.placement == "pair" || (opt.placement == "auto" && opt.pairs >= opt.threads);
  const std::uint64_t max_loops = by_pair ? opt.pairs : 2 * opt.pairs;
  const auto threads = static_cast<unsigned>(std::min<std::uint64_t>(opt.threads, max_loops));

  const std::uint64_t t0 = debra::bench::now_ns();
  auto phase = [&](const char* what) {
    if (opt.verbose) {
      std::fprintf(stderr, "debra-nats-load: %8.3f s  %s\n", static_cast<double>(debra::bench::now_ns() - t0) / 1e9,
                   what);
    }
  };
  check(nats_Open(-1), "nats_Open");

  std::vector<std::unique_ptr<Loop>> loops;
  for (unsigned t = 0; t < threads; ++t) loops.push_back(std::make_unique<Loop>());
  std::vector<std::unique_ptr<Pair>> pairs;
  for (std::size_t i = 0; i < opt.pairs; ++i) {
    Loop& sub_loop = *loops[(by_pair ? i : 2 * i) % threads];
    Loop& pub_loop = *loops[(by_pair ? i : 2 * i + 1) % threads];
    auto pair = std::make_unique<Pair>(i, sub_loop.histogram());
    pair->sub.loop = &sub_loop;
    pair->sub.pair = pair.get();
    pair->sub.subscriber = true;
    pair->pub.loop = &pub_loop;
    pair->pub.pair = pair.get();
    sub_loop.add_subscriber(pair.get());
    pub_loop.add_publisher(pair.get());
    pairs.push_back(std::move(pair));
  }

  // Connect and subscribe from this thread, then run the loops and make sure every SUB reached the
  // server (a PING/PONG on each subscriber connection) before any message is published.
  Shared shared(static_cast<std::ptrdiff_t>(loops.size()));
  shared.window_size = opt.window;
  shared.payload_size = payload_size;
  natsOptions* nats_options = make_options(opt);
  for (auto& p : pairs) {
    p->sub.nc = connect(opt, nats_options, p->sub);
    check(natsConnection_SubscribeSync(&p->subscription, p->sub.nc, p->subject.c_str()), "subscribe");
    // The window bounds what is pending; never let the library drop messages.
    check(natsSubscription_SetPendingLimits(p->subscription, -1, -1), "natsSubscription_SetPendingLimits");
    p->pub.nc = connect(opt, nats_options, p->pub);
  }
  if (opt.verbose) {
    std::fprintf(stderr, "debra-nats-load: %u loop thread(s), %s placement\n", threads, by_pair ? "pair" : "split");
  }
  phase("connected and subscribed");
  for (auto& loop : loops) loop->start(shared);
  for (auto& p : pairs) check(natsConnection_FlushTimeout(p->sub.nc, 10000), "flushing the subscriptions");

  const std::uint64_t start = debra::bench::now_ns();
  shared.window.begin_ns = start + static_cast<std::uint64_t>(opt.warmup_s * 1e9);
  shared.window.end_ns = shared.window.begin_ns + static_cast<std::uint64_t>(opt.duration_s * 1e9);
  shared.go.store(true, std::memory_order_release);
  phase("subscriptions flushed; warm-up starts");
  shared.finished.wait();
  phase("run and drain done");

  debra::bench::Report report;
  report.tool = "nats";
  report.mode = opt.url.rfind("tls://", 0) == 0 || !opt.ca.empty() ? "tls" : "tcp";
  report.pairs = opt.pairs;
  report.size = payload_size;
  report.window = opt.window;
  report.duration_s = shared.window.seconds();
  LatencyHistogram histogram;
  std::uint64_t malformed = 0;
  std::uint64_t in_flight_left = 0;
  for (auto& loop : loops) histogram.merge(loop->histogram());
  for (auto& p : pairs) {
    in_flight_left += report.add_pair(p->sent_measured, p->next_seq, p->tracker);
    malformed += p->malformed;
  }
  report.set_latency(histogram);

  // Close while the loops still serve I/O, then stop them, then free: a closed connection ignores
  // late events, a destroyed one would not.
  g_closing.store(true);
  for (auto& p : pairs) {
    natsConnection_Close(p->sub.nc);
    natsConnection_Close(p->pub.nc);
  }
  shared.quit.store(true, std::memory_order_release);
  for (auto& loop : loops) loop->join();
  for (auto& p : pairs) {
    natsSubscription_Destroy(p->subscription);
    natsConnection_Destroy(p->sub.nc);
    natsConnection_Destroy(p->pub.nc);
  }
  natsOptions_Destroy(nats_options);
  loops.clear();
  phase("connections closed");
  nats_Close();

  if (malformed > 0) {
    std::fprintf(stderr, "debra-nats-load: %llu malformed payloads\n", static_cast<unsigned long long>(malformed));
  }
  if (g_failed.load()) std::fprintf(stderr, "debra-nats-load: the run failed; the numbers below are partial\n");
  if (in_flight_left > 0) {
    std::fprintf(stderr, "debra-nats-load: %llu messages still missing after the %.0f s drain\n",
                 static_cast<unsigned long long>(in_flight_left), static_cast<double>(kDrainGraceNs) / 1e9);
  }
  debra::bench::print_report(report, opt.json);
  return g_failed.load() ? 1 : 0;
}
