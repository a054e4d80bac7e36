// SPDX-License-Identifier: MIT
//
// Micro-benchmarks of the durable stores: one message's whole life in the store, as the router lives
// it under load (append, commit the batch, acknowledge, commit), per store, at --sync off so that the
// disk's fsync time does not drown the CPU cost. Batches of 256 messages, 64 B and 1 KiB payloads.
// Each store works in a fresh directory under /tmp. BM_Crc32c times the records' checksum alone;
// BM_RouterDurable a message's whole durable path through the routing core and the message log.
#include <benchmark/benchmark.h>
#include <stdlib.h>

#include <cstdint>
#include <deque>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "core/router.h"
#include "store/log_store.h"
#include "store/sqlite_store.h"
#include "util/crc32c.h"

namespace {

using debra::core::Delivery;
using debra::core::MessageStore;
using debra::store::SyncMode;

constexpr int kBatch = 256;
constexpr int kRecipients = 64;

class Scratch {
 public:
  Scratch() {
    std::string pattern = (std::filesystem::temp_directory_path() / "debra-store-bench-XXXXXX").string();
    if (mkdtemp(pattern.data()) == nullptr) std::abort();
    path_ = pattern;
  }
  ~Scratch() { std::filesystem::remove_all(path_); }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

// Store: LogStore or SqliteStore, both opened the same way.
template <typename Store>
void message_life(benchmark::State& state) {
  Scratch dir;
  auto opened = Store::open(dir.path(), SyncMode::Off, {});
  if (!opened) std::abort();
  std::unique_ptr<MessageStore> store = std::move(*opened);
  std::vector<std::uint8_t> payload(static_cast<std::size_t>(state.range(0)), 0x5a);
  std::uint64_t message_id = 1;
  std::vector<std::pair<std::int32_t, std::uint64_t>> batch;
  batch.reserve(kBatch);
  for (auto _ : state) {
    batch.clear();
    for (int i = 0; i < kBatch; ++i) {
      const std::int32_t recipient = 2 + i % kRecipients;
      auto appended = store->append(Delivery{1, recipient, message_id++, nullptr, 0}, payload, false, 1000);
      batch.emplace_back(recipient, appended.sequence);
    }
    if (!store->commit()) std::abort();
    for (const auto& [recipient, sequence] : batch) benchmark::DoNotOptimize(store->acknowledge(recipient, sequence));
    if (!store->commit()) std::abort();
  }
  state.SetItemsProcessed(state.iterations() * kBatch);
  state.SetBytesProcessed(state.iterations() * kBatch * state.range(0));
}

// The router's shape under a steady load: every recipient holds a window of messages (64 recipients
// × 64 here, as in `debra bench --pairs 64`), each new message joins the back of an inbox and each
// acknowledgement takes the oldest. Unlike message_life, no inbox ever empties.
void log_store_steady_inboxes(benchmark::State& state) {
  constexpr int kHeldPerRecipient = 64;
  Scratch dir;
  auto opened = debra::store::LogStore::open(dir.path(), SyncMode::Off, {});
  if (!opened) std::abort();
  std::unique_ptr<MessageStore> store = std::move(*opened);
  std::vector<std::uint8_t> payload(64, 0x5a);
  std::uint64_t message_id = 1;
  std::deque<std::pair<std::int32_t, std::uint64_t>> held;
  auto append = [&](int i) {
    const std::int32_t recipient = 2 + i % kRecipients;
    auto appended = store->append(Delivery{1, recipient, message_id++, nullptr, 0}, payload, false, 1000);
    held.emplace_back(recipient, appended.sequence);
  };
  for (int i = 0; i < kRecipients * kHeldPerRecipient; ++i) append(i);
  if (!store->commit()) std::abort();
  for (auto _ : state) {
    for (int i = 0; i < kBatch; ++i) append(i);
    if (!store->commit()) std::abort();
    for (int i = 0; i < kBatch; ++i) {
      benchmark::DoNotOptimize(store->acknowledge(held.front().first, held.front().second));
      held.pop_front();
    }
    if (!store->commit()) std::abort();
  }
  state.SetItemsProcessed(state.iterations() * kBatch);
}

// The durable path of a message through the routing core, as the router lives it under load: route
// (the store's append and the delivery frame), the batch's commit, the sender's outcome and the
// delivery once it commits, and the recipient's acknowledgement, committed in the next batch. 64
// senders to 64 recipients, batches of 256, the message log at --sync off. No QUIC, no threads.
class TakingSink final : public debra::core::SessionSink {
 public:
  void deliver(const Delivery& delivery) override { taken.push_back(delivery.sequence); }
  std::size_t queued_bytes() const override { return 0; }
  void on_displaced() override {}
  std::vector<std::uint64_t> taken;
};

void router_durable(benchmark::State& state) {
  Scratch dir;
  auto opened = debra::store::LogStore::open(dir.path(), SyncMode::Off, {});
  if (!opened) std::abort();
  std::unique_ptr<MessageStore> store = std::move(*opened);
  debra::core::Router router({}, store.get());
  std::vector<TakingSink> sinks(2 * kRecipients);  // ids 1..64 send, 65..128 receive
  for (std::size_t i = 0; i < sinks.size(); ++i) router.register_client(static_cast<std::int32_t>(i + 1), sinks[i]);
  router.flush();
  std::vector<std::uint8_t> payload(static_cast<std::size_t>(state.range(0)), 0x5a);
  // Each sender counts its own message ids, as the client library does.
  std::vector<std::uint64_t> message_ids(kRecipients, 1);
  for (auto _ : state) {
    for (int i = 0; i < kBatch; ++i) {
      const int pair = i % kRecipients;
      const debra::core::Submission message{pair + 1, kRecipients + pair + 1,
                                            message_ids[static_cast<std::size_t>(pair)]++, payload, false};
      if (router.route(message, &sinks[static_cast<std::size_t>(pair)]) != debra::core::Outcome::Stored) std::abort();
    }
    router.flush();  // without a sync thread the commit completes here: outcomes and deliveries
    for (std::size_t r = kRecipients; r < sinks.size(); ++r) {
      for (std::uint64_t sequence : sinks[r].taken) router.acknowledge(static_cast<std::int32_t>(r + 1), sequence);
      sinks[r].taken.clear();
    }
  }
  if (router.stats().delivered != static_cast<std::uint64_t>(state.iterations()) * kBatch) std::abort();
  state.SetItemsProcessed(state.iterations() * kBatch);
}

// The checksum of every record, alone, at the benchmark's three payload sizes.
void crc32c_of(benchmark::State& state) {
  std::vector<std::uint8_t> bytes(static_cast<std::size_t>(state.range(0)), 0x5a);
  for (auto _ : state) benchmark::DoNotOptimize(debra::util::crc32c(bytes));
  state.SetBytesProcessed(state.iterations() * state.range(0));
}

BENCHMARK(crc32c_of)->Name("BM_Crc32c")->Arg(64)->Arg(1024)->Arg(16384);
BENCHMARK(router_durable)->Name("BM_RouterDurable")->Arg(64)->Arg(16384);
BENCHMARK(log_store_steady_inboxes)->Name("BM_LogStoreSteadyInboxes");
BENCHMARK(message_life<debra::store::LogStore>)->Name("BM_LogStoreMessageLife")->Arg(64)->Arg(1024);
BENCHMARK(message_life<debra::store::SqliteStore>)->Name("BM_SqliteStoreMessageLife")->Arg(64)->Arg(1024);

}  // namespace
