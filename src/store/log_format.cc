// SPDX-License-Identifier: MIT
#include "store/log_format.h"

#include <algorithm>
#include <bit>
#include <cstring>
#include <type_traits>

#include "util/crc32c.h"

namespace debra::store::log {
namespace {

// Little-endian on disk, whatever the host: a data directory may move between machines.
template <typename T>
std::uint8_t* put(std::uint8_t* p, T v) {
  static_assert(std::is_unsigned_v<T>);
  if constexpr (std::endian::native == std::endian::little) {
    std::memcpy(p, &v, sizeof v);
  } else {
    for (std::size_t i = 0; i < sizeof v; ++i) p[i] = static_cast<std::uint8_t>(v >> (8 * i));
  }
  return p + sizeof v;
}
template <typename T>
T get(const std::uint8_t* p) {
  static_assert(std::is_unsigned_v<T>);
  T v = 0;
  if constexpr (std::endian::native == std::endian::little) {
    std::memcpy(&v, p, sizeof v);
  } else {
    for (std::size_t i = sizeof v; i-- > 0;) v = static_cast<T>((v << 8) | p[i]);
  }
  return v;
}
std::uint32_t get_u32(const std::uint8_t* p) { return get<std::uint32_t>(p); }
std::uint64_t get_u64(const std::uint8_t* p) { return get<std::uint64_t>(p); }
std::int32_t get_i32(const std::uint8_t* p) { return static_cast<std::int32_t>(get_u32(p)); }
std::int64_t get_i64(const std::uint8_t* p) { return static_cast<std::int64_t>(get_u64(p)); }

std::uint32_t crc_of(const std::uint8_t* data, std::size_t size) { return util::crc32c({data, size}); }

// Writes the frame (length, salted CRC) in front of the body that follows it in out.
template <typename Out>
void seal(Out& out, std::size_t frame_start, std::uint32_t salt) {
  std::uint8_t* frame = out.data() + frame_start;
  const std::size_t body_size = out.size() - frame_start - kFrameSize;
  put(frame, static_cast<std::uint32_t>(body_size));
  put(frame + 4, crc_of(frame + kFrameSize, body_size) ^ salt);
}

}  // namespace

std::size_t append_record_size(std::size_t payload_size) { return kPayloadOffset + payload_size; }

template <typename Out>
void encode_header(const Header& header, Out& out) {
  const std::size_t start = out.size();
  out.resize(start + kHeaderSize);
  std::uint8_t* p = std::copy(std::begin(kMagic), std::end(kMagic), out.data() + start);
  p = put(p, kVersion);
  p = put(p, header.salt);
  put(p, header.base_sequence);
}

std::optional<Header> decode_header(std::span<const std::uint8_t> bytes) {
  if (bytes.size() < kHeaderSize) return std::nullopt;
  if (std::memcmp(bytes.data(), kMagic, sizeof kMagic) != 0) return std::nullopt;
  const std::uint32_t version = get_u32(bytes.data() + 8);
  if (version < kOldestReadableVersion || version > kVersion) return std::nullopt;
  Header header{get_u64(bytes.data() + 16), get_u32(bytes.data() + 12)};
  if (version == 1 && header.salt != 0) return std::nullopt;
  if (header.base_sequence == 0 || header.base_sequence >= kSequenceLimit) return std::nullopt;
  return header;
}

template <typename Out>
void encode(const AppendRecord& record, std::uint32_t salt, Out& out) {
  const std::size_t start = out.size();
  // Grow geometrically: reserve() to the exact size would reallocate and copy the whole batch on
  // every record once a batch outgrows the largest before it, quadratic in the batch.
  const std::size_t needed = start + append_record_size(record.payload.size());
  if (needed > out.capacity()) out.reserve(std::max(needed, 2 * out.capacity()));
  out.resize(start + kPayloadOffset);
  std::uint8_t* p = out.data() + start + kFrameSize;
  *p++ = static_cast<std::uint8_t>(RecordType::Append);
  p = put(p, record.sequence);
  p = put(p, static_cast<std::uint32_t>(record.recipient));
  p = put(p, static_cast<std::uint32_t>(record.sender));
  p = put(p, record.message_id);
  *p++ = record.receipt_requested ? 1 : 0;
  p = put(p, static_cast<std::uint64_t>(record.expires_at_ms));
  put(p, static_cast<std::uint64_t>(record.accepted_at_ms));
  if (!record.payload.empty()) {
    out.resize(out.size() + record.payload.size());
    std::memcpy(out.data() + start + kPayloadOffset, record.payload.data(), record.payload.size());
  }
  seal(out, start, salt);
}

template <typename Out>
void encode(const RemoveRecord& record, std::uint32_t salt, Out& out) {
  const std::size_t start = out.size();
  out.resize(start + kRemoveRecordSize);
  std::uint8_t* p = out.data() + start + kFrameSize;
  *p++ = static_cast<std::uint8_t>(RecordType::Remove);
  p = put(p, record.sequence);
  put(p, static_cast<std::uint32_t>(record.recipient));
  seal(out, start, salt);
}

template <typename Out>
void encode_end_mark(std::uint32_t salt, Out& out) {
  const std::size_t start = out.size();
  out.resize(start + kEndMarkSize);
  put(put(out.data() + start, std::uint32_t{0}), ~salt);
}

// The two kinds of buffer the encoders write into: plain vectors (tests, tools, a segment's header)
// and the store's batches.
#define DEBRA_LOG_ENCODERS(Out)                                                  \
  template void encode_header<Out>(const Header&, Out&);                        \
  template void encode<Out>(const AppendRecord&, std::uint32_t, Out&);          \
  template void encode<Out>(const RemoveRecord&, std::uint32_t, Out&);          \
  template void encode_end_mark<Out>(std::uint32_t, Out&);
DEBRA_LOG_ENCODERS(std::vector<std::uint8_t>)
DEBRA_LOG_ENCODERS(Bytes)
#undef DEBRA_LOG_ENCODERS

void resalt(std::span<std::uint8_t> record, std::uint32_t from, std::uint32_t to) {
  std::uint8_t* crc = record.data() + 4;
  put(crc, get_u32(crc) ^ from ^ to);
}

DecodeResult decode(std::span<const std::uint8_t> bytes, std::uint32_t salt) {
  DecodeResult result;
  if (bytes.size() < kFrameSize) {
    result.status = DecodeStatus::Truncated;
    return result;
  }
  const std::uint32_t length = get_u32(bytes.data());
  const std::uint32_t crc = get_u32(bytes.data() + 4);
  if (length == 0 && crc == ~salt) {
    result.status = DecodeStatus::End;
    return result;
  }
  if (length == 0 || length > kMaxBodySize) {
    result.status = DecodeStatus::Corrupt;
    return result;
  }
  if (bytes.size() - kFrameSize < length) {
    result.status = DecodeStatus::Truncated;
    return result;
  }
  const std::uint8_t* body = bytes.data() + kFrameSize;
  if (const std::uint32_t written_with = crc_of(body, length) ^ crc; written_with != salt) {
    // Damage gives any value; a value below the salt is, but for a chance of salt in 2^32, a
    // record that an earlier life of the file wrote whole.
    result.status = written_with < salt ? DecodeStatus::Stale : DecodeStatus::Corrupt;
    return result;
  }
  Decoded& d = result.record;
  d.size = kFrameSize + length;
  const std::uint8_t* p = body + 1;
  switch (static_cast<RecordType>(body[0])) {
    case RecordType::Append:
      if (length < 1 + kAppendFixedSize) break;
      d.type = RecordType::Append;
      d.append.sequence = get_u64(p);
      d.append.recipient = get_i32(p + 8);
      d.append.sender = get_i32(p + 12);
      d.append.message_id = get_u64(p + 16);
      if (p[24] > 1) break;
      d.append.receipt_requested = p[24] == 1;
      d.append.expires_at_ms = get_i64(p + 25);
      d.append.accepted_at_ms = get_i64(p + 33);
      d.append.payload = std::span<const std::uint8_t>(p + kAppendFixedSize, length - 1 - kAppendFixedSize);
      if (d.append.sequence == 0 || d.append.sequence >= kSequenceLimit) break;
      if (!core::is_valid_client_id(d.append.recipient)) break;
      return result;
    case RecordType::Remove:
      if (length != 1 + kRemoveFixedSize) break;
      d.type = RecordType::Remove;
      d.remove.sequence = get_u64(p);
      d.remove.recipient = get_i32(p + 8);
      if (d.remove.sequence == 0 || d.remove.sequence >= kSequenceLimit) break;
      return result;
  }
  result.status = DecodeStatus::Corrupt;
  return result;
}

}  // namespace debra::store::log
