// SPDX-License-Identifier: MIT
#include "util/log.h"

#include <gtest/gtest.h>

namespace debra::log {
namespace {

using namespace std::chrono_literals;

TEST(RateLimit, LetsOneLineThroughPerIntervalAndCountsTheRest) {
  RateLimit limit(1s);
  const RateLimit::Clock::time_point t0{std::chrono::hours(1)};
  std::uint64_t held_back = 99;
  ASSERT_TRUE(limit.allow(t0, &held_back));
  EXPECT_EQ(held_back, 0u);
  for (int i = 0; i < 5; ++i) EXPECT_FALSE(limit.allow(t0 + 100ms * i, &held_back));
  ASSERT_TRUE(limit.allow(t0 + 1s, &held_back));
  EXPECT_EQ(held_back, 5u);  // reported with the next line, then cleared
  EXPECT_FALSE(limit.allow(t0 + 1500ms, &held_back));
  ASSERT_TRUE(limit.allow(t0 + 10s, &held_back));
  EXPECT_EQ(held_back, 1u);
  ASSERT_TRUE(limit.allow(t0 + 11s, &held_back));
  EXPECT_EQ(held_back, 0u);
}

}  // namespace
}  // namespace debra::log
