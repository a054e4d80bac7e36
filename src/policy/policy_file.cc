// SPDX-License-Identifier: MIT
#include "policy/policy_file.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cstdio>
#include <cstring>
#include <limits>
#include <utility>
#include <vector>

#include "util/toml.h"

namespace debra::policy {
namespace {

constexpr auto kMaxId = std::numeric_limits<core::ClientId>::max();
constexpr std::string_view kIdForms = "an id, a range \"lo-hi\" or \"*\"";

// "a list", "an integer": what a value is, for error messages.
std::string_view a_type(toml::node_type type) {
  switch (type) {
    case toml::node_type::table: return "a table";
    case toml::node_type::array: return "a list";
    case toml::node_type::string: return "a string";
    case toml::node_type::integer: return "an integer";
    case toml::node_type::floating_point: return "a floating-point number";
    case toml::node_type::boolean: return "a boolean";
    case toml::node_type::date: return "a date";
    case toml::node_type::time: return "a time";
    case toml::node_type::date_time: return "a date-time";
    case toml::node_type::none: break;
  }
  return "a value";
}

// Quotes text from the file for an error message: short, and with no byte that could garble a log
// line or a terminal.
std::string quoted(std::string_view text) {
  constexpr std::size_t kMaxShown = 40;
  std::string out = "\"";
  for (std::size_t i = 0; i < text.size() && i < kMaxShown; ++i) {
    auto c = static_cast<unsigned char>(text[i]);
    if (c >= 0x20 && c < 0x7f && c != '"' && c != '\\') {
      out += static_cast<char>(c);
    } else {
      char escaped[5];
      std::snprintf(escaped, sizeof escaped, "\\x%02x", c);
      out += escaped;
    }
  }
  if (text.size() > kMaxShown) out += "...";
  return out + "\"";
}

// The entries of a table in the order they appear in the file (toml++ iterates in key order), so
// that the error reported is the first one in the file.
std::vector<std::pair<const toml::key*, const toml::node*>> in_file_order(const toml::table& table) {
  std::vector<std::pair<const toml::key*, const toml::node*>> entries;
  for (auto&& [key, node] : table) entries.emplace_back(&key, &node);
  std::sort(entries.begin(), entries.end(),
            [](const auto& a, const auto& b) { return a.first->source().begin < b.first->source().begin; });
  return entries;
}

// One id or range as written in a string: "7", "1-100" or "*"; the error says what is wrong with it.
Result<core::IdRange, std::string> parse_id_text(std::string_view text) {
  if (text == "*") return core::IdRange{1, kMaxId};
  auto number = [&](std::string_view digits) -> Result<core::ClientId, std::string> {
    std::int64_t value = 0;
    auto [end, ec] = std::from_chars(digits.data(), digits.data() + digits.size(), value);
    bool all_digits = !digits.empty() && std::all_of(digits.begin(), digits.end(), [](char c) { return c >= '0' && c <= '9'; });
    if (!all_digits || end != digits.data() + digits.size()) {
      return Unexpected{quoted(text) + " is not " + std::string(kIdForms)};
    }
    if (ec == std::errc::result_out_of_range || !core::is_valid_client_id(value)) {
      return Unexpected{"id " + std::string(digits.size() > 20 ? digits.substr(0, 20) : digits) +
                        (digits.size() > 20 ? "..." : "") + " is outside 1..2147483647"};
    }
    return static_cast<core::ClientId>(value);
  };
  std::size_t dash = text.find('-');
  auto lo = number(text.substr(0, dash));
  if (!lo) return Unexpected{lo.error()};
  if (dash == std::string_view::npos) return core::IdRange{*lo, *lo};
  auto hi = number(text.substr(dash + 1));
  if (!hi) return Unexpected{hi.error()};
  if (*lo > *hi) return Unexpected{"range " + quoted(text) + " is empty: its low end is above its high end"};
  return core::IdRange{*lo, *hi};
}

Result<void, Error> refuse_what_toml_cannot_take(std::string_view text, const std::string& source) {
  if (auto refusal = toml_input::refuse_what_toml_cannot_take(text)) {
    return make_error(source + ":" + std::to_string(refusal->line) + ":" + std::to_string(refusal->column) + ": " +
                      refusal->what);
  }
  return {};
}

class Parser {
 public:
  explicit Parser(const std::string& source) : source_(source) {}

  Result<core::SendPolicy, Error> parse(const toml::table& root) const {
    core::SendPolicy policy;
    policy.source = source_;
    bool has_default = false;
    for (auto [key, node] : in_file_order(root)) {
      if (key->str() == "default") {
        auto allow = parse_action(*node, "default");
        if (!allow) return Unexpected{allow.error()};
        policy.default_allow = *allow;
        has_default = true;
      } else if (key->str() == "rule") {
        const toml::array* rules = node->as_array();
        if (rules == nullptr) {
          return fail(node->source(), "'rule' must be a list of tables: write each rule under its own [[rule]] header");
        }
        for (const toml::node& element : *rules) {
          const toml::table* table = element.as_table();
          if (table == nullptr) {
            return fail(element.source(), "each rule must be a table (a [[rule]] header), not " +
                                              std::string(a_type(element.type())));
          }
          auto rule = parse_rule(*table, policy.rules.size() + 1);
          if (!rule) return Unexpected{rule.error()};
          policy.rules.push_back(std::move(*rule));
        }
      } else {
        return fail(key->source(), "unknown key " + quoted(key->str()) + " (a policy has 'default' and [[rule]] tables)");
      }
    }
    if (!has_default) {
      return fail(toml::source_region{{1, 1}, {1, 1}, nullptr},
                  "no 'default': start the file with default = \"allow\" or default = \"deny\"");
    }
    return policy;
  }

