// SPDX-License-Identifier: MIT
#pragma once

#include <atomic>
#include <cstddef>
#include <mutex>
#include <string>
#include <unordered_map>

#include "net/address.h"

namespace debra::quic {

// Admission: the connection limits of one listening address, shared by the endpoints that serve it
// (one per server thread): connections in all, connections per remote IP address, and handshakes in
// progress (which decide when clients must answer a Retry first). Thread-safe. It is consulted once
// per new connection, never per packet, so one mutex is cheap enough.
class Admission {
 public:
  enum class Verdict { Admitted, Full, AddressFull };

  Admission(std::size_t max_connections, std::size_t max_per_address)
      : max_connections_(max_connections), max_per_address_(max_per_address) {}
  Admission(const Admission&) = delete;
  Admission& operator=(const Admission&) = delete;

  // Whether a connection from remote would be admitted now, without counting it.
  Verdict check(const net::Address& remote) const;
  // Counts a connection from remote if the limits allow it; release() gives its place back.
  Verdict admit(const net::Address& remote);
  void release(const net::Address& remote);
  // Connections from remote's IP address now.
  std::size_t from_address(const net::Address& remote) const;

  void handshake_started() { handshakes_.fetch_add(1, std::memory_order_relaxed); }
  void handshake_ended() { handshakes_.fetch_sub(1, std::memory_order_relaxed); }
  std::size_t handshakes_in_progress() const { return handshakes_.load(std::memory_order_relaxed); }

 private:
  // The IP address without its port: the unit of the per-address limit.
  static std::string address_key(const net::Address& address);
  Verdict check_locked(const std::string& key) const;

  const std::size_t max_connections_;
  const std::size_t max_per_address_;
  mutable std::mutex mutex_;
  std::unordered_map<std::string, std::size_t> per_address_;  // guarded by mutex_
  std::size_t connections_ = 0;                                  // guarded by mutex_
  std::atomic<std::size_t> handshakes_ = 0;
};

}  // namespace debra::quic
