// SPDX-License-Identifier: MIT
//
// Hostile input (#4), the done-when test: while two clients keep chatting, the router
// receives 10,000 garbage UDP datagrams and 200 connections that send garbage or stall mid-handshake;
// the chatting pair loses nothing and the router's memory returns to its baseline afterwards.
//
// Everything the test asserts about the router's state comes from its own /metrics endpoint
// (--metrics-listen), scraped over HTTP as an operator would, and from what arrives at the attackers'
// sockets. All traffic stays on 127.0.0.1; every wait is bounded; the garbage comes from a PRNG with a
// fixed seed, so a failure replays the same bytes.
#include <arpa/inet.h>
#include <debra/client.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <future>
#include <mutex>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "metrics_scrape.h"
#include "net/event_loop.h"
#include "quic/client_endpoint.h"
#include "raw_client.h"
#include "server_process.h"
#include "test_support.h"

// Whether this build (and so the debra-server beside it) runs on AddressSanitizer's allocator.
#if defined(__SANITIZE_ADDRESS__)
#define DEBRA_HOSTILE_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define DEBRA_HOSTILE_ASAN 1
#endif
#endif
#ifndef DEBRA_HOSTILE_ASAN
#define DEBRA_HOSTILE_ASAN 0
#endif
// Whether the debra-server beside this test runs on tcmalloc (DEBRA_MALLOC, set by CMake).
#ifndef DEBRA_HOSTILE_TCMALLOC
#define DEBRA_HOSTILE_TCMALLOC 0
#endif

namespace debra::testing {
namespace {

using Clock = std::chrono::steady_clock;

constexpr int kGarbageDatagrams = 10'000;
constexpr int kGarbageSockets = 10;  // attacker source ports, for the per-source amplification check
constexpr int kGarbageOnStream = 80;  // handshake, then garbage on the session stream
constexpr int kStallMidFrame = 60;    // open the stream, send part of a frame, go quiet
constexpr int kStallMidHandshake = 60;  // send a ClientHello, never finish the handshake
static_assert(kGarbageOnStream + kStallMidFrame + kStallMidHandshake == 200);
// Stateless resets: the endpoint's budget (kResetBurst, kResetsPerSecond in server_endpoint.cc).
constexpr double kResetBurst = 100;
constexpr double kResetsPerSecond = 100;
// RFC 9000 §8.1: before an address is validated, at most three times the bytes received from it.
constexpr std::size_t kAmplificationFactor = 3;
constexpr int kHandshakeTimeoutS = 2;
constexpr int kIdleTimeoutS = 8;

// UdpPeer: a plain UDP socket on 127.0.0.1 connected to the router, counting what goes each way.
class UdpPeer {
 public:
  explicit UdpPeer(std::uint16_t server_port) {
    fd_ = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    sockaddr_in server{};
    server.sin_family = AF_INET;
    server.sin_port = htons(server_port);
    server.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (fd_ < 0 || connect(fd_, reinterpret_cast<sockaddr*>(&server), sizeof server) != 0) {
      ADD_FAILURE() << "udp socket: " << std::strerror(errno);
    }
  }
  ~UdpPeer() {
    if (fd_ >= 0) close(fd_);
  }
  UdpPeer(const UdpPeer&) = delete;
  UdpPeer& operator=(const UdpPeer&) = delete;

  void send(std::span<const std::uint8_t> datagram) {
    if (::send(fd_, datagram.data(), datagram.size(), 0) == static_cast<ssize_t>(datagram.size())) {
      bytes_sent += datagram.size();
      ++datagrams_sent;
    }
  }
  // Reads whatever the router sent back so far, without waiting.
  void drain() {
    std::array<std::uint8_t, 65536> buffer{};
    for (;;) {
      ssize_t n = recv(fd_, buffer.data(), buffer.size(), MSG_DONTWAIT);
      if (n < 0) return;
      bytes_received += static_cast<std::size_t>(n);
      ++datagrams_received;
      // A short header (first bit clear) from the router to a stranger can only be a stateless reset.
      if (n > 0 && (buffer[0] & 0x80) == 0) ++resets_received;
    }
  }

