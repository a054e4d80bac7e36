// SPDX-License-Identifier: MIT
#pragma once

#include <atomic>
#include <cstddef>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <memory_resource>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "core/message_store.h"
#include "store/log_format.h"
#include "store/log_options.h"
#include "store/seen_ids.h"
#include "store/sequence_index.h"
#include "store/sync_mode.h"

namespace debra::store {

// LogRecovery: what open() found on disk, for the start-up log line and the tests.
struct LogRecovery {
  std::size_t segments = 0;
  std::uint64_t records = 0;
  std::uint64_t torn_bytes = 0;    // an interrupted write at the end of the newest segment, cut off
  std::size_t corrupt_segments = 0;  // older segments with a bad record; what followed it was lost
};

// LogStore: the MessageStore as a segmented append-only log (DIR/log/*.seg) with the index of held
// messages in memory. An accepted message is one Append record and its acknowledgement one Remove
// record, written with a single write and one fdatasync per commit (none for a commit of Remove
// records alone: the next one that holds messages syncs them); nothing is updated in place. With
// the sync thread, that thread makes the writes too, with O_DIRECT where it can.
// A segment file is deleted (or kept as a spare, to be written over as a later segment) once no
// message in it is held and no Remove in it still cancels a record of an older segment on disk; a
// mostly empty old segment has its held messages copied forward so that a few messages for an
// offline recipient cannot pin it (docs/architecture.md, "The message log"). Memory: about 85–230
// bytes per held message with its deadline (the fewer messages per recipient, the more each
// costs), plus the dedupe memory.
class LogStore final : public core::MessageStore {
 public:
  static Result<std::unique_ptr<LogStore>, Error> open(const std::string& dir, SyncMode sync,
                                                       core::StoreLimits limits, LogOptions options = {});
  ~LogStore() override;
  LogStore(const LogStore&) = delete;
  LogStore& operator=(const LogStore&) = delete;

  core::AppendResult append(const core::Delivery& delivery, std::span<const std::uint8_t> payload,
                            bool receipt_requested, std::int64_t now_ms) override;
  std::optional<core::StoredMessage> acknowledge(core::ClientId recipient, std::uint64_t sequence) override;
  std::vector<core::StoredMessage> pending(core::ClientId recipient, std::uint64_t after, std::size_t limit,
                                          std::size_t max_bytes = SIZE_MAX) override;
  std::vector<core::StoredMessage> expire(std::int64_t now_ms) override;
  Result<void, Error> commit() override;
  // With sync_on_thread and --sync batch: writes the batch, hands its fdatasync to the sync thread
  // and returns; done runs through post once the disk has it. A batch with nothing to sync (Remove
  // records alone) completes before this returns if no commit is ahead of it. Otherwise the same as
  // commit().
  void commit_async(CommitDone done) override;
  bool dirty() const override { return dirty_; }

  // Post: runs a callback on the thread that owns the store (the server passes its event loop's).
  using Post = std::function<void(std::function<void()>)>;
  // Starts the sync thread: from here on commit_async overlaps the disk's work with the caller's.
  // With --sync batch the thread writes the records as well, with O_DIRECT where the file system
  // takes it: no copy into the page cache, and no write-back for fdatasync to wait on
  // (docs/architecture.md, "The message log"). Where O_DIRECT is refused (ramfs), the caller's
  // thread writes through the page cache and the sync thread only syncs.
  void sync_on_thread(Post post);
  core::StoreStats stats() const override;

  const LogRecovery& recovery() const { return recovery_; }
  const std::string& directory() const { return dir_; }
  std::size_t segment_count() const { return segments_.size(); }
  // Whether the active segment is written with O_DIRECT by the sync thread.
  bool writes_direct() const;
  std::size_t spare_count() const { return spares_.size(); }
  // Whether a compaction's reads are under way on their own thread (with sync_on_thread).
  bool compacting() const { return compaction_running_; }
  // Whether the heap of deadlines is being rebuilt, a step per commit.
  bool rebuilding_deadlines() const { return deadline_rebuild_.has_value(); }

