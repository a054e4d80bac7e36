// SPDX-License-Identifier: MIT
#include "net/event_loop.h"

#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/timerfd.h>
#include <unistd.h>

#include <array>
#include <cerrno>
#include <cstring>
#include <ctime>
#include <stdexcept>

namespace debra::net {

Timestamp monotonic_now() {
  timespec ts{};
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<Timestamp>(ts.tv_sec) * 1'000'000'000ULL + static_cast<Timestamp>(ts.tv_nsec);
}

EventLoop::EventLoop() {
  epoll_fd_ = epoll_create1(EPOLL_CLOEXEC);
  timer_fd_ = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
  wake_fd_ = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (epoll_fd_ < 0 || timer_fd_ < 0 || wake_fd_ < 0) {
    // Out of file descriptors at construction: nothing sensible can run.
    throw std::runtime_error(std::string("event loop: ") + std::strerror(errno));
  }
  for (int fd : {timer_fd_, wake_fd_}) {
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.fd = fd;
    epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, fd, &ev);
  }
  now_ = monotonic_now();
}

EventLoop::~EventLoop() {
  // Callbacks that never ran may own objects that unregister from this loop when destroyed: destroy
  // them while the loop is still whole.
  std::vector<Callback> leftover;
  {
    std::lock_guard lock(posted_mutex_);
    leftover.swap(posted_);
  }
  leftover.clear();
  timer_callbacks_.clear();
  on_request_.clear();
  close(wake_fd_);
  close(timer_fd_);
  close(epoll_fd_);
}

void EventLoop::add_reader(int fd, Callback on_readable) {
  epoll_event ev{};
  ev.events = EPOLLIN;
  ev.data.fd = fd;
  epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, fd, &ev);
  readers_[fd] = std::move(on_readable);
}

void EventLoop::remove_reader(int fd) {
  epoll_ctl(epoll_fd_, EPOLL_CTL_DEL, fd, nullptr);
  readers_.erase(fd);
}

EventLoop::TimerId EventLoop::add_timer(Timestamp deadline, Callback callback) {
  TimerId id = next_timer_id_++;
  auto it = timers_.emplace(deadline, id);
  timer_callbacks_.emplace(id, std::make_pair(it, std::move(callback)));
  return id;
}

void EventLoop::cancel_timer(TimerId id) {
  auto it = timer_callbacks_.find(id);
  if (it == timer_callbacks_.end()) return;
  timers_.erase(it->second.first);
  timer_callbacks_.erase(it);
}

bool EventLoop::move_timer(TimerId id, Timestamp deadline) {
  auto it = timer_callbacks_.find(id);
  if (it == timer_callbacks_.end()) return false;
  auto node = timers_.extract(it->second.first);
  node.key() = deadline;
  it->second.first = timers_.insert(std::move(node));
  return true;
}

std::uint64_t EventLoop::add_before_sleep(Callback hook) {
  before_sleep_.emplace_back(next_hook_id_, std::move(hook));
  return next_hook_id_++;
}

std::uint64_t EventLoop::add_before_sleep_on_request(Callback hook) {
  on_request_.emplace(next_hook_id_, OnRequest{std::move(hook)});
  return next_hook_id_++;
}

void EventLoop::request_before_sleep(std::uint64_t id) {
  auto it = on_request_.find(id);
  if (it == on_request_.end() || it->second.requested) return;
  it->second.requested = true;
  requested_.push_back(id);
}

void EventLoop::remove_before_sleep(std::uint64_t id) {
  if (on_request_.erase(id) != 0) return;  // a stale entry in requested_ is skipped when it comes up
  std::erase_if(before_sleep_, [id](const auto& entry) { return entry.first == id; });
}

void EventLoop::run_before_sleep() {
  // By index: a hook may add or remove hooks.
  for (std::size_t i = 0; i < before_sleep_.size(); ++i) {
    auto hook = before_sleep_[i].second;
    hook();
  }
  std::vector<std::uint64_t> batch;
  while (!requested_.empty()) {
    batch.clear();
    batch.swap(requested_);
    for (std::uint64_t id : batch) {
      auto it = on_request_.find(id);
      if (it == on_request_.end()) continue;
      it->second.requested = false;
      // Copy: the hook may remove itself. A capture of a pointer or two fits std::function's
      // small buffer, so this does not allocate.
      Callback hook = it->second.hook;
      hook();
    }
  }
}

