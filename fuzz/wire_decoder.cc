// SPDX-License-Identifier: MIT
//
// libFuzzer target for the wire decoder: the input is a stream of bytes as a peer could send it. It
// is fed to a FrameReader in pieces whose sizes derive from the input itself, every frame the reader
// yields is decoded and every field read, and the whole input is also decoded as one body.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <span>
#include <vector>

#include "wire/codec.h"

namespace {

using debra::wire::ErrorCode;
using debra::wire::FrameReader;
using debra::wire::Message;

// Reads every field so that the sanitizers see any access outside the buffer.
std::uint64_t touch(const Message& m) {
  std::uint64_t sum = static_cast<std::uint64_t>(m.type) + static_cast<std::uint64_t>(m.client_id) +
                      static_cast<std::uint64_t>(m.for_client) + m.message_id +
                      static_cast<std::uint64_t>(m.status) + static_cast<std::uint64_t>(m.error_code) +
                      m.protocol_version + m.max_frame_size + m.delivery_lanes;
  for (std::uint8_t b : m.payload) sum += b;
  for (char c : m.reason) sum += static_cast<unsigned char>(c);
  for (char c : m.token) sum += static_cast<unsigned char>(c);
  sum += debra::wire::to_string(m.type).size() + debra::wire::to_string(m.status).size() +
         debra::wire::to_string(m.error_code).size();
  return sum;
}

bool within(std::span<const std::uint8_t> inner, std::span<const std::uint8_t> outer) {
  if (inner.empty()) return true;
  return inner.data() >= outer.data() && inner.data() + inner.size() <= outer.data() + outer.size();
}

// A decoded message must only point into the body it was decoded from: the reader's buffer holds
// other frames around it, where a stray read would go unnoticed by AddressSanitizer.
void check_message(const Message& m, std::span<const std::uint8_t> body) {
  const auto reason = std::span<const std::uint8_t>(reinterpret_cast<const std::uint8_t*>(m.reason.data()),
                                                    m.reason.size());
  if (!within(m.payload, body) || !within(reason, body)) std::abort();
}

// Decodes body in place (as the router does) and from an exactly sized copy, where AddressSanitizer
// catches any read past its end. Both must agree.
std::uint64_t decode_both(std::span<const std::uint8_t> body) {
  std::uint64_t sum = 0;
  auto in_place = debra::wire::decode(body);
  if (in_place.has_value()) {
    check_message(*in_place, body);
    sum += touch(*in_place);
  } else if (in_place.error().code != ErrorCode::ProtocolError || in_place.error().reason.empty()) {
    std::abort();
  }
  std::vector<std::uint8_t> copy(body.begin(), body.end());
  auto copied = debra::wire::decode(copy);
  if (copied.has_value() != in_place.has_value()) std::abort();
  if (copied.has_value()) sum += touch(*copied);
  return sum;
}

// xorshift64: a cheap deterministic source of piece sizes.
std::uint64_t next_random(std::uint64_t& state) {
  state ^= state << 13;
  state ^= state >> 7;
  state ^= state << 17;
  return state;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::span<const std::uint8_t> input(data, size);
  volatile std::uint64_t sink = 0;

  std::uint64_t state = 0x9E3779B97F4A7C15ULL ^ size;
  for (std::size_t i = 0; i < size && i < 4; ++i) state = state * 131 + data[i] + 1;
  if (state == 0) state = 1;
  // Alternate between the default limit and a small one so that FrameTooLarge is reachable too.
  const std::uint32_t max_frame_size =
      (state & 1) != 0 ? debra::wire::kDefaultMaxFrameSize : static_cast<std::uint32_t>(state % 2048);
  FrameReader reader(max_frame_size);

  std::size_t offset = 0;
  std::size_t yielded_bytes = 0;
  bool faulted = false;
  while (offset < size && !faulted) {
    const std::size_t piece = std::min<std::size_t>(1 + next_random(state) % 64, size - offset);
    reader.append(input.subspan(offset, piece));
    offset += piece;
    for (;;) {
      auto next = reader.next();
      if (!next.has_value()) {
        if (next.error().code != ErrorCode::FrameTooLarge) std::abort();
        faulted = true;
        break;
      }
      if (!next->has_value()) break;
      const auto body = **next;
      if (body.size() > max_frame_size) std::abort();
      yielded_bytes += debra::wire::kLengthPrefixSize + body.size();
      sink = sink + decode_both(body);
    }
  }
  // Every byte is either part of a yielded frame or still buffered, unless the reader faulted.
  if (!faulted && yielded_bytes + reader.buffered() != size) std::abort();

  sink = sink + decode_both(input);
  (void)sink;
  return 0;
}