  std::size_t bytes_sent = 0;
  std::size_t datagrams_sent = 0;
  std::size_t bytes_received = 0;
  std::size_t datagrams_received = 0;
  std::size_t resets_received = 0;

 private:
  int fd_ = -1;
};

class Garbage {
 public:
  explicit Garbage(std::uint64_t seed) : random_(seed) {}

  std::size_t below(std::size_t n) { return std::uniform_int_distribution<std::size_t>(0, n - 1)(random_); }
  std::vector<std::uint8_t> bytes(std::size_t size) {
    std::vector<std::uint8_t> out(size);
    for (auto& b : out) b = static_cast<std::uint8_t>(random_());
    return out;
  }
  // Random bytes of any size a datagram on a 1500-byte path may have.
  std::vector<std::uint8_t> noise() { return bytes(1 + below(1472)); }
  // A QUIC v1 Initial header with random connection IDs and a random (undecryptable) payload, padded
  // to 1200 bytes as a real Initial is, so the router must take it for a new connection.
  std::vector<std::uint8_t> initial() {
    std::vector<std::uint8_t> packet{static_cast<std::uint8_t>(0xc0 | below(4)), 0, 0, 0, 1};
    for (int cid = 0; cid < 2; ++cid) {
      std::size_t length = cid == 0 ? 8 + below(13) : below(21);
      packet.push_back(static_cast<std::uint8_t>(length));
      auto id = bytes(length);
      packet.insert(packet.end(), id.begin(), id.end());
    }
    packet.push_back(0);  // no token
    std::size_t payload = 1200 - packet.size() - 2;
    packet.push_back(static_cast<std::uint8_t>(0x40 | (payload >> 8)));  // 2-byte varint length
    packet.push_back(static_cast<std::uint8_t>(payload & 0xff));
    auto body = bytes(payload);
    packet.insert(packet.end(), body.begin(), body.end());
    return packet;
  }
  // A 1-RTT (short header) packet for a random connection ID of the router's length: a stateless
  // reset is its answer.
  std::vector<std::uint8_t> short_header() {
    auto packet = bytes(23 + below(1178));
    packet[0] = static_cast<std::uint8_t>(0x40 | (packet[0] & 0x3f));
    return packet;
  }
  // A frame with a well-formed length prefix and a random body: the router must reject its content.
  std::vector<std::uint8_t> garbage_frame() {
    auto body = bytes(16 + below(300));
    std::vector<std::uint8_t> frame(wire::kLengthPrefixSize);
    wire::write_length_prefix(frame.data(), body.size());
    frame.insert(frame.end(), body.begin(), body.end());
    return frame;
  }

