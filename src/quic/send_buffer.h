// SPDX-License-Identifier: MIT
#pragma once

#include <ngtcp2/ngtcp2.h>

#include <algorithm>
#include <array>
#include <bit>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <deque>
#include <memory>
#include <span>
#include <vector>

namespace debra::quic {

// SendBuffer: the bytes of one stream from the first unacknowledged one to the last written. Offsets
// are absolute stream offsets.
//
// ngtcp2 keeps pointers into stream data until the peer acknowledges it, so bytes never move once
// written: they are copied into fixed chunks that are freed whole once acknowledged. Copying (rather
// than holding each writer's buffer) keeps a stream's bytes contiguous, so ngtcp2 builds every STREAM
// frame, retransmissions included, from at most two vectors. That matters on 0.12: a frame with more
// vectors than its frame-chain pool slot holds is allocated apart from the pool, and splitting such a
// frame on retransmission returns it to the pool it never came from, leaking it (measured with
// LeakSanitizer under retransmissions).
class SendBuffer {
 public:
  // Copies bytes to the end of the stream.
  void append(std::span<const std::uint8_t> bytes) {
    while (!bytes.empty()) {
      if (chunks_.empty() || chunks_.back().size == chunks_.back().capacity) add_chunk();
      Chunk& chunk = chunks_.back();
      std::size_t n = std::min(bytes.size(), chunk.capacity - chunk.size);
      std::memcpy(chunk.data.get() + chunk.size, bytes.data(), n);
      chunk.size += n;
      end_ += n;
      bytes = bytes.subspan(n);
    }
  }

  // Fills up to max vectors with unsent bytes, starting at the send offset. Returns the count.
  std::size_t unsent(ngtcp2_vec* out, std::size_t max) const {
    std::size_t n = 0;
    std::uint64_t chunk_start = send_chunk_start_;
    for (std::size_t i = send_chunk_; i < chunks_.size() && n < max; ++i) {
      const Chunk& chunk = chunks_[i];
      std::size_t skip = static_cast<std::size_t>(sent_ - std::min(sent_, chunk_start));
      if (skip < chunk.size) {
        out[n].base = chunk.data.get() + skip;
        out[n].len = chunk.size - skip;
        ++n;
      }
      chunk_start += chunk.capacity;
    }
    return n;
  }

  void mark_sent(std::size_t bytes) {
    sent_ += bytes;
    while (send_chunk_ < chunks_.size() && send_chunk_start_ + chunks_[send_chunk_].capacity <= sent_) {
      send_chunk_start_ += chunks_[send_chunk_].capacity;
      ++send_chunk_;
    }
  }

  // The peer acknowledged everything below offset: free whole chunks below it.
  void acknowledge(std::uint64_t offset) {
    if (offset > acked_) acked_ = offset;
    while (!chunks_.empty() && chunks_.front().size == chunks_.front().capacity &&
           base_ + chunks_.front().capacity <= acked_) {
      base_ += chunks_.front().capacity;
      chunks_.pop_front();
      --send_chunk_;  // acknowledged bytes were sent, so the send position lies past this chunk
    }
    if (acked_ == end_ && !chunks_.empty()) {
      // Everything is acknowledged: an idle stream holds no memory. The next write starts a chunk
      // at the current end.
      chunks_.clear();
      base_ = send_chunk_start_ = end_;
      send_chunk_ = 0;
    }
  }

  bool has_unsent() const { return sent_ < end_; }
  std::uint64_t acknowledged() const { return acked_; }
  // Written and not yet acknowledged.
  std::uint64_t unacked_bytes() const { return end_ - acked_; }
  std::uint64_t end() const { return end_; }

 private:
  // Chunks grow with the backlog, so an idle-ish connection costs little and a busy one few
  // allocations. Every chunk is larger than a packet, so a packet's STREAM frame spans at most two.
  static constexpr std::size_t kMinChunk = 4 * 1024;
  static constexpr std::size_t kMaxChunk = 256 * 1024;

