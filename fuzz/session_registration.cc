// SPDX-License-Identifier: MIT
//
// libFuzzer target for the registration and authentication path: the bytes two clients send on their
// session streams go through the real server::Session (framing, decode, registration, token
// verification with --auth token, messages, acks) into a real core::Router (forward-only, as with
// --store none). Only the connection under each Session is in memory (server::SessionConnection):
// it records what the session writes and how it closes, as QUIC would carry it.
//
// Input: byte 0 holds flags (bit 0/1: client A/B is legacy, bit 2: --legacy allow, bit 3: a 1 KiB
// frame limit). Then operations, one byte each: 0xF0-0xF3 acknowledge A / acknowledge B / close A /
// close B; 0xF4-0xFF end the stream of A or B (FIN); any other byte h feeds the next h >> 1 bytes to
// client (h & 1) in one piece.
//
// Properties checked after every operation, beyond the sanitizers':
// - with --auth token, an id is registered only by a native registration whose token verifies for
//   exactly that id (or a legacy one, only with --legacy allow), and only by the first registration
//   on its stream;
// - every message the router delivers carries the sender's registered id, whatever its frame claimed;
// - the router never writes after it closed a connection, never writes an undecodable frame, and a
//   closed session is not registered any more.
#include <cstdint>
#include <cstdlib>
#include <map>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "auth/token.h"
#include "core/router.h"
#include "server/session_bridge.h"
#include "server/session_connection.h"
#include "util/log.h"
#include "wire/codec.h"

namespace {

using namespace debra;

constexpr quic::StreamId kClientStream = 0;  // the client's first bidirectional stream

auth::TokenSecret fuzz_secret() {
  auth::TokenSecret secret{};
  for (std::size_t i = 0; i < secret.size(); ++i) secret[i] = static_cast<std::uint8_t>(0xd0 + i);
  return secret;
}

void check(bool property) {
  if (!property) std::abort();
}

// InMemoryConnection: keeps what the session writes, per stream, decoded as the client would.
class InMemoryConnection final : public server::SessionConnection {
 public:
  explicit InMemoryConnection(bool legacy)
      : alpn_(legacy ? "" : std::string(wire::kAlpn)), remote_(*net::Address::parse("127.0.0.1:40000")) {}

  const std::string& alpn() const override { return alpn_; }
  const net::Address& remote_address() const override { return remote_; }
  Result<quic::StreamId, Error> open_uni_stream() override {
    quic::StreamId id = next_uni_;
    next_uni_ += 4;
    streams_.emplace(id, Stream{});
    return id;
  }
  std::uint64_t write(quic::StreamId id, std::span<const std::uint8_t> bytes) override {
    check(!closed_);  // nothing may follow CONNECTION_CLOSE
    auto it = streams_.find(id);
    check(it != streams_.end());  // only the client's stream or a lane the session opened
    Stream& stream = it->second;
    stream.reader.append(bytes);
    for (;;) {
      auto frame = stream.reader.next();
      check(frame.has_value());
      if (!frame->has_value()) break;
      auto message = wire::decode(**frame);
      check(message.has_value());  // the router writes only frames a client can read
      received.push_back(Received{message->type, message->client_id, message->for_client, message->error_code});
    }
    stream.offset += bytes.size();
    return stream.offset;
  }
  std::uint64_t acknowledged_offset(quic::StreamId id) const override {
    auto it = streams_.find(id);
    return it == streams_.end() ? 0 : it->second.offset;  // everything written is acknowledged
  }
  std::uint64_t queued_bytes() const override { return 0; }
  void close(std::uint64_t app_error_code, std::string) override {
    if (!closed_) close_code = app_error_code;
    closed_ = true;
  }
  const quic::PeerCertificate& peer_certificate() const override { return no_certificate_; }
  // In memory there is no flow control to hold back.
  void hold_credit(std::uint64_t) override {}
  void release_credit(quic::StreamId, std::uint64_t) override {}

  bool closed() const { return closed_; }

  struct Received {
    wire::MessageType type;
    std::int32_t client_id;
    std::int32_t for_client;
    wire::ErrorCode error_code;
  };
  std::vector<Received> received;  // every frame the router wrote, in order
  std::uint64_t close_code = 0;

 private:
  struct Stream {
    wire::FrameReader reader{64 * 1024 * 1024};
    std::uint64_t offset = 0;
  };
  std::string alpn_;
  net::Address remote_;
  std::map<quic::StreamId, Stream> streams_{{kClientStream, Stream{}}};
  quic::StreamId next_uni_ = 3;  // server-initiated unidirectional streams: 3, 7, 11, ...
  bool closed_ = false;
  quic::PeerCertificate no_certificate_;
};

// Client: one fuzzed client: its connection, its Session, and the harness's own reading of the bytes
// it sent (the first registration on the stream, if any).
struct Client final : server::SessionOwner {
  Client(bool is_legacy, net::EventLoop& loop, server::SharedCore& core, const server::SessionConfig& config,
         server::SessionCounters& counters)
      : legacy(is_legacy), connection(is_legacy), reader(config.max_frame_size),
        session(connection, loop, core, nullptr, config, counters, *this) {
    session.on_handshake_completed();
  }

