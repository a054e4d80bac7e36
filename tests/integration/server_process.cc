// SPDX-License-Identifier: MIT
#include "server_process.h"

#include <fcntl.h>
#include <poll.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <sstream>

#ifndef DEBRA_SERVER_BIN
#error "DEBRA_SERVER_BIN must name the debra-server binary"
#endif
#ifndef DEBRA_CLI_BIN
#error "DEBRA_CLI_BIN must name the debra binary"
#endif

namespace debra::testing {
namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

constexpr std::string_view kReadyPrefix = "debra-server ready on ";
constexpr std::string_view kDataDirMarker = " (data dir ";
constexpr std::string_view kMetricsPrefix = "debra-server metrics on http://";

std::chrono::milliseconds since(Clock::time_point start) {
  return std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - start);
}

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream out;
  out << in.rdbuf();
  return out.str();
}

std::string last_lines(const std::string& text, std::size_t count) {
  if (text.empty()) return text;
  std::size_t pos = text.size();
  for (std::size_t n = 0; n <= count && pos > 0; ++n) {
    std::size_t found = text.rfind('\n', pos - 1);
    if (found == std::string::npos) return text;
    pos = found;
  }
  return text.substr(pos + 1);
}

// This process's environment with the NAME=value entries of overrides in place of their NAMEs.
std::vector<std::string> environment_with(const std::vector<std::string>& overrides) {
  std::vector<std::string> env;
  for (char** entry = environ; *entry != nullptr; ++entry) {
    std::string_view text(*entry);
    bool replaced = std::any_of(overrides.begin(), overrides.end(), [&](const std::string& o) {
      return o.substr(0, o.find('=') + 1) == text.substr(0, text.find('=') + 1);
    });
    if (!replaced) env.emplace_back(text);
  }
  env.insert(env.end(), overrides.begin(), overrides.end());
  return env;
}

std::vector<char*> pointers_to(const std::vector<std::string>& strings) {
  std::vector<char*> pointers;
  pointers.reserve(strings.size() + 1);
  for (const auto& s : strings) pointers.push_back(const_cast<char*>(s.c_str()));
  pointers.push_back(nullptr);
  return pointers;
}

// Starts path with args, stdout and stderr on the given descriptors. The child
// dies with the thread that started it (PR_SET_PDEATHSIG), so a crashed test leaves no server behind.
// in_fd: the child's stdin; -1: /dev/null. env: NAME=value entries that replace or add to ours.
pid_t spawn(const std::vector<std::string>& args, int out_fd, int err_fd, int in_fd = -1,
            const std::vector<std::string>& env = {}) {
  std::vector<char*> argv = pointers_to(args);
  std::vector<std::string> environment = environment_with(env);
  std::vector<char*> envp = pointers_to(environment);
  pid_t parent = getpid();
  pid_t pid = fork();
  if (pid != 0) return pid;
  // The child of a multi-threaded process: async-signal-safe calls only, up to exec.
  prctl(PR_SET_PDEATHSIG, SIGKILL);
  if (getppid() != parent) _exit(127);
  int input_fd = in_fd >= 0 ? in_fd : open("/dev/null", O_RDONLY);
  if (input_fd < 0 || dup2(input_fd, 0) < 0 || dup2(out_fd, 1) < 0 || dup2(err_fd, 2) < 0) _exit(127);
  sigset_t none;
  sigemptyset(&none);
  sigprocmask(SIG_SETMASK, &none, nullptr);
  execve(argv[0], argv.data(), envp.data());
  static const char message[] = "exec failed\n";
  [[maybe_unused]] auto n = write(2, message, sizeof message - 1);
  _exit(127);
}

