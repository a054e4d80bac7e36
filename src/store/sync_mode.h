// SPDX-License-Identifier: MIT
#pragma once

#include <string>
#include <string_view>

#include "util/result.h"

namespace debra::store {

// SyncMode: what a commit guarantees (docs/protocol.md, "Durability"). Every store honours it.
enum class SyncMode {
  Always,  // every change is its own commit, fsynced before the call returns
  Batch,   // changes are grouped per commit() (once per event-loop iteration) and fsynced together
  Off,     // committed per commit(), never fsynced: survives a crash of the router, not of the machine
};

Result<SyncMode, Error> parse_sync_mode(std::string_view text);
std::string_view to_string(SyncMode mode);

}  // namespace debra::store
