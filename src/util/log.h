// SPDX-License-Identifier: MIT
#pragma once

#include <spdlog/spdlog.h>

#include <chrono>
#include <cstdint>
#include <string_view>

namespace debra::log {

// Sets the level of the process-wide logger from a name (trace, debug, info, warn, error, off).
// Returns false for an unknown name. Log lines go to stderr; stdout is for program output.
bool set_level(std::string_view name);

// Installs the stderr logger with debra's line format; call once at program start.
void init(std::string_view program_name);

// RateLimit: for log lines that a peer can trigger at will, at most one per interval, so that a
// flood of them cannot flood the log. Lines held back are counted and reported with the next one.
class RateLimit {
 public:
  using Clock = std::chrono::steady_clock;
  explicit RateLimit(Clock::duration interval = std::chrono::seconds(1)) : interval_(interval) {}

  // True if a line may be logged at now; *held_back is then how many were held back before it.
  bool allow(Clock::time_point now, std::uint64_t* held_back) {
    if (started_ && now < next_) {
      ++held_back_;
      return false;
    }
    started_ = true;
    next_ = now + interval_;
    *held_back = held_back_;
    held_back_ = 0;
    return true;
  }

 private:
  Clock::duration interval_;
  Clock::time_point next_{};
  bool started_ = false;
  std::uint64_t held_back_ = 0;
};

}  // namespace debra::log
