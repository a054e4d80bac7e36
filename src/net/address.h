// SPDX-License-Identifier: MIT
#pragma once

#include <netinet/in.h>
#include <sys/socket.h>

#include <cstdint>
#include <string>
#include <string_view>

#include "util/result.h"

namespace debra::net {

// Address: an IPv4 or IPv6 socket address, stored by value.
struct Address {
  sockaddr_storage storage{};
  socklen_t length = 0;

  // Parses "HOST:PORT", "[V6]:PORT" or "V6-without-brackets:PORT" is not accepted (ambiguous).
  // HOST is a numeric address or "localhost" (127.0.0.1); names are not resolved, so no DNS lookup
  // ever blocks the loop.
  static Result<Address, Error> parse(std::string_view host_port);

  sockaddr* sockaddr_ptr() { return reinterpret_cast<sockaddr*>(&storage); }
  const sockaddr* sockaddr_ptr() const { return reinterpret_cast<const sockaddr*>(&storage); }
  int family() const { return storage.ss_family; }
  std::uint16_t port() const;
  bool is_loopback() const;
  // The numeric host without the port or brackets: "127.0.0.1" or "::1".
  std::string host() const;
  // "127.0.0.1:4433" or "[::1]:4433".
  std::string to_string() const;
};

}  // namespace debra::net
