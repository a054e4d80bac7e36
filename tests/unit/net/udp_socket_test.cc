// SPDX-License-Identifier: MIT
//
// UdpSocket on loopback, with real sockets: a GSO batch leaves in one call and arrives as the same
// datagrams, whether or not the kernel coalesced them into one receive (UDP GRO).
#include "net/udp_socket.h"

#include <gtest/gtest.h>
#include <net/if.h>
#include <poll.h>
#include <sched.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <cstring>
#include <functional>
#include <optional>
#include <string>
#include <thread>
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

// Runs body on a thread of its own in a new network namespace whose lo is up with an MTU of mtu
// (root only; the machine's interfaces are left alone). Namespaces are per thread: the process
// stays out. Returns why the namespace could not be made, or what body returns: empty, or why it
// could not run.
std::string in_namespace_with_lo_mtu(int mtu, const std::function<std::string()>& body) {
  std::string skip;
  std::thread([&] {
    if (::unshare(CLONE_NEWNET) != 0) {
      skip = std::string("unshare(CLONE_NEWNET): ") + std::strerror(errno);
      return;
    }
    int control = ::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    ifreq lo{};
    std::strncpy(lo.ifr_name, "lo", IFNAMSIZ - 1);
    lo.ifr_mtu = mtu;
    bool ready = ::ioctl(control, SIOCSIFMTU, &lo) == 0;
    ready = ready && ::ioctl(control, SIOCGIFFLAGS, &lo) == 0;
    lo.ifr_flags = static_cast<short>(lo.ifr_flags | IFF_UP);
    ready = ready && ::ioctl(control, SIOCSIFFLAGS, &lo) == 0;
    ::close(control);
    if (!ready) {
      skip = std::string("setting up lo: ") + std::strerror(errno);
      return;
    }
    skip = body();
  }).join();
  return skip;
}

// A route whose MTU is smaller than a GSO batch's segments refuses the whole batch (EMSGSIZE, the
// socket sets don't-fragment): as when a path shrinks under a connection that Path MTU discovery
// had taken to 1,444-byte packets. That batch is lost, every datagram of it, but GSO stays on for
// every other peer of the socket: the kernel can segment, it only refused the size. The route is lo
// with an MTU of 1,300.
TEST(UdpSocket, ARouteThatRefusesTheSegmentSizeDoesNotTurnGsoOff) {
  struct Outcome {
    std::uint64_t dropped_first = 0;
    bool gso_after_refusal = false;
    std::size_t received_after = 0;
    bool gso_at_start = false;
  } outcome;
  const std::string skip = in_namespace_with_lo_mtu(1300, [&]() -> std::string {
    auto receiver = UdpSocket::bind(*Address::parse("127.0.0.1:0"));
    if (!receiver) return "no socket in the namespace: " + receiver.error().message;
    auto sender = UdpSocket::connect(receiver->local_address());
    if (!sender) return "no socket in the namespace: " + sender.error().message;
    outcome.gso_at_start = sender->gso_enabled();
    const std::vector<std::uint8_t> too_large(3 * 1444, 0x11);
    sender->send(receiver->local_address(), sender->local_address(), too_large, 1444);
    outcome.dropped_first = sender->stats().send_dropped;
    outcome.gso_after_refusal = sender->gso_enabled();
    const std::vector<std::uint8_t> fitting(3 * 1200, 0x22);
    sender->send(receiver->local_address(), sender->local_address(), fitting, 1200);
    outcome.received_after = receive_datagrams(*receiver, 3).size();
    return {};
  });
  if (!skip.empty()) GTEST_SKIP() << skip;
  if (!outcome.gso_at_start) GTEST_SKIP() << "no UDP GSO on this kernel";
  EXPECT_EQ(outcome.dropped_first, 3u) << "every datagram of the refused batch is counted as dropped";
  EXPECT_TRUE(outcome.gso_after_refusal) << "a refused segment size turned GSO off for the whole socket";
  EXPECT_EQ(outcome.received_after, 3u);
}

// route_mtu reads the route's MTU from the kernel, which is what lets a QUIC connection on loopback
// or a jumbo-frame network send datagrams larger than Path MTU discovery finds: the same lo reports
// a jumbo frame's 9,000 bytes and an Ethernet frame's 1,500 as it is set, for IPv4 and IPv6.
TEST(RouteMtu, IsTheOutgoingInterfacesMtu) {
  for (int mtu : {9000, 1500}) {
    std::optional<std::size_t> v4, v6;
    const std::string skip = in_namespace_with_lo_mtu(mtu, [&]() -> std::string {
      v4 = route_mtu(*Address::parse("127.0.0.1:4433"));
      v6 = route_mtu(*Address::parse("[::1]:4433"));
      return {};
    });
    if (!skip.empty()) GTEST_SKIP() << skip;
    EXPECT_EQ(v4, static_cast<std::size_t>(mtu));
    // A kernel without IPv6 has no route to ::1.
    if (v6) EXPECT_EQ(*v6, static_cast<std::size_t>(mtu));
  }
}

// Outside any namespace of the tests', loopback carries far more than an Ethernet frame (64 KiB on
// Linux), which is what the benchmarks and the integration tests run over.
TEST(RouteMtu, LoopbackCarriesMoreThanAnEthernetFrame) {
  auto mtu = route_mtu(*Address::parse("127.0.0.1:4433"));
  ASSERT_TRUE(mtu);
  EXPECT_GT(*mtu, 1500u);
}

}  // namespace
}  // namespace debra::net
