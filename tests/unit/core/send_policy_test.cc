// SPDX-License-Identifier: MIT
#include "core/send_policy.h"

#include <gtest/gtest.h>

#include <limits>
#include <vector>

namespace debra::core {
namespace {

constexpr ClientId kMax = std::numeric_limits<ClientId>::max();

TEST(IdSet, MergesOverlappingAndTouchingRangesIntoOneForm) {
  IdSet set = IdSet::of({{20, 30}, {1, 5}, {6, 9}, {25, 40}, {100, 100}, {3, 4}});
  EXPECT_EQ(set.ranges(), (std::vector<IdRange>{{1, 9}, {20, 40}, {100, 100}}));
  // The same ids listed another way make an equal set.
  EXPECT_EQ(set, IdSet::of({{100, 100}, {1, 9}, {20, 24}, {25, 40}}));
  EXPECT_TRUE(IdSet::of({}).empty());
  EXPECT_EQ(IdSet::all().ranges(), (std::vector<IdRange>{{1, kMax}}));
  // A range ending at the largest id merges without overflowing.
  EXPECT_EQ(IdSet::of({{kMax, kMax}, {kMax - 5, kMax}}).ranges(), (std::vector<IdRange>{{kMax - 5, kMax}}));
}

TEST(IdSet, ContainsExactlyItsIdsAtEveryBoundary) {
  IdSet set = IdSet::of({{1, 9}, {20, 40}, {100, 100}, {kMax, kMax}});
  for (ClientId id : {1, 5, 9, 20, 40, 100, kMax}) EXPECT_TRUE(set.contains(id)) << id;
  for (ClientId id : {0, -1, 10, 19, 41, 99, 101, kMax - 1, std::numeric_limits<ClientId>::min()}) {
    EXPECT_FALSE(set.contains(id)) << id;
  }
  EXPECT_FALSE(IdSet{}.contains(1));
  EXPECT_TRUE(IdSet::all().contains(1));
  EXPECT_TRUE(IdSet::all().contains(kMax));
  EXPECT_FALSE(IdSet::all().contains(0));
}

SendPolicy sample_policy() {
  SendPolicy policy;
  policy.default_allow = false;
  policy.source = "/etc/debra/policy.toml";
  policy.rules.push_back(PolicyRule{IdSet::of({{1, 100}, {250, 250}}), IdSet::of({{9, 9}}), false, 3});
  policy.rules.push_back(PolicyRule{IdSet::of({{1, 100}}), IdSet::all(), true, 8});
  policy.rules.push_back(PolicyRule{IdSet::all(), IdSet::of({{1, 1}}), true, 0});
  return policy;
}

TEST(SendPolicy, FirstMatchingRuleDecidesElseTheDefault) {
  SendPolicy policy = sample_policy();
  auto expect = [&](ClientId from, ClientId to, bool allowed, std::size_t rule) {
    PolicyDecision decision = policy.decide(from, to);
    EXPECT_EQ(decision.allowed, allowed) << from << " -> " << to;
    EXPECT_EQ(decision.rule, rule) << from << " -> " << to;
  };
  expect(5, 9, false, 1);     // rule 1 comes before the broader allow of rule 2
  expect(250, 9, false, 1);
  expect(5, 10, true, 2);
  expect(100, kMax, true, 2);
  expect(101, 9, false, 0);   // no rule: default deny
  expect(250, 10, false, 0);
  expect(101, 1, true, 3);
  expect(5, 1, true, 2);      // rule 2 matches first
}

TEST(SendPolicy, IdsOutOfRangeAreNeverAllowed) {
  SendPolicy allow_all;  // the default policy
  EXPECT_TRUE(allow_all.decide(1, kMax).allowed);
  for (ClientId bad : {0, -1, std::numeric_limits<ClientId>::min()}) {
    EXPECT_FALSE(allow_all.decide(bad, 1).allowed) << bad;
    EXPECT_FALSE(allow_all.decide(1, bad).allowed) << bad;
    EXPECT_FALSE(sample_policy().decide(bad, 1).allowed) << bad;
  }
  EXPECT_EQ(allow_all.refusal_reason(0, 1, allow_all.decide(0, 1)),
            "id 0 may not send to 1 (policy without a name, ids outside 1..2147483647)");
}

TEST(SendPolicy, RefusalReasonNamesTheSourceAndTheRule) {
  SendPolicy policy = sample_policy();
  EXPECT_EQ(policy.refusal_reason(5, 9, policy.decide(5, 9)),
            "id 5 may not send to 9 (policy /etc/debra/policy.toml, rule 1 at line 3)");
  EXPECT_EQ(policy.refusal_reason(101, 9, policy.decide(101, 9)),
            "id 101 may not send to 9 (policy /etc/debra/policy.toml, default deny)");
  policy.rules[0].line = 0;  // built without a source position
  EXPECT_EQ(policy.refusal_reason(5, 9, policy.decide(5, 9)),
            "id 5 may not send to 9 (policy /etc/debra/policy.toml, rule 1)");
}

}  // namespace
}  // namespace debra::core
