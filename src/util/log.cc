// SPDX-License-Identifier: MIT
#include "util/log.h"

#include <spdlog/sinks/stdout_color_sinks.h>

#include <string>

namespace debra::log {

void init(std::string_view program_name) {
  auto logger = spdlog::stderr_color_mt(std::string(program_name));
  logger->set_pattern("%Y-%m-%dT%H:%M:%S.%e %^%-5l%$ %n: %v");
  spdlog::set_default_logger(std::move(logger));
  spdlog::set_level(spdlog::level::info);
}

bool set_level(std::string_view name) {
  auto level = spdlog::level::from_str(std::string(name));
  // from_str maps unknown names to "off"; only accept "off" when it was asked for.
  if (level == spdlog::level::off && name != "off") return false;
  spdlog::set_level(level);
  return true;
}

}  // namespace debra::log
