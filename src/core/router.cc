// SPDX-License-Identifier: MIT
#include "core/router.h"

#include <algorithm>
#include <cassert>

namespace debra::core {

Router::Router(RouterLimits limits, MessageStore* store, RemoteRoute* remote)
    : limits_(limits), store_(store), remote_(remote) {}

void Router::register_client(ClientId id, SessionSink& sink) {
  assert(is_valid_client_id(id));
  // An invalid id never reaches the registry, even from a caller that skipped its check: such an
  // entry could never be routed to and would only leak.
  if (!is_valid_client_id(id)) return;
  auto [it, inserted] = online_.try_emplace(id, Online{&sink});
  if (!inserted) {
    if (it->second.sink == &sink) return;
    SessionSink* displaced = it->second.sink;
    // Everything not yet acknowledged goes to the new connection again, from the start.
    it->second = Online{&sink};
    ++stats_.takeovers;
    // A displaced sink may be gone before the next flush: no outcomes for it.
    forget_sender(displaced);
    // The registry already names the new sink, so the displaced one's cleanup (unregister_client)
    // is a no-op whenever it runs.
    displaced->on_displaced();
  }
  ++stats_.registrations;
  if (store_ != nullptr) {
    needs_fill_.insert(id);
  } else {
    it->second.caught_up = true;
  }
}

void Router::unregister_client(ClientId id, SessionSink& sink) {
  auto it = online_.find(id);
  if (it != online_.end() && it->second.sink == &sink) {
    online_.erase(it);
    needs_fill_.erase(id);
  }
  forget_sender(&sink);
}

void Router::forget_sender(const SessionSink* sink) {
  for (Pending& p : pending_) {
    if (p.sender_sink == sink) p.sender_sink = nullptr;
  }
  for (Batch& batch : committing_) {
    for (Pending& p : batch.pending) {
      if (p.sender_sink == sink) p.sender_sink = nullptr;
    }
  }
}

bool Router::fits(const SessionSink& sink, std::size_t frame_size) const {
  const std::size_t queued = sink.queued_bytes();
  // Written as a subtraction so that a sink reporting a huge backlog cannot overflow the sum.
  return frame_size <= limits_.max_queued_bytes && queued <= limits_.max_queued_bytes - frame_size;
}

Outcome Router::route(const Submission& message, SessionSink* sender) {
  if (!is_valid_client_id(message.recipient)) {
    ++stats_.invalid_recipient;
    return Outcome::InvalidRecipient;
  }
  if (PolicyDecision decision = policy_.decide(message.sender, message.recipient); !decision.allowed) {
    ++stats_.forbidden;
    refusal_reason_ = policy_.refusal_reason(message.sender, message.recipient, decision);
    return Outcome::Forbidden;
  }
  if (store_ == nullptr) return route_ephemeral(message);

  Delivery delivery{message.sender, message.recipient, message.message_id, nullptr, 0};
  AppendResult appended = store_->append(delivery, message.payload, message.receipt_requested, now_ms_);
  switch (appended.status) {
    case AppendStatus::Stored:
      delivery.sequence = appended.sequence;
      delivery.frame = wire::encode_delivery(frames_, message.sender, message.recipient, message.message_id,
                                             message.payload, appended.sequence);
      pending_first_sequence_ = std::min(pending_first_sequence_, appended.sequence);
      pending_.push_back(Pending{sender, message.message_id, std::move(delivery)});
      return Outcome::Stored;
    case AppendStatus::Duplicate:
      // A retry of a message the store already has: answered like the first, delivered once.
      pending_.push_back(Pending{sender, message.message_id, std::move(delivery)});
      return Outcome::Stored;
    case AppendStatus::QuotaExceeded:
      ++stats_.quota_exceeded;
      refusal_reason_ = std::move(appended.reason);
      return Outcome::QuotaExceeded;
    case AppendStatus::Unavailable:
      ++stats_.store_unavailable;
      refusal_reason_ = std::move(appended.reason);
      return Outcome::StoreUnavailable;
  }
  return Outcome::StoreUnavailable;
}

Outcome Router::route_ephemeral(const Submission& message) {
  auto frame = wire::encode_delivery(frames_, message.sender, message.recipient, message.message_id, message.payload);
  Delivery delivery{message.sender, message.recipient, message.message_id, std::move(frame), 0};
  if (auto it = online_.find(message.recipient); it != online_.end()) {
    SessionSink& sink = *it->second.sink;
    if (!fits(sink, delivery.frame.size())) {
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
  ++stats_.offline;
  return Outcome::RecipientOffline;
}

void Router::acknowledge(ClientId recipient, std::uint64_t sequence) {
  if (store_ == nullptr) return;
  auto acked = store_->acknowledge(recipient, sequence);
  if (!acked) return;
  ++stats_.acknowledged;
  if (!acked->receipt_requested) return;
  if (auto it = online_.find(acked->sender); it != online_.end()) {
    it->second.sink->on_receipt(acked->message_id, recipient, true);
  }
}

void Router::on_sink_ready(ClientId id) {
  auto it = online_.find(id);
  if (it != online_.end() && !it->second.caught_up) needs_fill_.insert(id);
}

void Router::hand_over(Online& online, const Delivery& delivery) {
  online.sink->deliver(delivery);
  online.cursor = delivery.sequence;
  ++stats_.delivered;
}

void Router::flush() {
  if (store_ == nullptr) return;
  // In sync mode "always" the store has committed already; the batch still needs its answers.
  if (store_->dirty() || !pending_.empty()) {
    committing_.push_back(Batch{std::move(pending_), pending_first_sequence_});
    pending_.clear();
    pending_first_sequence_ = kNone;
    store_->commit_async([this](Result<void, Error> committed) { on_committed(std::move(committed)); });
  }
  fill_waiting();
}

std::uint64_t Router::first_not_durable() const {
  std::uint64_t first = pending_first_sequence_;
  for (const Batch& batch : committing_) first = std::min(first, batch.first_sequence);
  return first;
}

void Router::on_committed(Result<void, Error> committed) {
  Batch batch = std::move(committing_.front());
  committing_.pop_front();
  if (!committed) {
    stats_.store_unavailable += batch.pending.size();
    for (Pending& p : batch.pending) {
      if (p.sender_sink != nullptr) {
        p.sender_sink->on_outcome(p.message_id, Outcome::StoreUnavailable, committed.error().message);
      }
    }
    return;
  }
  for (Pending& p : batch.pending) {
    if (p.delivery.frame) ++stats_.stored;
    if (p.sender_sink != nullptr) p.sender_sink->on_outcome(p.message_id, Outcome::Stored, {});
    if (!p.delivery.frame) continue;
    auto it = online_.find(p.delivery.recipient);
    if (it == online_.end()) continue;
    Online& online = it->second;
    if (p.delivery.sequence <= online.cursor) continue;  // a fill handed it over already
    // Only a caught-up connection takes new messages directly; one that is still being fed from
    // the store reads this message from there, in order, now that it is durable.
    if (online.caught_up && fits(*online.sink, p.delivery.frame.size())) {
      hand_over(online, p.delivery);
    } else if (online.caught_up || online.awaits_commit) {
      online.caught_up = false;
      needs_fill_.insert(p.delivery.recipient);
    }
  }
  fill_waiting();
}

void Router::fill_waiting() {
  if (needs_fill_.empty()) return;
  std::vector<ClientId> ids(needs_fill_.begin(), needs_fill_.end());
  needs_fill_.clear();
  for (ClientId id : ids) {
    if (auto it = online_.find(id); it != online_.end()) fill(id, it->second);
  }
}

void Router::fill(ClientId id, Online& online) {
  // Up to the queue bound and about fill_bytes; the rest follows as the peer acknowledges
  // (on_sink_ready), from the cursor on.
  const std::size_t batch_size = std::max<std::size_t>(limits_.fill_batch, 1);
  const std::size_t budget = std::max<std::size_t>(limits_.fill_bytes, 1);
  // The store also holds what is not durable yet; that is handed over when its commit completes.
  const std::uint64_t not_durable = first_not_durable();
  online.awaits_commit = false;
  // Payload bytes read since the last message handed over: the budget counts only once something
  // was, since only a handover brings the acknowledgement that resumes the fill.
  std::size_t read = 0;
  bool handed = false;
  for (;;) {
    const std::size_t ask = handed ? budget - std::min(read, budget) : budget;
    if (ask == 0) return;
    auto batch = store_->pending(id, online.cursor, batch_size, ask);
    std::size_t batch_bytes = 0;
    for (const StoredMessage& m : batch) batch_bytes += m.payload.size();
    for (StoredMessage& m : batch) {
      if (m.sequence >= not_durable) {
        online.awaits_commit = true;
        return;
      }
      if (m.expires_at_ms != 0 && m.expires_at_ms <= now_ms_) {
        online.cursor = m.sequence;  // expire() reports it
        continue;
      }
      // The frame is the payload plus a small envelope: check before encoding.
      if (!fits(*online.sink, m.payload.size() + wire::kMaxEnvelopeOverhead)) return;
      Delivery delivery{m.sender, m.recipient, m.message_id,
                        wire::encode_delivery(frames_, m.sender, m.recipient, m.message_id, m.payload, m.sequence),
                        m.sequence};
      hand_over(online, delivery);
      handed = true;
    }
    read = handed ? read + batch_bytes : 0;
    // A batch cut short by the byte bound says nothing about what is left in the store.
    if (batch.size() < batch_size && batch_bytes < ask) {
      online.caught_up = true;
      return;
    }
  }
}

std::size_t Router::expire(std::int64_t now_ms) {
  now_ms_ = now_ms;
  if (store_ == nullptr) return 0;
  auto expired = store_->expire(now_ms);
  stats_.expired += expired.size();
  for (const StoredMessage& m : expired) {
    if (!m.receipt_requested) continue;
    if (auto it = online_.find(m.sender); it != online_.end()) {
      it->second.sink->on_receipt(m.message_id, m.recipient, false);
    }
  }
  return expired.size();
}

SessionSink* Router::find(ClientId id) const {
  auto it = online_.find(id);
  return it == online_.end() ? nullptr : it->second.sink;
}

}  // namespace debra::core
