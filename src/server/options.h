// SPDX-License-Identifier: MIT
//
// The debra-server command line, and the same options read from a TOML file (--config): one
// definition of every option, shared by main.cc and the config-file fuzz target.
#pragma once

#include <CLI/CLI.hpp>

#include <string>
#include <vector>

#include "server/server.h"

namespace debra::server {

// ServerOptions: defines every debra-server option on a CLI::App and turns the parsed values into a
// ServerConfig. Lives as long as the App, which writes into it while parsing.
class ServerOptions {
 public:
  // Defines the options on app, including --config FILE (read with TomlConfig; flags given on the
  // command line win over the file).
  explicit ServerOptions(CLI::App& app);

  // After app.parse: the checked configuration, or why it cannot run (main exits with code 2).
  Result<ServerConfig, Error> finish();

  const std::string& log_level() const { return log_level_; }

 private:
  ServerConfig config_;
  std::string listen_ = "127.0.0.1:4433";
  std::string log_level_ = "info";
  std::uint32_t idle_timeout_s_ = 30;
  std::uint32_t handshake_timeout_s_ = 10;
  double heap_release_interval_s_ = 10;
  std::string metrics_listen_;
  bool metrics_allow_remote_ = false;
  std::string store_kind_ = "log";
  std::string sync_ = "batch";
  double ttl_s_ = 0;
  std::string auth_mode_ = "none";
  std::string legacy_policy_;
  bool allow_anonymous_ = false;
  std::vector<std::string> protocol_features_;  // every feature the router knows, unless given
};

}  // namespace debra::server
