// SPDX-License-Identifier: MIT
#pragma once

#include <memory>
#include <string>
#include <unordered_map>

#include "core/message_store.h"
#include "store/sync_mode.h"

struct sqlite3;
struct sqlite3_stmt;

namespace debra::store {

// SqliteStore: the MessageStore on SQLite in WAL mode, in one file (DIR/messages.db). Keeps the
// per-recipient quota counters in memory, loaded at open.
class SqliteStore final : public core::MessageStore {
 public:
  static Result<std::unique_ptr<SqliteStore>, Error> open(const std::string& dir, SyncMode sync,
                                                          core::StoreLimits limits);
  ~SqliteStore() override;

  core::AppendResult append(const core::Delivery& delivery, std::span<const std::uint8_t> payload,
                            bool receipt_requested, std::int64_t now_ms) override;
  std::optional<core::StoredMessage> acknowledge(core::ClientId recipient, std::uint64_t sequence) override;
  std::vector<core::StoredMessage> pending(core::ClientId recipient, std::uint64_t after, std::size_t limit,
                                          std::size_t max_bytes = SIZE_MAX) override;
  std::vector<core::StoredMessage> expire(std::int64_t now_ms) override;
  Result<void, Error> commit() override;
  bool dirty() const override { return in_transaction_; }
  core::StoreStats stats() const override;

  const core::StoreLimits& limits() const { return limits_; }

 private:
  struct Usage {
    std::uint64_t messages = 0;
    std::uint64_t bytes = 0;
  };

  SqliteStore(sqlite3* db, std::string path, SyncMode sync, core::StoreLimits limits);
  Result<void, Error> prepare();
  void load_counts();
  bool begin();
  std::string last_error() const;
  void forget(core::ClientId recipient, std::uint64_t bytes);

  sqlite3* db_;
  std::string path_;  // DIR/messages.db
  SyncMode sync_;
  core::StoreLimits limits_;
  bool in_transaction_ = false;
  bool transaction_holds_messages_ = false;  // an append succeeded in it: its commit is timed
  std::uint64_t next_sequence_ = 1;
  std::int64_t last_dedupe_prune_ms_ = 0;
  std::unordered_map<core::ClientId, Usage> usage_;
  core::StoreStats stats_;
  sqlite3_stmt* insert_ = nullptr;
  sqlite3_stmt* insert_seen_ = nullptr;
  sqlite3_stmt* find_seen_ = nullptr;
  sqlite3_stmt* delete_ = nullptr;
  sqlite3_stmt* select_pending_ = nullptr;
  sqlite3_stmt* select_expired_ = nullptr;
  sqlite3_stmt* delete_expired_ = nullptr;
  sqlite3_stmt* prune_seen_ = nullptr;
};

}  // namespace debra::store
