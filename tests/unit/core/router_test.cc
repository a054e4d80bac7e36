// SPDX-License-Identifier: MIT
#include "core/router.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <limits>
#include <map>
#include <memory>
#include <ostream>
#include <set>
#include <string>
#include <vector>

#include "store_test_support.h"
#include "wire/codec.h"

namespace debra::core {

// Lets gtest print outcomes by name in failure messages.
void PrintTo(Outcome outcome, std::ostream* os) { *os << to_string(outcome); }

namespace {

namespace fs = std::filesystem;
using store::SyncMode;

// A realistic wall clock for durable tests (ms since the epoch), so deadlines are meaningful.
constexpr std::int64_t kNow = 1'700'000'000'000;

struct OutcomeCall {
  std::uint64_t message_id = 0;
  Outcome outcome = Outcome::Delivered;
  std::string reason;
};

struct ReceiptCall {
  std::uint64_t message_id = 0;
  ClientId recipient = 0;
  bool delivered = false;
  bool operator==(const ReceiptCall&) const = default;
};

std::ostream& operator<<(std::ostream& os, const ReceiptCall& r) {
  return os << "{id " << r.message_id << ", recipient " << r.recipient << ", delivered " << r.delivered << "}";
}

// The test's own connection: records everything the router hands it. queued_bytes() is whatever the
// test sets, plus the frames delivered when it behaves as a consumer that never reads (accumulate).
class RecordingSink : public SessionSink {
 public:
  explicit RecordingSink(bool accumulate = false) : accumulate_(accumulate) {}

  void deliver(const Delivery& delivery) override {
    delivered.push_back(delivery);
    if (accumulate_) queued += delivery.frame.size();
  }
  std::size_t queued_bytes() const override { return queued; }
  void on_displaced() override { ++displaced; }
  void on_outcome(std::uint64_t message_id, Outcome outcome, std::string_view reason) override {
    outcomes.push_back(OutcomeCall{message_id, outcome, std::string(reason)});
  }
  void on_receipt(std::uint64_t message_id, ClientId recipient, bool delivered_flag) override {
    receipts.push_back(ReceiptCall{message_id, recipient, delivered_flag});
  }

  std::vector<std::uint64_t> delivered_ids() const {
    std::vector<std::uint64_t> ids;
    for (const Delivery& d : delivered) ids.push_back(d.message_id);
    return ids;
  }
  std::vector<std::uint64_t> outcome_ids() const {
    std::vector<std::uint64_t> ids;
    for (const OutcomeCall& o : outcomes) ids.push_back(o.message_id);
    return ids;
  }

  std::vector<Delivery> delivered;
  std::vector<OutcomeCall> outcomes;
  std::vector<ReceiptCall> receipts;
  std::size_t queued = 0;
  int displaced = 0;

 private:
  bool accumulate_;
};

class TestRemote : public RemoteRoute {
 public:
  bool forward(const Delivery& delivery) override {
    ++calls;
    if (!accept) return false;
    forwarded.push_back(delivery);
    return true;
  }

