// SPDX-License-Identifier: MIT
#include "wire/codec.h"

#include <flatbuffers/flatbuffers.h>

#include <algorithm>
#include <cstring>
#include <utility>

namespace debra::wire {

namespace {

// A Message has no nested tables, so a legitimate buffer verifies with depth 1 and one table. The
// small bounds are a second line of defence: verification of one Message is O(1) whatever the
// input, since vectors and strings are bounds-checked, not walked.
constexpr flatbuffers::uoffset_t kVerifierMaxDepth = 4;
constexpr flatbuffers::uoffset_t kVerifierMaxTables = 8;

// FLATBUFFERS_MIN_BUFFER_SIZE spelled with qualified names (the macro needs them in scope): a root
// offset, a table's vtable offset and the two vtable header fields.
constexpr std::size_t kMinBufferSize =
    sizeof(flatbuffers::uoffset_t) + sizeof(flatbuffers::soffset_t) + 2 * sizeof(flatbuffers::voffset_t);

// The thread's builder keeps its capacity between frames; after a frame larger than this it is
// released when the thread starts its next frame (not before: a FrameView may still point at it), so
// that one big message does not pin megabytes per thread for good.
constexpr std::size_t kBuilderRetainLimit = 256 * 1024;

// A FrameReader whose consumed bytes are all gone keeps at most this much capacity, so a stream
// that once carried a 4 MiB frame does not hold 4 MiB for the rest of its life.
constexpr std::size_t kReaderRetainLimit = 256 * 1024;

// A FrameArena chunk holds a few hundred small deliveries; a frame above a sixteenth of it gets an
// allocation of its own, so a chunk never goes mostly unused for want of room at its end.
constexpr std::size_t kArenaChunk = 64 * 1024;
constexpr std::size_t kArenaLargestShared = kArenaChunk / 16;

// The thread's builder, emptied for the next frame. The previous frame (a FrameView may point at it)
// is gone from here on.
flatbuffers::FlatBufferBuilder& builder() {
  thread_local flatbuffers::FlatBufferBuilder fbb(1024);
  if (fbb.GetSize() > kBuilderRetainLimit) {
    fbb.Reset();
  } else {
    fbb.Clear();
  }
  return fbb;
}

// Finishes the message in fbb and puts the length prefix in front of it, in the builder itself
// (FlatBuffers builds from the back, so the prefix is one more push): the whole frame is then one
// range of the builder's memory.
FrameView finish_view(flatbuffers::FlatBufferBuilder& fbb, flatbuffers::Offset<Debra::Message> root) {
  fbb.Finish(root);  // no file identifier: the original debra clients neither send nor expect one
  std::uint8_t prefix[kLengthPrefixSize];
  write_length_prefix(prefix, fbb.GetSize());
  fbb.PushBytes(prefix, sizeof prefix);
  return {fbb.GetBufferPointer(), fbb.GetSize()};
}

Frame finish(flatbuffers::FlatBufferBuilder& fbb, flatbuffers::Offset<Debra::Message> root) {
  const FrameView frame = finish_view(fbb, root);
  return Frame(frame.begin(), frame.end());
}

// A ClientToClient message, legacy layout. The original debra reads message_type, client_id,
// for_client and message; they are written even when they equal their defaults, and message is
// written even when empty, because an original peer may unwrap it unconditionally.
flatbuffers::Offset<Debra::Message> build_client_message(flatbuffers::FlatBufferBuilder& fbb, std::int32_t client_id,
                                                         std::int32_t for_client, std::uint64_t message_id,
                                                         std::span<const std::uint8_t> payload, std::uint64_t sequence,
                                                         bool receipt) {
  const auto message = fbb.CreateVector(payload.data(), payload.size());
  Debra::MessageBuilder mb(fbb);
  // Native only, and absent when 0 or false, as a legacy sender leaves them.
  mb.add_message_id(message_id);
  mb.add_sequence(sequence);
  mb.add_receipt(receipt);
  fbb.ForceDefaults(true);
  mb.add_message(message);
  mb.add_client_id(client_id);
  mb.add_for_client(for_client);
  mb.add_message_type(MessageType::ClientToClient);
  fbb.ForceDefaults(false);
  return mb.Finish();
}

// A string field is written only when non-empty; decoding an absent one gives an empty view.
flatbuffers::Offset<flatbuffers::String> optional_string(flatbuffers::FlatBufferBuilder& fbb,
                                                         std::string_view text) {
  if (text.empty()) return 0;
  return fbb.CreateString(text.data(), text.size());
}

// Vector and String accessors are member calls on types aligned to 4; reading the length with
// ReadScalar keeps decode() free of misaligned member access when a caller's body is not aligned.
std::span<const std::uint8_t> bytes_of(const flatbuffers::Vector<std::uint8_t>* vec) {
  if (vec == nullptr) return {};
  const auto* raw = reinterpret_cast<const std::uint8_t*>(vec);
  const auto size = flatbuffers::ReadScalar<flatbuffers::uoffset_t>(raw);
  return {raw + sizeof(flatbuffers::uoffset_t), size};
}

std::string_view text_of(const flatbuffers::String* str) {
  if (str == nullptr) return {};
  const auto* raw = reinterpret_cast<const char*>(str);
  const auto size = flatbuffers::ReadScalar<flatbuffers::uoffset_t>(raw);
  return {raw + sizeof(flatbuffers::uoffset_t), size};
}

template <typename T>
U64List u64s_of(const flatbuffers::Vector<T>* vec) {
  static_assert(sizeof(T) == sizeof(std::uint64_t));
  if (vec == nullptr) return {};
  const auto* raw = reinterpret_cast<const std::uint8_t*>(vec);
  const auto size = flatbuffers::ReadScalar<flatbuffers::uoffset_t>(raw);
  return {raw + sizeof(flatbuffers::uoffset_t), size};
}

// A frame of type naming ids (BatchedAcks, BatchedReplies): the first in the scalar field the
// single-entry frame uses, the rest in the vector, so a frame of one is the single frame, byte for byte.
using U64Offset = flatbuffers::Offset<flatbuffers::Vector<std::uint64_t>>;
FrameView view_ids(MessageType type, std::span<const std::uint64_t> ids,
                   void (Debra::MessageBuilder::*add_first)(std::uint64_t),
                   void (Debra::MessageBuilder::*add_rest)(U64Offset)) {
  auto& fbb = builder();
  // Written before the table, as FlatBuffers requires.
  const U64Offset rest = ids.size() <= 1 ? U64Offset() : fbb.CreateVector(ids.data() + 1, ids.size() - 1);
  Debra::MessageBuilder mb(fbb);
  (mb.*add_first)(ids.empty() ? 0 : ids.front());
  (mb.*add_rest)(rest);
  mb.add_message_type(type);
  return finish_view(fbb, mb.Finish());
}

// One allocation for the reference count and the bytes, which are not zeroed first.
SharedFrame shared_copy(FrameView frame) {
  auto bytes = std::make_shared_for_overwrite<std::uint8_t[]>(frame.size());
  std::memcpy(bytes.get(), frame.data(), frame.size());
  return SharedFrame(std::move(bytes), frame.size());
}

std::string_view name_or_unknown(const char* name) {
  // The generated EnumName* functions return "" for values outside the enum.
  if (name == nullptr || *name == '\0') return "unknown";
  return name;
}

}  // namespace

std::uint64_t U64List::operator[](std::size_t i) const {
  return flatbuffers::ReadScalar<std::uint64_t>(elements_ + i * sizeof(std::uint64_t));
}

std::string_view to_string(ErrorCode code) { return name_or_unknown(Debra::EnumNameErrorCode(code)); }

std::string_view to_string(DeliveryStatus status) { return name_or_unknown(Debra::EnumNameStatus(status)); }

std::string_view to_string(MessageType type) { return name_or_unknown(Debra::EnumNameMessageType(type)); }

Result<Message, ProtocolFault> decode(std::span<const std::uint8_t> body) {
  if (body.size() < kMinBufferSize) {
    return Unexpected{ProtocolFault{ErrorCode::ProtocolError,
                                    "frame body of " + std::to_string(body.size()) +
                                        " bytes is too short to be a FlatBuffer"}};
  }
  // The Verifier asserts on buffers of 2 GiB and more instead of rejecting them.
  if (body.size() >= FLATBUFFERS_MAX_BUFFER_SIZE) {
    return Unexpected{ProtocolFault{ErrorCode::ProtocolError,
                                    "frame body of " + std::to_string(body.size()) +
                                        " bytes exceeds the FlatBuffers size limit"}};
  }
  flatbuffers::Verifier::Options options;
  options.max_depth = kVerifierMaxDepth;
  options.max_tables = kVerifierMaxTables;
  flatbuffers::Verifier verifier(body.data(), body.size(), options);
  if (!Debra::VerifyMessageBuffer(verifier)) {
    return Unexpected{ProtocolFault{ErrorCode::ProtocolError,
                                    "frame body of " + std::to_string(body.size()) +
                                        " bytes is not a valid Debra.Message FlatBuffer"}};
  }
  // Not Debra::GetMessage(): it loads the root offset with a plain dereference, a misaligned load
  // when the body starts at an odd offset (as FrameReader bodies may). ReadScalar tolerates that.
  const auto* root = reinterpret_cast<const Debra::Message*>(
      body.data() + flatbuffers::ReadScalar<flatbuffers::uoffset_t>(body.data()));
  Message msg;
  msg.type = root->message_type();
  msg.client_id = root->client_id();
  msg.for_client = root->for_client();
  msg.payload = bytes_of(root->message());
  msg.message_id = root->message_id();
  msg.status = root->status();
  msg.error_code = root->error_code();
  msg.reason = text_of(root->reason());
  msg.protocol_version = root->protocol_version();
  msg.max_frame_size = root->max_frame_size();
  msg.delivery_lanes = root->delivery_lanes();
  msg.sequence = root->sequence();
  msg.receipt = root->receipt();
  msg.token = text_of(root->token());
  msg.features = static_cast<std::uint64_t>(root->features());
  msg.sequences = u64s_of(root->sequences());
  msg.message_ids = u64s_of(root->message_ids());
  msg.retry_after_ms = root->retry_after_ms();
  return msg;
}

FrameReader::FrameReader(std::uint32_t max_frame_size) : max_frame_size_(max_frame_size) {}

void FrameReader::append(std::span<const std::uint8_t> bytes) {
  // Compaction happens here rather than in next(): the span next() returned is invalidated by
  // append() anyway, and compacting only once the consumed part is the larger half keeps the cost
  // of moving bytes proportional to the bytes consumed, i.e. amortised O(1) per byte.
  if (read_ == buffer_.size()) {
    buffer_.clear();
    read_ = 0;
    if (buffer_.capacity() > kReaderRetainLimit && bytes.size() <= kReaderRetainLimit) {
      std::vector<std::uint8_t>().swap(buffer_);
    }
  } else if (read_ > buffer_.size() / 2) {
    buffer_.erase(buffer_.begin(), buffer_.begin() + static_cast<std::ptrdiff_t>(read_));
    read_ = 0;
  }
  buffer_.insert(buffer_.end(), bytes.begin(), bytes.end());
}

Result<std::optional<std::span<const std::uint8_t>>, ProtocolFault> FrameReader::next() {
  const std::size_t available = buffer_.size() - read_;
  if (available < kLengthPrefixSize) return std::optional<std::span<const std::uint8_t>>{};
  const std::uint64_t length = read_length_prefix(buffer_.data() + read_);
  if (length > max_frame_size_) {
    return Unexpected{ProtocolFault{ErrorCode::FrameTooLarge,
                                    "frame length " + std::to_string(length) +
                                        " exceeds the maximum frame size " +
                                        std::to_string(max_frame_size_)}};
  }
  if (available - kLengthPrefixSize < length) return std::optional<std::span<const std::uint8_t>>{};
  const std::uint8_t* body = buffer_.data() + read_ + kLengthPrefixSize;
  read_ += kLengthPrefixSize + static_cast<std::size_t>(length);
  return std::optional<std::span<const std::uint8_t>>{std::span<const std::uint8_t>(body, length)};
}

Frame encode_registration(std::int32_t client_id, std::string_view token, std::uint64_t features) {
  auto& fbb = builder();
  const auto token_offset = optional_string(fbb, token);
  Debra::MessageBuilder mb(fbb);
  mb.add_features(static_cast<Feature>(features));
  mb.add_token(token_offset);
  mb.add_client_id(client_id);
  mb.add_message_type(MessageType::ClientRegistration);  // the default: absent, as the original sends it
  return finish(fbb, mb.Finish());
}

FrameView view_client_to_client(std::int32_t client_id, std::int32_t for_client, std::uint64_t message_id,
                                std::span<const std::uint8_t> payload, bool receipt) {
  auto& fbb = builder();
  return finish_view(fbb, build_client_message(fbb, client_id, for_client, message_id, payload, 0, receipt));
}

Frame encode_client_to_client(std::int32_t client_id, std::int32_t for_client, std::uint64_t message_id,
                              std::span<const std::uint8_t> payload, bool receipt) {
  const FrameView frame = view_client_to_client(client_id, for_client, message_id, payload, receipt);
  return Frame(frame.begin(), frame.end());
}

SharedFrame encode_delivery(std::int32_t sender, std::int32_t recipient, std::uint64_t message_id,
                            std::span<const std::uint8_t> payload, std::uint64_t sequence) {
  auto& fbb = builder();
  return shared_copy(finish_view(fbb, build_client_message(fbb, sender, recipient, message_id, payload, sequence, false)));
}

SharedFrame FrameArena::keep(FrameView frame) {
  if (frame.size() > kArenaLargestShared) return shared_copy(frame);
  if (chunk_ == nullptr || kArenaChunk - used_ < frame.size()) {
    chunk_ = std::make_shared_for_overwrite<std::uint8_t[]>(kArenaChunk);  // the old one lives on in its frames
    used_ = 0;
  }
  std::uint8_t* at = chunk_.get() + used_;
  std::memcpy(at, frame.data(), frame.size());
  used_ += (frame.size() + 7) & ~std::size_t{7};  // the next frame starts 8-byte aligned
  if (used_ > kArenaChunk) used_ = kArenaChunk;
  return SharedFrame(std::shared_ptr<const std::uint8_t[]>(chunk_, at), frame.size());
}

SharedFrame encode_delivery(FrameArena& arena, std::int32_t sender, std::int32_t recipient, std::uint64_t message_id,
                            std::span<const std::uint8_t> payload, std::uint64_t sequence) {
  auto& fbb = builder();
  return arena.keep(finish_view(fbb, build_client_message(fbb, sender, recipient, message_id, payload, sequence, false)));
}

FrameView view_ack(std::uint64_t sequence) { return view_acks(std::span<const std::uint64_t>(&sequence, 1)); }

FrameView view_acks(std::span<const std::uint64_t> sequences) {
  return view_ids(MessageType::Ack, sequences, &Debra::MessageBuilder::add_sequence,
                  &Debra::MessageBuilder::add_sequences);
}

// Status Accepted is the schema default, so it is left out, as in a single Accepted Reply.
FrameView view_accepted(std::span<const std::uint64_t> message_ids) {
  return view_ids(MessageType::Reply, message_ids, &Debra::MessageBuilder::add_message_id,
                  &Debra::MessageBuilder::add_message_ids);
}

Frame encode_ack(std::uint64_t sequence) {
  const FrameView frame = view_ack(sequence);
  return Frame(frame.begin(), frame.end());
}

Frame encode_receipt(std::uint64_t message_id, std::int32_t recipient, DeliveryStatus status) {
  auto& fbb = builder();
  Debra::MessageBuilder mb(fbb);
  mb.add_message_id(message_id);
  mb.add_for_client(recipient);
  mb.add_status(status);
  mb.add_message_type(MessageType::Receipt);
  return finish(fbb, mb.Finish());
}

Frame encode_welcome(std::int32_t client_id, std::uint32_t max_frame_size, std::uint32_t delivery_lanes,
                     std::uint64_t features) {
  auto& fbb = builder();
  Debra::MessageBuilder mb(fbb);
  mb.add_features(static_cast<Feature>(features));
  mb.add_client_id(client_id);
  mb.add_protocol_version(kProtocolVersion);
  mb.add_max_frame_size(max_frame_size);
  mb.add_delivery_lanes(delivery_lanes);
  mb.add_message_type(MessageType::Welcome);
  return finish(fbb, mb.Finish());
}

FrameView view_reply(std::uint64_t message_id, DeliveryStatus status, ErrorCode error_code, std::string_view reason,
                     std::uint32_t retry_after_ms) {
  auto& fbb = builder();
  const auto reason_offset = optional_string(fbb, reason);
  Debra::MessageBuilder mb(fbb);
  mb.add_message_id(message_id);
  mb.add_retry_after_ms(retry_after_ms);
  mb.add_reason(reason_offset);
  mb.add_error_code(error_code);
  mb.add_status(status);
  mb.add_message_type(MessageType::Reply);
  return finish_view(fbb, mb.Finish());
}

Frame encode_reply(std::uint64_t message_id, DeliveryStatus status, ErrorCode error_code,
                   std::string_view reason) {
  const FrameView frame = view_reply(message_id, status, error_code, reason);
  return Frame(frame.begin(), frame.end());
}

Frame encode_error(ErrorCode code, std::string_view reason) {
  auto& fbb = builder();
  const auto reason_offset = optional_string(fbb, reason);
  Debra::MessageBuilder mb(fbb);
  mb.add_reason(reason_offset);
  mb.add_error_code(code);
  mb.add_message_type(MessageType::Error);
  return finish(fbb, mb.Finish());
}

void write_length_prefix(std::uint8_t* out, std::uint64_t length) {
  for (std::size_t i = 0; i < kLengthPrefixSize; ++i) {
    out[i] = static_cast<std::uint8_t>(length >> (8 * (kLengthPrefixSize - 1 - i)));
  }
}

std::uint64_t read_length_prefix(const std::uint8_t* in) {
  std::uint64_t length = 0;
  for (std::size_t i = 0; i < kLengthPrefixSize; ++i) length = (length << 8) | in[i];
  return length;
}

}  // namespace debra::wire
