// SPDX-License-Identifier: MIT
#include "store/log_store.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cinttypes>
#include <cstdio>
#include <cstring>
#include <filesystem>

#include "store/log_format.h"
#include "util/log.h"

namespace debra::store {
namespace {

std::string errno_text() { return std::strerror(errno); }

// The unit of O_DIRECT writes: offsets, lengths and buffers are multiples of it. 4 KiB suits every
// logical block size in use (512 bytes and 4 KiB), and pages.
constexpr std::uint64_t kDirectBlock = 4096;
constexpr std::uint64_t align_down(std::uint64_t n) { return n / kDirectBlock * kDirectBlock; }
constexpr std::uint64_t align_up(std::uint64_t n) { return align_down(n + kDirectBlock - 1); }

// Full writes at an offset: a short write is retried; an error leaves errno set.
bool write_at(int fd, const std::uint8_t* data, std::size_t size, std::uint64_t offset) {
  while (size > 0) {
    ssize_t n = ::pwrite(fd, data, size, static_cast<off_t>(offset));
    if (n < 0) {
      if (errno == EINTR) continue;
      return false;
    }
    data += n;
    size -= static_cast<std::size_t>(n);
    offset += static_cast<std::uint64_t>(n);
  }
  return true;
}

// The same for a gather list, which it consumes.
bool write_at(int fd, std::vector<iovec>& iov, std::uint64_t offset) {
  std::size_t first = 0;
  while (first < iov.size()) {
    const int count = static_cast<int>(std::min<std::size_t>(iov.size() - first, IOV_MAX));
    ssize_t n = ::pwritev(fd, iov.data() + first, count, static_cast<off_t>(offset));
    if (n < 0) {
      if (errno == EINTR) continue;
      return false;
    }
    offset += static_cast<std::uint64_t>(n);
    for (auto left = static_cast<std::size_t>(n); left > 0;) {
      const std::size_t step = std::min(left, iov[first].iov_len);
      iov[first].iov_base = static_cast<std::uint8_t*>(iov[first].iov_base) + step;
      iov[first].iov_len -= step;
      left -= step;
      if (iov[first].iov_len == 0) ++first;
    }
  }
  return true;
}

bool read_at(int fd, std::uint8_t* data, std::size_t size, std::uint64_t offset) {
  while (size > 0) {
    ssize_t n = ::pread(fd, data, size, static_cast<off_t>(offset));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    data += n;
    size -= static_cast<std::size_t>(n);
    offset += static_cast<std::uint64_t>(n);
  }
  return true;
}

// Disk space a file takes: its allocated blocks, which a reused segment's stale tail counts in.
std::uint64_t allocated_bytes(int fd) {
  struct stat st {};
  return ::fstat(fd, &st) == 0 ? static_cast<std::uint64_t>(st.st_blocks) * 512 : 0;
}

std::int64_t steady_clock_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

std::uint64_t steady_ns() {
  return static_cast<std::uint64_t>(
      std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now().time_since_epoch()).count());
}

std::int64_t wall_clock_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch())
      .count();
}

// A read-only view of a whole segment file, for recovery.
class Mapping {
 public:
  Mapping(int fd, std::size_t size) : size_(size) {
    if (size_ > 0) {
      void* p = ::mmap(nullptr, size_, PROT_READ, MAP_PRIVATE, fd, 0);
      data_ = p == MAP_FAILED ? nullptr : static_cast<const std::uint8_t*>(p);
    }
  }
  ~Mapping() {
    if (data_ != nullptr) ::munmap(const_cast<std::uint8_t*>(data_), size_);
  }
  Mapping(const Mapping&) = delete;
  Mapping& operator=(const Mapping&) = delete;
  bool ok() const { return size_ == 0 || data_ != nullptr; }
  std::span<const std::uint8_t> bytes() const { return {data_, size_}; }

 private:
  const std::uint8_t* data_ = nullptr;
  std::size_t size_;
};

}  // namespace

