// SPDX-License-Identifier: MIT
//
// The routing core: which ids are online, and where each message goes. It knows nothing of QUIC,
// sockets, threads or clocks; the server's bridge drives it from the event-loop thread, and tests
// drive it directly.
#pragma once

#include <cstddef>
#include <cstdint>
#include <deque>
#include <limits>
#include <string>
#include <unordered_map>
#include <unordered_set>
#include <utility>
#include <vector>

#include "core/delivery.h"
#include "core/message_store.h"
#include "core/remote_route.h"
#include "core/send_policy.h"
#include "core/session_sink.h"

namespace debra::core {

// RouterLimits: the bounds the router enforces.
struct RouterLimits {
  // max_queued_bytes: the most bytes a recipient's connection may hold that its QUIC peer has not
  // acknowledged yet. Without a store, a message that would exceed it is refused (RecipientBusy);
  // with a store, it waits in the recipient's inbox until the connection has room. Must be at least
  // the maximum frame size.
  std::size_t max_queued_bytes = 16 * 1024 * 1024;
  // fill_batch: how many stored messages are read from the store at a time for one recipient.
  std::size_t fill_batch = 256;
  // fill_bytes: about how many payload bytes one flush reads from the store for one recipient (at
  // least one message's); the rest follows as its peer acknowledges what it got (on_sink_ready).
  // The store may read them from disk on the router's thread: a returning recipient with a full
  // connection's worth waiting held every connection up for 23 ms in one go.
  std::size_t fill_bytes = 256 * 1024;
};

// RouterStats: counters since the router was created.
struct RouterStats {
  std::uint64_t registrations = 0;
  std::uint64_t takeovers = 0;           // registrations that displaced an online connection
  std::uint64_t delivered = 0;           // handed to an online recipient's sink
  std::uint64_t offline = 0;             // no store: recipient not online, dropped
  std::uint64_t stored = 0;              // committed to the store
  std::uint64_t forwarded_remote = 0;    // handed to another node
  std::uint64_t busy = 0;                // no store: refused, recipient's queue full
  std::uint64_t invalid_recipient = 0;   // refused: recipient id out of range
  std::uint64_t quota_exceeded = 0;      // refused: recipient's inbox full
  std::uint64_t store_unavailable = 0;   // refused or rolled back: the store could not write
  std::uint64_t forbidden = 0;           // refused: the send policy does not allow the pair
  std::uint64_t acknowledged = 0;        // recipients' acknowledgements that removed a message
  std::uint64_t expired = 0;             // dropped at their time-to-live
};

// Router: the registry of online ids and the delivery decision for each message. Single-threaded:
// every call comes from the thread that owns the router. Sinks are borrowed; a sink must be
// unregistered (or displaced) before it is destroyed.
//
// Two modes:
// - Without a store (ephemeral, the original debra's semantics): route() hands a message to its
//   online recipient at once, or drops it (RecipientOffline) or refuses it (RecipientBusy).
// - With a store (durable): route() appends the message to the store and answers Stored; flush()
//   commits the batch (one fsync for everything routed since the last flush). Once the batch is
//   durable, which may be after flush() returned (MessageStore::commit_async), the router tells
//   each sender (SessionSink::on_outcome) and hands the messages to online recipients. Nothing
//   reaches a recipient before it is durable. A message leaves
//   the store only when its recipient acknowledges it (acknowledge()) or it expires (expire()).
//   A recipient that registers receives everything the store holds for it, oldest first.
//
// Ordering: a recipient receives each sender's messages in the order the router saw them, as long
// as the caller routes a sender's messages in the order they arrived (the bridge does) and the sink
// keeps its order per sender (the bridge writes one sender's messages to one stream).
class Router {
 public:
  explicit Router(RouterLimits limits = {}, MessageStore* store = nullptr, RemoteRoute* remote = nullptr);
  Router(const Router&) = delete;
  Router& operator=(const Router&) = delete;

  // Registers sink as the connection of id, which must be valid. Newest wins: if another sink holds
  // id, it is removed and its on_displaced() is called before this returns, and the takeover is
  // counted. Re-registering the same sink for the same id is a no-op. With a store, the stored
  // messages for id reach the sink from the next flush() on.
  void register_client(ClientId id, SessionSink& sink);