 private:
  Unexpected<Error> fail(const toml::source_region& where, const std::string& what) const {
    return make_error(source_ + ":" + std::to_string(where.begin.line) + ":" + std::to_string(where.begin.column) +
                      ": " + what);
  }

  // "allow" (true) or "deny" (false).
  Result<bool, Error> parse_action(const toml::node& node, std::string_view key) const {
    const std::string expected = "'" + std::string(key) + "' must be \"allow\" or \"deny\", not ";
    const auto* text = node.as_string();
    if (text == nullptr) return fail(node.source(), expected + std::string(a_type(node.type())));
    if (text->get() == "allow") return true;
    if (text->get() == "deny") return false;
    return fail(node.source(), expected + quoted(text->get()));
  }

  Result<core::PolicyRule, Error> parse_rule(const toml::table& table, std::size_t number) const {
    const std::string name = "rule " + std::to_string(number);
    core::PolicyRule rule;
    rule.line = table.source().begin.line;
    bool has_from = false;
    bool has_to = false;
    bool has_action = false;
    for (auto [key, node] : in_file_order(table)) {
      const std::string k(key->str());
      if (k == "from" || k == "to") {
        auto ids = parse_ids(*node, k);
        if (!ids) return Unexpected{ids.error()};
        (k == "from" ? rule.from : rule.to) = std::move(*ids);
        (k == "from" ? has_from : has_to) = true;
      } else if (k == "action") {
        auto allow = parse_action(*node, "action");
        if (!allow) return Unexpected{allow.error()};
        rule.allow = *allow;
        has_action = true;
      } else {
        // A key written after a [[rule]] header belongs to that rule, a common slip for 'default'.
        std::string hint = k == "default" ? "; 'default' must come before the first [[rule]]" : "";
        return fail(key->source(), "unknown key " + quoted(k) + " in " + name + " (a rule has from, to and action" +
                                       hint + ")");
      }
    }
    if (!has_from) return fail(table.source(), name + " has no 'from' (write from = \"*\" for every id)");
    if (!has_to) return fail(table.source(), name + " has no 'to' (write to = \"*\" for every id)");
    if (!has_action) return fail(table.source(), name + " has no 'action' (\"allow\" or \"deny\")");
    return rule;
  }

  // An id list: one item, or a non-empty list of items.
  Result<core::IdSet, Error> parse_ids(const toml::node& node, const std::string& key) const {
    std::vector<core::IdRange> ranges;
    if (const toml::array* list = node.as_array()) {
      if (list->empty()) {
        return fail(node.source(), "'" + key + "' is an empty list, which matches no id (write \"*\" for every id)");
      }
      ranges.reserve(list->size());
      for (const toml::node& element : *list) {
        if (element.is_array() || element.is_table()) {
          return fail(element.source(), "each item of '" + key + "' must be " + std::string(kIdForms) + ", not " +
                                            std::string(a_type(element.type())));
        }
        auto range = parse_id_item(element, key);
        if (!range) return Unexpected{range.error()};
        ranges.push_back(*range);
      }
    } else {
      auto range = parse_id_item(node, key);
      if (!range) return Unexpected{range.error()};
      ranges.push_back(*range);
    }
    return core::IdSet::of(std::move(ranges));
  }

  Result<core::IdRange, Error> parse_id_item(const toml::node& node, const std::string& key) const {
    if (const auto* integer = node.as_integer()) {
      std::int64_t id = integer->get();
      if (!core::is_valid_client_id(id)) {
        return fail(node.source(), "id " + std::to_string(id) + " in '" + key + "' is outside 1..2147483647");
      }
      return core::IdRange{static_cast<core::ClientId>(id), static_cast<core::ClientId>(id)};
    }
    if (const auto* text = node.as_string()) {
      auto range = parse_id_text(text->get());
      if (!range) return fail(node.source(), range.error() + " (in '" + key + "')");
      return *range;
    }
    return fail(node.source(), "'" + key + "' must be " + std::string(kIdForms) + " or a list of them, not " +
                                   std::string(a_type(node.type())));
  }

  const std::string& source_;
};

}  // namespace

Result<core::SendPolicy, Error> parse_policy(std::string_view text, std::string source) {
  if (auto refused = refuse_what_toml_cannot_take(text, source); !refused) return Unexpected{refused.error()};
  toml::parse_result parsed = toml::parse(text, std::string_view(source));
  if (!parsed) {
    const toml::parse_error& error = parsed.error();
    return make_error(source + ":" + std::to_string(error.source().begin.line) + ":" +
                      std::to_string(error.source().begin.column) + ": not valid TOML: " +
                      std::string(error.description()));
  }
  return Parser(source).parse(parsed.table());
}

Result<core::SendPolicy, Error> load_policy_file(const std::string& path) {
  int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return make_error(path + ": " + std::strerror(errno));
  struct stat st {};
  if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    close(fd);
    return make_error(path + ": not a regular file");
  }
  std::string text;
  char buffer[16384];
  for (;;) {
    ssize_t n = read(fd, buffer, sizeof buffer);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      int error = errno;
      close(fd);
      return make_error(path + ": " + std::strerror(error));
    }
    if (n == 0) break;
    text.append(buffer, static_cast<std::size_t>(n));
  }
  close(fd);
  return parse_policy(text, path);
}

std::string describe(const core::SendPolicy& policy) {
  return std::to_string(policy.rules.size()) + (policy.rules.size() == 1 ? " rule" : " rules") + ", default " +
         (policy.default_allow ? "allow" : "deny");
}

}  // namespace debra::policy