Result<std::unique_ptr<LogStore>, Error> LogStore::open(const std::string& dir, SyncMode sync,
                                                        core::StoreLimits limits, LogOptions options) {
  std::string log_dir = (std::filesystem::path(dir) / "log").string();
  if (::mkdir(log_dir.c_str(), 0700) != 0 && errno != EEXIST) {
    return make_error("creating the message log " + log_dir + ": " + errno_text());
  }
  std::unique_ptr<LogStore> store(new LogStore(log_dir, sync, limits, options));
  store->dir_fd_ = ::open(log_dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (store->dir_fd_ < 0) return make_error("opening the message log " + log_dir + ": " + errno_text());
  if (auto recovered = store->recover(); !recovered) return Unexpected{recovered.error()};
  return store;
}

LogStore::LogStore(std::string dir, SyncMode sync, core::StoreLimits limits, LogOptions options)
    : dir_(std::move(dir)), sync_(sync), limits_(limits), options_(options), seen_(options.dedupe_max_ranges) {}

LogStore::~LogStore() {
  // A compaction's reads finish (its completion is never run), and the final commit starts none.
  closing_ = true;
  alive_.reset();
  if (compact_reader_.joinable()) compact_reader_.join();
  // The sync thread finishes what it was given; completions it posts now are never run.
  stop_sync_thread();
  // The thread made every write it was given unless one failed; writes never handed to it (a
  // roll-over's, with no commit since) are made here. What is left goes through the page cache.
  if (writes_done_.load(std::memory_order_acquire) < queued_writes_) {
    fail_store("the message store cannot commit: a write of the message log failed");
  } else if (failed_.empty()) {
    std::vector<const DirectWrite*> rest;
    for (const DirectWrite& write : in_flight_) {
      if (write.number > queued_writes_) rest.push_back(&write);
    }
    if (std::string why = make_writes(rest); !why.empty()) fail_store(why);
  }
  release_written();
  direct_ = false;
  drop_block_prefix();
  for (auto& [id, segment] : segments_) {
    if (segment.direct_fd >= 0) ::close(segment.direct_fd);
    segment.direct_fd = -1;
    // A spare taken since the last write: its header, which that write would have carried.
    if (segment.spare_id != 0 && segment.in_file == 0 && failed_.empty()) {
      log::Bytes header;
      log::encode_header({segment.base_sequence, segment.salt}, header);
      log::encode_end_mark(segment.salt, header);
      if (!write_at(segment.fd, header.data(), header.size(), 0)) {
        fail_store("writing " + spare_path(segment.spare_id) + ": " + errno_text());
      }
    }
  }
  // Whatever is still buffered was never acknowledged to anyone: writing it is safe and saves work.
  // On a clean stop the Remove records no commit waited for go to the disk as well, and spares
  // taken since the last sync take their segments' names.
  if (failed_.empty()) {
    if (dirty_) (void)commit();
    bool renamed = false;
    for (auto& [id, segment] : segments_) {
      if (sync_ != SyncMode::Off && (segment.unsynced || segment.spare_id != 0)) (void)sync_file(segment.fd);
      if (segment.spare_id == 0) continue;
      // The sync thread may have named it already, with a completion that never ran.
      const std::string from = spare_path(segment.spare_id);
      const std::string to = segment_path(id);
      if (::access(to.c_str(), F_OK) != 0 && ::rename(from.c_str(), to.c_str()) != 0) {
        spdlog::error("message log: renaming {} to {}: {}", from, to, errno_text());
      }
      renamed = true;
    }
    if (renamed || !retired_unsynced_.empty()) sync_directory();
  }
  for (auto& [id, segment] : segments_) ::close(segment.fd);
  for (const Spare& spare : spares_) ::close(spare.fd);
  if (dir_fd_ >= 0) ::close(dir_fd_);
}

bool LogStore::sync_file(int fd) {
  syncs_.fetch_add(1, std::memory_order_relaxed);
  const std::uint64_t started = steady_ns();
  const bool ok = ::fdatasync(fd) == 0;
  const std::uint64_t took = steady_ns() - started;
  std::lock_guard lock(sync_times_mutex_);
  sync_times_.observe(took);
  return ok;
}

core::StoreStats LogStore::stats() const {
  core::StoreStats stats = stats_;
  stats.syncs = syncs_.load(std::memory_order_relaxed);
  stats.disk_bytes = disk_bytes();
  std::lock_guard lock(sync_times_mutex_);
  stats.sync_times = sync_times_;
  return stats;
}

std::string LogStore::segment_path(std::uint64_t id) const {
  char name[32];
  std::snprintf(name, sizeof name, "%020" PRIu64 ".seg", id);
  return dir_ + "/" + name;
}

std::string LogStore::spare_path(std::uint64_t id) const {
  char name[32];
  std::snprintf(name, sizeof name, "%020" PRIu64 ".spare", id);
  return dir_ + "/" + name;
}

std::uint64_t LogStore::disk_bytes() const {
  std::uint64_t bytes = 0;
  for (const auto& [id, segment] : segments_) bytes += allocated_bytes(segment.fd);
  for (const Spare& spare : spares_) bytes += allocated_bytes(spare.fd);
  return bytes;
}

std::uint64_t LogStore::end_offset() const { return segments_.at(active_).written + buffer_.size() - buffer_base_; }

Result<void, Error> LogStore::recover() {
  std::vector<std::uint64_t> ids;
  std::vector<std::uint64_t> spare_ids;
  DIR* listing = ::opendir(dir_.c_str());
  if (listing == nullptr) return make_error("reading the message log " + dir_ + ": " + errno_text());
  while (dirent* e = ::readdir(listing)) {
    std::string_view name = e->d_name;
    if (name.size() < 21 || !std::all_of(name.begin(), name.begin() + 20, [](char c) { return c >= '0' && c <= '9'; })) {
      continue;
    }
    const std::uint64_t id = std::stoull(std::string(name.substr(0, 20)));
    if (name.substr(20) == ".seg") ids.push_back(id);
    if (name.substr(20) == ".spare") spare_ids.push_back(id);
  }
  ::closedir(listing);
  std::sort(ids.begin(), ids.end());
  for (std::uint64_t id : spare_ids) adopt_spare(id);
  if (!ids.empty()) next_segment_id_ = std::max(next_segment_id_, ids.back() + 1);

  const std::int64_t now_ms = wall_clock_ms();
  for (std::size_t i = 0; i < ids.size(); ++i) {
    const std::uint64_t id = ids[i];
    const bool newest = i + 1 == ids.size();
    std::string path = segment_path(id);
    int fd = ::open(path.c_str(), O_RDWR | O_CLOEXEC);
    if (fd < 0) return make_error("opening " + path + ": " + errno_text());
    Segment& segment = segments_[id];
    segment.fd = fd;
    if (auto replayed = replay(id, segment, newest); !replayed) return replayed;
  }
  recovery_.segments = ids.size();
  seen_.prune(now_ms - limits_.dedupe_window_ms);
  last_prune_ms_ = now_ms;
  stats_ = {};
  for (const auto& [recipient, inbox] : inboxes_) {
    stats_.held_messages += inbox.messages.size();
    stats_.held_bytes += inbox.bytes;
  }
  // The newest segment goes on taking records unless it is full or damaged.
  if (!segments_.empty()) {
    auto& [id, newest] = *segments_.rbegin();
    if (recovery_.corrupt_segments == 0 && newest.written < options_.segment_bytes) {
      active_ = id;
      active_salt_ = newest.salt;
    }
  }
  if (active_ == 0) {
    if (auto started = start_segment(); !started) {
      // A full disk, most likely. Rather than refuse to start, go on in the newest segment, full
      // as it is: its recipients can take what the log holds, which frees room, and new messages
      // are refused (each tries for a new segment) until there is room. Not in a damaged one.
      if (segments_.empty() || recovery_.corrupt_segments != 0) return started;
      auto& [id, newest] = *segments_.rbegin();
      spdlog::warn("message log: cannot start a new segment ({}); going on in the full {} meanwhile: "
                   "messages are refused until one starts",
                   started.error().message, segment_path(id));
      active_ = id;
      active_salt_ = newest.salt;
    }
  }
  reclaim();
  return {};
}

Result<void, Error> LogStore::replay(std::uint64_t id, Segment& segment, bool newest) {
  const std::string path = segment_path(id);
  struct stat st {};
  if (::fstat(segment.fd, &st) != 0) return make_error("reading " + path + ": " + errno_text());
  const auto size = static_cast<std::size_t>(st.st_size);
  Mapping map(segment.fd, size);
  if (!map.ok()) return make_error("reading " + path + ": " + errno_text());
  std::span<const std::uint8_t> bytes = map.bytes();
  auto header = log::decode_header(bytes);
  if (!header) {
    // A segment whose creation was interrupted before its header reached the disk holds nothing.
    if (newest && size < log::kHeaderSize) {
      ::close(segment.fd);
      segments_.erase(id);
      ::unlink(path.c_str());
      return {};
    }
    return make_error(path + " is not a debra message log segment (bad header); move it away to start");
  }
  next_sequence_ = std::max(next_sequence_, header->base_sequence);
  segment.salt = header->salt;
  segment.base_sequence = header->base_sequence;
  const std::int64_t dedupe_from = wall_clock_ms() - limits_.dedupe_window_ms;
  std::size_t offset = log::kHeaderSize;
  while (offset < size) {
    log::DecodeResult decoded = log::decode(bytes.subspan(offset), segment.salt);
    if (decoded.status == log::DecodeStatus::End) break;
    if (decoded.status != log::DecodeStatus::Ok) {
      if (newest) {
        // The tail of a write the crash interrupted: it was never committed, so never acknowledged.
        recovery_.torn_bytes += size - offset;
        spdlog::warn("message log: {}: cutting off {} bytes of an interrupted write at offset {}", path,
                     size - offset, offset);
        if (::ftruncate(segment.fd, static_cast<off_t>(offset)) != 0) {
          return make_error("truncating " + path + ": " + errno_text());
        }
      } else {
        ++recovery_.corrupt_segments;
        spdlog::error("message log: {}: a damaged record at offset {}; the {} bytes after it are lost", path, offset,
                      size - offset);
      }
      break;
    }
    ++recovery_.records;
    const log::Decoded& r = decoded.record;
    if (r.type == log::RecordType::Append) {
      const log::AppendRecord& a = r.append;
      next_sequence_ = std::max(next_sequence_, a.sequence + 1);
      Inbox& inbox = inbox_of(a.recipient);
      if (auto it = inbox.messages.find(a.sequence); it != inbox.messages.end()) {
        // A copy made by compaction: the message now lives here. The later record wins whole, even
        // if damage made the two differ.
        release(a.recipient, it, it->second.segment);
      }
      Entry entry{a.sender, a.receipt_requested, static_cast<std::uint32_t>(a.payload.size()), a.message_id,
                  a.expires_at_ms, id, offset};
      hold(a.recipient, a.sequence, entry, r.size);
      if (a.message_id != 0 && a.accepted_at_ms >= dedupe_from) {
        seen_.add(a.sender, a.message_id, a.sequence, a.accepted_at_ms);
      }
    } else {
      auto inbox = inboxes_.find(r.remove.recipient);
      if (inbox != inboxes_.end()) {
        auto it = inbox->second.messages.find(r.remove.sequence);
        if (it != inbox->second.messages.end()) release(r.remove.recipient, it, id);
      }
    }
    offset += r.size;
  }
  segment.written = segment.submitted = segment.synced = segment.in_file = std::min(offset, size);
  return {};
}

Result<void, Error> LogStore::start_segment() {
  if (auto closing = segments_.find(active_); closing != segments_.end()) closing->second.closed_at_ms = steady_clock_ms();
  const std::uint64_t id = next_segment_id_++;
  make_spare_durable();
  if (direct_ && retires_on_thread() && roll_over_direct(id)) return {};
  Segment fresh;
  while (!spares_.empty()) {
    if (reuse_spare(id, fresh)) {
      segments_[id] = fresh;
      active_ = id;
      active_salt_ = fresh.salt;
      if (direct_) start_direct_writes();
      return {};
    }
  }
  const std::string path = segment_path(id);
  int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
  if (fd < 0) return make_error("creating " + path + ": " + errno_text());
  std::vector<std::uint8_t> header;
  log::encode_header({next_sequence_, 0}, header);
  // The header makes the file a segment and carries the sequence floor: it is on disk, and so is
  // the file's name, before any record in it counts.
  bool ok = write_at(fd, header.data(), header.size(), 0);
  if (ok && sync_ != SyncMode::Off) ok = sync_file(fd) && ::fsync(dir_fd_) == 0;
  if (!ok) {
    std::string message = "creating " + path + ": " + errno_text();
    ::close(fd);
    ::unlink(path.c_str());
    return make_error(std::move(message));
  }
  Segment& segment = segments_[id];
  segment.fd = fd;
  segment.base_sequence = next_sequence_;
  segment.written = segment.submitted = segment.synced = segment.in_file = header.size();
  active_ = id;
  active_salt_ = 0;
  if (direct_) start_direct_writes();
  return {};
}

bool LogStore::roll_over_direct(std::uint64_t id) {
  // At 16 KiB × 8 pairs the synchronous way (the header's fdatasync, the rename and the directory's
  // fsync) stopped the loop for 1.0–2.6 ms a segment, six segments a second; a new file costs the
  // same, once per segment a growing backlog fills. Here the header goes with the segment's first
  // write and the name with its first sync, both on the sync thread, and in that order: under the
  // segment's name the file never holds an old life's header, nor a missing one.
  const bool reused = !spares_.empty();
  // A new file starts as a spare of its own id: a crash before its first sync leaves a spare.
  const Spare spare = reused ? spares_.back() : Spare{id, -1, 0};
  const std::string path = spare_path(spare.id);
  const int fd = reused ? spare.fd : ::open(path.c_str(), O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
  const int direct_fd = fd < 0 ? -1 : ::open(path.c_str(), O_WRONLY | O_DIRECT | O_CLOEXEC);
  const auto space = static_cast<off_t>(align_up(options_.segment_bytes + removal_reserve()));
  if (direct_fd < 0 || ::fallocate(direct_fd, FALLOC_FL_KEEP_SIZE, 0, space) != 0) {
    if (direct_fd >= 0) ::close(direct_fd);
    if (!reused && fd >= 0) {
      ::close(fd);
      ::unlink(path.c_str());
    }
    return false;
  }
  if (reused) spares_.pop_back();
  Segment& segment = segments_[id];
  segment.fd = fd;
  segment.direct_fd = direct_fd;
  segment.salt = reused ? spare.salt + 1 : 0;
  segment.base_sequence = next_sequence_;
  segment.written = segment.submitted = segment.synced = log::kHeaderSize;
  segment.in_file = 0;  // the header is not in the file until the first write
  segment.spare_id = spare.id;
  unnamed_.push_back(id);
  active_ = id;
  active_salt_ = segment.salt;
  drop_block_prefix();
  log::Bytes header;
  log::encode_header({next_sequence_, segment.salt}, header);
  buffer_.insert(buffer_.begin(), header.begin(), header.end());
  buffer_base_ = header.size();
  return true;
}

void LogStore::queue_rename(SyncJob& job, std::uint64_t id, Segment& segment) {
  job.renames.push_back({id, spare_path(segment.spare_id), segment_path(id)});
  segment.rename_queued = true;
}

void LogStore::make_spare_durable() {
  if (spares_.empty()) return;
  // The oldest retirements are the likeliest to be on disk already.
  auto durable = std::find_if(spares_.begin(), spares_.end(),
                              [this](const Spare& spare) { return retired_unsynced_.count(spare.id) == 0; });
  if (durable == spares_.end()) {
    sync_directory();
    return;
  }
  std::swap(*durable, spares_.back());
}

void LogStore::sync_directory() {
  if (sync_ != SyncMode::Off) ::fsync(dir_fd_);
  if (!retired_unsynced_.empty()) reclaim_due_ = true;  // Removes that cancelled their records may go now
  retired_unsynced_.clear();
}

bool LogStore::reuse_spare(std::uint64_t id, Segment& segment) {
  const Spare spare = spares_.back();
  spares_.pop_back();
  const std::string from = spare_path(spare.id);
  const std::string to = segment_path(id);
  // The new header, with a salt above the old one, and an end mark right after it, reach the disk
  // before the file takes a segment's name: under that name, no record of its earlier lives counts.
  std::vector<std::uint8_t> header;
  log::encode_header({next_sequence_, spare.salt + 1}, header);
  log::encode_end_mark(spare.salt + 1, header);
  bool ok = write_at(spare.fd, header.data(), header.size(), 0);
  if (ok && sync_ != SyncMode::Off) ok = sync_file(spare.fd);
  if (ok) ok = ::rename(from.c_str(), to.c_str()) == 0;
  if (ok && sync_ != SyncMode::Off) ok = ::fsync(dir_fd_) == 0;
  if (!ok) {
    spdlog::warn("message log: reusing {} as {}: {}; creating a new file instead", from, to, errno_text());
    ::close(spare.fd);
    ::unlink(from.c_str());
    ::unlink(to.c_str());
    return false;
  }
  segment.fd = spare.fd;
  segment.salt = spare.salt + 1;
  segment.base_sequence = next_sequence_;
  segment.written = segment.submitted = segment.synced = segment.in_file = log::kHeaderSize;
  return true;
}

void LogStore::adopt_spare(std::uint64_t id) {
  next_segment_id_ = std::max(next_segment_id_, id + 1);
  const std::string path = spare_path(id);
  int fd = ::open(path.c_str(), O_RDWR | O_CLOEXEC);
  std::uint8_t bytes[log::kHeaderSize];
  std::optional<log::Header> header;
  if (fd >= 0 && read_at(fd, bytes, sizeof bytes, 0)) header = log::decode_header(bytes);
  if (header && header->salt != UINT32_MAX && spares_.size() < options_.spare_segments) {
    spares_.push_back(Spare{id, fd, header->salt});
    return;
  }
  // Not one of ours whole, or more than we keep: a spare holds nothing anyone needs.
  if (fd >= 0) ::close(fd);
  ::unlink(path.c_str());
}

void LogStore::retire(std::uint64_t id) {
  Segment& segment = segments_.at(id);
  if (segment.direct_fd >= 0) ::close(segment.direct_fd);
  const std::string path = segment_path(id);
  if (spares_.size() < options_.spare_segments && segment.salt != UINT32_MAX &&
      ::rename(path.c_str(), spare_path(id).c_str()) == 0) {
    spares_.push_back(Spare{id, segment.fd, segment.salt});
  } else {
    ::close(segment.fd);
    if (::unlink(path.c_str()) != 0) spdlog::warn("message log: deleting {}: {}", path, errno_text());
  }
  segments_.erase(id);
}

LogStore::Inbox& LogStore::inbox_of(core::ClientId recipient) {
  return inboxes_.try_emplace(recipient).first->second;
}

void LogStore::hold(core::ClientId recipient, std::uint64_t sequence, const Entry& entry, std::size_t record_size) {
  Inbox& inbox = inbox_of(recipient);
  inbox.messages.emplace(sequence, entry);
  inbox.bytes += entry.payload_size;
  ++held_;
  if (entry.expires_at_ms > 0) {
    const Deadline deadline{entry.expires_at_ms, sequence, recipient};
    deadlines_.push_back(deadline);
    std::push_heap(deadlines_.begin(), deadlines_.end(), later);
    if (deadline_rebuild_) {
      deadline_rebuild_->heap.push_back(deadline);
      std::push_heap(deadline_rebuild_->heap.begin(), deadline_rebuild_->heap.end(), later);
    } else if (deadlines_.size() > 2 * held_ + 1024) {
      start_deadline_rebuild();
    }
  }
  Segment& segment = segments_.at(entry.segment);
  segment.live += 1;
  segment.live_bytes += record_size;
  if (sequence < segment.base_sequence) inbox.count_copy(sequence);
}

void LogStore::relocate(Inbox& inbox, std::uint64_t sequence, Entry& entry, std::uint64_t segment,
                        std::uint64_t offset) {
  if (is_copy(sequence, entry)) inbox.uncount_copy();
  entry.segment = segment;
  entry.offset = offset;
  if (is_copy(sequence, entry)) inbox.count_copy(sequence);
}

core::StoredMessage LogStore::describe(core::ClientId recipient, std::uint64_t sequence, const Entry& entry) {
  core::StoredMessage m;
  m.sequence = sequence;
  m.sender = entry.sender;
  m.recipient = recipient;
  m.message_id = entry.message_id;
  m.receipt_requested = entry.receipt_requested;
  m.expires_at_ms = entry.expires_at_ms;
  return m;
}

void LogStore::start_deadline_rebuild() {
  DeadlineRebuild rebuild;
  rebuild.recipients.reserve(inboxes_.size());
  for (const auto& [recipient, inbox] : inboxes_) rebuild.recipients.push_back(recipient);
  deadline_rebuild_ = std::move(rebuild);
}

void LogStore::advance_deadline_rebuild() {
  if (!deadline_rebuild_) return;
  DeadlineRebuild& rebuild = *deadline_rebuild_;
  std::size_t budget = kDeadlineRebuildStep;
  while (rebuild.next < rebuild.recipients.size()) {
    const core::ClientId recipient = rebuild.recipients[rebuild.next];
    if (auto inbox = inboxes_.find(recipient); inbox != inboxes_.end()) {
      Messages& messages = inbox->second.messages;
      auto it = messages.upper_bound(rebuild.after);
      for (; it != messages.end() && budget > 0; ++it, --budget) {
        rebuild.after = it->first;
        if (it->second.expires_at_ms == 0) continue;
        rebuild.heap.push_back(Deadline{it->second.expires_at_ms, it->first, recipient});
        std::push_heap(rebuild.heap.begin(), rebuild.heap.end(), later);
      }
      if (it != messages.end()) return;  // the next step goes on from rebuild.after
    }
    ++rebuild.next;
    rebuild.after = 0;
  }
  deadlines_ = std::move(rebuild.heap);
  deadline_rebuild_.reset();
}

core::StoredMessage LogStore::release(core::ClientId recipient, Messages::iterator it, std::uint64_t removed_in) {
  Inbox& inbox = inboxes_.at(recipient);
  const Entry& e = it->second;
  core::StoredMessage m = describe(recipient, it->first, e);
  Segment& segment = segments_.at(e.segment);
  segment.live -= 1;
  segment.live_bytes -= log::append_record_size(e.payload_size);
  if (segment.live == 0) reclaim_due_ = true;
  if (it->first < segment.base_sequence) inbox.uncount_copy();
  if (removed_in != kUnrecorded && e.segment != removed_in) segments_.at(removed_in).cancels_into.insert(e.segment);
  inbox.bytes -= e.payload_size;
  inbox.messages.erase(it);
  --held_;
  if (inbox.messages.empty()) inboxes_.erase(recipient);
  return m;
}

void LogStore::prune_dedupe(std::int64_t now_ms) {
  // Once a minute: a range is kept a little longer than the window, never shorter.
  if (now_ms - last_prune_ms_ < 60'000) return;
  last_prune_ms_ = now_ms;
  seen_.prune(now_ms - limits_.dedupe_window_ms);
}

core::AppendResult LogStore::append(const core::Delivery& delivery, std::span<const std::uint8_t> payload,
                                    bool receipt_requested, std::int64_t now_ms) {
  if (delivery.message_id != 0) {
    prune_dedupe(now_ms);
    if (auto earlier = seen_.find(delivery.sender, delivery.message_id)) {
      ++stats_.duplicates;
      return {core::AppendStatus::Duplicate, *earlier, {}};
    }
  }
  auto inbox = inboxes_.find(delivery.recipient);
  const std::uint64_t held = inbox == inboxes_.end() ? 0 : inbox->second.messages.size();
  const std::uint64_t held_bytes = inbox == inboxes_.end() ? 0 : inbox->second.bytes;
  if (held + 1 > limits_.max_messages_per_recipient || held_bytes + payload.size() > limits_.max_bytes_per_recipient) {
    ++stats_.quota_rejections;
    return {core::AppendStatus::QuotaExceeded, 0,
            "recipient " + std::to_string(delivery.recipient) + " holds " + std::to_string(held) + " messages (" +
                std::to_string(held_bytes) + " bytes); its quota is " +
                std::to_string(limits_.max_messages_per_recipient) + " messages and " +
                std::to_string(limits_.max_bytes_per_recipient) + " bytes"};
  }
  if (!failed_.empty()) {
    ++stats_.unavailable;
    return {core::AppendStatus::Unavailable, 0, failed_};
  }
  if (next_sequence_ >= log::kSequenceLimit) {
    // Only a damaged or forged log gets here: recovery would take a higher sequence for damage.
    ++stats_.unavailable;
    return {core::AppendStatus::Unavailable, 0, "the message log has used up its sequence numbers"};
  }
  const std::size_t record_size = log::append_record_size(payload.size());
  if (record_size - log::kFrameSize > log::kMaxBodySize) {
    ++stats_.unavailable;
    return {core::AppendStatus::Unavailable, 0, "the message is larger than the message log takes"};
  }
  if (auto room = make_room(record_size); !room) {
    ++stats_.unavailable;
    return {core::AppendStatus::Unavailable, 0, "the message store cannot write: " + room.error().message};
  }
  const std::uint64_t sequence = next_sequence_++;
  log::AppendRecord record{sequence,
                           delivery.recipient,
                           delivery.sender,
                           delivery.message_id,
                           receipt_requested,
                           limits_.ttl_ms > 0 ? now_ms + limits_.ttl_ms : 0,
                           now_ms,
                           payload};
  Entry entry{delivery.sender, receipt_requested, static_cast<std::uint32_t>(payload.size()), delivery.message_id,
              record.expires_at_ms, active_, end_offset()};
  log::encode(record, active_salt_, buffer_);
  hold(delivery.recipient, sequence, entry, record_size);
  if (delivery.message_id != 0) seen_.add(delivery.sender, delivery.message_id, sequence, now_ms);
  batch_appended_.push_back(Appended{delivery.recipient, sequence});
  dirty_ = true;
  ++stats_.stored;
  ++stats_.held_messages;
  stats_.held_bytes += payload.size();
  if (sync_ == SyncMode::Always) {
    if (auto committed = commit(); !committed) return {core::AppendStatus::Unavailable, 0, committed.error().message};
  }
  return {core::AppendStatus::Stored, sequence, {}};
}

std::optional<core::StoredMessage> LogStore::acknowledge(core::ClientId recipient, std::uint64_t sequence) {
  auto inbox = inboxes_.find(recipient);
  if (inbox == inboxes_.end()) return std::nullopt;
  auto it = inbox->second.messages.find(sequence);
  if (it == inbox->second.messages.end()) return std::nullopt;
  const std::uint64_t bytes = it->second.payload_size;
  const bool recorded = write_remove(recipient, sequence);
  core::StoredMessage acked = release(recipient, it, recorded ? active_ : kUnrecorded);
  dirty_ = true;
  ++stats_.acknowledged;
  --stats_.held_messages;
  stats_.held_bytes -= bytes;
  // An acknowledgement lost in a crash only means one redelivery: no need to fail on it.
  if (auto committed = commit_if_always(); !committed) spdlog::warn("store: {}", committed.error().message);
  return acked;
}

std::vector<std::uint8_t> LogStore::read_payload(const Entry& entry) const {
  std::vector<std::uint8_t> payload(entry.payload_size);
  const std::uint64_t at = entry.offset + log::kPayloadOffset;
  const Segment& segment = segments_.at(entry.segment);
  if (entry.segment == active_ && entry.offset >= segment.written) {
    const std::size_t from = static_cast<std::size_t>(at - segment.written) + buffer_base_;
    std::copy_n(buffer_.begin() + static_cast<std::ptrdiff_t>(from), payload.size(), payload.begin());
  } else if (entry.offset >= segment.in_file) {
    read_in_flight(entry, payload);
  } else if (!payload.empty() && !read_at(segment.fd, payload.data(), payload.size(), at)) {
    // The page cache holds what was written; a failed read here is a failing disk.
    spdlog::error("message log: reading {} bytes at {} of {}: {}", payload.size(), at, segment_path(entry.segment),
                  errno_text());
  }
  return payload;
}

std::vector<core::StoredMessage> LogStore::pending(core::ClientId recipient, std::uint64_t after, std::size_t limit,
                                                   std::size_t max_bytes) {
  std::vector<core::StoredMessage> out;
  auto inbox = inboxes_.find(recipient);
  if (inbox == inboxes_.end()) return out;
  std::vector<const Entry*> entries;
  std::size_t bytes = 0;
  auto it = inbox->second.messages.upper_bound(after);
  for (; it != inbox->second.messages.end() && out.size() < limit && bytes < max_bytes; ++it) {
    out.push_back(describe(recipient, it->first, it->second));
    entries.push_back(&it->second);
    bytes += it->second.payload_size;
  }
  read_payloads(entries, out);
  // A bounded read is a fill, which the next one follows as soon as the recipient acknowledges.
  if (max_bytes != SIZE_MAX) read_ahead(it, inbox->second.messages.end(), max_bytes);
  return out;
}

void LogStore::read_ahead(Messages::iterator from, Messages::iterator end, std::size_t bytes) const {
  // Have the kernel read the records of the next batch into the page cache now, in the background,
  // so that its preads on the loop find them there instead of waiting for the disk: segments are
  // written with O_DIRECT, so a backlog is never in the cache by itself.
  constexpr std::uint64_t kMaxGap = 64 * 1024;  // bytes of other records one range may take in
  std::uint64_t segment_id = 0;
  std::uint64_t start = 0;
  std::uint64_t stop = 0;
  const auto advise = [&] {
    if (stop > start) {
      ::posix_fadvise(segments_.at(segment_id).fd, static_cast<off_t>(start), static_cast<off_t>(stop - start),
                      POSIX_FADV_WILLNEED);
    }
  };
  std::size_t taken = 0;
  for (auto it = from; it != end && taken < bytes; ++it) {
    const Entry& e = it->second;
    taken += e.payload_size;
    const std::uint64_t record_end = e.offset + log::append_record_size(e.payload_size);
    if (e.offset >= segments_.at(e.segment).in_file) break;  // not written yet: read from memory
    if (e.segment == segment_id && e.offset >= stop && e.offset - stop <= kMaxGap) {
      stop = record_end;
      continue;
    }
    advise();
    segment_id = e.segment;
    start = e.offset;
    stop = record_end;
  }
  advise();
}

void LogStore::read_payloads(const std::vector<const Entry*>& entries, std::vector<core::StoredMessage>& out) const {
  // A backlog drained after a reconnect lies mostly in runs of nearby records of one segment: each
  // run is one pread, not one per message (a pread per message was a third of a drain's CPU).
  constexpr std::uint64_t kMaxGap = 4096;         // bytes of other records a run may read past
  constexpr std::uint64_t kMaxRun = 256 * 1024;  // bytes one read may cover
  std::vector<std::uint8_t> scratch;
  std::size_t i = 0;
  while (i < entries.size()) {
    const Entry& first = *entries[i];
    const Segment& segment = segments_.at(first.segment);
    const auto on_disk = [&](const Entry& e) { return e.segment == first.segment && e.offset < segment.in_file; };
    std::size_t end = i + 1;
    std::uint64_t run_end = first.offset + log::append_record_size(first.payload_size);
    if (on_disk(first)) {
      while (end < entries.size()) {
        const Entry& next = *entries[end];
        const std::uint64_t next_end = next.offset + log::append_record_size(next.payload_size);
        if (!on_disk(next) || next.offset < run_end || next.offset - run_end > kMaxGap ||
            next_end - first.offset > kMaxRun) {
          break;
        }
        run_end = next_end;
        ++end;
      }
    }
    if (end - i == 1) {
      out[i].payload = read_payload(first);
    } else {
      scratch.resize(static_cast<std::size_t>(run_end - first.offset));
      if (read_at(segment.fd, scratch.data(), scratch.size(), first.offset)) {
        for (std::size_t k = i; k < end; ++k) {
          const auto from = static_cast<std::ptrdiff_t>(entries[k]->offset - first.offset + log::kPayloadOffset);
          out[k].payload.assign(scratch.begin() + from, scratch.begin() + from + entries[k]->payload_size);
        }
      } else {
        for (std::size_t k = i; k < end; ++k) out[k].payload = read_payload(*entries[k]);  // logs the failure
      }
    }
    i = end;
  }
}

std::vector<core::StoredMessage> LogStore::expire(std::int64_t now_ms) {
  std::vector<core::StoredMessage> out;
  prune_dedupe(now_ms);
  while (!deadlines_.empty() && deadlines_.front().at_ms <= now_ms) {
    std::pop_heap(deadlines_.begin(), deadlines_.end(), later);
    const auto [deadline, sequence, recipient] = deadlines_.back();
    deadlines_.pop_back();
    auto inbox = inboxes_.find(recipient);
    if (inbox == inboxes_.end()) continue;  // released before it expired
    auto it = inbox->second.messages.find(sequence);
    if (it == inbox->second.messages.end() || it->second.expires_at_ms != deadline) continue;
    const std::uint64_t bytes = it->second.payload_size;
    const bool recorded = write_remove(recipient, sequence);
    out.push_back(release(recipient, it, recorded ? active_ : kUnrecorded));
    --stats_.held_messages;
    stats_.held_bytes -= bytes;
  }
  if (!out.empty()) {
    dirty_ = true;
    stats_.expired += out.size();
    if (auto committed = commit_if_always(); !committed) spdlog::warn("store: {}", committed.error().message);
  }
  return out;
}

Result<void, Error> LogStore::commit_if_always() {
  if (sync_ != SyncMode::Always) return {};
  return commit();
}

Result<void, Error> LogStore::make_room(std::size_t record_size) {
  // Past segment_bytes a direct write would need blocks the segment did not take when it started,
  // and on the sync thread a full disk would stop the store instead of refusing messages.
  if (end_offset() + record_size + log::kEndMarkSize <= options_.segment_bytes || end_offset() <= log::kHeaderSize) {
    return {};
  }
  // Roll over: what is buffered goes to the full segment (made durable by the next commit).
  if (auto written = write_buffer(); !written) return written;
  auto started = start_segment();
  if (started) removal_overflow_logged_ = false;
  return started;
}

std::uint64_t LogStore::removal_reserve() const {
  return std::max<std::uint64_t>(options_.segment_bytes / 64, kDirectBlock);
}

bool LogStore::write_remove(core::ClientId recipient, std::uint64_t sequence) {
  if (!make_room_for_remove()) return false;
  log::encode(log::RemoveRecord{sequence, recipient}, active_salt_, buffer_);
  ++batch_removes_;
  return true;
}

bool LogStore::make_room_for_remove() {
  auto room = make_room(log::kRemoveRecordSize);
  if (room) return true;
  // An acknowledgement cannot be refused. With no new segment, its record goes into the space the
  // active segment reserved past segment_bytes; past that it is not written at all, since a write
  // the segment took no space for fails on the sync thread and would stop the store. The message
  // is released all the same: after a restart it may come back, as after a crash.
  const bool fits = end_offset() + log::kRemoveRecordSize + log::kEndMarkSize <=
                    options_.segment_bytes + removal_reserve();
  if (!removal_overflow_logged_) {
    spdlog::warn("message log: cannot start a new segment ({}); acknowledgements go into the full one's reserve, "
                 "then stay unwritten (their messages would come back after a restart) until one starts",
                 room.error().message);
    removal_overflow_logged_ = true;
  }
  if (!fits) ++stats_.removals_unwritten;
  return fits;
}

Result<void, Error> LogStore::write_buffer() {
  if (buffer_.size() == buffer_base_) return {};
  Segment& segment = segments_.at(active_);
  if (segment.direct_fd >= 0) {
    queue_direct_write(segment);
    return {};
  }
  // The end mark goes out with the records and the next write starts on it: in a reused file,
  // it is what tells recovery where this life's records stop.
  const std::size_t records = buffer_.size();
  log::encode_end_mark(active_salt_, buffer_);
  const bool ok = write_at(segment.fd, buffer_.data(), buffer_.size(), segment.written);
  buffer_.resize(records);
  if (!ok) return make_error("writing " + segment_path(active_) + ": " + errno_text());
  segment.written += records;
  segment.in_file = segment.written;
  buffer_.clear();
  return {};
}

void LogStore::queue_direct_write(Segment& segment) {
  const std::uint64_t from = segment.written - buffer_base_;
  const std::size_t records = buffer_.size() - buffer_base_;
  log::encode_end_mark(active_salt_, buffer_);
  const std::size_t used = buffer_.size();
  buffer_.resize(static_cast<std::size_t>(align_up(used)));
  std::memset(buffer_.data() + used, 0, buffer_.size() - used);  // past the end mark: never read, but not stale memory
  segment.written += records;
  auto data = std::make_shared<const log::Bytes>(std::move(buffer_));
  // The next batch starts with the block these records end in, with room for as much as this one.
  buffer_ = log::Bytes();
  buffer_.reserve(data->size());
  buffer_.assign(data->begin() + static_cast<std::ptrdiff_t>(align_down(segment.written) - from),
                 data->begin() + static_cast<std::ptrdiff_t>(segment.written - from));
  buffer_base_ = buffer_.size();
  in_flight_.push_back(DirectWrite{next_write_++, active_, segment.direct_fd, from, segment.written, std::move(data)});
}

void LogStore::drop_block_prefix() {
  buffer_.erase(buffer_.begin(), buffer_.begin() + static_cast<std::ptrdiff_t>(buffer_base_));
  buffer_base_ = 0;
}

void LogStore::start_direct_writes() {
  Segment& segment = segments_.at(active_);
  drop_block_prefix();
  const std::string path = segment_path(active_);
  const int fd = ::open(path.c_str(), O_WRONLY | O_DIRECT | O_CLOEXEC);
  if (fd < 0) {
    // The file system has no O_DIRECT (ramfs): every segment is written through the page cache.
    spdlog::info("message log: {} cannot be opened with O_DIRECT ({}); writing through the page cache", path,
                 errno_text());
    direct_ = false;
    return;
  }
  // A file system that states its alignments for O_DIRECT (ext4, XFS, Linux 6.1 on) must take
  // whole 4 KiB blocks; one that does not state them is tried as it is.
  struct statx alignment {};
  if (::statx(fd, "", AT_EMPTY_PATH, STATX_DIOALIGN, &alignment) == 0 && (alignment.stx_mask & STATX_DIOALIGN) != 0 &&
      (alignment.stx_dio_offset_align == 0 || alignment.stx_dio_offset_align > kDirectBlock ||
       alignment.stx_dio_mem_align > kDirectBlock)) {
    spdlog::info("message log: {} takes O_DIRECT at offsets of {} bytes, not 4 KiB; writing through the page cache",
                 path, alignment.stx_dio_offset_align);
    ::close(fd);
    direct_ = false;
    return;
  }
  // The segment's disk space is taken now, with a reserve past segment_bytes for Remove records
  // (removal_reserve): on the sync thread a failed write stops the store until a restart, where a
  // full disk should only refuse messages until there is room again. Without the space the segment
  // is written through the page cache, whose writes fail here, on the loop, with StoreUnavailable.
  // (Only a record larger than a whole segment takes more, on the thread.)
  // The block the records end in is written back at once, with an end mark after them, as each
  // batch's write will: a file system that takes O_DIRECT but not these writes (and states no
  // alignment) is found here, not on the thread.
  const std::uint64_t from = align_down(segment.written);
  log::Bytes block(static_cast<std::size_t>(segment.written - from));
  const auto space = static_cast<off_t>(align_up(options_.segment_bytes + removal_reserve()));
  bool ok =
      ::fallocate(fd, FALLOC_FL_KEEP_SIZE, 0, space) == 0 && read_at(segment.fd, block.data(), block.size(), from);
  const std::size_t held = block.size();
  if (ok) {
    log::encode_end_mark(active_salt_, block);
    const std::size_t used = block.size();
    block.resize(static_cast<std::size_t>(align_up(used)));
    std::memset(block.data() + used, 0, block.size() - used);
    ok = write_at(fd, block.data(), block.size(), from);
  }
  if (!ok) {
    const int error = errno;
    spdlog::warn("message log: preparing {} for O_DIRECT: {}; writing it through the page cache", path,
                 std::strerror(error));
    if (error == EINVAL) direct_ = false;  // the file system's, not this file's: the next segment would fail too
    ::close(fd);
    return;
  }
  buffer_.insert(buffer_.begin(), block.begin(), block.begin() + static_cast<std::ptrdiff_t>(held));
  buffer_base_ = held;
  segment.direct_fd = fd;
}

bool LogStore::writes_direct() const { return segments_.at(active_).direct_fd >= 0; }

void LogStore::release_written() {
  const std::uint64_t done = writes_done_.load(std::memory_order_acquire);
  while (!in_flight_.empty() && in_flight_.front().number <= done) {
    const DirectWrite& write = in_flight_.front();
    if (auto it = segments_.find(write.segment); it != segments_.end()) {
      Segment& segment = it->second;
      segment.in_file = std::max(segment.in_file, write.records_end);
      // A closed segment needs its O_DIRECT descriptor only until its last write is made.
      if (write.segment != active_ && segment.in_file == segment.written && segment.direct_fd >= 0) {
        ::close(segment.direct_fd);
        segment.direct_fd = -1;
      }
    }
    in_flight_.pop_front();
  }
}

void LogStore::read_in_flight(const Entry& entry, std::vector<std::uint8_t>& payload) const {
  for (auto it = in_flight_.rbegin(); it != in_flight_.rend(); ++it) {
    if (it->segment != entry.segment || entry.offset < it->offset || entry.offset >= it->records_end) continue;
    const std::uint8_t* at = it->data->data() + (entry.offset + log::kPayloadOffset - it->offset);
    std::copy_n(at, payload.size(), payload.begin());
    return;
  }
  spdlog::error("message log: the record at {} of {} is neither in the file nor on its way there", entry.offset,
                segment_path(entry.segment));
}

Result<void, Error> LogStore::commit() {
  advance_deadline_rebuild();
  if (!dirty_) return {};
  auto fail = [this](std::string what) -> Result<void, Error> {
    std::string message = "the message store cannot commit: " + std::move(what);
    rollback();
    ++stats_.unavailable;
    return make_error(std::move(message));
  };
  if (!failed_.empty()) return fail(failed_);
  const std::uint64_t started = batch_appended_.empty() ? 0 : steady_ns();
  const bool wait_for_disk = batch_needs_disk();
  if (auto written = write_buffer(); !written) return fail(written.error().message);
  for (auto& [id, segment] : segments_) {
    if (segment.synced == segment.written) continue;
    if (wait_for_disk) {
      if (sync_ != SyncMode::Off && !sync_file(segment.fd)) {
        return fail("syncing " + segment_path(id) + ": " + errno_text());
      }
      segment.synced = segment.written;
    }
    segment.unsynced = !wait_for_disk;
    segment.submitted = segment.written;
  }
  dirty_ = false;
  batch_appended_.clear();
  batch_moved_.clear();
  batch_removes_ = 0;
  finished_job_ = next_job_++;
  if (started != 0) stats_.commit_times.observe(steady_ns() - started);
  after_commit();
  return {};
}

bool LogStore::batch_needs_disk() const {
  // A batch of Remove records alone (acknowledgements, expiries) is written at once but not waited
  // for: if a power cut loses it, those messages are delivered again after the restart, which the
  // protocol allows (at least once; the recipient knows them by sequence). What the recipient took
  // is not worth an fdatasync of its own; the next batch that holds messages syncs it too.
  return sync_ == SyncMode::Always || !batch_appended_.empty() || !batch_moved_.empty();
}

void LogStore::after_commit() {
  ++stats_.commits;
  // Only now are the copies made by compaction on disk, so only now may their originals go.
  if (reclaim_due_) reclaim();
  compact();
}

void LogStore::sync_on_thread(Post post) {
  if (sync_thread_.joinable()) return;
  post_ = std::move(post);
  if (sync_ == SyncMode::Batch) {
    direct_ = true;
    start_direct_writes();
    if (direct_) spdlog::info("message log: the sync thread writes {} with O_DIRECT", dir_);
  }
  sync_thread_ = std::thread([this] { run_syncs(); });
}

void LogStore::stop_sync_thread() {
  if (!sync_thread_.joinable()) return;
  {
    std::lock_guard lock(sync_mutex_);
    sync_stop_ = true;
  }
  sync_wake_.notify_one();
  sync_thread_.join();
}

void LogStore::commit_async(CommitDone done) {
  if (!post_ || sync_ != SyncMode::Batch) {
    done(commit());
    return;
  }
  advance_deadline_rebuild();
  release_written();
  SyncJob job;
  job.id = next_job_++;
  job.done = std::move(done);
  if (!failed_.empty()) {
    job.error = failed_;
  } else if (dirty_) {
    if (!batch_appended_.empty()) job.started_ns = steady_ns();
    const bool wait_for_disk = batch_needs_disk();
    if (auto written = write_buffer(); !written) {
      job.error = "the message store cannot commit: " + written.error().message;
      rollback();
      ++stats_.unavailable;
    } else {
      for (auto& [id, segment] : segments_) {
        if (segment.submitted == segment.written && !(wait_for_disk && segment.unsynced)) continue;
        segment.submitted = segment.written;
        if (!wait_for_disk) {
          segment.unsynced = true;
          continue;
        }
        segment.unsynced = false;
        job.fds.push_back(segment.fd);
        job.written.emplace_back(id, segment.written);
        ++segment.syncing;
        // Its first write, with the header, is in this job or made before it.
        if (segment.spare_id != 0 && !segment.rename_queued) queue_rename(job, id, segment);
      }
      dirty_ = false;
      batch_appended_.clear();
      batch_moved_.clear();
      batch_removes_ = 0;
    }
  }
  for (const DirectWrite& write : in_flight_) {
    if (write.number > queued_writes_) job.writes.push_back(write);
  }
  queued_writes_ = next_write_ - 1;
  // A segment taken from a spare whose records this commit does not sync (Remove records alone) is
  // synced and named by a job of its own behind it, which no commit waits for: reclaiming, which
  // waits for the name, then goes on without waiting for a commit that holds messages.
  SyncJob side;
  if (job.error.empty()) {
    for (std::uint64_t id : unnamed_) {
      Segment& segment = segments_.at(id);
      if (segment.rename_queued || segment.written == log::kHeaderSize || segment.submitted != segment.written) {
        continue;
      }
      side.fds.push_back(segment.fd);
      side.written.emplace_back(id, segment.written);
      ++segment.syncing;
      segment.unsynced = false;
      queue_rename(side, id, segment);
    }
  }
  // A job with nothing to sync completes at once if nothing is ahead of it (its writes, if any, go
  // to the thread in the side job); otherwise it goes through the queue too, since completions keep
  // the order of commits.
  if (job.fds.empty() && job.error.empty() && finished_job_ + 1 == job.id) {
    side.writes = std::move(job.writes);
    if (!side.writes.empty() || !side.renames.empty()) queue_job(std::move(side));
    finish(std::move(job), {});
    return;
  }
  queue_job(std::move(job));
  if (!side.renames.empty()) queue_job(std::move(side));
}

void LogStore::queue_job(SyncJob job) {
  {
    std::lock_guard lock(sync_mutex_);
    sync_jobs_.push_back(std::move(job));
  }
  sync_wake_.notify_one();
}

void LogStore::run_syncs() {
  std::string write_failure;
  for (;;) {
    std::deque<SyncJob> jobs;
    {
      std::unique_lock lock(sync_mutex_);
      sync_wake_.wait(lock, [this] { return sync_stop_ || !sync_jobs_.empty(); });
      if (sync_jobs_.empty()) return;  // stopping, and every job is done
      jobs.swap(sync_jobs_);
    }
    // Group commit across the jobs that queued while the last sync ran: their writes are made in
    // order, then one fdatasync per file covers all of them.
    std::vector<const DirectWrite*> writes;
    std::vector<int> fds;
    bool report = !write_failure.empty();
    for (const SyncJob& job : jobs) {
      for (const DirectWrite& write : job.writes) writes.push_back(&write);
      if (job.error.empty()) fds.insert(fds.end(), job.fds.begin(), job.fds.end());
      report = report || job.id != 0 || !job.renames.empty() || !job.retired.empty();
    }
    // What the file holds is unknown after a failed write: no later write is made either.
    if (write_failure.empty()) write_failure = make_writes(writes);
    std::string failure = write_failure;
    report = report || !failure.empty();
    if (!report) continue;  // writes alone, made: nobody waits for them
    std::sort(fds.begin(), fds.end());
    fds.erase(std::unique(fds.begin(), fds.end()), fds.end());
    for (int fd : fds) {
      if (!failure.empty()) break;
      if (!sync_file(fd)) {
        failure = std::string("the message store cannot commit: syncing the message log: ") + errno_text();
        break;
      }
    }
    // Spares take their segments' names only now that the headers in them are on disk.
    bool directory = false;
    for (const SyncJob& job : jobs) {
      if (!job.error.empty()) continue;
      directory = directory || !job.retired.empty();
      for (const SyncJob::Rename& rename : job.renames) {
        if (!failure.empty()) break;
        if (::rename(rename.from.c_str(), rename.to.c_str()) != 0) {
          failure = "the message store cannot commit: renaming " + rename.from + " to " + rename.to + ": " +
                    errno_text();
        }
        directory = true;
      }
    }
    if (failure.empty() && directory && sync_ != SyncMode::Off && ::fsync(dir_fd_) != 0) {
      failure = std::string("the message store cannot commit: syncing the message log's directory: ") + errno_text();
    }
    post_([this, jobs = std::move(jobs), failure]() mutable {
      for (SyncJob& job : jobs) {
        Result<void, Error> result;
        if (!job.error.empty()) {
          result = make_error(job.error);
        } else if (!failure.empty()) {
          result = make_error(failure);
        }
        finish(std::move(job), std::move(result));
      }
    });
  }
}

std::string LogStore::make_writes(const std::vector<const DirectWrite*>& writes) {
  // Each write to a file starts on the block the one before it ended in: a run of them is one
  // pwritev, the one device request it would be anyway, with each write but the last giving the
  // blocks up to where the next starts.
  std::vector<iovec> iov;
  std::size_t i = 0;
  while (i < writes.size()) {
    const DirectWrite& first = *writes[i];
    iov.assign(1, iovec{const_cast<std::uint8_t*>(first.data->data()), first.data->size()});
    std::size_t end = i + 1;
    for (; end < writes.size(); ++end) {
      const DirectWrite& before = *writes[end - 1];
      const DirectWrite& next = *writes[end];
      if (next.fd != before.fd || next.offset != align_down(before.records_end)) break;
      iov.back().iov_len = static_cast<std::size_t>(next.offset - before.offset);
      if (iov.back().iov_len == 0) iov.pop_back();
      iov.push_back(iovec{const_cast<std::uint8_t*>(next.data->data()), next.data->size()});
    }
    if (!write_at(first.fd, iov, first.offset)) {
      return std::string("the message store cannot commit: writing the message log: ") + errno_text();
    }
    writes_done_.store(writes[end - 1]->number, std::memory_order_release);
    i = end;
  }
  return {};
}

void LogStore::finish(SyncJob job, Result<void, Error> result) {
  release_written();
  for (const auto& [id, written] : job.written) {
    auto it = segments_.find(id);
    if (it == segments_.end()) continue;
    --it->second.syncing;
    if (result) it->second.synced = std::max(it->second.synced, written);
  }
  // A sync that succeeds after one that failed proves nothing about the data the failure lost.
  if (result && !failed_.empty()) result = make_error(failed_);
  if (!result && job.error.empty()) fail_store(result.error().message);
  const bool named = result && (!job.renames.empty() || !job.retired.empty());
  if (named) {
    for (const SyncJob::Rename& rename : job.renames) {
      if (auto it = segments_.find(rename.segment); it != segments_.end()) it->second.spare_id = 0;
      unnamed_.erase(std::remove(unnamed_.begin(), unnamed_.end(), rename.segment), unnamed_.end());
    }
    for (std::uint64_t id : job.retired) retired_unsynced_.erase(id);
    reclaim_due_ = true;
  }
  if (job.id == 0) {  // no commit waits for it: the one its writes belong to completed before
    if (named) reclaim();
    return;
  }
  finished_job_ = job.id;
  if (result && job.started_ns != 0) stats_.commit_times.observe(steady_ns() - job.started_ns);
  if (result) after_commit();
  job.done(std::move(result));
}

void LogStore::fail_store(const std::string& why) {
  if (!failed_.empty()) return;
  failed_ = why + "; the message store refuses new messages until the router restarts";
  spdlog::error("{}", failed_);
  ++stats_.unavailable;
}

void LogStore::rollback() {
  // The batch's records are cut off the files; its messages were never acknowledged to anyone. Its
  // direct writes not yet handed to the sync thread (a roll-over's, of the full segment) are never
  // made.
  while (!in_flight_.empty() && in_flight_.back().number > queued_writes_) in_flight_.pop_back();
  next_write_ = queued_writes_ + 1;
  buffer_.resize(buffer_base_);
  for (auto& [id, segment] : segments_) {
    if (segment.written == segment.submitted) continue;
    if (::ftruncate(segment.fd, static_cast<off_t>(segment.submitted)) != 0) {
      spdlog::error("message log: truncating {} after a failed commit: {}", segment_path(id), errno_text());
    }
    segment.written = segment.submitted;
    segment.in_file = std::min(segment.in_file, segment.written);
  }
  for (const Moved& m : batch_moved_) {
    auto inbox = inboxes_.find(m.recipient);
    if (inbox == inboxes_.end()) continue;
    auto it = inbox->second.messages.find(m.sequence);
    if (it == inbox->second.messages.end()) continue;
    const std::uint64_t record = log::append_record_size(it->second.payload_size);
    Segment& from = segments_.at(it->second.segment);
    from.live -= 1;
    from.live_bytes -= record;
    Segment& back = segments_.at(m.segment);
    back.live += 1;
    back.live_bytes += record;
    relocate(inbox->second, m.sequence, it->second, m.segment, m.offset);
  }
  for (const Appended& a : batch_appended_) {
    auto inbox = inboxes_.find(a.recipient);
    if (inbox == inboxes_.end()) continue;
    auto it = inbox->second.messages.find(a.sequence);
    if (it == inbox->second.messages.end()) continue;
    if (it->second.message_id != 0) seen_.forget(it->second.sender, it->second.message_id);
    const std::uint64_t bytes = it->second.payload_size;
    release(a.recipient, it, it->second.segment);
    --stats_.stored;
    --stats_.held_messages;
    stats_.held_bytes -= bytes;
  }
  // Its Remove records are cut off too; their messages stay released, as when a full disk leaves
  // one unwritten, and would come back after a restart.
  stats_.removals_unwritten += batch_removes_;
  batch_appended_.clear();
  batch_moved_.clear();
  batch_removes_ = 0;
  dirty_ = false;
}

void LogStore::reclaim() {
  reclaim_due_ = false;
  release_written();
  // The newest named segment's header holds the floor of sequences: while a newer one is still
  // under a spare's name, a crash would find only the named segments, so that one stays.
  std::uint64_t floor_holder = 0;
  if (!unnamed_.empty()) {
    for (const auto& [id, segment] : segments_) {
      if (segment.spare_id == 0) floor_holder = id;
    }
  }
  for (;;) {
    std::vector<std::uint64_t> doomed;
    for (const auto& [id, segment] : segments_) {
      if (id == active_ || segment.live != 0) continue;
      if (segment.spare_id != 0 || id == floor_holder) {
        reclaim_due_ = true;  // once it has its name, or a newer one has
        continue;
      }
      if (segment.syncing != 0 || segment.compacting || segment.in_file < segment.written ||
          segment.retire_after_job > finished_job_) {
        reclaim_due_ = true;  // try again after the next commit
        continue;
      }
      bool needed = std::any_of(segment.cancels_into.begin(), segment.cancels_into.end(), [this](std::uint64_t older) {
        return segments_.count(older) != 0 || retired_unsynced_.count(older) != 0;
      });
      if (!needed) doomed.push_back(id);
    }
    if (doomed.empty()) return;
    for (std::uint64_t id : doomed) retire(id);
    // A segment that cancels records of these may go only once their deletion (or renaming to a
    // spare, which recovery does not read) is on disk too;
    // otherwise a crash could bring back messages whose removal it alone recorded. With the sync
    // thread, the directory's fsync (0.2–1 ms) is its job, which no commit waits for, and those
    // segments are looked at again once it completes.
    if (sync_ == SyncMode::Off) continue;
    if (!retires_on_thread()) {
      ::fsync(dir_fd_);
      continue;
    }
    retired_unsynced_.insert(doomed.begin(), doomed.end());
    SyncJob directory;
    directory.retired = std::move(doomed);
    queue_job(std::move(directory));
    return;
  }
}

void LogStore::compact() {
  if (closing_ || compaction_running_) return;
  std::optional<CompactionPlan> plan = plan_compaction();
  if (!plan) return;
  if (!post_) {
    apply_compaction(*plan, read_held(*plan));
    return;
  }
  // The previous reader has posted its completion, its last act, so this join is at most a moment.
  if (compact_reader_.joinable()) compact_reader_.join();
  segments_.at(plan->segment).compacting = true;
  compaction_running_ = true;
  compact_reader_ = std::thread([this, plan = std::move(*plan), alive = std::weak_ptr<bool>(alive_)]() mutable {
    CompactionRead read = read_held(plan);
    post_([this, plan = std::move(plan), read = std::move(read), alive] {
      if (alive.expired()) return;
      finish_compaction(plan, read);
    });
  });
}

std::optional<LogStore::CompactionPlan> LogStore::plan_compaction() {
  // A step at a time, each in a commit of its own: copied at once, an offline backlog of 14 MiB
  // stopped the loop for over 10 ms 8–11 times in 10 s and held up every message of its commit for
  // the write (p99 of 16 KiB messages paced beside it 13–28 ms instead of 2.4–3 ms). A segment is
  // planned once, and its steps are taken off that plan; a record acknowledged meanwhile is read
  // but not copied.
  if (compaction_rest_) {
    auto it = segments_.find(compaction_rest_->plan.segment);
    if (it == segments_.end() || it->second.damaged) compaction_rest_.reset();
  }
  if (!compaction_rest_) {
    std::optional<CompactionPlan> plan = plan_segment();
    if (!plan) return std::nullopt;
    spdlog::debug("message log: planning the compaction of {}: {} held records", segment_path(plan->segment),
                  plan->held.size());
    compaction_rest_ = CompactionRest{std::move(*plan), 0};
  }
  CompactionRest& rest = *compaction_rest_;
  const auto& held = rest.plan.held;
  std::uint64_t planned = 0;
  std::size_t end = rest.next;
  while (end < held.size() && (end == rest.next || planned + held[end].size <= options_.compaction_step_bytes)) {
    planned += held[end++].size;
  }
  // The copies stay within the active segment's size, and so within the disk space it has taken.
  if (end_offset() + planned + log::kEndMarkSize > options_.segment_bytes) return std::nullopt;
  CompactionPlan step{rest.plan.segment, rest.plan.fd, rest.plan.salt, {}};
  step.held.assign(held.begin() + static_cast<std::ptrdiff_t>(rest.next),
                   held.begin() + static_cast<std::ptrdiff_t>(end));
  rest.next = end;
  if (rest.next == held.size()) compaction_rest_.reset();
  return step;
}

std::optional<LogStore::CompactionPlan> LogStore::plan_segment() {
  // One mostly empty old segment at a time: its held messages are copied to the active segment
  // with their sequence, and the old file goes at a later commit, once the copies are on disk.
  const std::int64_t now_ms = steady_clock_ms();
  for (auto& [id, segment] : segments_) {
    // A segment closed a moment ago holds what is in flight to recipients that are online, and
    // acknowledged in a moment: only one a whole segment of traffic behind the active one, and
    // closed for a while, holds messages that are waiting. (At 16 KiB × 64 pairs a whole segment
    // is in flight, and copying each forward a moment before its acknowledgements cost a quarter
    // of the throughput.)
    if (id + 1 >= active_) break;
    if (segment.live == 0 || segment.in_file < segment.written || segment.damaged) continue;
    // Found at start-up: closed long ago, even when the steady clock (time since boot) is young.
    if (segment.closed_at_ms != 0 && now_ms - segment.closed_at_ms < options_.compact_after_ms) continue;
    if (segment.written < options_.segment_bytes / 2 || segment.live_bytes * 4 > segment.written) continue;
    // Its first step must fit in the active segment (rather than plan it for nothing).
    const std::uint64_t step = std::min<std::uint64_t>(segment.live_bytes, options_.compaction_step_bytes);
    if (end_offset() + step + log::kEndMarkSize > options_.segment_bytes) return std::nullopt;
    CompactionPlan plan{id, segment.fd, segment.salt, {}};
    // What was appended here has sequences from this segment's base to the next one's; what
    // compaction copied here has earlier ones, within the range of the inbox's copies. A whole scan
    // of the index took 9–16 ms with a backlog of 1.2 M messages elsewhere.
    const std::uint64_t base = segment.base_sequence;
    auto next = segments_.upper_bound(id);
    const std::uint64_t next_base = next == segments_.end() ? UINT64_MAX : next->second.base_sequence;
    const auto take = [&plan](core::ClientId recipient, std::uint64_t sequence, const Entry& entry) {
      if (entry.segment == plan.segment) {
        plan.held.push_back({entry.offset, log::append_record_size(entry.payload_size), recipient, sequence});
      }
    };
    for (auto& [recipient, inbox] : inboxes_) {
      if (inbox.copied > 0) {
        for (auto it = inbox.messages.upper_bound(inbox.copies_from - 1);
             it != inbox.messages.end() && it->first <= inbox.copies_to && it->first < base; ++it) {
          take(recipient, it->first, it->second);
        }
      }
      for (auto it = inbox.messages.upper_bound(base == 0 ? 0 : base - 1);
           it != inbox.messages.end() && it->first < next_base; ++it) {
        take(recipient, it->first, it->second);
      }
    }
    std::sort(plan.held.begin(), plan.held.end(), [](const auto& x, const auto& y) { return x.offset < y.offset; });
    return plan;
  }
  return std::nullopt;
}

LogStore::CompactionRead LogStore::read_held(const CompactionPlan& plan) {
  // The held records are read where they are, in runs of nearby ones: a segment holds under a
  // quarter of live bytes here, and after direct writes what is read comes from the disk, which
  // page faults on a mapping would read a few pages at a time.
  constexpr std::uint64_t kMaxGap = 256 * 1024;      // bytes of other records a read may take in
  constexpr std::uint64_t kMaxRun = 8 * 1024 * 1024;  // bytes one read may cover
  const auto& held = plan.held;
  CompactionRead read;
  read.at.assign(held.size(), CompactionRead::kUnread);
  std::vector<std::uint8_t> run;
  for (std::size_t i = 0; i < held.size();) {
    std::size_t end = i + 1;
    std::uint64_t run_end = held[i].offset + held[i].size;
    while (end < held.size() && held[end].offset - run_end <= kMaxGap &&
           held[end].offset + held[end].size - held[i].offset <= kMaxRun) {
      run_end = held[end].offset + held[end].size;
      ++end;
    }
    run.resize(static_cast<std::size_t>(run_end - held[i].offset));
    if (!read_at(plan.fd, run.data(), run.size(), held[i].offset)) {
      read.read_error = fmt::format("reading {} bytes at {}: {}", run.size(), held[i].offset, errno_text());
      return read;
    }
    read.bytes_read += run.size();
    for (std::size_t k = i; k < end; ++k) {
      const std::span<const std::uint8_t> record = std::span(run).subspan(held[k].offset - held[i].offset, held[k].size);
      log::DecodeResult decoded = log::decode(record, plan.salt);
      if (decoded.status != log::DecodeStatus::Ok || decoded.record.type != log::RecordType::Append ||
          decoded.record.append.sequence != held[k].sequence) {
        read.at[k] = CompactionRead::kDamaged;
        continue;
      }
      read.at[k] = read.records.size();
      read.records.insert(read.records.end(), record.begin(), record.end());
    }
    i = end;
  }
  return read;
}

void LogStore::finish_compaction(const CompactionPlan& plan, const CompactionRead& read) {
  // The pin kept the segment; if its messages were all acknowledged meanwhile, reclaim_due_ is set
  // (release set it, and reclaim sets it again for a pinned segment), so it goes at the next commit.
  compaction_running_ = false;
  segments_.at(plan.segment).compacting = false;
  if (failed_.empty()) apply_compaction(plan, read);
}

void LogStore::apply_compaction(const CompactionPlan& plan, const CompactionRead& read) {
  Segment& segment = segments_.at(plan.segment);
  bool copied = false;
  std::size_t count = 0;
  for (std::size_t k = 0; k < plan.held.size(); ++k) {
    const auto& [offset, size, recipient, sequence] = plan.held[k];
    if (read.at[k] == CompactionRead::kUnread) break;
    // Acknowledged or expired while it was read: nothing to copy.
    auto inbox = inboxes_.find(recipient);
    if (inbox == inboxes_.end()) continue;
    auto held = inbox->second.messages.find(sequence);
    if (held == inbox->second.messages.end()) continue;
    Entry& entry = held->second;
    if (entry.segment != plan.segment || entry.offset != offset) continue;
    if (read.at[k] == CompactionRead::kDamaged) {
      // Damage since start-up read the record whole: the message stays where it is, and so does
      // the segment, for good.
      spdlog::error("message log: {}: the record of message {} at offset {} no longer reads back; not compacted",
                    segment_path(plan.segment), sequence, offset);
      segment.damaged = true;
      continue;
    }
    // The active segment may have filled since the plan was made: the rest waits for the next one.
    if (end_offset() + size + log::kEndMarkSize > options_.segment_bytes) break;
    batch_moved_.push_back(Moved{recipient, sequence, plan.segment, offset});
    Segment& active = segments_.at(active_);
    relocate(inbox->second, sequence, entry, active_, end_offset());
    const std::size_t copy = buffer_.size();
    buffer_.resize(copy + size);
    std::memcpy(buffer_.data() + copy, read.records.data() + read.at[k], size);
    log::resalt(std::span(buffer_).subspan(copy, size), plan.salt, active_salt_);
    segment.live -= 1;
    segment.live_bytes -= size;
    active.live += 1;
    active.live_bytes += size;
    stats_.compacted_bytes += size;
    copied = true;
    ++count;
  }
  if (!read.read_error.empty()) {
    spdlog::error("message log: {} to compact it: {}", segment_path(plan.segment), read.read_error);
    segment.damaged = true;
  }
  spdlog::debug("message log: compacting {}: {} of {} held records copied forward, {} bytes read",
                segment_path(plan.segment), count, plan.held.size(), read.bytes_read);
  // The copies are in the next commit; the segment may go once that one is durable.
  if (copied) {
    ++stats_.compactions;
    segment.retire_after_job = next_job_;
    dirty_ = true;
    reclaim_due_ = true;
  }
}

}  // namespace debra::store
