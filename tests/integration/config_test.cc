// SPDX-License-Identifier: MIT
//
// debra-server --config FILE against the real server process: the file's options take effect, the
// command line wins over it, and a bad file stops the server before it listens, naming the line.
#include <fstream>
#include <string>

#include "server_process.h"
#include "test_support.h"

namespace debra::testing {
namespace {

std::string write_config(const ServerProcess& server, const std::string& text) {
  std::string path = server.data_dir() + "/debra.toml";
  std::ofstream(path) << text;
  return path;
}

TEST(ConfigIntegration, OptionsFromTheFileTakeEffect) {
  ServerProcess server;
  auto config = write_config(server, "# token authentication, set in the file\nauth = \"token\"\n");
  ASSERT_TRUE(server.start(with_args({"--config", config})));

  auto anonymous = run_cli({"send", "--id", "1", "--to", "2", "--server", server.address(), "--ca",
                            server.ca_file(), "hello"});
  EXPECT_NE(anonymous.exit_code, 0) << anonymous.describe();
  EXPECT_NE(anonymous.err.find("missing token"), std::string::npos) << anonymous.describe();

  auto token = run_cli({"token", "issue", "--id", "1", "--ttl", "60", "--data-dir", server.data_dir()});
  ASSERT_EQ(token.exit_code, 0) << token.describe();
  auto with_token = run_cli({"send", "--id", "1", "--to", "2", "--server", server.address(), "--ca",
                             server.ca_file(), "--token", token.out.substr(0, token.out.find('\n')), "hello"});
  EXPECT_EQ(with_token.exit_code, 0) << with_token.describe();
}

TEST(ConfigIntegration, TheCommandLineWinsOverTheFile) {
  ServerProcess server;
  // Alone, this file would stop the router: a non-loopback address without authentication.
  auto config = write_config(server, "listen = \"0.0.0.0:0\"\n");
  ASSERT_TRUE(server.start(listening_on("127.0.0.1:0", {"--config", config})));
  EXPECT_EQ(server.address().rfind("127.0.0.1:", 0), 0u) << server.address();
}

TEST(ConfigIntegration, ABadFileStopsTheServerNamingTheLine) {
  ServerProcess dir_holder;  // only for its temporary data dir
  auto config = write_config(dir_holder, "listen = \"127.0.0.1:0\"\nmax-conections = 10\n");
  auto [code, output] = run_server_briefly("--config " + config + " --data-dir " + dir_holder.data_dir());
  EXPECT_EQ(code, 2) << output;
  EXPECT_NE(output.find("line 2, column 1: 'max-conections' is not an option of debra-server"), std::string::npos)
      << output;
  EXPECT_EQ(output.find("ready"), std::string::npos) << output;
}

TEST(ConfigIntegration, AValueOutOfRangeInTheFileIsRefusedLikeTheFlag) {
  ServerProcess dir_holder;
  auto config = write_config(dir_holder, "max-frame-size = 12\n");
  auto [code, output] = run_server_briefly("--config " + config + " --data-dir " + dir_holder.data_dir());
  EXPECT_EQ(code, 2) << output;
  EXPECT_NE(output.find("max-frame-size"), std::string::npos) << output;
}

}  // namespace
}  // namespace debra::testing
