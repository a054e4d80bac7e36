// SPDX-License-Identifier: MIT
//
// The routing core: which ids are online, and where each message goes. It knows nothing of QUIC,
// sockets, threads or clocks; the server's bridge drives it from the event-loop thread, and tests
// drive it directly.
#pragma once

#include <cstddef>
#include <cstdint>
#include <unordered_map>

#include "core/delivery.h"
#include "core/offline_store.h"
#include "core/remote_route.h"
#include "core/session_sink.h"

namespace debra::core {

// RouterLimits: the bounds the router enforces.
struct RouterLimits {
  // max_queued_bytes: a recipient whose connection holds more than this many bytes of frames not
  // yet acknowledged by its QUIC peer is a slow consumer; new messages for it are refused with
  // Outcome::RecipientBusy (the sender is told, nothing is dropped silently, other senders and
  // recipients are unaffected). Must be at least the maximum frame size.
  std::size_t max_queued_bytes = 16 * 1024 * 1024;
};

// RouterStats: counters since the router was created.
struct RouterStats {
  std::uint64_t registrations = 0;
  std::uint64_t takeovers = 0;           // registrations that displaced an online connection
  std::uint64_t delivered = 0;           // handed to an online recipient's sink
  std::uint64_t offline = 0;             // recipient not online and no store or remote took it
  std::uint64_t stored = 0;              // handed to the offline store
  std::uint64_t forwarded_remote = 0;    // handed to another node
  std::uint64_t busy = 0;                // refused: recipient's queue full
  std::uint64_t invalid_recipient = 0;   // refused: recipient id out of range
};

// Router: the registry of online ids and the delivery decision for each message. Single-threaded:
// every call comes from the thread that owns the router. Sinks are borrowed; a sink must be
// unregistered (or displaced) before it is destroyed.
//
// Ordering: route() hands each message to the recipient's sink synchronously, in call order, so
// messages from one sender reach each recipient in the order the sender sent them as long as the
// caller routes a sender's messages in the order they arrived (the bridge does) and the sink keeps
// its order per sender (the bridge writes one sender's messages to one stream).
class Router {
 public:
  explicit Router(RouterLimits limits = {}, OfflineStore* store = nullptr, RemoteRoute* remote = nullptr);
  Router(const Router&) = delete;
  Router& operator=(const Router&) = delete;

  // Registers sink as the connection of id, which must be valid. Newest wins: if another sink holds
  // id, it is removed and its on_displaced() is called before this returns, and the takeover is
  // counted. Re-registering the same sink for the same id is a no-op. After registering, messages the
  // offline store holds for id are handed to the sink (OfflineStore::drain).
  void register_client(ClientId id, SessionSink& sink);

  // Removes sink as the connection of id. A no-op if sink no longer holds id (it was displaced), so
  // a displaced connection's cleanup cannot unregister its successor.
  void unregister_client(ClientId id, SessionSink& sink);

  // Decides where delivery goes and hands it there: the online recipient's sink, else the remote
  // route, else the offline store, else nowhere (RecipientOffline). Never blocks.
  Outcome route(const Delivery& delivery);

  // The sink registered for id, or nullptr.
  SessionSink* find(ClientId id) const;

  std::size_t online_count() const { return online_.size(); }
  const RouterStats& stats() const { return stats_; }
  const RouterLimits& limits() const { return limits_; }

 private:
  RouterLimits limits_;
  OfflineStore* store_;
  RemoteRoute* remote_;
  std::unordered_map<ClientId, SessionSink*> online_;
  RouterStats stats_;
};

}  // namespace debra::core
