// SPDX-License-Identifier: MIT
//
// The client side of the debra protocol on one QUIC connection, free of threads and queues: what
// libdebra's Client (one connection on its own thread) and `debra bench` (many connections on one
// loop) both need. Internal to debra_client; not part of include/debra.
#pragma once

#include <debra/client.h>

#include <cstdint>
#include <functional>
#include <optional>
#include <span>
#include <string>
#include <unordered_map>
#include <vector>

#include "net/address.h"
#include "quic/connection.h"
#include "quic/tls.h"
#include "wire/codec.h"

namespace debra::client {

// What the client accepts from the router: the largest --max-frame-size a router may be given, plus
// the envelope the router adds around a payload.
inline constexpr std::uint32_t kMaxAcceptedFrame = 64 * 1024 * 1024 + 4096;
// Delivery lanes a native client lets the router open.
inline constexpr std::uint32_t kMaxDeliveryLanes = 64;
// The optional protocol features a native client announces: it sends batched Acks (to a router that
// takes them) and takes batched Replies.
inline constexpr std::uint64_t kClientFeatures = static_cast<std::uint64_t>(wire::Feature::BatchedAcks) |
                                                 static_cast<std::uint64_t>(wire::Feature::BatchedReplies);
// The most sequences one batched Ack holds: 8 KiB of them, far below any frame limit.
inline constexpr std::size_t kMaxBatchedAcks = 1024;

// ClientTransport: what connecting needs, derived once from ClientOptions: the router's address,
// the TLS context (certificate check, ALPN by protocol) and the QUIC transport settings.
struct ClientTransport {
  net::Address server;
  quic::TlsClientContext tls;
  quic::TransportSettings settings;
};
// Fails on an unparsable server address or an unreadable CA file. An empty options.server_name
// becomes the host part of options.server.
Result<ClientTransport, Error> make_client_transport(const ClientOptions& options);

// ProtocolSession: one connection's session stream and frame reassembly. Loop thread only.
class ProtocolSession {
 public:
  ProtocolSession(std::int32_t id, Protocol protocol, std::string token = {})
      : id_(id), protocol_(protocol), token_(std::move(token)) {}

  // On handshake completion: opens the session stream and writes the registration (with the token,
  // native only). A legacy session is as registered as it will ever be once this returns.
  Result<void, Error> start(quic::Connection& connection);

  // Reassembles and decodes the router's frames from stream data, calling on_message for each in
  // order. Returns the reason on bytes that are not the protocol; the caller then closes.
  using MessageHandler = std::function<void(const wire::Message&)>;
  std::optional<std::string> on_stream_data(quic::StreamId id, std::span<const std::uint8_t> data,
                                            const MessageHandler& on_message);

  // Writes a frame on the session stream.
  void write(quic::Connection& connection, std::span<const std::uint8_t> frame) const {
    connection.write(stream_, frame);
  }
  // Acknowledges a delivery (native; a legacy session or sequence 0 sends nothing). To a router that
  // takes batched Acks, the acknowledgement waits for flush_acks() with the others of this loop
  // iteration, and this returns true: the caller then calls flush_acks() before its loop sleeps.
  bool acknowledge(quic::Connection& connection, std::uint64_t sequence);
  // Writes the waiting acknowledgements as one Ack frame.
  void flush_acks(quic::Connection& connection);

  // Forgets the stream state, for the next connection. Acknowledgements not written yet are dropped:
  // the router delivers those messages again on the next connection, where they are acknowledged anew.
  void reset() {
    readers_.clear();
    stream_ = -1;
    router_features_ = 0;
    unsent_acks_.clear();
  }

  std::int32_t id() const { return id_; }
  Protocol protocol() const { return protocol_; }
  quic::StreamId stream() const { return stream_; }

 private:
  std::int32_t id_;
  Protocol protocol_;
  std::string token_;
  quic::StreamId stream_ = -1;
  std::unordered_map<quic::StreamId, wire::FrameReader> readers_;
  std::uint64_t router_features_ = 0;  // from the Welcome
  std::vector<std::uint64_t> unsent_acks_;
};

}  // namespace debra::client
