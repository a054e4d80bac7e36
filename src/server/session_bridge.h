// SPDX-License-Identifier: MIT
//
// The only code that sees both QUIC streams and debra messages: one Session per connection turns the
// bytes of the client's stream into frames and messages for the router, and the router's deliveries
// into frames on the client's streams.
#pragma once

#include <array>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <vector>

#include "auth/token.h"
#include "core/router.h"
#include "quic/connection.h"
#include "server/session_connection.h"
#include "wire/codec.h"

namespace debra::server {

// SessionConfig: the protocol limits a session enforces and announces.
struct SessionConfig {
  // max_frame_size: the largest frame body accepted (and announced in Welcome).
  std::uint32_t max_frame_size = wire::kDefaultMaxFrameSize;
  // delivery_lanes: native mode: unidirectional streams the router delivers on; a sender's messages
  // always use lane (sender mod lanes), so one slow or lossy lane does not hold up the others.
  std::uint32_t delivery_lanes = 4;
  // require_token: --auth token: a native registration must carry a token that verifies with
  // token_secret and names the id it registers; otherwise the session fails with Unauthenticated.
  bool require_token = false;
  auth::TokenSecret token_secret{};
  // allow_legacy: legacy clients (no ALPN) cannot carry a token; false closes them with
  // Unauthenticated at their registration. With require_token, an allowed legacy client registers
  // any id unauthenticated (docs/security.md).
  bool allow_legacy = true;
};

// SessionCounters: protocol events across all sessions (owned by the server).
struct SessionCounters {
  std::uint64_t protocol_errors = 0;
  std::uint64_t auth_refusals = 0;  // registrations closed with Unauthenticated
  std::uint64_t messages_in = 0;
};

// Session: the application side of one client connection: ConnectionHandler towards QUIC,
// SessionSink towards the router. Owned by the Server; lives until its connection closes.
class Session final : public quic::ConnectionHandler, public core::SessionSink {
 public:
  enum class Mode { Pending, Legacy, Native };

  Session(quic::Connection& connection, core::Router& router, const SessionConfig& config,
          SessionCounters& counters, std::function<void(Session&)> on_finished);
  // Over any SessionConnection, which must outlive the session (the fuzz target's in-memory one).
  Session(SessionConnection& connection, core::Router& router, const SessionConfig& config,
          SessionCounters& counters, std::function<void(Session&)> on_finished);

  // Ends the session because the server is stopping: native clients get an Error frame first.
  void shut_down();

  Mode mode() const { return mode_; }
  core::ClientId client_id() const { return client_id_; }

  // quic::ConnectionHandler
  void on_handshake_completed() override;
  void on_stream_data(quic::StreamId id, std::span<const std::uint8_t> data, bool fin) override;
  void on_closing(const quic::CloseInfo& info) override;
  void on_closed(const quic::CloseInfo& info) override;

  void on_data_acknowledged() override;

  // core::SessionSink
  void deliver(const core::Delivery& delivery) override;
  std::size_t queued_bytes() const override { return connection_.queued_bytes(); }
  void on_displaced() override;
  void on_outcome(std::uint64_t message_id, core::Outcome outcome, std::string_view reason) override;
  void on_receipt(std::uint64_t message_id, core::ClientId recipient, bool delivered) override;

 private:
  void handle_frame(std::span<const std::uint8_t> body);
  void handle_registration(const wire::Message& message);
  // --auth token / --legacy deny: why this registration may not have its id, or "" if it may.
  std::string authentication_failure(const wire::Message& message) const;
  void handle_client_to_client(const wire::Message& message);
  void handle_ack(const wire::Message& message);
  void reply(std::uint64_t message_id, wire::DeliveryStatus status, wire::ErrorCode code, std::string_view reason);
  // Ends the session for a peer's fault or a policy decision: logs one line, tells a native client
  // why in an Error frame, and closes the connection with code.
  void fail(wire::ErrorCode code, std::string reason);
  quic::StreamId lane_for(core::ClientId sender);

  std::unique_ptr<SessionConnection> owned_connection_;  // the QuicSessionConnection, if we made it
  SessionConnection& connection_;
  core::Router& router_;
  const SessionConfig& config_;
  SessionCounters& counters_;
  std::function<void(Session&)> on_finished_;
  Mode mode_ = Mode::Pending;
  wire::FrameReader reader_;
  quic::StreamId stream_ = -1;  // the client's bidirectional stream
  std::vector<quic::StreamId> lanes_;  // native: delivery streams by lane, -1 until opened
  // Legacy clients cannot acknowledge: a delivery counts as taken once QUIC acknowledged its last
  // byte. (stream offset just past the frame, sequence), in stream order.
  std::deque<std::pair<std::uint64_t, std::uint64_t>> awaiting_transport_ack_;
  core::ClientId client_id_ = 0;
  bool registered_ = false;
  bool closing_ = false;
};

}  // namespace debra::server
