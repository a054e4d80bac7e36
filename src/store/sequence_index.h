// SPDX-License-Identifier: MIT
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <iterator>
#include <type_traits>
#include <utility>
#include <vector>

namespace debra::store {

// SequenceIndex: values keyed by sequence numbers below 2^63, for an inbox that grows at the back
// (new sequences are the highest) and is mostly consumed from the front (acknowledgements come
// roughly in order). One vector of slots in sequence order: an erased slot stays as a hole, marked
// in its key, until it reaches the front or the holes outnumber the values, so appending and
// erasing cost O(1) amortised and a lookup is a binary search over contiguous memory. A map did
// the same with a node allocation and a rebalancing per message (about 4 % of the router's CPU
// with the message log). The vector allocates from the heap, not a pool: it grows by doubling,
// and a pool keeps every size it outgrew for vectors of that size alone. Inserting below the
// highest sequence moves the slots above it; only recovery does that, when a record copied forward
// by compaction comes back.
//
// The interface is the subset of std::map the message log uses; slots read like its pairs
// (it->first, it->second, structured bindings). erase() invalidates every iterator; emplace()
// every iterator but the one it returns.
template <typename T>
class SequenceIndex {
 public:
  struct Slot {
    std::uint64_t first;  // the sequence; kErased set once erased
    T second;
  };

 private:
  using Slots = std::vector<Slot>;
  static constexpr std::uint64_t kErased = std::uint64_t{1} << 63;
  static std::uint64_t key(const Slot& slot) { return slot.first & ~kErased; }
  static bool erased(const Slot& slot) { return (slot.first & kErased) != 0; }

  template <bool Const>
  class Iterator {
   public:
    using iterator_category = std::forward_iterator_tag;
    using value_type = Slot;
    using difference_type = std::ptrdiff_t;
    using pointer = std::conditional_t<Const, const Slot*, Slot*>;
    using reference = std::conditional_t<Const, const Slot&, Slot&>;

    Iterator() = default;
    template <bool C = Const, typename = std::enable_if_t<C>>
    Iterator(const Iterator<false>& other) : slots_(other.slots_), at_(other.at_) {}  // NOLINT: as std's

    reference operator*() const { return (*slots_)[at_]; }
    pointer operator->() const { return &(*slots_)[at_]; }
    Iterator& operator++() {
      ++at_;
      skip_erased();
      return *this;
    }
    bool operator==(const Iterator& other) const { return at_ == other.at_; }

   private:
    friend class SequenceIndex;
    friend class Iterator<!Const>;
    using Container = std::conditional_t<Const, const Slots, Slots>;
    Iterator(Container* slots, std::size_t at) : slots_(slots), at_(at) { skip_erased(); }
    void skip_erased() {
      while (at_ < slots_->size() && erased((*slots_)[at_])) ++at_;
    }

    Container* slots_ = nullptr;
    std::size_t at_ = 0;
  };

 public:
  using iterator = Iterator<false>;
  using const_iterator = Iterator<true>;

  SequenceIndex() = default;

  std::size_t size() const { return size_; }
  bool empty() const { return size_ == 0; }

  iterator begin() { return iterator(&slots_, front_); }
  iterator end() { return iterator(&slots_, slots_.size()); }
  const_iterator begin() const { return const_iterator(&slots_, front_); }
  const_iterator end() const { return const_iterator(&slots_, slots_.size()); }

  iterator find(std::uint64_t sequence) {
    std::size_t at = lower_bound(sequence);
    if (at == slots_.size() || slots_[at].first != sequence) return end();
    return iterator(&slots_, at);
  }

  // The first value whose sequence is above sequence.
  iterator upper_bound(std::uint64_t sequence) {
    auto from = slots_.begin() + static_cast<std::ptrdiff_t>(front_);
    auto it = std::upper_bound(from, slots_.end(), sequence,
                               [](std::uint64_t s, const Slot& slot) { return s < key(slot); });
    return iterator(&slots_, static_cast<std::size_t>(it - slots_.begin()));
  }

  // Like std::map::emplace: {the value at sequence, whether it was inserted}.
  std::pair<iterator, bool> emplace(std::uint64_t sequence, const T& value) {
    if (front_ == slots_.size()) {
      slots_.clear();
      front_ = 0;
    }
    std::size_t at = slots_.empty() || sequence > key(slots_.back()) ? slots_.size() : lower_bound(sequence);
    if (at < slots_.size() && key(slots_[at]) == sequence) {
      if (!erased(slots_[at])) return {iterator(&slots_, at), false};
      slots_[at] = Slot{sequence, value};
    } else {
      slots_.insert(slots_.begin() + static_cast<std::ptrdiff_t>(at), Slot{sequence, value});
    }
    ++size_;
    return {iterator(&slots_, at), true};
  }

  void erase(iterator it) {
    slots_[it.at_].first |= kErased;
    --size_;
    while (front_ < slots_.size() && erased(slots_[front_])) ++front_;
    while (slots_.size() > front_ && erased(slots_.back())) slots_.pop_back();
    // Holes are dropped once they are at least half the vector, so the vector stays within about
    // twice the live values and each hole is moved O(1) times.
    constexpr std::size_t kMinHoles = 32;
    const std::size_t holes = slots_.size() - size_;
    if (holes >= kMinHoles && holes * 2 >= slots_.size()) {
      std::erase_if(slots_, [](const Slot& slot) { return erased(slot); });
      front_ = 0;
      // A backlog that drained gives its memory back.
      if (slots_.capacity() > 4 * slots_.size() + kMinHoles) slots_.shrink_to_fit();
    }
  }

 private:
  // The first slot, erased or not, whose sequence is not below sequence.
  std::size_t lower_bound(std::uint64_t sequence) const {
    auto from = slots_.begin() + static_cast<std::ptrdiff_t>(front_);
    auto it = std::lower_bound(from, slots_.end(), sequence,
                               [](const Slot& slot, std::uint64_t s) { return key(slot) < s; });
    return static_cast<std::size_t>(it - slots_.begin());
  }

  Slots slots_;
  std::size_t front_ = 0;  // slots before it are erased
  std::size_t size_ = 0;   // values, not counting erased slots
};

}  // namespace debra::store
