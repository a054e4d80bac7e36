// SPDX-License-Identifier: MIT
//
// Abuse limits (#4) as a client sees them.
#include <debra/client.h>
#include <gtest/gtest.h>

#include <atomic>
#include <future>
#include <mutex>
#include <regex>
#include <string>
#include <vector>

#include "metrics_scrape.h"
#include "raw_client.h"
#include "server_process.h"
#include "test_support.h"
#include "udp_relay.h"

namespace debra::testing {
namespace {

constexpr std::uint16_t kRateLimited = static_cast<std::uint16_t>(wire::ErrorCode::RateLimited);

std::vector<SendResult> await_all(std::vector<std::future<SendResult>>& futures) {
  std::vector<SendResult> results;
  for (auto& future : futures) results.push_back(await(std::move(future)));
  futures.clear();
  return results;
}

// Receives until `count` messages arrived (bounded), then checks that nothing more comes.
std::vector<Message> receive_exactly(Client& client, std::size_t count, std::chrono::milliseconds timeout = 20s) {
  std::vector<Message> got;
  auto deadline = std::chrono::steady_clock::now() + timeout;
  while (got.size() < count && std::chrono::steady_clock::now() < deadline) {
    if (auto message = client.receive(100ms)) got.push_back(std::move(*message));
  }
  if (auto extra = client.receive(300ms)) {
    ADD_FAILURE() << "an unexpected message from " << extra->sender << ": " << extra->text();
  }
  return got;
}

// The N of "retry in N ms" in a RateLimited reason; -1 if there is none.
long retry_in_ms(const std::string& reason) {
  std::smatch match;
  if (!std::regex_search(reason, match, std::regex("retry in ([0-9]+) ms"))) return -1;
  return std::stol(match[1].str());
}

// A counter from the server's shutdown line, e.g. "17 legacy messages delayed"; -1 if absent.
long shutdown_count(const std::string& log, const std::string& what) {
  std::smatch match;
  if (!std::regex_search(log, match, std::regex("([0-9]+) " + what))) return -1;
  return std::stol(match[1].str());
}

::testing::AssertionResult is_rate_limited(const SendResult& result, const std::string& limit) {
  if (result.status != SendStatus::Rejected || result.error_code != kRateLimited) {
    return ::testing::AssertionFailure() << "expected Rejected(RateLimited), got " << describe(result);
  }
  if (result.reason.find("over the rate limit of " + limit) == std::string::npos || retry_in_ms(result.reason) <= 0) {
    return ::testing::AssertionFailure() << "the reason does not name the limit " << limit << " and the wait: "
                                         << result.reason;
  }
  // The same wait, for programs: Reply.retry_after_ms.
  if (result.retry_after.count() != retry_in_ms(result.reason)) {
    return ::testing::AssertionFailure() << "retry_after is " << result.retry_after.count() << " ms, the reason says "
                                         << result.reason;
  }
  return ::testing::AssertionSuccess();
}

TEST(LimitsIntegration, ConnectionsPerAddressAreBounded) {
  ServerProcess server;
  ASSERT_TRUE(server.start(with_args({"--max-connections-per-address", "2"})));
  auto a = connect_client(server, 1);
  auto b = connect_client(server, 2);
  ASSERT_TRUE(a && b);

  auto options = client_options(server, 3);
  options.connect_timeout = 3s;
  auto refused = Client::connect(options);
  ASSERT_FALSE(refused) << "a third connection from 127.0.0.1 was admitted";
  // CONNECTION_REFUSED is QUIC transport error 0x2.
  EXPECT_NE(refused.error().message.find("transport error 2"), std::string::npos) << refused.error().message;

  // The admitted pair is not disturbed.
  EXPECT_TRUE(exchange(*a, 1, *b, 2, "within the limit"));

  // A slot frees once a connection has closed (after its closing period).
  b->close();
  b.reset();
  std::unique_ptr<Client> c;
  auto deadline = std::chrono::steady_clock::now() + 5s;
  while (!c && std::chrono::steady_clock::now() < deadline) {
    auto attempt = Client::connect(options);
    if (attempt) c = std::move(*attempt);
  }
  ASSERT_TRUE(c) << "no slot freed after a client left";
  EXPECT_TRUE(exchange(*a, 1, *c, 3, "after a slot freed"));
}

// A QUIC long-header packet's type and source connection id (RFC 9000 §17.2); the type is -1 for
// anything else.
struct LongHeader {
  int type = -1;  // v1: 0 Initial, 2 Handshake, 3 Retry
  std::vector<std::uint8_t> scid;
};
LongHeader long_header(std::span<const std::uint8_t> packet) {
  LongHeader header;
  if (packet.size() < 7 || (packet[0] & 0x80) == 0) return header;
  std::size_t dcid_length = packet[5];
  std::size_t scid_at = 6 + dcid_length + 1;
  if (scid_at > packet.size() || scid_at + packet[scid_at - 1] > packet.size()) return header;
  header.type = (packet[0] & 0x30) >> 4;
  header.scid.assign(packet.begin() + static_cast<std::ptrdiff_t>(scid_at),
                     packet.begin() + static_cast<std::ptrdiff_t>(scid_at + packet[scid_at - 1]));
  return header;
}
constexpr int kRetryPacket = 3;

// The race behind clients refused at a per-address limit they did not exceed, played out step by
// step: a client's first Initial gets a Retry (the router is at its Retry threshold), the client
// retransmits that Initial before the Retry reaches it, the router, under the threshold by then,
// makes a connection of it, and then the client comes back with the Retry's token. The half-made
// connection holds the address's only slot; the router must let it go for the client that made
// it, not refuse that client for it.
TEST(LimitsIntegration, AClientBackFromARetryIsNotRefusedForTheConnectionItLeftBehind) {
  ServerProcess server;
  ASSERT_TRUE(server.start(with_args({"--retry-threshold", "1", "--max-connections-per-address", "1",
                                      "--metrics-listen", "127.0.0.1:0"})));

  // A handshake kept in progress from 127.0.0.2 (its answers are lost) keeps the router at its
  // threshold of 1, until the test lets the answers through.
  std::atomic<bool> blocker_answered = false;
  std::atomic<bool> let_blocker_finish = false;
  auto blocker_relay = UdpRelay::start(server.address(), "127.0.0.2", [&](UdpRelay::Direction to, auto) {
    if (to == UdpRelay::Direction::ToServer || let_blocker_finish) return UdpRelay::Verdict::Forward;
    blocker_answered = true;
    return UdpRelay::Verdict::Drop;
  });
  ASSERT_TRUE(blocker_relay) << blocker_relay.error().message;
  // Through a relay, the address is 127.0.0.x, not the name the certificate is for.
  auto through = [&](const UdpRelay& relay) {
    RawClientOptions options = raw_options(server);
    options.server = relay.address();
    options.server_name = "localhost";
    return options;
  };
  auto blocker = std::async(std::launch::async, [&] { return RawClient::connect(through(**blocker_relay)); });
  ASSERT_TRUE(wait_until([&] { return blocker_answered.load(); }, 5s)) << "the router never answered the blocker";

  // The client, from 127.0.0.1 through a relay that holds back the first Retry, drops later ones,
  // and drops every packet of the connection the router makes of a retransmitted Initial; seeing
  // that connection's first packet releases the Retry.
  enum class Stage { AwaitingRetry, AwaitingHalfMade, Released };
  std::mutex mutex;
  Stage stage = Stage::AwaitingRetry;
  std::vector<std::uint8_t> half_made_scid;
  std::atomic<UdpRelay*> client_relay_ptr = nullptr;  // set before the client sends anything
  auto client_relay = UdpRelay::start(server.address(), "127.0.0.1", [&](UdpRelay::Direction to, auto bytes) {
    if (to == UdpRelay::Direction::ToServer) return UdpRelay::Verdict::Forward;
    LongHeader header = long_header(bytes);
    std::lock_guard lock(mutex);
    if (header.type == kRetryPacket) {
      if (stage != Stage::AwaitingRetry) return UdpRelay::Verdict::Drop;
      stage = Stage::AwaitingHalfMade;
      return UdpRelay::Verdict::Hold;
    }
    if (stage == Stage::AwaitingHalfMade && header.type >= 0) {
      stage = Stage::Released;
      half_made_scid = header.scid;
      client_relay_ptr.load()->release_held();
      return UdpRelay::Verdict::Drop;
    }
    if (stage == Stage::Released && header.type >= 0 && header.scid == half_made_scid) return UdpRelay::Verdict::Drop;
    return UdpRelay::Verdict::Forward;
  });
  ASSERT_TRUE(client_relay) << client_relay.error().message;
  client_relay_ptr = client_relay->get();
  auto client = std::async(std::launch::async, [&] { return RawClient::connect(through(**client_relay)); });
  ASSERT_TRUE(wait_until(
      [&] {
        std::lock_guard lock(mutex);
        return stage != Stage::AwaitingRetry;
      },
      5s))
      << "the router sent the client no Retry";

  // The blocker completes; the client's next Initial, a retransmission, finds the router under its
  // threshold.
  let_blocker_finish = true;
  auto blocker_connection = blocker.get();
  ASSERT_TRUE(blocker_connection) << blocker_connection.error().message;
  auto connection = client.get();
  ASSERT_TRUE(connection) << connection.error().message;
  {
    std::lock_guard lock(mutex);
    ASSERT_EQ(stage, Stage::Released) << "the router made no connection of the retransmitted Initial";
  }
  EXPECT_TRUE((*connection)->retried());
  EXPECT_TRUE((*connection)->register_id(7));

  std::this_thread::sleep_for(300ms);  // the metrics page is rebuilt every 250 ms
  auto page = scrape_metrics(server);
  ASSERT_TRUE(page) << page.error().message;
  EXPECT_EQ(page->value("debra_abandoned_before_retry_total"), 1) << page->text;
  EXPECT_EQ(page->value("debra_connections_refused_total{reason=\"per_address\"}"), 0) << page->text;
}

// Streams are a fixed limit: the session stream and nothing else (docs/security.md, Limits).
TEST(LimitsIntegration, AClientMayOpenItsSessionStreamAndNoOther) {
  ServerProcess server;
  ASSERT_TRUE(server.start());
  for (bool native : {true, false}) {
    SCOPED_TRACE(native ? "native" : "legacy");
    auto raw = RawClient::connect(raw_options(server, native));
    ASSERT_TRUE(raw) << raw.error().message;
    EXPECT_EQ((*raw)->stream_limits().bidirectional, 1u);
    EXPECT_EQ((*raw)->stream_limits().unidirectional, 0u);
    EXPECT_TRUE((*raw)->second_stream_refused());
    EXPECT_TRUE((*raw)->register_id(native ? 1 : 2));
  }
}

// Rates are per second, so the tests pick limits whose refill is slow against what they do: a burst
// pipelined in milliseconds against one token per second, or a byte rate that would need seconds
// to refill a message. Every wait is bounded; the margins are hundreds of milliseconds at least.

TEST(LimitsIntegration, ANativeSenderOverItsRateIsRefusedWhileAnotherSendsOn) {
  ServerProcess server;
  ASSERT_TRUE(server.start(with_args({"--rate-messages", "1", "--rate-message-burst", "10"})));
  auto fast = connect_client(server, 1);
  auto steady = connect_client(server, 3);
  auto recipient = connect_client(server, 2);
  ASSERT_TRUE(fast && steady && recipient);

  std::vector<std::future<SendResult>> from_fast;
  std::vector<std::future<SendResult>> from_steady;
  for (int i = 0; i < 15; ++i) from_fast.push_back(fast->send(2, "fast " + std::to_string(i)));
  for (int i = 0; i < 10; ++i) from_steady.push_back(steady->send(2, "steady " + std::to_string(i)));
  auto fast_results = await_all(from_fast);
  auto steady_results = await_all(from_steady);
  // Exactly the burst passes; the next five are refused, each with the limit and the wait.
  for (int i = 0; i < 10; ++i) EXPECT_TRUE(fast_results[i].ok()) << "burst message " << i << ": " << describe(fast_results[i]);
  for (int i = 10; i < 15; ++i) EXPECT_TRUE(is_rate_limited(fast_results[i], "1 msgs/s (burst 10)")) << "message " << i;
  // Id 3 has buckets of its own.
  for (int i = 0; i < 10; ++i) EXPECT_TRUE(steady_results[i].ok()) << "id 3, message " << i << ": " << describe(steady_results[i]);
  EXPECT_TRUE(fast->connected());

  // The recipient gets the 20 accepted messages, in each sender's order, and none of the refused.
  auto got = receive_exactly(*recipient, 20);
  ASSERT_EQ(got.size(), 20u);
  int next_fast = 0;
  int next_steady = 0;
  for (const Message& m : got) {
    if (m.sender == 1) {
      EXPECT_EQ(m.text(), "fast " + std::to_string(next_fast++));
    } else {
      EXPECT_EQ(m.sender, 3);
      EXPECT_EQ(m.text(), "steady " + std::to_string(next_steady++));
    }
  }
  EXPECT_EQ(next_fast, 10);

  // The wait the router named is enough for one more message, and only one.
  long wait_ms = retry_in_ms(fast_results.back().reason);
  ASSERT_GT(wait_ms, 0);
  ASSERT_LE(wait_ms, 1000);
  std::this_thread::sleep_for(std::chrono::milliseconds(wait_ms) + 100ms);
  auto refilled = await(fast->send(2, "after the wait"));
  EXPECT_TRUE(refilled.ok()) << describe(refilled);
  EXPECT_TRUE(is_rate_limited(await(fast->send(2, "too soon again")), "1 msgs/s"));

  fast->close();
  auto exit = server.stop();
  EXPECT_EQ(exit.exit_code(), 0) << exit.describe();
  EXPECT_EQ(shutdown_count(server.stderr_text(), "messages refused for the rate limit"), 6) << server.stderr_text();
}

TEST(LimitsIntegration, TheBucketBelongsToTheIdAcrossReconnections) {
  ServerProcess server;
  // 100 bytes/s: three 1,000-byte messages empty the bucket, and refilling one takes 10 s.
  ASSERT_TRUE(server.start(with_args({"--rate-bytes", "100", "--rate-byte-burst", "3000"})));
  const std::string kilobyte(1000, 'k');
  {
    auto first = connect_client(server, 1);
    ASSERT_TRUE(first);
    for (int i = 0; i < 3; ++i) ASSERT_TRUE(await(first->send(2, kilobyte)).ok()) << "message " << i;
    first->close();
  }
  // A new connection of id 1 finds the bucket as the old one left it.
  auto again = connect_client(server, 1);
  ASSERT_TRUE(again);
  auto refused = await(again->send(2, kilobyte));
  EXPECT_TRUE(is_rate_limited(refused, "100 bytes/s (burst 3000)"));
  EXPECT_GT(retry_in_ms(refused.reason), 5000) << refused.reason;
  again->close();

  // Another id is not affected.
  auto other = connect_client(server, 4);
  ASSERT_TRUE(other);
  EXPECT_TRUE(await(other->send(2, kilobyte)).ok());

  // The CLI says why and fails.
  auto cli = run_cli({"send", "--server", server.address(), "--ca", server.ca_file(), "--id", "1", "--to", "2", kilobyte});
  EXPECT_NE(cli.exit_code, 0) << cli.describe();
  EXPECT_NE(cli.err.find("over the rate limit of 100 bytes/s (burst 3000); retry in"), std::string::npos)
      << cli.describe();

  // So does chat: id 5's bucket holds three of these lines, and the fourth is refused.
  auto chat = run_cli({"chat", "--server", server.address(), "--ca", server.ca_file(), "--id", "5", "--to", "2"}, 30s,
                      kilobyte + "\n" + kilobyte + "\n" + kilobyte + "\n" + kilobyte + "\n");
  EXPECT_EQ(chat.exit_code, 0) << chat.describe();
  std::size_t refusals = 0;
  for (std::size_t at = 0; (at = chat.out.find("* not delivered: ", at)) != std::string::npos; ++at) ++refusals;
  EXPECT_EQ(refusals, 1u) << chat.describe();
  EXPECT_NE(chat.out.find("* not delivered: rejected: over the rate limit of 100 bytes/s"), std::string::npos)
      << chat.describe();
}

TEST(LimitsIntegration, ALegacySenderOverItsRateIsSlowedDownAndLosesNothing) {
  constexpr int kMessages = 50;
  ServerProcess server;
  // 40 messages beyond the burst at 20/s: the router cannot take them all in under 2 s.
  ASSERT_TRUE(server.start(with_args({"--rate-messages", "20", "--rate-message-burst", "10"})));
  auto recipient = connect_client(server, 2);
  auto native = connect_client(server, 3);
  ASSERT_TRUE(recipient && native);
  auto legacy = connect_client(server, 1, Protocol::Legacy);
  ASSERT_TRUE(legacy);

  auto start = std::chrono::steady_clock::now();
  std::vector<std::future<SendResult>> sends;
  for (int i = 0; i < kMessages; ++i) sends.push_back(legacy->send(2, "legacy " + std::to_string(i)));
  for (auto& result : await_all(sends)) EXPECT_TRUE(result.ok()) << describe(result);  // written, as legacy goes

  // While the legacy sender waits for its bucket, another sender is not held up.
  std::this_thread::sleep_for(200ms);
  auto before = std::chrono::steady_clock::now();
  auto unaffected = await(native->send(2, "native meanwhile"));
  EXPECT_TRUE(unaffected.ok()) << describe(unaffected);
  EXPECT_LT(std::chrono::steady_clock::now() - before, 1s);

  auto got = receive_exactly(*recipient, kMessages + 1);
  auto elapsed = std::chrono::steady_clock::now() - start;
  int next = 0;
  for (const Message& m : got) {
    if (m.sender == 3) continue;
    ASSERT_EQ(m.sender, 1);
    EXPECT_EQ(m.text(), "legacy " + std::to_string(next++));
  }
  EXPECT_EQ(next, kMessages) << "every legacy message arrives, in order";
  EXPECT_GE(elapsed, 1900ms) << "the legacy sender was not slowed down to 20 msgs/s";

  legacy->close();
  auto exit = server.stop();
  EXPECT_EQ(exit.exit_code(), 0) << exit.describe();
  const std::string log = server.stderr_text();
  long delayed = shutdown_count(log, "legacy messages delayed");
  EXPECT_GE(delayed, 1) << log;
  EXPECT_LE(delayed, kMessages - 10) << log;
  EXPECT_EQ(shutdown_count(log, "messages refused for the rate limit"), 0) << log;
  EXPECT_NE(log.find("delaying a legacy sender"), std::string::npos) << log;
}

// A legacy sender counts a message as sent once the router's QUIC stack has acknowledged it, and may
// close right then: what the router holds for the rate limit is taken at the close, not dropped,
// and the id pays for it afterwards.
TEST(LimitsIntegration, ALegacySenderThatClosesAtOnceLosesNothingAndPaysLater) {
  constexpr int kMessages = 40;
  ServerProcess server;
  ASSERT_TRUE(server.start(with_args({"--rate-messages", "10", "--rate-message-burst", "10"})));
  auto recipient = connect_client(server, 2);
  ASSERT_TRUE(recipient);
  {
    auto legacy = connect_client(server, 1, Protocol::Legacy);
    ASSERT_TRUE(legacy);
    std::vector<std::future<SendResult>> sends;
    for (int i = 0; i < kMessages; ++i) sends.push_back(legacy->send(2, "legacy " + std::to_string(i)));
    for (auto& result : await_all(sends)) EXPECT_TRUE(result.ok()) << describe(result);
    legacy->close();  // returns once the router's QUIC stack has every byte, long before 3 s of rate
  }
  auto got = receive_exactly(*recipient, kMessages, 10s);
  ASSERT_EQ(got.size(), static_cast<std::size_t>(kMessages));
  for (int i = 0; i < kMessages; ++i) {
    EXPECT_EQ(got[i].sender, 1);
    EXPECT_EQ(got[i].text(), "legacy " + std::to_string(i));
  }
  // The 30 beyond the burst were charged: id 1 is in debt for about 3 s, whatever it connects with.
  auto native = connect_client(server, 1);
  ASSERT_TRUE(native);
  auto refused = await(native->send(2, "after the debt"));
  EXPECT_TRUE(is_rate_limited(refused, "10 msgs/s (burst 10)"));
  EXPECT_GT(retry_in_ms(refused.reason), 500) << refused.reason;
}

// The delay reaches the legacy sender's QUIC stack: the router stops giving it credit, so bytes
// beyond its receive window stay with the sender rather than piling up in the router.
TEST(LimitsIntegration, ALegacySenderOverItsRateIsHeldBackByFlowControl) {
  constexpr std::uint32_t kFrame = 65536;
  constexpr std::uint64_t kMaxReceiveWindow = 16u * 1024 * 1024;  // TransportSettings::max_stream_window
  constexpr int kMessages = 400;                                   // ~25 MiB: well beyond it
  ServerProcess server;
  ASSERT_TRUE(server.start(with_args({"--max-frame-size", std::to_string(kFrame), "--rate-messages", "0",
                                      "--rate-bytes", "65536", "--rate-byte-burst", "65536"})));
  auto recipient = connect_client(server, 2);
  ASSERT_TRUE(recipient);
  auto raw = RawClient::connect(raw_options(server, /*native=*/false));
  ASSERT_TRUE(raw) << raw.error().message;
  RawClient& legacy = **raw;
  ASSERT_TRUE(legacy.register_id(1));

  std::vector<std::uint8_t> payload(max_payload(kFrame, 1, 2, 0));
  std::uint64_t total = 0;
  for (int i = 0; i < kMessages; ++i) {
    for (std::size_t k = 0; k < payload.size(); ++k) payload[k] = static_cast<std::uint8_t>(i + k);
    auto frame = wire::encode_client_to_client(1, 2, 0, payload);
    total += frame.size();
    legacy.send(std::move(frame));
  }
  std::this_thread::sleep_for(3s);
  // About one message a second is consumed; the rest of what the router has is at most a window.
  std::uint64_t acknowledged = legacy.acknowledged_bytes();
  EXPECT_LT(acknowledged, kMaxReceiveWindow + 8 * kFrame) << "of " << total << " bytes sent";
  EXPECT_GT(acknowledged, 0u);

  // Held back, not stuck: messages keep arriving, intact and in order, at the byte rate.
  for (int i = 0; i < 3; ++i) {
    auto message = recipient->receive(5s);
    ASSERT_TRUE(message) << "message " << i;
    EXPECT_EQ(message->sender, 1);
    ASSERT_EQ(message->payload.size(), payload.size());
    EXPECT_EQ(message->payload[0], static_cast<std::uint8_t>(i));
    EXPECT_EQ(message->payload.back(), static_cast<std::uint8_t>(i + payload.size() - 1));
  }
  EXPECT_FALSE(legacy.closed());
  auto exit = server.stop();
  EXPECT_EQ(exit.exit_code(), 0) << exit.describe();
}

TEST(LimitsIntegration, ZeroTurnsARateLimitOff) {
  ServerProcess server;
  // The bursts would refuse the second message if the limits were on.
  ASSERT_TRUE(server.start(with_args(
      {"--rate-messages", "0", "--rate-message-burst", "1", "--rate-bytes", "0", "--rate-byte-burst", "1"})));
  auto sender = connect_client(server, 1);
  auto recipient = connect_client(server, 2);
  ASSERT_TRUE(sender && recipient);
  std::vector<std::future<SendResult>> sends;
  for (int i = 0; i < 200; ++i) sends.push_back(sender->send(2, std::string(1000, 'z')));
  for (auto& result : await_all(sends)) ASSERT_TRUE(result.ok()) << describe(result);
  EXPECT_EQ(receive_exactly(*recipient, 200).size(), 200u);
}

}  // namespace
}  // namespace debra::testing
