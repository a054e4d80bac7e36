// SPDX-License-Identifier: MIT
#include "core/router.h"

#include <cassert>

namespace debra::core {

Router::Router(RouterLimits limits, OfflineStore* store, RemoteRoute* remote)
    : limits_(limits), store_(store), remote_(remote) {}

void Router::register_client(ClientId id, SessionSink& sink) {
  assert(is_valid_client_id(id));
  // An invalid id never reaches the registry, even from a caller that skipped its check: such an
  // entry could never be routed to and would only leak.
  if (!is_valid_client_id(id)) return;
  auto [it, inserted] = online_.try_emplace(id, &sink);
  if (!inserted) {
    if (it->second == &sink) return;
    SessionSink* displaced = it->second;
    it->second = &sink;
    ++stats_.takeovers;
    // The registry already names the new sink, so the displaced one's cleanup (unregister_client)
    // is a no-op whenever it runs.
    displaced->on_displaced();
  }
  ++stats_.registrations;
  if (store_ != nullptr) store_->drain(id, sink);
}

void Router::unregister_client(ClientId id, SessionSink& sink) {
  auto it = online_.find(id);
  if (it != online_.end() && it->second == &sink) online_.erase(it);
}

Outcome Router::route(const Delivery& delivery) {
  if (!is_valid_client_id(delivery.recipient)) {
    ++stats_.invalid_recipient;
    return Outcome::InvalidRecipient;
  }
  if (auto it = online_.find(delivery.recipient); it != online_.end()) {
    SessionSink& sink = *it->second;
    const std::size_t frame_size = delivery.frame ? delivery.frame->size() : 0;
    const std::size_t queued = sink.queued_bytes();
    // Written as a subtraction so that a sink reporting a huge backlog cannot overflow the sum.
    if (frame_size > limits_.max_queued_bytes || queued > limits_.max_queued_bytes - frame_size) {
      ++stats_.busy;
      return Outcome::RecipientBusy;
    }
    sink.deliver(delivery);
    ++stats_.delivered;
    return Outcome::Delivered;
  }
  if (remote_ != nullptr && remote_->forward(delivery)) {
    ++stats_.forwarded_remote;
    return Outcome::ForwardedRemote;
  }
  if (store_ != nullptr && store_->store(delivery)) {
    ++stats_.stored;
    return Outcome::Stored;
  }
  ++stats_.offline;
  return Outcome::RecipientOffline;
}

SessionSink* Router::find(ClientId id) const {
  auto it = online_.find(id);
  return it == online_.end() ? nullptr : it->second;
}

}  // namespace debra::core
