// SPDX-License-Identifier: MIT
//
// libFuzzer target for the send policy parser (debra-server --policy FILE). The input is the file's
// text. Properties checked besides memory safety:
// - a refusal names its place: "fuzz.toml:LINE:COLUMN: what", LINE and COLUMN at least 1;
// - a parsed policy is well-formed: every id set is non-empty, sorted, disjoint and inside
//   1..2147483647, and every rule has its line;
// - its decisions match a plain reference evaluation (linear scan, first match wins) at every range
//   boundary and around it, and ids outside 1..2147483647 are never allowed;
// - written back out as TOML and parsed again, it is the same policy.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <limits>
#include <string>
#include <string_view>
#include <vector>

#include "policy/policy_file.h"

namespace {

using debra::core::ClientId;
using debra::core::IdSet;
using debra::core::SendPolicy;

constexpr ClientId kMax = std::numeric_limits<ClientId>::max();

void check(bool condition) {
  if (!condition) std::abort();
}

// "fuzz.toml:LINE:COLUMN: what", with LINE, COLUMN >= 1 and a non-empty what.
void check_error_names_its_place(const std::string& message) {
  constexpr std::string_view kSource = "fuzz.toml:";
  check(message.rfind(kSource, 0) == 0);
  std::size_t at = kSource.size();
  for (int field = 0; field < 2; ++field) {
    std::size_t digits = 0;
    std::uint64_t value = 0;
    while (at < message.size() && message[at] >= '0' && message[at] <= '9' && digits < 12) {
      value = value * 10 + static_cast<std::uint64_t>(message[at] - '0');
      ++at;
      ++digits;
    }
    check(digits > 0 && value >= 1 && at < message.size() && message[at] == ':');
    ++at;
  }
  check(message.size() > at + 1 && message[at] == ' ');
}

void check_well_formed(const IdSet& set) {
  check(!set.empty());
  std::int64_t previous_hi = -1;
  for (const auto& range : set.ranges()) {
    check(range.lo >= 1 && range.lo <= range.hi);
    check(std::int64_t{range.lo} > previous_hi + 1);  // disjoint and not touching: one form per set
    previous_hi = range.hi;
  }
}

bool reference_contains(const IdSet& set, std::int64_t id) {
  for (const auto& range : set.ranges()) {
    if (id >= range.lo && id <= range.hi) return true;
  }
  return false;
}

bool reference_allows(const SendPolicy& policy, std::int64_t from, std::int64_t to) {
  if (from < 1 || from > kMax || to < 1 || to > kMax) return false;
  for (const auto& rule : policy.rules) {
    if (reference_contains(rule.from, from) && reference_contains(rule.to, to)) return rule.allow;
  }
  return policy.default_allow;
}

std::string to_toml(const SendPolicy& policy) {
  auto ids = [](const IdSet& set) {
    std::string out = "[";
    for (const auto& range : set.ranges()) {
      if (out.size() > 1) out += ", ";
      out += "\"" + std::to_string(range.lo) + "-" + std::to_string(range.hi) + "\"";
    }
    return out + "]";
  };
  std::string out = std::string("default = \"") + (policy.default_allow ? "allow" : "deny") + "\"\n";
  for (const auto& rule : policy.rules) {
    out += "[[rule]]\nfrom = " + ids(rule.from) + "\nto = " + ids(rule.to) + "\naction = \"" +
           (rule.allow ? "allow" : "deny") + "\"\n";
  }
  return out;
}

// Ids worth asking about: every range boundary and its neighbours, and the edges of the id space.
std::vector<std::int64_t> probe_ids(const SendPolicy& policy) {
  std::vector<std::int64_t> ids{std::numeric_limits<ClientId>::min(), -1, 0, 1, 2, kMax - 1, kMax};
  constexpr std::size_t kMaxProbes = 96;
  for (const auto& rule : policy.rules) {
    for (const IdSet* set : {&rule.from, &rule.to}) {
      for (const auto& range : set->ranges()) {
        if (ids.size() >= kMaxProbes) return ids;
        for (std::int64_t id : {std::int64_t{range.lo} - 1, std::int64_t{range.lo}, std::int64_t{range.hi},
                                std::int64_t{range.hi} + 1}) {
          if (id >= std::numeric_limits<ClientId>::min() && id <= kMax) ids.push_back(id);
        }
      }
    }
  }
  return ids;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  std::string_view text(reinterpret_cast<const char*>(data), size);
  auto parsed = debra::policy::parse_policy(text, "fuzz.toml");
  if (!parsed) {
    check_error_names_its_place(parsed.error().message);
    return 0;
  }
  const SendPolicy& policy = *parsed;
  check(policy.source == "fuzz.toml");
  for (const auto& rule : policy.rules) {
    check_well_formed(rule.from);
    check_well_formed(rule.to);
    check(rule.line >= 1);
  }

  const auto ids = probe_ids(policy);
  for (std::int64_t from : ids) {
    for (std::int64_t to : ids) {
      auto sender = static_cast<ClientId>(from);
      auto recipient = static_cast<ClientId>(to);
      auto decision = policy.decide(sender, recipient);
      check(decision.allowed == reference_allows(policy, from, to));
      check(decision.rule <= policy.rules.size());
      if (decision.rule != 0) check(policy.rules[decision.rule - 1].allow == decision.allowed);
      if (!decision.allowed) {
        const std::string reason = policy.refusal_reason(sender, recipient, decision);
        check(reason.rfind("id " + std::to_string(from) + " may not send to " + std::to_string(to) +
                               " (policy fuzz.toml, ",
                           0) == 0);
      }
    }
  }

  auto again = debra::policy::parse_policy(to_toml(policy), "fuzz.toml");
  check(again.has_value());
  check(again->default_allow == policy.default_allow && again->rules.size() == policy.rules.size());
  for (std::size_t i = 0; i < policy.rules.size(); ++i) {
    check(again->rules[i].from == policy.rules[i].from);
    check(again->rules[i].to == policy.rules[i].to);
    check(again->rules[i].allow == policy.rules[i].allow);
  }
  return 0;
}
