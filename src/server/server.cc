// SPDX-License-Identifier: MIT
#include "server/server.h"

#include <fcntl.h>
#include <gnutls/crypto.h>
#include <sched.h>
#include <sys/signalfd.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <csignal>
#include <cstring>
#include <filesystem>
#include <thread>

#include "auth/token.h"
#include "policy/policy_file.h"
#include "metrics/exposition.h"
#include "metrics/http_exporter.h"
#include "server/heap.h"
#include "store/log_store.h"
#include "store/sqlite_store.h"
#include "util/log.h"

namespace debra::server {
namespace {

namespace fs = std::filesystem;

// How stale a scrape of /metrics may be. The loop builds the page this often, so a scrape never waits
// for the loop and the loop never waits for a scrape.
constexpr net::Timestamp kMetricsInterval = 250 * quic::kMillisecond;

// Loads the 32-byte QUIC static secret from the data dir, creating it on first start, so Retry and
// stateless-reset tokens stay valid across restarts.
Result<std::array<std::uint8_t, 32>, Error> load_or_create_secret(const fs::path& path) {
  std::array<std::uint8_t, 32> secret{};
  int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd >= 0) {
    ssize_t n = read(fd, secret.data(), secret.size());
    close(fd);
    if (n != static_cast<ssize_t>(secret.size())) return make_error(path.string() + ": expected 32 bytes");
    return secret;
  }
  if (gnutls_rnd(GNUTLS_RND_KEY, secret.data(), secret.size()) != 0) return make_error("no randomness for the secret");
  fd = open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
  if (fd < 0) return make_error(path.string() + ": " + std::strerror(errno));
  bool ok = write(fd, secret.data(), secret.size()) == static_cast<ssize_t>(secret.size());
  close(fd);
  if (!ok) return make_error(path.string() + ": write failed");
  return secret;
}

// OpenedStore: the store --store names, opened and recovered (null for --store none), and the
// message log as itself when it is one, for what only it has (its sync thread).
struct OpenedStore {
  std::unique_ptr<core::MessageStore> store;
  store::LogStore* log = nullptr;
};

Result<OpenedStore, Error> open_store(const ServerConfig& config) {
  std::unique_ptr<core::MessageStore> opened;
  store::LogStore* log_store = nullptr;
  std::string where;
  if (config.store_kind == StoreKind::Sqlite) {
    auto sqlite = store::SqliteStore::open(config.data_dir, config.sync, config.store);
    if (!sqlite) return Unexpected{sqlite.error()};
    opened = std::move(*sqlite);
    where = config.data_dir + "/messages.db";
  } else if (config.store_kind == StoreKind::Log) {
    // Messages that a router run with --store sqlite accepted must not be left behind unseen.
    const fs::path sqlite_file = fs::path(config.data_dir) / "messages.db";
    if (fs::exists(sqlite_file)) {
      auto sqlite = store::SqliteStore::open(config.data_dir, store::SyncMode::Off, config.store);
      if (sqlite && (*sqlite)->stats().held_messages > 0) {
        return make_error(sqlite_file.string() + " holds " + std::to_string((*sqlite)->stats().held_messages) +
                          " undelivered messages from --store sqlite: run with --store sqlite until they are "
                          "delivered, or move the file away");
      }
    }
    auto log = store::LogStore::open(config.data_dir, config.sync, config.store, config.log);
    if (!log) return Unexpected{log.error()};
    const store::LogRecovery& recovered = (*log)->recovery();
    where = (*log)->directory() + " (" + std::to_string(recovered.segments) + " segments, " +
            std::to_string(recovered.records) + " records read)";
    log_store = log->get();
    opened = std::move(*log);
  } else {
    return OpenedStore{};
  }
  auto stats = opened->stats();
  spdlog::info("message store {}: {} messages ({} bytes) held, sync {}", where, stats.held_messages,
               stats.held_bytes, store::to_string(config.sync));
  return OpenedStore{std::move(opened), log_store};
}

}  // namespace

std::size_t default_thread_count() {
  cpu_set_t cpus;
  CPU_ZERO(&cpus);
  std::size_t count = sched_getaffinity(0, sizeof cpus, &cpus) == 0 ? static_cast<std::size_t>(CPU_COUNT(&cpus))
                                                                    : std::thread::hardware_concurrency();
  return std::clamp<std::size_t>(count, 1, kMaxThreads);
}

