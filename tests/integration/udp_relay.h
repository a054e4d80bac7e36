// SPDX-License-Identifier: MIT
//
// UdpRelay: a one-client UDP relay between a test's QUIC client and the router, for tests that need
// the network to lose, hold back or reorder particular packets at particular moments. A filter sees
// every datagram on the relay's thread and forwards, drops or holds it; release_held() sends what it
// held, in order.
//
//   auto relay = UdpRelay::start(server.address(), "127.0.0.2", [](UdpRelay::Direction to, auto bytes) {
//     return to == UdpRelay::Direction::ToClient ? UdpRelay::Verdict::Drop : UdpRelay::Verdict::Forward;
//   });
//   RawClient::connect({.server = (*relay)->address(), ...});   // the router sees 127.0.0.2
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <thread>
#include <vector>

#include "net/address.h"
#include "util/result.h"

namespace debra::testing {

class UdpRelay {
 public:
  enum class Direction { ToServer, ToClient };
  enum class Verdict { Forward, Drop, Hold };
  // Runs on the relay's thread, never under the relay's lock: it may call release_held().
  using Filter = std::function<Verdict(Direction, std::span<const std::uint8_t>)>;

  // Listens for the client on host:0 and talks to server ("HOST:PORT") from another socket bound
  // to host:0, so host is the address the router sees (any of 127.0.0.0/8 is a distinct host).
  static Result<std::unique_ptr<UdpRelay>, Error> start(const std::string& server, const std::string& host,
                                                        Filter filter);
  ~UdpRelay();  // stops the thread
  UdpRelay(const UdpRelay&) = delete;
  UdpRelay& operator=(const UdpRelay&) = delete;

  // Where the client connects: "HOST:PORT".
  std::string address() const { return client_side_address_.to_string(); }
  // Sends every held datagram on, in the order they arrived. Any thread.
  void release_held();

 private:
  struct Held {
    Direction direction;
    std::vector<std::uint8_t> bytes;
  };

  UdpRelay(int client_side, int server_side, net::Address client_side_address, Filter filter);
  void run();
  void send(Direction direction, std::span<const std::uint8_t> bytes);  // under mutex_

  const int client_side_;  // bound; receives from the client, answers it
  const int server_side_;  // connected to the router
  const net::Address client_side_address_;
  const Filter filter_;
  std::atomic<bool> stopping_ = false;
  std::thread thread_;

  std::mutex mutex_;
  std::optional<net::Address> client_;  // guarded by mutex_: where the client's first datagram came from
  std::vector<Held> held_;              // guarded by mutex_
};

}  // namespace debra::testing
