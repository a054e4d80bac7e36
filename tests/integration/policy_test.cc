// SPDX-License-Identifier: MIT
//
// The send policy (--policy FILE) against the real router process: allowed pairs chat, forbidden
// ones get Rejected(Forbidden) with the reason (libdebra and the CLI), a bad file stops the start,
// SIGHUP reloads it (a bad reload keeps the old policy), and legacy senders are dropped and counted.
#include <gtest/gtest.h>

#include <csignal>
#include <fstream>
#include <string>

#include "server_process.h"
#include "test_support.h"

namespace debra::testing {
namespace {

// 1 and 2 talk to each other; 9 is a mailbox nobody may write to; everything else is denied.
constexpr const char* kPairPolicy = R"(default = "deny"

[[rule]]
from = 1
to = 2
action = "allow"

[[rule]]
from = [2]
to = "1-1"
action = "allow"

[[rule]]
from = "*"
to = 9
action = "deny"
)";

std::string write_policy(const ServerProcess& server, const std::string& text, const std::string& name = "policy.toml") {
  std::string path = server.data_dir() + "/" + name;
  std::ofstream(path, std::ios::trunc) << text;
  return path;
}

// Waits (bounded) until the server's stderr holds text.
::testing::AssertionResult logged(const ServerProcess& server, const std::string& text,
                                  std::chrono::milliseconds timeout = 10s) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  while (server.stderr_text().find(text) == std::string::npos) {
    if (std::chrono::steady_clock::now() >= deadline) {
      return ::testing::AssertionFailure() << "the server did not log \"" << text << "\" within " << timeout.count()
                                           << " ms:\n"
                                           << server.stderr_text();
    }
    std::this_thread::sleep_for(20ms);
  }
  return ::testing::AssertionSuccess();
}

// The send must be Rejected with Forbidden and exactly this reason.
::testing::AssertionResult forbidden(Client& from, std::int32_t to, const std::string& reason) {
  auto result = await(from.send(to, "may I?"));
  if (result.status != SendStatus::Rejected || result.error_code != static_cast<std::uint16_t>(wire::ErrorCode::Forbidden) ||
      result.reason != reason) {
    return ::testing::AssertionFailure() << "expected Rejected(Forbidden, \"" << reason << "\"), got " << describe(result);
  }
  return ::testing::AssertionSuccess();
}

TEST(PolicyIntegration, AllowedPairsChatAndForbiddenPairsAreRejectedWithTheRule) {
  ServerProcess server;
  std::string path = write_policy(server, kPairPolicy);
  ASSERT_TRUE(server.start(with_args({"--policy", path})));
  EXPECT_TRUE(logged(server, "send policy " + path + ": 3 rules, default deny"));
  auto one = connect_client(server, 1);
  auto two = connect_client(server, 2);
  auto five = connect_client(server, 5);
  auto nine = connect_client(server, 9);
  ASSERT_TRUE(one && two && five && nine);

  EXPECT_TRUE(exchange(*one, 1, *two, 2, "allowed"));
  EXPECT_TRUE(forbidden(*five, 9, "id 5 may not send to 9 (policy " + path + ", rule 3 at line 13)"));
  EXPECT_TRUE(forbidden(*one, 9, "id 1 may not send to 9 (policy " + path + ", rule 3 at line 13)"));
  EXPECT_TRUE(forbidden(*five, 1, "id 5 may not send to 1 (policy " + path + ", default deny)"));
  // Offline recipients are refused alike: the policy does not reveal who is online.
  EXPECT_TRUE(forbidden(*two, 77, "id 2 may not send to 77 (policy " + path + ", default deny)"));
  // Refusals close nothing: the senders and everyone else go on.
  EXPECT_TRUE(one->connected() && five->connected());
  EXPECT_TRUE(exchange(*one, 1, *two, 2, "after the refusals"));
  EXPECT_FALSE(nine->receive(300ms)) << "a refused message reached its recipient";

  // The CLI prints the reason and exits non-zero.
  auto run = run_cli({"send", "--server", server.address(), "--ca", server.ca_file(), "--id", "5", "--to", "9", "hi"});
  EXPECT_EQ(run.exit_code, 1) << run.describe();
  EXPECT_NE(run.err.find("id 5 may not send to 9 (policy " + path + ", rule 3 at line 13)"), std::string::npos)
      << run.describe();

  auto exit = server.stop(SIGTERM);
  EXPECT_EQ(exit.exit_code(), 0) << exit.describe();
  EXPECT_NE(server.stderr_text().find("5 messages refused by the send policy"), std::string::npos)
      << server.stderr_text();

  // Nothing refused was stored: without the policy, 9 and 77 find their inboxes empty.
  nine.reset();
  ASSERT_TRUE(server.start());
  auto nine_again = connect_client(server, 9);
  auto seventy_seven = connect_client(server, 77);
  ASSERT_TRUE(nine_again && seventy_seven);
  EXPECT_FALSE(nine_again->receive(500ms));
  EXPECT_FALSE(seventy_seven->receive(100ms));
}

