// SPDX-License-Identifier: MIT
//
// The router's lifecycle as clients see it: graceful shutdown on SIGTERM/SIGINT, and clients
// reconnecting by themselves to a restarted router.
#include <debra/client.h>
#include <gtest/gtest.h>

#include <thread>

#include "raw_client.h"
#include "server_process.h"
#include "test_support.h"

namespace debra::testing {
namespace {

void expect_graceful_shutdown(int sig) {
  ServerProcess server;
  ASSERT_TRUE(server.start());
  constexpr int kClients = 3;
  std::vector<ConnectionEvents> events(kClients);  // outlives the clients, whose handlers it serves
  std::vector<std::unique_ptr<Client>> clients;
  for (int i = 0; i < kClients; ++i) {
    clients.push_back(connect_client(server, i + 1));
    ASSERT_TRUE(clients.back());
    events[static_cast<std::size_t>(i)].attach(*clients.back());
  }
  // Raw clients see the exact codes.
  auto native = RawClient::connect(raw_options(server, true));
  auto legacy = RawClient::connect(raw_options(server, false));
  ASSERT_TRUE(native) << native.error().message;
  ASSERT_TRUE(legacy) << legacy.error().message;
  ASSERT_TRUE((*native)->register_id(10));
  ASSERT_TRUE((*legacy)->register_id(11));
  ASSERT_TRUE(deliver(*clients[0], 1, *clients[1], 2, "before the shutdown"));
  // The legacy registration has no Welcome; a delivery proves it took effect.
  auto sent = send_when_online(*clients[0], 11, "registered?");
  ASSERT_TRUE(sent.ok()) << describe(sent);
  ASSERT_TRUE((*legacy)->wait_for(wire::MessageType::ClientToClient, 10s));

  auto exit = server.stop(sig, 10s);
  EXPECT_TRUE(exit.exited()) << exit.describe();
  EXPECT_EQ(exit.exit_code(), 0) << exit.describe();
  EXPECT_LT(exit.elapsed, 5s) << exit.describe();

  for (int i = 0; i < kClients; ++i) {
    SCOPED_TRACE("client " + std::to_string(i + 1));
    auto seen = events[static_cast<std::size_t>(i)].wait(1, 10s);
    ASSERT_FALSE(seen.empty()) << "no disconnect reported";
    EXPECT_FALSE(seen[0].first);
    EXPECT_NE(seen[0].second.find("ServerShutdown"), std::string::npos) << seen[0].second;
    EXPECT_NE(clients[static_cast<std::size_t>(i)]->last_disconnect_reason().find("ServerShutdown"),
              std::string::npos);
    EXPECT_FALSE(clients[static_cast<std::size_t>(i)]->connected());
  }
  auto error = (*native)->next_message(10s);
  ASSERT_TRUE(error);
  EXPECT_EQ(error->type, wire::MessageType::Error) << error->describe();
  EXPECT_EQ(error->error_code, wire::ErrorCode::ServerShutdown) << error->describe();
  for (auto* raw : {native->get(), legacy->get()}) {
    auto closed = raw->wait_closed(10s);
    ASSERT_TRUE(closed);
    EXPECT_EQ(closed->initiator, quic::CloseInfo::Initiator::Peer) << closed->to_string();
    EXPECT_TRUE(closed->application) << closed->to_string();
    EXPECT_EQ(closed->error_code, static_cast<std::uint64_t>(wire::ErrorCode::ServerShutdown)) << closed->to_string();
  }
}

TEST(LifecycleIntegration, SigtermShutsDownGracefully) { expect_graceful_shutdown(SIGTERM); }

TEST(LifecycleIntegration, SigintShutsDownGracefully) { expect_graceful_shutdown(SIGINT); }

// With nobody connected, shutdown is immediate.
TEST(LifecycleIntegration, SigtermWithoutClients) {
  ServerProcess server;
  ASSERT_TRUE(server.start());
  auto exit = server.stop(SIGTERM, 10s);
  EXPECT_EQ(exit.exit_code(), 0) << exit.describe();
  EXPECT_LT(exit.elapsed, 2s) << exit.describe();
}

// A client whose router restarts (same port, same data dir and so the same certificate) reconnects
// and re-registers by itself.
TEST(LifecycleIntegration, ClientsReconnectAfterRestart) {
  ServerProcess server;
  // Forward-only mode: with the store, an acknowledgement still in flight at the SIGTERM makes the
  // router redeliver "first life" after the restart (at-least-once; DurabilityIntegration covers it),
  // which is not what this test is about.
  ASSERT_TRUE(server.start(with_args({"--store", "none"})));
  const std::string listen = server.address();  // the port the kernel picked, reused below
  std::vector<ConnectionEvents> events(2);  // outlives the clients, whose handlers it serves
  std::vector<std::unique_ptr<Client>> clients;
  for (std::int32_t id : {1, 2}) {
    auto options = client_options(server, id);
    options.reconnect_initial_delay = 50ms;
    options.reconnect_max_delay = 500ms;
    clients.push_back(connect_client(options));
    ASSERT_TRUE(clients.back());
    events[static_cast<std::size_t>(id - 1)].attach(*clients.back());
  }
  ASSERT_TRUE(exchange(*clients[0], 1, *clients[1], 2, "first life"));

  auto exit = server.stop(SIGTERM, 10s);
  ASSERT_EQ(exit.exit_code(), 0) << exit.describe();
  for (auto& seen : events) {
    auto lost = seen.wait(1, 10s);
    ASSERT_EQ(lost.size(), 1u);
    EXPECT_FALSE(lost[0].first);
    EXPECT_NE(lost[0].second.find("ServerShutdown"), std::string::npos) << lost[0].second;
  }
  // While the router is away, sends fail fast instead of hanging.
  auto offline = await(clients[0]->send(2, "into the void"));
  EXPECT_EQ(offline.status, SendStatus::NotConnected) << describe(offline);
  EXPECT_FALSE(clients[0]->connected());

  ASSERT_TRUE(server.start(listening_on(listen, {"--store", "none"})));
  ASSERT_EQ(server.address(), listen);
  for (auto& seen : events) {
    auto back = seen.wait(2, 30s);
    ASSERT_EQ(back.size(), 2u) << "no reconnect reported";
    EXPECT_TRUE(back[1].first);
    EXPECT_TRUE(back[1].second.empty()) << back[1].second;
  }
  EXPECT_TRUE(clients[0]->connected());
  EXPECT_TRUE(clients[1]->connected());
  EXPECT_TRUE(exchange(*clients[0], 1, *clients[1], 2, "second life"));
  // Exactly one loss and one reconnect each: no flapping.
  EXPECT_EQ(events[0].wait(2, 0ms).size(), 2u);
  EXPECT_EQ(events[1].wait(2, 0ms).size(), 2u);
}

}  // namespace
}  // namespace debra::testing

