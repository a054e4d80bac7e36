// SPDX-License-Identifier: MIT
#include "util/toml.h"

namespace debra::toml_input {

std::optional<Refusal> refuse_what_toml_cannot_take(std::string_view text) {
  std::size_t line = 1;
  std::size_t line_start = 0;
  auto refuse_at = [&](std::size_t at, std::string what) {
    return Refusal{line, at - line_start + 1, std::move(what)};
  };
  char quote = 0;  // inside a single-line string: its quote character
  for (std::size_t i = 0; i < text.size(); ++i) {
    auto c = static_cast<unsigned char>(text[i]);
    if (c == '\n') {
      ++line;
      line_start = i + 1;
      quote = 0;  // an unterminated string: toml++ says so
      continue;
    }
    if (c >= 0x80) return refuse_at(i, "a non-ASCII character outside a comment (keys, ids and values are ASCII)");
    if (quote != 0) {
      if (c == '\\' && quote == '"' && i + 1 < text.size() && text[i + 1] != '\n') {
        ++i;
      } else if (c == static_cast<unsigned char>(quote)) {
        quote = 0;
      }
    } else if (c == '#') {
      // A comment runs to the end of the line, and may hold any UTF-8.
      while (i + 1 < text.size() && text[i + 1] != '\n') ++i;
    } else if (c == '"' || c == '\'') {
      if (i + 2 < text.size() && text[i + 1] == text[i] && text[i + 2] == text[i]) {
        return refuse_at(i, "a multi-line string (no value spans lines)");
      }
      quote = static_cast<char>(c);
    }
  }
  return std::nullopt;
}

}  // namespace debra::toml_input
