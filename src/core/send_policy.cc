// SPDX-License-Identifier: MIT
#include "core/send_policy.h"

#include <algorithm>
#include <cassert>
#include <limits>

namespace debra::core {

IdSet IdSet::of(std::vector<IdRange> ranges) {
  std::sort(ranges.begin(), ranges.end(), [](const IdRange& a, const IdRange& b) { return a.lo < b.lo; });
  IdSet set;
  for (const IdRange& range : ranges) {
    assert(range.lo <= range.hi);
    // Touching ranges merge too (1-5 and 6-9 are 1-9), so each set has exactly one representation
    // and two sets are equal exactly when they hold the same ids. Widened: hi + 1 may overflow.
    if (!set.ranges_.empty() && static_cast<std::int64_t>(range.lo) <= std::int64_t{set.ranges_.back().hi} + 1) {
      set.ranges_.back().hi = std::max(set.ranges_.back().hi, range.hi);
    } else {
      set.ranges_.push_back(range);
    }
  }
  return set;
}

IdSet IdSet::all() { return of({IdRange{1, std::numeric_limits<ClientId>::max()}}); }

bool IdSet::contains(ClientId id) const {
  // The first range that ends at or after id is the only one that can hold it.
  auto it = std::lower_bound(ranges_.begin(), ranges_.end(), id, [](const IdRange& r, ClientId v) { return r.hi < v; });
  return it != ranges_.end() && it->lo <= id;
}

PolicyDecision SendPolicy::decide(ClientId sender, ClientId recipient) const {
  if (!is_valid_client_id(sender) || !is_valid_client_id(recipient)) return PolicyDecision{false, 0};
  for (std::size_t i = 0; i < rules.size(); ++i) {
    const PolicyRule& rule = rules[i];
    if (rule.from.contains(sender) && rule.to.contains(recipient)) return PolicyDecision{rule.allow, i + 1};
  }
  return PolicyDecision{default_allow, 0};
}

std::string SendPolicy::refusal_reason(ClientId sender, ClientId recipient, const PolicyDecision& decision) const {
  std::string reason = "id " + std::to_string(sender) + " may not send to " + std::to_string(recipient) + " (policy " +
                       (source.empty() ? std::string("without a name") : source) + ", ";
  if (decision.rule == 0) {
    reason += default_allow ? "ids outside 1..2147483647" : "default deny";
  } else {
    reason += "rule " + std::to_string(decision.rule);
    const PolicyRule& rule = rules[decision.rule - 1];
    if (rule.line != 0) reason += " at line " + std::to_string(rule.line);
  }
  return reason + ")";
}

}  // namespace debra::core