 private:
  struct Segment {
    int fd = -1;
    std::uint32_t salt = 0;     // of this life of the file (log_format.h)
    std::uint64_t written = 0;  // bytes of records in the file, from its start
    std::uint64_t submitted = 0;  // bytes written and handed to a sync (a rollback keeps them)
    std::uint64_t synced = 0;     // bytes known to be on disk
    // Bytes the file holds: below written while the sync thread has records still to write.
    std::uint64_t in_file = 0;
    int direct_fd = -1;  // opened with O_DIRECT for the sync thread's writes; -1: written through the page cache
    std::uint32_t syncing = 0;    // sync jobs that hold this segment's file descriptor
    // Holds Remove records a commit wrote without waiting for the disk: the next commit that waits
    // syncs this file too.
    bool unsynced = false;
    // Compaction copied this segment's messages forward, in the commit with this job number: the
    // segment may go only once that commit is durable.
    std::uint64_t retire_after_job = 0;
    std::int64_t closed_at_ms = 0;  // steady clock, when it stopped taking records; 0: found at start-up
    bool damaged = false;  // compaction found a held record that no longer reads back: never compacted
    bool compacting = false;  // compaction's thread reads its file: not deleted meanwhile
    std::uint64_t live = 0;     // held messages whose record is here
    std::uint64_t live_bytes = 0;
    // Every message appended here has this sequence or a later one (the header's); a record of an
    // earlier one is a copy that compaction made.
    std::uint64_t base_sequence = 0;
    // Older segments holding records that a Remove in this one cancels: this one must outlive them.
    std::unordered_set<std::uint64_t> cancels_into;
    // A spare taken, or a file created, on the owner's thread (roll_over_direct): the file still
    // has a spare's name (this id), and its header goes with the first write. The first sync job
    // that syncs it renames it; until that completes, the newest named segment is not retired.
    std::uint64_t spare_id = 0;  // 0: named
    bool rename_queued = false;
  };
  struct Entry {
    core::ClientId sender = 0;
    bool receipt_requested = false;
    std::uint32_t payload_size = 0;
    std::uint64_t message_id = 0;
    std::int64_t expires_at_ms = 0;
    std::uint64_t segment = 0;
    std::uint64_t offset = 0;  // of the record in its segment
  };
  // An inbox's messages in sequence order: holding and releasing a message costs no malloc and
  // free of its own (a node each took about a tenth of the router's CPU under load), nor a tree's
  // rebalancing.
  using Messages = SequenceIndex<Entry>;
  struct Inbox {
    Messages messages;
    std::uint64_t bytes = 0;
    // Messages whose record is a copy compaction made (a sequence below its segment's base), and
    // bounds on their sequences (they only widen, until there are none): plan_compaction searches
    // that range of an inbox for a segment's copies, not the whole inbox.
    std::uint64_t copied = 0;
    std::uint64_t copies_from = UINT64_MAX;
    std::uint64_t copies_to = 0;
    void count_copy(std::uint64_t sequence) {
      ++copied;
      copies_from = std::min(copies_from, sequence);
      copies_to = std::max(copies_to, sequence);
    }
    void uncount_copy() {
      if (--copied == 0) {
        copies_from = UINT64_MAX;
        copies_to = 0;
      }
    }
  };
  // Undo: what a failed commit takes back.
  struct Appended {
    core::ClientId recipient;
    std::uint64_t sequence;
  };
  struct Moved {
    core::ClientId recipient;
    std::uint64_t sequence;
    std::uint64_t segment;
    std::uint64_t offset;
  };
  // A held message's expiry, in a min-heap (deadlines_). Releasing a message leaves its entry behind,
  // to be skipped when it comes up; the heap is rebuilt from the index once such entries outnumber
  // the held messages, a step per commit (DeadlineRebuild).
  struct Deadline {
    std::int64_t at_ms;
    std::uint64_t sequence;
    core::ClientId recipient;
  };
  // Equal deadlines expire in sequence order, as they were accepted.
  static bool later(const Deadline& a, const Deadline& b) {
    return a.at_ms != b.at_ms ? a.at_ms > b.at_ms : a.sequence > b.sequence;
  }
  // DirectWrite: records the sync thread writes with O_DIRECT, in whole blocks from the block that
  // holds the end of what the file had (that block's bytes are written again). Until it is done,
  // reads of its records are served from data.
  struct DirectWrite {
    std::uint64_t number = 0;  // writes are numbered in the order they are made
    std::uint64_t segment = 0;
    int fd = -1;
    std::uint64_t offset = 0;       // in the file, block-aligned
    std::uint64_t records_end = 0;  // where the records in it end, in the file
    std::shared_ptr<const log::Bytes> data;  // whole blocks
  };
  // SyncJob: one commit handed to the sync thread. error set: nothing to sync, fail it in order.
  // id 0: work no commit waits for: the writes of one that already completed (Remove records), and
  // syncing and naming a segment taken from a spare, or making retirements durable.
  struct SyncJob {
    struct Rename {
      std::uint64_t segment;
      std::string from;
      std::string to;
    };
    std::uint64_t id = 0;
    std::vector<DirectWrite> writes;  // made in order, before any fdatasync
    std::vector<int> fds;
    std::vector<std::pair<std::uint64_t, std::uint64_t>> written;  // segment, bytes it covers
    // After the fdatasyncs: spares become segments, then one fsync of the directory makes these
    // names and those of retired segments (ids) durable.
    std::vector<Rename> renames;
    std::vector<std::uint64_t> retired;
    std::string error;
    CommitDone done;
    std::uint64_t started_ns = 0;  // steady clock, when the commit started; 0: it holds no message
  };

