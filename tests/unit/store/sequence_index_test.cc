// SPDX-License-Identifier: MIT
#include "store/sequence_index.h"

#include <gtest/gtest.h>

#include <map>
#include <random>
#include <vector>

namespace debra::store {
namespace {

using Index = SequenceIndex<int>;

std::vector<std::pair<std::uint64_t, int>> contents(const Index& index) {
  std::vector<std::pair<std::uint64_t, int>> out;
  for (const auto& [sequence, value] : index) out.emplace_back(sequence, value);
  return out;
}

std::vector<std::pair<std::uint64_t, int>> contents(const std::map<std::uint64_t, int>& map) {
  return {map.begin(), map.end()};
}

TEST(SequenceIndex, KeepsSequenceOrderWhateverTheInsertionOrder) {
  Index index;
  for (std::uint64_t s : {5, 9, 2, 7, 1}) EXPECT_TRUE(index.emplace(s, static_cast<int>(s * 10)).second);
  EXPECT_FALSE(index.emplace(7, 0).second) << "a sequence held already is not replaced";
  EXPECT_EQ(contents(index), (std::vector<std::pair<std::uint64_t, int>>{{1, 10}, {2, 20}, {5, 50}, {7, 70}, {9, 90}}));
  EXPECT_EQ(index.size(), 5u);
  EXPECT_EQ(index.find(7)->second, 70);
  EXPECT_EQ(index.find(6), index.end());
  EXPECT_EQ(index.upper_bound(5)->first, 7u);
  EXPECT_EQ(index.upper_bound(0)->first, 1u);
  EXPECT_EQ(index.upper_bound(9), index.end());
}

TEST(SequenceIndex, AnErasedSequenceIsGoneFromEveryLookupAndMayComeBack) {
  Index index;
  for (std::uint64_t s = 1; s <= 5; ++s) index.emplace(s, static_cast<int>(s));
  index.erase(index.find(3));
  EXPECT_EQ(index.find(3), index.end());
  EXPECT_EQ(index.upper_bound(2)->first, 4u) << "the hole is skipped";
  EXPECT_EQ(index.size(), 4u);
  // Recovery releases a message and holds its copy under the same sequence.
  auto [it, inserted] = index.emplace(3, 33);
  EXPECT_TRUE(inserted);
  EXPECT_EQ(it->second, 33);
  EXPECT_EQ(contents(index), (std::vector<std::pair<std::uint64_t, int>>{{1, 1}, {2, 2}, {3, 33}, {4, 4}, {5, 5}}));
  for (std::uint64_t s = 1; s <= 5; ++s) index.erase(index.find(s));
  EXPECT_TRUE(index.empty());
  EXPECT_EQ(index.begin(), index.end());
}

// The same operations on the index and on std::map, the behaviour it replaces: appends at the
// back, acknowledgements mostly from the front and sometimes anywhere, occasional inserts below the
// top and lookups of every kind, across enough operations to pass through many compactions.
TEST(SequenceIndex, BehavesLikeAMapUnderAQueuesTraffic) {
  Index index;
  std::map<std::uint64_t, int> model;
  std::mt19937_64 random(20261206);
  std::uint64_t next = 1;
  for (int step = 0; step < 200000; ++step) {
    const auto roll = random() % 100;
    if (roll < 45 || model.empty()) {
      next += 1 + random() % 3;  // a recipient's sequences have gaps: others' messages
      const int value = static_cast<int>(random() % 1000);
      ASSERT_EQ(index.emplace(next, value).second, model.emplace(next, value).second);
    } else if (roll < 85) {
      // An acknowledgement: the oldest, or one a little further in.
      auto from = model.begin();
      std::advance(from, static_cast<long>(random() % std::min<std::size_t>(model.size(), roll < 75 ? 1 : 8)));
      auto it = index.find(from->first);
      ASSERT_NE(it, index.end());
      ASSERT_EQ(it->second, from->second);
      index.erase(it);
      model.erase(from);
    } else if (roll < 88) {
      // Recovery's case: a sequence below the top, fresh or held already.
      const std::uint64_t s = next > 1 ? 1 + random() % (next - 1) : 1;
      ASSERT_EQ(index.emplace(s, -1).second, model.emplace(s, -1).second) << "sequence " << s;
    } else if (roll < 94) {
      const std::uint64_t s = random() % (next + 2);
      auto it = index.find(s);
      auto expected = model.find(s);
      ASSERT_EQ(it == index.end(), expected == model.end()) << "sequence " << s;
      if (expected != model.end()) {
        ASSERT_EQ(it->second, expected->second);
      }
    } else {
      const std::uint64_t s = random() % (next + 2);
      auto it = index.upper_bound(s);
      auto expected = model.upper_bound(s);
      ASSERT_EQ(it == index.end(), expected == model.end()) << "after " << s;
      if (expected != model.end()) {
        ASSERT_EQ(it->first, expected->first);
      }
    }
    ASSERT_EQ(index.size(), model.size());
    if (step % 997 == 0) {
      ASSERT_EQ(contents(index), contents(model)) << "step " << step;
    }
  }
  ASSERT_EQ(contents(index), contents(model));
}

}  // namespace
}  // namespace debra::store
