// SPDX-License-Identifier: MIT
#include "store/seen_ids.h"

#include <algorithm>
#include <iterator>
#include <vector>

namespace debra::store {

std::optional<std::uint64_t> SeenIds::find(core::ClientId sender, std::uint64_t message_id) const {
  auto s = senders_.find(sender);
  if (s == senders_.end()) return std::nullopt;
  const Ranges& ranges = s->second;
  auto it = ranges.upper_bound(message_id);
  if (it == ranges.begin()) return std::nullopt;
  --it;
  if (message_id > it->second.last) return std::nullopt;
  return message_id == it->second.last ? it->second.last_sequence : 0;
}

void SeenIds::insert(Ranges& ranges, std::uint64_t first, Range range) {
  ranges.emplace(first, range);
  ++ranges_;
}

void SeenIds::add(core::ClientId sender, std::uint64_t message_id, std::uint64_t sequence, std::int64_t at_ms) {
  if (max_ranges_ == 0) return;
  Ranges& ranges = senders_[sender];
  auto next = ranges.upper_bound(message_id);
  const bool joins_next = next != ranges.end() && message_id != UINT64_MAX && next->first == message_id + 1;
  if (next != ranges.begin()) {
    auto prev = std::prev(next);
    if (message_id <= prev->second.last) return;  // seen already
    if (prev->second.last + 1 == message_id) {
      // The common case: the sender counts, and its newest range grows by one.
      prev->second.last = message_id;
      prev->second.last_sequence = sequence;
      prev->second.touched_ms = std::max(prev->second.touched_ms, at_ms);
      if (joins_next) {
        prev->second.last = next->second.last;
        prev->second.last_sequence = next->second.last_sequence;
        prev->second.touched_ms = std::max(prev->second.touched_ms, next->second.touched_ms);
        ranges.erase(next);
        --ranges_;
      }
      return;
    }
  }
  if (joins_next) {
    Range grown = next->second;
    grown.touched_ms = std::max(grown.touched_ms, at_ms);
    ranges.erase(next);
    ranges.emplace(message_id, grown);
    return;
  }
  insert(ranges, message_id, Range{message_id, sequence, at_ms});
  if (ranges_ > max_ranges_) enforce_bound();
}

void SeenIds::forget(core::ClientId sender, std::uint64_t message_id) {
  auto s = senders_.find(sender);
  if (s == senders_.end()) return;
  Ranges& ranges = s->second;
  auto it = ranges.upper_bound(message_id);
  if (it == ranges.begin()) return;
  --it;
  const std::uint64_t first = it->first;
  Range range = it->second;
  if (message_id > range.last) return;
  ranges.erase(it);
  --ranges_;
  if (first < message_id) insert(ranges, first, Range{message_id - 1, 0, range.touched_ms});
  if (message_id < range.last) insert(ranges, message_id + 1, Range{range.last, range.last_sequence, range.touched_ms});
  if (ranges.empty()) senders_.erase(s);
}

void SeenIds::prune(std::int64_t before_ms) {
  for (auto s = senders_.begin(); s != senders_.end();) {
    Ranges& ranges = s->second;
    for (auto it = ranges.begin(); it != ranges.end();) {
      if (it->second.touched_ms < before_ms) {
        it = ranges.erase(it);
        --ranges_;
      } else {
        ++it;
      }
    }
    s = ranges.empty() ? senders_.erase(s) : std::next(s);
  }
}

void SeenIds::enforce_bound() {
  // Down to 7/8 of the bound at once, so that the scan runs once per max_ranges/8 new ranges.
  std::vector<std::int64_t> touched;
  touched.reserve(ranges_);
  for (const auto& [sender, ranges] : senders_) {
    for (const auto& [first, range] : ranges) touched.push_back(range.touched_ms);
  }
  const std::size_t keep = max_ranges_ - max_ranges_ / 8;
  if (touched.size() <= keep) return;
  auto cut = touched.begin() + static_cast<std::ptrdiff_t>(touched.size() - keep);
  std::nth_element(touched.begin(), cut, touched.end());
  // Ties at the cut go too: the bound holds even when many ranges share a millisecond.
  prune(*cut + 1);
}

}  // namespace debra::store
