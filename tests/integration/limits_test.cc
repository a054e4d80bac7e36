// SPDX-License-Identifier: MIT
//
// Abuse limits (#4) as a client sees them.
#include <debra/client.h>
#include <gtest/gtest.h>

#include "server_process.h"
#include "test_support.h"

namespace debra::testing {
namespace {

TEST(LimitsIntegration, ConnectionsPerAddressAreBounded) {
  ServerProcess server;
  ASSERT_TRUE(server.start(with_args({"--max-connections-per-address", "2"})));
  auto a = connect_client(server, 1);
  auto b = connect_client(server, 2);
  ASSERT_TRUE(a && b);

  auto options = client_options(server, 3);
  options.connect_timeout = 3s;
  auto refused = Client::connect(options);
  ASSERT_FALSE(refused) << "a third connection from 127.0.0.1 was admitted";
  // CONNECTION_REFUSED is QUIC transport error 0x2.
  EXPECT_NE(refused.error().message.find("transport error 2"), std::string::npos) << refused.error().message;

  // The admitted pair is not disturbed.
  EXPECT_TRUE(exchange(*a, 1, *b, 2, "within the limit"));

  // A slot frees once a connection has closed (after its closing period).
  b->close();
  b.reset();
  std::unique_ptr<Client> c;
  auto deadline = std::chrono::steady_clock::now() + 5s;
  while (!c && std::chrono::steady_clock::now() < deadline) {
    auto attempt = Client::connect(options);
    if (attempt) c = std::move(*attempt);
  }
  ASSERT_TRUE(c) << "no slot freed after a client left";
  EXPECT_TRUE(exchange(*a, 1, *c, 3, "after a slot freed"));
}

}  // namespace
}  // namespace debra::testing