  LogStore(std::string dir, SyncMode sync, core::StoreLimits limits, LogOptions options);
  Result<void, Error> recover();
  Result<void, Error> replay(std::uint64_t id, Segment& segment, bool newest);
  // An emptied segment file kept to be written over: its records read as Stale under a higher salt.
  struct Spare {
    std::uint64_t id = 0;  // of the segment it was, which names it
    int fd = -1;
    std::uint32_t salt = 0;
  };
  Result<void, Error> start_segment();
  // With direct writes on the sync thread: a spare, or a new file under a spare's name, becomes
  // segment id without a disk wait on this thread (its header goes with its first write, its name
  // with its first sync). False: the file could not be prepared, and start_segment goes the
  // synchronous way.
  bool roll_over_direct(std::uint64_t id);
  // Has job give segment id, taken from a spare or created as one, its name after its fdatasyncs.
  void queue_rename(SyncJob& job, std::uint64_t id, Segment& segment);
  // Before a spare is written over, its retirement's rename must be on disk: a crash must not leave
  // its new life under its old segment's name.
  void make_spare_durable();
  // fsync of the directory, here and now: every retirement so far is durable.
  void sync_directory();
  // Whether the directory's fsyncs after retiring segments are the sync thread's.
  bool retires_on_thread() const { return post_ && sync_ == SyncMode::Batch && sync_thread_.joinable(); }
  // Starts a new segment if a record of record_size, and the end mark after it, would take the
  // active one past segment_bytes (unless the active one is empty: a larger record goes alone).
  Result<void, Error> make_room(std::size_t record_size);
  // A Remove record for the batch, where make_room_for_remove finds room. False: it is not written.
  bool write_remove(core::ClientId recipient, std::uint64_t sequence);
  // Before a Remove record: make_room, or on failure (a full disk) the active segment's reserve
  // takes it. False: there is no room for it anywhere, and it is not written.
  bool make_room_for_remove();
  // Space each directly written segment takes past segment_bytes, for Remove records alone: what
  // acknowledgements can still write while a full disk lets no new segment start.
  std::uint64_t removal_reserve() const;
  // The spare's file as segment id, or false (the spare is gone then) if the disk refused.
  bool reuse_spare(std::uint64_t id, Segment& segment);
  void adopt_spare(std::uint64_t id);
  void retire(std::uint64_t id);
  Result<void, Error> write_buffer();
  // Direct writes: opens the active segment for them; false if its file cannot take them.
  void start_direct_writes();
  void queue_direct_write(Segment& segment);
  void drop_block_prefix();
  // Takes the writes the sync thread has done off in_flight_; their records are read from the file now.
  void release_written();
  // The payload of a record the sync thread has yet to write, from its write's buffer.
  void read_in_flight(const Entry& entry, std::vector<std::uint8_t>& payload) const;
  void queue_job(SyncJob job);
  std::string segment_path(std::uint64_t id) const;
  std::string spare_path(std::uint64_t id) const;
  std::uint64_t end_offset() const;
  std::uint64_t disk_bytes() const;