// Waits up to timeout for pid to exit; true and *status once it has.
bool wait_exit(pid_t pid, std::chrono::milliseconds timeout, int* status) {
  auto deadline = Clock::now() + timeout;
  int pidfd = static_cast<int>(syscall(SYS_pidfd_open, pid, 0));
  bool done = false;
  for (;;) {
    pid_t r = waitpid(pid, status, WNOHANG);
    if (r == pid) {
      done = true;
      break;
    }
    if (r < 0 && errno != EINTR) {
      *status = 0;
      done = true;  // not our child any more (already reaped): nothing to wait for
      break;
    }
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
    if (left.count() <= 0) break;
    if (pidfd >= 0) {
      pollfd p{pidfd, POLLIN, 0};
      poll(&p, 1, static_cast<int>(std::min<long long>(left.count(), 1000)) + 1);
    } else {
      // No pidfd (old kernel or seccomp): poll the child's state.
      std::this_thread::sleep_for(std::min(left, std::chrono::milliseconds(5)));
    }
  }
  if (pidfd >= 0) close(pidfd);
  return done;
}

}  // namespace

bool ExitResult::exited() const { return finished && WIFEXITED(status); }
int ExitResult::exit_code() const { return exited() ? WEXITSTATUS(status) : -1; }
int ExitResult::signal() const { return finished && WIFSIGNALED(status) ? WTERMSIG(status) : 0; }

std::string ExitResult::describe() const {
  if (!finished) return "did not exit in time (killed)";
  std::string what = exited() ? "exit code " + std::to_string(exit_code())
                              : "killed by signal " + std::to_string(signal());
  return what + " after " + std::to_string(elapsed.count()) + " ms";
}

bool contains_sanitizer_report(const std::string& text) {
  return text.find("AddressSanitizer") != std::string::npos || text.find("runtime error:") != std::string::npos ||
         text.find("LeakSanitizer") != std::string::npos || text.find("ThreadSanitizer") != std::string::npos;
}

ServerProcess::ServerProcess() {
  char pattern[] = "/tmp/debra-it-XXXXXX";
  if (mkdtemp(pattern) == nullptr) {
    ADD_FAILURE() << "mkdtemp: " << std::strerror(errno);
    return;
  }
  data_dir_ = pattern;
}

ServerProcess::~ServerProcess() {
  if (running()) stop(SIGTERM, 10s);
  if (::testing::Test::HasFailure()) {
    // The server's side of the story, for whoever reads the failure.
    for (int n = 1; n <= starts_; ++n) {
      std::string path = data_dir_ + "/server-" + std::to_string(n) + ".stderr";
      std::cerr << "---- " << path << " (last lines) ----\n" << last_lines(read_file(path), 60) << "----\n";
    }
  }
  if (!data_dir_.empty()) {
    std::error_code ec;
    fs::remove_all(data_dir_, ec);
  }
}

std::string ServerProcess::stderr_text() const { return stderr_path_.empty() ? "" : read_file(stderr_path_); }

