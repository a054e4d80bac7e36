// SPDX-License-Identifier: MIT
#include "wire/codec.h"

#include <gtest/gtest.h>

#include <atomic>
#include <cstdlib>
#include <cstring>
#include <new>
#include <random>
#include <string>
#include <vector>

// Counts heap allocations so that the FrameReader's "no allocation per frame in steady state" promise
// is tested rather than assumed. Replacing these two covers every non-aligned new and delete.
namespace {
std::atomic<std::size_t> g_allocations{0};
}  // namespace

// GCC inlines these and then mistakes the pairing of the replaced new with free() for a mismatch.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmismatched-new-delete"
#endif
void* operator new(std::size_t size) {
  g_allocations.fetch_add(1, std::memory_order_relaxed);
  if (void* p = std::malloc(size == 0 ? 1 : size)) return p;
  throw std::bad_alloc();
}
void operator delete(void* p) noexcept { std::free(p); }
void operator delete(void* p, std::size_t) noexcept { std::free(p); }
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif

namespace debra::wire {
namespace {

using Bytes = std::vector<std::uint8_t>;

std::span<const std::uint8_t> body_of(const Frame& frame) {
  return std::span<const std::uint8_t>(frame).subspan(kLengthPrefixSize);
}

Bytes bytes(std::string_view text) { return Bytes(text.begin(), text.end()); }

Bytes to_bytes(std::span<const std::uint8_t> span) { return Bytes(span.begin(), span.end()); }

// Checks the prefix of frame and decodes its body. The message's views point into frame, so a
// temporary frame is refused at compile time.
Message decode_frame_bytes(std::span<const std::uint8_t> frame) {
  EXPECT_GE(frame.size(), kLengthPrefixSize);
  EXPECT_EQ(read_length_prefix(frame.data()), frame.size() - kLengthPrefixSize);
  auto decoded = decode(frame.subspan(kLengthPrefixSize));
  EXPECT_TRUE(decoded.has_value()) << decoded.error().reason;
  return decoded.has_value() ? *decoded : Message{};
}
Message decode_frame(Frame&& frame) = delete;
Message decode_frame(const Frame& frame) { return decode_frame_bytes(frame); }
Message decode_frame(SharedFrame&& frame) = delete;
Message decode_frame(const SharedFrame& frame) { return decode_frame_bytes(frame.bytes()); }

// A raw view of a frame's root table, as an original client's generated code (which knows only the
// four legacy fields, at vtable offsets 4, 6, 8, 10) would see it.
const flatbuffers::Table* legacy_view(const std::uint8_t* frame) {
  return flatbuffers::GetRoot<flatbuffers::Table>(frame + kLengthPrefixSize);
}
const flatbuffers::Table* legacy_view(const Frame& frame) { return legacy_view(frame.data()); }
const flatbuffers::Table* legacy_view(const SharedFrame& frame) { return legacy_view(frame.data()); }

Frame copy_of(const SharedFrame& frame) { return Frame(frame.begin(), frame.end()); }

Frame frame_from_body(std::span<const std::uint8_t> body) {
  Frame frame(kLengthPrefixSize + body.size());
  write_length_prefix(frame.data(), body.size());
  std::copy(body.begin(), body.end(), frame.begin() + kLengthPrefixSize);
  return frame;
}

// Drains every complete frame from reader into out; fails the test on a fault.
void drain(FrameReader& reader, std::vector<Bytes>& out) {
  for (;;) {
    auto next = reader.next();
    ASSERT_TRUE(next.has_value()) << next.error().reason;
    if (!next->has_value()) return;
    out.push_back(to_bytes(**next));
  }
}

std::vector<Frame> sample_frames() {
  const Bytes payload = bytes("hello, debra");
  return {
      encode_registration(42),
      encode_registration(42, "v1.42.1700000000.token"),
      encode_client_to_client(42, 7, 0, payload),
      encode_client_to_client(42, 7, 99, {}),
      copy_of(encode_delivery(42, 7, 1234567890123ULL, payload)),
      encode_welcome(42, kDefaultMaxFrameSize, 4),
      encode_reply(5, DeliveryStatus::Rejected, ErrorCode::RecipientBusy, "queue full"),
      to_bytes(view_acks(std::vector<std::uint64_t>{1, 2, 3})),
      to_bytes(view_accepted(std::vector<std::uint64_t>{4, 5})),
      encode_error(ErrorCode::SessionTakenOver, "another connection registered 42"),
  };
}

TEST(LengthPrefix, BigEndianRoundTrip) {
  std::uint8_t out[kLengthPrefixSize];
  write_length_prefix(out, 0x0102030405060708ULL);
  const std::uint8_t expected[] = {1, 2, 3, 4, 5, 6, 7, 8};
  EXPECT_EQ(0, std::memcmp(out, expected, sizeof(out)));
  for (std::uint64_t value : {0ULL, 1ULL, 255ULL, 256ULL, 0xFFFFFFFFULL, ~0ULL}) {
    write_length_prefix(out, value);
    EXPECT_EQ(read_length_prefix(out), value);
  }
}

TEST(Codec, RegistrationRoundTrip) {
  const Frame frame = encode_registration(2147483647);
  const Message m = decode_frame(frame);
  EXPECT_EQ(m.type, MessageType::ClientRegistration);
  EXPECT_EQ(m.client_id, 2147483647);
  EXPECT_EQ(m.for_client, 0);
  EXPECT_TRUE(m.payload.empty());
  EXPECT_EQ(m.message_id, 0u);
  EXPECT_TRUE(m.reason.empty());
  EXPECT_TRUE(m.token.empty());
}

TEST(Codec, RegistrationWithTokenRoundTrip) {
  const Frame frame = encode_registration(7, "v1.7.1700000000.abc");
  const Message m = decode_frame(frame);
  EXPECT_EQ(m.type, MessageType::ClientRegistration);
  EXPECT_EQ(m.client_id, 7);
  EXPECT_EQ(m.token, "v1.7.1700000000.abc");
}

TEST(Codec, RegistrationWithEmptyTokenIsTheLegacyFrame) {
  // An empty token must leave the field out entirely: the frame stays the original's, byte for byte.
  EXPECT_EQ(encode_registration(7, ""), encode_registration(7));
  EXPECT_NE(encode_registration(7, "t"), encode_registration(7));
}

TEST(Codec, RegistrationAndWelcomeCarryTheAnnouncedFeatures) {
  const std::uint64_t both = static_cast<std::uint64_t>(Feature::BatchedAcks) |
                             static_cast<std::uint64_t>(Feature::BatchedReplies);
  const Frame registration = encode_registration(7, "", both | (1ULL << 40));  // and a bit from the future
  const Message r = decode_frame(registration);
  EXPECT_EQ(r.type, MessageType::ClientRegistration);
  EXPECT_EQ(r.client_id, 7);
  EXPECT_EQ(r.features, both | (1ULL << 40));
  EXPECT_TRUE(has_feature(r.features, Feature::BatchedAcks));
  EXPECT_TRUE(has_feature(r.features, Feature::BatchedReplies));
  // None announced: the field is left out, so the frame is the original's, byte for byte.
  EXPECT_EQ(encode_registration(7, "", 0), encode_registration(7));
  const Frame plain = encode_registration(7);
  EXPECT_EQ(decode_frame(plain).features, 0u);

  const Frame welcome = encode_welcome(8, 65536, 3, static_cast<std::uint64_t>(Feature::BatchedAcks));
  const Message w = decode_frame(welcome);
  EXPECT_EQ(w.type, MessageType::Welcome);
  EXPECT_TRUE(has_feature(w.features, Feature::BatchedAcks));
  EXPECT_FALSE(has_feature(w.features, Feature::BatchedReplies));
}

TEST(Codec, BatchedAckNamesEverySequenceAndABatchOfOneIsTheSingleAck) {
  const std::vector<std::uint64_t> sequences{5021, 7, 0xFFFF'FFFF'FFFF'FFFFULL, 5022};
  const Frame frame = to_bytes(view_acks(sequences));
  const Message m = decode_frame(frame);
  EXPECT_EQ(m.type, MessageType::Ack);
  std::vector<std::uint64_t> named{m.sequence};
  for (std::size_t i = 0; i < m.sequences.size(); ++i) named.push_back(m.sequences[i]);
  EXPECT_EQ(named, sequences);
  // A batch of one has no vector: it is the single Ack an older router reads.
  const Frame single = to_bytes(view_acks(std::vector<std::uint64_t>{5021}));
  EXPECT_FALSE(legacy_view(single)->CheckField(Debra::Message::VT_SEQUENCES));
  EXPECT_EQ(decode_frame(single).sequence, 5021u);
  EXPECT_TRUE(decode_frame(single).sequences.empty());
}

TEST(Codec, BatchedAcceptedReplyNamesEveryMessageAndABatchOfOneIsTheSingleReply) {
  std::vector<std::uint64_t> ids;
  for (std::uint64_t k = 0; k < 1024; ++k) ids.push_back((k * 0x9E37'79B9'7F4A'7C15ULL) | 1);
  const Frame frame = to_bytes(view_accepted(ids));
  const Message m = decode_frame(frame);
  EXPECT_EQ(m.type, MessageType::Reply);
  EXPECT_EQ(m.status, DeliveryStatus::Accepted);
  EXPECT_EQ(m.error_code, ErrorCode::NoError);
  ASSERT_EQ(m.message_ids.size(), ids.size() - 1);
  std::vector<std::uint64_t> named{m.message_id};
  for (std::size_t i = 0; i < m.message_ids.size(); ++i) named.push_back(m.message_ids[i]);
  EXPECT_EQ(named, ids);
  EXPECT_LE(frame.size(), kLengthPrefixSize + 8 * ids.size() + kMaxEnvelopeOverhead);
  EXPECT_EQ(to_bytes(view_accepted(std::vector<std::uint64_t>{33})),
            to_bytes(view_reply(33, DeliveryStatus::Accepted, ErrorCode::NoError, {})));
}

TEST(Codec, ClientToClientRoundTrip) {
  const Bytes payload = bytes(std::string_view("payload\0with\0nuls", 17));
  const Frame frame = encode_client_to_client(3, 4, 0xFFFFFFFFFFFFFFFFULL, payload);
  const Message m = decode_frame(frame);
  EXPECT_EQ(m.type, MessageType::ClientToClient);
  EXPECT_EQ(m.client_id, 3);
  EXPECT_EQ(m.for_client, 4);
  EXPECT_EQ(m.message_id, 0xFFFFFFFFFFFFFFFFULL);
  EXPECT_EQ(to_bytes(m.payload), payload);
  // Spans point into the body, not into a copy.
  EXPECT_GE(m.payload.data(), frame.data());
  EXPECT_LE(m.payload.data() + m.payload.size(), frame.data() + frame.size());
}

TEST(Codec, AViewIsTheEncodedFrameUntilTheThreadsNextEncode) {
  const Bytes payload = bytes("view me");
  const Frame viewed = to_bytes(view_client_to_client(3, 4, 77, payload, true));
  // A whole frame: its own length prefix, then a body that decodes.
  ASSERT_EQ(read_length_prefix(viewed.data()), viewed.size() - kLengthPrefixSize);
  const Message m = decode_frame(viewed);
  EXPECT_EQ(m.type, MessageType::ClientToClient);
  EXPECT_EQ(m.client_id, 3);
  EXPECT_EQ(m.for_client, 4);
  EXPECT_EQ(m.message_id, 77u);
  EXPECT_TRUE(m.receipt);
  EXPECT_EQ(to_bytes(m.payload), payload);
  EXPECT_EQ(viewed, encode_client_to_client(3, 4, 77, payload, true));
  const Frame acked = encode_ack(5021);
  EXPECT_EQ(to_bytes(view_ack(5021)), to_bytes(acked));
  const Frame replied = encode_reply(9, DeliveryStatus::Rejected, ErrorCode::QuotaExceeded, "inbox full");
  EXPECT_EQ(to_bytes(view_reply(9, DeliveryStatus::Rejected, ErrorCode::QuotaExceeded, "inbox full")),
            to_bytes(replied));
  // After a frame too large for the encoder to keep its memory, the next one is still whole.
  const Bytes big(300 * 1024, 0xAB);
  const Frame large = to_bytes(view_client_to_client(1, 2, 3, big));
  EXPECT_EQ(decode_frame(large).payload.size(), big.size());
  const Frame next = to_bytes(view_reply(11, DeliveryStatus::Accepted, ErrorCode::NoError, {}));
  const Message after = decode_frame(next);
  EXPECT_EQ(after.type, MessageType::Reply);
  EXPECT_EQ(after.message_id, 11u);
}

TEST(Codec, ClientToClientWithoutMessageIdLeavesNativeFieldAbsent) {
  const Frame frame = encode_client_to_client(3, 4, 0, bytes("x"));
  EXPECT_FALSE(legacy_view(frame)->CheckField(Debra::Message::VT_MESSAGE_ID));
  EXPECT_EQ(decode_frame(frame).message_id, 0u);
}

TEST(Codec, DeliveryRoundTrip) {
  const Bytes payload(1000, 0xAB);
  const SharedFrame frame = encode_delivery(11, 12, 77, payload);
  ASSERT_TRUE(frame);
  const Message m = decode_frame(frame);
  EXPECT_EQ(m.type, MessageType::ClientToClient);
  EXPECT_EQ(m.client_id, 11);
  EXPECT_EQ(m.for_client, 12);
  EXPECT_EQ(m.message_id, 77u);
  EXPECT_EQ(to_bytes(m.payload), payload);
  EXPECT_LE(frame.size(), kLengthPrefixSize + payload.size() + kMaxEnvelopeOverhead);
}

TEST(FrameArena, EveryFrameStaysWholeAfterLaterOnesAndTheArenaAreGone) {
  std::vector<SharedFrame> frames;
  std::vector<Bytes> payloads;
  {
    FrameArena arena;
    std::mt19937 rng(7);
    for (std::uint64_t k = 0; k < 2000; ++k) {
      // Mostly small, some past the largest a chunk shares, some empty.
      Bytes payload(k % 50 == 0 ? 9000 : rng() % 1500);
      for (auto& byte : payload) byte = static_cast<std::uint8_t>(rng());
      frames.push_back(encode_delivery(arena, 3, 4, 100 + k, payload, 5000 + k));
      payloads.push_back(std::move(payload));
    }
  }
  for (std::size_t k = 0; k < frames.size(); ++k) {
    const Message m = decode_frame(frames[k]);
    ASSERT_EQ(m.message_id, 100 + k);
    EXPECT_EQ(m.sequence, 5000 + k);
    EXPECT_EQ(m.client_id, 3);
    EXPECT_EQ(to_bytes(m.payload), payloads[k]) << "frame " << k;
    EXPECT_EQ(copy_of(frames[k]), copy_of(encode_delivery(3, 4, 100 + k, payloads[k], 5000 + k)));
  }
}

TEST(FrameArena, SmallDeliveriesShareAllocations) {
  FrameArena arena;
  const Bytes payload(64, 0x64);
  std::vector<SharedFrame> frames;
  frames.reserve(300);
  frames.push_back(encode_delivery(arena, 1, 2, 3, payload, 4));  // the encoder and the first chunk
  const std::size_t before = g_allocations.load();
  for (std::uint64_t k = 0; k < 299; ++k) frames.push_back(encode_delivery(arena, 1, 2, 3, payload, 5 + k));
  // 300 frames of about 150 bytes fill less than one chunk of 64 KiB, and another begun at most.
  EXPECT_LE(g_allocations.load() - before, 1u);
  EXPECT_EQ(decode_frame(frames.back()).sequence, 303u);
}

TEST(Codec, LargestPayloadFitsDefaultMaxFrameSize) {
  const Bytes payload(4 * 1024 * 1024, 0x5A);
  const SharedFrame frame = encode_delivery(1, 2, 0xFFFFFFFFFFFFFFFFULL, payload);
  EXPECT_LE(frame.size() - kLengthPrefixSize, kDefaultMaxFrameSize);
  EXPECT_LE(frame.size(), kLengthPrefixSize + payload.size() + kMaxEnvelopeOverhead);
  EXPECT_EQ(decode_frame(frame).payload.size(), payload.size());
  // The thread's builder must still work after a large frame (it is released, then regrown).
  const Frame small = encode_registration(9);
  EXPECT_EQ(decode_frame(small).client_id, 9);
}

TEST(Codec, WelcomeRoundTrip) {
  const Frame frame = encode_welcome(8, 65536, 3);
  const Message m = decode_frame(frame);
  EXPECT_EQ(m.type, MessageType::Welcome);
  EXPECT_EQ(m.client_id, 8);
  EXPECT_EQ(m.protocol_version, kProtocolVersion);
  EXPECT_EQ(m.max_frame_size, 65536u);
  EXPECT_EQ(m.delivery_lanes, 3u);
}

TEST(Codec, ReplyRoundTrip) {
  const Frame rejected = encode_reply(31, DeliveryStatus::Rejected, ErrorCode::RecipientBusy, "busy");
  Message m = decode_frame(rejected);
  EXPECT_EQ(m.type, MessageType::Reply);
  EXPECT_EQ(m.message_id, 31u);
  EXPECT_EQ(m.status, DeliveryStatus::Rejected);
  EXPECT_EQ(m.error_code, ErrorCode::RecipientBusy);
  EXPECT_EQ(m.reason, "busy");
  EXPECT_EQ(m.retry_after_ms, 0u);

  const Frame limited = to_bytes(view_reply(34, DeliveryStatus::Rejected, ErrorCode::RateLimited, "slow down", 250));
  m = decode_frame(limited);
  EXPECT_EQ(m.error_code, ErrorCode::RateLimited);
  EXPECT_EQ(m.retry_after_ms, 250u);
  // Absent when zero: other Replies carry no bytes for it.
  EXPECT_LT(to_bytes(view_reply(34, DeliveryStatus::Rejected, ErrorCode::RateLimited, "slow down", 0)).size(),
            limited.size());

  const Frame offline = encode_reply(32, DeliveryStatus::RecipientOffline, ErrorCode::NoError, "");
  m = decode_frame(offline);
  EXPECT_EQ(m.message_id, 32u);
  EXPECT_EQ(m.status, DeliveryStatus::RecipientOffline);
  EXPECT_EQ(m.error_code, ErrorCode::NoError);
  EXPECT_TRUE(m.reason.empty());

  const Frame accepted = encode_reply(33, DeliveryStatus::Accepted, ErrorCode::NoError, "");
  m = decode_frame(accepted);
  EXPECT_EQ(m.type, MessageType::Reply);
  EXPECT_EQ(m.status, DeliveryStatus::Accepted);
}

TEST(Codec, ErrorRoundTrip) {
  const std::string reason(300, 'r');
  const Frame frame = encode_error(ErrorCode::ServerShutdown, reason);
  const Message m = decode_frame(frame);
  EXPECT_EQ(m.type, MessageType::Error);
  EXPECT_EQ(m.error_code, ErrorCode::ServerShutdown);
  EXPECT_EQ(m.reason, reason);
  EXPECT_EQ(m.client_id, 0);
}

// An original debra client builds Message with only the four legacy fields and no file identifier.
TEST(Legacy, OriginalClientFramesDecode) {
  flatbuffers::FlatBufferBuilder fbb;
  fbb.Finish(Debra::CreateMessage(fbb, Debra::MessageType::ClientRegistration, 17));
  Message m = *decode({fbb.GetBufferPointer(), fbb.GetSize()});
  EXPECT_EQ(m.type, MessageType::ClientRegistration);
  EXPECT_EQ(m.client_id, 17);
  EXPECT_EQ(m.message_id, 0u);

  fbb.Clear();
  const Bytes payload = bytes("legacy payload");
  const auto vec = fbb.CreateVector(payload);
  fbb.Finish(Debra::CreateMessage(fbb, Debra::MessageType::ClientToClient, 17, 18, vec));
  m = *decode({fbb.GetBufferPointer(), fbb.GetSize()});
  EXPECT_EQ(m.type, MessageType::ClientToClient);
  EXPECT_EQ(m.client_id, 17);
  EXPECT_EQ(m.for_client, 18);
  EXPECT_EQ(to_bytes(m.payload), payload);
  EXPECT_EQ(m.message_id, 0u);
  EXPECT_EQ(m.status, DeliveryStatus::Accepted);
  EXPECT_EQ(m.error_code, ErrorCode::NoError);
  EXPECT_TRUE(m.reason.empty());
  EXPECT_EQ(m.protocol_version, 0u);
}

// A legacy buffer built field by field, in the order a hand-written original client might use.
TEST(Legacy, FieldByFieldBuilderDecodes) {
  flatbuffers::FlatBufferBuilder fbb;
  const std::uint8_t data[] = {1, 2, 3};
  const auto vec = fbb.CreateVector(data, sizeof(data));
  Debra::MessageBuilder mb(fbb);
  mb.add_message_type(Debra::MessageType::ClientToClient);
  mb.add_client_id(5);
  mb.add_message(vec);
  mb.add_for_client(6);
  fbb.Finish(mb.Finish());
  auto m = decode({fbb.GetBufferPointer(), fbb.GetSize()});
  ASSERT_TRUE(m.has_value()) << m.error().reason;
  EXPECT_EQ(m->client_id, 5);
  EXPECT_EQ(m->for_client, 6);
  EXPECT_EQ(to_bytes(m->payload), Bytes(data, data + 3));
}

TEST(Legacy, DeliveryCarriesTheFourLegacyFields) {
  const Bytes payload = bytes("to an old client");
  const SharedFrame frame = encode_delivery(100, 200, 0, payload);
  const flatbuffers::Table* t = legacy_view(frame);
  ASSERT_TRUE(t->CheckField(Debra::Message::VT_MESSAGE_TYPE));
  ASSERT_TRUE(t->CheckField(Debra::Message::VT_CLIENT_ID));
  ASSERT_TRUE(t->CheckField(Debra::Message::VT_FOR_CLIENT));
  ASSERT_TRUE(t->CheckField(Debra::Message::VT_MESSAGE));
  EXPECT_EQ(t->GetField<std::int8_t>(Debra::Message::VT_MESSAGE_TYPE, -1), 1);
  EXPECT_EQ(t->GetField<std::int32_t>(Debra::Message::VT_CLIENT_ID, 0), 100);
  EXPECT_EQ(t->GetField<std::int32_t>(Debra::Message::VT_FOR_CLIENT, 0), 200);
  const auto* vec = t->GetPointer<const flatbuffers::Vector<std::uint8_t>*>(Debra::Message::VT_MESSAGE);
  ASSERT_NE(vec, nullptr);
  EXPECT_EQ(Bytes(vec->begin(), vec->end()), payload);
  // Nothing an original client would not expect: no identifier, no native field when unused.
  EXPECT_FALSE(t->CheckField(Debra::Message::VT_MESSAGE_ID));
  EXPECT_FALSE(t->CheckField(Debra::Message::VT_REASON));
  EXPECT_FALSE(flatbuffers::BufferHasIdentifier(frame.data() + kLengthPrefixSize, "DBRA"));
}

TEST(Legacy, LegacyFieldsArePresentEvenWhenZero) {
  const SharedFrame frame = encode_delivery(0, 0, 0, {});
  const flatbuffers::Table* t = legacy_view(frame);
  EXPECT_TRUE(t->CheckField(Debra::Message::VT_MESSAGE_TYPE));
  EXPECT_TRUE(t->CheckField(Debra::Message::VT_CLIENT_ID));
  EXPECT_TRUE(t->CheckField(Debra::Message::VT_FOR_CLIENT));
  EXPECT_TRUE(t->CheckField(Debra::Message::VT_MESSAGE));
}

TEST(Legacy, EmptyDeliveryStillCarriesMessageVector) {
  const SharedFrame frame = encode_delivery(1, 2, 0, {});
  const auto* msg = Debra::GetMessage(frame.data() + kLengthPrefixSize);
  ASSERT_NE(msg->message(), nullptr);
  EXPECT_EQ(msg->message()->size(), 0u);
  EXPECT_TRUE(decode_frame(frame).payload.empty());
}

TEST(Codec, ToStringCoversEveryValueAndUnknown) {
  EXPECT_EQ(to_string(ErrorCode::NoError), "NoError");
  EXPECT_EQ(to_string(ErrorCode::InternalError), "InternalError");
  EXPECT_EQ(to_string(static_cast<ErrorCode>(999)), "unknown");
  EXPECT_EQ(to_string(DeliveryStatus::RecipientOffline), "RecipientOffline");
  EXPECT_EQ(to_string(static_cast<DeliveryStatus>(200)), "unknown");
  EXPECT_EQ(to_string(MessageType::ClientRegistration), "ClientRegistration");
  EXPECT_EQ(to_string(MessageType::Error), "Error");
  EXPECT_EQ(to_string(static_cast<MessageType>(-1)), "unknown");
  EXPECT_EQ(to_string(static_cast<MessageType>(100)), "unknown");
  for (auto code : Debra::EnumValuesErrorCode()) EXPECT_NE(to_string(code), "unknown");
  for (auto status : Debra::EnumValuesStatus()) EXPECT_NE(to_string(status), "unknown");
  for (auto type : Debra::EnumValuesMessageType()) EXPECT_NE(to_string(type), "unknown");
}

TEST(Codec, DeliverySequenceAckAndReceiptRoundTrip) {
  const std::vector<std::uint8_t> payload{1, 2, 3};
  auto delivery = encode_delivery(4, 5, 99, payload, 123456789012345ULL);
  auto d = decode(delivery.bytes().subspan(kLengthPrefixSize));
  ASSERT_TRUE(d.has_value());
  EXPECT_EQ(d->sequence, 123456789012345ULL);
  EXPECT_EQ(d->client_id, 4);
  EXPECT_FALSE(d->receipt);

  auto sent = encode_client_to_client(4, 5, 7, payload, true);
  auto c = decode(std::span(sent).subspan(kLengthPrefixSize));
  ASSERT_TRUE(c.has_value());
  EXPECT_TRUE(c->receipt);
  EXPECT_EQ(c->sequence, 0u);

  auto ack = encode_ack(42);
  auto a = decode(std::span(ack).subspan(kLengthPrefixSize));
  ASSERT_TRUE(a.has_value());
  EXPECT_EQ(a->type, MessageType::Ack);
  EXPECT_EQ(a->sequence, 42u);

  auto receipt = encode_receipt(7, 5, DeliveryStatus::Expired);
  auto r = decode(std::span(receipt).subspan(kLengthPrefixSize));
  ASSERT_TRUE(r.has_value());
  EXPECT_EQ(r->type, MessageType::Receipt);
  EXPECT_EQ(r->message_id, 7u);
  EXPECT_EQ(r->for_client, 5);
  EXPECT_EQ(r->status, DeliveryStatus::Expired);
}

TEST(Codec, UnknownMessageTypeIsReturnedAsSent) {
  flatbuffers::FlatBufferBuilder fbb;
  fbb.Finish(Debra::CreateMessage(fbb, static_cast<Debra::MessageType>(77), 1));
  auto m = decode({fbb.GetBufferPointer(), fbb.GetSize()});
  ASSERT_TRUE(m.has_value());
  EXPECT_EQ(static_cast<int>(m->type), 77);
}

void expect_protocol_error(std::span<const std::uint8_t> body) {
  auto m = decode(body);
  ASSERT_FALSE(m.has_value());
  EXPECT_EQ(m.error().code, ErrorCode::ProtocolError);
  EXPECT_FALSE(m.error().reason.empty());
}

TEST(Decode, RejectsGarbage) {
  expect_protocol_error({});
  expect_protocol_error(bytes("abc"));
  expect_protocol_error(bytes("this is not a flatbuffer at all"));
  expect_protocol_error(Bytes(64, 0xFF));
  expect_protocol_error(Bytes(64, 0x00));
  // A root offset pointing past the end.
  expect_protocol_error(Bytes{0x40, 0, 0, 0, 0, 0, 0, 0});
}

bool same_message(const Message& a, const Message& b) {
  return a.type == b.type && a.client_id == b.client_id && a.for_client == b.for_client &&
         to_bytes(a.payload) == to_bytes(b.payload) && a.message_id == b.message_id && a.status == b.status &&
         a.error_code == b.error_code && a.reason == b.reason && a.protocol_version == b.protocol_version &&
         a.max_frame_size == b.max_frame_size && a.delivery_lanes == b.delivery_lanes;
}

TEST(Decode, RejectsEveryTruncationThatCutsData) {
  for (const Frame& frame : sample_frames()) {
    const auto body = body_of(frame);
    const Message whole = decode_frame(frame);
    std::size_t accepted = 0;
    for (std::size_t len = 0; len < body.size(); ++len) {
      SCOPED_TRACE("truncated to " + std::to_string(len) + " of " + std::to_string(body.size()));
      auto m = decode(body.first(len));
      if (m.has_value()) {
        // Only the alignment padding after a string's terminator may go: nothing the message says.
        EXPECT_TRUE(same_message(*m, whole));
        ++accepted;
      } else {
        EXPECT_EQ(m.error().code, ErrorCode::ProtocolError);
      }
    }
    EXPECT_LE(accepted, 3u);
  }
}

TEST(Decode, RejectsCorruptedVectorLength) {
  const Frame frame = encode_client_to_client(1, 2, 0, bytes("abcd"));
  Bytes body = to_bytes(body_of(frame));
  // Find the vector's length word (4) followed by "abcd" and make it lie.
  const Bytes needle = {4, 0, 0, 0, 'a', 'b', 'c', 'd'};
  auto it = std::search(body.begin(), body.end(), needle.begin(), needle.end());
  ASSERT_NE(it, body.end());
  *it = 0xF0;
  expect_protocol_error(body);
  it[0] = 0xFF, it[1] = 0xFF, it[2] = 0xFF, it[3] = 0x7F;
  expect_protocol_error(body);
}

TEST(Decode, ReasonNamesTheProblem) {
  auto m = decode(bytes("junk-junk-junk"));
  ASSERT_FALSE(m.has_value());
  EXPECT_NE(m.error().reason.find("Debra.Message"), std::string::npos) << m.error().reason;
}

TEST(Decode, DoesNotDependOnBodyAddressAlignment) {
  const Frame frame = encode_client_to_client(9, 10, 11, bytes("misaligned"));
  const auto body = body_of(frame);
  Bytes shifted(body.size() + 1);
  std::copy(body.begin(), body.end(), shifted.begin() + 1);
  auto m = decode(std::span<const std::uint8_t>(shifted).subspan(1));
  ASSERT_TRUE(m.has_value()) << m.error().reason;
  EXPECT_EQ(m->client_id, 9);
  EXPECT_EQ(m->message_id, 11u);
  EXPECT_EQ(to_bytes(m->payload), bytes("misaligned"));
}

TEST(Decode, ReadsBatchedIdsWhateverTheBodyAddressAlignment) {
  const std::vector<std::uint64_t> sequences{1, 2, 0x0102'0304'0506'0708ULL};
  const Frame frame = to_bytes(view_acks(sequences));
  const auto body = body_of(frame);
  for (std::size_t shift = 1; shift < 8; ++shift) {
    Bytes shifted(body.size() + shift);
    std::copy(body.begin(), body.end(), shifted.begin() + static_cast<std::ptrdiff_t>(shift));
    auto m = decode(std::span<const std::uint8_t>(shifted).subspan(shift));
    ASSERT_TRUE(m.has_value()) << m.error().reason;
    ASSERT_EQ(m->sequences.size(), 2u);
    EXPECT_EQ(m->sequences[0], 2u);
    EXPECT_EQ(m->sequences[1], 0x0102'0304'0506'0708ULL);
  }
}

TEST(FrameReader, ByteByByte) {
  std::vector<Bytes> expected;
  Bytes stream;
  for (const Frame& frame : sample_frames()) {
    expected.push_back(to_bytes(body_of(frame)));
    stream.insert(stream.end(), frame.begin(), frame.end());
  }
  FrameReader reader;
  std::vector<Bytes> got;
  for (std::uint8_t b : stream) {
    reader.append({&b, 1});
    drain(reader, got);
  }
  EXPECT_EQ(got, expected);
  EXPECT_EQ(reader.buffered(), 0u);
  for (const Bytes& body : got) EXPECT_TRUE(decode(body).has_value());
}

TEST(FrameReader, ManyFramesInOneAppend) {
  Bytes stream;
  constexpr int kFrames = 2000;
  for (int i = 1; i <= kFrames; ++i) {
    const Frame f = encode_client_to_client(i, i + 1, static_cast<std::uint64_t>(i), Bytes(i % 50, 'p'));
    stream.insert(stream.end(), f.begin(), f.end());
  }
  FrameReader reader;
  reader.append(stream);
  int seen = 0;
  for (;;) {
    auto next = reader.next();
    ASSERT_TRUE(next.has_value());
    if (!next->has_value()) break;
    ++seen;
    auto m = decode(**next);
    ASSERT_TRUE(m.has_value());
    EXPECT_EQ(m->client_id, seen);
    EXPECT_EQ(m->message_id, static_cast<std::uint64_t>(seen));
    EXPECT_EQ(m->payload.size(), static_cast<std::size_t>(seen % 50));
  }
  EXPECT_EQ(seen, kFrames);
  EXPECT_EQ(reader.buffered(), 0u);
}

TEST(FrameReader, SplitAtEveryBoundary) {
  const Frame a = encode_registration(1);
  const Frame b = encode_client_to_client(1, 2, 3, bytes("split me"));
  const Frame c = encode_reply(3, DeliveryStatus::Accepted, ErrorCode::NoError, "");
  Bytes stream;
  for (const Frame* f : {&a, &b, &c}) stream.insert(stream.end(), f->begin(), f->end());
  const std::vector<Bytes> expected = {to_bytes(body_of(a)), to_bytes(body_of(b)), to_bytes(body_of(c))};
  const std::span<const std::uint8_t> all(stream);
  for (std::size_t i = 0; i <= stream.size(); ++i) {
    for (std::size_t j = i; j <= stream.size(); ++j) {
      FrameReader reader;
      std::vector<Bytes> got;
      reader.append(all.subspan(0, i));
      drain(reader, got);
      reader.append(all.subspan(i, j - i));
      drain(reader, got);
      reader.append(all.subspan(j));
      drain(reader, got);
      ASSERT_EQ(got, expected) << "split at " << i << " and " << j;
      ASSERT_EQ(reader.buffered(), 0u);
    }
  }
}

TEST(FrameReader, ZeroLengthFrames) {
  FrameReader reader;
  const Bytes empty_frame(kLengthPrefixSize, 0);
  reader.append(empty_frame);
  reader.append(empty_frame);
  for (int i = 0; i < 2; ++i) {
    auto next = reader.next();
    ASSERT_TRUE(next.has_value());
    ASSERT_TRUE(next->has_value());
    EXPECT_TRUE((*next)->empty());
    auto m = decode(**next);
    ASSERT_FALSE(m.has_value());
    EXPECT_EQ(m.error().code, ErrorCode::ProtocolError);
  }
  auto next = reader.next();
  ASSERT_TRUE(next.has_value());
  EXPECT_FALSE(next->has_value());
}

TEST(FrameReader, FrameExactlyAtLimitIsAccepted) {
  constexpr std::uint32_t kMax = 1000;
  FrameReader reader(kMax);
  EXPECT_EQ(reader.max_frame_size(), kMax);
  const Frame frame = frame_from_body(Bytes(kMax, 0x42));
  reader.append(frame);
  auto next = reader.next();
  ASSERT_TRUE(next.has_value()) << next.error().reason;
  ASSERT_TRUE(next->has_value());
  EXPECT_EQ((*next)->size(), kMax);
}

TEST(FrameReader, OversizedPrefixIsRejectedBeforeTheBody) {
  constexpr std::uint32_t kMax = 1000;
  FrameReader reader(kMax);
  std::uint8_t prefix[kLengthPrefixSize];
  write_length_prefix(prefix, kMax + 1);
  reader.append({prefix, kLengthPrefixSize - 1});
  auto next = reader.next();
  ASSERT_TRUE(next.has_value());
  EXPECT_FALSE(next->has_value());
  reader.append({prefix + kLengthPrefixSize - 1, 1});
  next = reader.next();
  ASSERT_FALSE(next.has_value());
  EXPECT_EQ(next.error().code, ErrorCode::FrameTooLarge);
  EXPECT_NE(next.error().reason.find("1001"), std::string::npos) << next.error().reason;
  EXPECT_NE(next.error().reason.find("1000"), std::string::npos) << next.error().reason;
}

TEST(FrameReader, HugePrefixIsRejected) {
  FrameReader reader;
  std::uint8_t prefix[kLengthPrefixSize];
  write_length_prefix(prefix, ~0ULL);
  reader.append({prefix, kLengthPrefixSize});
  auto next = reader.next();
  ASSERT_FALSE(next.has_value());
  EXPECT_EQ(next.error().code, ErrorCode::FrameTooLarge);

  FrameReader defaults;
  write_length_prefix(prefix, kDefaultMaxFrameSize + 1ULL);
  defaults.append({prefix, kLengthPrefixSize});
  next = defaults.next();
  ASSERT_FALSE(next.has_value());
  EXPECT_EQ(next.error().code, ErrorCode::FrameTooLarge);
}

TEST(FrameReader, LyingPrefixLeavesBytesBuffered) {
  FrameReader reader;
  Bytes frame(kLengthPrefixSize + 50, 0x11);
  write_length_prefix(frame.data(), 100);
  reader.append(frame);
  auto next = reader.next();
  ASSERT_TRUE(next.has_value());
  EXPECT_FALSE(next->has_value());
  EXPECT_EQ(reader.buffered(), kLengthPrefixSize + 50);
}

TEST(FrameReader, GarbageBodiesAreFramedThenRejectedByDecode) {
  std::mt19937 rng(7);
  FrameReader reader;
  for (int i = 0; i < 200; ++i) {
    Bytes body(rng() % 64);
    for (auto& b : body) b = static_cast<std::uint8_t>(rng());
    reader.append(frame_from_body(body));
    auto next = reader.next();
    ASSERT_TRUE(next.has_value());
    ASSERT_TRUE(next->has_value());
    ASSERT_EQ(to_bytes(**next), body);
    // Random bytes may by chance form a valid buffer; only a rejection must say ProtocolError.
    auto m = decode(**next);
    if (!m.has_value()) {
      EXPECT_EQ(m.error().code, ErrorCode::ProtocolError);
    }
  }
}

TEST(FrameReader, SteadyStateDoesNotAllocate) {
  // Each append carries the rest of one frame and the first half of the next, so the reader never
  // runs empty: only compaction keeps its buffer, and so its allocations, bounded.
  const Frame frame = encode_client_to_client(1, 2, 3, Bytes(40, 'z'));
  const std::size_t half = frame.size() / 2;
  Bytes piece(frame.begin() + static_cast<std::ptrdiff_t>(half), frame.end());
  piece.insert(piece.end(), frame.begin(), frame.begin() + static_cast<std::ptrdiff_t>(half));
  FrameReader reader;
  reader.append(std::span<const std::uint8_t>(frame).first(half));
  std::size_t frames = 0;
  auto feed = [&](int rounds) {
    for (int r = 0; r < rounds; ++r) {
      reader.append(piece);
      for (;;) {
        auto next = reader.next();
        if (!next.has_value() || !next->has_value()) break;
        ++frames;
      }
    }
  };
  feed(100);
  const std::size_t before = g_allocations.load();
  feed(20000);
  EXPECT_EQ(g_allocations.load() - before, 0u);
  EXPECT_EQ(frames, 20100u);
  EXPECT_EQ(reader.buffered(), half);
}

TEST(FrameReader, RandomInputRobustness) {
  std::mt19937 rng(12345);
  const auto valid = sample_frames();
  for (int iter = 0; iter < 3000; ++iter) {
    Bytes input;
    // Mix valid frames, mutated frames and noise so that both framing and decoding paths run.
    const int parts = 1 + static_cast<int>(rng() % 4);
    for (int p = 0; p < parts; ++p) {
      switch (rng() % 3) {
        case 0: {
          const Frame& f = valid[rng() % valid.size()];
          input.insert(input.end(), f.begin(), f.end());
          break;
        }
        case 1: {
          Frame f = valid[rng() % valid.size()];
          for (int k = 0; k < 3; ++k) f[rng() % f.size()] = static_cast<std::uint8_t>(rng());
          input.insert(input.end(), f.begin(), f.end());
          break;
        }
        default: {
          const std::size_t n = rng() % 40;
          for (std::size_t k = 0; k < n; ++k) input.push_back(static_cast<std::uint8_t>(rng()));
        }
      }
    }
    FrameReader reader(4096);
    const std::span<const std::uint8_t> all(input);
    std::size_t off = 0;
    bool failed = false;
    while (off < all.size() && !failed) {
      const std::size_t n = std::min<std::size_t>(1 + rng() % 24, all.size() - off);
      reader.append(all.subspan(off, n));
      off += n;
      for (;;) {
        auto next = reader.next();
        if (!next.has_value()) {
          EXPECT_EQ(next.error().code, ErrorCode::FrameTooLarge);
          failed = true;
          break;
        }
        if (!next->has_value()) break;
        ASSERT_LE((*next)->size(), 4096u);
        auto m = decode(**next);
        if (m.has_value()) {
          ASSERT_LE(m->payload.size(), (*next)->size());
          ASSERT_LE(m->reason.size(), (*next)->size());
        } else {
          ASSERT_EQ(m.error().code, ErrorCode::ProtocolError);
        }
      }
    }
    ASSERT_LE(reader.buffered(), input.size());
    (void)decode(all);
  }
}

}  // namespace
}  // namespace debra::wire
