// SPDX-License-Identifier: MIT
//
// SendPolicy: which sender ids may send to which recipient ids. The router consults it for every
// message (Router::set_policy). It is a value: the policy file parser (src/policy) or a test builds
// it, and the core never reads a file.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "core/delivery.h"

namespace debra::core {

// IdRange: the ids lo..hi, both included.
struct IdRange {
  ClientId lo = 0;
  ClientId hi = 0;
  bool operator==(const IdRange&) const = default;
};

// IdSet: a set of client ids, kept as sorted, disjoint, non-adjacent ranges, so that membership is
// one binary search and never allocates.
class IdSet {
 public:
  IdSet() = default;  // the empty set
  // The set of the given ranges, which may overlap or touch; each must have lo <= hi.
  static IdSet of(std::vector<IdRange> ranges);
  // Every valid id, 1..2147483647.
  static IdSet all();

  bool contains(ClientId id) const;
  bool empty() const { return ranges_.empty(); }
  const std::vector<IdRange>& ranges() const { return ranges_; }
  bool operator==(const IdSet&) const = default;

 private:
  std::vector<IdRange> ranges_;
};

// PolicyRule: senders in `from` sending to recipients in `to` are allowed (allow) or refused.
struct PolicyRule {
  IdSet from;
  IdSet to;
  bool allow = false;
  std::uint32_t line = 0;  // where the rule starts in its source, for refusal reasons; 0: unknown
  bool operator==(const PolicyRule&) const = default;
};

// PolicyDecision: the verdict for one (sender, recipient) pair and what decided it.
struct PolicyDecision {
  bool allowed = true;
  std::size_t rule = 0;  // 1-based index of the first matching rule; 0: no rule matched, the default
};

// SendPolicy: ordered rules, the first whose `from` holds the sender and whose `to` holds the
// recipient decides; if none does, default_allow decides. A pair with an id outside 1..2^31-1 is
// never allowed. The default-constructed policy allows every valid pair (a router without --policy).
struct SendPolicy {
  bool default_allow = true;
  std::vector<PolicyRule> rules;
  // source: what the policy was read from (a file name), named in refusal reasons.
  std::string source;

  PolicyDecision decide(ClientId sender, ClientId recipient) const;
  // For the sender of a refused message: "id 5 may not send to 9 (policy FILE, rule 3 at line 12)".
  std::string refusal_reason(ClientId sender, ClientId recipient, const PolicyDecision& decision) const;
  bool operator==(const SendPolicy&) const = default;
};

}  // namespace debra::core
