// SPDX-License-Identifier: MIT
//
// The send policy file (debra-server --policy FILE): TOML that says which ids may send to which,
// parsed into the core's SendPolicy. The format is in docs/security.md ("Send policy"):
//
//   default = "deny"             # "allow" or "deny": what happens when no rule matches
//
//   [[rule]]                     # rules are tried in order; the first that matches decides
//   from = ["1-100", 250]        # an id, "lo-hi", "*" (every id), or a list of them
//   to = "*"
//   action = "allow"             # "allow" or "deny"
#pragma once

#include <string>
#include <string_view>

#include "core/send_policy.h"
#include "util/result.h"

namespace debra::policy {

// Parses policy text. source names it in error messages ("SOURCE:LINE:COLUMN: what is wrong") and
// is kept in the policy, so that refusal reasons name it too. Anything the format does not define
// is an error (unknown keys, wrong types, ids outside 1..2147483647, empty ranges or lists), so a
// typo never goes unnoticed.
Result<core::SendPolicy, Error> parse_policy(std::string_view text, std::string source);

// Reads the file at path and parses it, with path as its source.
Result<core::SendPolicy, Error> load_policy_file(const std::string& path);

// "3 rules, default deny": for log lines.
std::string describe(const core::SendPolicy& policy);

}  // namespace debra::policy
