// SPDX-License-Identifier: MIT
//
// The QUIC transport as the network sees it: a relay between a raw client and the real router
// counts the datagrams each way, by size.
#include <gtest/gtest.h>

#include <atomic>
#include <cstdint>
#include <limits>
#include <memory>
#include <vector>

#include "raw_client.h"
#include "server_process.h"
#include "test_support.h"
#include "udp_relay.h"

namespace debra::testing {
namespace {

// Before Path MTU Discovery confirms more, QUIC packets are at most 1,200 bytes.
constexpr std::size_t kInitialPacketLimit = 1200;
// The most Path MTU discovery finds in ngtcp2 0.12; with --max-udp-payload at it, both ends discover
// the path even where its route (loopback here) carries more.
constexpr std::size_t kDiscoveryLimit = 1452;

// A router, a relay that counts the datagrams over 1,200 bytes each way (and drops those over
// path_limit_, as a narrower path would), and a raw client registered as id 7 through the relay,
// sending to itself so that both ends carry stream data. Both ends send at most max_udp_payload.
class ThroughRelay : public ::testing::Test {
 protected:
  void start(std::size_t path_limit = std::numeric_limits<std::size_t>::max(),
             std::size_t max_udp_payload = kDiscoveryLimit) {
    path_limit_ = path_limit;
    ASSERT_TRUE(server_.start(with_args({"--rate-messages", "0", "--rate-bytes", "0", "--max-udp-payload",
                                         std::to_string(max_udp_payload)})));
    auto relay = UdpRelay::start(server_.address(), "127.0.0.1", [this](UdpRelay::Direction to, auto bytes) {
      const bool to_server = to == UdpRelay::Direction::ToServer;
      std::atomic<std::size_t>& largest = to_server ? largest_to_server_ : largest_to_client_;
      if (bytes.size() > largest) largest = bytes.size();
      if (bytes.size() > path_limit_) {
        ++dropped_;
        return UdpRelay::Verdict::Drop;
      }
      if (bytes.size() > kInitialPacketLimit) ++(to_server ? large_to_server_ : large_to_client_);
      if (bytes.size() > kDiscoveryLimit) ++(to_server ? larger_to_server_ : larger_to_client_);
      return UdpRelay::Verdict::Forward;
    });
    ASSERT_TRUE(relay) << relay.error().message;
    relay_ = std::move(*relay);
    RawClientOptions options = raw_options(server_);
    options.server = relay_->address();
    options.server_name = "localhost";  // through the relay, the address is not the certificate's name
    options.max_udp_payload = max_udp_payload;
    auto client = RawClient::connect(options);
    ASSERT_TRUE(client) << client.error().message;
    client_ = std::move(*client);
    ASSERT_TRUE(client_->register_id(7));
  }

  // Sends one 16 KiB message to itself and waits for its delivery.
  ::testing::AssertionResult round_trip(std::chrono::milliseconds timeout) {
    client_->send(wire::encode_client_to_client(7, 7, ++message_id_, payload_));
    auto delivery = client_->wait_for(wire::MessageType::ClientToClient, timeout);
    if (!delivery) return ::testing::AssertionFailure() << "message " << message_id_ << " never arrived";
    if (delivery->message_id != message_id_ || delivery->payload != payload_) {
      return ::testing::AssertionFailure() << "message " << message_id_ << " arrived damaged or out of order";
    }
    return ::testing::AssertionSuccess();
  }
  // Round trips until Path MTU discovery has taken both ends past 1,200 bytes: true, or false after
  // timeout.
  bool discover(std::chrono::milliseconds timeout) {
    return wait_until([&] { return round_trip(2s) && large_to_server_ >= 40 && large_to_client_ >= 40; }, timeout);
  }

