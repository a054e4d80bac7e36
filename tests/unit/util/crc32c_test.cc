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

}  // namespace
}  // namespace debra::util