Result<std::unique_ptr<Server>, Error> Server::create(ServerConfig config) {
  if (config.threads > kMaxThreads) {
    return make_error("--threads " + std::to_string(config.threads) + ": at most " + std::to_string(kMaxThreads));
  }
  const std::size_t threads = config.threads == 0 ? default_thread_count() : config.threads;
  // Signals arrive as events of worker 0's loop (a signalfd), so shutdown and policy reloads run
  // there like the rest of its work. Blocked before any thread starts (the store's sync thread, the
  // workers, the metrics server), since each inherits the mask.
  sigset_t mask;
  sigemptyset(&mask);
  sigaddset(&mask, SIGINT);
  sigaddset(&mask, SIGTERM);
  sigaddset(&mask, SIGHUP);
  pthread_sigmask(SIG_BLOCK, &mask, nullptr);
  std::error_code ec;
  fs::path dir(config.data_dir);
  fs::create_directories(dir, ec);
  if (ec) return make_error("data dir " + config.data_dir + ": " + ec.message());
  fs::permissions(dir, fs::perms::owner_all, fs::perm_options::replace, ec);

  if (config.cert_file.empty() != config.key_file.empty()) {
    return make_error("--cert and --key go together");
  }
  if (config.cert_file.empty()) {
    config.cert_file = (dir / "cert.pem").string();
    config.key_file = (dir / "key.pem").string();
    if (!fs::exists(config.cert_file) || !fs::exists(config.key_file)) {
      if (auto r = quic::write_self_signed_certificate(config.cert_file, config.key_file); !r) {
        return Unexpected{r.error()};
      }
      spdlog::info("created a self-signed certificate for localhost: {}", config.cert_file);
    }
  }
  auto tls = quic::TlsServerContext::create(config.cert_file, config.key_file, {std::string(wire::kAlpn)},
                                            config.client_ca_file);
  if (!tls) return Unexpected{tls.error()};
  auto secret = load_or_create_secret(dir / "quic-secret");
  if (!secret) return Unexpected{secret.error()};
  config.quic.static_secret = *secret;
  // The token secret is created even without --auth token, so tokens can be issued before a
  // router is switched over to requiring them.
  auto token_secret = config.token_secret_file.empty()
                          ? auth::load_or_create_secret((dir / "token-secret").string())
                          : auth::load_secret(config.token_secret_file);
  if (!token_secret) return Unexpected{token_secret.error()};
  if (!config.token_secret_file.empty()) {
    // Anyone who can read the secret can mint a token for any id.
    struct stat st {};
    if (stat(config.token_secret_file.c_str(), &st) == 0 && (st.st_mode & 077) != 0) {
      spdlog::warn("token secret {} is accessible to group or others (mode {:o}); it should be 0600",
                   config.token_secret_file, st.st_mode & 0777);
    }
  }
  config.session.token_secret = *token_secret;
  config.quic.listen = config.listen;
  if (config.router.max_queued_bytes < config.session.max_frame_size) {
    return make_error("the outbound queue limit must be at least the maximum frame size");
  }

  auto message_store = open_store(config);
  if (!message_store) return Unexpected{message_store.error()};

  std::unique_ptr<Server> server(new Server(std::move(config), std::move(*tls), std::move(message_store->store)));
  Server* raw = server.get();

  quic::ServerConfig quic = raw->config_.quic;
  quic.threads = static_cast<std::uint8_t>(threads);
  quic.admission = std::make_shared<quic::Admission>(quic.max_connections, quic.max_connections_per_address);
  if (threads > 1) {
    // Sockets share an address only if each asks to, so one that does not ask finds any that did
    // (another router on this port) and the address stays an error, as with one thread.
    auto probe = net::UdpSocket::bind(quic.listen);
    if (!probe) return Unexpected{probe.error()};
  }
  for (std::size_t i = 0; i < threads; ++i) {
    quic.thread = static_cast<std::uint8_t>(i);
    // The others join the first one's address, which has the port the kernel picked for port 0.
    if (i > 0) quic.listen = raw->workers_.front()->local_address();
    auto worker = Worker::create(quic, raw->tls_, raw->core_, raw->config_.session);
    if (!worker) return Unexpected{worker.error()};
    raw->workers_.push_back(std::move(*worker));
  }
  std::vector<quic::ServerEndpoint*> endpoints;
  for (auto& worker : raw->workers_) endpoints.push_back(&worker->endpoint());
  for (auto& worker : raw->workers_) worker->endpoint().set_siblings(endpoints);

  raw->commit_relay_->loop = &raw->main_worker().loop();
  if (message_store->log != nullptr) {
    // The loops go on reading and routing while the disk makes a batch durable; the batch's
    // replies and deliveries go out once it is (docs/architecture.md, "Threads").
    message_store->log->sync_on_thread([relay = raw->commit_relay_, core = &raw->core_](std::function<void()> done) {
      std::lock_guard lock(relay->mutex);
      if (relay->loop == nullptr) return;
      relay->loop->post([core, done = std::move(done)] {
        auto guard = core->lock();
        done();
      });
    });
  }

  raw->signal_fd_ = signalfd(-1, &mask, SFD_NONBLOCK | SFD_CLOEXEC);
  raw->main_worker().loop().add_reader(raw->signal_fd_, [raw] {
    signalfd_siginfo info;
    while (read(raw->signal_fd_, &info, sizeof info) == sizeof info) {
      if (info.ssi_signo == SIGHUP) {
        raw->reload_policy();
        continue;
      }
      spdlog::info("received {}, shutting down", strsignal(static_cast<int>(info.ssi_signo)));
      raw->begin_shutdown();
    }
  });
  if (raw->store_) raw->schedule_expiry();
  if (raw->config_.heap_release_threshold > 0) raw->schedule_heap_release();
  if (const auto& listen = raw->config_.metrics_listen) {
    auto exporter = metrics::HttpExporter::start(listen->host(), listen->port());
    if (!exporter) return Unexpected{exporter.error()};
    raw->metrics_ = std::move(*exporter);
    // A first page at once, while no loop runs yet, so a scrape right after the ready line has one.
    std::vector<WorkerFigures> figures;
    for (auto& worker : raw->workers_) figures.push_back(worker->figures());
    raw->metrics_->publish(raw->metrics_page(figures));
    raw->publish_metrics();
  }
  return server;
}

