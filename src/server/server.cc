// SPDX-License-Identifier: MIT
#include "server/server.h"

#include <fcntl.h>
#include <gnutls/crypto.h>
#include <sys/signalfd.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <csignal>
#include <cstring>
#include <filesystem>
#include <fstream>

#include "auth/token.h"
#include "policy/policy_file.h"
#include "metrics/exposition.h"
#include "metrics/http_exporter.h"
#include "store/log_store.h"
#include "store/sqlite_store.h"
#include "util/log.h"

namespace debra::server {
namespace {

namespace fs = std::filesystem;

// How stale a scrape of /metrics may be. The loop builds the page this often, so a scrape never waits
// for the loop and the loop never waits for a scrape.
constexpr net::Timestamp kMetricsInterval = 250 * quic::kMillisecond;

// The process's resident set size, from /proc/self/statm (0 where that is unreadable).
std::uint64_t resident_memory_bytes() {
  std::ifstream statm("/proc/self/statm");
  std::uint64_t size_pages = 0;
  std::uint64_t resident_pages = 0;
  if (!(statm >> size_pages >> resident_pages)) return 0;
  return resident_pages * static_cast<std::uint64_t>(sysconf(_SC_PAGESIZE));
}

std::int64_t wall_clock_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch())
      .count();
}

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
    auto log = store::LogStore::open(config.data_dir, config.sync, config.store);
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

Result<std::unique_ptr<Server>, Error> Server::create(ServerConfig config) {
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
  if (message_store->log != nullptr) {
    // The loop goes on reading and routing while the disk makes a batch durable; the batch's
    // replies and deliveries go out on the loop once it is (docs/architecture.md, "Threads").
    message_store->log->sync_on_thread([loop = &raw->loop_](std::function<void()> done) { loop->post(std::move(done)); });
  }
  auto endpoint = quic::ServerEndpoint::create(raw->loop_, raw->config_.quic, raw->tls_,
                                               [raw](quic::Connection& c) { return raw->accept(c); });
  if (!endpoint) return Unexpected{endpoint.error()};
  raw->endpoint_ = std::move(*endpoint);
  if (const auto& listen = raw->config_.metrics_listen) {
    auto exporter = metrics::HttpExporter::start(listen->host(), listen->port());
    if (!exporter) return Unexpected{exporter.error()};
    raw->metrics_ = std::move(*exporter);
    raw->publish_metrics();
  }
  return server;
}

Server::Server(ServerConfig config, quic::TlsServerContext tls, std::unique_ptr<core::MessageStore> store)
    : config_(std::move(config)), tls_(std::move(tls)), store_(std::move(store)),
      router_(config_.router, store_.get()), rate_limiting_(config_.rate_limits) {
  router_.set_policy(std::move(config_.policy));  // the router holds the policy in force from here on
  // Signals arrive as loop events, so shutdown and policy reloads run on the loop thread like
  // everything else.
  sigset_t mask;
  sigemptyset(&mask);
  sigaddset(&mask, SIGINT);
  sigaddset(&mask, SIGTERM);
  sigaddset(&mask, SIGHUP);
  pthread_sigmask(SIG_BLOCK, &mask, nullptr);
  signal_fd_ = signalfd(-1, &mask, SFD_NONBLOCK | SFD_CLOEXEC);
  loop_.add_reader(signal_fd_, [this] {
    signalfd_siginfo info;
    while (read(signal_fd_, &info, sizeof info) == sizeof info) {
      if (info.ssi_signo == SIGHUP) {
        reload_policy();
        continue;
      }
      spdlog::info("received {}, shutting down", strsignal(static_cast<int>(info.ssi_signo)));
      begin_shutdown();
    }
  });
  // Runs before the endpoint's flush (registered earlier), so the replies and deliveries a commit
  // releases leave in the same iteration.
  loop_.add_before_sleep([this] {
    router_.set_wall_clock_ms(wall_clock_ms());
    router_.flush();
    finished_.clear();
    if (shutting_down_) check_shutdown_done();
  });
  if (store_) schedule_expiry();
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
  router_.set_policy(std::move(*reloaded));
}

void Server::schedule_expiry() {
  expiry_timer_ = loop_.add_timer(loop_.now() + quic::kSecond, [this] {
    if (std::size_t n = router_.expire(wall_clock_ms()); n > 0) spdlog::info("{} messages expired", n);
    schedule_expiry();
  });
}

Server::~Server() {
  loop_.remove_reader(signal_fd_);
  close(signal_fd_);
}