  bool accept = true;
  int calls = 0;
  std::vector<Delivery> forwarded;
};

// The payload of message id from sender: recognisable, optionally padded to size bytes.
std::vector<std::uint8_t> payload_of(ClientId sender, std::uint64_t id, std::size_t size = 0) {
  std::string text = "from " + std::to_string(sender) + " #" + std::to_string(id);
  if (text.size() < size) text.resize(size, '.');
  return {text.begin(), text.end()};
}

Outcome send(Router& router, ClientId sender, ClientId recipient, std::uint64_t id, SessionSink* sender_sink = nullptr,
             bool receipt = false, std::size_t size = 0) {
  const auto payload = payload_of(sender, id, size);
  return router.route(Submission{sender, recipient, id, payload, receipt}, sender_sink);
}

std::size_t frame_size(std::size_t payload_size, std::uint64_t sequence) {
  return wire::encode_delivery(1, 2, 1, payload_of(1, 1, payload_size), sequence).size();
}

// Checks that d is the delivery of message id from sender to recipient, and that its frame says so.
void expect_delivery(const Delivery& d, ClientId sender, ClientId recipient, std::uint64_t id,
                     std::size_t size = 0) {
  EXPECT_EQ(d.sender, sender);
  EXPECT_EQ(d.recipient, recipient);
  EXPECT_EQ(d.message_id, id);
  ASSERT_TRUE(d.frame);
  ASSERT_GT(d.frame.size(), wire::kLengthPrefixSize);
  EXPECT_EQ(wire::read_length_prefix(d.frame.data()), d.frame.size() - wire::kLengthPrefixSize);
  auto decoded = wire::decode(std::span(d.frame.data() + wire::kLengthPrefixSize,
                                        d.frame.size() - wire::kLengthPrefixSize));
  ASSERT_TRUE(decoded.has_value()) << decoded.error().reason;
  EXPECT_EQ(decoded->type, wire::MessageType::ClientToClient);
  EXPECT_EQ(decoded->client_id, sender);
  EXPECT_EQ(decoded->for_client, recipient);
  EXPECT_EQ(decoded->message_id, id);
  EXPECT_EQ(decoded->sequence, d.sequence);
  const auto expected = payload_of(sender, id, size);
  EXPECT_EQ(std::vector<std::uint8_t>(decoded->payload.begin(), decoded->payload.end()), expected);
}

// Sequences strictly increase (and are non-zero): no duplicates, and store order.
void expect_increasing_sequences(const std::vector<Delivery>& deliveries) {
  std::uint64_t last = 0;
  for (const Delivery& d : deliveries) {
    EXPECT_GT(d.sequence, last) << "message " << d.message_id;
    last = d.sequence;
  }
}

std::vector<std::uint64_t> range(std::uint64_t first, std::uint64_t last) {
  std::vector<std::uint64_t> out;
  for (std::uint64_t i = first; i <= last; ++i) out.push_back(i);
  return out;
}

// ---------------------------------------------------------------------------------------------------
// Ephemeral mode: no store.

TEST(Router, RegisterFindUnregister) {
  Router router;
  EXPECT_FALSE(router.durable());
  RecordingSink a;
  EXPECT_EQ(router.find(1), nullptr);
  router.register_client(1, a);
  EXPECT_EQ(router.find(1), &a);
  EXPECT_EQ(router.find(2), nullptr);
  EXPECT_EQ(router.online_count(), 1u);
  EXPECT_EQ(router.stats().registrations, 1u);

  router.unregister_client(2, a);  // not registered under 2: no-op
  EXPECT_EQ(router.find(1), &a);
  router.unregister_client(1, a);
  EXPECT_EQ(router.find(1), nullptr);
  EXPECT_EQ(router.online_count(), 0u);
  router.unregister_client(1, a);  // twice: still a no-op
  EXPECT_EQ(a.displaced, 0);
  EXPECT_EQ(send(router, 2, 1, 1), Outcome::RecipientOffline);
  EXPECT_TRUE(a.delivered.empty());
}

TEST(Router, ReRegisteringTheSameSinkIsANoOp) {
  Router router;
  RecordingSink a;
  router.register_client(5, a);
  router.register_client(5, a);
  EXPECT_EQ(router.find(5), &a);
  EXPECT_EQ(a.displaced, 0);
  EXPECT_EQ(router.stats().registrations, 1u);
  EXPECT_EQ(router.stats().takeovers, 0u);
  EXPECT_EQ(send(router, 1, 5, 1), Outcome::Delivered);
  EXPECT_EQ(a.delivered.size(), 1u);
}

TEST(Router, NewestWinsAndDisplacedCleanupIsHarmless) {
  Router router;
  RecordingSink old_sink;
  RecordingSink new_sink;
  router.register_client(7, old_sink);
  router.register_client(7, new_sink);
  EXPECT_EQ(old_sink.displaced, 1);
  EXPECT_EQ(new_sink.displaced, 0);
  EXPECT_EQ(router.find(7), &new_sink);
  EXPECT_EQ(router.online_count(), 1u);
  EXPECT_EQ(router.stats().takeovers, 1u);
  EXPECT_EQ(router.stats().registrations, 2u);

  // The displaced connection closes later and cleans up: its successor must stay registered.
  router.unregister_client(7, old_sink);
  EXPECT_EQ(router.find(7), &new_sink);
  EXPECT_EQ(send(router, 1, 7, 1), Outcome::Delivered);
  EXPECT_TRUE(old_sink.delivered.empty());
  EXPECT_EQ(new_sink.delivered.size(), 1u);
  EXPECT_EQ(old_sink.displaced, 1);

  // A third connection displaces the second, and the first is not bothered again.
  RecordingSink third;
  router.register_client(7, third);
  EXPECT_EQ(old_sink.displaced, 1);
  EXPECT_EQ(new_sink.displaced, 1);
  EXPECT_EQ(router.stats().takeovers, 2u);
  router.unregister_client(7, third);
  EXPECT_EQ(router.find(7), nullptr);
}

TEST(Router, DeliversToTheOnlineRecipientAtOnce) {
  Router router;
  RecordingSink recipient;
  RecordingSink sender;
  router.register_client(1, sender);
  router.register_client(2, recipient);
  EXPECT_EQ(send(router, 1, 2, 42, &sender), Outcome::Delivered);
  ASSERT_EQ(recipient.delivered.size(), 1u);
  expect_delivery(recipient.delivered[0], 1, 2, 42);
  EXPECT_EQ(recipient.delivered[0].sequence, 0u);  // no store, no sequence
  EXPECT_EQ(router.stats().delivered, 1u);

  // The answer was route()'s return value: flush() has nothing to say in this mode, and there is
  // nothing to acknowledge or expire.
  router.flush();
  router.acknowledge(2, 1);
  EXPECT_EQ(router.expire(kNow), 0u);
  EXPECT_TRUE(sender.outcomes.empty());
  EXPECT_TRUE(sender.receipts.empty());
  EXPECT_EQ(recipient.delivered.size(), 1u);
  EXPECT_EQ(router.stats().acknowledged, 0u);
  EXPECT_EQ(router.stats().stored, 0u);
}

TEST(Router, PreservesPerSenderOrderAcrossInterleavedSenders) {
  Router router;
  RecordingSink sink;
  router.register_client(9, sink);
  std::map<ClientId, std::uint64_t> next_id;
  const ClientId pattern[] = {1, 2, 1, 3, 3, 2, 1, 1, 2, 3, 2, 1};
  for (int round = 0; round < 20; ++round) {
    for (ClientId sender : pattern) ASSERT_EQ(send(router, sender, 9, ++next_id[sender]), Outcome::Delivered);
  }
  std::map<ClientId, std::uint64_t> last_id;
  for (const Delivery& d : sink.delivered) {
    EXPECT_EQ(d.message_id, last_id[d.sender] + 1) << "sender " << d.sender;
    last_id[d.sender] = d.message_id;
  }
  EXPECT_EQ(last_id, next_id);
  EXPECT_EQ(sink.delivered.size(), 20u * std::size(pattern));
}

TEST(Router, SlowConsumerIsRefusedWithoutAffectingOthers) {
  const std::size_t frame = frame_size(100, 0);
  RouterLimits limits;
  limits.max_queued_bytes = frame * 3;  // room for exactly three frames
  Router router(limits);
  RecordingSink slow(/*accumulate=*/true);
  RecordingSink healthy(/*accumulate=*/true);
  router.register_client(2, slow);
  router.register_client(3, healthy);

  for (std::uint64_t i = 1; i <= 3; ++i) EXPECT_EQ(send(router, 1, 2, i, nullptr, false, 100), Outcome::Delivered);
  EXPECT_EQ(slow.queued, limits.max_queued_bytes);  // exactly at the bound was accepted
  EXPECT_EQ(send(router, 1, 2, 4, nullptr, false, 100), Outcome::RecipientBusy);
  EXPECT_EQ(send(router, 1, 2, 5, nullptr, false, 1), Outcome::RecipientBusy);
  EXPECT_EQ(slow.delivered.size(), 3u);
  EXPECT_EQ(router.stats().busy, 2u);

  EXPECT_EQ(send(router, 1, 3, 6, nullptr, false, 100), Outcome::Delivered);
  EXPECT_EQ(healthy.delivered.size(), 1u);

  // The peer acknowledged everything: the recipient accepts messages again.
  slow.queued = 0;
  EXPECT_EQ(send(router, 1, 2, 7, nullptr, false, 100), Outcome::Delivered);
  EXPECT_EQ(slow.delivered_ids(), (std::vector<std::uint64_t>{1, 2, 3, 7}));
  EXPECT_EQ(router.stats().delivered, 5u);
  EXPECT_EQ(router.stats().busy, 2u);
}

TEST(Router, HugeReportedBacklogDoesNotOverflow) {
  Router router;
  RecordingSink sink;
  sink.queued = std::numeric_limits<std::size_t>::max();
  router.register_client(2, sink);
  EXPECT_EQ(send(router, 1, 2, 1), Outcome::RecipientBusy);
  EXPECT_TRUE(sink.delivered.empty());
}

TEST(Router, InvalidRecipientsAreRefused) {
  TestRemote remote;
  Router router({}, nullptr, &remote);
  EXPECT_EQ(send(router, 1, 0, 1), Outcome::InvalidRecipient);
  EXPECT_EQ(send(router, 1, -1, 2), Outcome::InvalidRecipient);
  EXPECT_EQ(send(router, 1, std::numeric_limits<ClientId>::min(), 3), Outcome::InvalidRecipient);
  EXPECT_EQ(router.stats().invalid_recipient, 3u);
  EXPECT_EQ(remote.calls, 0);
  EXPECT_EQ(send(router, 1, std::numeric_limits<ClientId>::max(), 4), Outcome::ForwardedRemote);
  EXPECT_EQ(router.stats().invalid_recipient, 3u);
}

TEST(Router, RegisteringAnInvalidIdIsRejected) {
  Router router;
  RecordingSink sink;
  EXPECT_DEBUG_DEATH(router.register_client(0, sink), "");
  EXPECT_DEBUG_DEATH(router.register_client(-5, sink), "");
  EXPECT_EQ(router.online_count(), 0u);
  EXPECT_EQ(router.find(0), nullptr);
}

TEST(Router, OfflineWithoutRemoteIsDropped) {
  Router router;
  EXPECT_EQ(send(router, 1, 2, 1), Outcome::RecipientOffline);
  EXPECT_EQ(router.stats().offline, 1u);
  EXPECT_EQ(router.stats().delivered, 0u);
  // Registering later does not bring the dropped message back.
  RecordingSink sink;
  router.register_client(2, sink);
  router.flush();
  EXPECT_TRUE(sink.delivered.empty());
}

TEST(Router, OfflineGoesToTheRemoteWhenItTakesIt) {
  TestRemote remote;
  Router router({}, nullptr, &remote);
  EXPECT_EQ(send(router, 1, 2, 1), Outcome::ForwardedRemote);
  ASSERT_EQ(remote.forwarded.size(), 1u);
  expect_delivery(remote.forwarded[0], 1, 2, 1);
  EXPECT_EQ(router.stats().forwarded_remote, 1u);

  remote.accept = false;
  EXPECT_EQ(send(router, 1, 2, 2), Outcome::RecipientOffline);
  EXPECT_EQ(remote.calls, 2);
  EXPECT_EQ(router.stats().forwarded_remote, 1u);
  EXPECT_EQ(router.stats().offline, 1u);
}

TEST(Router, OnlineRecipientBypassesRemote) {
  TestRemote remote;
  Router router({}, nullptr, &remote);
  RecordingSink sink;
  router.register_client(2, sink);
  EXPECT_EQ(send(router, 1, 2, 1), Outcome::Delivered);
  EXPECT_EQ(remote.calls, 0);
  EXPECT_EQ(sink.delivered.size(), 1u);
}

TEST(Router, LimitsAreKept) {
  RouterLimits limits;
  limits.max_queued_bytes = 12345;
  limits.fill_batch = 7;
  Router router(limits);
  EXPECT_EQ(router.limits().max_queued_bytes, 12345u);
  EXPECT_EQ(router.limits().fill_batch, 7u);
}

// 1 may send to 2 only; everyone else may send to anyone but 2.
SendPolicy only_1_to_2() {
  SendPolicy policy;
  policy.source = "test.toml";
  policy.rules.push_back(PolicyRule{IdSet::of({{1, 1}}), IdSet::of({{2, 2}}), true, 4});
  policy.rules.push_back(PolicyRule{IdSet::all(), IdSet::of({{2, 2}}), false, 9});
  policy.rules.push_back(PolicyRule{IdSet::of({{1, 1}}), IdSet::all(), false, 12});
  return policy;
}

TEST(Router, SendPolicyRefusesForbiddenPairsWithTheRuleAndLetsOthersThrough) {
  Router router;
  RecordingSink two;
  RecordingSink three;
  router.register_client(2, two);
  router.register_client(3, three);
  router.set_policy(only_1_to_2());

  EXPECT_EQ(send(router, 1, 2, 1), Outcome::Delivered);
  EXPECT_EQ(send(router, 5, 2, 2), Outcome::Forbidden);
  EXPECT_EQ(router.refusal_reason(), "id 5 may not send to 2 (policy test.toml, rule 2 at line 9)");
  EXPECT_EQ(send(router, 1, 3, 3), Outcome::Forbidden);
  EXPECT_EQ(router.refusal_reason(), "id 1 may not send to 3 (policy test.toml, rule 3 at line 12)");
  EXPECT_EQ(send(router, 5, 3, 4), Outcome::Delivered);
  // A forbidden recipient's liveness is not revealed: offline and online ids are refused alike.
  EXPECT_EQ(send(router, 1, 77, 5), Outcome::Forbidden);
  // An id out of range is InvalidRecipient, whatever the policy says.
  EXPECT_EQ(send(router, 1, 0, 6), Outcome::InvalidRecipient);

  EXPECT_EQ(two.delivered_ids(), (std::vector<std::uint64_t>{1}));
  EXPECT_EQ(three.delivered_ids(), (std::vector<std::uint64_t>{4}));
  EXPECT_EQ(router.stats().forbidden, 3u);
  EXPECT_EQ(router.stats().delivered, 2u);

  // Back to the default policy: everything valid goes through again.
  router.set_policy(SendPolicy{});
  EXPECT_EQ(send(router, 5, 2, 7), Outcome::Delivered);
}

TEST(Outcome, ToStringIsDistinctForEveryValue) {
  const Outcome all[] = {Outcome::Delivered,        Outcome::Stored,        Outcome::ForwardedRemote,
                         Outcome::RecipientOffline, Outcome::RecipientBusy, Outcome::InvalidRecipient,
                         Outcome::QuotaExceeded,    Outcome::StoreUnavailable, Outcome::Forbidden};
  std::set<std::string> names;
  for (Outcome o : all) {
    const std::string name(to_string(o));
    EXPECT_NE(name, "unknown");
    EXPECT_FALSE(name.empty());
    EXPECT_TRUE(names.insert(name).second) << "duplicate name " << name;
  }
  EXPECT_EQ(names.size(), std::size(all));
  EXPECT_EQ(to_string(static_cast<Outcome>(99)), "unknown");
}

// ---------------------------------------------------------------------------------------------------
// Durable mode: each real store (the message log and SQLite) in a temporary directory.

using testing::TempDir;
using testing::Tmpfs;

class DurableRouter : public ::testing::TestWithParam<std::string> {
 protected:
  std::unique_ptr<MessageStore> open_store(const std::string& dir, SyncMode mode = SyncMode::Batch,
                                           StoreLimits limits = {}) {
    auto opened = testing::open_message_store(GetParam(), dir, mode, limits);
    EXPECT_TRUE(opened.has_value()) << (opened ? "" : opened.error().message);
    return opened ? std::move(*opened) : nullptr;
  }
  // Opens the store and the router over it; call once per test (SetUp does it with the defaults).
  void start(SyncMode mode = SyncMode::Batch, StoreLimits store_limits = {}, RouterLimits limits = {}) {
    router_.reset();
    store_.reset();
    store_ = open_store(dir_.path(), mode, store_limits);
    ASSERT_NE(store_, nullptr);
    router_ = std::make_unique<Router>(limits, store_.get());
    router_->set_wall_clock_ms(kNow);
  }
  void SetUp() override { start(); }