Server::Server(ServerConfig config, quic::TlsServerContext tls, std::unique_ptr<core::MessageStore> store)
    : config_(std::move(config)), tls_(std::move(tls)), store_(std::move(store)),
      router_(config_.router, store_.get()), rate_limiting_(config_.rate_limits), core_(router_, rate_limiting_) {
  router_.set_policy(std::move(config_.policy));  // the router holds the policy in force from here on
}

void Server::reload_policy() {
  if (config_.policy_file.empty()) {
    spdlog::info("received SIGHUP: no --policy file to reload; every pair may still send");
    return;
  }
  auto reloaded = policy::load_policy_file(config_.policy_file);
  if (!reloaded) {
    spdlog::error("policy reload failed, keeping the previous policy ({}): {}", policy::describe(router_.policy()),
                  reloaded.error().message);
    return;
  }
  spdlog::info("policy reloaded from {}: {}", config_.policy_file, policy::describe(*reloaded));
  auto guard = core_.lock();
  router_.set_policy(std::move(*reloaded));
}

void Server::schedule_expiry() {
  net::EventLoop& loop = main_worker().loop();
  loop.add_timer(loop.now() + quic::kSecond, [this] {
    std::size_t expired = 0;
    {
      auto guard = core_.lock();
      expired = router_.expire(wall_clock_ms());
    }
    if (expired > 0) spdlog::info("{} messages expired", expired);
    schedule_expiry();
  });
}

void Server::schedule_heap_release() {
  net::EventLoop& loop = main_worker().loop();
  loop.add_timer(loop.now() + config_.heap_release_interval_ms * quic::kMillisecond, [this] {
    if (const std::uint64_t free = heap_free().bytes; free > config_.heap_release_threshold) {
      release_heap_step(std::chrono::steady_clock::now(), free, 0);
    } else {
      schedule_heap_release();
    }
  });
}

