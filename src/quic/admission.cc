// SPDX-License-Identifier: MIT
#include "quic/admission.h"

#include <netinet/in.h>

namespace debra::quic {

std::string Admission::address_key(const net::Address& address) {
  if (address.family() == AF_INET) {
    const auto& in = reinterpret_cast<const sockaddr_in*>(&address.storage)->sin_addr;
    return std::string(reinterpret_cast<const char*>(&in), sizeof in);
  }
  const auto& in6 = reinterpret_cast<const sockaddr_in6*>(&address.storage)->sin6_addr;
  return std::string(reinterpret_cast<const char*>(&in6), sizeof in6);
}

Admission::Verdict Admission::check_locked(const std::string& key) const {
  if (connections_ >= max_connections_) return Verdict::Full;
  if (auto it = per_address_.find(key); it != per_address_.end() && it->second >= max_per_address_) {
    return Verdict::AddressFull;
  }
  return Verdict::Admitted;
}

Admission::Verdict Admission::check(const net::Address& remote) const {
  std::string key = address_key(remote);
  std::lock_guard lock(mutex_);
  return check_locked(key);
}

Admission::Verdict Admission::admit(const net::Address& remote) {
  std::string key = address_key(remote);
  std::lock_guard lock(mutex_);
  Verdict verdict = check_locked(key);
  if (verdict != Verdict::Admitted) return verdict;
  ++per_address_[key];
  ++connections_;
  return verdict;
}

void Admission::release(const net::Address& remote) {
  std::string key = address_key(remote);
  std::lock_guard lock(mutex_);
  auto it = per_address_.find(key);
  if (it == per_address_.end()) return;
  if (--it->second == 0) per_address_.erase(it);
  --connections_;
}

std::size_t Admission::from_address(const net::Address& remote) const {
  std::string key = address_key(remote);
  std::lock_guard lock(mutex_);
  auto it = per_address_.find(key);
  return it == per_address_.end() ? 0 : it->second;
}

}  // namespace debra::quic