TEST(PolicyIntegration, ABadPolicyFileRefusesToStartWithExitCode2AndSaysWhy) {
  ServerProcess dir_holder;  // only for its temporary data dir
  std::string bad = write_policy(dir_holder, "default = \"deny\"\n[[rule]]\nfrom = 0\nto = \"*\"\naction = \"allow\"\n");
  auto [code, output] = run_server_briefly("--listen 127.0.0.1:0 --data-dir " + dir_holder.data_dir() + " --policy " + bad);
  EXPECT_EQ(code, 2) << output;
  EXPECT_NE(output.find("debra-server: --policy: " + bad + ":3:8: id 0 in 'from' is outside 1..2147483647"),
            std::string::npos)
      << output;
  EXPECT_EQ(output.find("ready on"), std::string::npos) << output;

  std::string typo = write_policy(dir_holder, "default = \"deny\"\n[[rule]]\nfrom = 1\nto = 2\nactoin = \"allow\"\n",
                                  "typo.toml");
  std::tie(code, output) = run_server_briefly("--listen 127.0.0.1:0 --data-dir " + dir_holder.data_dir() + " --policy " + typo);
  EXPECT_EQ(code, 2) << output;
  EXPECT_NE(output.find(typo + ":5:1: unknown key \"actoin\" in rule 1"), std::string::npos) << output;

  std::tie(code, output) = run_server_briefly("--listen 127.0.0.1:0 --data-dir " + dir_holder.data_dir() +
                                              " --policy " + dir_holder.data_dir() + "/absent.toml");
  EXPECT_EQ(code, 2) << output;
  EXPECT_NE(output.find("absent.toml: No such file or directory"), std::string::npos) << output;
}

TEST(PolicyIntegration, SighupReloadsThePolicyAndABadReloadKeepsTheOldOne) {
  ServerProcess server;
  std::string path = write_policy(server, kPairPolicy);
  ASSERT_TRUE(server.start(with_args({"--policy", path})));
  auto one = connect_client(server, 1);
  auto three = connect_client(server, 3);
  ASSERT_TRUE(one && three);
  EXPECT_TRUE(forbidden(*one, 3, "id 1 may not send to 3 (policy " + path + ", default deny)"));

  // Now 1 may also write to 3.
  write_policy(server, std::string(kPairPolicy) + "\n[[rule]]\nfrom = 1\nto = 3\naction = \"allow\"\n");
  ASSERT_EQ(kill(server.pid(), SIGHUP), 0);
  ASSERT_TRUE(logged(server, "policy reloaded from " + path + ": 4 rules, default deny"));
  EXPECT_TRUE(deliver(*one, 1, *three, 3, "allowed since the reload"));
  EXPECT_TRUE(forbidden(*three, 1, "id 3 may not send to 1 (policy " + path + ", default deny)"));

  // A broken file is logged with its error, and the policy in force stays.
  write_policy(server, "default = \"deny\"\n[[rule]]\nfrom = \"9-1\"\n");
  ASSERT_EQ(kill(server.pid(), SIGHUP), 0);
  ASSERT_TRUE(logged(server, "policy reload failed, keeping the previous policy (4 rules, default deny): " + path +
                                 ":3:8: range \"9-1\" is empty"));
  EXPECT_TRUE(deliver(*one, 1, *three, 3, "still allowed"));
  EXPECT_TRUE(forbidden(*three, 1, "id 3 may not send to 1 (policy " + path + ", default deny)"));
  EXPECT_TRUE(server.running());
  EXPECT_EQ(server.stop(SIGTERM).exit_code(), 0);
}

TEST(PolicyIntegration, SighupWithoutAPolicyChangesNothing) {
  ServerProcess server;
  ASSERT_TRUE(server.start());
  ASSERT_EQ(kill(server.pid(), SIGHUP), 0);
  ASSERT_TRUE(logged(server, "received SIGHUP: no --policy file to reload"));
  auto a = connect_client(server, 1);
  auto b = connect_client(server, 2);
  ASSERT_TRUE(a && b);
  EXPECT_TRUE(exchange(*a, 1, *b, 2, "no policy"));
}

TEST(PolicyIntegration, LegacySenderToAForbiddenIdIsDroppedCountedAndLogged) {
  ServerProcess server;
  std::string path = write_policy(server, "default = \"allow\"\n[[rule]]\nfrom = 3\nto = 9\naction = \"deny\"\n");
  ASSERT_TRUE(server.start(with_args({"--policy", path})));
  auto two = connect_client(server, 2);
  auto nine = connect_client(server, 9);
  auto legacy = connect_client(server, 3, Protocol::Legacy);
  ASSERT_TRUE(two && nine && legacy);
  ASSERT_TRUE(confirm_registered(*two, 2, *legacy, 3));

  // A legacy sender hears nothing of the refusal: its send completes once written.
  EXPECT_TRUE(await(legacy->send(9, "forbidden")).ok());
  EXPECT_TRUE(await(legacy->send(2, "allowed")).ok());
  auto message = two->receive(10s);
  ASSERT_TRUE(message);
  EXPECT_EQ(message->sender, 3);
  EXPECT_EQ(message->text(), "allowed");
  // The router handles one stream's frames in order: the refused message was decided before "allowed".
  EXPECT_FALSE(nine->receive(500ms)) << "a refused legacy message reached its recipient";
  // The connection stays up and carries allowed messages.
  EXPECT_TRUE(await(legacy->send(2, "still here")).ok());
  message = two->receive(10s);
  ASSERT_TRUE(message);
  EXPECT_EQ(message->text(), "still here");
  EXPECT_TRUE(logged(server, "legacy message dropped by the send policy: id 3 may not send to 9 (policy " + path +
                                 ", rule 1 at line 2)"));

  EXPECT_EQ(server.stop(SIGTERM).exit_code(), 0);
  EXPECT_NE(server.stderr_text().find("1 messages refused by the send policy"), std::string::npos)
      << server.stderr_text();
}

}  // namespace
}  // namespace debra::testing
