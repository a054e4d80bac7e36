// SPDX-License-Identifier: MIT
#include "server/mailbox.h"

#include <algorithm>

#include "server/session_bridge.h"

namespace debra::server {

void Mailbox::post(SinkCall call) {
  bool wake = calls_.empty();
  calls_.push_back(std::move(call));
  // One wake-up for everything queued until the owner drains: a batch's deliveries cost one
  // eventfd write, not one each. The owner drains before its loop sleeps (Worker).
  if (wake) loop_.post([] {});
}

void Mailbox::forget(const Session* session) {
  std::erase_if(calls_, [session](const SinkCall& call) { return call.session == session; });
}

void Mailbox::drain() {
  draining_.swap(calls_);
  for (SinkCall& call : draining_) call.session->apply(call);
  draining_.clear();
}

}  // namespace debra::server
