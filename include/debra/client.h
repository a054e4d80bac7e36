// SPDX-License-Identifier: MIT
//
// libdebra: the client library of the debra message router.
//
//   auto client = debra::Client::connect({.server = "127.0.0.1:4433", .id = 1, .ca_file = "cert.pem"});
//   if (!client) { /* client.error().message says why */ }
//   auto reply = (*client)->send(2, "hello").get();   // completes with the router's reply
//   if (auto message = (*client)->receive(std::chrono::seconds(5))) { /* message->sender, ->text() */ }
//
// A Client owns one background thread that runs its QUIC connection. Every public member function is
// thread-safe and none throws.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <future>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include <debra/result.h>

namespace debra {

// Protocol: which wire protocol the client speaks (docs/protocol.md).
enum class Protocol {
  Native,  // ALPN debra/1: replies for every message, router-stamped senders, error messages
  Legacy,  // the original debra protocol: no ALPN, no replies
};

// ClientOptions: where to connect, as whom, and how to behave on the way.
struct ClientOptions {
  // server: the router's address, HOST:PORT or [IPV6]:PORT (numeric, or "localhost").
  std::string server = "127.0.0.1:4433";
  // id: the id to register, 1..2147483647.
  std::int32_t id = 0;
  Protocol protocol = Protocol::Native;
  // token: proof of id for a router run with --auth token (minted by `debra token issue`), sent in
  // the registration. Empty: none is sent. Native only: the legacy protocol has no place for it.
  // A router that refuses the registration makes connect() fail with its reason ("token expired
  // at ...", "missing token", ...), and the client does not retry.
  std::string token;
  // cert_file / key_file: PEM client certificate and its key, for a router run with --auth mtls
  // (minted by `debra cert issue`); the certificate must name options.id. Both or neither. A router
  // that refuses it makes connect() fail with its reason ("certificate is for id 5, not 7", ...).
  std::string cert_file;
  std::string key_file;
  // ca_file: PEM file the router's certificate must chain to (for a router on its default
  // self-signed certificate: its data dir's cert.pem). Empty: the system trust store.
  std::string ca_file;
  // insecure: skip certificate verification, as the original client did. Experiments only.
  bool insecure = false;
  // server_name: the name the certificate must be valid for; empty: the host part of server.
  std::string server_name;
  // connect_timeout: how long connect() waits for the handshake and registration.
  std::chrono::milliseconds connect_timeout{5000};
  // reconnect: after losing an established connection, reconnect and re-register with exponential
  // backoff from reconnect_initial_delay to reconnect_max_delay (with jitter). Not after being
  // displaced by a newer connection with the same id, nor after close().
  bool reconnect = true;
  std::chrono::milliseconds reconnect_initial_delay{100};
  std::chrono::milliseconds reconnect_max_delay{5000};
  // keep_alive: ping the router after this long without traffic, so idle clients stay connected.
  std::chrono::milliseconds keep_alive{10000};
  std::chrono::milliseconds idle_timeout{30000};
  // max_udp_payload: the largest UDP payload the client sends (bytes, 1,200 to 65,507), as the
  // router's --max-udp-payload: where the route to the router carries more than Path MTU discovery
  // finds (1,452 bytes; loopback, jumbo frames) datagrams grow to it once the handshake is confirmed;
  // at or below 1,452 it caps discovery.
  std::size_t max_udp_payload = 16'000;
  // auto_acknowledge: acknowledge each message to the router as soon as receive() returns it or the
  // message handler has run. Turn it off to acknowledge only once the message is safely processed
  // (acknowledge()); the router redelivers unacknowledged messages after a reconnect.
  bool auto_acknowledge = true;
};

// SendStatus: the outcome of one send.
enum class SendStatus {
  Accepted,          // the router took the message (native: stored durably, it will reach the recipient;
                     // legacy: written to the stream)
  RecipientOffline,  // a router without a store has no connection for the recipient; dropped
  Rejected,          // the router refused it; error_code and reason say why
  NotConnected,      // the client had no registered connection (or lost it before the reply)
  InvalidArgument,   // the client refused it before sending (bad recipient id, payload too large)
};
std::string_view to_string(SendStatus status);

// SendResult: the router's answer to one message.
struct SendResult {
  SendStatus status = SendStatus::NotConnected;
  std::uint64_t message_id = 0;
  std::uint16_t error_code = 0;  // the wire ErrorCode (docs/protocol.md) when Rejected
  std::string reason;
  // When rejected with RateLimited: how long until the router would admit the message; zero otherwise.
  std::chrono::milliseconds retry_after{0};
  bool ok() const { return status == SendStatus::Accepted; }
};

// Receipt: what became of a message sent with SendOptions::receipt.
struct Receipt {
  std::uint64_t message_id = 0;
  std::int32_t recipient = 0;
  bool delivered = false;  // true: the recipient acknowledged it; false: it expired undelivered
};

// SendOptions: per-message choices.
struct SendOptions {
  // message_id: the id the router deduplicates retries by (per sender); 0 picks a fresh one. Send
  // again with the same id after a lost reply, and the recipient still gets the message once.
  std::uint64_t message_id = 0;
  // on_receipt: when set, the router sends a receipt once the recipient acknowledges the message
  // (or it expires), and this runs on the client's thread. Only while this client is connected.
  std::function<void(const Receipt&)> on_receipt;
};

// Message: a message received from another client.
struct Message {
  std::int32_t sender = 0;         // stamped by the router (native) or as forwarded (legacy)
  std::uint64_t message_id = 0;    // the sender's id for it (native senders; 0 from legacy ones)
  std::uint64_t sequence = 0;      // the router's number for it, for acknowledge()
  std::vector<std::uint8_t> payload;
  std::string_view text() const { return {reinterpret_cast<const char*>(payload.data()), payload.size()}; }
};

// Client: one registered connection to a debra router.
class Client {
 public:
  // Connects, completes the handshake and registers options.id. Blocks until registered (native:
  // the router's Welcome; legacy: the registration is sent) or fails with a reason.
  static Result<std::unique_ptr<Client>, Error> connect(ClientOptions options);
  ~Client();  // close()s
  Client(const Client&) = delete;
  Client& operator=(const Client&) = delete;