namespace debra::testing {
namespace {

// While the router is away, each reconnect attempt fails; what the client reports as the reason it
// was lost stays the router's (ServerShutdown), not the last attempt's refusal or timeout.
TEST(LifecycleIntegration, TheReasonAConnectionWasLostOutlivesFailedReconnects) {
  ServerProcess server;
  ASSERT_TRUE(server.start(with_args({"--store", "none"})));
  ConnectionEvents events;  // outlives the client, whose handler it serves
  auto options = client_options(server, 1);
  options.reconnect_initial_delay = 20ms;
  options.reconnect_max_delay = 100ms;
  options.connect_timeout = 300ms;
  auto client = connect_client(options);
  ASSERT_TRUE(client);
  events.attach(*client);
  ASSERT_EQ(server.stop(SIGTERM, 10s).exit_code(), 0);
  ASSERT_EQ(events.wait(1, 10s).size(), 1u);

  // A send while disconnected names the latest failure; wait until it is an attempt's.
  std::string attempt_failure;
  for (auto deadline = std::chrono::steady_clock::now() + 10s; std::chrono::steady_clock::now() < deadline;) {
    auto offline = await(client->send(2, "anyone?"));
    ASSERT_EQ(offline.status, SendStatus::NotConnected) << describe(offline);
    if (offline.reason.find("ServerShutdown") == std::string::npos) {
      attempt_failure = offline.reason;
      break;
    }
    std::this_thread::sleep_for(20ms);
  }
  ASSERT_FALSE(attempt_failure.empty()) << "no reconnect attempt failed within 10 s";
  EXPECT_NE(client->last_disconnect_reason().find("ServerShutdown"), std::string::npos)
      << client->last_disconnect_reason() << " (the failed attempt: " << attempt_failure << ")";
  EXPECT_EQ(events.wait(2, 0ms).size(), 1u) << "a failed attempt is not reported as a lost connection";
}

// A router killed without a goodbye and restarted on the same port and data dir (so with the same
// QUIC static secret) answers the old connection's next packet with a stateless reset: the client
// learns at once that its connection is gone, instead of after the idle timeout, and reconnects.
TEST(LifecycleIntegration, StatelessResetAfterACrashEndsTheOldConnectionAtOnce) {
  ServerProcess server;
  ASSERT_TRUE(server.start());
  const std::string listen = server.address();
  ConnectionEvents events;  // outlives the client, whose handler it serves
  auto options = client_options(server, 1);
  options.idle_timeout = 30s;       // far beyond the bound below: only a reset can explain a quick loss
  options.keep_alive = 200ms;       // the packet that draws the reset
  options.reconnect_initial_delay = 50ms;
  auto client = connect_client(options);
  ASSERT_TRUE(client);
  events.attach(*client);
  server.stop(SIGKILL);
  ASSERT_TRUE(server.start(listening_on(listen)));
  auto started = std::chrono::steady_clock::now();
  auto seen = events.wait(1, 10s);
  ASSERT_GE(seen.size(), 1u) << "the client never noticed the restart";
  EXPECT_FALSE(seen[0].first);
  EXPECT_NE(seen[0].second.find("stateless reset"), std::string::npos) << seen[0].second;
  EXPECT_LT(std::chrono::steady_clock::now() - started, 5s);
  auto back = events.wait(2, 10s);
  ASSERT_EQ(back.size(), 2u) << "no reconnect";
  EXPECT_TRUE(back[1].first);
}

// The idle timeout in force is the smaller of both sides'. libdebra pings every 10 s by default, so
// against a router with a shorter one it must ping sooner, or every quiet spell ends its connection.
TEST(LifecycleIntegration, AnIdleClientStaysConnectedToARouterWithAShorterIdleTimeout) {
  ServerProcess server;
  ASSERT_TRUE(server.start(with_args({"--idle-timeout", "2"})));
  auto options_for = [&](std::int32_t id) {
    auto options = client_options(server, id);
    options.reconnect = false;  // a lost connection stays lost, so the test sees it
    return options;
  };
  auto a = connect_client(options_for(1));
  auto b = connect_client(options_for(2));
  ASSERT_TRUE(a && b);
  std::this_thread::sleep_for(5s);  // two and a half idle timeouts without a message
  EXPECT_TRUE(a->connected());
  EXPECT_TRUE(b->connected());
  EXPECT_TRUE(exchange(*a, 1, *b, 2, "still here"));
}

}  // namespace
}  // namespace debra::testing