  void hold(core::ClientId recipient, std::uint64_t sequence, const Entry& entry, std::size_t record_size);
  // The message an entry stands for, without its payload.
  static core::StoredMessage describe(core::ClientId recipient, std::uint64_t sequence, const Entry& entry);
  Inbox& inbox_of(core::ClientId recipient);
  // Points a held message's entry at its record's new place, keeping Inbox::copied.
  void relocate(Inbox& inbox, std::uint64_t sequence, Entry& entry, std::uint64_t segment, std::uint64_t offset);
  bool is_copy(std::uint64_t sequence, const Entry& entry) const {
    return sequence < segments_.at(entry.segment).base_sequence;
  }
  // removed_in: the segment the Remove record is written to, or kUnrecorded.
  core::StoredMessage release(core::ClientId recipient, Messages::iterator it, std::uint64_t removed_in);
  static constexpr std::uint64_t kUnrecorded = 0;  // segment ids start at 1
  // A new heap of deadlines, built from the index a step at a time: at once, with 1.2 M messages
  // held, it stopped the loop for 21–27 ms. Meanwhile the old heap, stale entries and all, serves
  // expire(), and what is held meanwhile goes into both. An entry the scan also finds is there
  // twice, which expire() skips like any stale one.
  struct DeadlineRebuild {
    std::vector<core::ClientId> recipients;  // the inboxes when it started
    std::size_t next = 0;                     // into recipients
    std::uint64_t after = 0;                  // the last sequence taken from recipients[next]
    std::vector<Deadline> heap;
  };
  static constexpr std::size_t kDeadlineRebuildStep = 16384;  // entries per step
  void start_deadline_rebuild();
  void advance_deadline_rebuild();
  void prune_dedupe(std::int64_t now_ms);
  std::vector<std::uint8_t> read_payload(const Entry& entry) const;
  // Asks the kernel to read about bytes of the records from `from` on into the page cache.
  void read_ahead(Messages::iterator from, Messages::iterator end, std::size_t bytes) const;
  // Fills out[k].payload for entries[k], reading runs of nearby records at once.
  void read_payloads(const std::vector<const Entry*>& entries, std::vector<core::StoredMessage>& out) const;
  void rollback();
  void reclaim();
  // Compaction in three steps: which segment and which of its records (on the owner's thread, from
  // the index); reading and checking those records (any thread: it touches no member); copying the
  // ones still held there into the active segment (the owner's thread).
  struct CompactionPlan {
    struct Held {
      std::uint64_t offset;
      std::size_t size;
      core::ClientId recipient;
      std::uint64_t sequence;
    };
    std::uint64_t segment = 0;
    int fd = -1;
    std::uint32_t salt = 0;
    std::vector<Held> held;  // by offset
  };
  struct CompactionRead {
    std::vector<std::uint8_t> records;  // those of held that read back, one after another
    // For each of held: where it is in records, kUnread past a failed read, kDamaged if it no
    // longer reads back as the record the index says is there.
    std::vector<std::size_t> at;
    static constexpr std::size_t kUnread = SIZE_MAX;
    static constexpr std::size_t kDamaged = SIZE_MAX - 1;
    std::string read_error;  // a read failed: what, and where
    std::uint64_t bytes_read = 0;
  };
  // What is left to copy of the segment being compacted, from held[next] on.
  struct CompactionRest {
    CompactionPlan plan;
    std::size_t next = 0;
  };
  void compact();
  // The next step of compaction: at most LogOptions::compaction_step_bytes of one segment's held
  // records (at least one), or none if nothing is to be compacted or the step does not fit.
  std::optional<CompactionPlan> plan_compaction();
  // Every held record of the next segment worth compacting, by offset.
  std::optional<CompactionPlan> plan_segment();
  static CompactionRead read_held(const CompactionPlan& plan);
  void apply_compaction(const CompactionPlan& plan, const CompactionRead& read);
  void finish_compaction(const CompactionPlan& plan, const CompactionRead& read);
  Result<void, Error> commit_if_always();
  // Whether the open batch must be on disk before its commit completes: it holds messages.
  bool batch_needs_disk() const;
  void after_commit();
  void run_syncs();
  // The sync thread's writes, in order; why they failed, or empty.
  std::string make_writes(const std::vector<const DirectWrite*>& writes);
  void finish(SyncJob job, Result<void, Error> result);
  void fail_store(const std::string& why);
  void stop_sync_thread();
  // fdatasync(fd), counted (StoreStats::syncs); on any thread.
  bool sync_file(int fd);

