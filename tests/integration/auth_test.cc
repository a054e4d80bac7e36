// SPDX-License-Identifier: MIT
//
// Token authentication (--auth token), the legacy policy and the non-loopback rule, against the real
// router process: tokens are minted with the router's own secret from its data dir.
#include <gtest/gtest.h>

#include "auth/token.h"
#include "server_process.h"
#include "test_support.h"

namespace debra::testing {
namespace {

const std::vector<std::string> kTokenAuth{"--auth", "token"};

auth::TokenSecret secret_of(const ServerProcess& server) {
  auto secret = auth::load_secret(server.data_dir() + "/token-secret");
  EXPECT_TRUE(secret) << secret.error().message;
  return secret ? *secret : auth::TokenSecret{};
}

std::string token_for(const ServerProcess& server, std::int32_t id, std::int64_t ttl_s = 3600) {
  auto token = auth::mint_token(secret_of(server), id, auth::unix_now() + ttl_s);
  EXPECT_TRUE(token);
  return token ? *token : std::string();
}

ClientOptions with_token(const ServerProcess& server, std::int32_t id, std::string token) {
  auto options = client_options(server, id);
  options.token = std::move(token);
  options.connect_timeout = 5s;
  return options;
}

// connect() must fail with Unauthenticated and a reason containing `cause`.
::testing::AssertionResult refused(ClientOptions options, const std::string& cause) {
  auto client = Client::connect(std::move(options));
  if (client) return ::testing::AssertionFailure() << "connected, but should have been refused (" << cause << ")";
  const std::string& reason = client.error().message;
  if (reason.find("Unauthenticated") == std::string::npos || reason.find(cause) == std::string::npos) {
    return ::testing::AssertionFailure() << "refused, but the reason lacks Unauthenticated / \"" << cause
                                         << "\": " << reason;
  }
  return ::testing::AssertionSuccess();
}

// An authenticated pair that must keep chatting while others are refused.
struct Pair {
  std::unique_ptr<Client> a;
  std::unique_ptr<Client> b;
};

Pair authenticated_pair(const ServerProcess& server) {
  Pair pair;
  pair.a = connect_client(with_token(server, 1, token_for(server, 1)));
  pair.b = connect_client(with_token(server, 2, token_for(server, 2)));
  return pair;
}

TEST(AuthIntegration, ValidTokensConnectAndChatBothWays) {
  ServerProcess server;
  ASSERT_TRUE(server.start(with_args(kTokenAuth)));
  auto pair = authenticated_pair(server);
  ASSERT_TRUE(pair.a && pair.b);
  EXPECT_TRUE(exchange(*pair.a, 1, *pair.b, 2, "authenticated"));
}

TEST(AuthIntegration, BadTokensAreRefusedWhileOthersKeepChatting) {
  ServerProcess server;
  ASSERT_TRUE(server.start(with_args(kTokenAuth)));
  auto pair = authenticated_pair(server);
  ASSERT_TRUE(pair.a && pair.b);

  EXPECT_TRUE(refused(with_token(server, 7, ""), "missing token"));
  EXPECT_TRUE(exchange(*pair.a, 1, *pair.b, 2, "after missing"));

  std::string forged = token_for(server, 7);
  forged.back() = forged.back() == 'A' ? 'B' : 'A';
  EXPECT_TRUE(refused(with_token(server, 7, forged), "token signature invalid"));
  EXPECT_TRUE(exchange(*pair.a, 1, *pair.b, 2, "after forged"));

  auto expired = auth::mint_token(secret_of(server), 7, auth::unix_now() - 60);
  ASSERT_TRUE(expired);
  EXPECT_TRUE(refused(with_token(server, 7, *expired), "token expired at"));
  EXPECT_TRUE(exchange(*pair.a, 1, *pair.b, 2, "after expired"));

  EXPECT_TRUE(refused(with_token(server, 7, token_for(server, 5)), "token is for id 5, not 7"));
  EXPECT_TRUE(exchange(*pair.a, 1, *pair.b, 2, "after wrong id"));

  EXPECT_TRUE(refused(with_token(server, 7, "not-a-token"), "malformed token"));
  EXPECT_TRUE(exchange(*pair.a, 1, *pair.b, 2, "after malformed"));

  // Each refusal is one log line naming the cause.
  const std::string log = server.stderr_text();
  for (const char* cause : {"missing token", "token signature invalid", "token expired at", "token is for id 5, not 7"}) {
    EXPECT_NE(log.find(std::string("closing with Unauthenticated: ") + cause), std::string::npos) << cause << "\n"
                                                                                                   << log;
  }
}

TEST(AuthIntegration, TakeoverNeedsATokenForTheId) {
  ServerProcess server;
  ASSERT_TRUE(server.start(with_args(kTokenAuth)));
  auto pair = authenticated_pair(server);
  ASSERT_TRUE(pair.a && pair.b);
  ConnectionEvents events_of_1;
  events_of_1.attach(*pair.a);

  // Another client's valid token does not buy id 1, nor does no token.
  EXPECT_TRUE(refused(with_token(server, 1, token_for(server, 2)), "token is for id 2, not 1"));
  EXPECT_TRUE(refused(with_token(server, 1, ""), "missing token"));
  EXPECT_TRUE(pair.a->connected());
  EXPECT_TRUE(exchange(*pair.a, 1, *pair.b, 2, "still mine"));
  EXPECT_TRUE(events_of_1.wait(1, 200ms).empty());

  // The holder of a token for id 1 may take it over, as a reconnecting owner must be able to.
  auto successor = connect_client(with_token(server, 1, token_for(server, 1)));
  ASSERT_TRUE(successor);
  auto events = events_of_1.wait(1, 10s);
  ASSERT_EQ(events.size(), 1u);
  EXPECT_FALSE(events[0].first);
  EXPECT_NE(events[0].second.find("SessionTakenOver"), std::string::npos) << events[0].second;
  EXPECT_TRUE(exchange(*successor, 1, *pair.b, 2, "new owner"));
}

TEST(AuthIntegration, LegacyClientRefusedUnderTokenAuthByDefault) {
  ServerProcess server;
  ASSERT_TRUE(server.start(with_args(kTokenAuth)));
  auto raw = RawClient::connect(raw_options(server, /*native=*/false));
  ASSERT_TRUE(raw) << raw.error().message;
  (*raw)->send(wire::encode_registration(3));
  auto closed = (*raw)->wait_closed(10s);
  ASSERT_TRUE(closed);
  EXPECT_TRUE(closed->application);
  EXPECT_EQ(closed->error_code, static_cast<std::uint64_t>(wire::ErrorCode::Unauthenticated)) << closed->to_string();
  EXPECT_NE(closed->reason.find("legacy clients are not allowed"), std::string::npos) << closed->to_string();

  // The refusal touched no one else.
  auto pair = authenticated_pair(server);
  ASSERT_TRUE(pair.a && pair.b);
  EXPECT_TRUE(exchange(*pair.a, 1, *pair.b, 2, "after legacy"));
}

TEST(AuthIntegration, LegacyClientAllowedWithLegacyAllow) {
  ServerProcess server;
  ASSERT_TRUE(server.start(with_args({"--auth", "token", "--legacy", "allow"})));
  auto native = connect_client(with_token(server, 1, token_for(server, 1)));
  ASSERT_TRUE(native);
  auto legacy = connect_client(server, 3, Protocol::Legacy);
  ASSERT_TRUE(legacy);
  EXPECT_TRUE(confirm_registered(*native, 1, *legacy, 3));
  EXPECT_TRUE(await(legacy->send(1, "from the past")).ok());
  auto message = native->receive(10s);
  ASSERT_TRUE(message);
  EXPECT_EQ(message->sender, 3);
  EXPECT_EQ(message->text(), "from the past");
}

TEST(AuthIntegration, NativeClientWithoutTokenStillWorksWithAuthNone) {
  ServerProcess server;
  ASSERT_TRUE(server.start());
  auto a = connect_client(server, 1);
  // A token sent to a router that does not ask for one is ignored.
  auto b = connect_client(with_token(server, 2, "v1.2.0.whatever"));
  ASSERT_TRUE(a && b);
  EXPECT_TRUE(exchange(*a, 1, *b, 2, "anonymous"));
}

TEST(AuthIntegration, NonLoopbackWithoutAuthRefusesToStart) {
  ServerProcess dir_holder;  // only for its temporary data dir
  auto [code, output] = run_server_briefly("--listen 0.0.0.0:0 --data-dir " + dir_holder.data_dir());
  EXPECT_EQ(code, 2) << output;
  EXPECT_NE(output.find("refusing to listen on 0.0.0.0:0 without authentication"), std::string::npos) << output;
  EXPECT_NE(output.find("--allow-anonymous"), std::string::npos) << output;
}

TEST(AuthIntegration, NonLoopbackStartsWithAllowAnonymous) {
  ServerProcess server;
  ASSERT_TRUE(server.start(listening_on("0.0.0.0:0", {"--allow-anonymous"})));
  EXPECT_TRUE(server.running());
  EXPECT_EQ(server.stop(SIGTERM).exit_code(), 0);
}

TEST(AuthIntegration, NonLoopbackStartsWithTokenAuth) {
  ServerProcess server;
  ASSERT_TRUE(server.start(listening_on("0.0.0.0:0", kTokenAuth)));
  EXPECT_TRUE(server.running());
  EXPECT_EQ(server.stop(SIGTERM).exit_code(), 0);
}

TEST(AuthIntegration, CliTokenIssueAndSendWithToken) {
  ServerProcess server;
  ASSERT_TRUE(server.start(with_args(kTokenAuth)));
  auto listener = connect_client(with_token(server, 2, token_for(server, 2)));
  ASSERT_TRUE(listener);

  auto issued = run_cli({"token", "issue", "--id", "1", "--ttl", "15m", "--data-dir", server.data_dir()});
  ASSERT_EQ(issued.exit_code, 0) << issued.describe();
  ASSERT_FALSE(issued.out.empty());
  ASSERT_EQ(issued.out.back(), '\n');
  const std::string token = issued.out.substr(0, issued.out.size() - 1);
  auto verified = auth::verify_token(secret_of(server), token, auth::unix_now());
  ASSERT_TRUE(verified) << verified.error().message;
  EXPECT_EQ(*verified, 1);

  const std::vector<std::string> common{"--server", server.address(), "--ca", server.ca_file()};
  auto args = [&](std::vector<std::string> rest) {
    std::vector<std::string> all{"send"};
    all.insert(all.end(), common.begin(), common.end());
    all.insert(all.end(), rest.begin(), rest.end());
    return all;
  };
  auto sent = run_cli(args({"--id", "1", "--to", "2", "--token", token, "signed", "hello"}));
  EXPECT_EQ(sent.exit_code, 0) << sent.describe();
  auto message = listener->receive(10s);
  ASSERT_TRUE(message);
  EXPECT_EQ(message->sender, 1);
  EXPECT_EQ(message->text(), "signed hello");

  // Without the token, or with it for another id, the CLI fails and says why.
  auto anonymous = run_cli(args({"--id", "1", "--to", "2", "no token"}));
  EXPECT_EQ(anonymous.exit_code, 1) << anonymous.describe();
  EXPECT_NE(anonymous.err.find("Unauthenticated: missing token"), std::string::npos) << anonymous.describe();
  auto wrong = run_cli(args({"--id", "3", "--to", "2", "--token", token, "not mine"}));
  EXPECT_EQ(wrong.exit_code, 1) << wrong.describe();
  EXPECT_NE(wrong.err.find("token is for id 1, not 3"), std::string::npos) << wrong.describe();

  // The legacy protocol cannot carry a token: a usage error rather than a puzzling refusal.
  auto legacy = run_cli(args({"--legacy", "--id", "1", "--to", "2", "--token", token, "old"}));
  EXPECT_EQ(legacy.exit_code, 2) << legacy.describe();
  EXPECT_NE(legacy.err.find("--token needs the native protocol"), std::string::npos) << legacy.describe();

  // A bad --ttl is a usage error.
  auto bad_ttl = run_cli({"token", "issue", "--id", "1", "--ttl", "soon", "--data-dir", server.data_dir()});
  EXPECT_EQ(bad_ttl.exit_code, 2) << bad_ttl.describe();
}

TEST(AuthIntegration, ExplicitSecretFileAndTokenFile) {
  ServerProcess server;
  const std::string secret_file = server.data_dir() + "/custom-secret";
  auto created = auth::load_or_create_secret(secret_file);
  ASSERT_TRUE(created) << created.error().message;
  ASSERT_TRUE(server.start(with_args({"--auth", "token", "--token-secret-file", secret_file})));
  // With an explicit secret, the data dir gets none of its own.
  EXPECT_NE(access((server.data_dir() + "/token-secret").c_str(), F_OK), 0);

  auto listener = connect_client(with_token(server, 2, *auth::mint_token(*created, 2, auth::unix_now() + 60)));
  ASSERT_TRUE(listener);
  auto issued = run_cli({"token", "issue", "--id", "1", "--ttl", "60", "--secret-file", secret_file});
  ASSERT_EQ(issued.exit_code, 0) << issued.describe();
  const std::string token_file = server.data_dir() + "/id1.token";
  {
    FILE* out = std::fopen(token_file.c_str(), "w");
    ASSERT_NE(out, nullptr);
    std::fputs(issued.out.c_str(), out);  // with its trailing newline, as `> FILE` writes it
    std::fclose(out);
  }
  auto sent = run_cli({"send", "--server", server.address(), "--ca", server.ca_file(), "--id", "1", "--to", "2",
                       "--token-file", token_file, "from a file"});
  EXPECT_EQ(sent.exit_code, 0) << sent.describe();
  auto message = listener->receive(10s);
  ASSERT_TRUE(message);
  EXPECT_EQ(message->sender, 1);
  EXPECT_EQ(message->text(), "from a file");
}

TEST(AuthIntegration, MissingExplicitSecretFileRefusesToStart) {
  ServerProcess dir_holder;
  auto [code, output] = run_server_briefly("--listen 127.0.0.1:0 --auth token --data-dir " + dir_holder.data_dir() +
                                           " --token-secret-file " + dir_holder.data_dir() + "/nope");
  EXPECT_NE(code, 0) << output;
  EXPECT_NE(output.find("nope"), std::string::npos) << output;
  EXPECT_EQ(output.find("ready on"), std::string::npos) << output;
}

}  // namespace
}  // namespace debra::testing
