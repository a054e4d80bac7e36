// SPDX-License-Identifier: MIT
#include "client/protocol_session.h"

namespace debra::client {

Result<ClientTransport, Error> make_client_transport(const ClientOptions& options) {
  auto address = net::Address::parse(options.server);
  if (!address) return Unexpected{address.error()};
  quic::TlsClientOptions tls;
  tls.ca_file = options.ca_file;
  tls.insecure = options.insecure;
  tls.server_name = options.server_name;
  if (tls.server_name.empty()) {
    std::string host = options.server.substr(0, options.server.rfind(':'));
    if (host.size() >= 2 && host.front() == '[') host = host.substr(1, host.size() - 2);
    tls.server_name = host;
  }
  tls.cert_file = options.cert_file;
  tls.key_file = options.key_file;
  tls.alpn = options.protocol == Protocol::Native ? std::string(wire::kAlpn) : std::string();
  auto context = quic::TlsClientContext::create(std::move(tls));
  if (!context) return Unexpected{context.error()};
  quic::TransportSettings settings;
  settings.idle_timeout = static_cast<std::uint64_t>(options.idle_timeout.count()) * quic::kMillisecond;
  settings.keep_alive = static_cast<std::uint64_t>(options.keep_alive.count()) * quic::kMillisecond;
  settings.peer_bidi_streams = 0;
  settings.peer_uni_streams = options.protocol == Protocol::Native ? kMaxDeliveryLanes : 0;
  settings.max_udp_payload = options.max_udp_payload;
  return ClientTransport{*address, std::move(*context), settings};
}

Result<void, Error> ProtocolSession::start(quic::Connection& connection) {
  auto stream = connection.open_bidi_stream();
  if (!stream) return Unexpected{stream.error()};
  stream_ = *stream;
  const bool native = protocol_ == Protocol::Native;
  connection.write(stream_, wire::encode_registration(id_, native ? token_ : std::string(), native ? kClientFeatures : 0));
  return {};
}

std::optional<std::string> ProtocolSession::on_stream_data(quic::StreamId id, std::span<const std::uint8_t> data,
                                                           const MessageHandler& on_message) {
  auto [it, inserted] = readers_.try_emplace(id, kMaxAcceptedFrame);
  wire::FrameReader& reader = it->second;
  reader.append(data);
  for (;;) {
    auto frame = reader.next();
    if (!frame) return frame.error().reason;
    if (!frame->has_value()) return std::nullopt;
    auto message = wire::decode(**frame);
    if (!message) return message.error().reason;
    if (message->type == wire::MessageType::Welcome) router_features_ = message->features;
    on_message(*message);
  }
}

bool ProtocolSession::acknowledge(quic::Connection& connection, std::uint64_t sequence) {
  if (protocol_ != Protocol::Native || sequence == 0) return false;
  if (!wire::has_feature(router_features_, wire::Feature::BatchedAcks)) {
    connection.write(stream_, wire::view_ack(sequence));
    return false;
  }
  unsent_acks_.push_back(sequence);
  if (unsent_acks_.size() >= kMaxBatchedAcks) flush_acks(connection);
  return !unsent_acks_.empty();
}

void ProtocolSession::flush_acks(quic::Connection& connection) {
  if (unsent_acks_.empty()) return;
  connection.write(stream_, wire::view_acks(unsent_acks_));
  unsent_acks_.clear();
}

}  // namespace debra::client
