// SPDX-License-Identifier: MIT
#include "server/session_bridge.h"

#include "util/log.h"

namespace debra::server {

using wire::ErrorCode;

Session::Session(quic::Connection& connection, core::Router& router, const SessionConfig& config,
                 SessionCounters& counters, std::function<void(Session&)> on_finished)
    : owned_connection_(std::make_unique<QuicSessionConnection>(connection)), connection_(*owned_connection_),
      router_(router), config_(config), counters_(counters), on_finished_(std::move(on_finished)),
      reader_(config.max_frame_size) {}

Session::Session(SessionConnection& connection, core::Router& router, const SessionConfig& config,
                 SessionCounters& counters, std::function<void(Session&)> on_finished)
    : connection_(connection), router_(router), config_(config), counters_(counters),
      on_finished_(std::move(on_finished)), reader_(config.max_frame_size) {}

void Session::on_handshake_completed() {
  // A client that offered no ALPN is an original debra client (docs/protocol.md, legacy mode).
  mode_ = connection_.alpn().empty() ? Mode::Legacy : Mode::Native;
  if (mode_ == Mode::Native) lanes_.assign(config_.delivery_lanes, -1);
}

void Session::on_stream_data(quic::StreamId id, std::span<const std::uint8_t> data, bool fin) {
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
  for (;;) {
    auto frame = reader_.next();
    if (!frame) {
      fail(frame.error().code, frame.error().reason);
      return;
    }
    if (!frame->has_value()) break;
    handle_frame(**frame);
    if (closing_) return;
  }
  // A clean FIN needs nothing: the client will send no more, but its half-closed stream still carries
  // deliveries, so the session stays registered until the connection closes.
  if (fin && reader_.buffered() > 0) {
    fail(ErrorCode::ProtocolError, "the stream ended " + std::to_string(reader_.buffered()) +
                                       " bytes into a frame: its length prefix promised more");
  }
}

void Session::handle_frame(std::span<const std::uint8_t> body) {
  auto message = wire::decode(body);
  if (!message) {
    fail(message.error().code, message.error().reason);
    return;
  }
  switch (message->type) {
    case wire::MessageType::ClientRegistration:
      handle_registration(*message);
      return;
    case wire::MessageType::ClientToClient:
      handle_client_to_client(*message);
      return;
    case wire::MessageType::Ack:
      if (mode_ == Mode::Native) {
        handle_ack(*message);
        return;
      }
      break;
    default:
      break;
  }
  fail(ErrorCode::UnknownMessageType, "message type " + std::to_string(static_cast<int>(message->type)) + " (" +
                                          std::string(wire::to_string(message->type)) +
                                          ") is not one a client may send");
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
    connection_.write(stream_, wire::encode_welcome(client_id_, config_.max_frame_size,
                                                    static_cast<std::uint32_t>(lanes_.size())));
  }
  router_.register_client(client_id_, *this);
}

std::string Session::authentication_failure(const wire::Message& message) const {
  if (mode_ == Mode::Legacy) {
    if (config_.allow_legacy) return {};
    return "legacy clients are not allowed on this router (it requires debra/1 with a token; see --legacy)";
  }
  if (!config_.require_token) return {};
  if (message.token.empty()) return "missing token: this router requires a token for id " + std::to_string(message.client_id);
  auto verified = auth::verify_token(config_.token_secret, message.token, auth::unix_now());
  if (!verified) return verified.error().message;
  if (*verified != message.client_id) {
    return "token is for id " + std::to_string(*verified) + ", not " + std::to_string(message.client_id);
  }
  return {};
}

void Session::handle_client_to_client(const wire::Message& message) {
  if (!registered_) {
    fail(ErrorCode::NotRegistered, "a message before the ClientRegistration");
    return;
  }
  ++counters_.messages_in;
  if (!core::is_valid_client_id(message.for_client) && mode_ != Mode::Native) {
    // A legacy client has no other way to hear it.
    fail(ErrorCode::InvalidId, "recipient id " + std::to_string(message.for_client) + " is outside 1..2147483647");
    return;
  }
  // The sender is the registered id, whatever the frame claims.
  core::Submission submission{client_id_, message.for_client, message.message_id, message.payload,
                              message.receipt && mode_ == Mode::Native};
  core::Outcome outcome = router_.route(submission, this);
  if (outcome == core::Outcome::QuotaExceeded || outcome == core::Outcome::StoreUnavailable) {
    on_outcome(message.message_id, outcome, router_.refusal_reason());
  } else if (outcome != core::Outcome::Stored) {
    on_outcome(message.message_id, outcome, {});
  }
}

void Session::on_outcome(std::uint64_t message_id, core::Outcome outcome, std::string_view reason) {
  if (mode_ != Mode::Native || closing_) return;
  switch (outcome) {
    case core::Outcome::Delivered:
    case core::Outcome::Stored:
    case core::Outcome::ForwardedRemote:
      reply(message_id, wire::DeliveryStatus::Accepted, ErrorCode::NoError, {});
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
  }
}

void Session::on_receipt(std::uint64_t message_id, core::ClientId recipient, bool delivered) {
  if (mode_ != Mode::Native || closing_) return;
  connection_.write(stream_, wire::encode_receipt(message_id, recipient,
                                                  delivered ? wire::DeliveryStatus::Delivered
                                                            : wire::DeliveryStatus::Expired));
}

void Session::handle_ack(const wire::Message& message) {
  if (!registered_) {
    fail(ErrorCode::NotRegistered, "an Ack before the ClientRegistration");
    return;
  }
  router_.acknowledge(client_id_, message.sequence);
}

void Session::reply(std::uint64_t message_id, wire::DeliveryStatus status, ErrorCode code, std::string_view reason) {
  connection_.write(stream_, wire::encode_reply(message_id, status, code, reason));
}

void Session::fail(ErrorCode code, std::string reason) {
  if (closing_) return;
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
  if (closing_) return;
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
  // The router already removed us; fail() must not unregister our successor.
  registered_ = false;
  fail(ErrorCode::SessionTakenOver, "a newer connection registered id " + std::to_string(client_id_));
}

void Session::deliver(const core::Delivery& delivery) {
  if (closing_) return;
  quic::StreamId stream = mode_ == Mode::Native ? lane_for(delivery.sender) : stream_;
  std::uint64_t end = connection_.write(stream, *delivery.frame);
  if (mode_ == Mode::Legacy && delivery.sequence != 0 && end != 0) {
    awaiting_transport_ack_.emplace_back(end, delivery.sequence);
  }
}

void Session::on_data_acknowledged() {
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
  // Nothing reaches the client any more: release its id now rather than after the closing period,
  // so that its reconnection is no takeover and nothing is handed to a connection that cannot
  // carry it.
  closing_ = true;
  if (registered_) router_.unregister_client(client_id_, *this);
  registered_ = false;
}

void Session::on_closed(const quic::CloseInfo& info) {
  if (registered_) router_.unregister_client(client_id_, *this);
  registered_ = false;
  spdlog::debug("session {} (id {}): {}", connection_.remote_address().to_string(), client_id_, info.to_string());
  on_finished_(*this);
}

}  // namespace debra::server
