// SPDX-License-Identifier: MIT
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <mutex>
#include <unordered_map>
#include <vector>

#include "util/duration_histogram.h"

struct epoll_event;

namespace debra::net {

// Timestamp: nanoseconds of CLOCK_MONOTONIC, the unit ngtcp2 uses.
using Timestamp = std::uint64_t;
Timestamp monotonic_now();

// EventLoop: a thin epoll loop for one thread: readable file descriptors, timers with nanosecond
// resolution (QUIC pacing gaps are microseconds; the earliest deadline is epoll_pwait2's timeout, or
// a timerfd's on kernels before 5.11), before-sleep hooks that flush batched writes, and post() for
// work handed over from other threads. Everything but post() and stop() must be called from the
// loop's thread.
class EventLoop {
 public:
  using TimerId = std::uint64_t;
  using Callback = std::function<void()>;

  EventLoop();
  ~EventLoop();
  EventLoop(const EventLoop&) = delete;
  EventLoop& operator=(const EventLoop&) = delete;

  // Calls on_readable whenever fd is readable (level-triggered). fd stays owned by the caller.
  void add_reader(int fd, Callback on_readable);
  void remove_reader(int fd);

  // Calls callback once at deadline (or soon after). Returns an id for cancel_timer.
  TimerId add_timer(Timestamp deadline, Callback callback);
  // Cancels a pending timer; a no-op for an id that already fired or was cancelled.
  void cancel_timer(TimerId id);
  // Moves a pending timer to a new deadline, keeping its id and callback, without allocating (a
  // QUIC connection moves its timer after nearly every packet). False, and nothing done, for an id
  // that already fired or was cancelled.
  bool move_timer(TimerId id, Timestamp deadline);

  // Runs hook before every wait, after all ready events were handled. Returns an id for
  // remove_before_sleep.
  std::uint64_t add_before_sleep(Callback hook);
  // Registers a hook that runs before a wait only after request_before_sleep(id), once however often
  // it was requested. A thread may hold thousands of these (one per client endpoint) at no cost per
  // iteration; each iteration runs the every-time hooks first, then the requested ones, until none is
  // requested.
  std::uint64_t add_before_sleep_on_request(Callback hook);
  void request_before_sleep(std::uint64_t id);
  // Removes either kind; a removed hook does not run even if requested.
  void remove_before_sleep(std::uint64_t id);

  // Runs callback on the loop thread soon. Thread-safe.
  void post(Callback callback);

  // Runs until stop(). stop() is thread-safe and may be called from any thread or a signal-safe
  // context through post().
  void run();
  void stop();

  // The time cached at the start of the current iteration; cheaper than a clock read per packet.
  Timestamp now() const { return now_; }

  // How long each iteration worked, from waking up to going back to sleep: while one runs, nothing
  // else on this loop is served. On the loop's thread only.
  const util::DurationHistogram& iteration_times() const { return iteration_times_; }

 private:
  int wait(epoll_event* events, int max_events);
  void arm_timerfd();
  void run_due_timers();
  void run_posted();
  void run_before_sleep();

  int epoll_fd_ = -1;
  int timer_fd_ = -1;  // only where epoll_pwait2 is missing (use_timerfd_)
  bool use_timerfd_ = false;
  int wake_fd_ = -1;
  bool running_ = false;
  Timestamp now_ = 0;
  Timestamp armed_deadline_ = 0;
  TimerId next_timer_id_ = 1;
  std::multimap<Timestamp, TimerId> timers_;
  std::unordered_map<TimerId, std::pair<std::multimap<Timestamp, TimerId>::iterator, Callback>> timer_callbacks_;
  std::unordered_map<int, Callback> readers_;
  std::vector<std::pair<std::uint64_t, Callback>> before_sleep_;
  struct OnRequest {
    Callback hook;
    bool requested = false;
  };
  std::unordered_map<std::uint64_t, OnRequest> on_request_;
  std::vector<std::uint64_t> requested_;
  std::uint64_t next_hook_id_ = 1;
  std::mutex posted_mutex_;
  std::vector<Callback> posted_;
  bool stop_requested_ = false;
  util::DurationHistogram iteration_times_;
};

}  // namespace debra::net