  // Removes sink as the connection of id. A no-op if sink no longer holds id (it was displaced), so
  // a displaced connection's cleanup cannot unregister its successor. Outcomes still due to sink
  // are dropped.
  void unregister_client(ClientId id, SessionSink& sink);

  // Routes one message from sender (the sink of the sending connection, for the outcome of a stored
  // message; may be null). Never blocks. After QuotaExceeded, StoreUnavailable or Forbidden,
  // refusal_reason() says why, for the sender. The send policy is checked here, after the recipient
  // id and before the store, so that every way into routing obeys it and nothing it refuses is
  // stored.
  Outcome route(const Submission& message, SessionSink* sender);
  const std::string& refusal_reason() const { return refusal_reason_; }

  // The recipient took the message with this sequence: remove it from the store, and send the
  // sender its receipt if it asked for one and is online. A sequence that is not the recipient's is
  // ignored.
  void acknowledge(ClientId recipient, std::uint64_t sequence);

  // id's connection has room again (its peer acknowledged data): stored messages waiting for it are
  // handed over at the next flush().
  void on_sink_ready(ClientId id);

  // Durable mode: starts the commit of what was routed and acknowledged since the last flush, and
  // hands durable waiting messages to online recipients. A batch's senders are answered and its
  // messages delivered when its commit completes. Call once per event-loop iteration, after the
  // iteration's input was handled.
  void flush();

  // Durable mode: drops messages older than the store's time-to-live; returns how many.
  std::size_t expire(std::int64_t now_ms);

  // Replaces the send policy; it decides from the next route() on. Messages accepted before stay
  // accepted. The default policy allows every pair.
  void set_policy(SendPolicy policy) { policy_ = std::move(policy); }
  const SendPolicy& policy() const { return policy_; }

  // Milliseconds since the epoch, for message deadlines; the server sets it from its clock.
  void set_wall_clock_ms(std::int64_t now_ms) { now_ms_ = now_ms; }

  SessionSink* find(ClientId id) const;
  std::size_t online_count() const { return online_.size(); }
  const RouterStats& stats() const { return stats_; }
  const RouterLimits& limits() const { return limits_; }
  bool durable() const { return store_ != nullptr; }

 private:
  // Online: a registered connection and how far it has been fed from the store.
  struct Online {
    SessionSink* sink = nullptr;
    std::uint64_t cursor = 0;  // the highest sequence handed to sink
    bool caught_up = false;    // sink has every committed message; new ones may go straight to it
    bool awaits_commit = false;  // the last fill stopped at a message not durable yet
  };
  // Pending: a message appended in the open batch, answered once the batch commits.
  struct Pending {
    SessionSink* sender_sink;
    std::uint64_t message_id;
    Delivery delivery;  // frame null for a duplicate, which is answered but not delivered again
  };
  // Batch: the messages of one commit, and the lowest sequence among them (kNone if none).
  struct Batch {
    std::vector<Pending> pending;
    std::uint64_t first_sequence;
  };
  static constexpr std::uint64_t kNone = std::numeric_limits<std::uint64_t>::max();

  Outcome route_ephemeral(const Submission& message);
  bool fits(const SessionSink& sink, std::size_t frame_size) const;
  void fill(ClientId id, Online& online);
  void hand_over(Online& online, const Delivery& delivery);
  void on_committed(Result<void, Error> committed);
  void fill_waiting();
  void forget_sender(const SessionSink* sink);
  // The lowest sequence not yet durable: fill() hands over only what is below it.
  std::uint64_t first_not_durable() const;

  RouterLimits limits_;
  MessageStore* store_;
  RemoteRoute* remote_;
  wire::FrameArena frames_;  // where deliveries are encoded: no allocation per message
  std::unordered_map<ClientId, Online> online_;
  std::vector<Pending> pending_;
  std::uint64_t pending_first_sequence_ = kNone;
  std::deque<Batch> committing_;  // started, not yet durable; oldest first
  std::unordered_set<ClientId> needs_fill_;
  std::int64_t now_ms_ = 0;
  SendPolicy policy_;
  std::string refusal_reason_;
  RouterStats stats_;
};

}  // namespace debra::core