  // Sends payload to recipient. The future completes with the router's reply (native), or once the
  // message is written (legacy). Messages from one client reach each recipient in send order.
  std::future<SendResult> send(std::int32_t recipient, std::span<const std::uint8_t> payload,
                               SendOptions options = {});
  std::future<SendResult> send(std::int32_t recipient, std::string_view text, SendOptions options = {}) {
    return send(recipient, std::span(reinterpret_cast<const std::uint8_t*>(text.data()), text.size()),
                std::move(options));
  }

  // Tells the router that message was taken, so it is deleted from the router's store (native).
  // Only needed with auto_acknowledge off.
  void acknowledge(const Message& message);

  // The next received message, waiting up to timeout; nullopt on timeout or once closed.
  std::optional<Message> receive(std::chrono::milliseconds timeout);

  // Delivers messages to handler on the client's thread instead of the receive() queue. The handler
  // must not block; set it before messages are expected.
  void set_message_handler(std::function<void(Message)> handler);

  // Called on the client's thread whenever the connection is lost (reason says who ended it and why)
  // and whenever it is re-established (reason empty).
  void set_connection_handler(std::function<void(bool connected, const std::string& reason)> handler);

  // Sends what is queued, closes the connection (application code 0) and stops the thread. Bounded
  // in time; idempotent.
  void close();

  bool connected() const;
  // The largest frame the router accepts, from its Welcome (native).
  std::uint32_t max_frame_size() const;
  // Why the last registered connection was lost (failed reconnect attempts after it do not change
  // it), or, before the first registration, why connecting failed; empty if neither happened.
  std::string last_disconnect_reason() const;

  class Impl;

 private:
  explicit Client(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace debra
