// SPDX-License-Identifier: MIT
//
// What the server threads share: the routing core behind one lock (docs/architecture.md, "Threads").
#pragma once

#include <mutex>

#include "core/rate_limit.h"
#include "core/router.h"

namespace debra::server {

// RateLimiting: what every session shares for the per-id rate limits: the buckets, and a budget
// for the log lines that report breaches, so that many sessions over their limits cannot flood the
// log.
struct RateLimiting {
  explicit RateLimiting(core::RateLimits limits) : limiter(limits) {}
  core::RateLimiter limiter;
  core::TokenBucket log_budget{core::Rate(10, 20)};
};

// SharedCore: the router (and through it the store), the rate limiter, and the application state of
// every session (Session's members and its thread's Mailbox), behind one lock. A thread holding it
// may route, acknowledge and register, and call any session's SessionSink methods; the QUIC side of
// a session (its connection, socket and loop) stays with the thread that owns it, lock or not.
//
// The lock is held for the application's share of a message's work (framing, decoding, routing,
// the store), while the QUIC share (packet protection, ngtcp2, system calls), most of the cost, runs
// on every thread in parallel.
class SharedCore {
 public:
  SharedCore(core::Router& routing, RateLimiting& limits) : router(routing), rate_limiting(limits) {}
  SharedCore(const SharedCore&) = delete;
  SharedCore& operator=(const SharedCore&) = delete;

  // Guard: holds the lock for a scope. A thread that already holds it gets an empty guard: a
  // session's entry points nest (closing a connection calls the session's on_closing), and each
  // takes the lock.
  class [[nodiscard]] Guard {
   public:
    explicit Guard(SharedCore& core);
    ~Guard();
    Guard(const Guard&) = delete;
    Guard& operator=(const Guard&) = delete;

   private:
    SharedCore* locked_ = nullptr;
  };
  Guard lock() { return Guard(*this); }

  core::Router& router;
  RateLimiting& rate_limiting;

 private:
  std::mutex mutex_;
};

}  // namespace debra::server
