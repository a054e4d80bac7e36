// SPDX-License-Identifier: MIT
//
// debra-server: the router process. Options (server/options.cc) become a ServerConfig; everything
// else is in server.cc.
#include <cstdio>

#include "server/options.h"
#include "util/log.h"

int main(int argc, char** argv) {
  using namespace debra;
  log::init("debra-server");
  CLI::App app{"debra-server: a message router over QUIC"};
  server::ServerOptions options(app);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    // --help exits 0; every usage error exits 2, as a bad option value always has.
    return app.exit(e) == 0 ? 0 : 2;
  }
  log::set_level(options.log_level());
  auto config = options.finish();
  if (!config) {
    std::fprintf(stderr, "debra-server: %s\n", config.error().message.c_str());
    return 2;
  }
  auto server = server::Server::create(std::move(*config));
  if (!server) {
    spdlog::error("{}", server.error().message);
    return 1;
  }
  (*server)->run();
  return 0;
}
