// SPDX-License-Identifier: MIT
#include "store/sqlite_store.h"

#include <sqlite3.h>
#include <sys/stat.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <utility>

#include "util/log.h"

namespace debra::store {
namespace {

constexpr int kSchemaVersion = 1;
constexpr std::int64_t kDedupePruneIntervalMs = 60'000;

constexpr const char* kSchema = R"sql(
CREATE TABLE IF NOT EXISTS messages (
  sequence    INTEGER PRIMARY KEY,
  recipient   INTEGER NOT NULL,
  sender      INTEGER NOT NULL,
  message_id  INTEGER NOT NULL,
  receipt     INTEGER NOT NULL,
  expires_at  INTEGER NOT NULL,
  payload     BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS messages_by_recipient ON messages (recipient, sequence);
CREATE INDEX IF NOT EXISTS messages_by_deadline ON messages (expires_at) WHERE expires_at > 0;
CREATE TABLE IF NOT EXISTS seen (
  sender      INTEGER NOT NULL,
  message_id  INTEGER NOT NULL,
  sequence    INTEGER NOT NULL,
  at          INTEGER NOT NULL,
  PRIMARY KEY (sender, message_id)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS seen_by_time ON seen (at);
)sql";

// message_id is an unsigned 64-bit value; SQLite integers are signed: store the same bits.
std::int64_t to_sql(std::uint64_t v) {
  std::int64_t s;
  std::memcpy(&s, &v, sizeof s);
  return s;
}
std::uint64_t from_sql(std::int64_t s) {
  std::uint64_t v;
  std::memcpy(&v, &s, sizeof v);
  return v;
}

}  // namespace

Result<std::unique_ptr<SqliteStore>, Error> SqliteStore::open(const std::string& dir, SyncMode sync,
                                                              core::StoreLimits limits) {
  std::string path = (std::filesystem::path(dir) / "messages.db").string();
  sqlite3* db = nullptr;
  int rc = sqlite3_open_v2(path.c_str(), &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX,
                           nullptr);
  if (rc != SQLITE_OK) {
    std::string message = db != nullptr ? sqlite3_errmsg(db) : sqlite3_errstr(rc);
    sqlite3_close(db);
    return make_error("opening " + path + ": " + message);
  }
  std::unique_ptr<SqliteStore> store(new SqliteStore(db, path, sync, limits));
  std::string pragmas = "PRAGMA journal_mode=WAL; PRAGMA synchronous=";
  pragmas += sync == SyncMode::Off ? "OFF;" : "FULL;";
  // Checkpoints stay automatic; a busy wait is never needed, since only this process opens the file.
  char* error = nullptr;
  rc = sqlite3_exec(db, pragmas.c_str(), nullptr, nullptr, &error);
  if (rc == SQLITE_OK) rc = sqlite3_exec(db, kSchema, nullptr, nullptr, &error);
  if (rc != SQLITE_OK) {
    std::string message = error != nullptr ? error : sqlite3_errstr(rc);
    sqlite3_free(error);
    return make_error("preparing " + path + ": " + message);
  }
  sqlite3_exec(db, ("PRAGMA user_version=" + std::to_string(kSchemaVersion)).c_str(), nullptr, nullptr, nullptr);
  if (auto prepared = store->prepare(); !prepared) return Unexpected{prepared.error()};
  return store;
}

SqliteStore::SqliteStore(sqlite3* db, std::string path, SyncMode sync, core::StoreLimits limits)
    : db_(db), path_(std::move(path)), sync_(sync), limits_(limits) {}

SqliteStore::~SqliteStore() {
  if (in_transaction_) {
    // Whatever is still open was never acknowledged to anyone: committing it is safe and saves work.
    sqlite3_exec(db_, "COMMIT", nullptr, nullptr, nullptr);
  }
  for (sqlite3_stmt* stmt : {insert_, insert_seen_, find_seen_, delete_, select_pending_, select_expired_,
                             delete_expired_, prune_seen_}) {
    sqlite3_finalize(stmt);
  }
  sqlite3_close(db_);
}

Result<void, Error> SqliteStore::prepare() {
  struct Statement {
    sqlite3_stmt** out;
    const char* sql;
  };
  const Statement statements[] = {
      {&insert_, "INSERT INTO messages (sequence, recipient, sender, message_id, receipt, expires_at, payload) "
                 "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)"},
      {&insert_seen_, "INSERT INTO seen (sender, message_id, sequence, at) VALUES (?1, ?2, ?3, ?4)"},
      {&find_seen_, "SELECT sequence FROM seen WHERE sender = ?1 AND message_id = ?2"},
      {&delete_, "DELETE FROM messages WHERE sequence = ?1 AND recipient = ?2 "
                 "RETURNING sender, message_id, receipt, expires_at, length(payload)"},
      {&select_pending_, "SELECT sequence, sender, message_id, receipt, expires_at, payload FROM messages "
                         "WHERE recipient = ?1 AND sequence > ?2 ORDER BY sequence LIMIT ?3"},
      {&select_expired_, "SELECT sequence, recipient, sender, message_id, receipt, expires_at, length(payload) "
                         "FROM messages WHERE expires_at > 0 AND expires_at <= ?1"},
      {&delete_expired_, "DELETE FROM messages WHERE expires_at > 0 AND expires_at <= ?1"},
      {&prune_seen_, "DELETE FROM seen WHERE at < ?1"},
  };
  for (const auto& statement : statements) {
    if (sqlite3_prepare_v3(db_, statement.sql, -1, SQLITE_PREPARE_PERSISTENT, statement.out, nullptr) != SQLITE_OK) {
      return make_error(std::string("preparing statement: ") + sqlite3_errmsg(db_));
    }
  }
  load_counts();
  return {};
}

void SqliteStore::load_counts() {
  // Quota counters and the next sequence come from what the file holds.
  usage_.clear();
  stats_.held_messages = stats_.held_bytes = 0;
  sqlite3_stmt* usage = nullptr;
  sqlite3_prepare_v2(db_, "SELECT recipient, count(*), sum(length(payload)) FROM messages GROUP BY recipient", -1,
                     &usage, nullptr);
  while (sqlite3_step(usage) == SQLITE_ROW) {
    auto& u = usage_[static_cast<core::ClientId>(sqlite3_column_int64(usage, 0))];
    u.messages = static_cast<std::uint64_t>(sqlite3_column_int64(usage, 1));
    u.bytes = static_cast<std::uint64_t>(sqlite3_column_int64(usage, 2));
    stats_.held_messages += u.messages;
    stats_.held_bytes += u.bytes;
  }
  sqlite3_finalize(usage);
  sqlite3_stmt* max_sequence = nullptr;
  // The seen table remembers sequences of acknowledged messages too, so a sequence is never reused.
  sqlite3_prepare_v2(db_,
                     "SELECT max(coalesce((SELECT max(sequence) FROM messages), 0), "
                     "coalesce((SELECT max(sequence) FROM seen), 0))",
                     -1, &max_sequence, nullptr);
  if (sqlite3_step(max_sequence) == SQLITE_ROW) {
    next_sequence_ = std::max(next_sequence_, static_cast<std::uint64_t>(sqlite3_column_int64(max_sequence, 0)) + 1);
  }
  sqlite3_finalize(max_sequence);
}

std::string SqliteStore::last_error() const { return sqlite3_errmsg(db_); }

bool SqliteStore::begin() {
  if (in_transaction_) return true;
  if (sqlite3_exec(db_, "BEGIN", nullptr, nullptr, nullptr) != SQLITE_OK) return false;
  in_transaction_ = true;
  return true;
}

core::AppendResult SqliteStore::append(const core::Delivery& delivery, std::span<const std::uint8_t> payload,
                                       bool receipt_requested, std::int64_t now_ms) {
  if (!begin()) {
    ++stats_.unavailable;
    return {core::AppendStatus::Unavailable, 0, "the message store cannot start a transaction: " + last_error()};
  }
  if (delivery.message_id != 0) {
    sqlite3_bind_int64(find_seen_, 1, delivery.sender);
    sqlite3_bind_int64(find_seen_, 2, to_sql(delivery.message_id));
    int rc = sqlite3_step(find_seen_);
    std::uint64_t earlier = rc == SQLITE_ROW ? static_cast<std::uint64_t>(sqlite3_column_int64(find_seen_, 0)) : 0;
    sqlite3_reset(find_seen_);
    if (earlier != 0) {
      ++stats_.duplicates;
      return {core::AppendStatus::Duplicate, earlier, {}};
    }
  }
  Usage& usage = usage_[delivery.recipient];
  if (usage.messages + 1 > limits_.max_messages_per_recipient ||
      usage.bytes + payload.size() > limits_.max_bytes_per_recipient) {
    ++stats_.quota_rejections;
    return {core::AppendStatus::QuotaExceeded, 0,
            "recipient " + std::to_string(delivery.recipient) + " holds " + std::to_string(usage.messages) +
                " messages (" + std::to_string(usage.bytes) + " bytes); its quota is " +
                std::to_string(limits_.max_messages_per_recipient) + " messages and " +
                std::to_string(limits_.max_bytes_per_recipient) + " bytes"};
  }
  std::uint64_t sequence = next_sequence_;
  std::int64_t expires_at = limits_.ttl_ms > 0 ? now_ms + limits_.ttl_ms : 0;
  sqlite3_bind_int64(insert_, 1, static_cast<std::int64_t>(sequence));
  sqlite3_bind_int64(insert_, 2, delivery.recipient);
  sqlite3_bind_int64(insert_, 3, delivery.sender);
  sqlite3_bind_int64(insert_, 4, to_sql(delivery.message_id));
  sqlite3_bind_int(insert_, 5, receipt_requested ? 1 : 0);
  sqlite3_bind_int64(insert_, 6, expires_at);
  sqlite3_bind_blob(insert_, 7, payload.empty() ? "" : static_cast<const void*>(payload.data()),
                    static_cast<int>(payload.size()), SQLITE_STATIC);
  int rc = sqlite3_step(insert_);
  sqlite3_reset(insert_);
  sqlite3_clear_bindings(insert_);
  if (rc == SQLITE_DONE && delivery.message_id != 0) {
    sqlite3_bind_int64(insert_seen_, 1, delivery.sender);
    sqlite3_bind_int64(insert_seen_, 2, to_sql(delivery.message_id));
    sqlite3_bind_int64(insert_seen_, 3, static_cast<std::int64_t>(sequence));
    sqlite3_bind_int64(insert_seen_, 4, now_ms);
    rc = sqlite3_step(insert_seen_);
    sqlite3_reset(insert_seen_);
  }
  if (rc != SQLITE_DONE) {
    ++stats_.unavailable;
    return {core::AppendStatus::Unavailable, 0, "the message store cannot write: " + last_error()};
  }
  next_sequence_ = sequence + 1;
  transaction_holds_messages_ = true;
  ++usage.messages;
  usage.bytes += payload.size();
  ++stats_.stored;
  ++stats_.held_messages;
  stats_.held_bytes += payload.size();
  if (now_ms - last_dedupe_prune_ms_ >= kDedupePruneIntervalMs) {
    last_dedupe_prune_ms_ = now_ms;
    sqlite3_bind_int64(prune_seen_, 1, now_ms - limits_.dedupe_window_ms);
    sqlite3_step(prune_seen_);
    sqlite3_reset(prune_seen_);
  }
  if (sync_ == SyncMode::Always) {
    if (auto committed = commit(); !committed) {
      return {core::AppendStatus::Unavailable, 0, committed.error().message};
    }
  }
  return {core::AppendStatus::Stored, sequence, {}};
}

void SqliteStore::forget(core::ClientId recipient, std::uint64_t bytes) {
  auto it = usage_.find(recipient);
  if (it == usage_.end()) return;
  it->second.messages -= std::min<std::uint64_t>(it->second.messages, 1);
  it->second.bytes -= std::min(it->second.bytes, bytes);
  if (it->second.messages == 0) usage_.erase(it);
  stats_.held_messages -= std::min<std::uint64_t>(stats_.held_messages, 1);
  stats_.held_bytes -= std::min(stats_.held_bytes, bytes);
}

std::optional<core::StoredMessage> SqliteStore::acknowledge(core::ClientId recipient, std::uint64_t sequence) {
  if (!begin()) return std::nullopt;
  sqlite3_bind_int64(delete_, 1, static_cast<std::int64_t>(sequence));
  sqlite3_bind_int64(delete_, 2, recipient);
  std::optional<core::StoredMessage> acked;
  if (sqlite3_step(delete_) == SQLITE_ROW) {
    core::StoredMessage m;
    m.sequence = sequence;
    m.recipient = recipient;
    m.sender = static_cast<core::ClientId>(sqlite3_column_int64(delete_, 0));
    m.message_id = from_sql(sqlite3_column_int64(delete_, 1));
    m.receipt_requested = sqlite3_column_int(delete_, 2) != 0;
    m.expires_at_ms = sqlite3_column_int64(delete_, 3);
    forget(recipient, static_cast<std::uint64_t>(sqlite3_column_int64(delete_, 4)));
    ++stats_.acknowledged;
    acked = std::move(m);
    while (sqlite3_step(delete_) == SQLITE_ROW) {
    }
  }
  sqlite3_reset(delete_);
  if (acked && sync_ == SyncMode::Always) {
    // An acknowledgement that is lost in a crash only means one redelivery: no need to fail on it.
    if (auto committed = commit(); !committed) spdlog::warn("store: {}", committed.error().message);
  }
  return acked;
}

std::vector<core::StoredMessage> SqliteStore::pending(core::ClientId recipient, std::uint64_t after,
                                                      std::size_t limit, std::size_t max_bytes) {
  std::vector<core::StoredMessage> out;
  std::size_t bytes = 0;
  sqlite3_bind_int64(select_pending_, 1, recipient);
  sqlite3_bind_int64(select_pending_, 2, static_cast<std::int64_t>(after));
  sqlite3_bind_int64(select_pending_, 3, static_cast<std::int64_t>(limit));
  while (bytes < max_bytes && sqlite3_step(select_pending_) == SQLITE_ROW) {
    core::StoredMessage m;
    m.sequence = static_cast<std::uint64_t>(sqlite3_column_int64(select_pending_, 0));
    m.recipient = recipient;
    m.sender = static_cast<core::ClientId>(sqlite3_column_int64(select_pending_, 1));
    m.message_id = from_sql(sqlite3_column_int64(select_pending_, 2));
    m.receipt_requested = sqlite3_column_int(select_pending_, 3) != 0;
    m.expires_at_ms = sqlite3_column_int64(select_pending_, 4);
    const auto* blob = static_cast<const std::uint8_t*>(sqlite3_column_blob(select_pending_, 5));
    m.payload.assign(blob, blob + sqlite3_column_bytes(select_pending_, 5));
    bytes += m.payload.size();
    out.push_back(std::move(m));
  }
  sqlite3_reset(select_pending_);
  return out;
}

std::vector<core::StoredMessage> SqliteStore::expire(std::int64_t now_ms) {
  std::vector<core::StoredMessage> out;
  if (!begin()) return out;
  sqlite3_bind_int64(select_expired_, 1, now_ms);
  while (sqlite3_step(select_expired_) == SQLITE_ROW) {
    core::StoredMessage m;
    m.sequence = static_cast<std::uint64_t>(sqlite3_column_int64(select_expired_, 0));
    m.recipient = static_cast<core::ClientId>(sqlite3_column_int64(select_expired_, 1));
    m.sender = static_cast<core::ClientId>(sqlite3_column_int64(select_expired_, 2));
    m.message_id = from_sql(sqlite3_column_int64(select_expired_, 3));
    m.receipt_requested = sqlite3_column_int(select_expired_, 4) != 0;
    m.expires_at_ms = sqlite3_column_int64(select_expired_, 5);
    forget(m.recipient, static_cast<std::uint64_t>(sqlite3_column_int64(select_expired_, 6)));
    out.push_back(std::move(m));
  }
  sqlite3_reset(select_expired_);
  if (!out.empty()) {
    sqlite3_bind_int64(delete_expired_, 1, now_ms);
    sqlite3_step(delete_expired_);
    sqlite3_reset(delete_expired_);
    stats_.expired += out.size();
    if (sync_ == SyncMode::Always) {
      if (auto committed = commit(); !committed) spdlog::warn("store: {}", committed.error().message);
    }
  }
  return out;
}

Result<void, Error> SqliteStore::commit() {
  if (!in_transaction_) return {};
  const auto started = std::chrono::steady_clock::now();
  int rc = sqlite3_exec(db_, "COMMIT", nullptr, nullptr, nullptr);
  const bool timed = std::exchange(transaction_holds_messages_, false);
  if (rc == SQLITE_OK) {
    in_transaction_ = false;
    ++stats_.commits;
    if (timed) {
      stats_.commit_times.observe(static_cast<std::uint64_t>(
          std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now() - started).count()));
    }
    return {};
  }
  std::string message = "the message store cannot commit: " + last_error();
  sqlite3_exec(db_, "ROLLBACK", nullptr, nullptr, nullptr);
  in_transaction_ = false;
  // The batch is gone: recount from what the file holds (sequences handed out stay used).
  load_counts();
  ++stats_.unavailable;
  return make_error(std::move(message));
}

core::StoreStats SqliteStore::stats() const {
  core::StoreStats stats = stats_;
  for (const char* suffix : {"", "-wal", "-shm"}) {
    struct stat st {};
    if (::stat((path_ + suffix).c_str(), &st) == 0) stats.disk_bytes += static_cast<std::uint64_t>(st.st_blocks) * 512;
  }
  return stats;
}

}  // namespace debra::store
