// SPDX-License-Identifier: MIT
#pragma once

#include <cstddef>

#include "core/delivery.h"

namespace debra::core {

// SessionSink: where the router puts messages for one registered connection. Implemented by the
// server's bridge (a QUIC connection) and by tests; owned by its implementer.
class SessionSink {
 public:
  virtual ~SessionSink() = default;

  // Queues delivery for writing to the connection. Must not call back into the Router. The sink
  // keeps deliveries from one sender in the order it received them.
  virtual void deliver(const Delivery& delivery) = 0;

  // Bytes queued on this connection and not yet acknowledged by the peer; the router's
  // slow-consumer bound is checked against it.
  virtual std::size_t queued_bytes() const = 0;

  // A newer connection registered the same id; this one is no longer registered and should be
  // closed with SessionTakenOver. Must not call back into the Router.
  virtual void on_displaced() = 0;
};

}  // namespace debra::core