  Router& router() { return *router_; }
  MessageStore& store() { return *store_; }

  TempDir dir_;
  std::unique_ptr<MessageStore> store_;
  std::unique_ptr<Router> router_;
};

TEST_P(DurableRouter, StoredIsAnsweredAndDeliveredOnlyAtFlush) {
  ASSERT_TRUE(router().durable());
  RecordingSink sender;
  RecordingSink recipient;
  router().register_client(1, sender);
  router().register_client(2, recipient);
  router().flush();  // the recipient is caught up: nothing stored for it yet
  EXPECT_TRUE(recipient.delivered.empty());

  for (std::uint64_t id = 1; id <= 5; ++id) ASSERT_EQ(send(router(), 1, 2, id, &sender), Outcome::Stored);
  EXPECT_TRUE(sender.outcomes.empty());
  EXPECT_TRUE(recipient.delivered.empty());
  EXPECT_EQ(router().stats().stored, 0u);  // nothing committed yet

  router().flush();
  ASSERT_EQ(sender.outcomes.size(), 5u);
  for (std::size_t i = 0; i < 5; ++i) {
    EXPECT_EQ(sender.outcomes[i].message_id, i + 1);
    EXPECT_EQ(sender.outcomes[i].outcome, Outcome::Stored);
    EXPECT_TRUE(sender.outcomes[i].reason.empty());
  }
  ASSERT_EQ(recipient.delivered_ids(), range(1, 5));
  for (const Delivery& d : recipient.delivered) {
    SCOPED_TRACE("message " + std::to_string(d.message_id));
    EXPECT_NE(d.sequence, 0u);
    expect_delivery(d, 1, 2, d.message_id);
  }
  expect_increasing_sequences(recipient.delivered);
  EXPECT_EQ(router().stats().stored, 5u);
  EXPECT_EQ(router().stats().delivered, 5u);
  EXPECT_EQ(store().stats().held_messages, 5u);  // held until acknowledged

  // A second flush has nothing new: no repeated answers, no repeated deliveries.
  router().flush();
  router().on_sink_ready(2);
  router().flush();
  EXPECT_EQ(sender.outcomes.size(), 5u);
  EXPECT_EQ(recipient.delivered.size(), 5u);
}

TEST_P(DurableRouter, ReRegisteringTheSameSinkDoesNotDeliverTwice) {
  RecordingSink recipient;
  for (std::uint64_t id = 1; id <= 3; ++id) ASSERT_EQ(send(router(), 1, 2, id), Outcome::Stored);
  router().flush();
  router().register_client(2, recipient);
  router().flush();
  router().register_client(2, recipient);
  router().flush();
  EXPECT_EQ(recipient.delivered_ids(), range(1, 3));
  EXPECT_EQ(router().stats().registrations, 1u);
  EXPECT_EQ(recipient.displaced, 0);
}

TEST_P(DurableRouter, OfflineRecipientGetsEverythingOnRegisterInOrder) {
  RouterLimits limits;
  limits.fill_batch = 3;  // several store reads per fill
  start(SyncMode::Batch, {}, limits);

  std::map<ClientId, std::uint64_t> next_id;
  const ClientId pattern[] = {1, 2, 1, 3, 3, 2, 1, 1, 2, 3, 2, 1};
  int sent = 0;
  for (int round = 0; round < 3; ++round) {
    for (ClientId sender : pattern) {
      ASSERT_EQ(send(router(), sender, 9, ++next_id[sender]), Outcome::Stored);
      ++sent;
    }
    ASSERT_EQ(send(router(), 1, 8, 1000 + static_cast<std::uint64_t>(round)), Outcome::Stored);  // someone else's
    router().flush();
  }
  EXPECT_EQ(store().stats().held_messages, static_cast<std::uint64_t>(sent) + 3);

  RecordingSink sink;
  router().register_client(9, sink);
  EXPECT_TRUE(sink.delivered.empty()) << "register_client must not deliver; flush() does";
  router().flush();
  ASSERT_EQ(sink.delivered.size(), static_cast<std::size_t>(sent));
  std::map<ClientId, std::uint64_t> last_id;
  for (const Delivery& d : sink.delivered) {
    SCOPED_TRACE("sender " + std::to_string(d.sender) + " message " + std::to_string(d.message_id));
    EXPECT_EQ(d.message_id, last_id[d.sender] + 1);
    last_id[d.sender] = d.message_id;
    expect_delivery(d, d.sender, 9, d.message_id);
  }
  EXPECT_EQ(last_id, next_id);
  expect_increasing_sequences(sink.delivered);

  // Caught up: a new message goes straight to it at the next flush, after everything else.
  ASSERT_EQ(send(router(), 2, 9, ++next_id[2]), Outcome::Stored);
  router().flush();
  ASSERT_EQ(sink.delivered.size(), static_cast<std::size_t>(sent) + 1);
  EXPECT_EQ(sink.delivered.back().message_id, next_id[2]);
  expect_increasing_sequences(sink.delivered);
}

TEST_P(DurableRouter, RecipientRegisteringInTheSameIterationGetsTheOpenBatchOnce) {
  RouterLimits limits;
  limits.fill_batch = 3;
  start(SyncMode::Batch, {}, limits);
  for (std::uint64_t id = 1; id <= 4; ++id) ASSERT_EQ(send(router(), 1, 2, id), Outcome::Stored);
  router().flush();
  for (std::uint64_t id = 5; id <= 7; ++id) ASSERT_EQ(send(router(), 1, 2, id), Outcome::Stored);
  RecordingSink sink;
  router().register_client(2, sink);  // while 5..7 are still uncommitted
  router().flush();
  EXPECT_EQ(sink.delivered_ids(), range(1, 7));
  expect_increasing_sequences(sink.delivered);
}

TEST_P(DurableRouter, SlowConsumerWaitsInTheStoreAndResumesWithoutGapsOrDuplicates) {
  const std::size_t frame = frame_size(100, 1);
  RouterLimits limits;
  limits.max_queued_bytes = frame * 20;
  start(SyncMode::Batch, {}, limits);
  RecordingSink sender;
  RecordingSink slow(/*accumulate=*/true);
  RecordingSink healthy;
  router().register_client(1, sender);
  router().register_client(2, slow);
  router().register_client(3, healthy);
  router().flush();

  for (std::uint64_t id = 1; id <= 3; ++id) ASSERT_EQ(send(router(), 1, 2, id, &sender, false, 100), Outcome::Stored);
  router().flush();
  ASSERT_EQ(slow.delivered_ids(), range(1, 3));

  // The peer stops reading: its connection is full.
  slow.queued = limits.max_queued_bytes;
  for (std::uint64_t id = 4; id <= 10; ++id) {
    ASSERT_EQ(send(router(), 1, 2, id, &sender, false, 100), Outcome::Stored);  // never RecipientBusy
    ASSERT_EQ(send(router(), 1, 3, 100 + id, &sender, false, 100), Outcome::Stored);
    router().flush();
  }
  EXPECT_EQ(slow.delivered.size(), 3u) << "a full connection must get nothing more";
  EXPECT_EQ(healthy.delivered.size(), 7u) << "others are not held up";
  EXPECT_EQ(sender.outcome_ids().size(), 17u);
  for (const OutcomeCall& o : sender.outcomes) EXPECT_EQ(o.outcome, Outcome::Stored);
  EXPECT_EQ(router().stats().busy, 0u);

  // Readiness while still full changes nothing.
  router().on_sink_ready(2);
  router().flush();
  EXPECT_EQ(slow.delivered.size(), 3u);

  // The peer acknowledged everything: the rest follows, in order, once.
  slow.queued = 0;
  router().on_sink_ready(2);
  router().flush();
  EXPECT_EQ(slow.delivered_ids(), range(1, 10));
  expect_increasing_sequences(slow.delivered);
  for (const Delivery& d : slow.delivered) {
    SCOPED_TRACE("message " + std::to_string(d.message_id));
    expect_delivery(d, 1, 2, d.message_id, 100);
  }

  // Caught up again: new messages go straight through.
  ASSERT_EQ(send(router(), 1, 2, 11, &sender, false, 100), Outcome::Stored);
  router().flush();
  EXPECT_EQ(slow.delivered_ids(), range(1, 11));
  expect_increasing_sequences(slow.delivered);
}

// RouterLimits::max_queued_bytes is "the most bytes a recipient's connection may hold ... with a
// store, [a message] waits in the recipient's inbox until the connection has room". The fill from
// the store must keep to it as well, and the rest must follow on readiness.
TEST_P(DurableRouter, FillFromTheStoreKeepsToTheQueueBound) {
  const std::size_t frame = frame_size(100, 1);
  RouterLimits limits;
  limits.max_queued_bytes = frame * 4;
  start(SyncMode::Batch, {}, limits);  // fill_batch stays at its default (256)
  for (std::uint64_t id = 1; id <= 12; ++id) ASSERT_EQ(send(router(), 1, 2, id, nullptr, false, 100), Outcome::Stored);
  router().flush();

  RecordingSink slow(/*accumulate=*/true);
  router().register_client(2, slow);
  router().flush();
  EXPECT_FALSE(slow.delivered.empty());
  EXPECT_LE(slow.queued, limits.max_queued_bytes)
      << slow.delivered.size() << " frames of " << frame << " bytes handed over at once";

  // Drain the rest as the peer reads.
  for (int round = 0; round < 20 && slow.delivered.size() < 12; ++round) {
    slow.queued = 0;
    router().on_sink_ready(2);
    router().flush();
    EXPECT_LE(slow.queued, limits.max_queued_bytes);
  }
  EXPECT_EQ(slow.delivered_ids(), range(1, 12));
  expect_increasing_sequences(slow.delivered);
}

// A backlog is read from the store about fill_bytes at a time: each flush hands over that much,
// and the rest follows as the peer acknowledges (on_sink_ready), in order, without gaps.
TEST_P(DurableRouter, ABacklogIsReadAboutFillBytesAtATime) {
  RouterLimits limits;
  limits.fill_bytes = 300;  // three 100-byte payloads
  start(SyncMode::Batch, {}, limits);
  for (std::uint64_t id = 1; id <= 10; ++id) ASSERT_EQ(send(router(), 1, 2, id, nullptr, false, 100), Outcome::Stored);
  router().flush();

  RecordingSink recipient;
  router().register_client(2, recipient);
  router().flush();
  EXPECT_EQ(recipient.delivered_ids(), range(1, 3));
  router().flush();
  EXPECT_EQ(recipient.delivered.size(), 3u) << "only the peer's acknowledgement resumes the fill";
  // New messages wait behind the backlog.
  ASSERT_EQ(send(router(), 1, 2, 11, nullptr, false, 100), Outcome::Stored);
  router().flush();
  EXPECT_EQ(recipient.delivered.size(), 3u);
  for (int round = 0; round < 10 && recipient.delivered.size() < 11; ++round) {
    const std::size_t before = recipient.delivered.size();
    router().on_sink_ready(2);
    router().flush();
    EXPECT_LE(recipient.delivered.size() - before, 3u);
  }
  EXPECT_EQ(recipient.delivered_ids(), range(1, 11));
  expect_increasing_sequences(recipient.delivered);
  // Caught up: the next one goes straight through.
  ASSERT_EQ(send(router(), 1, 2, 12, nullptr, false, 100), Outcome::Stored);
  router().flush();
  EXPECT_EQ(recipient.delivered_ids(), range(1, 12));
}

// Reading past messages that are due to expire hands nothing over, so it brings no acknowledgement
// that could resume the fill: the bound counts only from the first message handed over.
TEST_P(DurableRouter, ExpiredMessagesReadFirstDoNotStallTheFill) {
  StoreLimits store_limits;
  store_limits.ttl_ms = 1000;
  RouterLimits limits;
  limits.fill_bytes = 200;
  start(SyncMode::Batch, store_limits, limits);
  for (std::uint64_t id = 1; id <= 5; ++id) ASSERT_EQ(send(router(), 1, 2, id, nullptr, false, 100), Outcome::Stored);
  router().flush();
  router().set_wall_clock_ms(kNow + 2000);  // 1..5 are due; expire() has not run
  for (std::uint64_t id = 6; id <= 9; ++id) ASSERT_EQ(send(router(), 1, 2, id, nullptr, false, 100), Outcome::Stored);
  router().flush();

  RecordingSink recipient;
  router().register_client(2, recipient);
  router().flush();
  ASSERT_FALSE(recipient.delivered.empty()) << "the fill stopped before handing anything over";
  EXPECT_EQ(recipient.delivered.front().message_id, 6u);
  for (int round = 0; round < 5 && recipient.delivered.size() < 4; ++round) {
    router().on_sink_ready(2);
    router().flush();
  }
  EXPECT_EQ(recipient.delivered_ids(), range(6, 9));
}

TEST_P(DurableRouter, AcknowledgeRemovesFromTheStore) {
  RecordingSink first;
  router().register_client(2, first);
  router().flush();
  for (std::uint64_t id = 1; id <= 5; ++id) ASSERT_EQ(send(router(), 1, 2, id), Outcome::Stored);
  router().flush();
  ASSERT_EQ(first.delivered_ids(), range(1, 5));
  EXPECT_EQ(store().stats().held_messages, 5u);

  router().acknowledge(2, first.delivered[0].sequence);
  EXPECT_EQ(store().stats().held_messages, 4u);
  router().acknowledge(2, first.delivered[2].sequence);
  router().acknowledge(2, first.delivered[2].sequence);  // twice: counted once
  EXPECT_EQ(store().stats().held_messages, 3u);
  EXPECT_EQ(router().stats().acknowledged, 2u);
  router().flush();
  EXPECT_EQ(first.delivered.size(), 5u);  // acknowledging delivers nothing

  // The connection goes away; the next one gets what was not acknowledged, in order, again.
  router().unregister_client(2, first);
  RecordingSink second;
  router().register_client(2, second);
  router().flush();
  EXPECT_EQ(second.delivered_ids(), (std::vector<std::uint64_t>{2, 4, 5}));
  expect_increasing_sequences(second.delivered);
  for (std::size_t i = 0; i < second.delivered.size(); ++i) {
    EXPECT_EQ(second.delivered[i].sequence, first.delivered[i == 0 ? 1 : i == 1 ? 3 : 4].sequence);
  }

  for (const Delivery& d : second.delivered) router().acknowledge(2, d.sequence);
  router().flush();
  EXPECT_EQ(store().stats().held_messages, 0u);
  EXPECT_EQ(router().stats().acknowledged, 5u);
  router().unregister_client(2, second);
  RecordingSink third;
  router().register_client(2, third);
  router().flush();
  EXPECT_TRUE(third.delivered.empty());
}

TEST_P(DurableRouter, AcknowledgingSomeoneElsesSequenceDoesNothing) {
  RecordingSink two;
  RecordingSink three;
  RecordingSink sender;
  router().register_client(1, sender);
  router().register_client(2, two);
  router().register_client(3, three);
  router().flush();
  ASSERT_EQ(send(router(), 1, 2, 1, &sender, /*receipt=*/true), Outcome::Stored);
  ASSERT_EQ(send(router(), 1, 3, 2, &sender, /*receipt=*/true), Outcome::Stored);
  router().flush();
  ASSERT_EQ(two.delivered.size(), 1u);
  ASSERT_EQ(three.delivered.size(), 1u);

  router().acknowledge(3, two.delivered[0].sequence);  // 2's message, acknowledged by 3
  router().acknowledge(2, three.delivered[0].sequence + 1000);  // no such message
  router().acknowledge(2, 0);
  router().flush();
  EXPECT_EQ(store().stats().held_messages, 2u);
  EXPECT_EQ(router().stats().acknowledged, 0u);
  EXPECT_TRUE(sender.receipts.empty());

  // 2's message is still 2's: a new connection gets it again.
  router().unregister_client(2, two);
  RecordingSink two_again;
  router().register_client(2, two_again);
  router().flush();
  EXPECT_EQ(two_again.delivered_ids(), (std::vector<std::uint64_t>{1}));
}

TEST_P(DurableRouter, ReceiptOnAcknowledgeOnlyWhenRequestedAndSenderOnline) {
  RecordingSink sender;
  RecordingSink recipient;
  router().register_client(1, sender);
  router().register_client(2, recipient);
  router().flush();
  ASSERT_EQ(send(router(), 1, 2, 10, &sender, /*receipt=*/true), Outcome::Stored);
  ASSERT_EQ(send(router(), 1, 2, 11, &sender, /*receipt=*/false), Outcome::Stored);
  ASSERT_EQ(send(router(), 1, 2, 12, &sender, /*receipt=*/true), Outcome::Stored);
  router().flush();
  ASSERT_EQ(recipient.delivered_ids(), (std::vector<std::uint64_t>{10, 11, 12}));
  EXPECT_TRUE(sender.receipts.empty()) << "stored is not delivered";

  router().acknowledge(2, recipient.delivered[0].sequence);
  EXPECT_EQ(sender.receipts, (std::vector<ReceiptCall>{{10, 2, true}}));
  router().acknowledge(2, recipient.delivered[1].sequence);  // no receipt asked for
  router().acknowledge(2, recipient.delivered[0].sequence);  // again: no second receipt
  EXPECT_EQ(sender.receipts, (std::vector<ReceiptCall>{{10, 2, true}}));

  // The sender went offline: its receipt has nowhere to go, and the old sink hears nothing.
  router().unregister_client(1, sender);
  router().acknowledge(2, recipient.delivered[2].sequence);
  EXPECT_EQ(sender.receipts.size(), 1u);
  EXPECT_EQ(router().stats().acknowledged, 3u);
  router().flush();
  EXPECT_EQ(store().stats().held_messages, 0u);

  // A sender's new connection receives receipts for messages sent from the old one.
  RecordingSink sender_again;
  router().register_client(1, sender_again);
  ASSERT_EQ(send(router(), 1, 2, 13, &sender_again, /*receipt=*/true), Outcome::Stored);
  router().flush();
  ASSERT_EQ(recipient.delivered.size(), 4u);
  router().acknowledge(2, recipient.delivered[3].sequence);
  EXPECT_EQ(sender_again.receipts, (std::vector<ReceiptCall>{{13, 2, true}}));
  EXPECT_EQ(sender.receipts.size(), 1u);
}

TEST_P(DurableRouter, DuplicateMessageIdIsAnsweredEveryTimeAndDeliveredOnce) {
  RecordingSink sender;
  RecordingSink recipient;
  router().register_client(1, sender);
  router().register_client(2, recipient);
  router().flush();

  // A retry in the same batch.
  ASSERT_EQ(send(router(), 1, 2, 7, &sender), Outcome::Stored);
  ASSERT_EQ(send(router(), 1, 2, 7, &sender), Outcome::Stored);
  router().flush();
  ASSERT_EQ(sender.outcomes.size(), 2u);
  for (const OutcomeCall& o : sender.outcomes) {
    EXPECT_EQ(o.message_id, 7u);
    EXPECT_EQ(o.outcome, Outcome::Stored);
  }
  EXPECT_EQ(recipient.delivered_ids(), (std::vector<std::uint64_t>{7}));

  // A retry in a later batch, before and after the recipient acknowledged the message.
  ASSERT_EQ(send(router(), 1, 2, 7, &sender), Outcome::Stored);
  router().flush();
  router().acknowledge(2, recipient.delivered[0].sequence);
  ASSERT_EQ(send(router(), 1, 2, 7, &sender), Outcome::Stored);
  router().flush();
  EXPECT_EQ(sender.outcome_ids(), (std::vector<std::uint64_t>{7, 7, 7, 7}));
  EXPECT_EQ(recipient.delivered_ids(), (std::vector<std::uint64_t>{7}));
  EXPECT_EQ(router().stats().stored, 1u);
  EXPECT_EQ(store().stats().duplicates, 3u);
  EXPECT_EQ(store().stats().held_messages, 0u);

  // Another sender may use the same id, and legacy id 0 is never deduplicated.
  ASSERT_EQ(send(router(), 3, 2, 7), Outcome::Stored);
  ASSERT_EQ(send(router(), 3, 2, 0), Outcome::Stored);
  ASSERT_EQ(send(router(), 3, 2, 0), Outcome::Stored);
  router().flush();
  EXPECT_EQ(recipient.delivered_ids(), (std::vector<std::uint64_t>{7, 7, 0, 0}));
  EXPECT_EQ(recipient.delivered[1].sender, 3);
}

TEST_P(DurableRouter, DuplicateOfAnUnacknowledgedMessageIsNotRedeliveredOnRegister) {
  RecordingSink sender;
  router().register_client(1, sender);
  ASSERT_EQ(send(router(), 1, 2, 5, &sender), Outcome::Stored);
  router().flush();
  ASSERT_EQ(send(router(), 1, 2, 5, &sender), Outcome::Stored);
  router().flush();
  RecordingSink recipient;
  router().register_client(2, recipient);
  router().flush();
  EXPECT_EQ(recipient.delivered_ids(), (std::vector<std::uint64_t>{5}));
  EXPECT_EQ(sender.outcome_ids(), (std::vector<std::uint64_t>{5, 5}));
}

TEST_P(DurableRouter, QuotaExceededIsAnsweredAtOnceAndCounted) {
  StoreLimits store_limits;
  store_limits.max_messages_per_recipient = 2;
  start(SyncMode::Batch, store_limits);
  RecordingSink sender;
  router().register_client(1, sender);
  ASSERT_EQ(send(router(), 1, 2, 1, &sender), Outcome::Stored);
  ASSERT_EQ(send(router(), 1, 2, 2, &sender), Outcome::Stored);
  EXPECT_EQ(send(router(), 1, 2, 3, &sender), Outcome::QuotaExceeded);
  EXPECT_EQ(router().stats().quota_exceeded, 1u);
  EXPECT_EQ(store().stats().quota_rejections, 1u);
  EXPECT_EQ(send(router(), 1, 4, 4, &sender), Outcome::Stored) << "other recipients have their own quota";
  router().flush();
  // The refused message was answered by route(); flush() answers only the stored ones.
  EXPECT_EQ(sender.outcome_ids(), (std::vector<std::uint64_t>{1, 2, 4}));
  EXPECT_EQ(send(router(), 1, 2, 5, &sender), Outcome::QuotaExceeded);  // still full after commit
  EXPECT_EQ(router().stats().quota_exceeded, 2u);

  RecordingSink recipient;
  router().register_client(2, recipient);
  router().flush();
  ASSERT_EQ(recipient.delivered_ids(), (std::vector<std::uint64_t>{1, 2}));
  // Acknowledging frees room.
  router().acknowledge(2, recipient.delivered[0].sequence);
  EXPECT_EQ(send(router(), 1, 2, 6, &sender), Outcome::Stored);
  router().flush();
  EXPECT_EQ(recipient.delivered_ids(), (std::vector<std::uint64_t>{1, 2, 6}));
  EXPECT_EQ(router().stats().quota_exceeded, 2u);
}

TEST_P(DurableRouter, ExpiredMessagesAreDroppedCountedAndReportedByReceipt) {
  StoreLimits store_limits;
  store_limits.ttl_ms = 1000;
  start(SyncMode::Batch, store_limits);
  RecordingSink sender;
  router().register_client(1, sender);
  router().set_wall_clock_ms(kNow);
  ASSERT_EQ(send(router(), 1, 2, 1, &sender, /*receipt=*/true), Outcome::Stored);   // due kNow + 1000
  ASSERT_EQ(send(router(), 1, 2, 2, &sender, /*receipt=*/false), Outcome::Stored);  // due kNow + 1000
  router().flush();
  router().set_wall_clock_ms(kNow + 500);
  ASSERT_EQ(send(router(), 1, 2, 3, &sender, /*receipt=*/true), Outcome::Stored);  // due kNow + 1500
  router().flush();

  EXPECT_EQ(router().expire(kNow + 999), 0u);
  EXPECT_TRUE(sender.receipts.empty());
  EXPECT_EQ(router().expire(kNow + 1000), 2u);
  EXPECT_EQ(router().stats().expired, 2u);
  EXPECT_EQ(sender.receipts, (std::vector<ReceiptCall>{{1, 2, false}}));
  router().flush();
  EXPECT_EQ(store().stats().held_messages, 1u);

  RecordingSink recipient;
  router().register_client(2, recipient);
  router().flush();
  EXPECT_EQ(recipient.delivered_ids(), (std::vector<std::uint64_t>{3}));

  // The last one expires while its sender is offline: counted, no receipt to anyone.
  router().unregister_client(1, sender);
  EXPECT_EQ(router().expire(kNow + 1500), 1u);
  EXPECT_EQ(router().stats().expired, 3u);
  EXPECT_EQ(sender.receipts.size(), 1u);
  router().flush();
  EXPECT_EQ(store().stats().held_messages, 0u);
  // An acknowledgement arriving after expiry finds nothing and sends no receipt.
  router().acknowledge(2, recipient.delivered[0].sequence);
  EXPECT_EQ(router().stats().acknowledged, 0u);
}

TEST_P(DurableRouter, MessagesPastTheirDeadlineAreNotHandedOverBeforeTheSweep) {
  StoreLimits store_limits;
  store_limits.ttl_ms = 1000;
  start(SyncMode::Batch, store_limits);
  RecordingSink sender;
  router().register_client(1, sender);
  ASSERT_EQ(send(router(), 1, 2, 1, &sender, /*receipt=*/true), Outcome::Stored);
  router().flush();
  router().set_wall_clock_ms(kNow + 300);
  ASSERT_EQ(send(router(), 1, 2, 2, &sender), Outcome::Stored);
  router().flush();

  router().set_wall_clock_ms(kNow + 1100);  // message 1 is due, 2 is not; expire() has not run
  RecordingSink recipient;
  router().register_client(2, recipient);
  router().flush();
  EXPECT_EQ(recipient.delivered_ids(), (std::vector<std::uint64_t>{2}));
  EXPECT_EQ(router().expire(kNow + 1100), 1u);
  EXPECT_EQ(sender.receipts, (std::vector<ReceiptCall>{{1, 2, false}}));
}

TEST_P(DurableRouter, TakeoverRedeliversEveryUnacknowledgedMessageFromTheStart) {
  RecordingSink first;
  router().register_client(2, first);
  router().flush();
  for (std::uint64_t id = 1; id <= 4; ++id) ASSERT_EQ(send(router(), 1, 2, id), Outcome::Stored);
  router().flush();
  ASSERT_EQ(first.delivered_ids(), range(1, 4));
  router().acknowledge(2, first.delivered[0].sequence);

  RecordingSink second;
  router().register_client(2, second);
  EXPECT_EQ(first.displaced, 1);
  EXPECT_EQ(router().stats().takeovers, 1u);
  ASSERT_EQ(send(router(), 1, 2, 5), Outcome::Stored);  // in the same iteration as the takeover
  router().flush();
  EXPECT_EQ(second.delivered_ids(), range(2, 5));
  expect_increasing_sequences(second.delivered);
  EXPECT_EQ(first.delivered.size(), 4u) << "the displaced connection gets nothing more";

  // The displaced connection's late cleanup leaves the new one registered and fed.
  router().unregister_client(2, first);
  ASSERT_EQ(send(router(), 1, 2, 6), Outcome::Stored);
  router().flush();
  EXPECT_EQ(second.delivered_ids(), range(2, 6));
  EXPECT_EQ(first.delivered.size(), 4u);

  // Another takeover starts from the start again.
  RecordingSink third;
  router().register_client(2, third);
  router().flush();
  EXPECT_EQ(third.delivered_ids(), range(2, 6));
  EXPECT_EQ(second.displaced, 1);
}

TEST_P(DurableRouter, UnregisteredSenderGetsNoOutcome) {
  RecordingSink gone;
  RecordingSink stays;
  RecordingSink recipient;
  router().register_client(1, gone);
  router().register_client(3, stays);
  router().register_client(2, recipient);
  router().flush();
  ASSERT_EQ(send(router(), 1, 2, 1, &gone), Outcome::Stored);
  ASSERT_EQ(send(router(), 3, 2, 2, &stays), Outcome::Stored);
  ASSERT_EQ(send(router(), 1, 2, 3, &gone), Outcome::Stored);
  router().unregister_client(1, gone);  // the connection closes (and its sink is destroyed) before the flush
  router().flush();
  EXPECT_TRUE(gone.outcomes.empty());
  EXPECT_EQ(stays.outcome_ids(), (std::vector<std::uint64_t>{2}));
  // The messages themselves were accepted and are delivered.
  EXPECT_EQ(recipient.delivered_ids(), (std::vector<std::uint64_t>{1, 2, 3}));
}

// router.h: "Sinks are borrowed; a sink must be unregistered (or displaced) before it is destroyed."
// A displaced sender's sink may therefore be gone by the next flush(), and must not be called.
TEST_P(DurableRouter, DisplacedSenderGetsNoOutcome) {
  RecordingSink old_sender;
  RecordingSink new_sender;
  router().register_client(1, old_sender);
  ASSERT_EQ(send(router(), 1, 2, 1, &old_sender), Outcome::Stored);
  router().register_client(1, new_sender);  // old_sender is displaced, and may now be destroyed
  ASSERT_EQ(old_sender.displaced, 1);
  router().flush();
  EXPECT_TRUE(old_sender.outcomes.empty()) << "on_outcome called on a displaced (possibly destroyed) sink";
  EXPECT_TRUE(new_sender.outcomes.empty());
  EXPECT_EQ(store().stats().held_messages, 1u);
}

TEST_P(DurableRouter, SyncAlwaysAnswersAtFlushToo) {
  start(SyncMode::Always);
  RecordingSink sender;
  RecordingSink recipient;
  router().register_client(1, sender);
  router().register_client(2, recipient);
  router().flush();
  const std::uint64_t commits_before = store().stats().commits;
  for (std::uint64_t id = 1; id <= 3; ++id) ASSERT_EQ(send(router(), 1, 2, id, &sender), Outcome::Stored);
  EXPECT_EQ(store().stats().commits, commits_before + 3) << "each append commits by itself";
  EXPECT_TRUE(sender.outcomes.empty());
  EXPECT_TRUE(recipient.delivered.empty());
  router().flush();
  ASSERT_EQ(sender.outcome_ids(), range(1, 3));
  for (const OutcomeCall& o : sender.outcomes) EXPECT_EQ(o.outcome, Outcome::Stored);
  ASSERT_EQ(recipient.delivered_ids(), range(1, 3));
  for (const Delivery& d : recipient.delivered) expect_delivery(d, 1, 2, d.message_id);
  expect_increasing_sequences(recipient.delivered);
  router().flush();
  EXPECT_EQ(sender.outcomes.size(), 3u);

  // Offline recipients and acknowledgements behave as in batch mode.
  ASSERT_EQ(send(router(), 1, 5, 4, &sender), Outcome::Stored);
  router().flush();
  RecordingSink late;
  router().register_client(5, late);
  router().flush();
  EXPECT_EQ(late.delivered_ids(), (std::vector<std::uint64_t>{4}));
  router().acknowledge(2, recipient.delivered[0].sequence);
  EXPECT_EQ(store().stats().held_messages, 3u);
  EXPECT_EQ(router().stats().stored, 4u);
}

TEST_P(DurableRouter, InvalidRecipientNeverReachesTheStore) {
  RecordingSink sender;
  router().register_client(1, sender);
  EXPECT_EQ(send(router(), 1, 0, 1, &sender), Outcome::InvalidRecipient);
  EXPECT_EQ(send(router(), 1, -3, 2, &sender), Outcome::InvalidRecipient);
  router().flush();
  EXPECT_TRUE(sender.outcomes.empty());
  EXPECT_EQ(router().stats().invalid_recipient, 2u);
  EXPECT_EQ(store().stats().stored, 0u);
  EXPECT_EQ(store().stats().held_messages, 0u);
}

TEST_P(DurableRouter, ForbiddenMessagesNeverReachTheStoreAndAPolicyChangeSparesAcceptedOnes) {
  RecordingSink sender;
  router().register_client(5, sender);
  EXPECT_EQ(send(router(), 5, 2, 1, &sender), Outcome::Stored);
  router().flush();

  SendPolicy deny_all;
  deny_all.default_allow = false;
  deny_all.source = "deny.toml";
  router().set_policy(deny_all);
  EXPECT_EQ(send(router(), 5, 2, 2, &sender), Outcome::Forbidden);
  EXPECT_EQ(router().refusal_reason(), "id 5 may not send to 2 (policy deny.toml, default deny)");
  router().flush();
  // Refused at once, never answered again by a flush.
  ASSERT_EQ(sender.outcomes.size(), 1u);
  EXPECT_EQ(sender.outcomes[0].message_id, 1u);
  EXPECT_EQ(store().stats().held_messages, 1u);

  // The message accepted before the policy changed is still delivered.
  RecordingSink recipient;
  router().register_client(2, recipient);
  router().flush();
  EXPECT_EQ(recipient.delivered_ids(), (std::vector<std::uint64_t>{1}));
  EXPECT_EQ(router().stats().forbidden, 1u);
}

// A full filesystem: the batch that cannot be committed is answered StoreUnavailable, and what was
// committed before is still delivered.
TEST_P(DurableRouter, CommitFailureIsStoreUnavailable) {
  Tmpfs small(dir_.path(), "small", "256k");
  if (!small.mounted()) GTEST_SKIP() << "cannot mount a tmpfs here (needs root): " << small.error();
  const std::string& mount_point = small.path();
  // The router and store live in this scope so that they are gone before the unmount.
  auto small_store = open_store(mount_point, SyncMode::Batch);
  ASSERT_NE(small_store, nullptr);
  Router durable({}, small_store.get());
  durable.set_wall_clock_ms(kNow);
  RecordingSink sender;
  RecordingSink online;  // 3 is online and caught up; 2 registers after the failure
  durable.register_client(1, sender);
  durable.register_client(3, online);
  durable.flush();

  constexpr std::size_t kPayload = 4 * 1024;
  constexpr std::uint64_t kPerBatch = 2;
  std::vector<std::uint64_t> committed;
  std::vector<std::uint64_t> failed;
  std::uint64_t id = 0;
  const auto recipient_of = [](std::uint64_t message_id) -> ClientId { return message_id % 2 == 1 ? 2 : 3; };
  for (int batch = 0; batch < 40 && failed.empty(); ++batch) {
    std::vector<std::uint64_t> routed;
    for (std::uint64_t i = 0; i < kPerBatch; ++i) {
      ++id;
      Outcome o = send(durable, 1, recipient_of(id), id, &sender, false, kPayload);
      if (o == Outcome::Stored) {
        routed.push_back(id);
      } else {
        EXPECT_EQ(o, Outcome::StoreUnavailable);  // refused at once; never answered again
      }
    }
    const std::size_t answered = sender.outcomes.size();
    durable.flush();
    ASSERT_EQ(sender.outcomes.size(), answered + routed.size()) << "each stored message answered once";
    bool ok = true;
    for (std::size_t k = 0; k < routed.size(); ++k) {
      const OutcomeCall& o = sender.outcomes[answered + k];
      EXPECT_EQ(o.message_id, routed[k]);
      if (o.outcome == Outcome::StoreUnavailable) {
        ok = false;
        EXPECT_FALSE(o.reason.empty());
      } else {
        EXPECT_EQ(o.outcome, Outcome::Stored);
      }
    }
    for (std::size_t k = 1; k < routed.size(); ++k) {
      EXPECT_EQ(sender.outcomes[answered + k].outcome, sender.outcomes[answered].outcome)
          << "a batch commits or fails as a whole";
    }
    std::vector<std::uint64_t>& into = ok ? committed : failed;
    into.insert(into.end(), routed.begin(), routed.end());
    ASSERT_EQ(routed.size(), kPerBatch) << "the page cache holds a batch: only the commit should fail";
  }
  ASSERT_FALSE(committed.empty());
  ASSERT_FALSE(failed.empty()) << "256 KiB should not hold " << id << " x " << kPayload << " bytes";
  EXPECT_EQ(durable.stats().store_unavailable, failed.size());
  EXPECT_EQ(durable.stats().stored, committed.size());

  std::vector<std::uint64_t> committed_to[4];
  for (std::uint64_t m : committed) committed_to[recipient_of(m)].push_back(m);
  // The online recipient got the committed messages as they committed, and nothing of the failed batch.
  durable.flush();
  EXPECT_EQ(online.delivered_ids(), committed_to[3]);
  // What was committed for the offline recipient is still there, in order; nothing of the failed batch is.
  RecordingSink recipient;
  durable.register_client(2, recipient);
  durable.flush();
  EXPECT_EQ(recipient.delivered_ids(), committed_to[2]);
  expect_increasing_sequences(recipient.delivered);
  for (const Delivery& d : recipient.delivered) {
    SCOPED_TRACE("message " + std::to_string(d.message_id));
    expect_delivery(d, 1, 2, d.message_id, kPayload);
  }
  for (const Delivery& d : online.delivered) expect_delivery(d, 1, 3, d.message_id, kPayload);
  EXPECT_EQ(online.delivered.size() + recipient.delivered.size(), committed.size());
}

// A store whose commits complete when the test says so, as the message log's do when its sync
// thread has the disk's answer: the real store underneath, only the moment of completion deferred.
class DeferredCommits final : public MessageStore {
 public:
  explicit DeferredCommits(MessageStore& store) : store_(store) {}
  AppendResult append(const Delivery& d, std::span<const std::uint8_t> p, bool r, std::int64_t now) override {
    return store_.append(d, p, r, now);
  }
  std::optional<StoredMessage> acknowledge(ClientId recipient, std::uint64_t sequence) override {
    return store_.acknowledge(recipient, sequence);
  }
  std::vector<StoredMessage> pending(ClientId recipient, std::uint64_t after, std::size_t limit,
                                     std::size_t max_bytes) override {
    return store_.pending(recipient, after, limit, max_bytes);
  }
  std::vector<StoredMessage> expire(std::int64_t now_ms) override { return store_.expire(now_ms); }
  Result<void, Error> commit() override { return store_.commit(); }
  bool dirty() const override { return store_.dirty(); }
  StoreStats stats() const override { return store_.stats(); }
  void commit_async(CommitDone done) override {
    auto committed = store_.commit();  // the batch is written now; the answer comes later
    waiting_.push_back([done = std::move(done), committed]() mutable { done(std::move(committed)); });
  }
  // Completes the oldest commit still waiting; false if none is.
  bool complete_one() {
    if (waiting_.empty()) return false;
    auto next = std::move(waiting_.front());
    waiting_.erase(waiting_.begin());
    next();
    return true;
  }
  std::size_t waiting() const { return waiting_.size(); }

