// SPDX-License-Identifier: MIT
//
// The router against a raw QUIC client that sends what libdebra never would: forged senders, the
// exact maximum frame, and bad input of every kind, each while another pair of clients keeps
// chatting through the same router.
#include <gtest/gtest.h>

#include <atomic>
#include <functional>
#include <map>
#include <mutex>
#include <random>
#include <thread>

#include "raw_client.h"
#include "server_process.h"
#include "test_support.h"

namespace debra::testing {
namespace {

using wire::ErrorCode;
using wire::MessageType;
using Bytes = std::vector<std::uint8_t>;

constexpr std::uint32_t kMaxFrame = 100'000;

Bytes prefix(std::uint64_t length) {
  Bytes out(wire::kLengthPrefixSize);
  wire::write_length_prefix(out.data(), length);
  return out;
}

Bytes concat(Bytes a, const Bytes& b) {
  a.insert(a.end(), b.begin(), b.end());
  return a;
}

// A Message of any type, built directly with FlatBuffers (the codec only encodes known types).
Bytes frame_of_type(int type, std::int32_t client_id) {
  flatbuffers::FlatBufferBuilder fbb;
  Debra::MessageBuilder mb(fbb);
  mb.add_message_type(static_cast<Debra::MessageType>(type));
  mb.add_client_id(client_id);
  fbb.Finish(mb.Finish());
  return concat(prefix(fbb.GetSize()), Bytes(fbb.GetBufferPointer(), fbb.GetBufferPointer() + fbb.GetSize()));
}


// The close a router-detected fault must produce: the peer (router) closed with the application code.
::testing::AssertionResult closed_by_router_with(const std::optional<quic::CloseInfo>& info, ErrorCode code) {
  if (!info) return ::testing::AssertionFailure() << "the connection was not closed";
  if (info->initiator != quic::CloseInfo::Initiator::Peer || !info->application ||
      info->error_code != static_cast<std::uint64_t>(code)) {
    return ::testing::AssertionFailure() << "expected a close by the router with application error "
                                         << static_cast<int>(code) << " (" << wire::to_string(code)
                                         << "), got: " << info->to_string();
  }
  return ::testing::AssertionSuccess();
}

// A pair of native clients chatting through the router under test, before and after each case.
class WithChattingPair : public ::testing::Test {
 protected:
  void start(std::vector<std::string> args = {}) {
    ASSERT_TRUE(server_.start(with_args(std::move(args))));
    alice_ = connect_client(server_, 1);
    bob_ = connect_client(server_, 2);
    ASSERT_TRUE(alice_ && bob_);
    ASSERT_TRUE(exchange(*alice_, 1, *bob_, 2, "before"));
  }
  void expect_pair_still_chatting() {
    EXPECT_TRUE(alice_->connected());
    EXPECT_TRUE(bob_->connected());
    EXPECT_TRUE(exchange(*alice_, 1, *bob_, 2, "after"));
  }

