// SPDX-License-Identifier: MIT
#include "core/rate_limit.h"

#include <algorithm>
#include <limits>

namespace debra::core {
namespace {

constexpr ScaledTime kUnitsPerToken = 1'000'000'000;  // one token at rate r lasts 10^9 / r ns

// Scaled time back to nanoseconds, rounded up (and saturated).
Nanoseconds to_nanoseconds(ScaledTime scaled, std::uint64_t per_second) {
  const ScaledTime ns = (scaled + per_second - 1) / per_second;
  return ns > std::numeric_limits<Nanoseconds>::max() ? std::numeric_limits<Nanoseconds>::max()
                                                       : static_cast<Nanoseconds>(ns);
}

}  // namespace

Rate::Rate(std::uint64_t per_second, std::uint64_t burst)
    : per_second_(per_second), burst_(per_second == 0 ? 0 : std::max<std::uint64_t>(burst, 1)) {}

Nanoseconds Rate::wait(ScaledTime full_at, std::uint64_t cost, Nanoseconds now) const {
  if (unlimited()) return 0;
  const ScaledTime current = scaled(now);
  const ScaledTime debt = full_at > current ? full_at - current : 0;
  const ScaledTime price = static_cast<ScaledTime>(cost) * kUnitsPerToken;
  const ScaledTime capacity = static_cast<ScaledTime>(burst_) * kUnitsPerToken;
  // A message larger than the whole burst waits for a full bucket; any other for room for itself.
  const ScaledTime allowed_debt = price >= capacity ? 0 : capacity - price;
  if (debt <= allowed_debt) return 0;
  return to_nanoseconds(debt - allowed_debt, per_second_);
}

ScaledTime Rate::paid(ScaledTime full_at, std::uint64_t cost, Nanoseconds now) const {
  if (unlimited()) return kFull;
  return std::max(full_at, scaled(now)) + static_cast<ScaledTime>(cost) * kUnitsPerToken;
}

Nanoseconds Rate::full_time(ScaledTime full_at) const {
  return unlimited() ? 0 : to_nanoseconds(full_at, per_second_);
}

bool TokenBucket::try_take(std::uint64_t cost, Nanoseconds now) {
  if (rate_.wait(full_at_, cost, now) != 0) return false;
  full_at_ = rate_.paid(full_at_, cost, now);
  return true;
}

RateLimiter::RateLimiter(RateLimits limits)
    : limits_(limits), messages_(limits.messages_per_second, limits.message_burst),
      bytes_(limits.bytes_per_second, limits.byte_burst) {
  limits_.max_tracked_ids = std::max<std::size_t>(limits_.max_tracked_ids, 1);
}

Nanoseconds RateLimiter::full_time(const Buckets& buckets) const {
  return std::max(messages_.full_time(buckets.messages_full_at), bytes_.full_time(buckets.bytes_full_at));
}

void RateLimiter::forget_soonest_full() {
  buckets_.erase(full_times_.begin()->second);
  full_times_.erase(full_times_.begin());
}

RateLimiter::Buckets& RateLimiter::buckets_of(ClientId id, Nanoseconds now) {
  if (auto it = buckets_.find(id); it != buckets_.end()) return it->second;
  // A new id: first forget the buckets that are full again, since they hold nothing a fresh one
  // would not. At the bound, the one nearest to full goes too.
  while (!full_times_.empty() && full_times_.begin()->first <= now) forget_soonest_full();
  if (buckets_.size() >= limits_.max_tracked_ids) {
    forget_soonest_full();
    ++stats_.evicted;
  }
  Buckets& buckets = buckets_[id];
  buckets.full_time = full_times_.emplace(now, id);
  return buckets;
}

Admission RateLimiter::admit(ClientId id, std::uint64_t bytes, Nanoseconds now) {
  if (unlimited()) return {};
  Buckets& buckets = buckets_of(id, now);
  const Nanoseconds message_wait = messages_.wait(buckets.messages_full_at, 1, now);
  const Nanoseconds byte_wait = bytes_.wait(buckets.bytes_full_at, bytes, now);
  if (message_wait == 0 && byte_wait == 0) {
    pay(buckets, bytes, now);
    return {};
  }
  // The longer wait is the one that decides when the message would pass.
  if (message_wait >= byte_wait) return {false, RateLimitKind::Messages, message_wait};
  return {false, RateLimitKind::Bytes, byte_wait};
}

void RateLimiter::charge(ClientId id, std::uint64_t bytes, Nanoseconds now) {
  if (!unlimited()) pay(buckets_of(id, now), bytes, now);
}

void RateLimiter::pay(Buckets& buckets, std::uint64_t bytes, Nanoseconds now) {
  buckets.messages_full_at = messages_.paid(buckets.messages_full_at, 1, now);
  buckets.bytes_full_at = bytes_.paid(buckets.bytes_full_at, bytes, now);
  // Re-keying through the node handle moves the entry without allocating.
  auto node = full_times_.extract(buckets.full_time);
  node.key() = full_time(buckets);
  buckets.full_time = full_times_.insert(std::move(node));
}

}  // namespace debra::core
