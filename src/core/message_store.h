// SPDX-License-Identifier: MIT
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "core/delivery.h"
#include "util/duration_histogram.h"
#include "util/result.h"

namespace debra::core {

// StoredMessage: a message the store holds until its recipient acknowledges it.
struct StoredMessage {
  std::uint64_t sequence = 0;  // assigned by the store; increases in arrival order, never reused
  ClientId sender = 0;
  ClientId recipient = 0;
  std::uint64_t message_id = 0;    // the sender's id for it (0: a legacy sender, never deduplicated)
  bool receipt_requested = false;  // the sender wants a Receipt when it is delivered or expires
  std::int64_t expires_at_ms = 0;  // wall-clock deadline, ms since the epoch; 0: never
  std::vector<std::uint8_t> payload;
};

// AppendStatus: what the store did with a new message.
enum class AppendStatus {
  Stored,         // kept under a new sequence (durable once the batch commits)
  Duplicate,      // the sender already sent this message_id; kept once, under the earlier sequence
  QuotaExceeded,  // the recipient's queue is at its message or byte quota
  Unavailable,    // the store cannot write (disk full, read-only, I/O error); reason says which
};

struct AppendResult {
  AppendStatus status = AppendStatus::Stored;
  std::uint64_t sequence = 0;
  std::string reason;
};

// StoreLimits: per-recipient bounds and retention.
struct StoreLimits {
  std::uint64_t max_messages_per_recipient = 100'000;
  std::uint64_t max_bytes_per_recipient = 256ULL * 1024 * 1024;
  // ttl_ms: a message not acknowledged this long after it was accepted is dropped; 0: never.
  std::int64_t ttl_ms = 7LL * 24 * 3600 * 1000;
  // dedupe_window_ms: how long a (sender, message_id) pair is remembered for idempotent retries.
  std::int64_t dedupe_window_ms = 24LL * 3600 * 1000;
};

// StoreStats: counters since the store was opened, and its current contents.
struct StoreStats {
  std::uint64_t stored = 0;
  std::uint64_t duplicates = 0;
  std::uint64_t acknowledged = 0;
  std::uint64_t expired = 0;
  std::uint64_t quota_rejections = 0;
  std::uint64_t unavailable = 0;
  std::uint64_t commits = 0;
  // Requests to the disk to make written data durable (the message log's fdatasync calls); a store
  // that leaves syncing to its engine (SQLite) reports 0.
  std::uint64_t syncs = 0;
  // Acknowledgements and expiries a full disk or a failed commit kept out of the message log: their
  // messages are gone from the store but would come back after a restart.
  std::uint64_t removals_unwritten = 0;
  // Compaction (the message log's): rounds that copied held messages of a mostly emptied segment
  // forward (a step of at most a MiB each, so a segment may take several), and the bytes of records
  // so written a second time; a store that compacts inside its engine (SQLite) reports 0.
  std::uint64_t compactions = 0;
  std::uint64_t compacted_bytes = 0;
  std::uint64_t held_messages = 0;
  std::uint64_t held_bytes = 0;
  // Disk space the store's files take (allocated blocks): the message log's segments and spares,
  // SQLite's database, WAL and shared-memory file.
  std::uint64_t disk_bytes = 0;
  // From the start of each commit that holds messages to its completion: how long an accepted
  // message waits for its reply and delivery.
  util::DurationHistogram commit_times;
  // Each request to the disk to make written data durable (see syncs).
  util::DurationHistogram sync_times;
};

// MessageStore: the durable inbox of every recipient. The router writes each accepted message here
// before it acknowledges it to the sender, and deletes it once the recipient has acknowledged it.
// Changes are batched: append/acknowledge/expire join the open batch, and commit() makes the batch
// durable at once (group commit). Reads see the open batch and the batches still being made durable.
// Single-threaded: every call, and every completion of commit_async, is on the router's thread.
class MessageStore {
 public:
  virtual ~MessageStore() = default;

  // Adds a message for delivery.recipient to the open batch.
  virtual AppendResult append(const Delivery& delivery, std::span<const std::uint8_t> payload,
                              bool receipt_requested, std::int64_t now_ms) = 0;

  // Removes the message with sequence held for recipient; returns it (payload empty) if it was held.
  virtual std::optional<StoredMessage> acknowledge(ClientId recipient, std::uint64_t sequence) = 0;

  // Messages held for recipient with a sequence above after, oldest first, at most limit, and none
  // past the one whose payload brings their total to max_bytes or more (so at least one). The router
  // reads a backlog in bounded steps with it.
  virtual std::vector<StoredMessage> pending(ClientId recipient, std::uint64_t after, std::size_t limit,
                                             std::size_t max_bytes = SIZE_MAX) = 0;

  // Removes every message whose deadline is at or before now_ms; returns them (payloads empty).
  virtual std::vector<StoredMessage> expire(std::int64_t now_ms) = 0;

  // Makes the open batch durable. On failure the batch is rolled back and the error says why.
  virtual Result<void, Error> commit() = 0;

  // Starts making the open batch durable and may return before it is; done then runs later on the
  // router's thread with commit()'s result. Batches complete in the order they were started, and a
  // new batch opens at once. A store that cannot overlap commits waits here, and done runs before
  // this returns.
  using CommitDone = std::function<void(Result<void, Error>)>;
  virtual void commit_async(CommitDone done) { done(commit()); }

  // Whether the open batch holds anything to commit.
  virtual bool dirty() const = 0;

  virtual StoreStats stats() const = 0;
};

}  // namespace debra::core
