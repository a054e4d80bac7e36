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
#include "net/event_loop.h"
#include "quic/connection.h"
#include "server/mailbox.h"
#include "server/session_connection.h"
#include "server/shared_core.h"
#include "util/log.h"
#include "wire/codec.h"

namespace debra::server {

// The optional protocol features this router implements (docs/protocol.md, "Features"): what it
// announces and uses unless --protocol-features names fewer (SessionConfig::features).
inline constexpr std::uint64_t kRouterFeatures = static_cast<std::uint64_t>(wire::Feature::BatchedAcks) |
                                                 static_cast<std::uint64_t>(wire::Feature::BatchedReplies);

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
  // require_certificate: --auth mtls: a native registration must come over a connection whose client
  // certificate verified against --client-ca and names the id it registers (auth/certificate.h).
  bool require_certificate = false;
  // allow_legacy: legacy clients (no ALPN) cannot carry a token; false closes them with
  // Unauthenticated at their registration. With require_token or require_certificate, an allowed
  // legacy client registers any id unauthenticated (docs/security.md).
  bool allow_legacy = true;
  // features: the optional features announced in Welcome and used (--protocol-features). Without
  // BatchedAcks an Ack's sequences are ignored and without BatchedReplies every Reply is single, as by
  // a router that predates them.
  std::uint64_t features = kRouterFeatures;
};

// SessionCounters: protocol events across the sessions of one server thread (owned by its Worker).
struct SessionCounters {
  std::uint64_t protocol_errors = 0;
  std::uint64_t auth_refusals = 0;  // registrations closed with Unauthenticated
  std::uint64_t messages_in = 0;
  std::uint64_t policy_refusals = 0;  // messages the send policy refused (native: Rejected; legacy: dropped)
  // Refusals are logged through this, shared by all sessions: a sender can cause one per message.
  log::RateLimit policy_log;
  std::uint64_t rate_refusals = 0;  // native messages refused with RateLimited
  std::uint64_t rate_delays = 0;    // legacy messages held back until their sender's bucket refilled

  // Adds other's counts (the log budget stays this one's).
  SessionCounters& operator+=(const SessionCounters& other) {
    protocol_errors += other.protocol_errors;
    auth_refusals += other.auth_refusals;
    messages_in += other.messages_in;
    policy_refusals += other.policy_refusals;
    rate_refusals += other.rate_refusals;
    rate_delays += other.rate_delays;
    return *this;
  }
};

class Session;

// SessionOwner: what a session asks of the code that owns it (the server's Worker, a fuzz harness).
class SessionOwner {
 public:
  virtual ~SessionOwner() = default;
  // The session has input waiting (stream bytes, acknowledgements): call its handle_input() under the
  // core lock before the loop sleeps. Called at most once until then.
  virtual void on_input(Session& session) = 0;
  // The connection is gone; called from inside its teardown: destroy the session once that returns.
  virtual void on_finished(Session& session) = 0;
  // The session holds Accepted replies for one frame (BatchedReplies): call its write_replies() under
  // the core lock before the loop sleeps. Called at most once until then.
  virtual void on_replies(Session& session) = 0;
};

// Session: the application side of one client connection: ConnectionHandler towards QUIC,
// SessionSink towards the router. Owned by its thread's Worker; lives until its connection closes.
//
// Threads: everything but the SessionSink methods runs on the thread of the session's loop, which
// owns the connection, and the core lock guards the session's members. What arrives from QUIC in
// the middle of packet processing is only taken in (bytes buffered, their flow-control credit held)
// without the lock; handle_input() handles it, with the input of the thread's other sessions, under
// one taking of the lock per loop iteration. The router may call the SessionSink methods on any
// thread that holds the core lock: on another thread they go through the mailbox and take effect on
// ours, in the order they were made.
class Session final : public quic::ConnectionHandler, public core::SessionSink {
 public:
  enum class Mode { Pending, Legacy, Native };

  // mailbox: where other threads' sink calls for this session go; null when there is one thread.
  Session(quic::Connection& connection, net::EventLoop& loop, SharedCore& core, Mailbox* mailbox,
          const SessionConfig& config, SessionCounters& counters, SessionOwner& owner);
  // Over any SessionConnection, which must outlive the session (the fuzz target's in-memory one).
  Session(SessionConnection& connection, net::EventLoop& loop, SharedCore& core, Mailbox* mailbox,
          const SessionConfig& config, SessionCounters& counters, SessionOwner& owner);
  ~Session() override;

  // Handles the input taken in since the last call: frames (registrations, messages, acks) and the
  // peer's acknowledgements. The caller holds the core lock.
  void handle_input();

  // Writes the Accepted replies held for one frame (BatchedReplies). The caller holds the core lock.
  void write_replies();

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
  // The connection's unacknowledged bytes and what waits in the mailbox for it.
  std::size_t queued_bytes() const override { return connection_.queued_bytes() + mailbox_bytes_; }
  void on_displaced() override;
  void on_outcome(std::uint64_t message_id, core::Outcome outcome, std::string_view reason) override;
  void on_receipt(std::uint64_t message_id, core::ClientId recipient, bool delivered) override;

  // For the Mailbox: makes a sink call that another thread made, on ours.
  void apply(SinkCall& call);

