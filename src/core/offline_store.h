// SPDX-License-Identifier: MIT
#pragma once

#include "core/delivery.h"
#include "core/session_sink.h"

namespace debra::core {

// OfflineStore: the seam for store-and-forward. The router hands it messages whose recipient is not
// online and asks it to drain a recipient's messages when that recipient registers. The durable
// SQLite backend implements it (issue #3); without a store the router drops such messages and says
// so (Outcome::RecipientOffline).
class OfflineStore {
 public:
  virtual ~OfflineStore() = default;

  // Keeps delivery for its offline recipient. Returns false when the store refuses it (quota, disk);
  // the router then reports RecipientOffline.
  virtual bool store(const Delivery& delivery) = 0;

  // Hands every message held for recipient to sink, oldest first per sender.
  virtual void drain(ClientId recipient, SessionSink& sink) = 0;
};

}  // namespace debra::core