void Server::release_heap_step(std::chrono::steady_clock::time_point started, std::uint64_t free,
                               std::uint64_t released) {
  // tcmalloc holds its page heap's lock while it hands pages back (about 0.5 ms per MiB on the AMD
  // VM): a gigabyte at once stalled this loop, and any thread that needed a new span, for 0.5 s.
  // In steps, the loop reads its sockets in between.
  constexpr std::uint64_t kStep = 4 << 20;
  release_free_heap(kStep);
  const HeapFree after = heap_free();
  const std::uint64_t step = free - std::min(free, after.bytes);
  released += step;
  heap_released_bytes_ += step;
  if (step > 0 && after.bytes > 0 && after.allocator == "tcmalloc") {
    net::EventLoop& loop = main_worker().loop();
    loop.add_timer(loop.now(), [this, started, free = after.bytes, released] {
      release_heap_step(started, free, released);
    });
    return;
  }
  ++heap_releases_;
  spdlog::debug("gave {:.1f} MiB of free heap memory back to the kernel ({}) over {} ms", released / 1048576.0,
                after.allocator,
                std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - started).count());
  schedule_heap_release();
}

Server::~Server() {
  {
    std::lock_guard lock(commit_relay_->mutex);
    commit_relay_->loop = nullptr;
  }
  if (signal_fd_ >= 0) {
    if (!workers_.empty()) main_worker().loop().remove_reader(signal_fd_);
    close(signal_fd_);
  }
  // Sessions call into the core as they go: the workers go before it.
  workers_.clear();
}

void Server::run() {
  spdlog::info("authentication: {}; legacy clients {}",
               config_.session.require_certificate ? "mtls" : config_.session.require_token ? "token" : "none",
               config_.session.allow_legacy ? "allowed" : "refused");
  if (config_.policy_file.empty()) {
    spdlog::info("send policy: none (every pair may send)");
  } else {
    spdlog::info("send policy {}: {}", config_.policy_file, policy::describe(router_.policy()));
  }
  const core::RateLimits& rates = config_.rate_limits;
  spdlog::info("rate limits per id: {} msgs/s (burst {}), {} bytes/s (burst {}) (0: unlimited)",
               rates.messages_per_second, rates.message_burst, rates.bytes_per_second, rates.byte_burst);
  if (metrics_) {
    std::string host = config_.metrics_listen->host();
    if (config_.metrics_listen->family() == AF_INET6) host = "[" + host + "]";
    std::printf("debra-server metrics on http://%s:%u/metrics\n", host.c_str(), metrics_->port());
  }
  spdlog::info("{} event-loop threads, each with a socket on {}", workers_.size(), local_address().to_string());
  std::printf("debra-server ready on %s (data dir %s)\n", local_address().to_string().c_str(),
              config_.data_dir.c_str());
  std::fflush(stdout);
  std::vector<std::thread> threads;
  for (std::size_t i = 1; i < workers_.size(); ++i) {
    threads.emplace_back([worker = workers_[i].get()] { worker->run(); });
  }
  main_worker().run();
  for (std::thread& thread : threads) thread.join();
  WorkerFigures figures;
  for (auto& worker : workers_) figures += worker->figures();
  auto guard = core_.lock();
  router_.flush();  // commit what the last iterations accepted but did not answer
  const SessionCounters& counters = figures.sessions_total;
  spdlog::info("stopped: {} connections accepted, {} messages in, {} delivered, {} protocol errors, {} refused "
               "registrations (Unauthenticated), {} messages refused by the send policy, {} messages refused for "
               "the rate limit (RateLimited), {} legacy messages delayed for it, {} rate buckets forgotten before "
               "they were full",
               figures.quic.accepted, counters.messages_in, router_.stats().delivered, counters.protocol_errors,
               counters.auth_refusals, counters.policy_refusals, counters.rate_refusals, counters.rate_delays,
               rate_limiting_.limiter.stats().evicted);
}

void Server::publish_metrics() {
  // Every thread copies its own figures on its own thread; the last one to answer has worker 0
  // build and publish the page, so a page is as fresh as one round of the threads' loops.
  struct Gather {
    std::mutex mutex;
    std::vector<WorkerFigures> figures;
    std::size_t missing = 0;
  };
  auto gather = std::make_shared<Gather>();
  gather->figures.resize(workers_.size());
  gather->missing = workers_.size() - 1;
  gather->figures.front() = main_worker().figures();
  auto publish = [this, gather] { metrics_->publish(metrics_page(gather->figures)); };
  if (gather->missing == 0) publish();
  for (std::size_t i = 1; i < workers_.size(); ++i) {
    workers_[i]->loop().post([this, gather, publish, i] {
      WorkerFigures figures = workers_[i]->figures();
      std::lock_guard lock(gather->mutex);
      gather->figures[i] = figures;
      if (--gather->missing == 0) main_worker().loop().post(publish);
    });
  }
  net::EventLoop& loop = main_worker().loop();
  loop.add_timer(loop.now() + kMetricsInterval, [this] { publish_metrics(); });
}

