// SPDX-License-Identifier: MIT
#pragma once

#include <ngtcp2/ngtcp2.h>

#include <cstddef>
#include <cstdint>
#include <algorithm>
#include <deque>
#include <memory>
#include <vector>

namespace debra::quic {

// SharedBytes: immutable bytes shared between the queues that send them. ngtcp2 keeps pointers into
// stream data until the peer acknowledges it, so queued bytes must never move: each write holds a
// reference to an immutable buffer instead of copying into one that could grow.
using SharedBytes = std::shared_ptr<const std::vector<std::uint8_t>>;

// SendBuffer: the bytes of one stream from the first unacknowledged one to the last written, as a
// queue of shared chunks. Offsets are absolute stream offsets.
class SendBuffer {
 public:
  void append(SharedBytes bytes) {
    if (bytes->empty()) return;
    end_ += bytes->size();
    chunks_.push_back(std::move(bytes));
  }

  // Fills up to max vectors with unsent bytes, starting at the send offset. Returns the count.
  std::size_t unsent(ngtcp2_vec* out, std::size_t max) const {
    std::size_t n = 0;
    std::uint64_t chunk_start = send_chunk_start_;
    for (std::size_t i = send_chunk_; i < chunks_.size() && n < max; ++i) {
      const auto& chunk = chunks_[i];
      std::size_t skip = static_cast<std::size_t>(sent_ - std::min(sent_, chunk_start));
      out[n].base = const_cast<std::uint8_t*>(chunk->data() + skip);
      out[n].len = chunk->size() - skip;
      ++n;
      chunk_start += chunk->size();
    }
    return n;
  }

  void mark_sent(std::size_t bytes) {
    sent_ += bytes;
    while (send_chunk_ < chunks_.size() && send_chunk_start_ + chunks_[send_chunk_]->size() <= sent_) {
      send_chunk_start_ += chunks_[send_chunk_]->size();
      ++send_chunk_;
    }
  }

  // The peer acknowledged everything below offset: release whole chunks below it.
  void acknowledge(std::uint64_t offset) {
    if (offset > acked_) acked_ = offset;
    while (!chunks_.empty() && base_ + chunks_.front()->size() <= acked_) {
      base_ += chunks_.front()->size();
      chunks_.pop_front();
      --send_chunk_;  // acknowledged bytes were sent, so the send position lies past this chunk
    }
  }

  bool has_unsent() const { return sent_ < end_; }
  std::uint64_t acknowledged() const { return acked_; }
  // Written and not yet acknowledged.
  std::uint64_t unacked_bytes() const { return end_ - acked_; }
  std::uint64_t end() const { return end_; }
  bool all_sent() const { return sent_ == end_; }

 private:
  std::deque<SharedBytes> chunks_;
  std::uint64_t base_ = 0;   // offset of chunks_.front()'s first byte
  std::size_t send_chunk_ = 0;          // index of the chunk holding offset sent_
  std::uint64_t send_chunk_start_ = 0;  // offset of that chunk's first byte
  std::uint64_t acked_ = 0;
  std::uint64_t sent_ = 0;
  std::uint64_t end_ = 0;
};

}  // namespace debra::quic
