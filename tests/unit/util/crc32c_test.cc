// SPDX-License-Identifier: MIT
#include "util/crc32c.h"

#include <gtest/gtest.h>

#include <random>
#include <string_view>
#include <vector>

namespace debra::util {
namespace {

std::span<const std::uint8_t> bytes_of(std::string_view text) {
  return {reinterpret_cast<const std::uint8_t*>(text.data()), text.size()};
}

TEST(Crc32c, MatchesTheStandardCheckValues) {
  // RFC 3720, B.4, and the usual "123456789" check value of CRC-32C.
  EXPECT_EQ(crc32c(bytes_of("123456789")), 0xE3069283u);
  EXPECT_EQ(crc32c_portable(bytes_of("123456789")), 0xE3069283u);
  std::vector<std::uint8_t> zeros(32, 0x00), ones(32, 0xFF);
  EXPECT_EQ(crc32c(zeros), 0x8A9136AAu);
  EXPECT_EQ(crc32c(ones), 0x62A8AB43u);
  EXPECT_EQ(crc32c({}), 0u);
}

TEST(Crc32c, TheFastAndPortableVersionsAgreeOnEveryLengthAndAlignment) {
  std::mt19937 rng(3);
  std::vector<std::uint8_t> data(300);
  for (auto& b : data) b = static_cast<std::uint8_t>(rng());
  for (std::size_t start = 0; start < 8; ++start) {
    for (std::size_t size = 0; start + size <= data.size(); size += 7) {
      std::span<const std::uint8_t> part(data.data() + start, size);
      ASSERT_EQ(crc32c(part), crc32c_portable(part)) << start << " " << size;
    }
  }
}

TEST(Crc32c, TheFastAndPortableVersionsAgreeOnLongInputsAroundEveryBlockBoundary) {
  // The fast version runs inputs of 768 bytes and more as three chains and joins them; these sizes
  // sit on and around the edges of its 3 x 256 and 3 x 2048 byte rounds, and a 16 KiB payload's.
  std::mt19937 rng(5);
  std::vector<std::uint8_t> data(70'000);
  for (auto& b : data) b = static_cast<std::uint8_t>(rng());
  std::vector<std::size_t> sizes;
  for (std::size_t edge : {768u, 2 * 768u, 6144u, 6144u + 768u, 2 * 6144u, 16384u, 16384u + 107u, 65536u}) {
    for (std::size_t size = edge - 9; size <= edge + 9; ++size) sizes.push_back(size);
  }
  for (int i = 0; i < 200; ++i) sizes.push_back(rng() % (data.size() - 8));
  for (std::size_t start = 0; start < 8; start += 3) {
    for (std::size_t size : sizes) {
      std::span<const std::uint8_t> part(data.data() + start, size);
      ASSERT_EQ(crc32c(part), crc32c_portable(part)) << start << " " << size;
    }
  }
  // A single flipped bit anywhere changes it (a join that dropped a chain would not notice some).
  std::span<std::uint8_t> whole(data.data(), 16384);
  const std::uint32_t before = crc32c(whole);
  for (std::size_t at : {0u, 2047u, 2048u, 4100u, 6143u, 6200u, 12300u, 16383u}) {
    whole[at] ^= 0x10;
    EXPECT_NE(crc32c(whole), before) << at;
    whole[at] ^= 0x10;
  }
}

}  // namespace
}  // namespace debra::util