  std::string dir_;
  SyncMode sync_;
  core::StoreLimits limits_;
  LogOptions options_;
  int dir_fd_ = -1;
  std::map<std::uint64_t, Segment> segments_;
  std::uint64_t active_ = 0;
  std::uint32_t active_salt_ = 0;
  std::uint64_t next_segment_id_ = 1;  // above every segment and spare seen, so names never collide
  std::vector<Spare> spares_;
  // Segments retired (deleted or made spares) whose directory entries are not known durable yet (a
  // sync job fsyncs the directory): a Remove cancelling their records is kept, and a spare among
  // them is not written over, until then.
  std::unordered_set<std::uint64_t> retired_unsynced_;
  // Segments whose files still have a spare's name: their own names are not on disk yet
  // (Segment::spare_id).
  std::vector<std::uint64_t> unnamed_;
  // Records for the active segment, not written yet. With direct writes it starts with the bytes
  // the file holds from the block boundary below written, buffer_base_ of them, which its write
  // writes again.
  log::Bytes buffer_;
  std::size_t buffer_base_ = 0;
  bool direct_ = false;  // the sync thread writes segments with O_DIRECT where it can
  bool removal_overflow_logged_ = false;  // since the last segment started
  std::deque<DirectWrite> in_flight_;  // direct: made, or to be made, by the sync thread; oldest first
  std::uint64_t next_write_ = 1;
  std::uint64_t queued_writes_ = 0;            // the last write handed to the sync thread
  std::atomic<std::uint64_t> writes_done_{0};  // the last write the sync thread has made
  bool dirty_ = false;
  bool reclaim_due_ = false;
  std::uint64_t next_sequence_ = 1;
  std::pmr::unsynchronized_pool_resource pool_;  // before the index it serves, so it outlives it
  std::pmr::unordered_map<core::ClientId, Inbox> inboxes_{&pool_};
  std::uint64_t held_ = 0;  // messages in inboxes_
  std::vector<Deadline> deadlines_;
  std::optional<DeadlineRebuild> deadline_rebuild_;
  SeenIds seen_;
  std::int64_t last_prune_ms_ = 0;
  std::vector<Appended> batch_appended_;
  std::vector<Moved> batch_moved_;
  std::uint64_t batch_removes_ = 0;  // Remove records in the batch: a rollback leaves them unwritten
  core::StoreStats stats_;
  LogRecovery recovery_;

  // Commits are numbered; each synchronous commit and each sync job takes the next number.
  std::uint64_t next_job_ = 1;
  std::uint64_t finished_job_ = 0;
  // After a failed fdatasync the kernel may have dropped the data it could not write, so what the
  // file holds is unknown: the store refuses everything until the router restarts and recovers.
  std::string failed_;
  Post post_;
  std::thread sync_thread_;
  std::mutex sync_mutex_;
  std::condition_variable sync_wake_;
  std::deque<SyncJob> sync_jobs_;
  bool sync_stop_ = false;
  std::atomic<std::uint64_t> syncs_{0};  // the sync thread counts too
  mutable std::mutex sync_times_mutex_;   // so does it time them
  util::DurationHistogram sync_times_;

  // With sync_on_thread, compaction reads on a thread of its own, one compaction at a time: a
  // segment's held records can take a segment's worth of reading, tens of milliseconds, which the
  // loop would otherwise stall for (docs/architecture.md, "The message log").
  std::thread compact_reader_;
  bool compaction_running_ = false;
  std::optional<CompactionRest> compaction_rest_;
  bool closing_ = false;  // the destructor runs: no compaction starts
  // Posted completions check it, so one that runs after the store is gone does nothing.
  std::shared_ptr<bool> alive_ = std::make_shared<bool>(true);
};

}  // namespace debra::store
