// SPDX-License-Identifier: MIT
//
// UdpSocket on loopback, with real sockets: a GSO batch leaves in one call and arrives as the same
// datagrams, whether or not the kernel coalesced them into one receive (UDP GRO).
#include "net/udp_socket.h"

#include <gtest/gtest.h>
#include <poll.h>

#include <cstdint>
#include <vector>

namespace debra::net {
namespace {

// Receives until count datagrams arrived or a second passed without one.
std::vector<std::vector<std::uint8_t>> receive_datagrams(UdpSocket& socket, std::size_t count) {
  std::vector<std::vector<std::uint8_t>> received;
  while (received.size() < count) {
    pollfd fd{socket.fd(), POLLIN, 0};
    if (poll(&fd, 1, 1000) <= 0) break;
    socket.receive([&](const Datagram& d) { received.emplace_back(d.data.begin(), d.data.end()); });
  }
  return received;
}

TEST(UdpSocket, AGsoBatchArrivesAsTheDatagramsItWasMadeOf) {
  auto receiver = UdpSocket::bind(*Address::parse("127.0.0.1:0"));
  ASSERT_TRUE(receiver) << receiver.error().message;
  auto sender = UdpSocket::connect(receiver->local_address());
  ASSERT_TRUE(sender) << sender.error().message;

  constexpr std::size_t kSegment = 1200;
  constexpr std::size_t kSegments = 10;
  std::vector<std::uint8_t> batch(kSegment * (kSegments - 1) + 500);  // the last one is shorter
  for (std::size_t i = 0; i < batch.size(); ++i) batch[i] = static_cast<std::uint8_t>(i / kSegment + i % 7);
  sender->send(receiver->local_address(), sender->local_address(), batch, kSegment);

  auto received = receive_datagrams(*receiver, kSegments);
  ASSERT_EQ(received.size(), kSegments);
  std::size_t offset = 0;
  for (std::size_t i = 0; i < kSegments; ++i) {
    std::size_t expected = i + 1 < kSegments ? kSegment : 500;
    ASSERT_EQ(received[i].size(), expected) << "datagram " << i;
    EXPECT_TRUE(std::equal(received[i].begin(), received[i].end(), batch.begin() + static_cast<long>(offset)))
        << "datagram " << i;
    offset += expected;
  }
  EXPECT_EQ(receiver->stats().datagrams_received, kSegments);
  // With GSO out and GRO in, loopback hands the batch over whole: one receive, not ten.
  if (sender->gso_enabled() && receiver->gro_enabled()) {
    EXPECT_EQ(receiver->stats().coalesced_receives, 1u);
  }
}

TEST(UdpSocket, SingleAndEmptyDatagramsAreNotSplit) {
  auto receiver = UdpSocket::bind(*Address::parse("127.0.0.1:0"));
  ASSERT_TRUE(receiver) << receiver.error().message;
  auto sender = UdpSocket::connect(receiver->local_address());
  ASSERT_TRUE(sender) << sender.error().message;
  std::vector<std::uint8_t> one(1350, 0xab);
  sender->send(receiver->local_address(), sender->local_address(), one, one.size());
  sender->send(receiver->local_address(), sender->local_address(), {}, 1200);
  auto received = receive_datagrams(*receiver, 2);
  ASSERT_EQ(received.size(), 2u);
  EXPECT_EQ(received[0], one);
  EXPECT_TRUE(received[1].empty());
  EXPECT_EQ(receiver->stats().coalesced_receives, 0u);
}

}  // namespace
}  // namespace debra::net
