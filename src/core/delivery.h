// SPDX-License-Identifier: MIT
#pragma once

#include <cstdint>
#include <limits>
#include <span>
#include <string_view>

#include "wire/codec.h"

namespace debra::core {

// ClientId: the integer a client registers under. Valid ids are 1..2^31-1: 0 cannot be told apart
// from an absent field in FlatBuffers, and negative ids are reserved.
using ClientId = std::int32_t;

constexpr bool is_valid_client_id(std::int64_t id) {
  return id >= 1 && id <= std::numeric_limits<ClientId>::max();
}

// Submission: a message as a sender handed it to the router. payload is borrowed for the call.
struct Submission {
  ClientId sender = 0;  // the registered (authenticated) id, never the one the frame claims
  ClientId recipient = 0;
  std::uint64_t message_id = 0;  // the sender's id for it; 0 from legacy senders
  std::span<const std::uint8_t> payload;
  bool receipt_requested = false;
};

// Delivery: one message on its way to a recipient. frame is the encoded delivery frame
// (wire::encode_delivery), built once and shared by every queue that holds it. sequence is the
// store's number for it (0 when the router runs without a store).
struct Delivery {
  ClientId sender = 0;
  ClientId recipient = 0;
  std::uint64_t message_id = 0;
  wire::SharedFrame frame;
  std::uint64_t sequence = 0;
};

// Outcome: what the router did with a message; the sender's Reply is derived from it.
enum class Outcome {
  Delivered,         // no store: handed to the recipient's connection
  Stored,            // kept by the store; final once the batch commits (SessionSink::on_outcome)
  ForwardedRemote,   // no store: the recipient is on another node
  RecipientOffline,  // no store: recipient offline; dropped
  RecipientBusy,     // no store: the recipient's outbound queue is full; refused
  InvalidRecipient,  // recipient id out of range: refused
  QuotaExceeded,     // the recipient's inbox is full: refused
  StoreUnavailable,  // the store cannot write (disk full, read-only): refused
  Forbidden,         // the send policy does not allow this sender to send to this recipient: refused
};

std::string_view to_string(Outcome outcome);

}  // namespace debra::core
