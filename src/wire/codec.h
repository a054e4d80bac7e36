// SPDX-License-Identifier: MIT
//
// The debra wire format, free of I/O: the 8-byte big-endian length prefix, FlatBuffers verification
// and decoding of Debra.Message, and encoders for every frame the router and the clients send.
// Both protocol modes share this framing; see docs/protocol.md.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "debra_generated.h"
#include "util/result.h"

namespace debra::wire {

using MessageType = Debra::MessageType;
using DeliveryStatus = Debra::Status;
using ErrorCode = Debra::ErrorCode;
using Feature = Debra::Feature;

// The optional features a peer announced (ClientRegistration.features, Welcome.features): bits of
// Feature, unknown ones included, so a peer newer than this code loses nothing in passing.
inline bool has_feature(std::uint64_t features, Feature feature) {
  return (features & static_cast<std::uint64_t>(feature)) != 0;
}

inline constexpr std::size_t kLengthPrefixSize = 8;
inline constexpr std::uint32_t kProtocolVersion = 1;
inline constexpr std::string_view kAlpn = "debra/1";
// The default largest frame body (prefix excluded) a peer accepts: room for a 4 MiB payload and
// the envelope around it.
inline constexpr std::uint32_t kDefaultMaxFrameSize = 4 * 1024 * 1024 + 1024;
// What a FlatBuffers envelope around a payload costs at most, excluding the reason string.
inline constexpr std::size_t kMaxEnvelopeOverhead = 128;

// ProtocolFault: a peer's violation of the protocol. code goes on the wire (Error frame, rejecting
// Reply, or QUIC application close code); reason is for humans and logs.
struct ProtocolFault {
  ErrorCode code = ErrorCode::ProtocolError;
  std::string reason;
};

std::string_view to_string(ErrorCode code);
std::string_view to_string(DeliveryStatus status);
std::string_view to_string(MessageType type);

// Frame: one encoded frame, length prefix included, ready to be written to a stream.
using Frame = std::vector<std::uint8_t>;

// FrameView: an encoded frame, length prefix included, inside the calling thread's encoder: valid
// until that thread encodes its next frame. For the per-message frames of a caller that copies them
// straight on (into a stream's send buffer): a Frame would cost it an allocation and a copy more.
using FrameView = std::span<const std::uint8_t>;

// SharedFrame: a delivery's frame, encoded once and then only read by every queue that holds it
// (its commit batch, a mailbox, the recipient's stream). One allocation holds the bytes and the
// reference count, or, for the router's frames, a FrameArena chunk holds those of many messages.
class SharedFrame {
 public:
  SharedFrame() = default;
  SharedFrame(std::nullptr_t) {}  // none, as for a shared_ptr
  // Takes bytes already filled in; nobody writes them afterwards.
  SharedFrame(std::shared_ptr<const std::uint8_t[]> bytes, std::size_t size) : bytes_(std::move(bytes)), size_(size) {}

  explicit operator bool() const { return bytes_ != nullptr; }
  std::size_t size() const { return size_; }
  const std::uint8_t* data() const { return bytes_.get(); }
  const std::uint8_t* begin() const { return data(); }
  const std::uint8_t* end() const { return data() + size_; }
  std::span<const std::uint8_t> bytes() const { return {data(), size_}; }

 private:
  std::shared_ptr<const std::uint8_t[]> bytes_;
  std::size_t size_ = 0;
};

// U64List: a FlatBuffers vector of ulong inside a decoded frame body (Ack.sequences,
// Reply.message_ids), read in place; valid as long as the body is.
class U64List {
 public:
  U64List() = default;
  U64List(const std::uint8_t* elements, std::size_t size) : elements_(elements), size_(size) {}
  std::size_t size() const { return size_; }
  bool empty() const { return size_ == 0; }
  std::uint64_t operator[](std::size_t i) const;

 private:
  const std::uint8_t* elements_ = nullptr;
  std::size_t size_ = 0;
};

// FrameArena: where the router puts the delivery frames it encodes, back to back in shared chunks,
// so that a frame costs no allocation of its own: a SharedFrame from here holds a reference to its
// chunk, which lives as long as any of its frames. A frame too large to share a chunk gets one of
// its own. Not thread-safe (the router's lock guards it); its frames are like any SharedFrame.
class FrameArena {
 public:
  // A copy of frame that shares the current chunk.
  SharedFrame keep(FrameView frame);

