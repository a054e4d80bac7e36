// SPDX-License-Identifier: MIT
//
// Micro-benchmarks of the routing core: the per-message delivery decision, the send policy check,
// registration churn and takeover, with 1 and 10,000 registered ids. The sinks only count, so what is measured is the
// router itself (registry lookup, slow-consumer check, stats), not a connection.
#include <benchmark/benchmark.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <random>
#include <vector>

#include "core/router.h"
#include "wire/codec.h"

namespace {

using debra::core::ClientId;
using debra::core::Delivery;
using debra::core::Submission;
using debra::core::Outcome;
using debra::core::Router;
using debra::core::SessionSink;

class CountingSink : public SessionSink {
 public:
  void deliver(const Delivery& delivery) override {
    ++delivered;
    bytes += delivery.frame.size();
  }
  std::size_t queued_bytes() const override { return queued; }
  void on_displaced() override { ++displaced; }

  std::uint64_t delivered = 0;
  std::uint64_t bytes = 0;
  std::uint64_t displaced = 0;
  std::size_t queued = 0;
};

[[noreturn]] void fail(const char* what) {
  std::fprintf(stderr, "router_bench: %s\n", what);
  std::abort();
}

std::uint64_t iterations(const benchmark::State& state) { return static_cast<std::uint64_t>(state.iterations()); }

// A router with ids 1..n online, one sink each.
struct Population {
  explicit Population(std::int64_t n) : sinks(static_cast<std::size_t>(n)) {
    for (std::size_t i = 0; i < sinks.size(); ++i) router.register_client(static_cast<ClientId>(i + 1), sinks[i]);
    if (router.online_count() != static_cast<std::size_t>(n)) fail("registration failed");
  }
  Router router;
  std::vector<CountingSink> sinks;
};

// Recipients in a fixed pseudo-random order over 1..n, so the 10,000-id case touches the whole table.
std::vector<ClientId> recipients(std::int64_t n) {
  std::vector<ClientId> ids(4096);
  std::mt19937 rng(12345);
  std::uniform_int_distribution<ClientId> pick(1, static_cast<ClientId>(n));
  for (auto& id : ids) id = pick(rng);
  return ids;
}

void registered_counts(benchmark::internal::Benchmark* b) {
  b->ArgName("registered");
  for (const std::int64_t n : {1, 10000}) b->Arg(n);
}

// route() to an online recipient without a store: the forward-only hot path, including the one
// encoding of the delivery frame that every message costs.
void BM_RouteOnline(benchmark::State& state) {
  Population pop(state.range(0));
  const auto ids = recipients(state.range(0));
  const std::vector<std::uint8_t> payload(64, 0x5a);
  Submission message{1, 0, 0, payload, false};
  std::size_t i = 0;
  for (auto _ : state) {
    message.recipient = ids[i++ & (ids.size() - 1)];
    ++message.message_id;
    const Outcome outcome = pop.router.route(message, nullptr);
    benchmark::DoNotOptimize(outcome);
  }
  std::uint64_t delivered = 0;
  for (const auto& sink : pop.sinks) delivered += sink.delivered;
  if (delivered != iterations(state) || pop.router.stats().delivered != iterations(state)) {
    fail("not every route delivered");
  }
  state.SetItemsProcessed(static_cast<std::int64_t>(state.iterations()));
}
BENCHMARK(BM_RouteOnline)->Apply(registered_counts);

// route() to an id nobody holds, no store, no remote: the lookup miss.
void BM_RouteOffline(benchmark::State& state) {
  Population pop(state.range(0));
  const std::vector<std::uint8_t> payload(64, 0x5a);
  const auto offline_id = static_cast<ClientId>(state.range(0) + 1000);
  Submission message{1, offline_id, 0, payload, false};
  for (auto _ : state) {
    ++message.message_id;
    const Outcome outcome = pop.router.route(message, nullptr);
    benchmark::DoNotOptimize(outcome);
  }
  if (pop.router.stats().offline != iterations(state)) fail("expected offline outcomes");
  state.SetItemsProcessed(static_cast<std::int64_t>(state.iterations()));
}
BENCHMARK(BM_RouteOffline)->Apply(registered_counts);

// SendPolicy::decide, the check route() makes for every message under --policy, in its worst case:
// no rule matches, so every rule is tried (two binary searches over 16 ranges each) before the
// default decides.
void BM_PolicyDecideNoRuleMatches(benchmark::State& state) {
  debra::core::SendPolicy policy;
  for (std::int64_t r = 0; r < state.range(0); ++r) {
    std::vector<debra::core::IdRange> ranges;
    for (ClientId k = 0; k < 16; ++k) ranges.push_back({1'000'000 + k * 1000, 1'000'000 + k * 1000 + 99});
    // Senders 1..10,000 match every rule's `from`, but no rule's `to` holds a recipient.
    policy.rules.push_back({debra::core::IdSet::of({{1, 10000}}), debra::core::IdSet::of(ranges), false, 0});
  }
  const auto ids = recipients(10000);
  std::size_t i = 0;
  for (auto _ : state) {
    const ClientId id = ids[i++ & (ids.size() - 1)];
    auto decision = policy.decide(id, id);
    benchmark::DoNotOptimize(decision);
    if (!decision.allowed) fail("no rule should match");
  }
  state.SetItemsProcessed(static_cast<std::int64_t>(state.iterations()));
}
BENCHMARK(BM_PolicyDecideNoRuleMatches)->ArgName("rules")->Arg(0)->Arg(1)->Arg(100)->Arg(1000);

// A connection arriving and leaving: register_client then unregister_client of a fresh id while
// the rest of the population stays online.
void BM_RegisterUnregister(benchmark::State& state) {
  Population pop(state.range(0));
  CountingSink newcomer;
  const auto base = static_cast<ClientId>(state.range(0) + 1);
  ClientId id = base;
  for (auto _ : state) {
    pop.router.register_client(id, newcomer);
    pop.router.unregister_client(id, newcomer);
    id = id == base + 4095 ? base : id + 1;
    benchmark::DoNotOptimize(pop.router.online_count());
  }
  if (pop.router.online_count() != static_cast<std::size_t>(state.range(0))) fail("churn leaked an id");
  state.SetItemsProcessed(static_cast<std::int64_t>(state.iterations()));
}
BENCHMARK(BM_RegisterUnregister)->Apply(registered_counts);

// Newest wins: two connections alternately register the same id, each displacing the other.
void BM_Takeover(benchmark::State& state) {
  Population pop(state.range(0));
  CountingSink a;
  CountingSink b;
  const ClientId id = 1;  // an id that is already online
  bool use_a = true;
  for (auto _ : state) {
    pop.router.register_client(id, use_a ? a : b);
    use_a = !use_a;
  }
  if (pop.router.stats().takeovers != iterations(state)) fail("expected a takeover per registration");
  benchmark::DoNotOptimize(a.displaced + b.displaced);
  state.SetItemsProcessed(static_cast<std::int64_t>(state.iterations()));
}
BENCHMARK(BM_Takeover)->Apply(registered_counts);

}  // namespace