quic::ConnectionHandler* Server::accept(quic::Connection& connection) {
  if (shutting_down_) return nullptr;
  auto on_finished = [this](Session& s) {
    // Called from inside the connection's teardown: destroy the session once that call returns.
    auto it = sessions_.find(&s);
    if (it == sessions_.end()) return;
    finished_.push_back(std::move(it->second));
    sessions_.erase(it);
  };
  auto session = std::make_unique<Session>(connection, loop_, router_, config_.session, counters_, rate_limiting_,
                                           std::move(on_finished));
  Session* raw = session.get();
  sessions_.emplace(raw, std::move(session));
  return raw;
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
  std::printf("debra-server ready on %s (data dir %s)\n", endpoint_->local_address().to_string().c_str(),
              config_.data_dir.c_str());
  std::fflush(stdout);
  loop_.run();
  router_.flush();  // commit what the last iteration accepted but did not answer
  spdlog::info("stopped: {} connections accepted, {} messages in, {} delivered, {} protocol errors, {} refused "
               "registrations (Unauthenticated), {} messages refused by the send policy, {} messages refused for "
               "the rate limit (RateLimited), {} legacy messages delayed for it, {} rate buckets forgotten before "
               "they were full",
               endpoint_->stats().accepted, counters_.messages_in, router_.stats().delivered,
               counters_.protocol_errors, counters_.auth_refusals, counters_.policy_refusals, counters_.rate_refusals,
               counters_.rate_delays, rate_limiting_.limiter.stats().evicted);
}

void Server::publish_metrics() {
  metrics_->publish(metrics_page());
  loop_.add_timer(loop_.now() + kMetricsInterval, [this] { publish_metrics(); });
}

std::string Server::metrics_page() const {
  metrics::Exposition page;
  const quic::EndpointStats& quic = endpoint_->stats();
  std::uint64_t queued_bytes = 0;
  for (const auto& [raw, session] : sessions_) queued_bytes += session->queued_bytes();
  // Connections and sessions now.
  page.gauge("debra_connections", "QUIC connections the router holds, in any state", endpoint_->connection_count());
  page.gauge("debra_connections_open", "Connections neither closing nor draining", endpoint_->open_connection_count());
  page.gauge("debra_handshakes_in_progress", "Connections whose handshake has not finished",
             endpoint_->handshakes_in_progress());
  page.gauge("debra_sessions", "Sessions (the application side of a connection) alive", sessions_.size());
  page.gauge("debra_clients_online", "Registered ids with a connection", router_.online_count());
  page.gauge("debra_queued_bytes", "Bytes written to clients and not yet acknowledged by them", queued_bytes);
  page.gauge("process_resident_memory_bytes", "Resident set size of the router process", resident_memory_bytes());
  // The QUIC endpoint.
  page.counter("debra_datagrams_received_total", "UDP datagrams received", quic.received_datagrams);
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
  page.counter("debra_stateless_resets_sent_total", "Stateless resets sent for packets of unknown connections",
               quic.stateless_resets_sent);
  page.counter("debra_version_negotiations_sent_total", "Version Negotiation packets sent",
               quic.version_negotiations_sent);
  // Sessions (SessionCounters): one line per counter.
  page.counter("debra_protocol_errors_total", "Sessions closed for a protocol violation", counters_.protocol_errors);
  page.counter("debra_auth_refusals_total", "Registrations refused with Unauthenticated", counters_.auth_refusals);
  page.counter("debra_messages_in_total", "Messages received from clients", counters_.messages_in);
  page.counter("debra_policy_refusals_total", "Messages the send policy refused", counters_.policy_refusals);
  page.counter("debra_rate_refusals_total", "Native messages refused with RateLimited", counters_.rate_refusals);
  page.counter("debra_rate_delays_total", "Legacy messages held back for their sender's rate limit",
               counters_.rate_delays);
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
    page.counter("debra_store_commits_total", "Store transactions committed", store.commits);
  }
  return page.take();
}

void Server::begin_shutdown() {
  if (shutting_down_) return;
  shutting_down_ = true;
  shutdown_deadline_ = loop_.now() + static_cast<net::Timestamp>(config_.shutdown_timeout_ms) * quic::kMillisecond;
  for (auto& [raw, session] : sessions_) session->shut_down();
  endpoint_->close_all(static_cast<std::uint64_t>(wire::ErrorCode::ServerShutdown), "the router is shutting down");
  // Wake up to enforce the deadline even if no packet arrives.
  loop_.add_timer(shutdown_deadline_, [] {});
}

void Server::check_shutdown_done() {
  // Done once every connection has sent its CONNECTION_CLOSE; the closing periods need not be waited
  // out, since nothing of ours will answer after exit anyway.
  bool all_closed = endpoint_->open_connection_count() == 0;
  if (all_closed || loop_.now() >= shutdown_deadline_) {
    if (!all_closed) spdlog::warn("shutdown deadline reached with connections still open");
    loop_.stop();
  }
}

}  // namespace debra::server
