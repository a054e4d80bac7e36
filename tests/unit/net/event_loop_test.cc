// SPDX-License-Identifier: MIT
//
// EventLoop's before-sleep hooks: the every-iteration kind and the on-request kind that client
// endpoints use, one per connection, so that a thread with thousands of them does not run each one
// on every iteration.
#include "net/event_loop.h"

#include <gtest/gtest.h>

#include <chrono>
#include <string>
#include <thread>
#include <vector>

namespace debra::net {
namespace {

// Runs loop iterations until stop: each post() below wakes the loop once.
void run_iterations(EventLoop& loop, int iterations) {
  for (int i = 0; i < iterations; ++i) loop.post([] {});
  loop.post([&loop] { loop.post([&loop] { loop.stop(); }); });
  loop.run();
}

TEST(EventLoop, AnOnRequestHookRunsOnceForEveryRequestBeforeTheNextWait) {
  EventLoop loop;
  int runs = 0;
  auto id = loop.add_before_sleep_on_request([&] { ++runs; });
  loop.post([&] {
    loop.request_before_sleep(id);
    loop.request_before_sleep(id);  // coalesced with the first
  });
  run_iterations(loop, 3);
  EXPECT_EQ(runs, 1);

  loop.post([&] { loop.request_before_sleep(id); });
  run_iterations(loop, 3);
  EXPECT_EQ(runs, 2);
}

TEST(EventLoop, AHookRequestedByAnotherRunsBeforeTheSameWait) {
  EventLoop loop;
  std::vector<std::string> order;
  std::uint64_t second = 0;
  auto first = loop.add_before_sleep_on_request([&] {
    order.push_back("first");
    loop.request_before_sleep(second);
  });
  second = loop.add_before_sleep_on_request([&] { order.push_back("second"); });
  loop.add_before_sleep([&] { order.push_back("every"); });
  // The request and the stop come in one callback: only one wait can come between them.
  loop.post([&] {
    loop.request_before_sleep(first);
    loop.stop();
  });
  loop.run();
  // stop() posts, so the loop sleeps once more after the request: the hooks ran before that wait.
  ASSERT_GE(order.size(), 3u);
  EXPECT_EQ(order[order.size() - 3], "every");
  EXPECT_EQ(order[order.size() - 2], "first");
  EXPECT_EQ(order[order.size() - 1], "second");
}

TEST(EventLoop, ARemovedHookDoesNotRunEvenIfRequested) {
  EventLoop loop;
  int runs = 0;
  std::uint64_t removed = 0;
  auto remover = loop.add_before_sleep_on_request([&] { loop.remove_before_sleep(removed); });
  removed = loop.add_before_sleep_on_request([&] { ++runs; });
  loop.post([&] {
    loop.request_before_sleep(remover);
    loop.request_before_sleep(removed);  // queued behind the hook that removes it
  });
  run_iterations(loop, 2);
  EXPECT_EQ(runs, 0);
  loop.request_before_sleep(removed);  // a request for a removed id is ignored
  run_iterations(loop, 2);
  EXPECT_EQ(runs, 0);
}

TEST(EventLoop, AHookMayRemoveItselfWhileItRuns) {
  EventLoop loop;
  int runs = 0;
  std::uint64_t id = 0;
  id = loop.add_before_sleep_on_request([&] {
    ++runs;
    loop.remove_before_sleep(id);
  });
  loop.post([&] { loop.request_before_sleep(id); });
  run_iterations(loop, 2);
  EXPECT_EQ(runs, 1);
}

TEST(EventLoop, EveryIterationHooksStillRunEveryIteration) {
  EventLoop loop;
  int every = 0;
  int requested = 0;
  loop.add_before_sleep([&] { ++every; });
  loop.add_before_sleep_on_request([&] { ++requested; });
  run_iterations(loop, 4);
  EXPECT_GE(every, 2);
  EXPECT_EQ(requested, 0);
}

TEST(EventLoop, TimersFireInDeadlineOrderNotBeforeTheirDeadlineAndCancelledOnesNever) {
  EventLoop loop;
  std::vector<int> fired;
  std::vector<Timestamp> late;
  const Timestamp start = monotonic_now();
  auto at = [&](Timestamp offset, int tag) {
    return loop.add_timer(start + offset, [&, offset, tag] {
      fired.push_back(tag);
      late.push_back(monotonic_now() - (start + offset));
    });
  };
  at(3'000'000, 3);
  at(1'000'000, 1);
  auto cancelled = at(2'000'000, 2);
  at(0, 0);  // already due: fires in the first iteration
  loop.cancel_timer(cancelled);
  loop.add_timer(start + 5'000'000, [&] { loop.stop(); });
  loop.run();
  EXPECT_EQ(fired, (std::vector<int>{0, 1, 3}));
  // Unsigned: a timer that fired before its deadline wraps around to a huge lateness.
  for (Timestamp l : late) EXPECT_LT(l, 1'000'000'000ULL);
}

TEST(EventLoop, AMovedTimerFiresOnceAtItsNewDeadlineAndAFiredOneCannotBeMoved) {
  EventLoop loop;
  std::vector<int> fired;
  const Timestamp start = monotonic_now();
  auto early = loop.add_timer(start + 1'000'000, [&] { fired.push_back(1); });
  auto later = loop.add_timer(start + 2'000'000, [&] { fired.push_back(2); });
  auto gone = loop.add_timer(start, [&] { fired.push_back(0); });
  // Later past the other, and the other earlier than it was: they swap places.
  EXPECT_TRUE(loop.move_timer(early, start + 3'000'000));
  EXPECT_TRUE(loop.move_timer(later, start + 500'000));
  loop.cancel_timer(gone);
  EXPECT_FALSE(loop.move_timer(gone, start + 100'000));
  Timestamp stopped_at = 0;
  loop.add_timer(start + 4'000'000, [&] {
    stopped_at = monotonic_now();
    loop.stop();
  });
  loop.run();
  EXPECT_EQ(fired, (std::vector<int>{2, 1}));
  EXPECT_GE(stopped_at, start + 4'000'000);
  // Both fired: neither id can be moved again, and moving them does not bring them back.
  EXPECT_FALSE(loop.move_timer(early, start));
  EXPECT_FALSE(loop.move_timer(later, start));
  run_iterations(loop, 2);
  EXPECT_EQ(fired, (std::vector<int>{2, 1}));
}

// Every iteration is timed, from waking up to going back to sleep (debra_loop_iteration_seconds):
// one that works 20 ms shows above 10 ms.
TEST(EventLoop, EachIterationIsTimedFromWakingToSleeping) {
  EventLoop loop;
  loop.post([] { std::this_thread::sleep_for(std::chrono::milliseconds(20)); });
  run_iterations(loop, 0);
  const util::DurationHistogram& times = loop.iteration_times();
  ASSERT_GE(times.count(), 1u);
  EXPECT_GE(times.sum_ns(), 20'000'000u);
  std::uint64_t above_10ms = 0;
  for (std::size_t i = 0; i < util::DurationHistogram::kBuckets; ++i) {
    if (i == util::DurationHistogram::kBoundsNs.size() || util::DurationHistogram::kBoundsNs[i] > 10'000'000) {
      above_10ms += times.in_bucket(i);
    }
  }
  EXPECT_GE(above_10ms, 1u);
}

}  // namespace
}  // namespace debra::net
