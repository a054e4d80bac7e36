// SPDX-License-Identifier: MIT
#pragma once

#include <cstddef>
#include <string_view>

#include "core/delivery.h"

namespace debra::core {

// SessionSink: the router's view of one registered connection, both as a recipient (deliver) and as
// a sender (on_outcome, on_receipt). Implemented by the server's bridge and by tests; owned by its
// implementer. No method may call back into the Router.
class SessionSink {
 public:
  virtual ~SessionSink() = default;

  // Queues delivery for writing to the connection, keeping the order of calls.
  virtual void deliver(const Delivery& delivery) = 0;

  // Bytes queued on this connection and not yet acknowledged by the peer; the router's
  // slow-consumer bound is checked against it.
  virtual std::size_t queued_bytes() const = 0;

  // A newer connection registered the same id; this one is no longer registered and should be
  // closed with SessionTakenOver.
  virtual void on_displaced() = 0;

  // The final outcome of a message this connection sent that route() answered with Stored: Stored
  // once the store committed it, StoreUnavailable if the commit failed.
  virtual void on_outcome(std::uint64_t /*message_id*/, Outcome /*outcome*/, std::string_view /*reason*/) {}

  // A message this connection sent with a receipt request was acknowledged by its recipient
  // (delivered) or dropped at its time-to-live (!delivered).
  virtual void on_receipt(std::uint64_t /*message_id*/, ClientId /*recipient*/, bool /*delivered*/) {}
};

}  // namespace debra::core