std::string Server::metrics_page(const std::vector<WorkerFigures>& threads) {
  metrics::Exposition page;
  WorkerFigures figures;
  for (const WorkerFigures& thread : threads) figures += thread;
  const quic::EndpointStats& quic = figures.quic;
  const SessionCounters& counters = figures.sessions_total;
  auto guard = core_.lock();
  // Connections and sessions now.
  page.gauge("debra_threads", "Event-loop threads, each with a socket on the listening address", workers_.size());
  for (std::size_t i = 0; i < threads.size(); ++i) {
    page.gauge("debra_thread_connections",
               i == 0 ? "Connections each thread holds, in any state (the kernel spreads clients over them)" : "",
               threads[i].connections, "thread=\"" + std::to_string(i) + "\"");
  }
  for (std::size_t i = 0; i < threads.size(); ++i) {
    page.histogram("debra_loop_iteration_seconds",
                   i == 0 ? "Time each pass of a thread's event loop worked, from waking to sleeping again: while one "
                            "runs, that thread's connections wait"
                          : "",
                   threads[i].loop_iterations, "thread=\"" + std::to_string(i) + "\"");
  }
  page.gauge("debra_connections", "QUIC connections the router holds, in any state", figures.connections);
  page.gauge("debra_connections_open", "Connections neither closing nor draining", figures.open_connections);
  page.gauge("debra_handshakes_in_progress", "Connections whose handshake has not finished",
             main_worker().endpoint().admission().handshakes_in_progress());
  page.gauge("debra_sessions", "Sessions (the application side of a connection) alive", figures.sessions);
  page.gauge("debra_clients_online", "Registered ids with a connection", router_.online_count());
  page.gauge("debra_queued_bytes", "Bytes written to clients and not yet acknowledged by them", figures.queued_bytes);
  page.gauge("process_resident_memory_bytes", "Resident set size of the router process", resident_memory_bytes());
  page.gauge("debra_heap_free_bytes", "Memory the allocator holds that no object uses", heap_free().bytes);
  page.counter("debra_heap_released_bytes_total", "Free heap memory given back to the kernel (--heap-release-threshold)",
               heap_released_bytes_);
  page.counter("debra_heap_releases_total", "Times the free heap memory was given back", heap_releases_);
  // The QUIC endpoint.
  page.counter("debra_datagrams_received_total", "UDP datagrams received", quic.received_datagrams);
  page.counter("debra_datagrams_sent_total", "UDP datagrams sent", quic.sent_datagrams);
  page.counter("debra_udp_send_calls_total", "System calls that sent them (one carries several with UDP GSO)",
               quic.send_calls);
  page.counter("debra_datagrams_send_dropped_total",
               "Datagrams the kernel would not take (a full socket buffer); QUIC's loss recovery resends them",
               quic.send_dropped);
  page.counter("debra_datagrams_dropped_total", "Datagrams dropped as unparseable or unacceptable",
               quic.dropped_datagrams);
  page.counter("debra_connections_accepted_total", "Connections accepted", quic.accepted);
  page.counter("debra_connections_refused_total", "Connections refused with CONNECTION_REFUSED",
               quic.refused - quic.refused_per_address, "reason=\"capacity\"");
  page.counter("debra_connections_refused_total", "", quic.refused_per_address, "reason=\"per_address\"");
  page.counter("debra_retries_sent_total", "Retry packets sent to make a client prove its address",
               quic.retries_sent);
  page.counter("debra_invalid_retry_tokens_total", "Initial packets with a Retry token that did not verify",
               quic.invalid_tokens);
  page.counter("debra_abandoned_before_retry_total",
               "Half-made connections closed when their client came back with a Retry token",
               quic.abandoned_before_retry);
  page.counter("debra_tls_sessions_released_total",
               "Connections that freed their TLS session once their handshake was done", quic.tls_sessions_released);
  page.counter("debra_stateless_resets_sent_total", "Stateless resets sent for packets of unknown connections",
               quic.stateless_resets_sent);
  page.counter("debra_version_negotiations_sent_total", "Version Negotiation packets sent",
               quic.version_negotiations_sent);
  page.counter("debra_datagrams_forwarded_total",
               "Datagrams a thread's socket received for another thread's connection (its client's address changed)",
               quic.forwarded_datagrams);
  // Sessions (SessionCounters): one line per counter.
  page.counter("debra_protocol_errors_total", "Sessions closed for a protocol violation", counters.protocol_errors);
  page.counter("debra_auth_refusals_total", "Registrations refused with Unauthenticated", counters.auth_refusals);
  page.counter("debra_messages_in_total", "Messages received from clients", counters.messages_in);
  page.counter("debra_policy_refusals_total", "Messages the send policy refused", counters.policy_refusals);
  page.counter("debra_rate_refusals_total", "Native messages refused with RateLimited", counters.rate_refusals);
  page.counter("debra_rate_delays_total", "Legacy messages held back for their sender's rate limit",
               counters.rate_delays);
  page.counter("debra_rate_buckets_evicted_total", "Rate buckets forgotten before they were full",
               rate_limiting_.limiter.stats().evicted);
  // The routing core.
  const core::RouterStats& router = router_.stats();
  page.counter("debra_registrations_total", "Ids registered", router.registrations);
  page.counter("debra_takeovers_total", "Registrations that displaced an online connection", router.takeovers);
  page.counter("debra_messages_delivered_total", "Messages handed to an online recipient", router.delivered);
  page.counter("debra_messages_stored_total", "Messages committed to the store", router.stored);
  page.counter("debra_messages_acknowledged_total", "Acknowledgements that removed a message", router.acknowledged);
  page.counter("debra_messages_expired_total", "Messages dropped at their time-to-live", router.expired);
  page.counter("debra_messages_refused_total", "Messages refused", router.busy, "reason=\"busy\"");
  page.counter("debra_messages_refused_total", "", router.invalid_recipient, "reason=\"invalid_recipient\"");
  page.counter("debra_messages_refused_total", "", router.quota_exceeded, "reason=\"quota_exceeded\"");
  page.counter("debra_messages_refused_total", "", router.store_unavailable, "reason=\"store_unavailable\"");
  page.counter("debra_messages_refused_total", "", router.forbidden, "reason=\"forbidden\"");
  page.counter("debra_messages_offline_dropped_total", "Without a store: messages for offline ids, dropped",
               router.offline);
  if (store_) {
    core::StoreStats store = store_->stats();
    page.gauge("debra_store_held_messages", "Messages the store holds", store.held_messages);
    page.gauge("debra_store_held_bytes", "Payload bytes the store holds", store.held_bytes);
    page.gauge("debra_store_disk_bytes", "Disk space the store's files take (the message log's spares included)",
               store.disk_bytes);
    page.counter("debra_store_commits_total", "Store transactions committed", store.commits);
    page.counter("debra_store_syncs_total", "fdatasync calls of the message log (0 with --store sqlite)",
                 store.syncs);
    page.histogram("debra_store_commit_seconds",
                   "From the start of each commit that holds messages to its completion: how long an accepted "
                   "message waits before its sender's reply and its delivery",
                   store.commit_times);
    page.histogram("debra_store_sync_seconds", "Each fdatasync of the message log (none with --store sqlite)",
                   store.sync_times);
    page.counter("debra_store_removals_unwritten_total",
                 "Acknowledgements and expiries a full disk or a failed commit kept out of the message log (their "
                 "messages would come back after a restart)",
                 store.removals_unwritten);
    page.counter("debra_store_compactions_total",
                 "Rounds in which the message log copied held messages of a mostly emptied segment forward, so "
                 "that the segment could go: a MiB at most each (0 with --store sqlite)",
                 store.compactions);
    page.counter("debra_store_compacted_bytes_total",
                 "Bytes of records the message log wrote a second time when it copied held messages forward",
                 store.compacted_bytes);
  }
  return page.take();
}

void Server::begin_shutdown() {
  if (shutting_down_) return;
  shutting_down_ = true;
  const net::Timestamp deadline = main_worker().loop().now() +
                                  static_cast<net::Timestamp>(config_.shutdown_timeout_ms) * quic::kMillisecond;
  for (auto& worker : workers_) {
    if (worker == workers_.front()) {
      worker->shut_down(deadline);
    } else {
      worker->loop().post([raw = worker.get(), deadline] { raw->shut_down(deadline); });
    }
  }
}

}  // namespace debra::server
