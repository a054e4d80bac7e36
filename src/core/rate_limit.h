// SPDX-License-Identifier: MIT
//
// Per-id rate limits as token buckets. Pure: the caller passes the time in, so tests run on a
// synthetic clock and the routing core stays free of clocks.
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <unordered_map>

#include "core/delivery.h"

namespace debra::core {

// Nanoseconds on a monotonic clock of the caller's choosing.
using Nanoseconds = std::uint64_t;

// Scaled time: nanoseconds times a rate, so that one token costs exactly 10^9 units and no
// rounding accumulates, whatever the rate. 128 bits: a monotonic clock in ns times any 64-bit rate.
__extension__ using ScaledTime = unsigned __int128;

// Rate: a sustained rate with a burst, as the generic cell rate algorithm does it. A bucket's whole
// state is one time, full_at: when it will hold `burst` tokens again. Refilling needs no timer, and
// a bucket whose full_at has passed is full, the same as a new one (so it can be forgotten).
class Rate {
 public:
  Rate() = default;  // unlimited
  // per_second 0: unlimited. burst: the tokens a full bucket holds, at least 1 when limited.
  Rate(std::uint64_t per_second, std::uint64_t burst);

  bool unlimited() const { return per_second_ == 0; }
  std::uint64_t per_second() const { return per_second_; }
  std::uint64_t burst() const { return burst_; }

  // Where a new (full) bucket starts.
  static constexpr ScaledTime kFull = 0;
  // How long a bucket must wait at now before it may pay cost; 0: it may now. A cost above the
  // burst is allowed from a full bucket only (and then leaves it in debt), so no message is
  // refused forever and the long-run rate still holds.
  Nanoseconds wait(ScaledTime full_at, std::uint64_t cost, Nanoseconds now) const;
  // The bucket's full_at after paying cost at now (once wait() said 0).
  ScaledTime paid(ScaledTime full_at, std::uint64_t cost, Nanoseconds now) const;
  // full_at in nanoseconds, rounded up.
  Nanoseconds full_time(ScaledTime full_at) const;

 private:
  ScaledTime scaled(Nanoseconds t) const { return static_cast<ScaledTime>(t) * per_second_; }

  std::uint64_t per_second_ = 0;
  std::uint64_t burst_ = 0;
};

// TokenBucket: one bucket with its own rate (e.g. a budget for log lines).
class TokenBucket {
 public:
  explicit TokenBucket(Rate rate = {}) : rate_(rate) {}
  // Takes cost tokens if the bucket may pay them at now; takes nothing otherwise.
  bool try_take(std::uint64_t cost, Nanoseconds now);
  Nanoseconds wait(std::uint64_t cost, Nanoseconds now) const { return rate_.wait(full_at_, cost, now); }

 private:
  Rate rate_;
  ScaledTime full_at_ = Rate::kFull;
};

// RateLimits: what each sending id may send, as messages and as payload bytes. 0 per second: that
// limit is off. Defaults: docs/security.md, "Rate limits".
struct RateLimits {
  std::uint64_t messages_per_second = 1'000;
  std::uint64_t message_burst = 20'000;
  std::uint64_t bytes_per_second = 8ull * 1024 * 1024;
  std::uint64_t byte_burst = 64ull * 1024 * 1024;
  // max_tracked_ids: the most ids whose buckets are remembered. Buckets that are full again are
  // forgotten anyway; at this bound the one nearest to full is forgotten even if it is not full yet
  // (counted in RateLimiterStats::evicted), so memory stays bounded under any churn of ids.
  std::size_t max_tracked_ids = 1u << 18;
};

// Which limit refused a message.
enum class RateLimitKind { None, Messages, Bytes };

// Admission: the decision on one message.
struct Admission {
  bool admitted = true;
  RateLimitKind limit = RateLimitKind::None;  // when refused: the limit that refused it
  Nanoseconds retry_after = 0;                // when refused: how long until it would be admitted
};

struct RateLimiterStats {
  std::uint64_t evicted = 0;  // buckets forgotten at max_tracked_ids before they were full
};

// RateLimiter: a message bucket and a byte bucket per id, kept across that id's connections, so
// reconnecting does not refill them, and forgotten as soon as both are full again. Single-threaded.
// admit() allocates only for an id it does not remember, never per message.
class RateLimiter {
 public:
  explicit RateLimiter(RateLimits limits = {});

  // Admits one message of `bytes` payload bytes from id at now and charges both buckets, or refuses
  // it and charges nothing.
  Admission admit(ClientId id, std::uint64_t bytes, Nanoseconds now);
  // Charges a message that is taken whatever the buckets hold (one the router can neither refuse
  // nor delay any longer), beyond the burst if need be: the debt delays what id sends next.
  void charge(ClientId id, std::uint64_t bytes, Nanoseconds now);

  bool unlimited() const { return messages_.unlimited() && bytes_.unlimited(); }
  const RateLimits& limits() const { return limits_; }
  std::size_t tracked_ids() const { return buckets_.size(); }
  const RateLimiterStats& stats() const { return stats_; }

 private:
  // When each remembered id's buckets are both full again, soonest first.
  using FullTimes = std::multimap<Nanoseconds, ClientId>;
  struct Buckets {
    ScaledTime messages_full_at = Rate::kFull;
    ScaledTime bytes_full_at = Rate::kFull;
    FullTimes::iterator full_time;
  };

  Buckets& buckets_of(ClientId id, Nanoseconds now);
  void pay(Buckets& buckets, std::uint64_t bytes, Nanoseconds now);
  void forget_soonest_full();
  Nanoseconds full_time(const Buckets& buckets) const;

  RateLimits limits_;
  Rate messages_;
  Rate bytes_;
  std::unordered_map<ClientId, Buckets> buckets_;
  FullTimes full_times_;
  RateLimiterStats stats_;
};

}  // namespace debra::core
