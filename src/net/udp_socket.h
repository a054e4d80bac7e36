// SPDX-License-Identifier: MIT
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <optional>
#include <span>
#include <vector>

#include "net/address.h"
#include "util/result.h"

namespace debra::net {

// Datagram: one received UDP datagram. data points into the socket's receive buffers and is valid
// only during the callback that receives it.
struct Datagram {
  std::span<const std::uint8_t> data;
  const Address& remote;
  const Address& local;  // the address it was sent to (IP_PKTINFO), so replies leave from it
};

// SocketStats: counters of one socket.
struct SocketStats {
  std::uint64_t datagrams_received = 0;
  std::uint64_t coalesced_receives = 0;  // receives that brought several datagrams at once (UDP GRO)
  std::uint64_t datagrams_sent = 0;
  std::uint64_t send_calls = 0;
  std::uint64_t send_dropped = 0;  // EAGAIN or an error; QUIC loss recovery resends what mattered
};

// UdpSocket: a non-blocking UDP socket with batched receive (recvmmsg, and UDP GRO where the kernel
// offers it: one receive can bring a run of equal-sized datagrams of one peer) and batched send (UDP
// GSO, falling back to one sendmsg per datagram where the kernel refuses it). Owns its descriptor.
class UdpSocket {
 public:
  // Binds to address (port 0 picks one). Wildcard addresses work: each datagram's local address
  // comes from IP_PKTINFO / IPV6_RECVPKTINFO and replies are sent from it. Shared: SO_REUSEPORT, so
  // several sockets (one per server thread) share the address and the kernel spreads peers over them
  // by their address and port; a socket without it cannot join them, nor they it.
  enum class Sharing { Exclusive, Shared };
  static Result<UdpSocket, Error> bind(const Address& address, Sharing sharing = Sharing::Exclusive);
  // An unbound socket of remote's family, connected to remote (for a client).
  static Result<UdpSocket, Error> connect(const Address& remote);

  UdpSocket(UdpSocket&& other) noexcept;
  UdpSocket& operator=(UdpSocket&& other) noexcept;
  UdpSocket(const UdpSocket&) = delete;
  UdpSocket& operator=(const UdpSocket&) = delete;
  ~UdpSocket();

  int fd() const { return fd_; }
  const Address& local_address() const { return local_; }

  // Reads every datagram waiting (in batches of recvmmsg) and calls on_datagram for each.
  void receive(const std::function<void(const Datagram&)>& on_datagram);

  // Sends data to remote from local as datagrams of segment_size bytes (the last may be shorter) in
  // one system call with GSO when available. data.size() <= segment_size sends a single datagram.
  void send(const Address& remote, const Address& local, std::span<const std::uint8_t> data,
            std::size_t segment_size);

  const SocketStats& stats() const { return stats_; }
  bool gso_enabled() const { return gso_; }
  bool gro_enabled() const { return gro_; }

 private:
  explicit UdpSocket(int fd);
  Result<void, Error> configure();
  void send_one(const Address& remote, const Address& local, std::span<const std::uint8_t> data,
                std::size_t segment_size);

  int fd_ = -1;
  bool connected_ = false;
  bool gso_ = true;
  bool gro_ = false;
  Address local_;
  SocketStats stats_;
};

// The MTU of the route to remote as the kernel knows it (IP_MTU of a socket connected to remote): the
// outgoing interface's, or less where a route or an ICMP message said so. Nothing when there is no
// route. It says what the first hop carries, not every hop after it.
std::optional<std::size_t> route_mtu(const Address& remote);

}  // namespace debra::net
