// SPDX-License-Identifier: MIT
#include "net/udp_socket.h"

#include <fcntl.h>
#include <netinet/udp.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstring>

#ifndef UDP_SEGMENT
#define UDP_SEGMENT 103
#endif
#ifndef UDP_GRO
#define UDP_GRO 104
#endif

namespace debra::net {
namespace {

constexpr std::size_t kReceiveBatch = 32;
constexpr std::size_t kMaxDatagram = 65536;
constexpr int kSocketBufferBytes = 4 * 1024 * 1024;

// The receive buffers (2 MiB), one set per thread rather than per socket: a datagram is only valid
// during its callback, and a process with thousands of client sockets (`debra bench connections`)
// would otherwise hold 2 MiB of touched memory for each.
std::uint8_t* receive_buffers() {
  thread_local std::vector<std::uint8_t> buffers(kReceiveBatch * kMaxDatagram);
  return buffers.data();
}

std::string errno_text(const char* what) { return std::string(what) + ": " + std::strerror(errno); }

}  // namespace

UdpSocket::UdpSocket(int fd) : fd_(fd) {}

UdpSocket::UdpSocket(UdpSocket&& other) noexcept
    : fd_(other.fd_), connected_(other.connected_), gso_(other.gso_), gro_(other.gro_), local_(other.local_),
      stats_(other.stats_) {
  other.fd_ = -1;
}

UdpSocket& UdpSocket::operator=(UdpSocket&& other) noexcept {
  if (this != &other) {
    if (fd_ >= 0) close(fd_);
    fd_ = other.fd_;
    connected_ = other.connected_;
    gso_ = other.gso_;
    gro_ = other.gro_;
    local_ = other.local_;
    stats_ = other.stats_;
    other.fd_ = -1;
  }
  return *this;
}

UdpSocket::~UdpSocket() {
  if (fd_ >= 0) close(fd_);
}

Result<void, Error> UdpSocket::configure() {
  int on = 1;
  // Buffers sized for bursts of GSO batches; the kernel caps them at net.core.*mem_max.
  setsockopt(fd_, SOL_SOCKET, SO_RCVBUF, &kSocketBufferBytes, sizeof kSocketBufferBytes);
  setsockopt(fd_, SOL_SOCKET, SO_SNDBUF, &kSocketBufferBytes, sizeof kSocketBufferBytes);
  // A peer's GSO batch then arrives in one receive instead of one per datagram (Linux 5.0+; on
  // loopback the kernel hands over the sender's batch as it is). Without it, one datagram a receive.
  gro_ = setsockopt(fd_, SOL_UDP, UDP_GRO, &on, sizeof on) == 0;
  int family = local_.family();
  if (family == AF_INET) {
    if (setsockopt(fd_, IPPROTO_IP, IP_PKTINFO, &on, sizeof on) != 0) return make_error(errno_text("IP_PKTINFO"));
    // Path MTU discovery is QUIC's job (RFC 9000 §14.3): never fragment.
    int pmtu = IP_PMTUDISC_DO;
    setsockopt(fd_, IPPROTO_IP, IP_MTU_DISCOVER, &pmtu, sizeof pmtu);
  } else {
    if (setsockopt(fd_, IPPROTO_IPV6, IPV6_RECVPKTINFO, &on, sizeof on) != 0) {
      return make_error(errno_text("IPV6_RECVPKTINFO"));
    }
    int pmtu = IPV6_PMTUDISC_DO;
    setsockopt(fd_, IPPROTO_IPV6, IPV6_MTU_DISCOVER, &pmtu, sizeof pmtu);
  }
  return {};
}

Result<UdpSocket, Error> UdpSocket::bind(const Address& address, Sharing sharing) {
  int fd = socket(address.family(), SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) return make_error(errno_text("socket"));
  UdpSocket sock(fd);
  int on = 1;
  if (address.family() == AF_INET6) {
    // An IPv6 listener serves IPv6 only; listen twice for both.
    setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &on, sizeof on);
  }
  if (sharing == Sharing::Shared && setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &on, sizeof on) != 0) {
    return make_error(errno_text("SO_REUSEPORT"));
  }
  if (::bind(fd, address.sockaddr_ptr(), address.length) != 0) {
    return make_error(errno_text(("bind " + address.to_string()).c_str()));
  }
  sock.local_.length = sizeof sock.local_.storage;
  getsockname(fd, sock.local_.sockaddr_ptr(), &sock.local_.length);
  if (auto r = sock.configure(); !r) return Unexpected{r.error()};
  return sock;
}

