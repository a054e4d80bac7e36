// SPDX-License-Identifier: MIT
#include "quic/send_buffer.h"

#include <gtest/gtest.h>

#include <array>
#include <cstdint>
#include <memory>
#include <random>
#include <thread>
#include <vector>

namespace debra::quic {
namespace {

std::vector<std::uint8_t> pattern(std::size_t size, std::uint8_t seed) {
  std::vector<std::uint8_t> bytes(size);
  for (std::size_t i = 0; i < size; ++i) bytes[i] = static_cast<std::uint8_t>(seed + i * 7);
  return bytes;
}

// Everything unsent, gathered from the vectors SendBuffer hands ngtcp2.
std::vector<std::uint8_t> unsent_bytes(const SendBuffer& buffer) {
  std::array<ngtcp2_vec, 16> vectors{};
  std::size_t count = buffer.unsent(vectors.data(), vectors.size());
  std::vector<std::uint8_t> out;
  for (std::size_t i = 0; i < count; ++i) out.insert(out.end(), vectors[i].base, vectors[i].base + vectors[i].len);
  return out;
}

TEST(SendBuffer, HandsOutEveryByteOnceInOrderAndKeepsItInPlaceUntilAcknowledged) {
  SendBuffer buffer;
  std::vector<std::uint8_t> stream;
  std::mt19937 random(5);
  std::uint64_t sent = 0;
  // What ngtcp2 was handed and may read again until the peer acknowledges it: stream offset,
  // where it is, and how long.
  struct Handed {
    std::uint64_t offset;
    const std::uint8_t* base;
    std::size_t len;
  };
  std::vector<Handed> handed;
  for (int round = 0; round < 2000; ++round) {
    auto bytes = pattern(random() % 3000, static_cast<std::uint8_t>(round));
    buffer.append(bytes);
    stream.insert(stream.end(), bytes.begin(), bytes.end());
    std::array<ngtcp2_vec, 4> vectors{};
    std::size_t count = buffer.unsent(vectors.data(), vectors.size());
    std::size_t n = std::min<std::size_t>(random() % 5000, buffer.end() - sent);
    std::size_t taken = 0;
    for (std::size_t i = 0; i < count && taken < n; ++i) {
      std::size_t len = std::min(vectors[i].len, n - taken);
      handed.push_back(Handed{sent + taken, vectors[i].base, len});
      taken += len;
    }
    buffer.mark_sent(taken);
    sent += taken;
    // The peer acknowledges some prefix of what was sent.
    buffer.acknowledge(buffer.acknowledged() + (sent - buffer.acknowledged()) * (random() % 3) / 2);
    std::erase_if(handed, [&](const Handed& h) { return h.offset + h.len <= buffer.acknowledged(); });
    for (const Handed& h : handed) {
      ASSERT_EQ(std::vector<std::uint8_t>(h.base, h.base + h.len),
                std::vector<std::uint8_t>(stream.begin() + static_cast<std::ptrdiff_t>(h.offset),
                                          stream.begin() + static_cast<std::ptrdiff_t>(h.offset + h.len)))
          << "round " << round << ", offset " << h.offset;
    }
    EXPECT_EQ(buffer.unacked_bytes(), buffer.end() - buffer.acknowledged());
  }
  EXPECT_EQ(unsent_bytes(buffer),
            std::vector<std::uint8_t>(stream.begin() + static_cast<std::ptrdiff_t>(sent), stream.end()));
}

TEST(SendBuffer, AnAcknowledgedStreamHoldsNoChunkAndTheNextOneReusesItsMemory) {
  const std::uint8_t* first = nullptr;
  {
    SendBuffer buffer;
    buffer.append(pattern(100, 1));
    std::array<ngtcp2_vec, 2> vectors{};
    ASSERT_EQ(buffer.unsent(vectors.data(), vectors.size()), 1u);
    first = vectors[0].base;
    buffer.mark_sent(100);
    buffer.acknowledge(100);
    EXPECT_EQ(buffer.unacked_bytes(), 0u);
    EXPECT_EQ(buffer.unsent(vectors.data(), vectors.size()), 0u);
    // Kept for the thread's streams: an allocation of the same size elsewhere does not get it, and
    // the stream written again after it was wholly acknowledged does.
    auto elsewhere = std::make_unique_for_overwrite<std::uint8_t[]>(4096);
    EXPECT_NE(elsewhere.get(), first);
    buffer.append(pattern(50, 2));
    ASSERT_EQ(buffer.unsent(vectors.data(), vectors.size()), 1u);
    EXPECT_EQ(vectors[0].base, first);
    EXPECT_EQ(unsent_bytes(buffer), pattern(50, 2));
  }
  // And so does a stream that is destroyed: its chunk goes to the next stream on this thread.
  SendBuffer other;
  other.append(pattern(10, 3));
  std::array<ngtcp2_vec, 1> vectors{};
  ASSERT_EQ(other.unsent(vectors.data(), vectors.size()), 1u);
  EXPECT_EQ(vectors[0].base, first);
  EXPECT_EQ(unsent_bytes(other), pattern(10, 3));
}

TEST(SendBuffer, ChunksLetGoOfOnAnotherThreadAreFreedThere) {
  // A buffer built on one thread and destroyed on another leaves nothing behind (LeakSanitizer and
  // valgrind check the memory): each thread's cache is freed when the thread ends.
  auto buffer = std::make_unique<SendBuffer>();
  buffer->append(pattern(40'000, 4));  // several chunks, one above the cached sizes
  std::thread([&] { buffer.reset(); }).join();
  EXPECT_EQ(buffer, nullptr);
}

}  // namespace
}  // namespace debra::quic
