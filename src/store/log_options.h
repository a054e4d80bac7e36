// SPDX-License-Identifier: MIT
//
// The message log's options, apart from LogStore itself, so that the server's configuration can
// carry them without seeing the store.
#pragma once

#include <cstddef>
#include <cstdint>

namespace debra::store {

// LogOptions: the shape of the log on disk and the memory it may use.
struct LogOptions {
  // A segment file is closed and a new one started once it holds this many bytes.
  std::size_t segment_bytes = 64 * 1024 * 1024;
  // At most this many ranges of consecutive message ids (SeenIds) are remembered for deduplication,
  // about 64 bytes each; StoreLimits::dedupe_window_ms bounds them in time as well.
  std::size_t dedupe_max_ranges = 1 << 20;
  // At most this many emptied segment files are kept (DIR/log/*.spare) to be written over as new
  // segments: an fdatasync of blocks a file already has skips the journal commit that growing it
  // costs (docs/architecture.md, "The message log"). They hold their disk space meanwhile.
  std::size_t spare_segments = 2;
  // A mostly empty segment has its held messages copied forward only once it has been closed this
  // long: until then what it holds is mostly on its way to recipients that are online, and about to
  // be acknowledged (docs/architecture.md, "The message log").
  std::int64_t compact_after_ms = 2000;
  // Compaction copies at most this many bytes of held records per commit (at least one record): the
  // copies go into a commit whose write and fdatasync every message in it waits for.
  std::size_t compaction_step_bytes = 1024 * 1024;
};

}  // namespace debra::store