std::optional<std::size_t> route_mtu(const Address& remote) {
  int fd = socket(remote.family(), SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return std::nullopt;
  int mtu = 0;
  socklen_t length = sizeof mtu;
  const bool v4 = remote.family() == AF_INET;
  const bool ok = ::connect(fd, remote.sockaddr_ptr(), remote.length) == 0 &&
                  getsockopt(fd, v4 ? IPPROTO_IP : IPPROTO_IPV6, v4 ? IP_MTU : IPV6_MTU, &mtu, &length) == 0 && mtu > 0;
  close(fd);
  if (!ok) return std::nullopt;
  return static_cast<std::size_t>(mtu);
}

Result<UdpSocket, Error> UdpSocket::connect(const Address& remote) {
  int fd = socket(remote.family(), SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) return make_error(errno_text("socket"));
  UdpSocket sock(fd);
  if (::connect(fd, remote.sockaddr_ptr(), remote.length) != 0) {
    return make_error(errno_text(("connect " + remote.to_string()).c_str()));
  }
  sock.connected_ = true;
  sock.local_.length = sizeof sock.local_.storage;
  getsockname(fd, sock.local_.sockaddr_ptr(), &sock.local_.length);
  if (auto r = sock.configure(); !r) return Unexpected{r.error()};
  return sock;
}

void UdpSocket::receive(const std::function<void(const Datagram&)>& on_datagram) {
  std::array<mmsghdr, kReceiveBatch> headers{};
  std::array<iovec, kReceiveBatch> iovs{};
  std::array<Address, kReceiveBatch> remotes{};
  // Room for a packet-info and a GRO control message.
  alignas(cmsghdr) std::array<std::array<std::uint8_t, 96>, kReceiveBatch> controls{};
  std::uint8_t* buffers = receive_buffers();
  for (;;) {
    for (std::size_t i = 0; i < kReceiveBatch; ++i) {
      iovs[i] = {buffers + i * kMaxDatagram, kMaxDatagram};
      headers[i] = {};
      headers[i].msg_hdr.msg_name = &remotes[i].storage;
      headers[i].msg_hdr.msg_namelen = sizeof remotes[i].storage;
      headers[i].msg_hdr.msg_iov = &iovs[i];
      headers[i].msg_hdr.msg_iovlen = 1;
      headers[i].msg_hdr.msg_control = controls[i].data();
      headers[i].msg_hdr.msg_controllen = controls[i].size();
    }
    int n = recvmmsg(fd_, headers.data(), kReceiveBatch, 0, nullptr);
    if (n <= 0) return;  // EAGAIN: drained; other errors (ICMP unreachable) are transient for UDP
    for (int i = 0; i < n; ++i) {
      auto& msg = headers[static_cast<std::size_t>(i)].msg_hdr;
      auto& remote = remotes[static_cast<std::size_t>(i)];
      remote.length = msg.msg_namelen;
      Address local = local_;
      std::size_t length = headers[static_cast<std::size_t>(i)].msg_len;
      std::size_t segment = length;  // GRO: the size of each coalesced datagram but the last
      for (cmsghdr* c = CMSG_FIRSTHDR(&msg); c != nullptr; c = CMSG_NXTHDR(&msg, c)) {
        if (c->cmsg_level == IPPROTO_IP && c->cmsg_type == IP_PKTINFO) {
          in_pktinfo info;
          std::memcpy(&info, CMSG_DATA(c), sizeof info);
          reinterpret_cast<sockaddr_in*>(&local.storage)->sin_addr = info.ipi_addr;
        } else if (c->cmsg_level == IPPROTO_IPV6 && c->cmsg_type == IPV6_PKTINFO) {
          in6_pktinfo info;
          std::memcpy(&info, CMSG_DATA(c), sizeof info);
          reinterpret_cast<sockaddr_in6*>(&local.storage)->sin6_addr = info.ipi6_addr;
        } else if (c->cmsg_level == SOL_UDP && c->cmsg_type == UDP_GRO) {
          int size = 0;
          std::memcpy(&size, CMSG_DATA(c), sizeof size);
          if (size > 0) segment = static_cast<std::size_t>(size);
        }
      }
      const auto* data = static_cast<const std::uint8_t*>(iovs[static_cast<std::size_t>(i)].iov_base);
      if (segment < length) ++stats_.coalesced_receives;
      std::size_t offset = 0;
      do {  // an empty datagram is a datagram too
        std::size_t size = std::min(segment, length - offset);
        ++stats_.datagrams_received;
        on_datagram(Datagram{{data + offset, size}, remote, local});
        offset += size;
      } while (offset < length);
    }
    if (static_cast<std::size_t>(n) < kReceiveBatch) return;
  }
}

void UdpSocket::send(const Address& remote, const Address& local, std::span<const std::uint8_t> data,
                     std::size_t segment_size) {
  if (data.size() > segment_size && !gso_) {
    for (std::size_t off = 0; off < data.size(); off += segment_size) {
      send_one(remote, local, data.subspan(off, std::min(segment_size, data.size() - off)), segment_size);
    }
    return;
  }
  send_one(remote, local, data, segment_size);
}

void UdpSocket::send_one(const Address& remote, const Address& local, std::span<const std::uint8_t> data,
                         std::size_t segment_size) {
  iovec iov{const_cast<std::uint8_t*>(data.data()), data.size()};
  msghdr msg{};
  if (!connected_) {
    msg.msg_name = const_cast<sockaddr*>(remote.sockaddr_ptr());
    msg.msg_namelen = remote.length;
  }
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  alignas(cmsghdr) std::array<std::uint8_t, CMSG_SPACE(sizeof(in6_pktinfo)) + CMSG_SPACE(sizeof(std::uint16_t))> control{};
  msg.msg_control = control.data();
  msg.msg_controllen = control.size();
  std::size_t used = 0;
  cmsghdr* c = CMSG_FIRSTHDR(&msg);
  if (!connected_) {
    if (local.family() == AF_INET) {
      c->cmsg_level = IPPROTO_IP;
      c->cmsg_type = IP_PKTINFO;
      c->cmsg_len = CMSG_LEN(sizeof(in_pktinfo));
      in_pktinfo info{};
      info.ipi_spec_dst = reinterpret_cast<const sockaddr_in*>(&local.storage)->sin_addr;
      std::memcpy(CMSG_DATA(c), &info, sizeof info);
      used += CMSG_SPACE(sizeof(in_pktinfo));
    } else {
      c->cmsg_level = IPPROTO_IPV6;
      c->cmsg_type = IPV6_PKTINFO;
      c->cmsg_len = CMSG_LEN(sizeof(in6_pktinfo));
      in6_pktinfo info{};
      info.ipi6_addr = reinterpret_cast<const sockaddr_in6*>(&local.storage)->sin6_addr;
      std::memcpy(CMSG_DATA(c), &info, sizeof info);
      used += CMSG_SPACE(sizeof(in6_pktinfo));
    }
    c = reinterpret_cast<cmsghdr*>(control.data() + used);
  }
  if (data.size() > segment_size) {
    c->cmsg_level = SOL_UDP;
    c->cmsg_type = UDP_SEGMENT;
    c->cmsg_len = CMSG_LEN(sizeof(std::uint16_t));
    auto segment = static_cast<std::uint16_t>(segment_size);
    std::memcpy(CMSG_DATA(c), &segment, sizeof segment);
    used += CMSG_SPACE(sizeof(std::uint16_t));
  }
  msg.msg_controllen = used;
  if (used == 0) msg.msg_control = nullptr;
  ++stats_.send_calls;
  ssize_t n;
  do {
    n = sendmsg(fd_, &msg, 0);
  } while (n < 0 && errno == EINTR);
  std::size_t datagrams = (data.size() + segment_size - 1) / segment_size;
  if (n < 0) {
    if ((errno == EIO || errno == EINVAL) && data.size() > segment_size && gso_) {
      // The kernel or device cannot segment: fall back to one datagram per call for good.
      gso_ = false;
      send(remote, local, data, segment_size);
      return;
    }
    stats_.send_dropped += datagrams;
    return;
  }
  stats_.datagrams_sent += datagrams;
}

}  // namespace debra::net
