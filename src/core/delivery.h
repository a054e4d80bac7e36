// SPDX-License-Identifier: MIT
#pragma once

#include <cstdint>
#include <limits>
#include <string_view>

#include "wire/codec.h"

namespace debra::core {

// ClientId: the integer a client registers under. Valid ids are 1..2^31-1: 0 cannot be told apart
// from an absent field in FlatBuffers, and negative ids are reserved.
using ClientId = std::int32_t;

constexpr bool is_valid_client_id(std::int64_t id) {
  return id >= 1 && id <= std::numeric_limits<ClientId>::max();
}

// Delivery: one message on its way from a sender to a recipient. frame is the encoded delivery frame
// (wire::encode_delivery), built once at ingress and shared by every queue that holds it.
struct Delivery {
  ClientId sender = 0;
  ClientId recipient = 0;
  std::uint64_t message_id = 0;
  wire::SharedFrame frame;
};

// Outcome: what the router did with a message; the sender's Reply is derived from it.
enum class Outcome {
  Delivered,         // handed to the recipient's connection
  Stored,            // recipient offline; kept by the offline store
  ForwardedRemote,   // recipient on another node
  RecipientOffline,  // recipient offline and nothing could keep the message: dropped
  RecipientBusy,     // recipient's outbound queue full: refused
  InvalidRecipient,  // recipient id out of range: refused
};

std::string_view to_string(Outcome outcome);

}  // namespace debra::core
