// SPDX-License-Identifier: MIT
//
// libdebra against the real router: chat, load, payload sizes, takeover, offline recipients, legacy
// mode, IPv6 and Retry.
#include <debra/client.h>
#include <gtest/gtest.h>

#include <atomic>
#include <condition_variable>
#include <cstdio>
#include <mutex>
#include <random>

#include "raw_client.h"
#include "server_process.h"
#include "test_support.h"

namespace debra::testing {
namespace {

TEST(ClientIntegration, ChatBothWays) {
  ServerProcess server;
  ASSERT_TRUE(server.start());
  auto alice = connect_client(server, 1);
  auto bob = connect_client(server, 2);
  ASSERT_TRUE(alice && bob);
  EXPECT_TRUE(alice->connected());
  EXPECT_TRUE(bob->connected());

  auto to_bob = await(alice->send(2, "hello bob"));
  ASSERT_EQ(to_bob.status, SendStatus::Accepted) << describe(to_bob);
  auto at_bob = bob->receive(10s);
  ASSERT_TRUE(at_bob);
  EXPECT_EQ(at_bob->sender, 1);
  EXPECT_EQ(at_bob->text(), "hello bob");
  EXPECT_EQ(at_bob->message_id, to_bob.message_id);  // native senders' ids travel with the message

  auto to_alice = await(bob->send(1, "hello alice"));
  ASSERT_EQ(to_alice.status, SendStatus::Accepted) << describe(to_alice);
  auto at_alice = alice->receive(10s);
  ASSERT_TRUE(at_alice);
  EXPECT_EQ(at_alice->sender, 2);
  EXPECT_EQ(at_alice->text(), "hello alice");
  EXPECT_EQ(at_alice->message_id, to_alice.message_id);
  EXPECT_NE(to_bob.message_id, to_alice.message_id);
}

// 50 clients each send 200 messages to random others: every message arrives exactly once, in each
// sender's order, from the router-stamped sender.
TEST(ClientIntegration, FanInFanOutLoad) {
  constexpr int kClients = 50;
  constexpr int kMessages = 200;
  constexpr int kTotal = kClients * kMessages;
  ServerProcess server;
  ASSERT_TRUE(server.start());

  struct Inbox {
    std::mutex mutex;
    std::vector<std::vector<int>> by_sender = std::vector<std::vector<int>>(kClients + 1);
    std::vector<std::string> problems;
  };
  std::vector<Inbox> inboxes(kClients + 1);
  std::mutex done_mutex;
  std::condition_variable done_cv;
  std::atomic<int> received{0};

  std::vector<std::unique_ptr<Client>> clients(kClients + 1);
  for (int id = 1; id <= kClients; ++id) {
    clients[id] = connect_client(server, id);
    ASSERT_TRUE(clients[id]) << "client " << id;
    Inbox& inbox = inboxes[id];
    clients[id]->set_message_handler([&inbox, &received, &done_mutex, &done_cv](Message message) {
      int sender = 0;
      int sequence = -1;
      std::string text(message.text());
      {
        std::lock_guard lock(inbox.mutex);
        if (std::sscanf(text.c_str(), "from %d seq %d", &sender, &sequence) != 2 || sender < 1 ||
            sender > kClients) {
          inbox.problems.push_back("unparseable payload: " + text);
        } else if (sender != message.sender) {
          inbox.problems.push_back("payload from " + std::to_string(sender) + " stamped " +
                                   std::to_string(message.sender));
        } else {
          inbox.by_sender[static_cast<std::size_t>(sender)].push_back(sequence);
        }
      }
      if (received.fetch_add(1) + 1 == kTotal) {
        std::lock_guard lock(done_mutex);
        done_cv.notify_all();
      }
    });
  }

  // expected[recipient][sender]: the sequence numbers in send order.
  std::vector<std::vector<std::vector<int>>> expected(kClients + 1, std::vector<std::vector<int>>(kClients + 1));
  std::vector<std::future<SendResult>> futures;
  futures.reserve(kTotal);
  std::mt19937 rng(20240611);
  std::uniform_int_distribution<int> pick(1, kClients - 1);
  for (int sequence = 0; sequence < kMessages; ++sequence) {
    for (int sender = 1; sender <= kClients; ++sender) {
      int recipient = pick(rng);
      if (recipient >= sender) ++recipient;  // anyone but the sender
      expected[recipient][sender].push_back(sequence);
      futures.push_back(clients[sender]->send(
          recipient, "from " + std::to_string(sender) + " seq " + std::to_string(sequence)));
    }
  }

  auto deadline = std::chrono::steady_clock::now() + 60s;
  int accepted = 0;
  std::string first_failure;
  for (auto& future : futures) {
    if (future.wait_until(deadline) != std::future_status::ready) break;
    auto result = future.get();
    if (result.ok()) {
      ++accepted;
    } else if (first_failure.empty()) {
      first_failure = describe(result);
    }
  }
  ASSERT_EQ(accepted, kTotal) << "first failure: " << first_failure;
  {
    std::unique_lock lock(done_mutex);
    done_cv.wait_until(lock, deadline, [&] { return received.load() >= kTotal; });
  }
  EXPECT_EQ(received.load(), kTotal);

  int mismatches = 0;
  for (int recipient = 1; recipient <= kClients; ++recipient) {
    Inbox& inbox = inboxes[recipient];
    std::lock_guard lock(inbox.mutex);
    EXPECT_TRUE(inbox.problems.empty()) << "recipient " << recipient << ": " << inbox.problems.front();
    for (int sender = 1; sender <= kClients; ++sender) {
      if (inbox.by_sender[sender] != expected[recipient][sender] && ++mismatches <= 5) {
        ADD_FAILURE() << "recipient " << recipient << " got " << inbox.by_sender[sender].size()
                      << " messages from " << sender << ", expected " << expected[recipient][sender].size()
                      << " in order";
      }
    }
  }
  EXPECT_EQ(mismatches, 0);
  for (int id = 1; id <= kClients; ++id) EXPECT_TRUE(clients[id]->connected()) << "client " << id;
  // Client::close() waits out the QUIC closing period (three PTOs, which grow with the RTT measured
  // under this load); closing the clients one by one would take seconds, so close them together.
  std::vector<std::thread> closers;
  for (int id = 1; id <= kClients; ++id) closers.emplace_back([&client = *clients[id]] { client.close(); });
  for (auto& closer : closers) closer.join();
}

TEST(ClientIntegration, PayloadSizesArriveIntact) {
  constexpr std::uint32_t kMaxFrame = 2'000'000;
  ServerProcess server;
  ASSERT_TRUE(server.start(with_args({"--max-frame-size", std::to_string(kMaxFrame)})));
  auto sender = connect_client(server, 11);
  auto recipient = connect_client(server, 12);
  ASSERT_TRUE(sender && recipient);
  ASSERT_EQ(sender->max_frame_size(), kMaxFrame);  // announced in the Welcome

  // The largest payload that fits the router's frame limit, by the real encoder.
  const std::size_t exact_max = max_payload(kMaxFrame, 11, 12, 0xffff'ffff'ffff'ffffULL);
  std::mt19937 rng(7);
  for (std::size_t size : {std::size_t{0}, std::size_t{1}, std::size_t{64 * 1024}, std::size_t{1024 * 1024},
                           exact_max}) {
    SCOPED_TRACE("payload of " + std::to_string(size) + " bytes");
    std::vector<std::uint8_t> payload(size);
    for (auto& byte : payload) byte = static_cast<std::uint8_t>(rng());
    auto result = await(sender->send(12, payload), 30s);
    ASSERT_EQ(result.status, SendStatus::Accepted) << describe(result);
    auto message = recipient->receive(30s);
    ASSERT_TRUE(message);
    EXPECT_EQ(message->sender, 11);
    EXPECT_EQ(message->message_id, result.message_id);
    EXPECT_TRUE(message->payload == payload) << "payload differs (" << message->payload.size() << " bytes arrived)";
  }

  // One byte more is refused by libdebra before it is sent (what the router does with such a frame
  // from a raw client is in ProtocolIntegration.ExactMaximumPayload).
  auto too_big = await(sender->send(12, std::vector<std::uint8_t>(exact_max + 1, 0x5a)));
  EXPECT_EQ(too_big.status, SendStatus::InvalidArgument) << describe(too_big);
  EXPECT_TRUE(sender->connected());
  // Nothing refused was delivered, and the connection still works.
  EXPECT_TRUE(deliver(*sender, 11, *recipient, 12, "still fine"));
}

TEST(ClientIntegration, RecipientOfflineWithoutAStore) {
  ServerProcess server;
  ASSERT_TRUE(server.start(with_args({"--store", "none"})));
  auto client = connect_client(server, 1);
  ASSERT_TRUE(client);
  auto result = await(client->send(424242, "anyone there?"));
  EXPECT_EQ(result.status, SendStatus::RecipientOffline) << describe(result);
  // Invalid recipients never leave the client.
  auto invalid = await(client->send(0, "nobody"));
  EXPECT_EQ(invalid.status, SendStatus::InvalidArgument) << describe(invalid);
  EXPECT_TRUE(client->connected());
}

TEST(ClientIntegration, TakeoverNewestWins) {
  ServerProcess server;
  ASSERT_TRUE(server.start());
  ConnectionEvents first_events;  // outlive the clients, whose handlers they serve
  ConnectionEvents second_events;
  auto options = client_options(server, 7);
  options.reconnect_initial_delay = 10ms;  // a wrongful reconnect would come quickly
  auto first = connect_client(options);
  ASSERT_TRUE(first);
  first_events.attach(*first);
  auto sender = connect_client(server, 1);
  ASSERT_TRUE(sender);
  ASSERT_TRUE(deliver(*sender, 1, *first, 7, "to the first"));

  auto second = connect_client(server, 7);
  ASSERT_TRUE(second);
  second_events.attach(*second);
  auto events = first_events.wait(1, 10s);
  ASSERT_EQ(events.size(), 1u);
  EXPECT_FALSE(events[0].first);
  EXPECT_NE(events[0].second.find("SessionTakenOver"), std::string::npos) << events[0].second;
  EXPECT_NE(first->last_disconnect_reason().find("SessionTakenOver"), std::string::npos)
      << first->last_disconnect_reason();
  EXPECT_FALSE(first->connected());

  // Messages for 7 now reach the newer connection.
  ASSERT_TRUE(deliver(*sender, 1, *second, 7, "to the second"));
  EXPECT_TRUE(deliver(*second, 7, *sender, 1, "from the second"));

  // A displaced client does not reconnect (which would displace the newer one in turn). A negative
  // check needs a quiet period: 300 ms is 30 times the first reconnect delay.
  std::this_thread::sleep_for(300ms);
  EXPECT_EQ(first_events.wait(1, 0ms).size(), 1u) << "the displaced client reconnected";
  EXPECT_TRUE(second_events.wait(0, 0ms).empty()) << "the newer client was disturbed";
  EXPECT_TRUE(second->connected());
  EXPECT_FALSE(first->receive(0ms)) << "the displaced client received a message";
}

TEST(ClientIntegration, LegacyAndNativeBothWays) {
  ServerProcess server;
  ASSERT_TRUE(server.start());
  auto legacy = connect_client(server, 5, Protocol::Legacy);
  auto native = connect_client(server, 6, Protocol::Native);
  ASSERT_TRUE(legacy && native);
  ASSERT_TRUE(confirm_registered(*native, 6, *legacy, 5));

  auto from_legacy = await(legacy->send(6, "from legacy"));
  ASSERT_EQ(from_legacy.status, SendStatus::Accepted) << describe(from_legacy);
  auto at_native = native->receive(10s);
  ASSERT_TRUE(at_native);
  EXPECT_EQ(at_native->sender, 5);
  EXPECT_EQ(at_native->text(), "from legacy");
  EXPECT_EQ(at_native->message_id, 0u);  // legacy senders have no message ids

  auto from_native = await(native->send(5, "from native"));
  ASSERT_EQ(from_native.status, SendStatus::Accepted) << describe(from_native);
  auto at_legacy = legacy->receive(10s);
  ASSERT_TRUE(at_legacy);
  EXPECT_EQ(at_legacy->sender, 6);
  EXPECT_EQ(at_legacy->text(), "from native");

  // Two legacy clients talk too.
  auto legacy2 = connect_client(server, 8, Protocol::Legacy);
  ASSERT_TRUE(legacy2);
  ASSERT_TRUE(confirm_registered(*native, 6, *legacy2, 8));
  EXPECT_TRUE(exchange(*legacy, 5, *legacy2, 8, "legacy pair"));
}

TEST(ClientIntegration, IPv6) {
  ServerProcess server;
  ASSERT_TRUE(server.start(listening_on("[::1]:0")));
  ASSERT_EQ(server.address().rfind("[::1]:", 0), 0u) << server.address();
  auto a = connect_client(server, 1);
  auto b = connect_client(server, 2);
  ASSERT_TRUE(a && b);
  EXPECT_TRUE(exchange(*a, 1, *b, 2, "over IPv6"));
  auto legacy = connect_client(server, 3, Protocol::Legacy);
  ASSERT_TRUE(legacy);
  ASSERT_TRUE(confirm_registered(*a, 1, *legacy, 3));
  EXPECT_TRUE(exchange(*a, 1, *legacy, 3, "legacy over IPv6"));
}

TEST(ClientIntegration, RetryAddressValidation) {
  ServerProcess server;
  ASSERT_TRUE(server.start(with_args({"--retry-threshold", "0"})));
  // The raw client proves a Retry happened: the router's transport parameters name the Retry's CID.
  auto raw = RawClient::connect(raw_options(server));
  ASSERT_TRUE(raw) << raw.error().message;
  EXPECT_TRUE((*raw)->retried());
  ASSERT_TRUE((*raw)->register_id(9));

  auto a = connect_client(server, 1);
  auto b = connect_client(server, 2);
  auto legacy = connect_client(server, 3, Protocol::Legacy);
  ASSERT_TRUE(a && b && legacy);
  ASSERT_TRUE(confirm_registered(*a, 1, *legacy, 3));
  EXPECT_TRUE(exchange(*a, 1, *b, 2, "after Retry"));
  EXPECT_TRUE(exchange(*a, 1, *legacy, 3, "legacy after Retry"));
  auto to_raw = await(a->send(9, "to raw"));
  EXPECT_EQ(to_raw.status, SendStatus::Accepted) << describe(to_raw);
  auto at_raw = (*raw)->wait_for(wire::MessageType::ClientToClient, 10s);
  ASSERT_TRUE(at_raw);
  EXPECT_EQ(at_raw->client_id, 1);
}

// Without --retry-threshold 0 a lone client is not asked to Retry (the control for the test above).
TEST(ClientIntegration, NoRetryByDefault) {
  ServerProcess server;
  ASSERT_TRUE(server.start());
  auto raw = RawClient::connect(raw_options(server));
  ASSERT_TRUE(raw) << raw.error().message;
  EXPECT_FALSE((*raw)->retried());
  EXPECT_EQ((*raw)->alpn(), "debra/1");
}

}  // namespace
}  // namespace debra::testing
