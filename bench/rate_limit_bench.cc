// SPDX-License-Identifier: MIT
//
// Micro-benchmarks of the per-id rate limiter: the check every message pays (a known id, with 1
// and 10,000 ids remembered), and the churn of ids it has not seen, which is where it allocates.
#include <benchmark/benchmark.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>

#include "core/rate_limit.h"

namespace {

using debra::core::ClientId;
using debra::core::Nanoseconds;
using debra::core::RateLimiter;
using debra::core::RateLimits;

constexpr Nanoseconds kStart = 1'000'000'000'000;

// Limits high enough that every message here is admitted and pays both buckets.
void BM_AdmitKnownId(benchmark::State& state) {
  const auto ids = static_cast<ClientId>(state.range(0));
  RateLimiter limiter{RateLimits{.messages_per_second = 10'000'000, .message_burst = 20'000,
                                 .bytes_per_second = 1'000'000'000'000, .byte_burst = 1'000'000'000}};
  Nanoseconds now = kStart;
  for (ClientId id = 1; id <= ids; ++id) limiter.admit(id, 100, now);
  ClientId id = 1;
  for (auto _ : state) {
    now += 1'000;  // 1 µs apart: within the rate even for a single id
    benchmark::DoNotOptimize(limiter.admit(id, 100, now));
    id = id == ids ? 1 : id + 1;
  }
  if (limiter.tracked_ids() != static_cast<std::size_t>(ids)) {
    std::fprintf(stderr, "rate_limit_bench: ids forgotten while in use\n");
    std::abort();
  }
}
BENCHMARK(BM_AdmitKnownId)->Arg(1)->Arg(10000);

// A new id for every message, each bucket full again 1 ms after its message: the limiter forgets as
// fast as it learns, so it stays at about 1,000 ids.
void BM_AdmitNewIds(benchmark::State& state) {
  RateLimiter limiter{RateLimits{.messages_per_second = 1000, .message_burst = 10, .bytes_per_second = 0,
                                 .byte_burst = 0}};
  Nanoseconds now = kStart;
  ClientId id = 1;
  for (auto _ : state) {
    now += 1'000;
    benchmark::DoNotOptimize(limiter.admit(id, 100, now));
    id = id == 2'000'000'000 ? 1 : id + 1;
  }
  state.counters["tracked_ids"] = static_cast<double>(limiter.tracked_ids());
}
BENCHMARK(BM_AdmitNewIds);

}  // namespace
