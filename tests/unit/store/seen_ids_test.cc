// SPDX-License-Identifier: MIT
#include "store/seen_ids.h"

#include <gtest/gtest.h>

#include <random>
#include <set>

namespace debra::store {
namespace {

TEST(SeenIds, ACountingSenderCostsOneRange) {
  SeenIds seen(100);
  for (std::uint64_t id = 1000; id < 2000; ++id) seen.add(7, id, id * 2, 0);
  EXPECT_EQ(seen.ranges(), 1u);
  EXPECT_EQ(seen.find(7, 1999), 3998u) << "the newest id knows its sequence";
  EXPECT_EQ(seen.find(7, 1500), 0u) << "an older one is seen, its sequence not kept";
  EXPECT_FALSE(seen.find(7, 999).has_value());
  EXPECT_FALSE(seen.find(7, 2000).has_value());
  EXPECT_FALSE(seen.find(8, 1500).has_value()) << "ids are per sender";
}

TEST(SeenIds, RangesMergeWhenTheGapCloses) {
  SeenIds seen(100);
  seen.add(1, 10, 1, 0);
  seen.add(1, 12, 2, 0);
  EXPECT_EQ(seen.ranges(), 2u);
  seen.add(1, 11, 3, 0);
  EXPECT_EQ(seen.ranges(), 1u);
  EXPECT_EQ(seen.find(1, 12), 2u);
  seen.add(1, 9, 4, 0);
  EXPECT_EQ(seen.ranges(), 1u);
  for (std::uint64_t id = 9; id <= 12; ++id) EXPECT_TRUE(seen.find(1, id).has_value()) << id;
}

TEST(SeenIds, ForgetSplitsARange) {
  SeenIds seen(100);
  for (std::uint64_t id = 1; id <= 5; ++id) seen.add(1, id, id, 0);
  seen.forget(1, 3);
  EXPECT_EQ(seen.ranges(), 2u);
  EXPECT_FALSE(seen.find(1, 3).has_value());
  EXPECT_TRUE(seen.find(1, 2).has_value());
  EXPECT_EQ(seen.find(1, 5), 5u);
  seen.forget(1, 5);
  EXPECT_FALSE(seen.find(1, 5).has_value());
  EXPECT_TRUE(seen.find(1, 4).has_value());
}

TEST(SeenIds, MatchesASetOfEveryIdUnderRandomUse) {
  std::mt19937_64 rng(5);
  SeenIds seen(1'000'000);
  std::set<std::pair<int, std::uint64_t>> model;
  for (int i = 0; i < 20'000; ++i) {
    const int sender = static_cast<int>(rng() % 3) + 1;
    const std::uint64_t id = rng() % 400;
    if (rng() % 5 == 0) {
      seen.forget(sender, id);
      model.erase({sender, id});
    } else {
      seen.add(sender, id, static_cast<std::uint64_t>(i) + 1, 0);
      model.insert({sender, id});
    }
    const std::uint64_t probe = rng() % 400;
    ASSERT_EQ(seen.find(sender, probe).has_value(), model.count({sender, probe}) == 1) << i;
  }
}

TEST(SeenIds, PruneForgetsRangesNotExtendedSince) {
  SeenIds seen(100);
  seen.add(1, 1, 1, 100);
  seen.add(2, 1, 2, 200);
  seen.prune(150);
  EXPECT_FALSE(seen.find(1, 1).has_value());
  EXPECT_TRUE(seen.find(2, 1).has_value());
  EXPECT_EQ(seen.ranges(), 1u);
}

TEST(SeenIds, TheBoundForgetsTheLeastRecentlyExtended) {
  SeenIds seen(8);
  for (std::uint64_t i = 1; i <= 100; ++i) {
    seen.add(1, i * 2, i, static_cast<std::int64_t>(i));
    ASSERT_LE(seen.ranges(), 8u);
  }
  EXPECT_TRUE(seen.find(1, 200).has_value());
  EXPECT_FALSE(seen.find(1, 2).has_value());
}

}  // namespace
}  // namespace debra::store
