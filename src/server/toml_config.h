// SPDX-License-Identifier: MIT
//
// Reads debra-server's --config file as real TOML (toml++), instead of CLI11's own approximation
// of it, so an operator gets TOML's full syntax and errors that name the line and column.
#pragma once

#include <CLI/CLI.hpp>

#include <istream>
#include <vector>

namespace debra::server {

// TomlConfig: CLI11's config-file hook. Every top-level `name = value` of the file becomes the value
// of option --name of app (strings as they are; integers, floats and booleans as their TOML text; an
// array as several values). Anything else, and a name that is not an option of app, is a
// CLI::ConfigError that names the line and column.
class TomlConfig final : public CLI::ConfigBase {
 public:
  explicit TomlConfig(const CLI::App& app) : app_(app) {}
  std::vector<CLI::ConfigItem> from_config(std::istream& input) const override;

 private:
  const CLI::App& app_;
};

}  // namespace debra::server
