// SPDX-License-Identifier: MIT
#include "server/session_bridge.h"

#include <algorithm>
#include <limits>

#include "auth/certificate.h"
#include "util/log.h"

namespace debra::server {

using wire::ErrorCode;

namespace {

// The most Accepted replies one Reply frame holds: 8 KiB of ids, far below any frame limit.
constexpr std::size_t kMaxBatchedReplies = 1024;
// The most deliveries one Ack may name; clients send at most 1,024 (client::kMaxBatchedAcks).
constexpr std::size_t kMaxAckedPerFrame = 65536;

// A session over its rate limit reports it at most this often (and all sessions together within
// RateLimiting::log_budget); the counters have every breach.
constexpr net::Timestamp kBreachLogInterval = 10 * quic::kSecond;
// The longest a held legacy frame waits before its sender's bucket is checked again.
constexpr net::Timestamp kLongestHold = 60 * quic::kSecond;

// Rounded up: a sender that waits this long finds its bucket refilled.
std::uint32_t retry_after_ms(const core::Admission& admission) {
  const std::uint64_t ms = (admission.retry_after + quic::kMillisecond - 1) / quic::kMillisecond;
  return static_cast<std::uint32_t>(std::min<std::uint64_t>(ms, std::numeric_limits<std::uint32_t>::max()));
}

}  // namespace

Session::Session(quic::Connection& connection, net::EventLoop& loop, SharedCore& core, Mailbox* mailbox,
                 const SessionConfig& config, SessionCounters& counters, SessionOwner& owner)
    : owned_connection_(std::make_unique<QuicSessionConnection>(connection)), connection_(*owned_connection_),
      loop_(loop), core_(core), mailbox_(mailbox), router_(core.router), rate_limiting_(core.rate_limiting),
      config_(config), counters_(counters), owner_(owner), reader_(config.max_frame_size) {}

Session::Session(SessionConnection& connection, net::EventLoop& loop, SharedCore& core, Mailbox* mailbox,
                 const SessionConfig& config, SessionCounters& counters, SessionOwner& owner)
    : connection_(connection), loop_(loop), core_(core), mailbox_(mailbox), router_(core.router),
      rate_limiting_(core.rate_limiting), config_(config), counters_(counters), owner_(owner),
      reader_(config.max_frame_size) {}

Session::~Session() {
  auto guard = core_.lock();
  if (mailbox_ != nullptr && mailbox_calls_ > 0) mailbox_->forget(this);
  loop_.cancel_timer(resume_timer_);
}

void Session::on_handshake_completed() {
  // A client that offered no ALPN is an original debra client (docs/protocol.md, legacy mode).
  mode_ = connection_.alpn().empty() ? Mode::Legacy : Mode::Native;
  if (mode_ == Mode::Native) lanes_.assign(config_.delivery_lanes, -1);
}

void Session::on_stream_data(quic::StreamId id, std::span<const std::uint8_t> data, bool fin) {
  // Inside ngtcp2's packet processing, without the core lock: only take the bytes in.
  if (closing_) return;
  bool client_bidi = (id & 0x3) == 0;
  if (!client_bidi) {
    fail(ErrorCode::ProtocolError, "data on stream " + std::to_string(id) + ", which is not a client bidirectional stream");
    return;
  }
  if (stream_ < 0) stream_ = id;
  if (id != stream_) {
    fail(ErrorCode::ProtocolError, "a second stream (" + std::to_string(id) + "); a session uses one");
    return;
  }
  reader_.append(data);
  fin_received_ = fin_received_ || fin;
  // Their credit goes back once they are handled (consume), which is before the loop sleeps unless
  // the sender is over its rate limit.
  connection_.hold_credit(data.size());
  credit_held_ += data.size();
  if (!holding_) note_input();
}

void Session::on_data_acknowledged() {
  if (!registered_) return;
  data_acknowledged_ = true;
  note_input();
}

void Session::note_input() {
  if (input_pending_) return;
  input_pending_ = true;
  owner_.on_input(*this);
}

void Session::handle_input() {
  input_pending_ = false;
  if (closing_) return;
  if (!holding_) consume();
  if (closing_ || !data_acknowledged_) return;
  data_acknowledged_ = false;
  if (!registered_) return;
  if (!awaiting_transport_ack_.empty()) {
    std::uint64_t acked = connection_.acknowledged_offset(stream_);
    while (!awaiting_transport_ack_.empty() && awaiting_transport_ack_.front().first <= acked) {
      router_.acknowledge(client_id_, awaiting_transport_ack_.front().second);
      awaiting_transport_ack_.pop_front();
    }
  }
  router_.on_sink_ready(client_id_);
}

void Session::consume() {
  handle_frames();
  if (closing_) return;
  // Credit goes back for what was consumed: everything but a waiting frame and what came after it.
  std::uint64_t still_held = holding_ ? std::min(credit_held_, unconsumed_bytes()) : 0;
  connection_.release_credit(stream_, credit_held_ - still_held);
  credit_held_ = still_held;
}

void Session::handle_frames() {
  handling_frames_ = true;
  struct Done {
    bool& flag;
    ~Done() { flag = false; }
  } done{handling_frames_};
  if (holding_) {
    if (!handle_frame(held_frame_)) return;
    holding_ = false;
    if (closing_) return;
  }
  for (;;) {
    auto frame = reader_.next();
    if (!frame) {
      fail(frame.error().code, frame.error().reason);
      return;
    }
    if (!frame->has_value()) break;
    if (!handle_frame(**frame)) {
      held_frame_.assign((*frame)->begin(), (*frame)->end());
      holding_ = true;
      return;
    }
    if (closing_) return;
  }
  // A clean FIN needs nothing: the client will send no more, but its half-closed stream still carries
  // deliveries, so the session stays registered until the connection closes.
  if (fin_received_ && reader_.buffered() > 0) {
    fail(ErrorCode::ProtocolError, "the stream ended " + std::to_string(reader_.buffered()) +
                                       " bytes into a frame: its length prefix promised more");
  }
}

std::uint64_t Session::unconsumed_bytes() const {
  return (holding_ ? wire::kLengthPrefixSize + held_frame_.size() : 0) + reader_.buffered();
}

bool Session::handle_frame(std::span<const std::uint8_t> body) {
  auto message = wire::decode(body);
  if (!message) {
    fail(message.error().code, message.error().reason);
    return true;
  }
  switch (message->type) {
    case wire::MessageType::ClientRegistration:
      handle_registration(*message);
      return true;
    case wire::MessageType::ClientToClient:
      return handle_client_to_client(*message);
    case wire::MessageType::Ack:
      if (mode_ == Mode::Native) {
        handle_ack(*message);
        return true;
      }
      break;
    default:
      break;
  }
  fail(ErrorCode::UnknownMessageType, "message type " + std::to_string(static_cast<int>(message->type)) + " (" +
                                          std::string(wire::to_string(message->type)) +
                                          ") is not one a client may send");
  return true;
}

void Session::handle_registration(const wire::Message& message) {
  if (registered_) {
    fail(ErrorCode::AlreadyRegistered, "this connection already registered id " + std::to_string(client_id_));
    return;
  }
  if (!core::is_valid_client_id(message.client_id)) {
    fail(ErrorCode::InvalidId, "client id " + std::to_string(message.client_id) + " is outside 1..2147483647");
    return;
  }
  if (std::string why = authentication_failure(message); !why.empty()) {
    client_id_ = message.client_id;  // for the log line: who was refused
    fail(ErrorCode::Unauthenticated, std::move(why));
    return;
  }
  client_id_ = message.client_id;
  registered_ = true;
  spdlog::debug("session {}: registered id {} ({})", connection_.remote_address().to_string(), client_id_,
                mode_ == Mode::Native ? "native" : "legacy");
  if (mode_ == Mode::Native) {
    batch_replies_ = wire::has_feature(message.features, wire::Feature::BatchedReplies) &&
                     wire::has_feature(config_.features, wire::Feature::BatchedReplies);
    connection_.write(stream_, wire::encode_welcome(client_id_, config_.max_frame_size,
                                                    static_cast<std::uint32_t>(lanes_.size()), config_.features));
  }
  router_.register_client(client_id_, *this);
}

std::string Session::authentication_failure(const wire::Message& message) const {
  if (mode_ == Mode::Legacy) {
    if (config_.allow_legacy) return {};
    return std::string("legacy clients are not allowed on this router (it requires debra/1 with ") +
           (config_.require_certificate ? "a client certificate" : "a token") + "; see --legacy)";
  }
  if (config_.require_certificate) return certificate_failure(message.client_id);
  if (!config_.require_token) return {};
  if (message.token.empty()) return "missing token: this router requires a token for id " + std::to_string(message.client_id);
  auto verified = auth::verify_token(config_.token_secret, message.token, auth::unix_now());
  if (!verified) return verified.error().message;
  if (*verified != message.client_id) {
    return "token is for id " + std::to_string(*verified) + ", not " + std::to_string(message.client_id);
  }
  return {};
}

std::string Session::certificate_failure(core::ClientId id) const {
  const quic::PeerCertificate& certificate = connection_.peer_certificate();
  if (certificate.der.empty()) {
    return "no client certificate: this router requires one for id " + std::to_string(id) + " (see --cert, --key)";
  }
  if (!certificate.verification_error.empty()) {
    return "client certificate not accepted: " + certificate.verification_error;
  }
  auto named = auth::certificate_client_id(certificate.der);
  if (!named) return named.error().message;
  if (*named != id) return "certificate is for id " + std::to_string(*named) + ", not " + std::to_string(id);
  return {};
}

bool Session::handle_client_to_client(const wire::Message& message) {
  if (!registered_) {
    fail(ErrorCode::NotRegistered, "a message before the ClientRegistration");
    return true;
  }
  // Every message counts against its sender's buckets, whatever becomes of it later, except one
  // refused for the rate itself.
  core::Admission admission;
  if (taking_held_) {
    rate_limiting_.limiter.charge(client_id_, message.payload.size(), loop_.now());
  } else {
    admission = rate_limiting_.limiter.admit(client_id_, message.payload.size(), loop_.now());
  }
  if (!admission.admitted && mode_ == Mode::Legacy) {
    hold_until_refilled(admission);
    return false;
  }
  ++counters_.messages_in;
  if (!admission.admitted) {
    ++counters_.rate_refusals;
    log_breach(admission);
    reply(message.message_id, wire::DeliveryStatus::Rejected, ErrorCode::RateLimited, rate_limit_reason(admission),
          retry_after_ms(admission));
    return true;
  }
  if (!core::is_valid_client_id(message.for_client) && mode_ != Mode::Native) {
    // A legacy client has no other way to hear it.
    fail(ErrorCode::InvalidId, "recipient id " + std::to_string(message.for_client) + " is outside 1..2147483647");
    return true;
  }
  // The sender is the registered id, whatever the frame claims.
  core::Submission submission{client_id_, message.for_client, message.message_id, message.payload,
                              message.receipt && mode_ == Mode::Native};
  // A legacy sender hears no outcome, so the router need not keep one for it (and must not, for a
  // session that was displaced while its held frames are taken).
  core::Outcome outcome = router_.route(submission, mode_ == Mode::Native ? this : nullptr);
  if (outcome == core::Outcome::Forbidden) {
    refuse_by_policy(message.message_id);
  } else if (outcome == core::Outcome::QuotaExceeded || outcome == core::Outcome::StoreUnavailable) {
    on_outcome(message.message_id, outcome, router_.refusal_reason());
  } else if (outcome != core::Outcome::Stored) {
    on_outcome(message.message_id, outcome, {});
  }
  return true;
}

void Session::hold_until_refilled(const core::Admission& admission) {
  if (!holding_) {
    ++counters_.rate_delays;  // once per message, however often it is offered again
    log_breach(admission);
  }
  // Capped so that the deadline cannot overflow; waking early only means checking again.
  net::Timestamp wait = std::min<net::Timestamp>(admission.retry_after, kLongestHold);
  resume_timer_ = loop_.add_timer(loop_.now() + wait, [this] {
    auto guard = core_.lock();
    resume_timer_ = 0;
    resume_after_hold();
  });
}

void Session::resume_after_hold() {
  if (closing_) return;
  consume();
}

void Session::take_held_frames() {
  // Bytes taken in during this loop iteration and not handled yet are here too (our QUIC stack has
  // acknowledged them): a client that sends and closes in one flight loses nothing. Not from inside
  // handle_frames, whose own loop stops at the frame that ended the session.
  if (input_pending_ && !holding_ && !handling_frames_) handle_frames();
  if (!holding_ || taking_held_) return;
  taking_held_ = true;
  handle_frames();
  taking_held_ = false;
  loop_.cancel_timer(resume_timer_);
  resume_timer_ = 0;
}

void Session::log_breach(const core::Admission& admission) {
  ++breaches_unlogged_;
  net::Timestamp now = loop_.now();
  if (breach_logged_ && now - breach_logged_at_ < kBreachLogInterval) return;
  if (!rate_limiting_.log_budget.try_take(1, now)) return;
  bool native = mode_ == Mode::Native;
  spdlog::info("session {} (id {}): {}: {} ({} {} since this session's last report)",
               connection_.remote_address().to_string(), client_id_,
               native ? "refusing messages" : "delaying a legacy sender (its stream is not read meanwhile)",
               rate_limit_reason(admission), breaches_unlogged_, native ? "refused" : "delayed");
  breach_logged_ = true;
  breach_logged_at_ = now;
  breaches_unlogged_ = 0;
}

std::string Session::rate_limit_reason(const core::Admission& admission) const {
  const core::RateLimits& limits = rate_limiting_.limiter.limits();
  bool messages = admission.limit == core::RateLimitKind::Messages;
  return "over the rate limit of " +
         (messages ? std::to_string(limits.messages_per_second) + " msgs/s (burst " +
                         std::to_string(limits.message_burst) + ")"
                   : std::to_string(limits.bytes_per_second) + " bytes/s (burst " +
                         std::to_string(limits.byte_burst) + ")") +
         "; retry in " + std::to_string(retry_after_ms(admission)) + " ms";
}

void Session::refuse_by_policy(std::uint64_t message_id) {
  ++counters_.policy_refusals;
  const std::string& reason = router_.refusal_reason();
  std::uint64_t held_back = 0;
  if (counters_.policy_log.allow(log::RateLimit::Clock::now(), &held_back)) {
    spdlog::info("session {} (id {}): {} by the send policy: {}{}", connection_.remote_address().to_string(),
                 client_id_, mode_ == Mode::Native ? "message rejected" : "legacy message dropped", reason,
                 held_back == 0 ? std::string() : " (" + std::to_string(held_back) + " refusals not logged since the previous line)");
  }
  on_outcome(message_id, core::Outcome::Forbidden, reason);
}

void Session::on_outcome(std::uint64_t message_id, core::Outcome outcome, std::string_view reason) {
  if (!direct()) {
    post(SinkCall{.kind = SinkCall::Kind::Outcome, .session = this, .message_id = message_id, .outcome = outcome,
                  .reason = std::string(reason)});
    return;
  }
  write_outcome(message_id, outcome, reason);
}

void Session::write_outcome(std::uint64_t message_id, core::Outcome outcome, std::string_view reason) {
  if (mode_ != Mode::Native || closing_) return;
  switch (outcome) {
    case core::Outcome::Delivered:
    case core::Outcome::Stored:
    case core::Outcome::ForwardedRemote:
      accept(message_id);
      return;
    case core::Outcome::RecipientOffline:
      reply(message_id, wire::DeliveryStatus::RecipientOffline, ErrorCode::NoError, {});
      return;
    case core::Outcome::RecipientBusy:
      reply(message_id, wire::DeliveryStatus::Rejected, ErrorCode::RecipientBusy,
            "the recipient's queue is full; retry later");
      return;
    case core::Outcome::InvalidRecipient:
      reply(message_id, wire::DeliveryStatus::Rejected, ErrorCode::InvalidId,
            "recipient id is outside 1..2147483647");
      return;
    case core::Outcome::QuotaExceeded:
      reply(message_id, wire::DeliveryStatus::Rejected, ErrorCode::QuotaExceeded,
            reason.empty() ? std::string_view("the recipient's inbox is full; retry later") : reason);
      return;
    case core::Outcome::StoreUnavailable:
      reply(message_id, wire::DeliveryStatus::Rejected, ErrorCode::StoreUnavailable,
            reason.empty() ? std::string_view("the router cannot store messages right now") : reason);
      return;
    case core::Outcome::Forbidden:
      reply(message_id, wire::DeliveryStatus::Rejected, ErrorCode::Forbidden,
            reason.empty() ? std::string_view("the send policy does not allow this recipient") : reason);
      return;
  }
}

void Session::on_receipt(std::uint64_t message_id, core::ClientId recipient, bool delivered) {
  if (!direct()) {
    post(SinkCall{.kind = SinkCall::Kind::Receipt, .session = this, .message_id = message_id,
                  .recipient = recipient, .delivered = delivered});
    return;
  }
  write_receipt(message_id, recipient, delivered);
}

void Session::write_receipt(std::uint64_t message_id, core::ClientId recipient, bool delivered) {
  if (mode_ != Mode::Native || closing_) return;
  write_accepted();
  connection_.write(stream_, wire::encode_receipt(message_id, recipient,
                                                  delivered ? wire::DeliveryStatus::Delivered
                                                            : wire::DeliveryStatus::Expired));
}

void Session::handle_ack(const wire::Message& message) {
  if (!registered_) {
    fail(ErrorCode::NotRegistered, "an Ack before the ClientRegistration");
    return;
  }
  // Each acknowledgement is a lookup under the core lock, which every thread waits for: one frame
  // may not hold the router for long (docs/protocol.md, "Features").
  if (message.sequences.size() >= kMaxAckedPerFrame) {
    fail(ErrorCode::ProtocolError, "an Ack naming " + std::to_string(message.sequences.size() + 1) +
                                       " deliveries; at most " + std::to_string(kMaxAckedPerFrame) + " per Ack");
    return;
  }
  router_.acknowledge(client_id_, message.sequence);
  if (!wire::has_feature(config_.features, wire::Feature::BatchedAcks)) return;  // unknown to this router
  for (std::size_t i = 0; i < message.sequences.size(); ++i) router_.acknowledge(client_id_, message.sequences[i]);
}

void Session::reply(std::uint64_t message_id, wire::DeliveryStatus status, ErrorCode code, std::string_view reason,
                    std::uint32_t retry_after_ms) {
  write_accepted();
  connection_.write(stream_, wire::view_reply(message_id, status, code, reason, retry_after_ms));
}

void Session::accept(std::uint64_t message_id) {
  if (!batch_replies_) {
    reply(message_id, wire::DeliveryStatus::Accepted, ErrorCode::NoError, {});
    return;
  }
  accepted_.push_back(message_id);
  if (accepted_.size() >= kMaxBatchedReplies) {
    write_accepted();
  } else if (!replies_pending_) {
    replies_pending_ = true;
    owner_.on_replies(*this);
  }
}

void Session::write_replies() {
  replies_pending_ = false;
  write_accepted();
}

void Session::write_accepted() {
  if (accepted_.empty()) return;
  // Once closing, the connection takes no more frames; fail() and shut_down() write these first.
  if (!closing_) connection_.write(stream_, wire::view_accepted(accepted_));
  accepted_.clear();
}

void Session::fail(ErrorCode code, std::string reason) {
  auto guard = core_.lock();
  if (closing_) return;
  take_held_frames();
  if (closing_) return;  // one of them was itself the fault
  write_accepted();  // what was accepted stays accepted: its sender hears so before the Error
  closing_ = true;
  ++(code == ErrorCode::Unauthenticated ? counters_.auth_refusals : counters_.protocol_errors);
  spdlog::info("session {} (id {}): closing with {}: {}", connection_.remote_address().to_string(), client_id_,
               wire::to_string(code), reason);
  if (registered_) router_.unregister_client(client_id_, *this);
  registered_ = false;
  if (mode_ == Mode::Native && stream_ >= 0) connection_.write(stream_, wire::encode_error(code, reason));
  connection_.close(static_cast<std::uint64_t>(code), std::move(reason));
}

void Session::shut_down() {
  auto guard = core_.lock();
  if (closing_) return;
  take_held_frames();
  write_accepted();
  closing_ = true;
  if (registered_) router_.unregister_client(client_id_, *this);
  registered_ = false;
  std::string reason = "the router is shutting down";
  if (mode_ == Mode::Native && stream_ >= 0) {
    connection_.write(stream_, wire::encode_error(ErrorCode::ServerShutdown, reason));
  }
  connection_.close(static_cast<std::uint64_t>(ErrorCode::ServerShutdown), reason);
}

void Session::on_displaced() {
  if (!direct()) {
    post(SinkCall{.kind = SinkCall::Kind::Displaced, .session = this});
    return;
  }
  // Called from inside the router, which already removed us and forgot what we sent: no call back
  // into it. What we hold of the old connection goes first.
  take_held_frames();
  registered_ = false;
  take_over();
}

void Session::take_over() {
  fail(ErrorCode::SessionTakenOver, "a newer connection registered id " + std::to_string(client_id_));
}

bool Session::direct() const { return mailbox_ == nullptr || (mailbox_calls_ == 0 && mailbox_->on_owner_thread()); }

void Session::post(SinkCall call) {
  ++mailbox_calls_;
  if (call.kind == SinkCall::Kind::Deliver) mailbox_bytes_ += call.delivery.frame.size();
  mailbox_->post(std::move(call));
}

void Session::apply(SinkCall& call) {
  --mailbox_calls_;
  switch (call.kind) {
    case SinkCall::Kind::Deliver:
      mailbox_bytes_ -= call.delivery.frame.size();
      write_delivery(call.delivery);
      return;
    case SinkCall::Kind::Outcome:
      write_outcome(call.message_id, call.outcome, call.reason);
      return;
    case SinkCall::Kind::Receipt:
      write_receipt(call.message_id, call.recipient, call.delivered);
      return;
    case SinkCall::Kind::Displaced:
      // Outside the router now. It removed us when our successor registered, but we may have sent
      // more since: unregistering forgets those outcomes and leaves our successor registered.
      take_held_frames();
      if (registered_) router_.unregister_client(client_id_, *this);
      registered_ = false;
      take_over();
      return;
  }
}

void Session::deliver(const core::Delivery& delivery) {
  if (!direct()) {
    post(SinkCall{.kind = SinkCall::Kind::Deliver, .session = this, .delivery = delivery});
    return;
  }
  write_delivery(delivery);
}

void Session::write_delivery(const core::Delivery& delivery) {
  if (closing_) return;
  quic::StreamId stream = mode_ == Mode::Native ? lane_for(delivery.sender) : stream_;
  std::uint64_t end = connection_.write(stream, delivery.frame.bytes());
  if (mode_ == Mode::Legacy && delivery.sequence != 0 && end != 0) {
    awaiting_transport_ack_.emplace_back(end, delivery.sequence);
  }
}

quic::StreamId Session::lane_for(core::ClientId sender) {
  if (lanes_.empty()) return stream_;
  auto& lane = lanes_[static_cast<std::size_t>(sender) % lanes_.size()];
  if (lane < 0) {
    auto opened = connection_.open_uni_stream();
    // A client that allows us no unidirectional streams gets every delivery on its own stream,
    // which keeps per-sender order all the same.
    lane = opened ? *opened : stream_;
  }
  return lane;
}

void Session::on_closing(const quic::CloseInfo&) {
  auto guard = core_.lock();
  // Nothing reaches the client any more: release its id now rather than after the closing period,
  // so that its reconnection is no takeover and nothing is handed to a connection that cannot
  // carry it.
  take_held_frames();
  closing_ = true;
  if (registered_) router_.unregister_client(client_id_, *this);
  registered_ = false;
}

void Session::on_closed(const quic::CloseInfo& info) {
  auto guard = core_.lock();
  if (!closing_) take_held_frames();  // it died without closing first (idle timeout, dropped)
  closing_ = true;
  if (registered_) router_.unregister_client(client_id_, *this);
  registered_ = false;
  spdlog::debug("session {} (id {}): {}", connection_.remote_address().to_string(), client_id_, info.to_string());
  owner_.on_finished(*this);
}

}  // namespace debra::server
