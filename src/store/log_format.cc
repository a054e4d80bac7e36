// SPDX-License-Identifier: MIT
#include "store/log_format.h"

#include <algorithm>
#include <cstring>

#include "util/crc32c.h"

namespace debra::store::log {
namespace {

// Little-endian on disk, whatever the host: a data directory may move between machines.
void put_u32(std::vector<std::uint8_t>& out, std::uint32_t v) {
  for (int i = 0; i < 4; ++i) out.push_back(static_cast<std::uint8_t>(v >> (8 * i)));
}
void put_u64(std::vector<std::uint8_t>& out, std::uint64_t v) {
  for (int i = 0; i < 8; ++i) out.push_back(static_cast<std::uint8_t>(v >> (8 * i)));
}
std::uint32_t get_u32(const std::uint8_t* p) {
  std::uint32_t v = 0;
  for (int i = 3; i >= 0; --i) v = (v << 8) | p[i];
  return v;
}
std::uint64_t get_u64(const std::uint8_t* p) {
  std::uint64_t v = 0;
  for (int i = 7; i >= 0; --i) v = (v << 8) | p[i];
  return v;
}
std::int32_t get_i32(const std::uint8_t* p) { return static_cast<std::int32_t>(get_u32(p)); }
std::int64_t get_i64(const std::uint8_t* p) { return static_cast<std::int64_t>(get_u64(p)); }

std::uint32_t crc_of(const std::uint8_t* data, std::size_t size) { return util::crc32c({data, size}); }

// Writes the frame around a body appended to out from body_start on.
void seal(std::vector<std::uint8_t>& out, std::size_t frame_start) {
  const std::size_t body_start = frame_start + kFrameSize;
  const std::size_t body_size = out.size() - body_start;
  const std::uint32_t length = static_cast<std::uint32_t>(body_size);
  const std::uint32_t crc = crc_of(out.data() + body_start, body_size);
  for (int i = 0; i < 4; ++i) {
    out[frame_start + i] = static_cast<std::uint8_t>(length >> (8 * i));
    out[frame_start + 4 + i] = static_cast<std::uint8_t>(crc >> (8 * i));
  }
}

}  // namespace

std::size_t append_record_size(std::size_t payload_size) { return kPayloadOffset + payload_size; }

void encode_header(std::uint64_t base_sequence, std::vector<std::uint8_t>& out) {
  out.insert(out.end(), std::begin(kMagic), std::end(kMagic));
  put_u32(out, kVersion);
  put_u32(out, 0);
  put_u64(out, base_sequence);
}

std::optional<std::uint64_t> decode_header(std::span<const std::uint8_t> bytes) {
  if (bytes.size() < kHeaderSize) return std::nullopt;
  if (std::memcmp(bytes.data(), kMagic, sizeof kMagic) != 0) return std::nullopt;
  if (get_u32(bytes.data() + 8) != kVersion) return std::nullopt;
  const std::uint64_t base = get_u64(bytes.data() + 16);
  if (base == 0 || base >= kSequenceLimit) return std::nullopt;
  return base;
}

void encode(const AppendRecord& record, std::vector<std::uint8_t>& out) {
  const std::size_t start = out.size();
  // Grow geometrically: reserve() to the exact size would reallocate and copy the whole batch on
  // every record once a batch outgrows the largest before it, quadratic in the batch.
  const std::size_t needed = start + append_record_size(record.payload.size());
  if (needed > out.capacity()) out.reserve(std::max(needed, 2 * out.capacity()));
  out.resize(start + kFrameSize);
  out.push_back(static_cast<std::uint8_t>(RecordType::Append));
  put_u64(out, record.sequence);
  put_u32(out, static_cast<std::uint32_t>(record.recipient));
  put_u32(out, static_cast<std::uint32_t>(record.sender));
  put_u64(out, record.message_id);
  out.push_back(record.receipt_requested ? 1 : 0);
  put_u64(out, static_cast<std::uint64_t>(record.expires_at_ms));
  put_u64(out, static_cast<std::uint64_t>(record.accepted_at_ms));
  out.insert(out.end(), record.payload.begin(), record.payload.end());
  seal(out, start);
}

void encode(const RemoveRecord& record, std::vector<std::uint8_t>& out) {
  const std::size_t start = out.size();
  out.resize(start + kFrameSize);
  out.push_back(static_cast<std::uint8_t>(RecordType::Remove));
  put_u64(out, record.sequence);
  put_u32(out, static_cast<std::uint32_t>(record.recipient));
  seal(out, start);
}

DecodeResult decode(std::span<const std::uint8_t> bytes) {
  DecodeResult result;
  if (bytes.size() < kFrameSize) {
    result.status = DecodeStatus::Truncated;
    return result;
  }
  const std::uint32_t length = get_u32(bytes.data());
  const std::uint32_t crc = get_u32(bytes.data() + 4);
  if (length == 0 || length > kMaxBodySize) {
    result.status = DecodeStatus::Corrupt;
    return result;
  }
  if (bytes.size() - kFrameSize < length) {
    result.status = DecodeStatus::Truncated;
    return result;
  }
  const std::uint8_t* body = bytes.data() + kFrameSize;
  if (crc_of(body, length) != crc) {
    result.status = DecodeStatus::Corrupt;
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
