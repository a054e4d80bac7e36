// SPDX-License-Identifier: MIT
//
// The debra CLI as a user runs it: exit codes, output, and certificate handling.
#include <gtest/gtest.h>

#include <algorithm>
#include <cctype>
#include <future>
#include <sstream>

#include "server_process.h"
#include "test_support.h"

namespace debra::testing {
namespace {

std::vector<std::string> common(const ServerProcess& server) {
  return {"--server", server.address(), "--ca", server.ca_file()};
}

std::vector<std::string> command(std::string subcommand, std::vector<std::string> flags,
                                 std::vector<std::string> rest) {
  std::vector<std::string> args{std::move(subcommand)};
  args.insert(args.end(), flags.begin(), flags.end());
  args.insert(args.end(), rest.begin(), rest.end());
  return args;
}

std::string lower(std::string text) {
  std::transform(text.begin(), text.end(), text.begin(), [](unsigned char c) { return std::tolower(c); });
  return text;
}

std::vector<std::string> lines_of(const std::string& text) {
  std::vector<std::string> lines;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) lines.push_back(line);
  return lines;
}

TEST(CliIntegration, SendAcceptedExitsZeroAndPrintsNothing) {
  ServerProcess server;
  ASSERT_TRUE(server.start());
  auto listener = connect_client(server, 2);
  ASSERT_TRUE(listener);
  auto run = run_cli(command("send", common(server), {"--id", "1", "--to", "2", "hello", "world"}));
  EXPECT_EQ(run.exit_code, 0) << run.describe();
  EXPECT_EQ(run.out, "") << run.describe();
  EXPECT_EQ(run.err, "") << run.describe();
  auto message = listener->receive(10s);
  ASSERT_TRUE(message);
  EXPECT_EQ(message->sender, 1);
  EXPECT_EQ(message->text(), "hello world");
}

TEST(CliIntegration, SendLegacyAccepted) {
  ServerProcess server;
  ASSERT_TRUE(server.start());
  auto listener = connect_client(server, 2);
  ASSERT_TRUE(listener);
  auto run = run_cli(command("send", common(server), {"--legacy", "--id", "1", "--to", "2", "old school"}));
  EXPECT_EQ(run.exit_code, 0) << run.describe();
  EXPECT_EQ(run.out, "") << run.describe();
  auto message = listener->receive(10s);
  ASSERT_TRUE(message);
  EXPECT_EQ(message->sender, 1);
  EXPECT_EQ(message->text(), "old school");
}

TEST(CliIntegration, SendToOfflineRecipientSucceedsWithTheStore) {
  ServerProcess server;
  ASSERT_TRUE(server.start());
  auto run = run_cli(command("send", common(server), {"--id", "1", "--to", "99", "wait for me"}));
  EXPECT_EQ(run.exit_code, 0) << run.describe();
  auto listen = run_cli(command("listen", common(server), {"--id", "99", "--count", "1", "--timeout", "10"}));
  EXPECT_EQ(listen.exit_code, 0) << listen.describe();
  EXPECT_EQ(listen.out, "1\twait for me\n");
}

TEST(CliIntegration, SendToOfflineRecipientFailsWithoutAStore) {
  ServerProcess server;
  ASSERT_TRUE(server.start(with_args({"--store", "none"})));
  auto run = run_cli(command("send", common(server), {"--id", "1", "--to", "99", "anyone?"}));
  EXPECT_NE(run.exit_code, 0) << run.describe();
  EXPECT_FALSE(run.timed_out) << run.describe();
  EXPECT_EQ(run.out, "") << run.describe();
  EXPECT_NE(run.err.find("offline"), std::string::npos) << run.describe();
  EXPECT_NE(run.err.find("99"), std::string::npos) << run.describe();
}

TEST(CliIntegration, ListenJsonPrintsOneObjectPerMessage) {
  ServerProcess server;
  ASSERT_TRUE(server.start());
  auto listen = std::async(std::launch::async, [&server] {
    return run_cli(command("listen", common(server), {"--id", "3", "--count", "2", "--json", "--timeout", "30"}),
                   40s);
  });
  auto sender = connect_client(server, 4);
  ASSERT_TRUE(sender);
  const std::string first = "first \"quoted\" \\ line\n\ttab";
  auto r1 = send_when_online(*sender, 3, first);
  ASSERT_EQ(r1.status, SendStatus::Accepted) << describe(r1);
  auto r2 = await(sender->send(3, "second, caf\xc3\xa9"));
  ASSERT_EQ(r2.status, SendStatus::Accepted) << describe(r2);

  auto run = listen.get();
  EXPECT_EQ(run.exit_code, 0) << run.describe();
  auto lines = lines_of(run.out);
  ASSERT_EQ(lines.size(), 2u) << run.describe();
  EXPECT_EQ(lines[0], "{\"from\":4,\"message_id\":" + std::to_string(r1.message_id) +
                          ",\"payload\":\"first \\\"quoted\\\" \\\\ line\\u000a\\u0009tab\"}");
  EXPECT_EQ(lines[1], "{\"from\":4,\"message_id\":" + std::to_string(r2.message_id) +
                          ",\"payload\":\"second, caf\xc3\xa9\"}");
}

TEST(CliIntegration, ListenTimesOutWithNonZeroExit) {
  ServerProcess server;
  ASSERT_TRUE(server.start());
  auto run = run_cli(command("listen", common(server), {"--id", "5", "--timeout", "1", "--count", "5"}), 20s);
  EXPECT_NE(run.exit_code, 0) << run.describe();
  EXPECT_FALSE(run.timed_out) << run.describe();
  EXPECT_GE(run.elapsed, 1000ms) << run.describe();
  EXPECT_LT(run.elapsed, 5000ms) << run.describe();
  EXPECT_EQ(run.out, "") << run.describe();
  EXPECT_NE(run.err.find("timed out"), std::string::npos) << run.describe();
}

TEST(CliIntegration, InsecureWorksWithoutCa) {
  ServerProcess server;
  ASSERT_TRUE(server.start());
  auto listener = connect_client(server, 2);
  ASSERT_TRUE(listener);
  auto run = run_cli({"send", "--server", server.address(), "--insecure", "--id", "1", "--to", "2", "insecure"});
  EXPECT_EQ(run.exit_code, 0) << run.describe();
  auto message = listener->receive(10s);
  ASSERT_TRUE(message);
  EXPECT_EQ(message->text(), "insecure");
}

// A certificate that does not chain to --ca (another router's self-signed one) is refused, with a
// message that says it is about the certificate.
TEST(CliIntegration, WrongCaFailsWithCertificateError) {
  ServerProcess server;
  ServerProcess other;
  ASSERT_TRUE(server.start());
  ASSERT_TRUE(other.start());  // only for its certificate
  auto listener = connect_client(server, 2);
  ASSERT_TRUE(listener);
  auto run = run_cli({"send", "--server", server.address(), "--ca", other.ca_file(), "--id", "1", "--to", "2", "x"});
  EXPECT_NE(run.exit_code, 0) << run.describe();
  EXPECT_FALSE(run.timed_out) << run.describe();
  EXPECT_NE(lower(run.err).find("certificate"), std::string::npos) << run.describe();
  EXPECT_FALSE(listener->receive(0ms)) << "a message got through an unverified connection";

  // No --ca and no --insecure: the system trust store does not know a self-signed certificate.
  auto untrusted = run_cli({"send", "--server", server.address(), "--id", "1", "--to", "2", "x"});
  EXPECT_NE(untrusted.exit_code, 0) << untrusted.describe();
  EXPECT_NE(lower(untrusted.err).find("certificate"), std::string::npos) << untrusted.describe();
}

}  // namespace
}  // namespace debra::testing
