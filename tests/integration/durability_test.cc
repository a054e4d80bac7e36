// SPDX-License-Identifier: MIT
//
// Durable store-and-forward (#3): what the router accepted reaches its recipient, once and in order,
// across recipients that are offline, reconnect, or never acknowledge, and across a router that is
// killed mid-stream; retries are deduplicated; quotas, time-to-live and a full or read-only disk
// behave as docs/protocol.md says.
#include <sys/mount.h>
#include <sys/wait.h>

#include <cerrno>
#include <cstring>
#include <random>
#include <set>

#include "metrics_scrape.h"
#include "test_support.h"

namespace debra::testing {
namespace {

constexpr std::uint16_t kQuotaExceeded = 11;
constexpr std::uint16_t kStoreUnavailable = 12;

// Receives until `quiet` passes without a message (or `limit` messages arrived).
std::vector<Message> drain(Client& client, std::chrono::milliseconds quiet, std::size_t limit = SIZE_MAX) {
  std::vector<Message> out;
  while (out.size() < limit) {
    auto m = client.receive(quiet);
    if (!m) break;
    out.push_back(std::move(*m));
  }
  return out;
}

// Every test runs against each durable store (--store log, the default, and --store sqlite).
class Durability : public ::testing::TestWithParam<std::string> {
 protected:
  ServerOptions with_store(std::vector<std::string> args = {}) const {
    args.insert(args.begin(), {"--store", GetParam()});
    return with_args(std::move(args));
  }
  // The file or directory the store keeps its messages in, as start-up errors name it.
  std::string store_path() const { return GetParam() == "sqlite" ? "messages.db" : "/log"; }
};

// The payloads of the crash test: "m<index>".
std::string payload_of(std::size_t i) { return "m" + std::to_string(i); }

// B is offline; A pipelines 10,000 messages; the router, started with `flags`, is SIGKILLed
// part-way, at a random point, and restarted. B must then receive every message A got an
// acknowledgement for, exactly once and in order (messages the router stored but could not
// acknowledge before dying may arrive too).
void expect_nothing_acknowledged_lost_when_killed(const ServerOptions& flags) {
  constexpr std::size_t kMessages = 10'000;
  constexpr std::size_t kWindow = 256;
  std::mt19937 rng(20261125);
  for (int round = 0; round < 3; ++round) {
    SCOPED_TRACE("round " + std::to_string(round));
    ServerProcess server;
    ASSERT_TRUE(server.start(flags));
    const std::size_t kill_after = std::uniform_int_distribution<std::size_t>(500, kMessages - 500)(rng);
    std::set<std::size_t> acknowledged;
    {
      auto a = connect_client([&] {
        auto o = client_options(server, 1);
        o.reconnect = false;
        return o;
      }());
      ASSERT_NE(a, nullptr);
      std::deque<std::pair<std::size_t, std::future<SendResult>>> in_flight;
      bool killed = false;
      for (std::size_t i = 0; i < kMessages || !in_flight.empty();) {
        if (i < kMessages && !killed && in_flight.size() < kWindow) {
          in_flight.emplace_back(i, a->send(2, payload_of(i)));
          ++i;
          continue;
        }
        if (in_flight.empty()) break;
        auto [index, future] = std::move(in_flight.front());
        in_flight.pop_front();
        auto result = await(std::move(future));
        if (result.status == SendStatus::Accepted) {
          acknowledged.insert(index);
        } else {
          ASSERT_TRUE(killed) << "message " << index << " failed before the kill: " << describe(result);
        }
        if (!killed && acknowledged.size() >= kill_after) {
          server.stop(SIGKILL);
          killed = true;
          // Replies that had arrived count; the rest will never come (a dead router sends no
          // close), so they are not waited for.
          for (auto& [pending_index, pending] : in_flight) {
            if (pending.wait_for(std::chrono::seconds(0)) == std::future_status::ready &&
                pending.get().status == SendStatus::Accepted) {
              acknowledged.insert(pending_index);
            }
          }
          break;
        }
      }
      ASSERT_TRUE(killed);
      in_flight.clear();
    }
    ASSERT_TRUE(server.start(flags));
    auto b = connect_client(server, 2);
    ASSERT_NE(b, nullptr);
    auto received = drain(*b, std::chrono::milliseconds(3000));
    std::size_t previous = 0;
    bool first = true;
    std::set<std::size_t> got;
    for (const Message& m : received) {
      ASSERT_EQ(m.sender, 1);
      std::size_t index = std::stoul(std::string(m.text().substr(1)));
      ASSERT_TRUE(first || index > previous) << "out of order or duplicate: " << index << " after " << previous;
      first = false;
      previous = index;
      got.insert(index);
    }
    for (std::size_t index : acknowledged) ASSERT_TRUE(got.count(index)) << "acknowledged message " << index << " lost";
    EXPECT_GE(got.size(), acknowledged.size());
  }
}

TEST_P(Durability, NothingAcknowledgedIsLostWhenTheRouterIsKilled) {
  expect_nothing_acknowledged_lost_when_killed(with_store());
}

// The same across segments of 64 KiB, about 15 of them new files made while B is offline, so that
// the kill finds new segment files in every state of their making (docs/architecture.md, "Reusing
// segment files").
TEST(LogDurability, NothingAcknowledgedIsLostWhenTheRouterIsKilledAcrossSegments) {
  expect_nothing_acknowledged_lost_when_killed(with_args({"--store", "log", "--log-segment-bytes", "65536"}));
}

// Compaction in the router, end to end: with segments of 64 KiB, messages held for an offline
// recipient are copied forward (on the compaction thread, through the loop) while traffic fills and
// empties the segments around them, and reach the recipient intact, in order, after a restart.
TEST(LogDurability, MessagesForAnOfflineRecipientSurviveCompaction) {
  ServerProcess server;
  const ServerOptions flags =
      with_args({"--store", "log", "--log-segment-bytes", "65536", "--metrics-listen", "127.0.0.1:0"});
  ASSERT_TRUE(server.start(flags));
  auto a = connect_client(server, 1);
  auto c = connect_client(server, 3);
  ASSERT_TRUE(a && c);
  std::vector<std::string> for_b;
  for (int k = 0; k < 5; ++k) {
    for_b.push_back("for b " + std::to_string(k) + std::string(300, static_cast<char>('a' + k)));
    ASSERT_EQ(await(a->send(2, for_b.back())).status, SendStatus::Accepted);
  }
  // Traffic that C takes at once, until compaction has run (a segment must have been closed 2 s).
  const std::string filler(1000, 'f');
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
  double compactions = 0;
  while (compactions < 3 && std::chrono::steady_clock::now() < deadline) {
    for (int k = 0; k < 50; ++k) ASSERT_EQ(await(a->send(3, filler)).status, SendStatus::Accepted);
    ASSERT_EQ(drain(*c, std::chrono::milliseconds(5000), 50).size(), 50u);  // returns once 50 arrived
    auto page = scrape_metrics(server);
    ASSERT_TRUE(page) << page.error().message;
    compactions = page->value("debra_store_compactions_total");
  }
  ASSERT_GE(compactions, 3) << "compaction did not run";
  a.reset();
  c.reset();
  server.stop();
  ASSERT_TRUE(server.start(flags));
  auto b = connect_client(server, 2);
  ASSERT_NE(b, nullptr);
  std::vector<std::string> got;
  for (const Message& m : drain(*b, std::chrono::milliseconds(1000))) got.emplace_back(m.text());
  EXPECT_EQ(got, for_b);
}

TEST_P(Durability, UnacknowledgedMessagesAreRedeliveredAfterAReconnect) {
  ServerProcess server;
  ASSERT_TRUE(server.start(with_store()));
  auto a = connect_client(server, 1);
  ASSERT_NE(a, nullptr);
  ASSERT_EQ(await(a->send(2, "first")).status, SendStatus::Accepted);
  ASSERT_EQ(await(a->send(2, "second")).status, SendStatus::Accepted);
  {
    auto options = client_options(server, 2);
    options.auto_acknowledge = false;
    auto b = connect_client(options);
    ASSERT_NE(b, nullptr);
    auto got = drain(*b, std::chrono::milliseconds(500), 2);
    ASSERT_EQ(got.size(), 2u);
    b->acknowledge(got[0]);  // only the first is taken
    b->close();
  }
  auto b = connect_client(server, 2);
  ASSERT_NE(b, nullptr);
  auto again = drain(*b, std::chrono::milliseconds(500));
  ASSERT_EQ(again.size(), 1u);
  EXPECT_EQ(again[0].text(), "second");
  b->close();
  auto b2 = connect_client(server, 2);
  ASSERT_NE(b2, nullptr);
  EXPECT_TRUE(drain(*b2, std::chrono::milliseconds(300)).empty()) << "acknowledged messages came back";
}

// The router hands a backlog over in steps of about 256 KiB, each resumed by the recipient's
// acknowledgement of the last (RouterLimits::fill_bytes): 2 MiB waiting for an offline recipient
// arrives whole and in order, with nothing else going on to wake the router.
TEST_P(Durability, ABacklogOfManyStepsArrivesWholeAndInOrder) {
  ServerProcess server;
  ASSERT_TRUE(server.start(with_store()));
  auto a = connect_client(server, 1);
  ASSERT_NE(a, nullptr);
  constexpr std::size_t kCount = 128;
  std::vector<std::future<SendResult>> sent;
  for (std::size_t i = 0; i < kCount; ++i) {
    std::vector<std::uint8_t> payload(16 * 1024, static_cast<std::uint8_t>(i));
    sent.push_back(a->send(2, payload));
  }
  for (auto& s : sent) ASSERT_EQ(await(std::move(s)).status, SendStatus::Accepted);
  auto b = connect_client(server, 2);
  ASSERT_NE(b, nullptr);
  auto got = drain(*b, std::chrono::milliseconds(2000), kCount);
  ASSERT_EQ(got.size(), kCount);
  for (std::size_t i = 0; i < kCount; ++i) {
    ASSERT_EQ(got[i].payload.size(), 16u * 1024) << "message " << i;
    EXPECT_EQ(got[i].payload.front(), static_cast<std::uint8_t>(i)) << "message " << i;
    EXPECT_EQ(got[i].payload.back(), static_cast<std::uint8_t>(i)) << "message " << i;
  }
  EXPECT_TRUE(drain(*b, std::chrono::milliseconds(200)).empty()) << "something came twice";
}

TEST_P(Durability, RetriesWithTheSameMessageIdAreDeliveredOnce) {
  ServerProcess server;
  ASSERT_TRUE(server.start(with_store()));
  auto a = connect_client(server, 1);
  ASSERT_NE(a, nullptr);
  SendOptions same;
  same.message_id = 0xfeed0001;
  for (int attempt = 0; attempt < 3; ++attempt) {
    auto result = await(a->send(2, "only once", same));
    ASSERT_EQ(result.status, SendStatus::Accepted) << describe(result);
    EXPECT_EQ(result.message_id, same.message_id);
  }
  ASSERT_EQ(await(a->send(2, "next")).status, SendStatus::Accepted);
  auto b = connect_client(server, 2);
  ASSERT_NE(b, nullptr);
  auto got = drain(*b, std::chrono::milliseconds(500));
  ASSERT_EQ(got.size(), 2u);
  EXPECT_EQ(got[0].text(), "only once");
  EXPECT_EQ(got[0].message_id, same.message_id);
  EXPECT_EQ(got[1].text(), "next");
}

TEST_P(Durability, TheRetryOfAMessageLostWithTheRouterIsDeliveredOnce) {
  // The sender cannot know whether a message whose reply never came was stored: it resends with the
  // same id after the router restarts, and the recipient gets it once either way.
  ServerProcess server;
  ASSERT_TRUE(server.start(with_store()));
  SendOptions same;
  same.message_id = 77;
  {
    auto a = connect_client(server, 1);
    ASSERT_NE(a, nullptr);
    ASSERT_EQ(await(a->send(2, "maybe lost", same)).status, SendStatus::Accepted);
  }
  server.stop(SIGKILL);
  ASSERT_TRUE(server.start(with_store()));
  auto a = connect_client(server, 1);
  ASSERT_NE(a, nullptr);
  ASSERT_EQ(await(a->send(2, "maybe lost", same)).status, SendStatus::Accepted);
  auto b = connect_client(server, 2);
  ASSERT_NE(b, nullptr);
  EXPECT_EQ(drain(*b, std::chrono::milliseconds(500)).size(), 1u);
}

TEST_P(Durability, QuotaRefusesWithAClearReplyAndFreesOnAcknowledgement) {
  ServerProcess server;
  ASSERT_TRUE(server.start(with_store({"--inbox-max-messages", "3"})));
  auto a = connect_client(server, 1);
  ASSERT_NE(a, nullptr);
  for (int i = 0; i < 3; ++i) ASSERT_EQ(await(a->send(2, "fits")).status, SendStatus::Accepted);
  auto full = await(a->send(2, "too many"));
  ASSERT_EQ(full.status, SendStatus::Rejected) << describe(full);
  EXPECT_EQ(full.error_code, kQuotaExceeded);
  EXPECT_NE(full.reason.find("quota"), std::string::npos) << full.reason;
  // Other recipients are not affected.
  EXPECT_EQ(await(a->send(3, "elsewhere")).status, SendStatus::Accepted);
  {
    auto b = connect_client(server, 2);
    ASSERT_NE(b, nullptr);
    EXPECT_EQ(drain(*b, std::chrono::milliseconds(500)).size(), 3u);
    b->close();  // acknowledgements are sent before the close
  }
  EXPECT_EQ(await(a->send(2, "room again")).status, SendStatus::Accepted);
}

TEST_P(Durability, ExpiredMessagesAreDroppedAndReportedToSendersThatAskedForAReceipt) {
  ServerProcess server;
  ASSERT_TRUE(server.start(with_store({"--message-ttl", "1"})));
  auto a = connect_client(server, 1);
  ASSERT_NE(a, nullptr);
  std::promise<Receipt> receipt;
  auto receipt_future = receipt.get_future();
  SendOptions options;
  options.on_receipt = [&receipt](const Receipt& r) { receipt.set_value(r); };
  ASSERT_EQ(await(a->send(2, "too late", options)).status, SendStatus::Accepted);
  ASSERT_EQ(receipt_future.wait_for(std::chrono::seconds(10)), std::future_status::ready);
  auto r = receipt_future.get();
  EXPECT_FALSE(r.delivered);
  EXPECT_EQ(r.recipient, 2);
  auto b = connect_client(server, 2);
  ASSERT_NE(b, nullptr);
  EXPECT_TRUE(drain(*b, std::chrono::milliseconds(300)).empty());
  EXPECT_NE(server.stderr_text().find("expired"), std::string::npos);
}

TEST_P(Durability, DeliveryReceiptArrivesWhenTheRecipientAcknowledges) {
  ServerProcess server;
  ASSERT_TRUE(server.start(with_store()));
  auto a = connect_client(server, 1);
  ASSERT_NE(a, nullptr);
  std::promise<Receipt> receipt;
  auto receipt_future = receipt.get_future();
  SendOptions options;
  options.on_receipt = [&receipt](const Receipt& r) { receipt.set_value(r); };
  auto sent = await(a->send(2, "tell me", options));
  ASSERT_EQ(sent.status, SendStatus::Accepted);
  EXPECT_EQ(receipt_future.wait_for(std::chrono::milliseconds(300)), std::future_status::timeout)
      << "a receipt before the recipient took the message";
  auto b_options = client_options(server, 2);
  b_options.auto_acknowledge = false;
  auto b = connect_client(b_options);
  ASSERT_NE(b, nullptr);
  auto m = b->receive(std::chrono::seconds(5));
  ASSERT_TRUE(m.has_value());
  b->acknowledge(*m);
  ASSERT_EQ(receipt_future.wait_for(std::chrono::seconds(5)), std::future_status::ready);
  auto r = receipt_future.get();
  EXPECT_TRUE(r.delivered);
  EXPECT_EQ(r.message_id, sent.message_id);
  EXPECT_EQ(r.recipient, 2);
}

TEST_P(Durability, OfflineLegacyRecipientGetsItsMessagesWhenItConnects) {
  ServerProcess server;
  ASSERT_TRUE(server.start(with_store()));
  auto a = connect_client(server, 1);
  ASSERT_NE(a, nullptr);
  for (int i = 0; i < 3; ++i) ASSERT_EQ(await(a->send(5, "for legacy " + std::to_string(i))).status, SendStatus::Accepted);
  {
    auto b = connect_client(server, 5, Protocol::Legacy);
    ASSERT_NE(b, nullptr);
    auto got = drain(*b, std::chrono::milliseconds(500));
    ASSERT_EQ(got.size(), 3u);
    for (int i = 0; i < 3; ++i) EXPECT_EQ(got[static_cast<std::size_t>(i)].text(), "for legacy " + std::to_string(i));
    b->close();
  }
  // Delivered means acknowledged by QUIC for a legacy client: nothing comes back.
  auto b = connect_client(server, 5, Protocol::Legacy);
  ASSERT_NE(b, nullptr);
  EXPECT_TRUE(drain(*b, std::chrono::milliseconds(300)).empty());
}

// Mounts a small tmpfs over the server's data dir for the test's lifetime.
class SmallDisk {
 public:
  SmallDisk(const std::string& dir, const char* size) : dir_(dir) {
    std::string options = std::string("size=") + size;
    mounted_ = mount("tmpfs", dir.c_str(), "tmpfs", 0, options.c_str()) == 0;
    if (!mounted_) error_ = std::strerror(errno);
  }
  ~SmallDisk() {
    if (mounted_) umount2(dir_.c_str(), MNT_DETACH);
  }
  bool mounted() const { return mounted_; }
  const std::string& error() const { return error_; }
  bool remount(bool read_only, const char* size = nullptr) {
    unsigned long flags = MS_REMOUNT;
    if (read_only) flags |= MS_RDONLY;
    const std::string options = size == nullptr ? std::string() : std::string("size=") + size;
    return mount("tmpfs", dir_.c_str(), "tmpfs", flags, size == nullptr ? nullptr : options.c_str()) == 0;
  }