 private:
  MessageStore& store_;
  std::vector<std::function<void()>> waiting_;
};

// Nothing reaches a recipient, not even one that registers and is fed from the store, before its
// commit completes; then senders are answered and recipients served, batch by batch, in order.
TEST_P(DurableRouter, NothingIsDeliveredBeforeItsCommitCompletes) {
  DeferredCommits deferred(store());
  Router durable({}, &deferred);
  durable.set_wall_clock_ms(kNow);
  RecordingSink sender, online, late;
  durable.register_client(1, sender);
  durable.register_client(2, online);
  durable.flush();
  EXPECT_EQ(deferred.waiting(), 0u) << "registrations alone commit nothing";

  ASSERT_EQ(send(durable, 1, 2, 10, &sender), Outcome::Stored);
  ASSERT_EQ(send(durable, 1, 3, 11, &sender), Outcome::Stored);
  durable.flush();  // batch A in flight
  ASSERT_EQ(send(durable, 1, 2, 12, &sender), Outcome::Stored);
  durable.register_client(3, late);
  durable.flush();  // batch B in flight; 3's fill must not take 11 from the store yet
  EXPECT_EQ(deferred.waiting(), 2u);
  EXPECT_TRUE(sender.outcomes.empty());
  EXPECT_TRUE(online.delivered.empty());
  EXPECT_TRUE(late.delivered.empty()) << "a registration was fed a message that is not durable";

  ASSERT_TRUE(deferred.complete_one());  // A
  EXPECT_EQ(sender.outcome_ids(), (std::vector<std::uint64_t>{10, 11}));
  EXPECT_EQ(online.delivered_ids(), (std::vector<std::uint64_t>{10}));
  EXPECT_EQ(late.delivered_ids(), (std::vector<std::uint64_t>{11}));

  ASSERT_TRUE(deferred.complete_one());  // B
  EXPECT_EQ(sender.outcome_ids(), (std::vector<std::uint64_t>{10, 11, 12}));
  EXPECT_EQ(online.delivered_ids(), (std::vector<std::uint64_t>{10, 12}));
  EXPECT_FALSE(deferred.complete_one());
}

// A sender that goes away while its batch is in flight is not called when the batch completes.
TEST_P(DurableRouter, ASenderGoneWhileItsCommitIsInFlightGetsNoOutcome) {
  DeferredCommits deferred(store());
  Router durable({}, &deferred);
  durable.set_wall_clock_ms(kNow);
  auto sender = std::make_unique<RecordingSink>();
  RecordingSink recipient;
  durable.register_client(1, *sender);
  durable.register_client(2, recipient);
  ASSERT_EQ(send(durable, 1, 2, 10, sender.get()), Outcome::Stored);
  durable.flush();
  durable.unregister_client(1, *sender);
  sender.reset();
  while (deferred.complete_one()) {
  }
  EXPECT_EQ(recipient.delivered_ids(), (std::vector<std::uint64_t>{10}));
}

INSTANTIATE_TEST_SUITE_P(Store, DurableRouter, ::testing::Values("log", "sqlite"), testing::store_kind_name);

}  // namespace
}  // namespace debra::core