 private:
  std::shared_ptr<std::uint8_t[]> chunk_;
  std::size_t used_ = 0;
};

// Message: a decoded Debra.Message. Spans and views point into the frame body given to decode() and
// are valid only as long as it is. Absent fields read as their schema defaults (0, empty).
struct Message {
  MessageType type = MessageType::ClientRegistration;
  std::int32_t client_id = 0;
  std::int32_t for_client = 0;
  std::span<const std::uint8_t> payload;
  std::uint64_t message_id = 0;
  DeliveryStatus status = DeliveryStatus::Accepted;
  ErrorCode error_code = ErrorCode::NoError;
  std::string_view reason;
  std::uint32_t protocol_version = 0;
  std::uint32_t max_frame_size = 0;
  std::uint32_t delivery_lanes = 0;
  std::uint64_t sequence = 0;
  bool receipt = false;
  std::string_view token;  // ClientRegistration: the authentication token; empty when absent
  std::uint64_t features = 0;  // ClientRegistration, Welcome: the announced Feature bits
  U64List sequences;           // Ack: deliveries taken besides sequence (BatchedAcks)
  U64List message_ids;         // Reply: messages with the same outcome after message_id (BatchedReplies)
  std::uint32_t retry_after_ms = 0;  // Reply (RateLimited): how long until the router would admit it
};

// Verifies body as a Debra.Message FlatBuffer and decodes it. Fails with ProtocolError for anything
// the FlatBuffers verifier rejects; the message_type is returned as sent, unchecked (an unknown type is
// the caller's decision). Never reads outside body.
Result<Message, ProtocolFault> decode(std::span<const std::uint8_t> body);

// FrameReader: reassembles frames from the bytes of one stream, which arrive in arbitrary pieces.
// Owned by one stream; not thread-safe.
class FrameReader {
 public:
  explicit FrameReader(std::uint32_t max_frame_size = kDefaultMaxFrameSize);

  // Appends bytes received on the stream; copies them.
  void append(std::span<const std::uint8_t> bytes);

  // Returns the body of the next complete frame, nullopt when more bytes are needed, or
  // FrameTooLarge as soon as a length prefix above max_frame_size is seen (the body is not awaited).
  // The span stays valid until the next call of append() or next().
  Result<std::optional<std::span<const std::uint8_t>>, ProtocolFault> next();

  // Bytes held that do not yet form a complete frame; non-zero at end of stream means a truncated
  // frame (a length prefix that promised more than was sent).
  std::size_t buffered() const { return buffer_.size() - read_; }

  std::uint32_t max_frame_size() const { return max_frame_size_; }

 private:
  std::vector<std::uint8_t> buffer_;
  std::size_t read_ = 0;  // offset of the first unconsumed byte in buffer_
  std::uint32_t max_frame_size_;
};

// Encoders. Each returns a whole frame (prefix + body).
// token: the authentication token for client_id (routers run with --auth token). Empty: the field is
// left out, so the frame is byte for byte the original debra's registration. features: the Feature
// bits the client announces (native only); 0 leaves the field out.
Frame encode_registration(std::int32_t client_id, std::string_view token = {}, std::uint64_t features = 0);
// A message from a client to the router. Legacy clients leave message_id 0.
// receipt asks the router for a Receipt once the recipient acknowledges the message (native).
Frame encode_client_to_client(std::int32_t client_id, std::int32_t for_client, std::uint64_t message_id,
                              std::span<const std::uint8_t> payload, bool receipt = false);
// The router's delivery of a message: client_id is the router-stamped sender, sequence the router's
// number for it (acknowledged with encode_ack). Readable by both legacy and native recipients, so
// the router encodes each message once.
SharedFrame encode_delivery(std::int32_t sender, std::int32_t recipient, std::uint64_t message_id,
                            std::span<const std::uint8_t> payload, std::uint64_t sequence = 0);
// The same frame, kept in arena.
SharedFrame encode_delivery(FrameArena& arena, std::int32_t sender, std::int32_t recipient, std::uint64_t message_id,
                            std::span<const std::uint8_t> payload, std::uint64_t sequence = 0);
// A recipient's acknowledgement of the delivery with this sequence.
Frame encode_ack(std::uint64_t sequence);

// The same frames as encode_client_to_client, encode_ack and encode_reply, as views (FrameView).
FrameView view_client_to_client(std::int32_t client_id, std::int32_t for_client, std::uint64_t message_id,
                                std::span<const std::uint8_t> payload, bool receipt = false);
FrameView view_ack(std::uint64_t sequence);
// BatchedAcks: one Ack for every delivery in sequences (not empty).
FrameView view_acks(std::span<const std::uint64_t> sequences);
// BatchedReplies: one Reply that answers Accepted to every message in message_ids (not empty), in
// their order.
FrameView view_accepted(std::span<const std::uint64_t> message_ids);
FrameView view_reply(std::uint64_t message_id, DeliveryStatus status, ErrorCode error_code, std::string_view reason,
                     std::uint32_t retry_after_ms = 0);
// The router's receipt to a sender: status Delivered or Expired; for_client is the recipient.
Frame encode_receipt(std::uint64_t message_id, std::int32_t recipient, DeliveryStatus status);
Frame encode_welcome(std::int32_t client_id, std::uint32_t max_frame_size, std::uint32_t delivery_lanes,
                     std::uint64_t features = 0);
Frame encode_reply(std::uint64_t message_id, DeliveryStatus status, ErrorCode error_code,
                   std::string_view reason);
Frame encode_error(ErrorCode code, std::string_view reason);

// Writes/reads the 8-byte big-endian length prefix.
void write_length_prefix(std::uint8_t* out, std::uint64_t length);
std::uint64_t read_length_prefix(const std::uint8_t* in);

}  // namespace debra::wire
