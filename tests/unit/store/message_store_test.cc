// SPDX-License-Identifier: MIT
//
// The contract of core::MessageStore, run against every store (--store log and --store sqlite).
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <string>

#include "store_test_support.h"

namespace debra::store {
namespace {

namespace fs = std::filesystem;
using core::AppendStatus;
using testing::TempDir;
using testing::Tmpfs;

core::Delivery delivery(core::ClientId sender, core::ClientId recipient, std::uint64_t message_id) {
  return core::Delivery{sender, recipient, message_id, nullptr};
}

std::vector<std::uint8_t> bytes(std::string_view text) { return {text.begin(), text.end()}; }

// Every MessageStore keeps the same promises: each test runs against both.
class MessageStoreTest : public ::testing::TestWithParam<std::string> {
 protected:
  std::unique_ptr<core::MessageStore> open_store(const std::string& dir, SyncMode mode = SyncMode::Batch,
                                                 core::StoreLimits limits = {}) {
    auto store = testing::open_message_store(GetParam(), dir, mode, limits);
    EXPECT_TRUE(store.has_value()) << (store ? "" : store.error().message);
    return store ? std::move(*store) : nullptr;
  }
  // What start-up errors name: the store's file or directory.
  std::string store_path() const { return GetParam() == "sqlite" ? "messages.db" : "log"; }
};

TEST_P(MessageStoreTest, PendingIsInArrivalOrderPerRecipient) {
  TempDir dir;
  auto store = open_store(dir.path());
  for (int i = 0; i < 5; ++i) {
    auto p = bytes("m" + std::to_string(i));
    ASSERT_EQ(store->append(delivery(1 + i % 2, 9, 100 + static_cast<std::uint64_t>(i)), p, false, 1000).status,
              AppendStatus::Stored);
  }
  ASSERT_EQ(store->append(delivery(1, 8, 500), bytes("other"), false, 1000).status, AppendStatus::Stored);
  ASSERT_TRUE(store->commit());
  auto pending = store->pending(9, 0, 100);
  ASSERT_EQ(pending.size(), 5u);
  for (std::size_t i = 0; i < pending.size(); ++i) {
    EXPECT_EQ(std::string(pending[i].payload.begin(), pending[i].payload.end()), "m" + std::to_string(i));
    if (i > 0) {
      EXPECT_GT(pending[i].sequence, pending[i - 1].sequence);
    }
  }
  EXPECT_EQ(store->pending(9, pending[2].sequence, 100).size(), 2u);
  EXPECT_EQ(store->pending(9, 0, 2).size(), 2u);
}

// The byte bound stops at the message whose payload brings the total to it, and always returns one.
TEST_P(MessageStoreTest, PendingStopsAtTheByteBound) {
  TempDir dir;
  auto store = open_store(dir.path());
  for (std::uint64_t i = 1; i <= 5; ++i) {
    ASSERT_EQ(store->append(delivery(1, 9, i), std::vector<std::uint8_t>(100, 'x'), false, 1000).status,
              AppendStatus::Stored);
  }
  ASSERT_TRUE(store->commit());
  EXPECT_EQ(store->pending(9, 0, 100, 300).size(), 3u);
  EXPECT_EQ(store->pending(9, 0, 100, 301).size(), 4u);
  EXPECT_EQ(store->pending(9, 0, 100, 1).size(), 1u);
  EXPECT_EQ(store->pending(9, 0, 2, 1000).size(), 2u) << "the count still bounds it";
  const auto first = store->pending(9, 0, 100, 250);
  ASSERT_EQ(first.size(), 3u);
  const auto rest = store->pending(9, first.back().sequence, 100, 10'000);
  ASSERT_EQ(rest.size(), 2u);
  EXPECT_EQ(rest[0].message_id, 4u);
  EXPECT_EQ(rest[0].payload.size(), 100u);
}

TEST_P(MessageStoreTest, ReportsTheDiskSpaceItsFilesTake) {
  TempDir dir;
  auto store = open_store(dir.path());
  const std::vector<std::uint8_t> payload(1024, 'x');
  for (std::uint64_t i = 1; i <= 256; ++i) store->append(delivery(1, 2, i), payload, false, 0);
  ASSERT_TRUE(store->commit());
  // 256 KiB of payloads, in whatever the store wraps them in.
  EXPECT_GE(store->stats().disk_bytes, 256u * 1024) << GetParam();
  EXPECT_LT(store->stats().disk_bytes, 64u * 1024 * 1024) << GetParam();
}

TEST_P(MessageStoreTest, CommittedMessagesSurviveReopenAndSequencesAreNotReused) {
  TempDir dir;
  std::uint64_t last = 0;
  {
    auto store = open_store(dir.path());
    for (std::uint64_t i = 1; i <= 3; ++i) last = store->append(delivery(1, 2, i), bytes("x"), true, 0).sequence;
    ASSERT_TRUE(store->commit());
    ASSERT_TRUE(store->acknowledge(2, last).has_value());
    ASSERT_TRUE(store->commit());
  }
  auto store = open_store(dir.path());
  auto pending = store->pending(2, 0, 10);
  ASSERT_EQ(pending.size(), 2u);
  EXPECT_TRUE(pending[0].receipt_requested);
  EXPECT_EQ(store->stats().held_messages, 2u);
  auto next = store->append(delivery(1, 2, 4), bytes("y"), false, 0);
  EXPECT_GT(next.sequence, last);
}

TEST_P(MessageStoreTest, DuplicateMessageIdIsStoredOnceEvenAfterAcknowledgement) {
  TempDir dir;
  auto store = open_store(dir.path());
  auto first = store->append(delivery(1, 2, 77), bytes("a"), false, 0);
  ASSERT_EQ(first.status, AppendStatus::Stored);
  auto again = store->append(delivery(1, 2, 77), bytes("a"), false, 0);
  EXPECT_EQ(again.status, AppendStatus::Duplicate);
  EXPECT_EQ(again.sequence, first.sequence);
  ASSERT_TRUE(store->acknowledge(2, first.sequence));
  EXPECT_EQ(store->append(delivery(1, 2, 77), bytes("a"), false, 0).status, AppendStatus::Duplicate);
  // Another sender may use the same id; legacy messages (id 0) are never deduplicated.
  EXPECT_EQ(store->append(delivery(3, 2, 77), bytes("a"), false, 0).status, AppendStatus::Stored);
  EXPECT_EQ(store->append(delivery(3, 2, 0), bytes("a"), false, 0).status, AppendStatus::Stored);
  EXPECT_EQ(store->append(delivery(3, 2, 0), bytes("a"), false, 0).status, AppendStatus::Stored);
  EXPECT_EQ(store->pending(2, 0, 10).size(), 3u);
}

TEST_P(MessageStoreTest, OnlyTheRecipientCanAcknowledge) {
  TempDir dir;
  auto store = open_store(dir.path());
  auto stored = store->append(delivery(1, 2, 1), bytes("a"), false, 0);
  EXPECT_FALSE(store->acknowledge(3, stored.sequence).has_value());
  auto acked = store->acknowledge(2, stored.sequence);
  ASSERT_TRUE(acked.has_value());
  EXPECT_EQ(acked->sender, 1);
  EXPECT_EQ(acked->message_id, 1u);
  EXPECT_FALSE(store->acknowledge(2, stored.sequence).has_value());
}

TEST_P(MessageStoreTest, QuotaCountsMessagesAndBytesAndFreesOnAcknowledge) {
  TempDir dir;
  core::StoreLimits limits;
  limits.max_messages_per_recipient = 2;
  limits.max_bytes_per_recipient = 10;
  auto store = open_store(dir.path(), SyncMode::Batch, limits);
  auto a = store->append(delivery(1, 2, 1), bytes("aaaa"), false, 0);
  ASSERT_EQ(a.status, AppendStatus::Stored);
  auto big = store->append(delivery(1, 2, 2), bytes("bbbbbbbbb"), false, 0);
  EXPECT_EQ(big.status, AppendStatus::QuotaExceeded);
  EXPECT_NE(big.reason.find("quota"), std::string::npos);
  ASSERT_EQ(store->append(delivery(1, 2, 3), bytes("cc"), false, 0).status, AppendStatus::Stored);
  EXPECT_EQ(store->append(delivery(1, 2, 4), bytes("d"), false, 0).status, AppendStatus::QuotaExceeded);
  EXPECT_EQ(store->append(delivery(1, 5, 4), bytes("d"), false, 0).status, AppendStatus::Stored);
  ASSERT_TRUE(store->acknowledge(2, a.sequence));
  EXPECT_EQ(store->append(delivery(1, 2, 6), bytes("d"), false, 0).status, AppendStatus::Stored);
  EXPECT_EQ(store->stats().quota_rejections, 2u);
}

TEST_P(MessageStoreTest, ExpireRemovesOnlyMessagesPastTheirDeadline) {
  TempDir dir;
  core::StoreLimits limits;
  limits.ttl_ms = 1000;
  auto store = open_store(dir.path(), SyncMode::Batch, limits);
  ASSERT_EQ(store->append(delivery(1, 2, 1), bytes("old"), true, 0).status, AppendStatus::Stored);
  ASSERT_EQ(store->append(delivery(1, 2, 2), bytes("new"), false, 600).status, AppendStatus::Stored);
  EXPECT_TRUE(store->expire(999).empty());
  auto expired = store->expire(1000);
  ASSERT_EQ(expired.size(), 1u);
  EXPECT_EQ(expired[0].message_id, 1u);
  EXPECT_TRUE(expired[0].receipt_requested);
  auto pending = store->pending(2, 0, 10);
  ASSERT_EQ(pending.size(), 1u);
  EXPECT_EQ(pending[0].message_id, 2u);
  EXPECT_EQ(store->stats().expired, 1u);
  EXPECT_EQ(store->stats().held_messages, 1u);
}

TEST_P(MessageStoreTest, AcknowledgedMessagesNeverExpireAndTheRestExpireInOrder) {
  // Thousands of messages come and are acknowledged while a few stay: the log's expiry heap then
  // holds mostly released entries and is rebuilt several times on the way.
  TempDir dir;
  core::StoreLimits limits;
  limits.ttl_ms = 1000;
  auto store = open_store(dir.path(), SyncMode::Off, limits);
  for (int i = 0; i < 3000; ++i) {
    auto appended = store->append(delivery(1, 2 + i % 3, static_cast<std::uint64_t>(i) + 1), bytes("m"), false, i);
    ASSERT_EQ(appended.status, AppendStatus::Stored);
    ASSERT_TRUE(store->commit());
    if (i % 500 != 7) {
      ASSERT_TRUE(store->acknowledge(2 + i % 3, appended.sequence));
    }
  }
  ASSERT_TRUE(store->commit());
  EXPECT_EQ(store->stats().held_messages, 6u);
  auto expired = store->expire(1000 + 1499);  // accepted at 1499 or before
  ASSERT_EQ(expired.size(), 3u);
  EXPECT_EQ(expired[0].message_id, 8u);
  EXPECT_EQ(expired[1].message_id, 508u);
  EXPECT_EQ(expired[2].message_id, 1008u);
  expired = store->expire(10'000);
  ASSERT_EQ(expired.size(), 3u);
  EXPECT_EQ(expired[0].message_id, 1508u);
  EXPECT_EQ(expired[1].message_id, 2008u);
  EXPECT_EQ(expired[2].message_id, 2508u);
  EXPECT_TRUE(store->expire(20'000).empty());
  EXPECT_EQ(store->stats().held_messages, 0u);
  EXPECT_EQ(store->stats().expired, 6u);
}

TEST_P(MessageStoreTest, EverySyncModeKeepsCommittedMessages) {
  for (SyncMode mode : {SyncMode::Always, SyncMode::Batch, SyncMode::Off}) {
    TempDir dir;
    {
      auto store = open_store(dir.path(), mode);
      ASSERT_EQ(store->append(delivery(1, 2, 1), bytes("kept"), false, 0).status, AppendStatus::Stored);
      ASSERT_TRUE(store->commit());
      if (mode == SyncMode::Always) {
        EXPECT_FALSE(store->dirty());
      }
    }
    auto store = open_store(dir.path(), mode);
    EXPECT_EQ(store->pending(2, 0, 10).size(), 1u) << to_string(mode);
  }
}

TEST(SyncMode, Parses) {
  EXPECT_EQ(*parse_sync_mode("always"), SyncMode::Always);
  EXPECT_EQ(*parse_sync_mode("batch"), SyncMode::Batch);
  EXPECT_EQ(*parse_sync_mode("off"), SyncMode::Off);
  EXPECT_FALSE(parse_sync_mode("sometimes").has_value());
}

// A full filesystem: appends or the commit fail with a clear error, nothing committed before is lost,
// and the store keeps working once there is room again.
TEST_P(MessageStoreTest, FullFilesystemFailsCleanlyAndKeepsWhatWasCommitted) {
  TempDir dir;
  Tmpfs small(dir.path(), "small", "256k");
  if (!small.mounted()) GTEST_SKIP() << "cannot mount a tmpfs here (needs root): " << small.error();
  const std::string& mount_point = small.path();
  std::vector<std::uint64_t> committed;
  {
    auto store = open_store(mount_point);
    ASSERT_NE(store, nullptr);
    std::vector<std::uint8_t> payload(8 * 1024, 0x5a);
    bool failed = false;
    for (std::uint64_t i = 1; i <= 200 && !failed; ++i) {
      auto r = store->append(delivery(1, 2, i), payload, false, 0);
      if (r.status != AppendStatus::Stored) {
        EXPECT_EQ(r.status, AppendStatus::Unavailable);
        EXPECT_FALSE(r.reason.empty());
        failed = true;
        break;
      }
      if (auto c = store->commit(); !c) {
        EXPECT_NE(c.error().message.find("commit"), std::string::npos);
        failed = true;
        break;
      }
      committed.push_back(r.sequence);
    }
    ASSERT_TRUE(failed) << "256 KiB should not hold 200 x 8 KiB";
    ASSERT_FALSE(committed.empty());
    // Reading still works, and acknowledging frees room for new messages.
    EXPECT_EQ(store->pending(2, 0, 1000).size(), committed.size());
  }
  auto store = open_store(mount_point);
  ASSERT_NE(store, nullptr);
  auto pending = store->pending(2, 0, 1000);
  ASSERT_EQ(pending.size(), committed.size());
  for (std::size_t i = 0; i < pending.size(); ++i) EXPECT_EQ(pending[i].sequence, committed[i]);
}

// debra_store_commit_seconds times the commits that hold messages, which answers and deliveries wait
// for; one of acknowledgements alone, or of nothing, is not timed.
TEST_P(MessageStoreTest, CommitsThatHoldMessagesAreTimed) {
  TempDir dir;
  auto store = open_store(dir.path());
  const std::vector<std::uint8_t> payload(100, 'p');
  auto first = store->append(delivery(1, 2, 1), payload, false, 0);
  ASSERT_TRUE(store->commit());
  EXPECT_EQ(store->stats().commit_times.count(), 1u);
  store->append(delivery(1, 2, 2), payload, false, 0);
  ASSERT_TRUE(store->commit());
  EXPECT_EQ(store->stats().commit_times.count(), 2u);
  ASSERT_TRUE(store->acknowledge(2, first.sequence).has_value());
  ASSERT_TRUE(store->commit());
  ASSERT_TRUE(store->commit());
  const core::StoreStats stats = store->stats();
  EXPECT_EQ(stats.commit_times.count(), 2u);
  EXPECT_GT(stats.commit_times.sum_ns(), 0u);
  // Each fdatasync the message log makes is timed; SQLite syncs inside its own commit, untimed.
  EXPECT_EQ(stats.sync_times.count(), stats.syncs);
  if (GetParam() == "log") {
    EXPECT_GT(stats.syncs, 0u);
  }
}

TEST_P(MessageStoreTest, ReadOnlyDirectoryIsAClearError) {
  TempDir dir;
  Tmpfs read_only(dir.path(), "ro", "64k", true);
  if (!read_only.mounted()) GTEST_SKIP() << "cannot mount a tmpfs here (needs root): " << read_only.error();
  auto store = testing::open_message_store(GetParam(), read_only.path(), SyncMode::Batch, {});
  ASSERT_FALSE(store.has_value());
  EXPECT_NE(store.error().message.find(store_path()), std::string::npos) << store.error().message;
}

INSTANTIATE_TEST_SUITE_P(Store, MessageStoreTest, ::testing::Values("log", "sqlite"), testing::store_kind_name);

}  // namespace
}  // namespace debra::store
