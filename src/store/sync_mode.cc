// SPDX-License-Identifier: MIT
#include "store/sync_mode.h"

namespace debra::store {

Result<SyncMode, Error> parse_sync_mode(std::string_view text) {
  if (text == "always") return SyncMode::Always;
  if (text == "batch") return SyncMode::Batch;
  if (text == "off") return SyncMode::Off;
  return make_error("unknown sync mode '" + std::string(text) + "': expected always, batch or off");
}

std::string_view to_string(SyncMode mode) {
  switch (mode) {
    case SyncMode::Always: return "always";
    case SyncMode::Batch: return "batch";
    case SyncMode::Off: return "off";
  }
  return "unknown";
}

}  // namespace debra::store