 private:
  // Whether a sink call can take effect now: on our thread, with nothing of ours still in the mailbox
  // (it would overtake what is there).
  bool direct() const;
  void post(SinkCall call);
  void write_delivery(const core::Delivery& delivery);
  void write_outcome(std::uint64_t message_id, core::Outcome outcome, std::string_view reason);
  void write_receipt(std::uint64_t message_id, core::ClientId recipient, bool delivered);
  void take_over();
  void note_input();
  // Handles the held frame, then the buffered ones, in order, until the reader needs more bytes, the
  // session closes, or a frame must wait for the sender's rate limit; then gives the consumed bytes'
  // credit back.
  void consume();
  void handle_frames();
  // false: the frame must wait (a legacy sender over its rate limit); it is offered again later.
  bool handle_frame(std::span<const std::uint8_t> body);
  void handle_registration(const wire::Message& message);
  // --auth token|mtls / --legacy deny: why this registration may not have its id, or "" if it may.
  std::string authentication_failure(const wire::Message& message) const;
  std::string certificate_failure(core::ClientId id) const;
  bool handle_client_to_client(const wire::Message& message);
  // A legacy sender over its rate limit cannot be told: its frame waits, the stream is not read on,
  // and its credit is held back, so its messages are delayed, not dropped (docs/security.md).
  void hold_until_refilled(const core::Admission& admission);
  void resume_after_hold();
  // The session is ending with frames not handled yet: those of this loop iteration, or a legacy
  // sender's that wait for its rate limit. Their bytes are here already (our QUIC stack acknowledged
  // them, so the sender counts them as sent) and no more can follow, so they are taken now; waiting
  // ones are charged to the sender's buckets beyond the burst: delayed, never lost. The id's next
  // connection pays off the debt.
  void take_held_frames();
  std::uint64_t unconsumed_bytes() const;
  // Reports breaches in the log: at most one line per session every few seconds, within the budget
  // all sessions share.
  void log_breach(const core::Admission& admission);
  std::string rate_limit_reason(const core::Admission& admission) const;
  // The send policy refused this message: count it, log it (rate-limited), and tell a native sender.
  // A legacy sender cannot be told; its message is dropped and its connection stays open.
  void refuse_by_policy(std::uint64_t message_id);
  void handle_ack(const wire::Message& message);
  void reply(std::uint64_t message_id, wire::DeliveryStatus status, wire::ErrorCode code, std::string_view reason,
             std::uint32_t retry_after_ms = 0);
  // An Accepted reply, held for one frame with the others of this iteration if the client takes
  // batched replies.
  void accept(std::uint64_t message_id);
  // Writes the held Accepted replies as one frame now.
  void write_accepted();
  // Ends the session for a peer's fault or a policy decision: logs one line, tells a native client
  // why in an Error frame, and closes the connection with code.
  void fail(wire::ErrorCode code, std::string reason);
  quic::StreamId lane_for(core::ClientId sender);

  std::unique_ptr<SessionConnection> owned_connection_;  // the QuicSessionConnection, if we made it
  SessionConnection& connection_;
  net::EventLoop& loop_;
  SharedCore& core_;
  Mailbox* mailbox_;
  core::Router& router_;
  RateLimiting& rate_limiting_;
  const SessionConfig& config_;
  SessionCounters& counters_;
  SessionOwner& owner_;
  bool input_pending_ = false;  // owner_.on_input was called, handle_input not yet
  bool replies_pending_ = false;  // owner_.on_replies was called, write_replies not yet
  bool handling_frames_ = false;
  bool data_acknowledged_ = false;
  // Sink calls for us in the mailbox, and the frame bytes among them (guarded by the core lock).
  std::size_t mailbox_calls_ = 0;
  std::size_t mailbox_bytes_ = 0;
  Mode mode_ = Mode::Pending;
  wire::FrameReader reader_;
  quic::StreamId stream_ = -1;  // the client's bidirectional stream
  std::vector<quic::StreamId> lanes_;  // native: delivery streams by lane, -1 until opened
  // Legacy clients cannot acknowledge: a delivery counts as taken once QUIC acknowledged its last
  // byte. (stream offset just past the frame, sequence), in stream order.
  std::deque<std::pair<std::uint64_t, std::uint64_t>> awaiting_transport_ack_;
  core::ClientId client_id_ = 0;
  bool registered_ = false;
  // BatchedReplies (the client announced it): the message ids whose Accepted replies are not written
  // yet, in order. Any other frame on the session stream writes them first, so replies keep the
  // order of their messages and a Receipt never overtakes its message's reply.
  bool batch_replies_ = false;
  std::vector<std::uint64_t> accepted_;
  bool closing_ = false;
  bool fin_received_ = false;
  // The frame of a legacy sender that waits for its bucket (rate limits), the stream credit not given
  // back yet (for bytes not yet handled, and those that wait), and the timer that resumes reading.
  bool holding_ = false;
  bool taking_held_ = false;
  std::vector<std::uint8_t> held_frame_;
  std::uint64_t credit_held_ = 0;
  net::EventLoop::TimerId resume_timer_ = 0;
  std::uint64_t breaches_unlogged_ = 0;
  bool breach_logged_ = false;
  net::Timestamp breach_logged_at_ = 0;
};

}  // namespace debra::server
