// SPDX-License-Identifier: MIT
#pragma once

#include <algorithm>
#include <array>
#include <cstddef>
#include <cstdint>

namespace debra::util {

// DurationHistogram: how long something took, counted in fixed buckets from 10 µs to 1 s, the shape
// a Prometheus histogram on /metrics shows. Owned by one thread; copies are merged with +=.
class DurationHistogram {
 public:
  // Upper bounds, inclusive, in nanoseconds; a last bucket takes everything longer.
  static constexpr std::array<std::uint64_t, 15> kBoundsNs{
      10'000,     25'000,     50'000,     100'000,     250'000,     500'000,     1'000'000,    2'500'000,
      5'000'000, 10'000'000, 25'000'000, 50'000'000, 100'000'000, 250'000'000, 1'000'000'000};
  static constexpr std::size_t kBuckets = kBoundsNs.size() + 1;

  void observe(std::uint64_t ns) {
    const auto bucket = std::lower_bound(kBoundsNs.begin(), kBoundsNs.end(), ns) - kBoundsNs.begin();
    ++counts_[static_cast<std::size_t>(bucket)];
    ++count_;
    sum_ns_ += ns;
  }
  DurationHistogram& operator+=(const DurationHistogram& other) {
    for (std::size_t i = 0; i < kBuckets; ++i) counts_[i] += other.counts_[i];
    count_ += other.count_;
    sum_ns_ += other.sum_ns_;
    return *this;
  }

  // Observations in bucket i alone (not cumulative); i == kBoundsNs.size() is the one past 1 s.
  std::uint64_t in_bucket(std::size_t i) const { return counts_[i]; }
  std::uint64_t count() const { return count_; }
  std::uint64_t sum_ns() const { return sum_ns_; }

 private:
  std::array<std::uint64_t, kBuckets> counts_{};
  std::uint64_t count_ = 0;
  std::uint64_t sum_ns_ = 0;
};

}  // namespace debra::util
