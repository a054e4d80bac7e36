// SPDX-License-Identifier: MIT
//
// Small helpers shared by the integration suites: connecting libdebra clients to a ServerProcess,
// bounded sends and receives, and a two-way exchange check.
#pragma once

#include <debra/client.h>
#include <gtest/gtest.h>

#include <chrono>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "raw_client.h"
#include "server_process.h"
#include "wire/codec.h"

namespace debra::testing {

// Polls condition every few ms until it holds (true) or timeout passes (false).
template <typename Condition>
bool wait_until(Condition condition, std::chrono::milliseconds timeout) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  while (!condition()) {
    if (std::chrono::steady_clock::now() >= deadline) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  return true;
}

inline ClientOptions client_options(const ServerProcess& server, std::int32_t id,
                                    Protocol protocol = Protocol::Native) {
  ClientOptions options;
  options.server = server.address();
  options.id = id;
  options.ca_file = server.ca_file();
  options.protocol = protocol;
  return options;
}

inline RawClientOptions raw_options(const ServerProcess& server, bool native = true) {
  RawClientOptions options;
  options.server = server.address();
  options.ca_file = server.ca_file();
  options.native = native;
  return options;
}

// Connects a client, adding a test failure (and returning nullptr) if that fails.
inline std::unique_ptr<Client> connect_client(ClientOptions options) {
  std::string server = options.server;
  std::int32_t id = options.id;
  auto client = Client::connect(std::move(options));
  if (!client) {
    ADD_FAILURE() << "cannot connect id " << id << " to " << server << ": " << client.error().message;
    return nullptr;
  }
  return std::move(*client);
}

inline std::unique_ptr<Client> connect_client(const ServerProcess& server, std::int32_t id,
                                              Protocol protocol = Protocol::Native) {
  return connect_client(client_options(server, id, protocol));
}

inline std::vector<std::uint8_t> to_bytes(std::string_view text) { return {text.begin(), text.end()}; }

// Waits (bounded) for a send's result; a timeout yields NotConnected with a reason saying so.
inline SendResult await(std::future<SendResult> future, std::chrono::milliseconds timeout = std::chrono::seconds(10)) {
  if (future.wait_for(timeout) != std::future_status::ready) {
    return SendResult{SendStatus::NotConnected, 0, 0, "no result within " + std::to_string(timeout.count()) + " ms"};
  }
  return future.get();
}

inline std::string describe(const SendResult& result) {
  return std::string(to_string(result.status)) + " (message " + std::to_string(result.message_id) + ", error code " +
         std::to_string(result.error_code) + (result.reason.empty() ? "" : ", " + result.reason) + ")";
}

// from sends text to `to`; the send must be Accepted and `to` must receive exactly that payload with
// the router-stamped sender from_id as its next message.
inline ::testing::AssertionResult deliver(Client& from, std::int32_t from_id, Client& to, std::int32_t to_id,
                                          const std::string& text) {
  auto result = await(from.send(to_id, text));
  if (result.status != SendStatus::Accepted) {
    return ::testing::AssertionFailure() << "send " << from_id << " -> " << to_id << ": " << describe(result);
  }
  auto message = to.receive(std::chrono::seconds(10));
  if (!message) return ::testing::AssertionFailure() << to_id << " received nothing from " << from_id;
  if (message->sender != from_id || message->text() != text) {
    return ::testing::AssertionFailure() << to_id << " expected \"" << text << "\" from " << from_id << ", got \""
                                         << message->text() << "\" from " << message->sender;
  }
  return ::testing::AssertionSuccess();
}

// Sends until the recipient is registered, for recipients that announce nothing when they are (a
// CLI listener, a legacy registration): RecipientOffline means "not yet". Bounded.
inline SendResult send_when_online(Client& sender, std::int32_t recipient, const std::string& text) {
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(15);
  for (;;) {
    auto result = await(sender.send(recipient, text));
    if (result.status != SendStatus::RecipientOffline || std::chrono::steady_clock::now() >= deadline) return result;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
}

// A legacy registration is confirmed by nothing (no Welcome), and a message sent to a legacy client
// before the router processed its registration is dropped (RecipientOffline, which a legacy sender
// never hears of). This proves the registration took effect: native prober sends until accepted,
// and the legacy client receives it.
inline ::testing::AssertionResult confirm_registered(Client& prober, std::int32_t prober_id, Client& legacy,
                                                     std::int32_t legacy_id) {
  auto result = send_when_online(prober, legacy_id, "are you there?");
  if (!result.ok()) return ::testing::AssertionFailure() << "probe to " << legacy_id << ": " << describe(result);
  auto message = legacy.receive(std::chrono::seconds(10));
  if (!message || message->sender != prober_id || message->text() != "are you there?") {
    return ::testing::AssertionFailure() << legacy_id << " did not receive the probe";
  }
  return ::testing::AssertionSuccess();
}

// Both directions: a -> b, then b -> a.
inline ::testing::AssertionResult exchange(Client& a, std::int32_t a_id, Client& b, std::int32_t b_id,
                                           const std::string& tag) {
  if (auto r = deliver(a, a_id, b, b_id, tag + ": hello from " + std::to_string(a_id)); !r) return r;
  return deliver(b, b_id, a, a_id, tag + ": hello from " + std::to_string(b_id));
}

// Client::connect must fail (within 5 s) with Unauthenticated and a reason containing cause: a
// registration the router refused.
inline ::testing::AssertionResult refused(ClientOptions options, const std::string& cause) {
  options.connect_timeout = std::chrono::seconds(5);
  auto client = Client::connect(std::move(options));
  if (client) return ::testing::AssertionFailure() << "connected, but should have been refused (" << cause << ")";
  const std::string& reason = client.error().message;
  if (reason.find("Unauthenticated") == std::string::npos || reason.find(cause) == std::string::npos) {
    return ::testing::AssertionFailure() << "refused, but the reason lacks Unauthenticated / \"" << cause
                                         << "\": " << reason;
  }
  return ::testing::AssertionSuccess();
}

// A raw client registers id; the router must close it with Unauthenticated and a reason containing
// cause. For legacy clients, which get no Error frame.
inline ::testing::AssertionResult registration_closed(RawClientOptions options, std::int32_t id,
                                                      const std::string& cause) {
  auto raw = RawClient::connect(std::move(options));
  if (!raw) return ::testing::AssertionFailure() << "cannot connect: " << raw.error().message;
  (*raw)->send(wire::encode_registration(id));
  auto closed = (*raw)->wait_closed(std::chrono::seconds(10));
  if (!closed) return ::testing::AssertionFailure() << "the router did not close the connection";
  if (!closed->application || closed->error_code != static_cast<std::uint64_t>(wire::ErrorCode::Unauthenticated) ||
      closed->reason.find(cause) == std::string::npos) {
    return ::testing::AssertionFailure() << "closed, but not with Unauthenticated / \"" << cause
                                         << "\": " << closed->to_string();
  }
  return ::testing::AssertionSuccess();
}

// legacy (registered as legacy_id) reaches native: the probe arrives, and so does legacy's message,
// stamped legacy_id.
inline ::testing::AssertionResult legacy_reaches(Client& native, std::int32_t native_id, Client& legacy,
                                                 std::int32_t legacy_id) {
  if (auto r = confirm_registered(native, native_id, legacy, legacy_id); !r) return r;
  if (auto result = await(legacy.send(native_id, "from the past")); !result.ok()) {
    return ::testing::AssertionFailure() << "legacy send: " << describe(result);
  }
  auto message = native.receive(std::chrono::seconds(10));
  if (!message || message->sender != legacy_id || message->text() != "from the past") {
    return ::testing::AssertionFailure() << native_id << " did not receive \"from the past\" from " << legacy_id;
  }
  return ::testing::AssertionSuccess();
}

// ConnectionEvents: records a client's connection events (set_connection_handler).
class ConnectionEvents {
 public:
  void attach(Client& client) {
    client.set_connection_handler([this](bool connected, const std::string& reason) {
      std::lock_guard lock(mutex_);
      events_.emplace_back(connected, reason);
      cv_.notify_all();
    });
  }
  // Waits until at least count events arrived (bounded); returns them all.
  std::vector<std::pair<bool, std::string>> wait(std::size_t count, std::chrono::milliseconds timeout) {
    std::unique_lock lock(mutex_);
    cv_.wait_for(lock, timeout, [&] { return events_.size() >= count; });
    return events_;
  }

 private:
  std::mutex mutex_;
  std::condition_variable cv_;
  std::vector<std::pair<bool, std::string>> events_;
};

// The client `events` is attached to lost its connection exactly once (within 10 s), displaced by a
// newer registration of its id.
inline ::testing::AssertionResult displaced(ConnectionEvents& events) {
  auto seen = events.wait(1, std::chrono::seconds(10));
  if (seen.size() != 1 || seen[0].first || seen[0].second.find("SessionTakenOver") == std::string::npos) {
    auto failure = ::testing::AssertionFailure() << seen.size() << " connection events, expected one SessionTakenOver";
    for (const auto& [connected, reason] : seen) failure << "; " << (connected ? "connected" : reason);
    return failure;
  }
  return ::testing::AssertionSuccess();
}

// The largest payload a router with max_frame_size carries from sender to recipient, by the real
// encoders: both the client's ClientToClient body and the router's delivery body must fit.
inline std::size_t max_payload(std::uint32_t max_frame_size, std::int32_t sender, std::int32_t recipient,
                               std::uint64_t message_id) {
  auto fits = [&](std::size_t size) {
    std::vector<std::uint8_t> payload(size, 0xa5);
    auto frame = wire::encode_client_to_client(sender, recipient, message_id, payload);
    auto delivery = wire::encode_delivery(sender, recipient, message_id, payload);
    return frame.size() - wire::kLengthPrefixSize <= max_frame_size &&
           delivery.size() - wire::kLengthPrefixSize <= max_frame_size;
  };
  std::size_t fitting = 0;  // fits(0) holds for any frame size the server accepts (>= 1024)
  std::size_t too_big = max_frame_size;
  while (too_big - fitting > 1) {
    std::size_t middle = fitting + (too_big - fitting) / 2;
    (fits(middle) ? fitting : too_big) = middle;
  }
  return fitting;
}

}  // namespace debra::testing
