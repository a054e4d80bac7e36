// SPDX-License-Identifier: MIT
#include "load/latency.h"

#include <gtest/gtest.h>

#include <cstdint>
#include <random>
#include <string>
#include <vector>

namespace debra::bench {
namespace {

TEST(Payload, SizesBelowTheHeaderAreRoundedUp) {
  EXPECT_EQ(effective_payload_size(0), kHeaderSize);
  EXPECT_EQ(effective_payload_size(1), 16u);
  EXPECT_EQ(effective_payload_size(16), 16u);
  EXPECT_EQ(effective_payload_size(64), 64u);
}

TEST(Payload, HeaderIsLittleEndianTimestampThenSequence) {
  std::vector<std::uint8_t> payload(24, 0);
  fill_payload(payload);
  write_header(payload, {0x0102030405060708ull, 0x1112131415161718ull});
  const std::vector<std::uint8_t> expected_header = {0x08, 0x07, 0x06, 0x05, 0x04, 0x03, 0x02, 0x01,
                                                     0x18, 0x17, 0x16, 0x15, 0x14, 0x13, 0x12, 0x11};
  EXPECT_EQ(std::vector<std::uint8_t>(payload.begin(), payload.begin() + 16), expected_header);
  EXPECT_EQ(payload[16], 'a' + 16 % 26);  // filler untouched by write_header

  const auto header = read_header(payload);
  ASSERT_TRUE(header.has_value());
  EXPECT_EQ(header->send_ns, 0x0102030405060708ull);
  EXPECT_EQ(header->seq, 0x1112131415161718ull);
  const auto via_pointer = read_header(payload.data(), payload.size());
  ASSERT_TRUE(via_pointer.has_value());
  EXPECT_EQ(via_pointer->seq, header->seq);
}

TEST(Payload, ShortPayloadHasNoHeader) {
  const std::vector<std::uint8_t> payload(15, 0);
  EXPECT_FALSE(read_header(payload).has_value());
}

TEST(Clock, NowIsMonotonic) {
  const std::uint64_t a = now_ns();
  const std::uint64_t b = now_ns();
  EXPECT_LE(a, b);
  EXPECT_GT(a, 0u);
}

TEST(Histogram, SmallValuesAreExact) {
  LatencyHistogram h;
  for (std::uint64_t v = 1; v <= 100; ++v) h.record(v);
  EXPECT_EQ(h.count(), 100u);
  EXPECT_EQ(h.min(), 1u);
  EXPECT_EQ(h.max(), 100u);
  EXPECT_EQ(h.percentile(0.5), 50u);
  EXPECT_EQ(h.percentile(0.99), 99u);
  EXPECT_EQ(h.percentile(1.0), 100u);
  EXPECT_EQ(h.percentile(0.0), 1u);
}

TEST(Histogram, EmptyReportsZero) {
  const LatencyHistogram h;
  EXPECT_EQ(h.count(), 0u);
  EXPECT_EQ(h.percentile(0.5), 0u);
  EXPECT_EQ(h.min(), 0u);
}

TEST(Histogram, BucketsTileTheRangeWithoutGaps) {
  for (std::size_t i = 0; i + 1 < LatencyHistogram::bucket_count(); ++i) {
    ASSERT_EQ(LatencyHistogram::bucket_low(i) + LatencyHistogram::bucket_width(i), LatencyHistogram::bucket_low(i + 1))
        << "bucket " << i;
  }
  for (std::uint64_t v : {0ull, 127ull, 128ull, 129ull, 255ull, 256ull, 1000ull, 123456789ull, (1ull << 39) + 5}) {
    const std::size_t i = LatencyHistogram::bucket_index(v);
    EXPECT_LE(LatencyHistogram::bucket_low(i), v);
    EXPECT_LT(v, LatencyHistogram::bucket_low(i) + LatencyHistogram::bucket_width(i));
  }
  // Beyond the range: the last bucket, never out of bounds.
  EXPECT_EQ(LatencyHistogram::bucket_index(~0ull), LatencyHistogram::bucket_count() - 1);
}

TEST(Histogram, RelativeErrorIsBelowOnePercent) {
  std::mt19937_64 rng(42);
  for (int i = 0; i < 20000; ++i) {
    // Log-uniform over 100 ns .. 100 s.
    const double e = std::uniform_real_distribution<double>(2.0, 11.0)(rng);
    const auto v = static_cast<std::uint64_t>(std::pow(10.0, e));
    LatencyHistogram h;
    h.record(v);
    h.record(v + 1);  // so min/max clamping does not hide the bucket error
    h.record(v * 2);
    const std::uint64_t reported = h.percentile(0.01);
    const double error = std::abs(static_cast<double>(reported) - static_cast<double>(v)) / static_cast<double>(v);
    ASSERT_LE(error, 0.01) << "value " << v << " reported " << reported;
  }
}

TEST(Histogram, PercentilesOfAUniformSpread) {
  LatencyHistogram h;
  for (std::uint64_t v = 1; v <= 100000; ++v) h.record(v * 1000);  // 1 us .. 100 ms
  EXPECT_NEAR(static_cast<double>(h.percentile(0.5)), 50e6, 50e6 * 0.01);
  EXPECT_NEAR(static_cast<double>(h.percentile(0.99)), 99e6, 99e6 * 0.01);
  EXPECT_NEAR(static_cast<double>(h.percentile(0.999)), 99.9e6, 99.9e6 * 0.01);
  EXPECT_NEAR(static_cast<double>(h.percentile(1.0)), 100e6, 100e6 * 0.01);
  EXPECT_EQ(h.max(), 100000u * 1000u);
}

TEST(Histogram, MergeAndReset) {
  LatencyHistogram a;
  LatencyHistogram b;
  for (int i = 0; i < 10; ++i) a.record(10);
  for (int i = 0; i < 30; ++i) b.record(1000000);
  a.merge(b);
  EXPECT_EQ(a.count(), 40u);
  EXPECT_EQ(a.min(), 10u);
  EXPECT_EQ(a.max(), 1000000u);
  EXPECT_EQ(a.percentile(0.25), 10u);
  EXPECT_NEAR(static_cast<double>(a.percentile(0.5)), 1e6, 1e4);
  a.reset();
  EXPECT_EQ(a.count(), 0u);
  EXPECT_EQ(a.percentile(0.5), 0u);
}

class TrackerTest : public ::testing::Test {
 protected:
  MeasureWindow window{1000, 2000};
  LatencyHistogram histogram;
  ReceiveTracker tracker{histogram};

