// SPDX-License-Identifier: MIT
#include "server/toml_config.h"

#include <cstdio>
#include <iterator>
#include <sstream>
#include <string>

#include "util/toml.h"

namespace debra::server {
namespace {

std::string where(std::size_t line, std::size_t column) {
  return "--config: line " + std::to_string(line) + ", column " + std::to_string(column);
}
std::string where(const toml::source_region& region) { return where(region.begin.line, region.begin.column); }

// The option text of one TOML value, or "" with *error set for a value no option can take.
std::string option_text(const toml::node& node, std::string* error) {
  if (auto s = node.as_string()) return s->get();
  if (auto i = node.as_integer()) return std::to_string(i->get());
  if (auto b = node.as_boolean()) return b->get() ? "true" : "false";
  if (auto f = node.as_floating_point()) {
    char text[32];
    std::snprintf(text, sizeof text, "%.17g", f->get());
    return text;
  }
  *error = node.is_table() ? "a table is not an option value" : "dates and times are not option values";
  return {};
}

}  // namespace

std::vector<CLI::ConfigItem> TomlConfig::from_config(std::istream& input) const {
  std::string text{std::istreambuf_iterator<char>(input), std::istreambuf_iterator<char>()};
  if (auto refusal = toml_input::refuse_what_toml_cannot_take(text)) {
    throw CLI::ConfigError(where(refusal->line, refusal->column) + ": " + refusal->what);
  }
  toml::parse_result parsed = toml::parse(text);
  if (!parsed) {
    throw CLI::ConfigError(where(parsed.error().source()) + ": " + std::string(parsed.error().description()));
  }
  const toml::table& table = parsed.table();
  std::vector<CLI::ConfigItem> options;
  for (const auto& [key, node] : table) {
    std::string name(key.str());
    if (node.is_table()) {
      throw CLI::ConfigError(where(key.source()) + ": [" + name + "]: options are not grouped in tables; write `name = value` at the top level");
    }
    const CLI::Option* option = app_.get_option_no_throw("--" + name);
    if (option == nullptr || name == "config" || name == "help") {
      throw CLI::ConfigError(where(key.source()) + ": '" + name + "' is not an option of debra-server (--help lists them)");
    }
    CLI::ConfigItem item;
    item.name = name;
    std::string error;
    if (const toml::array* array = node.as_array()) {
      for (const toml::node& element : *array) {
        if (element.is_array()) error = "nested arrays are not option values";
        if (error.empty()) item.inputs.push_back(option_text(element, &error));
      }
    } else {
      item.inputs.push_back(option_text(node, &error));
    }
    if (!error.empty()) throw CLI::ConfigError(where(node.source()) + ": " + name + ": " + error);
    options.push_back(std::move(item));
  }
  return options;
}

}  // namespace debra::server
