// SPDX-License-Identifier: MIT
#include "core/router.h"

#include <gtest/gtest.h>

#include <map>
#include <ostream>
#include <string>
#include <vector>

namespace debra::core {

// Lets gtest print outcomes by name in failure messages.
void PrintTo(Outcome outcome, std::ostream* os) { *os << to_string(outcome); }

namespace {

// A sink that records what the router hands it. queued_bytes() is whatever the test sets, plus the
// frames delivered when it behaves as a consumer that never reads (accumulate).
class RecordingSink : public SessionSink {
 public:
  explicit RecordingSink(bool accumulate = false) : accumulate_(accumulate) {}

  void deliver(const Delivery& delivery) override {
    delivered.push_back(delivery);
    if (accumulate_) queued += delivery.frame->size();
  }
  std::size_t queued_bytes() const override { return queued; }
  void on_displaced() override { ++displaced; }

  std::vector<Delivery> delivered;
  std::size_t queued = 0;
  int displaced = 0;

 private:
  bool accumulate_;
};

class TestStore : public OfflineStore {
 public:
  bool store(const Delivery& delivery) override {
    ++store_calls;
    if (refuse) return false;
    held[delivery.recipient].push_back(delivery);
    return true;
  }
  void drain(ClientId recipient, SessionSink& sink) override {
    drains.push_back(recipient);
    auto it = held.find(recipient);
    if (it == held.end()) return;
    for (const Delivery& d : it->second) sink.deliver(d);
    held.erase(it);
  }