  // ChunkCache: a thread's acknowledged chunks of the smaller sizes, kept for the next chunk that
  // thread's streams need. A stream that empties after every burst (most do) otherwise paid a malloc
  // and a free per burst, and the frees let glibc hand the top of the thread's heap back to the
  // kernel only to fault it in again: heap trimming, page faults and the allocator were 8 % of the
  // load tool's CPU at 64 B x 64 pairs (docs/benchmarks.md). Bounded, so a thread that once held
  // many backlogs does not keep their memory.
  class ChunkCache {
   public:
    static constexpr std::size_t kMaxCapacity = 16 * 1024;
    static constexpr std::size_t kMaxBytes = 1024 * 1024;

    ChunkCache() { alive_ = true; }
    ~ChunkCache() {
      alive_ = false;
      for (auto& list : free_) {
        for (std::uint8_t* bytes : list) delete[] bytes;
      }
    }
    ChunkCache(const ChunkCache&) = delete;
    ChunkCache& operator=(const ChunkCache&) = delete;

    // The calling thread's cache; null once the thread is tearing its objects down.
    static ChunkCache* of_this_thread() {
      thread_local ChunkCache cache;
      return alive_ ? &cache : nullptr;
    }

    std::uint8_t* take(std::size_t capacity) {
      if (capacity <= kMaxCapacity) {
        auto& list = free_[slot(capacity)];
        if (!list.empty()) {
          std::uint8_t* bytes = list.back();
          list.pop_back();
          bytes_ -= capacity;
          return bytes;
        }
      }
      return new std::uint8_t[capacity];  // left uninitialised: every byte is written before it is sent
    }

    void give(std::uint8_t* bytes, std::size_t capacity) {
      if (capacity > kMaxCapacity || bytes_ + capacity > kMaxBytes) {
        delete[] bytes;
        return;
      }
      free_[slot(capacity)].push_back(bytes);
      bytes_ += capacity;
    }

   private:
    // Capacities are powers of two from kMinChunk up.
    static std::size_t slot(std::size_t capacity) {
      return static_cast<std::size_t>(std::countr_zero(capacity / kMinChunk));
    }
    static inline thread_local bool alive_ = false;
    std::array<std::vector<std::uint8_t*>, 3> free_;  // 4, 8 and 16 KiB
    std::size_t bytes_ = 0;
  };

  // Hands a chunk's bytes back to the cache of the thread that lets go of it.
  struct ChunkRelease {
    std::size_t capacity = 0;
    void operator()(std::uint8_t* bytes) const noexcept {
      if (ChunkCache* cache = ChunkCache::of_this_thread()) {
        cache->give(bytes, capacity);
      } else {
        delete[] bytes;
      }
    }
  };

  struct Chunk {
    std::unique_ptr<std::uint8_t[], ChunkRelease> data;
    std::size_t capacity = 0;
    std::size_t size = 0;
  };

  static_assert(ChunkCache::kMaxCapacity == kMinChunk << 2, "one free list per size: 4, 8 and 16 KiB");

  void add_chunk() {
    std::size_t capacity = std::clamp<std::size_t>(std::bit_ceil(static_cast<std::size_t>(unacked_bytes()) + 1),
                                                   kMinChunk, kMaxChunk);
    ChunkCache* cache = ChunkCache::of_this_thread();
    std::uint8_t* bytes = cache != nullptr ? cache->take(capacity) : new std::uint8_t[capacity];
    chunks_.push_back(Chunk{std::unique_ptr<std::uint8_t[], ChunkRelease>(bytes, ChunkRelease{capacity}), capacity, 0});
  }

  std::deque<Chunk> chunks_;
  std::uint64_t base_ = 0;              // offset of chunks_.front()'s first byte
  std::size_t send_chunk_ = 0;          // index of the chunk holding offset sent_
  std::uint64_t send_chunk_start_ = 0;  // offset of that chunk's first byte
  std::uint64_t acked_ = 0;
  std::uint64_t sent_ = 0;
  std::uint64_t end_ = 0;
};

}  // namespace debra::quic
