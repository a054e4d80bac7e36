// SPDX-License-Identifier: MIT
#include "udp_relay.h"

#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <array>
#include <cerrno>
#include <cstring>

namespace debra::testing {
namespace {

// A UDP socket bound to host:0 and, given a peer, connected to it.
Result<int, Error> open_socket(const std::string& host, const net::Address* peer) {
  auto local = net::Address::parse(host + ":0");
  if (!local) return Unexpected{local.error()};
  int fd = ::socket(local->family(), SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return make_error(std::string("udp relay: socket: ") + std::strerror(errno));
  if (::bind(fd, local->sockaddr_ptr(), local->length) != 0 ||
      (peer != nullptr && ::connect(fd, peer->sockaddr_ptr(), peer->length) != 0)) {
    std::string reason = std::string("udp relay: bind/connect on ") + host + ": " + std::strerror(errno);
    ::close(fd);
    return make_error(reason);
  }
  return fd;
}

}  // namespace

Result<std::unique_ptr<UdpRelay>, Error> UdpRelay::start(const std::string& server, const std::string& host,
                                                         Filter filter) {
  auto server_address = net::Address::parse(server);
  if (!server_address) return Unexpected{server_address.error()};
  auto client_side = open_socket(host, nullptr);
  if (!client_side) return Unexpected{client_side.error()};
  auto server_side = open_socket(host, &*server_address);
  if (!server_side) {
    ::close(*client_side);
    return Unexpected{server_side.error()};
  }
  net::Address bound;
  bound.length = sizeof bound.storage;
  ::getsockname(*client_side, bound.sockaddr_ptr(), &bound.length);
  std::unique_ptr<UdpRelay> relay(new UdpRelay(*client_side, *server_side, bound, std::move(filter)));
  relay->thread_ = std::thread([raw = relay.get()] { raw->run(); });
  return relay;
}

UdpRelay::UdpRelay(int client_side, int server_side, net::Address client_side_address, Filter filter)
    : client_side_(client_side),
      server_side_(server_side),
      client_side_address_(client_side_address),
      filter_(std::move(filter)) {}

UdpRelay::~UdpRelay() {
  stopping_ = true;
  if (thread_.joinable()) thread_.join();
  ::close(client_side_);
  ::close(server_side_);
}

void UdpRelay::release_held() {
  std::lock_guard lock(mutex_);
  for (const Held& held : held_) send(held.direction, held.bytes);
  held_.clear();
}

void UdpRelay::send(Direction direction, std::span<const std::uint8_t> bytes) {
  if (direction == Direction::ToServer) {
    ::send(server_side_, bytes.data(), bytes.size(), 0);
  } else if (client_) {
    ::sendto(client_side_, bytes.data(), bytes.size(), 0, client_->sockaddr_ptr(), client_->length);
  }
}

void UdpRelay::run() {
  std::array<pollfd, 2> fds{{{client_side_, POLLIN, 0}, {server_side_, POLLIN, 0}}};
  std::array<std::uint8_t, 65536> buffer{};
  while (!stopping_) {
    // Bounded, so the destructor's stop is seen without a wake-up channel.
    if (::poll(fds.data(), fds.size(), 20) <= 0) continue;
    for (std::size_t i = 0; i < fds.size(); ++i) {
      if ((fds[i].revents & POLLIN) == 0) continue;
      net::Address from;
      from.length = sizeof from.storage;
      ssize_t n = ::recvfrom(fds[i].fd, buffer.data(), buffer.size(), 0, from.sockaddr_ptr(), &from.length);
      if (n < 0) continue;
      Direction direction = i == 0 ? Direction::ToServer : Direction::ToClient;
      std::span<const std::uint8_t> bytes(buffer.data(), static_cast<std::size_t>(n));
      if (direction == Direction::ToServer) {
        std::lock_guard lock(mutex_);
        if (!client_) client_ = from;
      }
      Verdict verdict = filter_(direction, bytes);
      std::lock_guard lock(mutex_);
      if (verdict == Verdict::Forward) {
        send(direction, bytes);
      } else if (verdict == Verdict::Hold) {
        held_.push_back(Held{direction, {bytes.begin(), bytes.end()}});
      }
    }
  }
}

}  // namespace debra::testing