  bool refuse = false;
  int store_calls = 0;
  std::vector<ClientId> drains;
  std::map<ClientId, std::vector<Delivery>> held;
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

Delivery make_delivery(ClientId sender, ClientId recipient, std::uint64_t id, std::size_t payload_size = 4) {
  const std::vector<std::uint8_t> payload(payload_size, 0x61);
  return Delivery{sender, recipient, id, wire::encode_delivery(sender, recipient, id, payload)};
}

TEST(Router, RegisterFindUnregister) {
  Router router;
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
}

TEST(Router, ReRegisteringTheSameSinkIsANoOp) {
  TestStore store;
  Router router({}, &store);
  RecordingSink a;
  router.register_client(5, a);
  router.register_client(5, a);
  EXPECT_EQ(router.find(5), &a);
  EXPECT_EQ(a.displaced, 0);
  EXPECT_EQ(router.stats().registrations, 1u);
  EXPECT_EQ(router.stats().takeovers, 0u);
  EXPECT_EQ(store.drains.size(), 1u);
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
  EXPECT_EQ(router.route(make_delivery(1, 7, 1)), Outcome::Delivered);
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

TEST(Router, DeliversToTheOnlineRecipientWithTheSharedFrame) {
  Router router;
  RecordingSink sink;
  router.register_client(2, sink);
  const Delivery d = make_delivery(1, 2, 42);
  EXPECT_EQ(router.route(d), Outcome::Delivered);
  ASSERT_EQ(sink.delivered.size(), 1u);
  EXPECT_EQ(sink.delivered[0].sender, 1);
  EXPECT_EQ(sink.delivered[0].recipient, 2);
  EXPECT_EQ(sink.delivered[0].message_id, 42u);
  EXPECT_EQ(sink.delivered[0].frame, d.frame);  // the same encoding, not a copy
  EXPECT_EQ(router.stats().delivered, 1u);
}

TEST(Router, PreservesPerSenderOrderAcrossInterleavedSenders) {
  Router router;
  RecordingSink sink;
  router.register_client(9, sink);
  std::map<ClientId, std::uint64_t> next_id;
  const ClientId pattern[] = {1, 2, 1, 3, 3, 2, 1, 1, 2, 3, 2, 1};
  for (int round = 0; round < 20; ++round) {
    for (ClientId sender : pattern) {
      ASSERT_EQ(router.route(make_delivery(sender, 9, ++next_id[sender])), Outcome::Delivered);
    }
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
  const Delivery probe = make_delivery(1, 2, 1, 100);
  const std::size_t frame_size = probe.frame->size();
  RouterLimits limits;
  limits.max_queued_bytes = frame_size * 3;  // room for exactly three frames
  Router router(limits);
  RecordingSink slow(/*accumulate=*/true);
  RecordingSink healthy(/*accumulate=*/true);
  router.register_client(2, slow);
  router.register_client(3, healthy);

  for (std::uint64_t i = 1; i <= 3; ++i) EXPECT_EQ(router.route(make_delivery(1, 2, i, 100)), Outcome::Delivered);
  EXPECT_EQ(slow.queued, limits.max_queued_bytes);  // exactly at the bound was accepted
  EXPECT_EQ(router.route(make_delivery(1, 2, 4, 100)), Outcome::RecipientBusy);
  EXPECT_EQ(router.route(make_delivery(1, 2, 5, 0)), Outcome::RecipientBusy);
  EXPECT_EQ(slow.delivered.size(), 3u);
  EXPECT_EQ(router.stats().busy, 2u);

  EXPECT_EQ(router.route(make_delivery(1, 3, 6, 100)), Outcome::Delivered);
  EXPECT_EQ(healthy.delivered.size(), 1u);

  // The peer acknowledged everything: the recipient accepts messages again.
  slow.queued = 0;
  EXPECT_EQ(router.route(make_delivery(1, 2, 7, 100)), Outcome::Delivered);
  EXPECT_EQ(router.stats().delivered, 5u);
  EXPECT_EQ(router.stats().busy, 2u);
}

TEST(Router, HugeReportedBacklogDoesNotOverflow) {
  Router router;
  RecordingSink sink;
  sink.queued = static_cast<std::size_t>(-1);
  router.register_client(2, sink);
  EXPECT_EQ(router.route(make_delivery(1, 2, 1)), Outcome::RecipientBusy);
  EXPECT_TRUE(sink.delivered.empty());
}

TEST(Router, InvalidRecipientsAreRefused) {
  TestStore store;
  TestRemote remote;
  Router router({}, &store, &remote);
  EXPECT_EQ(router.route(make_delivery(1, 0, 1)), Outcome::InvalidRecipient);
  EXPECT_EQ(router.route(make_delivery(1, -1, 2)), Outcome::InvalidRecipient);
  EXPECT_EQ(router.route(make_delivery(1, std::numeric_limits<ClientId>::min(), 3)), Outcome::InvalidRecipient);
  EXPECT_EQ(router.stats().invalid_recipient, 3u);
  EXPECT_EQ(store.store_calls, 0);
  EXPECT_EQ(remote.calls, 0);
  EXPECT_EQ(router.route(make_delivery(1, std::numeric_limits<ClientId>::max(), 4)), Outcome::ForwardedRemote);
}

TEST(Router, RegisteringAnInvalidIdIsRejected) {
  Router router;
  RecordingSink sink;
  EXPECT_DEBUG_DEATH(router.register_client(0, sink), "");
  EXPECT_EQ(router.online_count(), 0u);
  EXPECT_EQ(router.find(0), nullptr);
}

TEST(Router, OfflineWithoutStoreOrRemoteIsDropped) {
  Router router;
  EXPECT_EQ(router.route(make_delivery(1, 2, 1)), Outcome::RecipientOffline);
  EXPECT_EQ(router.stats().offline, 1u);
  EXPECT_EQ(router.stats().delivered, 0u);
}

TEST(Router, OfflineGoesToTheStore) {
  TestStore store;
  Router router({}, &store);
  EXPECT_EQ(router.route(make_delivery(1, 2, 1)), Outcome::Stored);
  EXPECT_EQ(router.stats().stored, 1u);
  ASSERT_EQ(store.held[2].size(), 1u);
  EXPECT_EQ(store.held[2][0].message_id, 1u);

  store.refuse = true;
  EXPECT_EQ(router.route(make_delivery(1, 2, 2)), Outcome::RecipientOffline);
  EXPECT_EQ(router.stats().offline, 1u);
  EXPECT_EQ(router.stats().stored, 1u);
}

TEST(Router, RemoteComesBeforeTheStore) {
  TestStore store;
  TestRemote remote;
  Router router({}, &store, &remote);
  EXPECT_EQ(router.route(make_delivery(1, 2, 1)), Outcome::ForwardedRemote);
  EXPECT_EQ(remote.forwarded.size(), 1u);
  EXPECT_EQ(store.store_calls, 0);
  EXPECT_EQ(router.stats().forwarded_remote, 1u);

  remote.accept = false;
  EXPECT_EQ(router.route(make_delivery(1, 2, 2)), Outcome::Stored);
  EXPECT_EQ(remote.calls, 2);
  EXPECT_EQ(store.store_calls, 1);

  store.refuse = true;
  EXPECT_EQ(router.route(make_delivery(1, 2, 3)), Outcome::RecipientOffline);
  EXPECT_EQ(router.stats().forwarded_remote, 1u);
  EXPECT_EQ(router.stats().stored, 1u);
  EXPECT_EQ(router.stats().offline, 1u);
}

TEST(Router, RemoteWithoutStore) {
  TestRemote remote;
  Router router({}, nullptr, &remote);
  EXPECT_EQ(router.route(make_delivery(1, 2, 1)), Outcome::ForwardedRemote);
  remote.accept = false;
  EXPECT_EQ(router.route(make_delivery(1, 2, 2)), Outcome::RecipientOffline);
}

TEST(Router, OnlineRecipientBypassesRemoteAndStore) {
  TestStore store;
  TestRemote remote;
  Router router({}, &store, &remote);
  RecordingSink sink;
  router.register_client(2, sink);
  EXPECT_EQ(router.route(make_delivery(1, 2, 1)), Outcome::Delivered);
  EXPECT_EQ(remote.calls, 0);
  EXPECT_EQ(store.store_calls, 0);
}

TEST(Router, RegisterDrainsTheStoreInOrder) {
  TestStore store;
  Router router({}, &store);
  for (std::uint64_t i = 1; i <= 5; ++i) ASSERT_EQ(router.route(make_delivery(1, 4, i)), Outcome::Stored);
  ASSERT_EQ(router.route(make_delivery(1, 8, 100)), Outcome::Stored);

  RecordingSink sink;
  router.register_client(4, sink);
  EXPECT_EQ(store.drains, std::vector<ClientId>{4});
  ASSERT_EQ(sink.delivered.size(), 5u);
  for (std::uint64_t i = 0; i < 5; ++i) EXPECT_EQ(sink.delivered[i].message_id, i + 1);
  EXPECT_EQ(store.held.count(8), 1u);  // other recipients' messages stay put

  // Later messages arrive after the drained ones.
  EXPECT_EQ(router.route(make_delivery(1, 4, 6)), Outcome::Delivered);
  EXPECT_EQ(sink.delivered.back().message_id, 6u);
}

TEST(Router, TakeoverDrainsIntoTheNewSink) {
  TestStore store;
  Router router({}, &store);
  RecordingSink first;
  router.register_client(4, first);
  router.unregister_client(4, first);
  ASSERT_EQ(router.route(make_delivery(1, 4, 1)), Outcome::Stored);
  RecordingSink second;
  RecordingSink third;
  router.register_client(4, second);
  router.register_client(4, third);
  EXPECT_EQ(second.delivered.size(), 1u);
  EXPECT_TRUE(third.delivered.empty());
  EXPECT_EQ(store.drains.size(), 3u);
}

TEST(Outcome, ToStringIsDistinctForEveryValue) {
  const Outcome all[] = {Outcome::Delivered,        Outcome::Stored,        Outcome::ForwardedRemote,
                         Outcome::RecipientOffline, Outcome::RecipientBusy, Outcome::InvalidRecipient};
  std::vector<std::string> names;
  for (Outcome o : all) {
    const std::string name(to_string(o));
    EXPECT_NE(name, "unknown");
    EXPECT_FALSE(name.empty());
    for (const std::string& seen : names) EXPECT_NE(name, seen);
    names.push_back(name);
  }
  EXPECT_EQ(to_string(static_cast<Outcome>(99)), "unknown");
}

TEST(Router, LimitsAreKept) {
  RouterLimits limits;
  limits.max_queued_bytes = 12345;
  Router router(limits);
  EXPECT_EQ(router.limits().max_queued_bytes, 12345u);
}

}  // namespace
}  // namespace debra::core
