// SPDX-License-Identifier: MIT
//
// debra-server's options from the command line and from a --config TOML file, parsed by the real
// option definitions (server/options.cc) and the real TOML reader.
#include "server/options.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdlib>
#include <fstream>
#include <string>
#include <vector>

namespace debra::server {
namespace {

// A --config file in a temporary directory, removed with the test.
class ConfigFile {
 public:
  explicit ConfigFile(const std::string& text) {
    char dir[] = "/tmp/debra-options-XXXXXX";
    dir_ = mkdtemp(dir);
    path_ = dir_ + "/debra.toml";
    std::ofstream(path_) << text;
  }
  ~ConfigFile() {
    unlink(path_.c_str());
    rmdir(dir_.c_str());
  }
  const std::string& path() const { return path_; }

 private:
  std::string dir_;
  std::string path_;
};

// Parses args (without the program name) as debra-server would: the configuration, or the error text.
struct Parsed {
  Result<ServerConfig, Error> config = make_error("not parsed");
  std::string parse_error;  // CLI11's message, when parsing failed
};
Parsed parse(std::vector<std::string> args) {
  CLI::App app{"debra-server"};
  ServerOptions options(app);
  Parsed parsed;
  try {
    std::vector<std::string> reversed(args.rbegin(), args.rend());  // CLI11 takes argv back to front
    app.parse(reversed);
  } catch (const CLI::ParseError& e) {
    parsed.parse_error = e.what();
    return parsed;
  }
  parsed.config = options.finish();
  return parsed;
}

TEST(ServerOptions, DefaultsListenOnLoopbackWithoutAuth) {
  auto parsed = parse({});
  ASSERT_TRUE(parsed.config) << parsed.parse_error;
  EXPECT_EQ(parsed.config->listen.to_string(), "127.0.0.1:4433");
  EXPECT_FALSE(parsed.config->session.require_token);
  EXPECT_TRUE(parsed.config->session.allow_legacy);
  EXPECT_EQ(parsed.config->store_kind, StoreKind::Log);
  EXPECT_EQ(parsed.config->quic.transport.peer_bidi_streams, 1u);
}

TEST(ServerOptions, ThreadsDefaultToOnePerCpuAndAreBounded) {
  auto by_default = parse({});
  ASSERT_TRUE(by_default.config) << by_default.parse_error;
  EXPECT_EQ(by_default.config->threads, 0u);  // Server::create: default_thread_count()
  EXPECT_GE(default_thread_count(), 1u);
  EXPECT_LE(default_thread_count(), kMaxThreads);
  auto two = parse({"--threads", "2"});
  ASSERT_TRUE(two.config) << two.parse_error;
  EXPECT_EQ(two.config->threads, 2u);
  auto too_many = parse({"--threads", std::to_string(kMaxThreads + 1)});
  EXPECT_FALSE(too_many.config);
  EXPECT_NE(too_many.parse_error.find("--threads"), std::string::npos) << too_many.parse_error;
}

TEST(ServerOptions, LogSegmentBytesDefaultTo64MiBAndAreBounded) {
  auto by_default = parse({});
  ASSERT_TRUE(by_default.config) << by_default.parse_error;
  EXPECT_EQ(by_default.config->log.segment_bytes, 64u * 1024 * 1024);
  auto small = parse({"--log-segment-bytes", "65536"});
  ASSERT_TRUE(small.config) << small.parse_error;
  EXPECT_EQ(small.config->log.segment_bytes, 65536u);
  for (const char* refused : {"65535", "1073741825", "-1"}) {
    auto out_of_range = parse({"--log-segment-bytes", refused});
    EXPECT_FALSE(out_of_range.config) << refused;
    EXPECT_NE(out_of_range.parse_error.find("--log-segment-bytes"), std::string::npos) << out_of_range.parse_error;
  }
}

TEST(ServerOptions, MaxUdpPayloadDefaultsTo16000AndIsBounded) {
  auto by_default = parse({});
  ASSERT_TRUE(by_default.config) << by_default.parse_error;
  EXPECT_EQ(by_default.config->quic.transport.max_udp_payload, 16'000u);
  for (std::size_t allowed : {1200u, 1452u, 65507u}) {
    auto set = parse({"--max-udp-payload", std::to_string(allowed)});
    ASSERT_TRUE(set.config) << set.parse_error;
    EXPECT_EQ(set.config->quic.transport.max_udp_payload, allowed);
  }
  for (const char* refused : {"1199", "65508", "-1"}) {
    auto out_of_range = parse({"--max-udp-payload", refused});
    EXPECT_FALSE(out_of_range.config) << refused;
    EXPECT_NE(out_of_range.parse_error.find("--max-udp-payload"), std::string::npos) << out_of_range.parse_error;
  }
}

TEST(ServerOptions, ProtocolFeaturesDefaultToAllAndCanBeTurnedOff) {
  const auto acks = static_cast<std::uint64_t>(wire::Feature::BatchedAcks);
  const auto replies = static_cast<std::uint64_t>(wire::Feature::BatchedReplies);
  auto by_default = parse({});
  ASSERT_TRUE(by_default.config) << by_default.parse_error;
  EXPECT_EQ(by_default.config->session.features, kRouterFeatures) << "a feature --protocol-features cannot name";
  EXPECT_EQ(by_default.config->session.features, acks | replies);
  auto one = parse({"--protocol-features", "batched-replies"});
  ASSERT_TRUE(one.config) << one.parse_error;
  EXPECT_EQ(one.config->session.features, replies);
  auto none = parse({"--protocol-features", "none"});
  ASSERT_TRUE(none.config) << none.parse_error;
  EXPECT_EQ(none.config->session.features, 0u);
  ConfigFile file("protocol-features = \"batched-acks,batched-replies\"\n");
  auto from_file = parse({"--config", file.path()});
  ASSERT_TRUE(from_file.config) << from_file.parse_error;
  EXPECT_EQ(from_file.config->session.features, acks | replies);

  auto mixed = parse({"--protocol-features", "none,batched-acks"});
  ASSERT_FALSE(mixed.config);
  EXPECT_NE(mixed.config.error().message.find("none goes alone"), std::string::npos) << mixed.config.error().message;
  auto unknown = parse({"--protocol-features", "batched-everything"});
  EXPECT_FALSE(unknown.config);
  EXPECT_NE(unknown.parse_error.find("batched-everything"), std::string::npos) << unknown.parse_error;
}

TEST(ServerOptions, ConfigFileSetsOptionsOfEveryValueType) {
  ConfigFile file(R"(# a router for the lab
listen = "[::1]:5000"
max-connections = 1000
message-ttl = 2.5
auth = "token"
sync = "always"
)");
  auto parsed = parse({"--config", file.path()});
  ASSERT_TRUE(parsed.config) << parsed.parse_error;
  EXPECT_EQ(parsed.config->listen.to_string(), "[::1]:5000");
  EXPECT_EQ(parsed.config->quic.max_connections, 1000u);
  EXPECT_EQ(parsed.config->store.ttl_ms, 2500);
  EXPECT_TRUE(parsed.config->session.require_token);
  EXPECT_FALSE(parsed.config->session.allow_legacy);  // the token default
  EXPECT_EQ(parsed.config->sync, store::SyncMode::Always);
}

TEST(ServerOptions, CommandLineWinsOverTheConfigFile) {
  ConfigFile file("listen = \"0.0.0.0:5000\"\nmax-connections = 1000\n");
  auto parsed = parse({"--config", file.path(), "--listen", "127.0.0.1:6000"});
  ASSERT_TRUE(parsed.config) << parsed.config.error().message << parsed.parse_error;
  EXPECT_EQ(parsed.config->listen.to_string(), "127.0.0.1:6000");
  EXPECT_EQ(parsed.config->quic.max_connections, 1000u);
}

TEST(ServerOptions, BooleanFlagInTheConfigFile) {
  ConfigFile on("listen = \"0.0.0.0:5000\"\nallow-anonymous = true\n");
  EXPECT_TRUE(parse({"--config", on.path()}).config);
  ConfigFile off("listen = \"0.0.0.0:5000\"\nallow-anonymous = false\n");
  auto parsed = parse({"--config", off.path()});
  ASSERT_FALSE(parsed.config);
  EXPECT_NE(parsed.config.error().message.find("refusing to listen on 0.0.0.0:5000 without authentication"),
            std::string::npos)
      << parsed.config.error().message;
}

TEST(ServerOptions, UnknownNameInTheConfigFileIsNamedWithItsLine) {
  ConfigFile file("listen = \"127.0.0.1:1\"\nmax-conections = 5\n");
  auto parsed = parse({"--config", file.path()});
  EXPECT_NE(parsed.parse_error.find("line 2, column 1: 'max-conections' is not an option"), std::string::npos)
      << parsed.parse_error;
}

TEST(ServerOptions, TomlSyntaxErrorIsNamedWithItsLine) {
  ConfigFile file("listen = \"127.0.0.1:1\"\n\nmax-connections = \n");
  auto parsed = parse({"--config", file.path()});
  EXPECT_NE(parsed.parse_error.find("--config: line 3"), std::string::npos) << parsed.parse_error;
}

TEST(ServerOptions, TablesAndDatesAreRefused) {
  ConfigFile table("[server]\nlisten = \"127.0.0.1:1\"\n");
  EXPECT_NE(parse({"--config", table.path()}).parse_error.find("[server]: options are not grouped in tables"),
            std::string::npos);
  ConfigFile date("message-ttl = 1979-05-27T07:32:00Z\n");
  EXPECT_NE(parse({"--config", date.path()}).parse_error.find("dates and times are not option values"),
            std::string::npos);
}

TEST(ServerOptions, ConfigFileValuesGetTheSameChecksAsFlags) {
  ConfigFile small_frame("max-frame-size = 12\n");
  EXPECT_FALSE(parse({"--config", small_frame.path()}).parse_error.empty());
  EXPECT_FALSE(parse({"--max-frame-size", "12"}).parse_error.empty());
  ConfigFile bad_sync("sync = \"sometimes\"\n");
  EXPECT_FALSE(parse({"--config", bad_sync.path()}).parse_error.empty());
  ConfigFile huge("max-connections = 99999999999999999999\n");
  EXPECT_FALSE(parse({"--config", huge.path()}).parse_error.empty());
}

TEST(ServerOptions, NonAsciiOutsideCommentsIsRefusedBeforeTomlSeesIt) {
  ConfigFile file("# a comment may say anything: \xd1\xa3\nlisten =\xd1\xa3\"127.0.0.1:1\"\n");
  auto parsed = parse({"--config", file.path()});
  EXPECT_NE(parsed.parse_error.find("--config: line 2, column 9: a non-ASCII character outside a comment"),
            std::string::npos)
      << parsed.parse_error;
}

TEST(ServerOptions, MissingConfigFileIsAnError) {
  auto parsed = parse({"--config", "/nonexistent/debra.toml"});
  EXPECT_NE(parsed.parse_error.find("/nonexistent/debra.toml"), std::string::npos) << parsed.parse_error;
}

}  // namespace
}  // namespace debra::server