  ServerProcess server_;
  std::unique_ptr<Client> alice_;
  std::unique_ptr<Client> bob_;
};

class ProtocolIntegration : public WithChattingPair {};

// The router stamps the registered id as the sender, whatever id the frame claims.
TEST_F(ProtocolIntegration, SenderIsStampedByTheRouter) {
  ASSERT_NO_FATAL_FAILURE(start());
  for (bool native : {true, false}) {
    SCOPED_TRACE(native ? "native forger" : "legacy forger");
    std::int32_t forger_id = native ? 50 : 51;
    auto raw = RawClient::connect(raw_options(server_, native));
    ASSERT_TRUE(raw) << raw.error().message;
    RawClient& forger = **raw;
    ASSERT_TRUE(forger.register_id(forger_id));
    // Claims to be alice (1).
    forger.send(wire::encode_client_to_client(1, 2, 4711, to_bytes("forged")));
    if (native) {
      auto reply = forger.wait_for(MessageType::Reply, 10s);
      ASSERT_TRUE(reply);
      EXPECT_EQ(reply->message_id, 4711u);
      EXPECT_EQ(reply->status, wire::DeliveryStatus::Accepted) << reply->describe();
    }
    auto message = bob_->receive(10s);
    ASSERT_TRUE(message);
    EXPECT_EQ(message->text(), "forged");
    EXPECT_EQ(message->sender, forger_id);
    // Replies go to the real sender too: alice can answer the forger.
    auto answer = await(bob_->send(forger_id, "who are you?"));
    EXPECT_EQ(answer.status, SendStatus::Accepted) << describe(answer);
    auto at_forger = forger.wait_for(MessageType::ClientToClient, 10s);
    ASSERT_TRUE(at_forger);
    EXPECT_EQ(at_forger->client_id, 2);
    EXPECT_EQ(at_forger->for_client, forger_id);
    EXPECT_TRUE(forger.receive_errors().empty()) << forger.receive_errors().front();
  }
  expect_pair_still_chatting();
}

// The largest payload the router's max frame size allows arrives intact; one byte more makes the
// router close the connection with FrameTooLarge.
TEST_F(ProtocolIntegration, ExactMaximumPayload) {
  constexpr std::uint32_t kBigFrame = 2'000'000;
  ASSERT_NO_FATAL_FAILURE(start({"--max-frame-size", std::to_string(kBigFrame)}));
  constexpr std::int32_t kSender = 60;
  constexpr std::uint64_t kMessageId = 0x0123'4567'89ab'cdefULL;
  const std::size_t max = max_payload(kBigFrame, kSender, 2, kMessageId);
  ASSERT_GT(max, kBigFrame - 100u);  // the envelope is small
  Bytes payload(max);
  std::mt19937 rng(99);
  for (auto& byte : payload) byte = static_cast<std::uint8_t>(rng());
  auto frame = wire::encode_client_to_client(kSender, 2, kMessageId, payload);
  ASSERT_LE(frame.size() - wire::kLengthPrefixSize, kBigFrame);

  auto raw = RawClient::connect(raw_options(server_, true));
  ASSERT_TRUE(raw) << raw.error().message;
  RawClient& sender = **raw;
  ASSERT_TRUE(sender.register_id(kSender));
  sender.send(frame);
  auto reply = sender.wait_for(MessageType::Reply, 30s);
  ASSERT_TRUE(reply);
  EXPECT_EQ(reply->message_id, kMessageId);
  EXPECT_EQ(reply->status, wire::DeliveryStatus::Accepted) << reply->describe();
  auto message = bob_->receive(30s);
  ASSERT_TRUE(message);
  EXPECT_EQ(message->sender, kSender);
  EXPECT_EQ(message->message_id, kMessageId);
  EXPECT_EQ(message->payload.size(), max);
  EXPECT_TRUE(message->payload == payload) << "the payload changed on the way";

  // One byte more: the frame body exceeds the maximum and the router refuses it.
  payload.push_back(0x42);
  auto too_big = wire::encode_client_to_client(kSender, 2, kMessageId + 1, payload);
  ASSERT_GT(too_big.size() - wire::kLengthPrefixSize, kBigFrame);
  sender.send(too_big);
  std::vector<RawMessage> skipped;
  auto error = sender.wait_for(MessageType::Error, 30s, &skipped);
  ASSERT_TRUE(error);
  EXPECT_TRUE(skipped.empty()) << skipped.front().describe();
  EXPECT_EQ(error->error_code, ErrorCode::FrameTooLarge) << error->describe();
  EXPECT_TRUE(closed_by_router_with(sender.wait_closed(10s), ErrorCode::FrameTooLarge));
  EXPECT_FALSE(bob_->receive(0ms)) << "bob received the refused message";
  expect_pair_still_chatting();
}

// A native ClientToClient to an invalid recipient gets a rejecting Reply; the connection stays open.
TEST_F(ProtocolIntegration, InvalidRecipientIsRejectedNotFatalForNative) {
  ASSERT_NO_FATAL_FAILURE(start());
  auto raw = RawClient::connect(raw_options(server_, true));
  ASSERT_TRUE(raw) << raw.error().message;
  RawClient& client = **raw;
  ASSERT_TRUE(client.register_id(40));
  for (std::int32_t recipient : {0, -5}) {
    auto id = static_cast<std::uint64_t>(100 - recipient);
    client.send(wire::encode_client_to_client(40, recipient, id, to_bytes("to nobody")));
    auto reply = client.next_message(10s);
    ASSERT_TRUE(reply);
    ASSERT_EQ(reply->type, MessageType::Reply) << reply->describe();
    EXPECT_EQ(reply->message_id, id);
    EXPECT_EQ(reply->status, wire::DeliveryStatus::Rejected);
    EXPECT_EQ(reply->error_code, ErrorCode::InvalidId);
    EXPECT_FALSE(reply->reason.empty());
  }
  // Still open and usable.
  client.send(wire::encode_client_to_client(40, 2, 200, to_bytes("still here")));
  auto reply = client.next_message(10s);
  ASSERT_TRUE(reply);
  EXPECT_EQ(reply->type, MessageType::Reply) << reply->describe();
  EXPECT_EQ(reply->message_id, 200u);
  EXPECT_EQ(reply->status, wire::DeliveryStatus::Accepted);
  auto message = bob_->receive(10s);
  ASSERT_TRUE(message);
  EXPECT_EQ(message->sender, 40);
  EXPECT_EQ(message->text(), "still here");
  EXPECT_FALSE(client.closed());
  expect_pair_still_chatting();
}

constexpr std::uint64_t kBatchedFeatures = static_cast<std::uint64_t>(wire::Feature::BatchedAcks) |
                                           static_cast<std::uint64_t>(wire::Feature::BatchedReplies);

Bytes frame_of(wire::FrameView view) { return Bytes(view.begin(), view.end()); }

// A burst of messages from a client that announced BatchedReplies is answered in few Reply frames,
// every message once and in the order sent; a client that announced nothing gets a Reply per message.
TEST_F(ProtocolIntegration, AcceptedRepliesAreBatchedOnlyForClientsThatAnnounceIt) {
  ASSERT_NO_FATAL_FAILURE(start());
  constexpr std::uint64_t kCount = 200;
  for (bool batched : {true, false}) {
    SCOPED_TRACE(batched ? "BatchedReplies announced" : "nothing announced");
    auto options = raw_options(server_, true);
    options.features = batched ? kBatchedFeatures : 0;
    auto raw = RawClient::connect(options);
    ASSERT_TRUE(raw) << raw.error().message;
    RawClient& client = **raw;
    const std::int32_t id = batched ? 80 : 81;
    ASSERT_TRUE(client.register_id(id));
    Bytes burst;
    std::vector<std::uint64_t> sent;
    for (std::uint64_t k = 0; k < kCount; ++k) {
      sent.push_back(1000 + k);
      burst = concat(std::move(burst), wire::encode_client_to_client(id, 2, sent.back(), to_bytes("burst")));
    }
    // One write: the messages arrive a dozen to a packet, and a packet's messages are committed and
    // answered together.
    client.send(burst);
    std::vector<std::uint64_t> answered;
    std::size_t frames = 0;
    while (answered.size() < kCount) {
      auto reply = client.wait_for(MessageType::Reply, 10s);
      ASSERT_TRUE(reply) << answered.size() << " of " << kCount << " messages answered";
      EXPECT_EQ(reply->status, wire::DeliveryStatus::Accepted) << reply->describe();
      if (!batched) {
        EXPECT_TRUE(reply->message_ids.empty()) << reply->describe();
      }
      ++frames;
      answered.push_back(reply->message_id);
      answered.insert(answered.end(), reply->message_ids.begin(), reply->message_ids.end());
    }
    EXPECT_EQ(answered, sent);
    if (batched) {
      EXPECT_LT(frames, kCount);
    } else {
      EXPECT_EQ(frames, kCount);
    }
    for (std::uint64_t k = 0; k < kCount; ++k) {
      auto message = bob_->receive(10s);
      ASSERT_TRUE(message) << "bob received " << k << " of " << kCount;
      EXPECT_EQ(message->message_id, sent[k]);
    }
  }
  expect_pair_still_chatting();
}

// A batched Ack takes every delivery it names and only those: their senders get Delivered receipts,
// and the next connection of the recipient is sent exactly the others again.
TEST_F(ProtocolIntegration, ABatchedAckTakesExactlyTheDeliveriesItNames) {
  ASSERT_NO_FATAL_FAILURE(start());
  constexpr std::int32_t kRecipient = 82;
  constexpr int kCount = 5;
  auto options = raw_options(server_, true);
  options.features = kBatchedFeatures;
  auto raw = RawClient::connect(options);
  ASSERT_TRUE(raw) << raw.error().message;
  RawClient& recipient = **raw;
  recipient.send(wire::encode_registration(kRecipient, {}, kBatchedFeatures));
  auto welcome = recipient.next_message(10s);
  ASSERT_TRUE(welcome);
  ASSERT_EQ(welcome->type, MessageType::Welcome) << welcome->describe();
  EXPECT_TRUE(wire::has_feature(welcome->features, wire::Feature::BatchedAcks));
  EXPECT_TRUE(wire::has_feature(welcome->features, wire::Feature::BatchedReplies));

  std::mutex mutex;
  std::vector<std::uint64_t> receipts;
  std::vector<std::uint64_t> ids;
  for (int k = 0; k < kCount; ++k) {
    SendOptions send_options;
    send_options.on_receipt = [&](const Receipt& r) {
      std::lock_guard lock(mutex);
      if (r.delivered) receipts.push_back(r.message_id);
    };
    auto result = await(alice_->send(kRecipient, to_bytes("m" + std::to_string(k)), std::move(send_options)));
    ASSERT_EQ(result.status, SendStatus::Accepted) << describe(result);
    ids.push_back(result.message_id);
  }
  std::vector<std::uint64_t> sequences;
  for (int k = 0; k < kCount; ++k) {
    auto delivery = recipient.wait_for(MessageType::ClientToClient, 10s);
    ASSERT_TRUE(delivery) << "delivery " << k;
    EXPECT_EQ(delivery->message_id, ids[k]);
    sequences.push_back(delivery->sequence);
  }
  const std::vector<std::uint64_t> taken{sequences[0], sequences[1], sequences[3]};
  recipient.send(frame_of(wire::view_acks(taken)));
  const std::vector<std::uint64_t> expected{ids[0], ids[1], ids[3]};
  const auto deadline = std::chrono::steady_clock::now() + 10s;
  for (;;) {
    {
      std::lock_guard lock(mutex);
      if (receipts.size() >= expected.size() || std::chrono::steady_clock::now() >= deadline) break;
    }
    std::this_thread::sleep_for(10ms);
  }
  {
    std::lock_guard lock(mutex);
    EXPECT_EQ(receipts, expected);
  }

  raw->reset();
  auto again = RawClient::connect(options);
  ASSERT_TRUE(again) << again.error().message;
  // Not register_id(): the first redelivery, on a delivery lane, may overtake the Welcome.
  (*again)->send(wire::encode_registration(kRecipient, {}, kBatchedFeatures));
  std::vector<RawMessage> before_welcome;
  ASSERT_TRUE((*again)->wait_for(MessageType::Welcome, 10s, &before_welcome));
  for (int k : {2, 4}) {
    std::optional<RawMessage> delivery;
    if (!before_welcome.empty()) {
      delivery = std::move(before_welcome.front());
      before_welcome.erase(before_welcome.begin());
    } else {
      delivery = (*again)->next_message(10s);
    }
    ASSERT_TRUE(delivery) << "redelivery of message " << k;
    ASSERT_EQ(delivery->type, MessageType::ClientToClient) << delivery->describe();
    EXPECT_EQ(delivery->message_id, ids[k]);
    EXPECT_EQ(delivery->sequence, sequences[k]);
  }
  EXPECT_FALSE((*again)->next_message(300ms)) << "more than the unacknowledged messages came again";
  expect_pair_still_chatting();
}

// A router run with --protocol-features none acts as one that predates the features: its Welcome
// announces none, every message gets a Reply of its own, and an Ack counts for its first sequence
// only. Against it libdebra must acknowledge each delivery in an Ack of its own, which only the
// senders' receipts show: every message of a burst must get its Delivered receipt.
TEST_F(ProtocolIntegration, AgainstARouterWithoutTheFeaturesLibdebraAcknowledgesEachDeliveryAlone) {
  ASSERT_NO_FATAL_FAILURE(start({"--protocol-features", "none"}));
  auto options = raw_options(server_, true);
  options.features = kBatchedFeatures;
  auto raw = RawClient::connect(options);
  ASSERT_TRUE(raw) << raw.error().message;
  RawClient& client = **raw;
  constexpr std::int32_t kRaw = 83;
  client.send(wire::encode_registration(kRaw, {}, kBatchedFeatures));
  auto welcome = client.wait_for(MessageType::Welcome, 10s);
  ASSERT_TRUE(welcome);
  EXPECT_EQ(welcome->features, 0u) << welcome->describe();

  constexpr std::uint64_t kBurst = 50;
  Bytes burst;
  for (std::uint64_t k = 0; k < kBurst; ++k) {
    burst = concat(std::move(burst), wire::encode_client_to_client(kRaw, 2, 2000 + k, to_bytes("burst")));
  }
  client.send(burst);
  for (std::uint64_t k = 0; k < kBurst; ++k) {
    auto reply = client.wait_for(MessageType::Reply, 10s);
    ASSERT_TRUE(reply) << k << " of " << kBurst << " messages answered";
    EXPECT_EQ(reply->status, wire::DeliveryStatus::Accepted) << reply->describe();
    EXPECT_EQ(reply->message_id, 2000 + k);
    EXPECT_TRUE(reply->message_ids.empty()) << reply->describe();
  }
  for (std::uint64_t k = 0; k < kBurst; ++k) ASSERT_TRUE(bob_->receive(10s)) << "bob received " << k;

  // Receipts, in the order the router took the acknowledgements, collected per recipient. Shared
  // with alice's handlers, which outlive this test's body (one message is never acknowledged).
  struct Receipts {
    std::mutex mutex;
    std::map<std::int32_t, std::vector<std::uint64_t>> delivered;
  };
  auto receipts = std::make_shared<Receipts>();
  auto send_with_receipt = [&](std::int32_t to, const std::string& text) {
    SendOptions send_options;
    send_options.on_receipt = [receipts](const Receipt& r) {
      std::lock_guard lock(receipts->mutex);
      if (r.delivered) receipts->delivered[r.recipient].push_back(r.message_id);
    };
    return alice_->send(to, to_bytes(text), std::move(send_options));
  };
  auto accepted_id = [](std::future<SendResult> sent) {
    auto result = await(std::move(sent));
    EXPECT_EQ(result.status, SendStatus::Accepted) << describe(result);
    return result.message_id;
  };
  auto receipts_for = [&](std::int32_t recipient, std::size_t count) {
    wait_until(
        [&] {
          std::lock_guard lock(receipts->mutex);
          return receipts->delivered[recipient].size() >= count;
        },
        10s);
    std::lock_guard lock(receipts->mutex);
    return receipts->delivered[recipient];
  };

  // An Ack naming two deliveries takes the first; a single Ack then takes the third.
  std::vector<std::uint64_t> ids;
  std::vector<std::uint64_t> sequences;
  for (int k = 0; k < 3; ++k) {
    ids.push_back(accepted_id(send_with_receipt(kRaw, "r" + std::to_string(k))));
    auto delivery = client.wait_for(MessageType::ClientToClient, 10s);
    ASSERT_TRUE(delivery) << "delivery " << k;
    sequences.push_back(delivery->sequence);
  }
  client.send(frame_of(wire::view_acks(std::vector<std::uint64_t>{sequences[0], sequences[1]})));
  client.send(wire::encode_ack(sequences[2]));
  EXPECT_EQ(receipts_for(kRaw, 2), (std::vector<std::uint64_t>{ids[0], ids[2]}));

  // libdebra, which would batch the acknowledgements of a burst, must not.
  constexpr std::int32_t kLibdebra = 84;
  std::atomic<int> received = 0;  // before the client whose handler counts into it
  auto recipient = connect_client(server_, kLibdebra);
  ASSERT_NE(recipient, nullptr);
  recipient->set_message_handler([&](Message) { ++received; });
  std::vector<std::future<SendResult>> burst_sent;
  for (std::uint64_t k = 0; k < kBurst; ++k) burst_sent.push_back(send_with_receipt(kLibdebra, "b" + std::to_string(k)));
  std::vector<std::uint64_t> burst_ids;
  for (auto& sent : burst_sent) burst_ids.push_back(accepted_id(std::move(sent)));
  EXPECT_EQ(receipts_for(kLibdebra, kBurst), burst_ids);
  EXPECT_EQ(received, static_cast<int>(kBurst));
  expect_pair_still_chatting();
}

// An Ack may name at most 65,536 deliveries: one that names more closes its connection with
// ProtocolError, and the router goes on serving everyone else.
TEST_F(ProtocolIntegration, AnAckNamingTooManyDeliveriesIsAProtocolError) {
  ASSERT_NO_FATAL_FAILURE(start());
  for (std::uint64_t count : {65536ULL, 65537ULL}) {
    SCOPED_TRACE(std::to_string(count) + " sequences");
    auto options = raw_options(server_, true);
    options.features = kBatchedFeatures;
    auto raw = RawClient::connect(options);
    ASSERT_TRUE(raw) << raw.error().message;
    RawClient& client = **raw;
    ASSERT_TRUE(client.register_id(83));
    std::vector<std::uint64_t> sequences(count);
    for (std::uint64_t k = 0; k < count; ++k) sequences[k] = 1'000'000'000 + k;  // nobody's
    client.send(frame_of(wire::view_acks(sequences)));
    if (count == 65536) {
      // Within the limit: nothing happens, and the connection still works.
      client.send(wire::encode_client_to_client(83, 2, 7, to_bytes("still here")));
      auto reply = client.wait_for(MessageType::Reply, 10s);
      ASSERT_TRUE(reply);
      EXPECT_EQ(reply->status, wire::DeliveryStatus::Accepted) << reply->describe();
      auto message = bob_->receive(10s);
      ASSERT_TRUE(message);
      EXPECT_EQ(message->text(), "still here");
      continue;
    }
    auto error = client.wait_for(MessageType::Error, 10s);
    ASSERT_TRUE(error);
    EXPECT_EQ(error->error_code, ErrorCode::ProtocolError) << error->describe();
    EXPECT_NE(error->reason.find("65536"), std::string::npos) << error->reason;
    EXPECT_TRUE(closed_by_router_with(client.wait_closed(10s), ErrorCode::ProtocolError));
  }
  expect_pair_still_chatting();
}

// A newer connection registering the same id displaces the older, which is closed with
// SessionTakenOver (native: after an Error frame saying so).
TEST_F(ProtocolIntegration, TakeoverClosesTheOlderConnection) {
  ASSERT_NO_FATAL_FAILURE(start());
  for (bool native : {true, false}) {
    SCOPED_TRACE(native ? "native older connection" : "legacy older connection");
    std::int32_t id = native ? 70 : 71;
    auto raw = RawClient::connect(raw_options(server_, native));
    ASSERT_TRUE(raw) << raw.error().message;
    RawClient& older = **raw;
    ASSERT_TRUE(older.register_id(id));
    if (!native) {
      // Legacy has no Welcome: a delivery proves the registration took effect.
      auto sent = send_when_online(*alice_, id, "registered?");
      ASSERT_TRUE(sent.ok()) << describe(sent);
      ASSERT_TRUE(older.wait_for(MessageType::ClientToClient, 10s));
    }
    auto newer = connect_client(server_, id);
    ASSERT_TRUE(newer);
    if (native) {
      auto error = older.next_message(10s);
      ASSERT_TRUE(error);
      EXPECT_EQ(error->type, MessageType::Error) << error->describe();
      EXPECT_EQ(error->error_code, ErrorCode::SessionTakenOver) << error->describe();
    }
    EXPECT_TRUE(closed_by_router_with(older.wait_closed(10s), ErrorCode::SessionTakenOver));
    EXPECT_TRUE(deliver(*alice_, 1, *newer, id, "to the newer connection"));
  }
  expect_pair_still_chatting();
}

// BadInputCase: one kind of bad input and the error code it must draw.
struct BadInputCase {
  std::string name;
  bool native = true;
  std::int32_t register_as = 0;  // register this id first (0: send the bad input unregistered)
  std::function<std::vector<Bytes>()> frames;
  bool finish = false;  // end the stream after the frames
  ErrorCode expected = ErrorCode::ProtocolError;
  std::string reason_contains = {};  // a phrase the close reason must contain (proves which check fired)
};

std::vector<BadInputCase> bad_input_cases() {
  std::vector<BadInputCase> cases;
  for (bool native : {true, false}) {
    std::string mode = native ? "Native" : "Legacy";
    cases.push_back({"MalformedFlatBuffer" + mode, native, 30,
                     [] { return std::vector<Bytes>{concat(prefix(24), Bytes(24, 0xff))}; }, false,
                     ErrorCode::ProtocolError});
    cases.push_back({"MalformedFlatBufferUnregistered" + mode, native, 0,
                     [] {
                       Bytes garbage{0x10, 0x00, 0x00, 0x00, 0xde, 0xad, 0xbe, 0xef, 0x01, 0x02, 0x03, 0x04};
                       return std::vector<Bytes>{concat(prefix(garbage.size()), garbage)};
                     },
                     false, ErrorCode::ProtocolError});
    cases.push_back({"PrefixAboveMaxFrameSize" + mode, native, 30,
                     [] { return std::vector<Bytes>{concat(prefix(kMaxFrame + 1), Bytes(16, 0))}; }, false,
                     ErrorCode::FrameTooLarge});
    cases.push_back({"HugePrefix" + mode, native, 0,
                     [] { return std::vector<Bytes>{prefix(0xffff'ffff'ffff'ffffULL)}; }, false,
                     ErrorCode::FrameTooLarge});
    cases.push_back({"LyingPrefixThenFin" + mode, native, 30,
                     [] { return std::vector<Bytes>{concat(prefix(100), Bytes(10, 0x11))}; }, true,
                     ErrorCode::ProtocolError, "stream ended"});
    cases.push_back({"MessageBeforeRegistration" + mode, native, 0,
                     [] { return std::vector<Bytes>{wire::encode_client_to_client(30, 2, 1, to_bytes("early"))}; },
                     false, ErrorCode::NotRegistered});
    cases.push_back({"UnknownMessageType9" + mode, native, 30,
                     [] { return std::vector<Bytes>{frame_of_type(9, 30)}; }, false,
                     ErrorCode::UnknownMessageType});
    cases.push_back({"RouterOnlyTypeReply" + mode, native, 30,
                     [] {
                       return std::vector<Bytes>{
                           wire::encode_reply(1, wire::DeliveryStatus::Accepted, ErrorCode::NoError, {})};
                     },
                     false, ErrorCode::UnknownMessageType});
    cases.push_back({"RouterOnlyTypeErrorUnregistered" + mode, native, 0,
                     [] { return std::vector<Bytes>{wire::encode_error(ErrorCode::InternalError, "no")}; }, false,
                     ErrorCode::UnknownMessageType});
    cases.push_back({"RegistrationWithId0" + mode, native, 0,
                     [] { return std::vector<Bytes>{wire::encode_registration(0)}; }, false, ErrorCode::InvalidId});
    cases.push_back({"RegistrationWithIdMinus5" + mode, native, 0,
                     [] { return std::vector<Bytes>{wire::encode_registration(-5)}; }, false,
                     ErrorCode::InvalidId});
    cases.push_back({"SecondRegistration" + mode, native, 30,
                     [] { return std::vector<Bytes>{wire::encode_registration(31)}; }, false,
                     ErrorCode::AlreadyRegistered});
    cases.push_back({"SecondRegistrationSameId" + mode, native, 30,
                     [] { return std::vector<Bytes>{wire::encode_registration(30)}; }, false,
                     ErrorCode::AlreadyRegistered});
  }
  // A legacy client has no Reply to hear a rejection in: an invalid recipient closes its connection.
  cases.push_back({"RecipientId0Legacy", false, 30,
                   [] { return std::vector<Bytes>{wire::encode_client_to_client(30, 0, 0, to_bytes("x"))}; }, false,
                   ErrorCode::InvalidId});
  return cases;
}

void PrintTo(const BadInputCase& bad, std::ostream* out) { *out << bad.name; }

class BadInput : public WithChattingPair, public ::testing::WithParamInterface<BadInputCase> {};

TEST_P(BadInput, RouterClosesWithTheMatchingCode) {
  const BadInputCase& bad = GetParam();
  // Forward-only mode (--store none): the parser and the closes are the same in both modes, and here
  // RecipientOffline shows that the failed connection's id was released.
  ASSERT_NO_FATAL_FAILURE(start({"--max-frame-size", std::to_string(kMaxFrame), "--store", "none"}));
  auto raw = RawClient::connect(raw_options(server_, bad.native));
  ASSERT_TRUE(raw) << raw.error().message;
  RawClient& client = **raw;
  ASSERT_EQ(client.alpn(), bad.native ? "debra/1" : "");
  if (bad.register_as != 0) {
    ASSERT_TRUE(client.register_id(bad.register_as));
    if (!bad.native) {
      // Legacy has no Welcome: prove the registration took effect before the bad input.
      auto sent = send_when_online(*alice_, bad.register_as, "registered?");
      ASSERT_TRUE(sent.ok()) << describe(sent);
      auto message = client.wait_for(MessageType::ClientToClient, 10s);
      ASSERT_TRUE(message);
      EXPECT_EQ(message->client_id, 1);
    }
  }
  for (auto& frame : bad.frames()) client.send(std::move(frame));
  if (bad.finish) client.finish();

  if (bad.native) {
    // The Error frame first, on the client's own stream, then the close.
    auto error = client.next_message(10s);
    ASSERT_TRUE(error) << "no Error frame";
    EXPECT_EQ(error->type, MessageType::Error) << error->describe();
    EXPECT_EQ(error->error_code, bad.expected) << error->describe();
    EXPECT_FALSE(error->reason.empty());
    EXPECT_EQ(error->stream, 0) << "the Error frame belongs on the client's bidirectional stream";
  }
  auto closed = client.wait_closed(10s);
  EXPECT_TRUE(closed_by_router_with(closed, bad.expected));
  if (closed) {
    EXPECT_FALSE(closed->reason.empty()) << "the router's close should say why";
    EXPECT_NE(closed->reason.find(bad.reason_contains), std::string::npos) << closed->to_string();
  }
  auto extra = client.next_message(0ms);
  EXPECT_FALSE(extra) << "unexpected frame: " << extra->describe();
  EXPECT_TRUE(client.receive_errors().empty()) << client.receive_errors().front();

  if (bad.register_as != 0) {
    // The failed connection's id is free again.
    auto result = await(alice_->send(bad.register_as, "gone?"));
    EXPECT_EQ(result.status, SendStatus::RecipientOffline) << describe(result);
  }
  expect_pair_still_chatting();
}

INSTANTIATE_TEST_SUITE_P(ProtocolIntegration, BadInput, ::testing::ValuesIn(bad_input_cases()),
                         [](const ::testing::TestParamInfo<BadInputCase>& param) { return param.param.name; });

}  // namespace
}  // namespace debra::testing
