// SPDX-License-Identifier: MIT
//
// The integration-test fixture: the real debra-server as a subprocess (like Redis's start_server),
// and a runner for the debra CLI. Loopback only; every wait is bounded.
//
//   ServerProcess server;
//   ASSERT_TRUE(server.start({.args = {"--max-frame-size", "65536"}}));
//   auto client = debra::Client::connect({.server = server.address(), .id = 1, .ca_file = server.ca_file()});
//   ...
//   auto exit = server.stop(SIGTERM);   // exit.exit_code(), exit.elapsed
#pragma once

#include <gtest/gtest.h>
#include <sys/types.h>

#include <chrono>
#include <condition_variable>
#include <csignal>
#include <cstdint>
#include <mutex>
#include <string>
#include <thread>
#include <utility>
#include <vector>

namespace debra::testing {

using namespace std::chrono_literals;

// ServerOptions: how to start the server.
struct ServerOptions {
  // listen: passed as --listen; port 0 lets the kernel pick one (address() then has the real one).
  std::string listen = "127.0.0.1:0";
  // args: extra flags, e.g. {"--retry-threshold", "0"}.
  std::vector<std::string> args;
  // env: "NAME=value" entries for the server's environment, replacing the test's own value of NAME
  // (e.g. ASAN_OPTIONS for that process alone).
  std::vector<std::string> env;
  // ready_timeout: how long start() waits for the ready line.
  std::chrono::milliseconds ready_timeout = 10s;
};

// Shorthands for ServerOptions.
inline ServerOptions with_args(std::vector<std::string> args) {
  ServerOptions options;
  options.args = std::move(args);
  return options;
}
inline ServerOptions listening_on(std::string listen, std::vector<std::string> args = {}) {
  ServerOptions options;
  options.listen = std::move(listen);
  options.args = std::move(args);
  return options;
}

// ExitResult: how a process ended.
struct ExitResult {
  int status = 0;                     // as from waitpid
  bool finished = false;              // false: it had to be killed (or was not running)
  std::chrono::milliseconds elapsed{0};  // from the signal to the exit

  bool exited() const;
  int exit_code() const;  // -1 unless exited()
  int signal() const;     // 0 unless killed by a signal
  std::string describe() const;
};

// Substrings that mean a sanitizer found a bug in a subprocess.
bool contains_sanitizer_report(const std::string& text);

// ServerProcess: one debra-server subprocess with its own temporary data dir. start() may be called
// again after stop(), reusing the data dir (and so the certificate and QUIC secret).
class ServerProcess {
 public:
  ServerProcess();   // creates the data dir (mkdtemp under /tmp)
  ~ServerProcess();  // SIGTERM, then SIGKILL after a bound; checks stderr for sanitizer reports; removes the dir
  ServerProcess(const ServerProcess&) = delete;
  ServerProcess& operator=(const ServerProcess&) = delete;

  // Starts debra-server --listen options.listen --data-dir DIR options.args..., with stdout and stderr
  // captured in files in the data dir, and waits for "debra-server ready on HOST:PORT (data dir DIR)".
  ::testing::AssertionResult start(ServerOptions options = {});

  // Sends sig and waits up to timeout for the exit (then SIGKILLs and fails the test). Adds a test
  // failure if the server's stderr holds a sanitizer report.
  ExitResult stop(int sig = SIGTERM, std::chrono::milliseconds timeout = 10s);

  bool running() const { return pid_ > 0; }
  pid_t pid() const { return pid_; }
  // The bound address as the server printed it: "127.0.0.1:PORT" or "[::1]:PORT".
  const std::string& address() const { return address_; }
  std::uint16_t port() const { return port_; }
  // The port of the metrics endpoint the server announced (--metrics-listen), 0 if none.
  std::uint16_t metrics_port() const { return metrics_port_; }
  const std::string& data_dir() const { return data_dir_; }
  std::string ca_file() const { return data_dir_ + "/cert.pem"; }
  // Everything the current (or last) server process wrote to stderr so far.
  std::string stderr_text() const;

 private:
  void reap_stdout_reader();
  void check_sanitizers(const std::string& when);

  std::string data_dir_;
  int starts_ = 0;
  pid_t pid_ = -1;
  std::string address_;
  std::uint16_t port_ = 0;
  std::uint16_t metrics_port_ = 0;
  std::string stdout_path_;
  std::string stderr_path_;
  // Reads the server's stdout pipe into stdout_path_ and stdout_text_ until EOF.
  std::thread stdout_reader_;
  mutable std::mutex mutex_;
  std::condition_variable stdout_cv_;
  std::string stdout_text_;
  bool stdout_eof_ = false;
};

// Runs debra-server with args, a shell-quoted string, for a server that is expected to exit by itself
// (bounded by timeout(1) to 10 s); its exit code (-1 if it did not exit) and everything it printed.
std::pair<int, std::string> run_server_briefly(const std::string& args);

// CliResult: one run of the debra CLI.
struct CliResult {
  int exit_code = -1;  // -1 if it did not exit normally
  int signal = 0;
  bool timed_out = false;
  std::string out;
  std::string err;
  std::chrono::milliseconds elapsed{0};
  std::string describe() const;  // for assertion messages
};

// Runs DEBRA_CLI_BIN with args (stdin: input, or /dev/null if it is empty), capturing stdout and
// stderr; kills it after timeout. Adds a test failure if its stderr holds a sanitizer report.
CliResult run_cli(const std::vector<std::string>& args, std::chrono::milliseconds timeout = 30s,
                  const std::string& input = {});
// The same for another of the project's programs (a load tool).
CliResult run_program(const std::string& binary, const std::vector<std::string>& args,
                      std::chrono::milliseconds timeout = 30s, const std::string& input = {});

}  // namespace debra::testing
