// SPDX-License-Identifier: MIT
//
// The metrics endpoint (--metrics-listen) as an operator's scraper sees it.
#include <debra/client.h>
#include <gtest/gtest.h>

#include "metrics_scrape.h"
#include "raw_client.h"
#include "server_process.h"
#include "test_support.h"

namespace debra::testing {
namespace {

using Clock = std::chrono::steady_clock;

// Scrapes until predicate holds for the page (the loop republishes it every 250 ms), bounded.
template <typename Predicate>
MetricsScrape scrape_until(const ServerProcess& server, Predicate predicate) {
  auto deadline = Clock::now() + 5s;
  for (;;) {
    auto page = scrape_metrics(server);
    if (!page) {
      ADD_FAILURE() << page.error().message;
      return {};
    }
    if (predicate(*page) || Clock::now() >= deadline) return std::move(*page);
    std::this_thread::sleep_for(50ms);
  }
}

TEST(MetricsIntegration, FollowTheRoutersState) {
  ServerProcess server;
  ASSERT_TRUE(server.start(with_args({"--metrics-listen", "127.0.0.1:0"})));
  ASSERT_NE(server.metrics_port(), 0);
  auto idle = scrape_metrics(server);
  ASSERT_TRUE(idle) << idle.error().message;
  EXPECT_EQ(idle->value("debra_connections"), 0);
  EXPECT_EQ(idle->value("debra_messages_in_total"), 0);
  EXPECT_GT(idle->value("process_resident_memory_bytes"), 0);
  EXPECT_NE(idle->text.find("# TYPE debra_messages_in_total counter\n"), std::string::npos) << idle->text;

  auto a = connect_client(server, 1);
  auto b = connect_client(server, 2);
  ASSERT_TRUE(a && b);
  ASSERT_TRUE(exchange(*a, 1, *b, 2, "counted"));
  auto busy = scrape_until(server, [](const MetricsScrape& p) { return p.shows("debra_messages_delivered_total", 2); });
  EXPECT_EQ(busy.value("debra_connections"), 2);
  EXPECT_EQ(busy.value("debra_sessions"), 2);
  EXPECT_EQ(busy.value("debra_clients_online"), 2);
  EXPECT_EQ(busy.value("debra_messages_in_total"), 2);
  EXPECT_EQ(busy.value("debra_messages_delivered_total"), 2);
  EXPECT_EQ(busy.value("debra_connections_accepted_total"), 2);
  EXPECT_GT(busy.value("debra_datagrams_received_total"), 0);
  EXPECT_GT(busy.value("debra_datagrams_sent_total"), 0);
  EXPECT_GT(busy.value("debra_udp_send_calls_total"), 0);
  EXPECT_LE(busy.value("debra_udp_send_calls_total"), busy.value("debra_datagrams_sent_total"));
  // The message log (the default store) made the messages durable before it delivered them.
  EXPECT_GT(busy.value("debra_store_commits_total"), 0);
  EXPECT_GT(busy.value("debra_store_syncs_total"), 0);
  EXPECT_GT(busy.value("debra_store_disk_bytes"), 0);
  EXPECT_EQ(busy.value("debra_store_compactions_total"), 0);  // two messages fill no segment
  EXPECT_EQ(busy.value("debra_store_compacted_bytes_total"), 0);
  // Histograms: how long commits and their syncs took, and each loop's iterations.
  EXPECT_NE(busy.text.find("# TYPE debra_store_commit_seconds histogram\n"), std::string::npos) << busy.text;
  EXPECT_GT(busy.value("debra_store_commit_seconds_count"), 0);
  EXPECT_EQ(busy.value("debra_store_commit_seconds_bucket{le=\"+Inf\"}"),
            busy.value("debra_store_commit_seconds_count"));
  EXPECT_GT(busy.value("debra_store_commit_seconds_sum"), 0);
  EXPECT_GT(busy.value("debra_store_sync_seconds_count"), 0);
  EXPECT_GT(busy.value("debra_loop_iteration_seconds_count{thread=\"0\"}"), 0);

  // A protocol violation is counted, and its connection leaves the gauges.
  auto raw = RawClient::connect(raw_options(server));
  ASSERT_TRUE(raw) << raw.error().message;
  (*raw)->send(std::vector<std::uint8_t>(wire::kLengthPrefixSize + 4, 0));  // a 0-length frame, then junk
  ASSERT_TRUE((*raw)->wait_closed(10s));
  auto after = scrape_until(server, [](const MetricsScrape& p) {
    return p.shows("debra_protocol_errors_total", 1) && p.shows("debra_connections", 2);
  });
  EXPECT_EQ(after.value("debra_protocol_errors_total"), 1);
  EXPECT_EQ(after.value("debra_connections"), 2);
  EXPECT_EQ(after.value("debra_connections_accepted_total"), 3);
}

TEST(MetricsIntegration, NonLoopbackNeedsExplicitConsent) {
  ServerProcess server;
  ServerOptions options = with_args({"--metrics-listen", "0.0.0.0:0"});
  options.ready_timeout = 5s;
  EXPECT_FALSE(server.start(options));
  EXPECT_NE(server.stderr_text().find("refusing to serve metrics on 0.0.0.0:0"), std::string::npos)
      << server.stderr_text();
}

TEST(MetricsIntegration, OffByDefault) {
  ServerProcess server;
  ASSERT_TRUE(server.start());
  EXPECT_EQ(server.metrics_port(), 0);
}

}  // namespace
}  // namespace debra::testing
