// SPDX-License-Identifier: MIT
//
// toml++ as debra uses it (the send policy file, --config): every file that parses TOML includes
// this header instead of <toml++/toml.h>, so that all of them compile the same parser (it is
// header-only here, see cmake/Dependencies.cmake) with the same two defences against faults of
// Debian 12's toml++ 3.3 that fuzz/policy_parse found.
#pragma once

// 1. toml++ 3.3 states some of its parser's preconditions with TOML_ASSERT_ASSUME, and a file can
// break them ("[[[1]]]", "rule = [}]"): a failed assertion in debug builds, an assumption the
// optimiser may exploit in release builds. Where one does not hold, the parser goes on to report the
// input as malformed, so it is made a plain no-op, in every build the same, and the fuzzer runs
// (under ASan) what ships. The macro is redefined after toml++'s own preprocessor header and before
// the code that expands it.
#include <toml++/impl/preprocessor.h>
#undef TOML_ASSERT_ASSUME
#define TOML_ASSERT_ASSUME(expr) static_cast<void>(0)
#include <toml++/toml.h>

#include <cstddef>
#include <optional>
#include <string>
#include <string_view>

namespace debra::toml_input {

// Where text holds something toml++ 3.3 must not see, and what.
struct Refusal {
  std::size_t line = 0;    // 1-based
  std::size_t column = 0;  // 1-based, in bytes
  std::string what;
};

// 2. toml++ 3.3 reaches __builtin_unreachable in is_non_ascii_horizontal_whitespace() for code
// points such as U+0463 wherever whitespace may stand: undefined behaviour in every build. So before
// toml++ sees a file, this refuses any non-ASCII byte outside a comment, and multi-line strings,
// which this line-by-line look cannot follow. Neither a policy nor a debra-server option needs them.
std::optional<Refusal> refuse_what_toml_cannot_take(std::string_view text);

}  // namespace debra::toml_input