::testing::AssertionResult ServerProcess::start(ServerOptions options) {
  if (data_dir_.empty()) return ::testing::AssertionFailure() << "no data dir";
  if (running()) return ::testing::AssertionFailure() << "the server is already running (pid " << pid_ << ")";
  ++starts_;
  std::string base = data_dir_ + "/server-" + std::to_string(starts_);
  stdout_path_ = base + ".stdout";
  stderr_path_ = base + ".stderr";
  int err_fd = open(stderr_path_.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  int pipe_fds[2];
  if (err_fd < 0 || pipe2(pipe_fds, O_CLOEXEC) != 0) {
    if (err_fd >= 0) close(err_fd);
    return ::testing::AssertionFailure() << "cannot set up the server's output: " << std::strerror(errno);
  }
  std::vector<std::string> args{DEBRA_SERVER_BIN, "--listen", options.listen, "--data-dir", data_dir_};
  args.insert(args.end(), options.args.begin(), options.args.end());
  pid_ = spawn(args, pipe_fds[1], err_fd, -1, options.env);
  close(err_fd);
  close(pipe_fds[1]);
  if (pid_ < 0) {
    close(pipe_fds[0]);
    return ::testing::AssertionFailure() << "fork: " << std::strerror(errno);
  }
  {
    std::lock_guard lock(mutex_);
    stdout_text_.clear();
    stdout_eof_ = false;
  }
  stdout_reader_ = std::thread([this, fd = pipe_fds[0], path = stdout_path_] {
    std::ofstream file(path, std::ios::binary | std::ios::trunc);
    char buffer[4096];
    for (;;) {
      ssize_t n = read(fd, buffer, sizeof buffer);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) break;
      file.write(buffer, n);
      file.flush();
      std::lock_guard lock(mutex_);
      stdout_text_.append(buffer, static_cast<std::size_t>(n));
      stdout_cv_.notify_all();
    }
    close(fd);
    std::lock_guard lock(mutex_);
    stdout_eof_ = true;
    stdout_cv_.notify_all();
  });

  // Wait for the complete ready line (or the end of stdout: the server died).
  std::string line;
  {
    std::unique_lock lock(mutex_);
    stdout_cv_.wait_for(lock, options.ready_timeout, [&] {
      std::size_t at = stdout_text_.find(kReadyPrefix);
      std::size_t end = at == std::string::npos ? at : stdout_text_.find('\n', at);
      if (end != std::string::npos) line = stdout_text_.substr(at, end - at);
      return !line.empty() || stdout_eof_;
    });
  }
  if (line.empty()) {
    auto exit = stop(SIGKILL, 5s);
    return ::testing::AssertionFailure() << "debra-server printed no ready line within "
                                         << options.ready_timeout.count() << " ms (" << exit.describe()
                                         << "); stderr:\n"
                                         << stderr_text();
  }
  std::size_t marker = line.find(kDataDirMarker);
  address_ = line.substr(kReadyPrefix.size(), marker == std::string::npos ? std::string::npos
                                                                          : marker - kReadyPrefix.size());
  std::size_t colon = address_.rfind(':');
  int port = colon == std::string::npos ? 0 : std::atoi(address_.c_str() + colon + 1);
  if (marker == std::string::npos || port <= 0 || port > 65535) {
    stop(SIGKILL, 5s);
    return ::testing::AssertionFailure() << "cannot parse the ready line: " << line;
  }
  port_ = static_cast<std::uint16_t>(port);
  std::string dir = line.substr(marker + kDataDirMarker.size());
  if (dir != data_dir_ + ")") {
    stop(SIGKILL, 5s);
    return ::testing::AssertionFailure() << "the ready line names another data dir: " << line;
  }
  // The metrics line, if any, comes before the ready line: "... on http://HOST:PORT/metrics".
  metrics_port_ = 0;
  std::lock_guard lock(mutex_);
  if (std::size_t at = stdout_text_.find(kMetricsPrefix); at != std::string::npos) {
    std::size_t slash = stdout_text_.find("/metrics", at);
    std::size_t port_colon = stdout_text_.rfind(':', slash);
    metrics_port_ = static_cast<std::uint16_t>(std::atoi(stdout_text_.c_str() + port_colon + 1));
  }
  return ::testing::AssertionSuccess();
}

ExitResult ServerProcess::stop(int sig, std::chrono::milliseconds timeout) {
  ExitResult result;
  if (!running()) return result;
  auto start = Clock::now();
  kill(pid_, sig);
  result.finished = wait_exit(pid_, timeout, &result.status);
  result.elapsed = since(start);
  if (!result.finished) {
    ADD_FAILURE() << "debra-server (pid " << pid_ << ") did not exit within " << timeout.count()
                  << " ms of signal " << sig << "; killing it";
    kill(pid_, SIGKILL);
    int status = 0;
    wait_exit(pid_, 10s, &status);
  }
  pid_ = -1;
  reap_stdout_reader();
  check_sanitizers("signal " + std::to_string(sig));
  return result;
}

void ServerProcess::reap_stdout_reader() {
  if (stdout_reader_.joinable()) stdout_reader_.join();
}

void ServerProcess::check_sanitizers(const std::string& when) {
  std::string text = stderr_text();
  EXPECT_FALSE(contains_sanitizer_report(text))
      << "debra-server (" << stderr_path_ << ", stopped by " << when << ") reported a sanitizer error:\n"
      << text;
}

std::pair<int, std::string> run_server_briefly(const std::string& args) {
  std::string command = std::string("timeout 10 ") + DEBRA_SERVER_BIN + " " + args + " 2>&1";
  FILE* pipe = popen(command.c_str(), "r");
  if (pipe == nullptr) return {-1, "popen failed"};
  std::string output;
  char buf[512];
  while (std::size_t n = std::fread(buf, 1, sizeof buf, pipe)) output.append(buf, n);
  int status = pclose(pipe);
  return {WIFEXITED(status) ? WEXITSTATUS(status) : -1, output};
}

