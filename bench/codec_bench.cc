// SPDX-License-Identifier: MIT
//
// Micro-benchmarks of the wire codec: the encoders on the message path, verify+decode, and frame
// reassembly. Each runs at 64 B, 1 KiB and 16 KiB payloads; bytes/s counts payload bytes.
#include <benchmark/benchmark.h>

#include <cstdint>
#include <cstdlib>
#include <cstdio>
#include <span>
#include <vector>

#include "wire/codec.h"

namespace {

using debra::wire::Frame;
using debra::wire::FrameReader;

std::vector<std::uint8_t> make_payload(std::size_t size) {
  std::vector<std::uint8_t> payload(size);
  for (std::size_t i = 0; i < size; ++i) payload[i] = static_cast<std::uint8_t>(i * 131 + 7);
  return payload;
}

[[noreturn]] void fail(const char* what) {
  std::fprintf(stderr, "codec_bench: %s\n", what);
  std::abort();
}

void payload_sizes(benchmark::internal::Benchmark* b) {
  for (const std::int64_t size : {64, 1024, 16 * 1024}) b->Arg(size);
}

// The router's delivery frame: encoded once per message at ingress, shared by every queue.
void BM_EncodeDelivery(benchmark::State& state) {
  const auto payload = make_payload(static_cast<std::size_t>(state.range(0)));
  std::uint64_t message_id = 1;
  for (auto _ : state) {
    auto frame = debra::wire::encode_delivery(7, 9, message_id++, payload);
    benchmark::DoNotOptimize(frame.data());
    benchmark::DoNotOptimize(frame);
  }
  state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations()) * state.range(0));
  state.SetItemsProcessed(static_cast<std::int64_t>(state.iterations()));
}
BENCHMARK(BM_EncodeDelivery)->Apply(payload_sizes);

// The router's case: a delivery lives until its batch is durable, so hundreds are held at once
// (here 512, dropped together, as a commit does). Argument 2: 1 encodes into a FrameArena.
void BM_EncodeDeliveryHeld(benchmark::State& state) {
  const auto payload = make_payload(static_cast<std::size_t>(state.range(0)));
  const bool arena_on = state.range(1) != 0;
  debra::wire::FrameArena arena;
  std::vector<debra::wire::SharedFrame> held;
  held.reserve(512);
  std::uint64_t message_id = 1;
  for (auto _ : state) {
    if (held.size() == 512) held.clear();
    held.push_back(arena_on ? debra::wire::encode_delivery(arena, 7, 9, message_id, payload, message_id)
                            : debra::wire::encode_delivery(7, 9, message_id, payload, message_id));
    ++message_id;
    benchmark::DoNotOptimize(held.back().data());
  }
  state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations()) * state.range(0));
  state.SetItemsProcessed(static_cast<std::int64_t>(state.iterations()));
}
BENCHMARK(BM_EncodeDeliveryHeld)->ArgsProduct({{64, 1024}, {0, 1}});

// The client's send path.
void BM_EncodeClientToClient(benchmark::State& state) {
  const auto payload = make_payload(static_cast<std::size_t>(state.range(0)));
  std::uint64_t message_id = 1;
  for (auto _ : state) {
    Frame frame = debra::wire::encode_client_to_client(7, 9, message_id++, payload);
    benchmark::DoNotOptimize(frame.data());
    benchmark::ClobberMemory();
  }
  state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations()) * state.range(0));
  state.SetItemsProcessed(static_cast<std::int64_t>(state.iterations()));
}
BENCHMARK(BM_EncodeClientToClient)->Apply(payload_sizes);

// The same frame as a view into the encoder, as `debra bench` writes it to its stream: no Frame.
void BM_ViewClientToClient(benchmark::State& state) {
  const auto payload = make_payload(static_cast<std::size_t>(state.range(0)));
  std::uint64_t message_id = 1;
  for (auto _ : state) {
    const debra::wire::FrameView frame = debra::wire::view_client_to_client(7, 9, message_id++, payload);
    benchmark::DoNotOptimize(frame.data());
    benchmark::ClobberMemory();
  }
  state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations()) * state.range(0));
  state.SetItemsProcessed(static_cast<std::int64_t>(state.iterations()));
}
BENCHMARK(BM_ViewClientToClient)->Apply(payload_sizes);