 private:
  std::string dir_;
  bool mounted_ = false;
  std::string error_;
};

TEST_P(Durability, AFullDiskRefusesNewMessagesAndLosesNoAcceptedOne) {
  ServerProcess server;
  SmallDisk disk(server.data_dir(), "1m");
  if (!disk.mounted()) GTEST_SKIP() << "cannot mount a tmpfs (needs root): " << disk.error();
  ASSERT_TRUE(server.start(with_store()));
  auto a = connect_client(server, 1);
  ASSERT_NE(a, nullptr);
  std::vector<std::uint8_t> payload(32 * 1024, 0x42);
  std::vector<std::size_t> accepted;
  std::size_t refused = 0;
  for (std::size_t i = 0; i < 64 && refused < 3; ++i) {
    payload[0] = static_cast<std::uint8_t>(i);
    auto result = await(a->send(2, payload));
    if (result.status == SendStatus::Accepted) {
      accepted.push_back(i);
      continue;
    }
    ASSERT_EQ(result.status, SendStatus::Rejected) << describe(result);
    EXPECT_EQ(result.error_code, kStoreUnavailable) << describe(result);
    EXPECT_FALSE(result.reason.empty());
    ++refused;
  }
  ASSERT_GT(refused, 0u) << "1 MiB of disk held 64 x 32 KiB";
  ASSERT_FALSE(accepted.empty());
  // The router still serves everyone: the recipient gets every accepted message, in order.
  auto b = connect_client(server, 2);
  ASSERT_NE(b, nullptr);
  auto got = drain(*b, std::chrono::milliseconds(1000));
  ASSERT_EQ(got.size(), accepted.size());
  for (std::size_t k = 0; k < got.size(); ++k) EXPECT_EQ(got[k].payload[0], static_cast<std::uint8_t>(accepted[k]));
  // Its acknowledgements, on the full disk, did not stop the store: with room again, it takes
  // messages and delivers them.
  ASSERT_TRUE(disk.remount(false, "8m")) << std::strerror(errno);
  auto after = await(a->send(2, "room again"));
  ASSERT_EQ(after.status, SendStatus::Accepted) << describe(after);
  auto later = drain(*b, std::chrono::milliseconds(500));
  ASSERT_EQ(later.size(), 1u);
  EXPECT_EQ(later[0].text(), "room again");
  b->close();
  auto exit = server.stop();
  EXPECT_EQ(exit.exit_code(), 0) << exit.describe();
}

// A filesystem cannot be made read-only under a router that holds its store open for writing (the
// kernel refuses with EBUSY), so the case to cover is a router started on one: it must refuse to
// start, saying why, rather than accept messages it cannot keep.
TEST_P(Durability, ARouterOnAReadOnlyDiskRefusesToStart) {
  ServerProcess server;
  SmallDisk disk(server.data_dir(), "8m");
  if (!disk.mounted()) GTEST_SKIP() << "cannot mount a tmpfs (needs root): " << disk.error();
  ASSERT_TRUE(server.start(with_store()));
  {
    auto a = connect_client(server, 1);
    ASSERT_NE(a, nullptr);
    ASSERT_EQ(await(a->send(2, "kept")).status, SendStatus::Accepted);
  }
  ASSERT_EQ(server.stop().exit_code(), 0);
  ASSERT_TRUE(disk.remount(true)) << std::strerror(errno);
  // Started by hand: the fixture keeps its logs in the data dir, which cannot be written now.
  std::string command = std::string("timeout 10 ") + DEBRA_SERVER_BIN + " --listen 127.0.0.1:0 --store " + GetParam() +
                        " --data-dir " + server.data_dir() + " 2>&1";
  FILE* pipe = popen(command.c_str(), "r");
  ASSERT_NE(pipe, nullptr);
  std::string output;
  char buffer[512];
  while (std::fgets(buffer, sizeof buffer, pipe) != nullptr) output += buffer;
  int status = pclose(pipe);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) != 0 && WEXITSTATUS(status) != 124)
      << "status " << status << ": " << output;
  EXPECT_EQ(output.find("ready"), std::string::npos) << output;
  EXPECT_NE(output.find(store_path()), std::string::npos) << output;
  // Writable again: the message accepted before is still there.
  ASSERT_TRUE(disk.remount(false)) << std::strerror(errno);
  ASSERT_TRUE(server.start(with_store()));
  auto b = connect_client(server, 2);
  ASSERT_NE(b, nullptr);
  auto got = drain(*b, std::chrono::milliseconds(500));
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(got[0].text(), "kept");
  b->close();
  server.stop();
}

