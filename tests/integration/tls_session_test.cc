// SPDX-License-Identifier: MIT
//
// The router frees each connection's TLS session once the handshake is done (docs/architecture.md,
// *Decisions and why*). What a connection needs afterwards must still work, and what only the
// session could have answered must end that connection alone.
#include <debra/client.h>
#include <gtest/gtest.h>
#include <ngtcp2/ngtcp2.h>

#include <array>

#include "metrics_scrape.h"
#include "raw_client.h"
#include "server_process.h"
#include "test_support.h"

namespace debra::testing {
namespace {

// QUIC's transport error for a TLS alert is 0x100 plus the alert (RFC 9001 §4.8); unexpected_message is 10.
constexpr std::uint64_t kCryptoErrorUnexpectedMessage = 0x100 + 10;

// Polls the metrics page (republished every 250 ms) until debra_tls_sessions_released_total is expected.
::testing::AssertionResult released_sessions(const ServerProcess& server, double expected) {
  double seen = -1;
  auto deadline = std::chrono::steady_clock::now() + 5s;
  for (;;) {
    if (auto page = scrape_metrics(server); page && page->samples.count("debra_tls_sessions_released_total") != 0) {
      seen = page->samples.at("debra_tls_sessions_released_total");
    }
    if (seen == expected) return ::testing::AssertionSuccess();
    if (std::chrono::steady_clock::now() >= deadline) {
      return ::testing::AssertionFailure() << "debra_tls_sessions_released_total is " << seen << ", expected "
                                           << expected;
    }
    std::this_thread::sleep_for(50ms);
  }
}

TEST(TlsSession, TheRouterFreesItOnceTheHandshakeIsDoneAndTheConnectionSurvivesAKeyUpdate) {
  ServerProcess server;
  ASSERT_TRUE(server.start(with_args({"--metrics-listen", "127.0.0.1:0"})));
  auto raw = RawClient::connect(raw_options(server));
  ASSERT_TRUE(raw) << raw.error().message;
  ASSERT_TRUE((*raw)->register_id(1));
  auto other = connect_client(server, 2);
  ASSERT_TRUE(other);
  EXPECT_TRUE(released_sessions(server, 2));

  // New packet keys both ways: the router derives them from what ngtcp2 kept, with no TLS session.
  auto updated = (*raw)->drive_ngtcp2([](ngtcp2_conn* conn, net::Timestamp now) {
    return ngtcp2_conn_initiate_key_update(conn, now);
  });
  ASSERT_TRUE(updated);
  ASSERT_EQ(*updated, 0) << ngtcp2_strerror(*updated);

  (*raw)->send(wire::encode_client_to_client(1, 2, 1, to_bytes("under the new keys")));
  auto reply = (*raw)->wait_for(wire::MessageType::Reply, 10s);
  ASSERT_TRUE(reply);
  EXPECT_EQ(reply->status, wire::DeliveryStatus::Accepted) << reply->describe();
  auto message = other->receive(10s);
  ASSERT_TRUE(message);
  EXPECT_EQ(message->text(), "under the new keys");

  ASSERT_EQ(await(other->send(1, "and back")).status, SendStatus::Accepted);
  auto back = (*raw)->wait_for(wire::MessageType::ClientToClient, 10s);
  ASSERT_TRUE(back);
  EXPECT_EQ(std::string(back->payload.begin(), back->payload.end()), "and back");
  EXPECT_FALSE((*raw)->closed());
  EXPECT_TRUE((*raw)->receive_errors().empty());
}

TEST(TlsSession, ATlsMessageAfterTheHandshakeEndsOnlyItsOwnConnection) {
  ServerProcess server;
  ASSERT_TRUE(server.start());
  auto a = connect_client(server, 1);
  auto b = connect_client(server, 2);
  ASSERT_TRUE(a && b);
  auto raw = RawClient::connect(raw_options(server));
  ASSERT_TRUE(raw) << raw.error().message;
  ASSERT_TRUE((*raw)->register_id(3));

  // A TLS KeyUpdate, which a QUIC client must never send (RFC 9001 §6), as 1-RTT CRYPTO data.
  static constexpr std::array<std::uint8_t, 5> kKeyUpdate{24, 0, 0, 1, 0};
  auto submitted = (*raw)->drive_ngtcp2([](ngtcp2_conn* conn, net::Timestamp) {
    return ngtcp2_conn_submit_crypto_data(conn, NGTCP2_CRYPTO_LEVEL_APPLICATION, kKeyUpdate.data(), kKeyUpdate.size());
  });
  ASSERT_TRUE(submitted);
  ASSERT_EQ(*submitted, 0) << ngtcp2_strerror(*submitted);

  auto closed = (*raw)->wait_closed(10s);
  ASSERT_TRUE(closed);
  EXPECT_EQ(closed->initiator, quic::CloseInfo::Initiator::Peer) << closed->to_string();
  EXPECT_FALSE(closed->application) << closed->to_string();
  EXPECT_EQ(closed->error_code, kCryptoErrorUnexpectedMessage) << closed->to_string();
  EXPECT_TRUE(exchange(*a, 1, *b, 2, "still chatting"));
}

}  // namespace
}  // namespace debra::testing