  void receive(std::uint64_t seq, std::uint64_t send_ns = 1500, std::uint64_t recv_ns = 1600) {
    tracker.on_message({send_ns, seq}, recv_ns, window);
  }
};

TEST_F(TrackerTest, InOrderStreamHasNoLossOrReorder) {
  for (std::uint64_t s = 0; s < 100; ++s) receive(s);
  EXPECT_EQ(tracker.received(), 100u);
  EXPECT_EQ(tracker.reordered(), 0u);
  EXPECT_EQ(tracker.lost(100), 0u);
  EXPECT_EQ(tracker.expected_next(), 100u);
  EXPECT_EQ(histogram.count(), 100u);
  EXPECT_EQ(histogram.percentile(0.5), 100u);
}

TEST_F(TrackerTest, LateMessageCountsAsReorderedAndFillsItsGap) {
  receive(0);
  receive(2);  // 1 is missing for now
  EXPECT_EQ(tracker.lost(3), 1u);
  receive(1);  // arrives late
  EXPECT_EQ(tracker.reordered(), 1u);
  EXPECT_EQ(tracker.lost(3), 0u);
  EXPECT_EQ(tracker.received(), 3u);
}

TEST_F(TrackerTest, GapsAndMissingTailAreLost) {
  receive(0);
  receive(3);  // 1 and 2 never come
  receive(4);
  EXPECT_EQ(tracker.lost(5), 2u);
  EXPECT_EQ(tracker.lost(8), 5u);  // 5, 6, 7 were sent but never received
  EXPECT_EQ(tracker.reordered(), 0u);
}

TEST_F(TrackerTest, OnlyMessagesSentInsideTheWindowAreMeasured) {
  receive(0, 999, 5000);   // warm-up
  receive(1, 1000, 1100);  // first measured
  receive(2, 1999, 9000);  // last measured, received long after the window: still counted
  receive(3, 2000, 2100);  // after the window
  EXPECT_EQ(tracker.received(), 4u);
  EXPECT_EQ(tracker.measured_received(), 2u);
  EXPECT_EQ(histogram.count(), 2u);
  EXPECT_EQ(histogram.min(), 100u);
  EXPECT_EQ(histogram.max(), 7001u);
}

TEST_F(TrackerTest, NegativeLatencyIsClampedToZero) {
  receive(0, 1500, 1400);
  EXPECT_EQ(histogram.max(), 0u);
}

TEST(MeasureWindowTest, HalfOpenInterval) {
  const MeasureWindow w{10, 20};
  EXPECT_FALSE(w.contains(9));
  EXPECT_TRUE(w.contains(10));
  EXPECT_TRUE(w.contains(19));
  EXPECT_FALSE(w.contains(20));
  EXPECT_DOUBLE_EQ(w.seconds(), 10e-9);
  EXPECT_FALSE(MeasureWindow{}.contains(0));
}

Report sample_report() {
  Report r;
  r.tool = "nats";
  r.mode = "tls";
  r.pairs = 64;
  r.size = 64;
  r.window = 64;
  r.duration_s = 5.0;
  r.sent = 3500064;
  r.received = 3500000;
  r.lost = 0;
  r.reordered = 0;
  r.refused = 7;
  r.p50_us = 812.34;
  r.p99_us = 2400.0;
  r.p999_us = 3100.5;
  return r;
}

TEST(ReportTest, ThroughputFromReceivedOverDuration) {
  const Report r = sample_report();
  EXPECT_DOUBLE_EQ(r.msgs_per_s(), 700000.0);
  EXPECT_DOUBLE_EQ(r.mib_per_s(), 700000.0 * 64 / 1048576.0);
  Report zero;
  EXPECT_EQ(zero.msgs_per_s(), 0.0);
}

TEST(ReportTest, JsonHasExactlyTheDocumentedKeysInOrder) {
  EXPECT_EQ(format_json(sample_report()),
            "{\"tool\":\"nats\",\"mode\":\"tls\",\"pairs\":64,\"size\":64,\"window\":64,\"duration_s\":5.000,"
            "\"sent\":3500064,\"received\":3500000,\"msgs_per_s\":700000.0,\"mib_per_s\":42.725,"
            "\"p50_us\":812.3,\"p99_us\":2400.0,\"p999_us\":3100.5,\"lost\":0,\"reordered\":0,\"refused\":7}");
}

TEST(ReportTest, JsonEscapesStrings) {
  Report r = sample_report();
  r.tool = "a\"b\\c\n";
  const std::string json = format_json(r);
  EXPECT_NE(json.find("\"tool\":\"a\\\"b\\\\c\\u000a\""), std::string::npos) << json;
  EXPECT_EQ(json.find('\n'), std::string::npos);
}

TEST(ReportTest, SetLatencyConvertsToMicroseconds) {
  LatencyHistogram h;
  for (int i = 0; i < 1000; ++i) h.record(100);  // exact bucket
  Report r;
  r.set_latency(h);
  EXPECT_DOUBLE_EQ(r.p50_us, 0.1);
  EXPECT_DOUBLE_EQ(r.p999_us, 0.1);
}

TEST(ReportTest, TextMentionsEveryNumber) {
  const std::string text = format_text(sample_report());
  for (const char* needle : {"nats (tls)", "64 pairs", "700000 msgs/s", "p99.9 3100.5 us", "received 3500000",
                             "lost 0", "reordered 0", "refused 7"}) {
    EXPECT_NE(text.find(needle), std::string::npos) << needle << " in:\n" << text;
  }
}

TEST(ReportTest, AddPairSumsCountsAndReturnsWhatNeverArrived) {
  LatencyHistogram h;
  const MeasureWindow window{100, 200};
  ReceiveTracker a(h);
  for (std::uint64_t seq : {0, 1, 3}) a.on_message({150, seq}, 160, window);  // 2 missing, 4 never came
  ReceiveTracker b(h);
  b.on_message({50, 0}, 60, window);  // sent before the window: counted in the run, not measured
  Report r;
  EXPECT_EQ(r.add_pair(3, 5, a), 2u);
  EXPECT_EQ(r.add_pair(0, 1, b), 0u);
  EXPECT_EQ(r.sent, 3u);
  EXPECT_EQ(r.received, 3u);
  EXPECT_EQ(r.lost, 2u);
  EXPECT_EQ(r.reordered, 0u);
  EXPECT_EQ(r.refused, 0u);
}

TEST(ReportTest, RefusedMessagesAreNotLost) {
  LatencyHistogram h;
  const MeasureWindow window{100, 200};
  ReceiveTracker t(h);
  // 0..5 sent; the router refused 2 and 5 (the sender heard why) and 4 never came.
  for (std::uint64_t seq : {0, 1, 3}) t.on_message({150, seq}, 160, window);
  Report r;
  EXPECT_EQ(r.add_pair(6, 6, t, 2), 1u);
  EXPECT_EQ(r.lost, 1u);
  EXPECT_EQ(r.refused, 2u);
  EXPECT_EQ(r.received, 3u);
}

}  // namespace
}  // namespace debra::bench