std::string CliResult::describe() const {
  std::ostringstream text;
  text << "exit code " << exit_code;
  if (signal != 0) text << ", signal " << signal;
  if (timed_out) text << ", TIMED OUT";
  text << ", " << elapsed.count() << " ms\n--- stdout ---\n" << out << "--- stderr ---\n" << err << "---";
  return text.str();
}

CliResult run_cli(const std::vector<std::string>& args, std::chrono::milliseconds timeout, const std::string& input) {
  return run_program(DEBRA_CLI_BIN, args, timeout, input);
}

CliResult run_program(const std::string& binary, const std::vector<std::string>& args,
                      std::chrono::milliseconds timeout, const std::string& input) {
  CliResult result;
  int in_fd = -1;
  if (!input.empty()) {
    // A file rather than a pipe: the child reads it at its own pace while this thread reads its output.
    char path[] = "/tmp/debra-cli-input-XXXXXX";
    in_fd = mkstemp(path);
    if (in_fd < 0 || write(in_fd, input.data(), input.size()) != static_cast<ssize_t>(input.size()) ||
        lseek(in_fd, 0, SEEK_SET) != 0) {
      ADD_FAILURE() << "stdin file: " << std::strerror(errno);
      if (in_fd >= 0) close(in_fd);
      return result;
    }
    unlink(path);
  }
  int out_pipe[2];
  int err_pipe[2];
  if (pipe2(out_pipe, O_CLOEXEC) != 0) {
    ADD_FAILURE() << "pipe2: " << std::strerror(errno);
    return result;
  }
  if (pipe2(err_pipe, O_CLOEXEC) != 0) {
    ADD_FAILURE() << "pipe2: " << std::strerror(errno);
    close(out_pipe[0]);
    close(out_pipe[1]);
    return result;
  }
  std::vector<std::string> argv{binary};
  argv.insert(argv.end(), args.begin(), args.end());
  auto start = Clock::now();
  pid_t pid = spawn(argv, out_pipe[1], err_pipe[1], in_fd);
  close(out_pipe[1]);
  close(err_pipe[1]);
  if (in_fd >= 0) close(in_fd);
  if (pid < 0) {
    ADD_FAILURE() << "fork: " << std::strerror(errno);
    close(out_pipe[0]);
    close(err_pipe[0]);
    return result;
  }
  auto deadline = start + timeout;
  pollfd fds[2] = {{out_pipe[0], POLLIN, 0}, {err_pipe[0], POLLIN, 0}};
  std::string* sinks[2] = {&result.out, &result.err};
  int open_count = 2;
  while (open_count > 0) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
    if (left.count() <= 0 && !result.timed_out) {
      result.timed_out = true;
      kill(pid, SIGKILL);  // its pipes close with it
      deadline = Clock::now() + 10s;
      continue;
    }
    int ready = poll(fds, 2, static_cast<int>(std::max<long long>(left.count(), 1)));
    if (ready < 0 && errno != EINTR) break;
    for (int i = 0; i < 2; ++i) {
      if (fds[i].fd < 0 || (fds[i].revents & (POLLIN | POLLHUP | POLLERR)) == 0) continue;
      char buffer[4096];
      ssize_t n = read(fds[i].fd, buffer, sizeof buffer);
      if (n > 0) {
        sinks[i]->append(buffer, static_cast<std::size_t>(n));
      } else if (n == 0 || errno != EINTR) {
        close(fds[i].fd);
        fds[i].fd = -1;
        --open_count;
      }
    }
  }
  for (auto& fd : fds) {
    if (fd.fd >= 0) close(fd.fd);
  }
  int status = 0;
  if (!wait_exit(pid, 10s, &status)) {
    kill(pid, SIGKILL);
    wait_exit(pid, 10s, &status);
  }
  result.elapsed = since(start);
  if (WIFEXITED(status)) result.exit_code = WEXITSTATUS(status);
  if (WIFSIGNALED(status)) result.signal = WTERMSIG(status);
  EXPECT_FALSE(contains_sanitizer_report(result.err)) << "debra reported a sanitizer error:\n" << result.err;
  return result;
}

}  // namespace debra::testing