 private:
  std::mt19937_64 random_;
};

// Sends kGarbageDatagrams from kGarbageSockets sockets: a third noise, a third Initial-shaped, a third
// short-header. Paced in bursts, so the kernel's socket buffer does not drop what the router should see.
void send_garbage(std::vector<std::unique_ptr<UdpPeer>>& peers, std::uint64_t seed) {
  Garbage garbage(seed);
  for (int i = 0; i < kGarbageDatagrams; ++i) {
    UdpPeer& peer = *peers[static_cast<std::size_t>(i) % peers.size()];
    switch (garbage.below(3)) {
      case 0: peer.send(garbage.noise()); break;
      case 1: peer.send(garbage.initial()); break;
      default: peer.send(garbage.short_header()); break;
    }
    if (i % 50 == 49) {
      for (auto& p : peers) p->drain();
      std::this_thread::sleep_for(2ms);
    }
  }
}

// Captures real ClientHello Initials: ngtcp2 clients (quic::ClientEndpoint) connect to a socket of
// ours, the loop runs one iteration (which sends the first flight) and stops. The test replays each
// Initial from its own socket and never answers, so the router holds a handshake that never ends.
class NoApplication final : public quic::ConnectionHandler {
 public:
  void on_stream_data(quic::StreamId, std::span<const std::uint8_t>, bool) override {}
  void on_closed(const quic::CloseInfo&) override {}
};

std::vector<std::vector<std::uint8_t>> capture_client_hellos(int count, const std::string& ca_file) {
  std::vector<std::vector<std::uint8_t>> initials;
  int capture = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  sockaddr_in local{};
  local.sin_family = AF_INET;
  local.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t length = sizeof local;
  if (bind(capture, reinterpret_cast<sockaddr*>(&local), sizeof local) != 0 ||
      getsockname(capture, reinterpret_cast<sockaddr*>(&local), &length) != 0) {
    ADD_FAILURE() << "capture socket: " << std::strerror(errno);
    return initials;
  }
  auto target = net::Address::parse("127.0.0.1:" + std::to_string(ntohs(local.sin_port)));
  quic::TlsClientOptions tls_options;
  tls_options.ca_file = ca_file;
  tls_options.alpn = std::string(wire::kAlpn);
  auto tls = quic::TlsClientContext::create(tls_options);
  if (!target || !tls) {
    ADD_FAILURE() << "cannot set up the ClientHello capture";
    return initials;
  }
  {
    net::EventLoop loop;
    NoApplication handler;
    std::vector<std::unique_ptr<quic::ClientEndpoint>> clients;
    for (int i = 0; i < count; ++i) {
      auto client = quic::ClientEndpoint::connect(loop, *target, *tls, quic::TransportSettings{}, handler);
      if (client) clients.push_back(std::move(*client));
    }
    loop.post([&loop] { loop.stop(); });
    loop.run();
    timeval wait{2, 0};
    setsockopt(capture, SOL_SOCKET, SO_RCVTIMEO, &wait, sizeof wait);
    std::array<std::uint8_t, 65536> buffer{};
    while (static_cast<int>(initials.size()) < count) {
      ssize_t n = recv(capture, buffer.data(), buffer.size(), 0);
      if (n <= 0) break;
      initials.emplace_back(buffer.begin(), buffer.begin() + n);
    }
  }  // the clients go away without a sound: their loop never runs again
  close(capture);
  EXPECT_EQ(static_cast<int>(initials.size()), count) << "captured too few ClientHellos";
  return initials;
}

// Chat: one direction of the chatting pair. The sender keeps sending "N" (N = 0, 1, ...) with a few
// in flight until told to stop; every send must be Accepted. The receiver checks that exactly
// 0..N-1 arrive, each once, in order, stamped with the sender's id.
class Chat {
 public:
  Chat(Client& from, std::int32_t from_id, Client& to, std::int32_t to_id)
      : from_(from), from_id_(from_id), to_(to), to_id_(to_id) {}

  void start() {
    sender_ = std::thread([this] { send_loop(); });
    receiver_ = std::thread([this] { receive_loop(); });
  }
  // Stops sending, then waits (bounded) until the receiver has every message.
  void finish() {
    stop_ = true;
    sender_.join();
    receiver_.join();
  }
  std::string failure() const {
    std::lock_guard lock(mutex_);
    return failure_;
  }
  std::uint64_t sent() const { return sent_; }
  std::uint64_t received() const { return received_; }

 private:
  void send_loop() {
    std::deque<std::future<SendResult>> in_flight;
    auto settle_oldest = [&] {
      SendResult result = await(std::move(in_flight.front()));
      in_flight.pop_front();
      if (result.status != SendStatus::Accepted) fail("send: " + describe(result));
    };
    auto deadline = Clock::now() + 50s;
    while (!stop_ && sent_ < 100'000 && Clock::now() < deadline) {
      in_flight.push_back(from_.send(to_id_, std::to_string(sent_)));
      ++sent_;
      if (in_flight.size() >= 8) settle_oldest();
      std::this_thread::sleep_for(5ms);
    }
    while (!in_flight.empty()) settle_oldest();
    sender_done_ = true;
  }
  void receive_loop() {
    auto deadline = Clock::now() + 55s;
    while (Clock::now() < deadline && !(sender_done_ && received_ == sent_)) {
      auto message = to_.receive(100ms);
      if (!message) continue;
      std::string expected = std::to_string(received_);
      if (message->sender != from_id_ || message->text() != expected) {
        fail(std::to_string(to_id_) + " expected \"" + expected + "\" from " + std::to_string(from_id_) +
             ", got \"" + std::string(message->text()) + "\" from " + std::to_string(message->sender));
        return;
      }
      ++received_;
    }
    if (received_ != sent_) {
      fail(std::to_string(to_id_) + " received " + std::to_string(received_) + " of " + std::to_string(sent_));
    }
  }
  void fail(std::string why) {
    std::lock_guard lock(mutex_);
    if (failure_.empty()) failure_ = std::move(why);
  }