  const std::vector<std::uint8_t> payload_ = std::vector<std::uint8_t>(16 * 1024, 0x5a);
  std::uint64_t message_id_ = 0;
  // Declared before the relay, whose thread reads and counts into them until it stops.
  std::atomic<std::size_t> path_limit_ = std::numeric_limits<std::size_t>::max();
  std::atomic<int> large_to_server_ = 0;  // over 1,200 bytes
  std::atomic<int> large_to_client_ = 0;
  std::atomic<int> larger_to_server_ = 0;  // over 1,452 bytes
  std::atomic<int> larger_to_client_ = 0;
  std::atomic<std::size_t> largest_to_server_ = 0;  // dropped ones included
  std::atomic<std::size_t> largest_to_client_ = 0;
  std::atomic<int> dropped_ = 0;
  ServerProcess server_;
  std::unique_ptr<UdpRelay> relay_;
  std::unique_ptr<RawClient> client_;
};

// Path MTU Discovery must take both ends past 1,200-byte packets on a path that carries more
// (loopback carries 64 KiB): the router ran every connection's life at 1,200 bytes once, because
// it gave ngtcp2 no room to write the larger probe packets. ngtcp2 sends a few probes of each size
// it tries, so only many large datagrams each way show packets that carry data at the larger size.
TEST_F(ThroughRelay, PathMtuDiscoveryTakesPacketsPast1200BytesBothWays) {
  ASSERT_NO_FATAL_FAILURE(start());
  // 16 KiB messages to itself, so that both ends send stream data that fills packets, until 40
  // large datagrams went each way (about three messages' worth at 1,444 bytes).
  EXPECT_TRUE(discover(10s)) << "after " << message_id_ << " messages of 16 KiB: " << large_to_server_
                             << " datagrams over 1,200 bytes to the router, " << large_to_client_ << " to the client";
}

// A path that silently drops datagrams over 1,300 bytes (a tunnel, say): the larger probes are lost,
// the packets settle at a size the path carries, above 1,200 bytes (ngtcp2 tries 1,406, then 1,342,
// then 1,232 bytes), and every message arrives whole and in order meanwhile.
TEST_F(ThroughRelay, ProbesLostOnANarrowerPathLoseNoMessage) {
  constexpr std::size_t kPathLimit = 1300;
  ASSERT_NO_FATAL_FAILURE(start(kPathLimit));

  // Messages to itself, a burst and then a steady trickle, until the packets have grown: each one
  // must arrive whole and in order while probes are lost.
  std::vector<std::uint8_t> payload(16 * 1024);
  std::uint64_t sent = 0;
  std::uint64_t received = 0;
  auto send_one = [&] {
    ++sent;
    payload[0] = static_cast<std::uint8_t>(sent);
    payload[1] = static_cast<std::uint8_t>(sent >> 8);
    client_->send(wire::encode_client_to_client(7, 7, sent, payload));
  };
  auto receive_all = [&] {
    while (received < sent) {
      auto delivery = client_->wait_for(wire::MessageType::ClientToClient, 10s);
      if (!delivery) return ::testing::AssertionFailure() << "message " << received + 1 << " never arrived";
      ++received;
      if (delivery->payload.size() != payload.size() || delivery->payload[0] != static_cast<std::uint8_t>(received) ||
          delivery->payload[1] != static_cast<std::uint8_t>(received >> 8)) {
        return ::testing::AssertionFailure() << "message " << received << " arrived damaged or out of order";
      }
    }
    return ::testing::AssertionSuccess();
  };
  for (int i = 0; i < 40; ++i) send_one();
  ASSERT_TRUE(receive_all());
  ::testing::AssertionResult intact = ::testing::AssertionSuccess();
  bool grew = wait_until(
      [&] {
        send_one();
        intact = receive_all();
        return !intact || large_to_server_ + large_to_client_ > 40;
      },
      20s);
  ASSERT_TRUE(intact);
  EXPECT_TRUE(grew) << "the packets never grew past 1,200 bytes on a path that carries 1,300 ("
                    << large_to_server_ + large_to_client_ << " datagrams did)";
  EXPECT_GT(dropped_, 0) << "no probe larger than the path was sent: the test shows nothing";
}

// A path that carried 1,444-byte packets and then stops (a route change into a tunnel): ngtcp2 0.12
// would go on sending packets the path drops until the connection timed out. Both ends must notice
// the probe timeouts in a row, fall back to 1,200 bytes, and carry on within a second or so.
TEST_F(ThroughRelay, APathThatShrinksAfterDiscoveryFallsBackTo1200Bytes) {
  ASSERT_NO_FATAL_FAILURE(start());
  ASSERT_TRUE(discover(10s));
  path_limit_ = 1300;
  const auto shrunk = std::chrono::steady_clock::now();
  ASSERT_TRUE(round_trip(10s)) << "the first message after the path shrank";
  const auto stalled = std::chrono::steady_clock::now() - shrunk;
  EXPECT_LT(stalled, 5s) << "ngtcp2's idle timeout is 30 s: the fallback is what brought the message through";
  EXPECT_GT(dropped_, 0);
  // Both ends fell back: the client's 16 KiB messages reach the router, and its deliveries the client.
  for (int k = 0; k < 20; ++k) ASSERT_TRUE(round_trip(2s)) << "after the fallback";
}

// Where the route carries more than discovery can find (loopback carries 64 KiB), both ends send
// datagrams of up to --max-udp-payload once the handshake is confirmed, as TCP takes its segment
// size from the route; the handshake itself stays within 1,200 bytes, which every peer receives.
TEST_F(ThroughRelay, ARouteThatCarriesMoreGetsLargerDatagramsOnceTheHandshakeIsConfirmed) {
  constexpr std::size_t kLimit = 9000;
  ASSERT_NO_FATAL_FAILURE(start(std::numeric_limits<std::size_t>::max(), kLimit));
  EXPECT_LE(largest_to_server_, kInitialPacketLimit) << "a datagram over 1,200 bytes in the handshake or the registration";
  EXPECT_LE(largest_to_client_, kInitialPacketLimit) << "a datagram over 1,200 bytes in the handshake or the registration";
  for (int k = 0; k < 10; ++k) ASSERT_TRUE(round_trip(2s));
  // Each 16 KiB message goes both ways in two datagrams of up to 9,000 bytes.
  EXPECT_GE(larger_to_server_, 10);
  EXPECT_GE(larger_to_client_, 10);
  EXPECT_LE(largest_to_server_, kLimit);
  EXPECT_LE(largest_to_client_, kLimit);
}

// A route that promises more than the path carries (a jumbo-frame first hop before a smaller link):
// the large datagrams are lost, and both ends fall back to 1,200 bytes as they would after discovery.
TEST_F(ThroughRelay, APathNarrowerThanItsRouteFallsBackTo1200Bytes) {
  ASSERT_NO_FATAL_FAILURE(start(1300, 16'000));
  const auto first = std::chrono::steady_clock::now();
  ASSERT_TRUE(round_trip(10s)) << "the first message on a path that drops what its route carries";
  EXPECT_LT(std::chrono::steady_clock::now() - first, 5s) << "ngtcp2's idle timeout is 30 s: the fallback did it";
  EXPECT_GT(dropped_, 0) << "no datagram larger than the path was sent: the test shows nothing";
  for (int k = 0; k < 20; ++k) ASSERT_TRUE(round_trip(2s)) << "after the fallback";
}

}  // namespace
}  // namespace debra::testing
