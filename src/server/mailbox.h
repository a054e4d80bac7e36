// SPDX-License-Identifier: MIT
#pragma once

#include <cstdint>
#include <string>
#include <thread>
#include <vector>

#include "core/delivery.h"
#include "net/event_loop.h"

namespace debra::server {

class Session;

// SinkCall: one SessionSink call the router made on a thread other than the session's.
struct SinkCall {
  enum class Kind : std::uint8_t { Deliver, Outcome, Receipt, Displaced };
  Kind kind;
  Session* session;
  core::Delivery delivery{};  // Deliver
  std::uint64_t message_id = 0;  // Outcome, Receipt
  core::Outcome outcome = core::Outcome::Stored;  // Outcome
  std::string reason{};  // Outcome
  core::ClientId recipient = 0;  // Receipt
  bool delivered = false;  // Receipt
};

// Mailbox: the router's calls for the sessions of one server thread, made while another thread held
// the core lock. They are applied on the owning thread, in the order they were made, when its loop
// next handles its sessions' input (drain). Everything but the owner check is guarded by the core
// lock.
class Mailbox {
 public:
  explicit Mailbox(net::EventLoop& loop) : loop_(loop) {}
  Mailbox(const Mailbox&) = delete;
  Mailbox& operator=(const Mailbox&) = delete;

  // Makes the calling thread the owner: the thread that runs loop.
  void bind_to_this_thread() { owner_ = std::this_thread::get_id(); }
  bool on_owner_thread() const { return std::this_thread::get_id() == owner_; }

  // Queues call for its session's thread, and wakes that thread if nothing was queued before.
  void post(SinkCall call);
  // Drops every queued call for session, which is about to be destroyed.
  void forget(const Session* session);
  // On the owner thread: applies everything queued.
  void drain();

 private:
  net::EventLoop& loop_;
  std::thread::id owner_;
  std::vector<SinkCall> calls_;
  std::vector<SinkCall> draining_;  // kept for its capacity
};

}  // namespace debra::server