void EventLoop::post(Callback callback) {
  {
    std::lock_guard lock(posted_mutex_);
    posted_.push_back(std::move(callback));
  }
  std::uint64_t one = 1;
  [[maybe_unused]] auto n = write(wake_fd_, &one, sizeof one);
}

void EventLoop::stop() {
  post([this] { stop_requested_ = true; });
}

int EventLoop::wait(epoll_event* events, int max_events) {
  if (!use_timerfd_) {
    // The deadline as the wait's own timeout: the kernel arms a timer only if the thread really
    // sleeps. Re-arming a timerfd whenever the earliest deadline moved cost a system call on almost
    // every iteration, and on this VM a fifth of a busy client's CPU (docs/benchmarks.md).
    timespec timeout{};
    timespec* until = nullptr;
    if (!timers_.empty()) {
      const Timestamp deadline = timers_.begin()->first;
      const Timestamp now = monotonic_now();
      const Timestamp left = deadline > now ? deadline - now : 0;
      timeout.tv_sec = static_cast<time_t>(left / 1'000'000'000ULL);
      timeout.tv_nsec = static_cast<long>(left % 1'000'000'000ULL);
      until = &timeout;
    }
    int n = epoll_pwait2(epoll_fd_, events, max_events, until, nullptr);
    if (n >= 0 || errno != ENOSYS) return n;
    use_timerfd_ = true;  // a kernel older than 5.11
  }
  arm_timerfd();
  return epoll_wait(epoll_fd_, events, max_events, -1);
}

void EventLoop::arm_timerfd() {
  Timestamp deadline = timers_.empty() ? 0 : timers_.begin()->first;
  if (deadline == armed_deadline_) return;
  armed_deadline_ = deadline;
  itimerspec spec{};
  if (deadline != 0) {
    // An absolute deadline already in the past fires at once, as it should.
    spec.it_value.tv_sec = static_cast<time_t>(deadline / 1'000'000'000ULL);
    spec.it_value.tv_nsec = static_cast<long>(deadline % 1'000'000'000ULL);
  }
  timerfd_settime(timer_fd_, TFD_TIMER_ABSTIME, &spec, nullptr);
}

void EventLoop::run_due_timers() {
  // Collect first: a callback may add or cancel timers.
  std::vector<Callback> due;
  while (!timers_.empty() && timers_.begin()->first <= now_) {
    TimerId id = timers_.begin()->second;
    timers_.erase(timers_.begin());
    auto it = timer_callbacks_.find(id);
    due.push_back(std::move(it->second.second));
    timer_callbacks_.erase(it);
  }
  for (auto& callback : due) callback();
}

void EventLoop::run_posted() {
  std::vector<Callback> batch;
  {
    std::lock_guard lock(posted_mutex_);
    batch.swap(posted_);
  }
  for (auto& callback : batch) callback();
}

void EventLoop::run() {
  running_ = true;
  std::array<epoll_event, 64> events{};
  Timestamp woke = 0;
  while (!stop_requested_) {
    run_before_sleep();
    if (woke != 0) iteration_times_.observe(monotonic_now() - woke);
    int n = wait(events.data(), static_cast<int>(events.size()));
    now_ = monotonic_now();
    woke = now_;
    if (n < 0) {
      if (errno == EINTR) continue;
      break;
    }
    for (int i = 0; i < n; ++i) {
      int fd = events[static_cast<std::size_t>(i)].data.fd;
      if (fd == timer_fd_) {
        std::uint64_t expirations;
        [[maybe_unused]] auto r = read(timer_fd_, &expirations, sizeof expirations);
        armed_deadline_ = 0;
      } else if (fd == wake_fd_) {
        std::uint64_t count;
        [[maybe_unused]] auto r = read(wake_fd_, &count, sizeof count);
        run_posted();
      } else if (auto it = readers_.find(fd); it != readers_.end()) {
        // Copy: the callback may remove its own reader.
        Callback callback = it->second;
        callback();
      }
    }
    run_due_timers();
  }
  running_ = false;
  stop_requested_ = false;
}

}  // namespace debra::net
