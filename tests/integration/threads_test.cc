// SPDX-License-Identifier: MIT
//
// The router on several threads (--threads): clients spread over the threads' sockets reach each
// other in order, a client whose address changes is followed to the thread that owns its connection,
// and the listening address stays exclusive to one router.
#include <arpa/inet.h>
#include <debra/client.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <array>
#include <atomic>
#include <map>
#include <thread>

#include "metrics_scrape.h"
#include "server_process.h"
#include "test_support.h"

namespace debra::testing {
namespace {

using Clock = std::chrono::steady_clock;

int udp_socket_on_loopback() {
  int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  sockaddr_in any{};
  any.sin_family = AF_INET;
  any.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (fd < 0 || bind(fd, reinterpret_cast<sockaddr*>(&any), sizeof any) != 0) ADD_FAILURE() << "cannot bind a socket";
  return fd;
}

std::uint16_t local_port(int fd) {
  sockaddr_in address{};
  socklen_t length = sizeof address;
  getsockname(fd, reinterpret_cast<sockaddr*>(&address), &length);
  return ntohs(address.sin_port);
}

// RebindingRelay: a UDP relay between one client and the router that can move its side towards the
// router to a new port, as a NAT does when its mapping expires: the router then sees the same QUIC
// connection arrive from another address, which the kernel may hand to another thread's socket.
class RebindingRelay {
 public:
  explicit RebindingRelay(std::uint16_t router_port) {
    router_.sin_family = AF_INET;
    router_.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    router_.sin_port = htons(router_port);
    client_side_ = udp_socket_on_loopback();
    router_side_ = udp_socket_on_loopback();
    thread_ = std::thread([this] { run(); });
  }
  ~RebindingRelay() {
    stop_ = true;
    thread_.join();
    close(client_side_);
    close(router_side_);
  }

  std::string address() const { return "127.0.0.1:" + std::to_string(local_port(client_side_)); }
  // Sends to the router from a new port from the next datagram on.
  void rebind() { rebind_requested_ = true; }
  std::uint16_t router_side_port() const { return router_side_port_; }

 private:
  void run() {
    std::array<std::uint8_t, 65536> buffer{};
    router_side_port_ = local_port(router_side_);
    while (!stop_) {
      if (rebind_requested_.exchange(false)) {
        close(router_side_);
        router_side_ = udp_socket_on_loopback();
        router_side_port_ = local_port(router_side_);
      }
      std::array<pollfd, 2> fds{pollfd{client_side_, POLLIN, 0}, pollfd{router_side_, POLLIN, 0}};
      if (poll(fds.data(), fds.size(), 20) <= 0) continue;
      if (fds[0].revents & POLLIN) {
        socklen_t length = sizeof client_;
        ssize_t n = recvfrom(client_side_, buffer.data(), buffer.size(), 0, reinterpret_cast<sockaddr*>(&client_),
                             &length);
        if (n > 0) {
          sendto(router_side_, buffer.data(), static_cast<std::size_t>(n), 0, reinterpret_cast<sockaddr*>(&router_),
                 sizeof router_);
        }
      }
      if (fds[1].revents & POLLIN) {
        ssize_t n = recv(router_side_, buffer.data(), buffer.size(), 0);
        if (n > 0 && client_.sin_port != 0) {
          sendto(client_side_, buffer.data(), static_cast<std::size_t>(n), 0, reinterpret_cast<sockaddr*>(&client_),
                 sizeof client_);
        }
      }
    }
  }