TEST_P(Durability, CliSendWaitsForTheReceiptAndListenAcknowledgesWhatItPrinted) {
  ServerProcess server;
  ASSERT_TRUE(server.start(with_store()));
  const std::vector<std::string> common{"--server", server.address(), "--ca", server.ca_file()};
  auto args = [&](std::vector<std::string> more) {
    more.insert(more.end(), common.begin(), common.end());
    return more;
  };
  auto no_receipt = run_cli(args({"send", "--id", "1", "--to", "2", "--receipt", "--timeout", "1", "hello"}));
  EXPECT_NE(no_receipt.exit_code, 0) << no_receipt.describe();
  EXPECT_NE(no_receipt.err.find("receipt"), std::string::npos) << no_receipt.describe();
  auto listen = run_cli(args({"listen", "--id", "2", "--count", "1", "--timeout", "5"}));
  EXPECT_EQ(listen.exit_code, 0) << listen.describe();
  EXPECT_EQ(listen.out, "1\thello\n");
  auto again = run_cli(args({"listen", "--id", "2", "--timeout", "1"}));
  EXPECT_EQ(again.exit_code, 0) << again.describe();
  EXPECT_EQ(again.out, "") << "listen did not acknowledge what it printed";
}

// The two stores share no files. A router moved to the message log (the default) must not leave
// behind, unseen, the messages an earlier run on SQLite accepted: it refuses to start, naming them.
TEST(StoreChoice, TheLogRefusesToStartOverSqliteMessagesNotYetDelivered) {
  ServerProcess server;
  ASSERT_TRUE(server.start(with_args({"--store", "sqlite"})));
  {
    auto a = connect_client(server, 1);
    ASSERT_NE(a, nullptr);
    ASSERT_EQ(await(a->send(2, "waiting in sqlite")).status, SendStatus::Accepted);
  }
  ASSERT_EQ(server.stop().exit_code(), 0);
  EXPECT_FALSE(server.start());
  EXPECT_NE(server.stderr_text().find("messages.db holds 1 undelivered messages from --store sqlite"),
            std::string::npos)
      << server.stderr_text();
  ASSERT_TRUE(server.start(with_args({"--store", "sqlite"})));
  auto b = connect_client(server, 2);
  ASSERT_NE(b, nullptr);
  auto got = drain(*b, std::chrono::milliseconds(500));
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(got[0].text(), "waiting in sqlite");
}

INSTANTIATE_TEST_SUITE_P(Store, Durability, ::testing::Values("log", "sqlite"),
                         [](const ::testing::TestParamInfo<std::string>& store) { return store.param; });

}  // namespace
}  // namespace debra::testing
