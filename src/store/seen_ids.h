// SPDX-License-Identifier: MIT
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <optional>
#include <unordered_map>

#include "core/delivery.h"

namespace debra::store {

// SeenIds: the (sender, message_id) pairs the store has taken, for idempotent retries. Each sender's
// ids are kept as ranges of consecutive ids, so a sender that counts (libdebra does) costs one range
// however much it sends, and a check is a lookup in that sender's few ranges rather than a probe into
// one table of every id. Exact: an id is reported seen only if it was added and not forgotten.
class SeenIds {
 public:
  // max_ranges bounds the memory (about 64 bytes a range); past it, the least recently extended
  // ranges are forgotten first.
  explicit SeenIds(std::size_t max_ranges) : max_ranges_(max_ranges) {}

  // Whether the pair was added; then the sequence it was stored under, if the pair is the newest of
  // its range (0 otherwise: the store answers a retry without needing it).
  std::optional<std::uint64_t> find(core::ClientId sender, std::uint64_t message_id) const;
  void add(core::ClientId sender, std::uint64_t message_id, std::uint64_t sequence, std::int64_t at_ms);
  // Takes back an add(), for a batch that was rolled back.
  void forget(core::ClientId sender, std::uint64_t message_id);
  // Forgets ranges not extended since before_ms.
  void prune(std::int64_t before_ms);

  std::size_t ranges() const { return ranges_; }

 private:
  struct Range {
    std::uint64_t last;           // the range is first..last, every id in it seen
    std::uint64_t last_sequence;  // the sequence of last (0: not known)
    std::int64_t touched_ms;      // when the range last grew
  };
  using Ranges = std::map<std::uint64_t, Range>;  // by first id

  void insert(Ranges& ranges, std::uint64_t first, Range range);
  void enforce_bound();

  std::size_t max_ranges_;
  std::size_t ranges_ = 0;
  std::unordered_map<core::ClientId, Ranges> senders_;
};

}  // namespace debra::store
