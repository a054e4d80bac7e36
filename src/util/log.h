// SPDX-License-Identifier: MIT
#pragma once

#include <spdlog/spdlog.h>

#include <string_view>

namespace debra::log {

// Sets the level of the process-wide logger from a name (trace, debug, info, warn, error, off).
// Returns false for an unknown name. Log lines go to stderr; stdout is for program output.
bool set_level(std::string_view name);

// Installs the stderr logger with debra's line format; call once at program start.
void init(std::string_view program_name);

}  // namespace debra::log