  sockaddr_in router_{};
  sockaddr_in client_{};
  int client_side_ = -1;
  int router_side_ = -1;
  std::atomic<std::uint16_t> router_side_port_ = 0;
  std::atomic<bool> rebind_requested_ = false;
  std::atomic<bool> stop_ = false;
  std::thread thread_;
};

TEST(ThreadsIntegration, ClientsSpreadOverThreadsReachEachOtherInOrder) {
  ServerProcess server;
  ASSERT_TRUE(server.start(with_args({"--threads", "2", "--metrics-listen", "127.0.0.1:0"})));
  // The kernel picks a socket by each client's port: with 24 clients, both threads get some unless
  // the hash sends all 24 one way (a chance of 2 in 2^24).
  constexpr int kClients = 24;
  constexpr int kMessages = 20;
  std::vector<std::unique_ptr<Client>> clients;
  for (int id = 1; id <= kClients; ++id) {
    clients.push_back(connect_client(server, id));
    ASSERT_TRUE(clients.back());
  }
  auto page = scrape_metrics(server);
  ASSERT_TRUE(page) << page.error().message;
  auto spread = Clock::now() + 5s;
  while (!(page->value("debra_thread_connections{thread=\"0\"}") + page->value("debra_thread_connections{thread=\"1\"}") ==
           kClients) &&
         Clock::now() < spread) {
    std::this_thread::sleep_for(50ms);
    page = scrape_metrics(server);
    ASSERT_TRUE(page) << page.error().message;
  }
  EXPECT_EQ(page->value("debra_threads"), 2);
  EXPECT_GT(page->value("debra_thread_connections{thread=\"0\"}"), 0) << page->text;
  EXPECT_GT(page->value("debra_thread_connections{thread=\"1\"}"), 0) << page->text;

  // Everyone sends to two others at once, so deliveries and replies cross between the threads.
  for (int m = 0; m < kMessages; ++m) {
    for (int i = 0; i < kClients; ++i) {
      for (int step : {1, kClients / 2}) {
        int to = (i + step) % kClients + 1;
        clients[static_cast<std::size_t>(i)]->send(to, std::to_string(i + 1) + ":" + std::to_string(m));
      }
    }
  }
  for (int i = 0; i < kClients; ++i) {
    std::map<std::int32_t, int> next;  // per sender: the next message number expected
    for (int n = 0; n < 2 * kMessages; ++n) {
      auto message = clients[static_cast<std::size_t>(i)]->receive(10s);
      ASSERT_TRUE(message) << "client " << i + 1 << " got " << n << " of " << 2 * kMessages;
      std::string text(message->text());
      ASSERT_EQ(text.substr(0, text.find(':')), std::to_string(message->sender)) << text;
      EXPECT_EQ(std::stoi(text.substr(text.find(':') + 1)), next[message->sender]++) << "out of order: " << text;
    }
    EXPECT_EQ(next.size(), 2u);
  }
}

TEST(ThreadsIntegration, AClientWhoseAddressChangesIsFollowedToItsThread) {
  ServerProcess server;
  ASSERT_TRUE(server.start(with_args({"--threads", "2", "--metrics-listen", "127.0.0.1:0"})));
  RebindingRelay relay(server.port());
  ClientOptions behind_nat = client_options(server, 1);
  behind_nat.server = relay.address();
  auto moving = connect_client(behind_nat);
  auto fixed = connect_client(server, 2);
  ASSERT_TRUE(moving && fixed);
  ASSERT_TRUE(exchange(*moving, 1, *fixed, 2, "before"));
  // Each new port goes to either thread's socket; keep moving until one went to the other thread
  // (the chance that 40 moves never do is 2^-40), and the conversation must go on after every move.
  double forwarded = 0;
  for (int move = 1; move <= 40 && forwarded == 0; ++move) {
    relay.rebind();
    ASSERT_TRUE(exchange(*moving, 1, *fixed, 2, "after move " + std::to_string(move)));
    auto page = scrape_metrics(server);
    ASSERT_TRUE(page) << page.error().message;
    // The page is at most half a second stale.
    auto fresh = Clock::now() + 600ms;
    while (page->value("debra_datagrams_forwarded_total") == 0 && Clock::now() < fresh) {
      std::this_thread::sleep_for(100ms);
      page = scrape_metrics(server);
      ASSERT_TRUE(page) << page.error().message;
    }
    forwarded = page->value("debra_datagrams_forwarded_total");
  }
  EXPECT_GT(forwarded, 0) << "no move reached the other thread's socket";
  ASSERT_TRUE(exchange(*moving, 1, *fixed, 2, "at the end"));
}

TEST(ThreadsIntegration, TheListeningAddressIsOneRoutersAlone) {
  ServerProcess first;
  ASSERT_TRUE(first.start(with_args({"--threads", "2"})));
  for (const char* threads : {"1", "2"}) {
    ServerProcess second;
    ServerOptions options = listening_on(first.address(), {"--threads", threads});
    options.ready_timeout = 5s;
    EXPECT_FALSE(second.start(options)) << "a second router with --threads " << threads << " shares the port";
    EXPECT_NE(second.stderr_text().find("Address already in use"), std::string::npos) << second.stderr_text();
  }
  // The first router is untouched.
  auto a = connect_client(first, 1);
  auto b = connect_client(first, 2);
  ASSERT_TRUE(a && b);
  EXPECT_TRUE(exchange(*a, 1, *b, 2, "still mine"));
}

}  // namespace
}  // namespace debra::testing
