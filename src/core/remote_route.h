// SPDX-License-Identifier: MIT
#pragma once

#include "core/delivery.h"

namespace debra::core {

// RemoteRoute: the seam for cluster mode. Given a recipient that is not connected here, it forwards
// the message to the node that holds the recipient, if any. The NATS backend implements it (roadmap).
class RemoteRoute {
 public:
  virtual ~RemoteRoute() = default;

  // Forwards delivery to the node where its recipient is online. Returns false when no node holds
  // the recipient; the router then falls back to the offline store.
  virtual bool forward(const Delivery& delivery) = 0;
};

}  // namespace debra::core