  Client& from_;
  std::int32_t from_id_;
  Client& to_;
  std::int32_t to_id_;
  std::thread sender_;
  std::thread receiver_;
  std::atomic<bool> stop_{false};
  std::atomic<bool> sender_done_{false};
  std::atomic<std::uint64_t> sent_{0};
  std::atomic<std::uint64_t> received_{0};
  mutable std::mutex mutex_;
  std::string failure_;
};

MetricsScrape scrape(const ServerProcess& server) {
  auto page = scrape_metrics(server);
  if (!page) {
    ADD_FAILURE() << page.error().message;
    return {};
  }
  return std::move(*page);
}

// Polls /metrics until every listed gauge has its value (bounded); returns the last scrape.
MetricsScrape wait_for_gauges(const ServerProcess& server, const std::vector<std::pair<std::string, double>>& wanted,
                              std::chrono::milliseconds timeout) {
  auto deadline = Clock::now() + timeout;
  for (;;) {
    MetricsScrape page = scrape(server);
    bool all = std::all_of(wanted.begin(), wanted.end(), [&](const auto& w) { return page.shows(w.first, w.second); });
    if (all || Clock::now() >= deadline) return page;
    std::this_thread::sleep_for(100ms);
  }
}

// The router at rest with only the chatting pair connected.
const std::vector<std::pair<std::string, double>> kOnlyThePair = {
    {"debra_connections", 2}, {"debra_sessions", 2}, {"debra_clients_online", 2}, {"debra_handshakes_in_progress", 0},
    {"debra_queued_bytes", 0}};

struct RoundResult {
  double seconds = 0;
  std::size_t resets_received = 0;
};

// One round of abuse while the pair chats; returns once every bad connection is gone from the router.
RoundResult abuse_round(ServerProcess& server, Client& a, Client& b, std::uint64_t seed) {
  RoundResult round;
  std::this_thread::sleep_for(300ms);  // the page is at most 250 ms old: let it catch up with the last exchange
  auto started = Clock::now();
  MetricsScrape before = scrape(server);
  Chat a_to_b(a, 1, b, 2);
  Chat b_to_a(b, 2, a, 1);
  a_to_b.start();
  b_to_a.start();

  // Stalled handshakes first: they hold "handshakes in progress" slots, so everyone after them meets
  // the router's Retry defence (--retry-threshold) as a real flood would.
  auto hellos = capture_client_hellos(kStallMidHandshake, server.ca_file());
  std::vector<std::unique_ptr<UdpPeer>> stalled;
  for (const auto& hello : hellos) {
    stalled.push_back(std::make_unique<UdpPeer>(server.port()));
    stalled.back()->send(hello);
  }

  std::vector<std::unique_ptr<UdpPeer>> garbage_peers;
  for (int i = 0; i < kGarbageSockets; ++i) garbage_peers.push_back(std::make_unique<UdpPeer>(server.port()));
  std::thread flood([&] { send_garbage(garbage_peers, seed); });

  // The bad connections, from a few threads at once. Each garbage-sender must be closed with
  // ProtocolError after an Error frame saying so.
  std::mutex mutex;
  std::vector<std::string> failures;
  std::vector<std::unique_ptr<RawClient>> stalled_mid_frame;
  auto bad_connections = [&](int worker, int workers) {
    Garbage garbage(seed * 31 + static_cast<std::uint64_t>(worker));
    for (int i = worker; i < kGarbageOnStream + kStallMidFrame; i += workers) {
      auto client = RawClient::connect(raw_options(server), 20s);
      if (!client) {
        std::lock_guard lock(mutex);
        failures.push_back("connect: " + client.error().message);
        continue;
      }
      if (i < kGarbageOnStream) {
        (*client)->send(garbage.garbage_frame());
        auto error = (*client)->wait_for(wire::MessageType::Error, 20s);
        auto closed = (*client)->wait_closed(20s);
        std::lock_guard lock(mutex);
        if (!error || error->error_code != wire::ErrorCode::ProtocolError) {
          failures.push_back("garbage frame: " + (error ? error->describe() : std::string("no Error frame")));
        } else if (!closed || closed->error_code != static_cast<std::uint64_t>(wire::ErrorCode::ProtocolError)) {
          failures.push_back("garbage frame: closed with " + (closed ? closed->to_string() : std::string("nothing")));
        }
        continue;
      }
      // Half of the stallers register first, so the router must also release their ids.
      if (i % 2 == 0 && !(*client)->register_id(1000 + i)) {
        std::lock_guard lock(mutex);
        failures.push_back("register " + std::to_string(1000 + i));
      }
      std::vector<std::uint8_t> partial(wire::kLengthPrefixSize + 10, 0x5a);
      wire::write_length_prefix(partial.data(), 1000);
      (*client)->send(partial);
      std::lock_guard lock(mutex);
      stalled_mid_frame.push_back(std::move(*client));
    }
  };
  std::vector<std::thread> workers;
  for (int w = 0; w < 4; ++w) workers.emplace_back(bad_connections, w, 4);
  for (auto& worker : workers) worker.join();
  flood.join();

  a_to_b.finish();
  b_to_a.finish();
  EXPECT_EQ(a_to_b.failure(), "");
  EXPECT_EQ(b_to_a.failure(), "");
  EXPECT_GT(a_to_b.sent(), 100u);
  EXPECT_GT(b_to_a.sent(), 100u);
  for (const auto& failure : failures) ADD_FAILURE() << failure;
  EXPECT_EQ(stalled_mid_frame.size(), static_cast<std::size_t>(kStallMidFrame));

  // The router drops the stalled handshakes at --handshake-timeout and the silent streams at
  // --idle-timeout; then only the pair is left.
  MetricsScrape after = wait_for_gauges(server, kOnlyThePair, 30s);
  for (const auto& [gauge, value] : kOnlyThePair) EXPECT_EQ(after.value(gauge), value) << gauge << "\n" << after.text;
  for (auto& client : stalled_mid_frame) EXPECT_TRUE(client->wait_closed(10s)) << "a staller's connection lives on";
  round.seconds = std::chrono::duration<double>(Clock::now() - started).count();

  auto delta = [&](const std::string& key) { return after.value(key) - before.value(key); };
  // Only the garbage-senders failed: the chat, the stallers and the flood caused no session error.
  EXPECT_EQ(delta("debra_protocol_errors_total"), kGarbageOnStream);
  EXPECT_EQ(delta("debra_messages_in_total"), static_cast<double>(a_to_b.sent() + b_to_a.sent()));
  EXPECT_GE(delta("debra_datagrams_received_total"), kGarbageDatagrams);

  // Stateless answers (resets, Version Negotiation, Retry) are each smaller than what triggered them,
  // so a garbage source never gets back even as many bytes as it sent. Resets stay within their
  // budget for the round's duration.
  for (auto& peer : garbage_peers) peer->drain();
  for (auto& peer : garbage_peers) {
    round.resets_received += peer->resets_received;
    EXPECT_LE(peer->bytes_received, peer->bytes_sent);
  }
  double reset_budget = kResetBurst + kResetsPerSecond * round.seconds;
  EXPECT_GT(round.resets_received, 0u);
  EXPECT_LE(delta("debra_stateless_resets_sent_total"), reset_budget);
  EXPECT_LE(static_cast<double>(round.resets_received), reset_budget);
  // The stalled handshakes: the router never sent an unvalidated address more than 3x what it got.
  for (auto& peer : stalled) {
    peer->drain();
    EXPECT_GT(peer->bytes_received, 0u) << "the router did not answer a ClientHello";
    EXPECT_LE(peer->bytes_received, kAmplificationFactor * peer->bytes_sent);
  }
  return round;
}

// ASan keeps freed memory in a quarantine (256 MB by default) and does not hand freed pages back to
// the kernel, so the router's RSS would only ever grow. For the server process alone: a 1 MB
// quarantine, and free pages released to the kernel every 100 ms. The check is then about what the
// router still holds, not about the allocator's caches.
std::string asan_options_for_memory_check() {
  const char* inherited = std::getenv("ASAN_OPTIONS");
  std::string options = inherited != nullptr ? inherited : "";
  if (!options.empty()) options += ":";
  return "ASAN_OPTIONS=" + options + "quarantine_size_mb=1:thread_local_quarantine_size_kb=64:"
                                     "allocator_release_to_os_interval_ms=100";
}

TEST(HostileInput, ChattingPairLosesNothingAndMemoryReturnsToBaseline) {
  ServerProcess server;
  ServerOptions options = with_args({"--metrics-listen", "127.0.0.1:0", "--handshake-timeout",
                                     std::to_string(kHandshakeTimeoutS), "--idle-timeout",
                                     std::to_string(kIdleTimeoutS),
                                     // An fsync on a busy CI disk can stall the loop for seconds; what
                                     // is tested here is input handling, not durability.
                                     "--sync", "off",
                                     // Every attacker shares 127.0.0.1; limits_test covers this limit.
                                     "--max-connections-per-address", "1000"});
  options.env.push_back(asan_options_for_memory_check());
  ASSERT_TRUE(server.start(options));
  auto a = connect_client(server, 1);
  auto b = connect_client(server, 2);
  ASSERT_TRUE(a && b);
  ASSERT_TRUE(exchange(*a, 1, *b, 2, "before"));

  // The first round brings every code path's allocations (TLS, ngtcp2, the store's page cache, the
  // allocator's size classes) to their working size; the baseline is the router at rest after it.
  abuse_round(server, *a, *b, 1);
  double baseline = wait_for_gauges(server, kOnlyThePair, 10s).value("process_resident_memory_bytes");
  RoundResult second = abuse_round(server, *a, *b, 2);
  ASSERT_TRUE(exchange(*a, 1, *b, 2, "after"));
  MetricsScrape rest = wait_for_gauges(server, kOnlyThePair, 10s);
  double resident = rest.value("process_resident_memory_bytes");
  std::printf("hostile round: %.1f s, %zu stateless resets; RSS %.1f MiB after the first round, %.1f MiB after the "
              "second\n",
              second.seconds, second.resets_received, baseline / (1 << 20), resident / (1 << 20));
  // glibc's malloc spreads the threads over arenas it grows and seldom gives back (26 to 61 MiB over
  // these two rounds), so on it the RSS says nothing and the gauges above are the check. ASan's
  // allocator with the options above, and tcmalloc, reuse what the first round freed. CI runs this
  // test on both (scripts/test.sh).
  if (!DEBRA_HOSTILE_ASAN && !DEBRA_HOSTILE_TCMALLOC) {
    std::printf("the router runs on the system allocator: the resident-memory bound is not checked\n");
    return;
  }
  // Measured on this test: under ASan, five clean rounds in a row grew the resident set by 5 to
  // 14 MiB each (the allocator's page-granular release); on tcmalloc the second round grew it by
  // 0.8 to 3.1 MiB. A router that kept the connections of a round instead of destroying them
  // (ServerEndpoint's dead_ never cleared) grew by 228 MiB under ASan and by 135 MiB on tcmalloc.
  // 32 MiB is twice the noise and at most a quarter of that leak. Keeping only the 200 real
  // connections (about 15 MiB) would slip under it; the gauges above catch the usual form of that
  // bug, a connection the endpoint never lets go.
  EXPECT_LE(resident, baseline + 32.0 * (1 << 20)) << rest.text;
}

}  // namespace
}  // namespace debra::testing
