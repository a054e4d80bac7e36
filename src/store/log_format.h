// SPDX-License-Identifier: MIT
//
// The on-disk format of the message log (docs/architecture.md, "The message log"). A segment file is
// a header followed by records; every record carries its own length and CRC, so a reader finds the
// end of what was written whole after a crash and never trusts a byte it cannot check.
#pragma once

#include <cstddef>
#include <cstdint>
#include <new>
#include <optional>
#include <span>
#include <utility>
#include <vector>

#include "core/delivery.h"

namespace debra::store::log {

// PageAligned: memory on a page boundary, which O_DIRECT writes need of their buffers. Bytes a
// vector grows by are left as they are, not zeroed: the encoders write every byte they add.
template <typename T>
struct PageAligned {
  using value_type = T;
  static constexpr std::align_val_t kAlignment{4096};
  PageAligned() = default;
  template <typename U>
  PageAligned(const PageAligned<U>&) {}
  T* allocate(std::size_t n) { return static_cast<T*>(::operator new(n * sizeof(T), kAlignment)); }
  void deallocate(T* p, std::size_t) { ::operator delete(p, kAlignment); }
  template <typename U>
  void construct(U* p) {
    ::new (static_cast<void*>(p)) U;
  }
  template <typename U, typename... Args>
  void construct(U* p, Args&&... args) {
    ::new (static_cast<void*>(p)) U(std::forward<Args>(args)...);
  }
  template <typename U>
  bool operator==(const PageAligned<U>&) const { return true; }
};
// Bytes: a batch of records as the store builds it, written to the file as it stands.
using Bytes = std::vector<std::uint8_t, PageAligned<std::uint8_t>>;

// Segment header: magic, format version, the file's salt, and the first sequence the segment may
// hold. The base sequence keeps sequences from being reused after every older segment was deleted.
//
// The salt is XORed into every record's CRC. A segment file is reused once its messages are gone
// (overwriting blocks the file already has makes each fdatasync cheaper than growing a file), and
// its new life gets a salt above every earlier one: the records of an earlier life still in the file
// past the new end then fail the CRC, and read as what they are (DecodeStatus::Stale). Version 1
// had no salt (the field was zero, as it is for a salt of 0), so it reads as a salt of 0; a
// router of version 1 refuses a version 2 file instead of taking its records for damage.
constexpr std::uint8_t kMagic[8] = {'d', 'e', 'b', 'r', 'a', 'l', 'o', 'g'};
constexpr std::uint32_t kVersion = 2;
constexpr std::uint32_t kOldestReadableVersion = 1;
constexpr std::size_t kHeaderSize = 8 + 4 + 4 + 8;

// Sequences are below 2^62: no router hands out that many, so a larger one is damage, and the next
// sequence after any valid one cannot wrap.
constexpr std::uint64_t kSequenceLimit = 1ULL << 62;

// Record frame: u32 body length, u32 CRC-32C of the body XOR the segment's salt, then the body,
// whose first byte is its type.
constexpr std::size_t kFrameSize = 8;
// A record body is at most this long: a payload larger than any frame the router accepts is corrupt.
constexpr std::size_t kMaxBodySize = 64 * 1024 * 1024;

enum class RecordType : std::uint8_t {
  Append = 1,  // a message accepted for a recipient (also written again when a segment is compacted)
  Remove = 2,  // the message with this sequence left the store: acknowledged or expired
};

// The fixed part of an Append body, after its type byte; the payload follows.
constexpr std::size_t kAppendFixedSize = 8 + 4 + 4 + 8 + 1 + 8 + 8;
constexpr std::size_t kRemoveFixedSize = 8 + 4;

struct AppendRecord {
  std::uint64_t sequence = 0;
  core::ClientId recipient = 0;
  core::ClientId sender = 0;
  std::uint64_t message_id = 0;
  bool receipt_requested = false;
  std::int64_t expires_at_ms = 0;
  std::int64_t accepted_at_ms = 0;  // when the router took it: for the dedupe window after a restart
  std::span<const std::uint8_t> payload;
};

struct RemoveRecord {
  std::uint64_t sequence = 0;
  core::ClientId recipient = 0;
};

// Where the payload of an Append sits, relative to the start of its record.
constexpr std::size_t kPayloadOffset = kFrameSize + 1 + kAppendFixedSize;

std::size_t append_record_size(std::size_t payload_size);
constexpr std::size_t kRemoveRecordSize = kFrameSize + 1 + kRemoveFixedSize;

struct Header {
  std::uint64_t base_sequence = 0;
  std::uint32_t salt = 0;
};

// The encoders append to out: a std::vector<std::uint8_t>, or Bytes.

// Always writes the current version.
template <typename Out>
void encode_header(const Header& header, Out& out);
// Nothing if bytes do not start with a valid header of a version this build reads.
std::optional<Header> decode_header(std::span<const std::uint8_t> bytes);

template <typename Out>
void encode(const AppendRecord& record, std::uint32_t salt, Out& out);
template <typename Out>
void encode(const RemoveRecord& record, std::uint32_t salt, Out& out);
// The end mark, written after every batch and overwritten by the next: a zero length and the
// salt's complement, so that neither a zeroed block nor an earlier life's mark reads as one. It
// ends the records of a reused file, whose earlier records may go on after it mid-record.
constexpr std::size_t kEndMarkSize = kFrameSize;
template <typename Out>
void encode_end_mark(std::uint32_t salt, Out& out);
// A whole record copied from a segment salted `from` into one salted `to` (compaction).
void resalt(std::span<std::uint8_t> record, std::uint32_t from, std::uint32_t to);

// Decoded: one record read from the front of a byte range. size is how many bytes it took.
struct Decoded {
  RecordType type = RecordType::Append;
  AppendRecord append;  // when type is Append; its payload points into the input
  RemoveRecord remove;  // when type is Remove
  std::size_t size = 0;
};

// DecodeStatus: why decoding stopped.
enum class DecodeStatus {
  Ok,
  Truncated,  // the bytes end inside the record: the tail of an interrupted write
  Corrupt,    // a length, CRC, type or field that cannot be right
  Stale,      // a whole record of an earlier life of the file (its CRC matches a lower salt)
  End,        // the end mark: nothing this life of the file wrote follows
};

struct DecodeResult {
  DecodeStatus status = DecodeStatus::Ok;
  Decoded record;
};

DecodeResult decode(std::span<const std::uint8_t> bytes, std::uint32_t salt);

}  // namespace debra::store::log