  // server::SessionOwner: input is handled after each operation, as a server thread does before its
  // loop sleeps.
  void on_input(server::Session&) override { has_input = true; }
  void on_finished(server::Session&) override { finished = true; }
  void on_replies(server::Session&) override { has_replies = true; }
  void handle_input() {
    if (!has_input) return;
    has_input = false;
    session.handle_input();
  }
  void write_replies() {
    if (!has_replies) return;
    has_replies = false;
    session.write_replies();
  }

  void feed(std::span<const std::uint8_t> bytes, bool fin) {
    if (!reader_failed) {
      reader.append(bytes);
      for (;;) {
        auto frame = reader.next();
        if (!frame.has_value()) {
          reader_failed = true;
          break;
        }
        if (!frame->has_value()) break;
        auto message = wire::decode(**frame);
        if (!message.has_value()) {
          reader_failed = true;
          break;
        }
        if (message->type == wire::MessageType::ClientRegistration && !first_registration) {
          first_registration = Registration{message->client_id, std::string(message->token)};
        }
      }
    }
    session.on_stream_data(kClientStream, bytes, fin);
  }
  void close() {
    if (closed) return;
    closed = true;
    quic::CloseInfo info{quic::CloseInfo::Initiator::Peer, true, 0, "client closed"};
    session.on_closing(info);
    session.on_closed(info);
  }

  struct Registration {
    std::int32_t id;
    std::string token;
  };
  bool legacy;
  InMemoryConnection connection;
  wire::FrameReader reader;
  bool reader_failed = false;
  std::optional<Registration> first_registration;
  bool finished = false;
  bool closed = false;
  bool has_input = false;
  bool has_replies = false;
  server::Session session;
};

// Whether client's current registration with the router is one --auth token may admit.
void check_registration(const Client& client, const core::Router& router, const server::SessionConfig& config,
                        const auth::TokenSecret& secret) {
  std::int32_t id = client.session.client_id();
  if (id == 0 || router.find(id) != &client.session) return;  // not registered
  check(!client.closed && !client.connection.closed());
  check(client.first_registration.has_value() && client.first_registration->id == id);
  if (client.legacy) {
    check(config.allow_legacy);
    return;
  }
  auto verified = auth::verify_token(secret, client.first_registration->token, auth::unix_now());
  check(verified.has_value() && *verified == id);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  static const bool quiet = [] {
    spdlog::set_level(spdlog::level::off);
    return true;
  }();
  (void)quiet;
  if (size == 0) return 0;
  const std::uint8_t flags = data[0];
  const auth::TokenSecret secret = fuzz_secret();
  server::SessionConfig config;
  config.require_token = true;
  config.token_secret = secret;
  config.allow_legacy = (flags & 4) != 0;
  config.max_frame_size = (flags & 8) != 0 ? 1024 : wire::kDefaultMaxFrameSize;
  server::SessionCounters counters;
  core::Router router;  // no store: forward to online recipients, as --store none

  // The rate limits as shipped; the loop only serves their timers, and never runs.
  net::EventLoop loop;
  server::RateLimiting rate_limiting{core::RateLimits{}};
  server::SharedCore core(router, rate_limiting);
  auto held = core.lock();  // one thread: held throughout, as a server thread holds it for its sessions
  Client a((flags & 1) != 0, loop, core, config, counters);
  Client b((flags & 2) != 0, loop, core, config, counters);
  Client* clients[2] = {&a, &b};

  std::size_t offset = 1;
  while (offset < size) {
    const std::uint8_t op = data[offset++];
    Client& client = *clients[op & 1];
    const std::size_t delivered_before[2] = {a.connection.received.size(), b.connection.received.size()};
    if (op >= 0xF4) {
      if (!client.closed) client.feed({}, true);
    } else if (op >= 0xF2) {
      client.close();
    } else if (op >= 0xF0) {
      if (!client.closed) client.session.on_data_acknowledged();
    } else {
      const std::size_t length = std::min<std::size_t>(op >> 1, size - offset);
      if (!client.closed) client.feed({data + offset, length}, false);
      offset += length;
    }
    for (Client* c : clients) c->handle_input();
    router.flush();
    for (Client* c : clients) c->write_replies();

    for (const Client* c : clients) check_registration(*c, router, config, secret);
    // Deliveries this operation caused come from the client it acted on, stamped with its id.
    for (int r = 0; r < 2; ++r) {
      const auto& received = clients[r]->connection.received;
      for (std::size_t i = delivered_before[r]; i < received.size(); ++i) {
        if (received[i].type != wire::MessageType::ClientToClient) continue;
        check(received[i].client_id == client.session.client_id());
        check(received[i].client_id != 0 && received[i].for_client == clients[r]->session.client_id());
      }
    }
    // A closed connection's session holds no id.
    for (const Client* c : clients) {
      if (c->connection.closed() || c->closed) check(router.find(c->session.client_id()) != &c->session);
    }
  }
  a.close();
  b.close();
  check(router.online_count() == 0);
  check(a.finished && b.finished);
  return 0;
}