// Verify + decode of one ClientToClient body (the router's ingress, the client's receive).
void BM_Decode(benchmark::State& state) {
  const auto payload = make_payload(static_cast<std::size_t>(state.range(0)));
  const Frame frame = debra::wire::encode_client_to_client(7, 9, 42, payload);
  const std::span<const std::uint8_t> body(frame.data() + debra::wire::kLengthPrefixSize,
                                           frame.size() - debra::wire::kLengthPrefixSize);
  {
    auto check = debra::wire::decode(body);
    if (!check || check->payload.size() != payload.size() || check->for_client != 9) fail("decode check failed");
  }
  for (auto _ : state) {
    benchmark::DoNotOptimize(body.data());
    auto message = debra::wire::decode(body);
    benchmark::DoNotOptimize(message);
  }
  state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations()) * state.range(0));
  state.SetItemsProcessed(static_cast<std::int64_t>(state.iterations()));
}
BENCHMARK(BM_Decode)->Apply(payload_sizes);

// A stream of frames arriving in 1200-byte pieces (about one QUIC packet's stream data), reassembled
// by one FrameReader. One iteration = the whole stream (at least 64 frames and 256 KiB).
struct Stream {
  std::vector<std::uint8_t> bytes;
  std::size_t frames = 0;
};

Stream make_stream(std::size_t payload_size) {
  const auto payload = make_payload(payload_size);
  Stream stream;
  while (stream.frames < 64 || stream.bytes.size() < 256 * 1024) {
    const auto frame = debra::wire::encode_delivery(7, 9, stream.frames + 1, payload);
    stream.bytes.insert(stream.bytes.end(), frame.begin(), frame.end());
    ++stream.frames;
  }
  return stream;
}

constexpr std::size_t kPiece = 1200;

void BM_FrameReader(benchmark::State& state) {
  const Stream stream = make_stream(static_cast<std::size_t>(state.range(0)));
  FrameReader reader;
  for (auto _ : state) {
    std::size_t frames = 0;
    std::size_t body_bytes = 0;
    for (std::size_t off = 0; off < stream.bytes.size(); off += kPiece) {
      const std::size_t n = std::min(kPiece, stream.bytes.size() - off);
      reader.append(std::span<const std::uint8_t>(stream.bytes.data() + off, n));
      for (;;) {
        auto next = reader.next();
        if (!next) fail("FrameReader rejected a frame");
        if (!next->has_value()) break;
        ++frames;
        body_bytes += (*next)->size();
        benchmark::DoNotOptimize((*next)->data());
      }
    }
    if (frames != stream.frames || reader.buffered() != 0) fail("FrameReader lost frames");
    benchmark::DoNotOptimize(body_bytes);
  }
  state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations()) * state.range(0) *
                          static_cast<std::int64_t>(stream.frames));
  state.SetItemsProcessed(static_cast<std::int64_t>(state.iterations() * stream.frames));
}
BENCHMARK(BM_FrameReader)->Apply(payload_sizes);

// The whole receive path of one stream: reassembly plus verify+decode of every frame.
void BM_FrameReaderDecode(benchmark::State& state) {
  const Stream stream = make_stream(static_cast<std::size_t>(state.range(0)));
  FrameReader reader;
  for (auto _ : state) {
    std::size_t frames = 0;
    std::uint64_t id_sum = 0;
    for (std::size_t off = 0; off < stream.bytes.size(); off += kPiece) {
      const std::size_t n = std::min(kPiece, stream.bytes.size() - off);
      reader.append(std::span<const std::uint8_t>(stream.bytes.data() + off, n));
      for (;;) {
        auto next = reader.next();
        if (!next) fail("FrameReader rejected a frame");
        if (!next->has_value()) break;
        auto message = debra::wire::decode(**next);
        if (!message) fail("decode failed");
        id_sum += message->message_id;
        ++frames;
      }
    }
    if (frames != stream.frames) fail("FrameReader lost frames");
    benchmark::DoNotOptimize(id_sum);
  }
  state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations()) * state.range(0) *
                          static_cast<std::int64_t>(stream.frames));
  state.SetItemsProcessed(static_cast<std::int64_t>(state.iterations() * stream.frames));
}
BENCHMARK(BM_FrameReaderDecode)->Apply(payload_sizes);

}  // namespace
