// SPDX-License-Identifier: MIT
//
// The Prometheus text format as a scraper reads it, for the one kind with more than one line per
// sample: histograms of durations.
#include "metrics/exposition.h"

#include <gtest/gtest.h>

#include <string>

#include "util/duration_histogram.h"

namespace debra::metrics {
namespace {

using util::DurationHistogram;

TEST(DurationHistogram, ABoundIsInclusiveAndEverythingLongerThanASecondHasABucket) {
  DurationHistogram h;
  h.observe(0);
  h.observe(10'000);          // exactly 10 µs: the first bucket
  h.observe(10'001);          // the second
  h.observe(1'000'000'000);   // exactly 1 s: the last bounded bucket
  h.observe(5'000'000'000);   // past every bound
  EXPECT_EQ(h.in_bucket(0), 2u);
  EXPECT_EQ(h.in_bucket(1), 1u);
  EXPECT_EQ(h.in_bucket(DurationHistogram::kBoundsNs.size() - 1), 1u);
  EXPECT_EQ(h.in_bucket(DurationHistogram::kBoundsNs.size()), 1u);
  EXPECT_EQ(h.count(), 5u);
  EXPECT_EQ(h.sum_ns(), 6'000'020'001u);

  DurationHistogram other;
  other.observe(10'000);
  h += other;
  EXPECT_EQ(h.in_bucket(0), 3u);
  EXPECT_EQ(h.count(), 6u);
}

TEST(Exposition, AHistogramIsCumulativeBucketsInSecondsThenItsSumAndCount) {
  DurationHistogram h;
  h.observe(7'000);        // 7 µs
  h.observe(300'000);      // 0.3 ms
  h.observe(2'000'000'000);  // 2 s
  Exposition page;
  page.histogram("debra_test_seconds", "A test", h, "thread=\"1\"");
  const std::string& text = page.text();
  EXPECT_EQ(text.find("# HELP debra_test_seconds A test\n# TYPE debra_test_seconds histogram\n"), 0u) << text;
  EXPECT_NE(text.find("debra_test_seconds_bucket{thread=\"1\",le=\"1e-05\"} 1\n"), std::string::npos) << text;
  EXPECT_NE(text.find("debra_test_seconds_bucket{thread=\"1\",le=\"0.00025\"} 1\n"), std::string::npos) << text;
  EXPECT_NE(text.find("debra_test_seconds_bucket{thread=\"1\",le=\"0.0005\"} 2\n"), std::string::npos) << text;
  EXPECT_NE(text.find("debra_test_seconds_bucket{thread=\"1\",le=\"1\"} 2\n"), std::string::npos) << text;
  EXPECT_NE(text.find("debra_test_seconds_bucket{thread=\"1\",le=\"+Inf\"} 3\n"), std::string::npos) << text;
  EXPECT_NE(text.find("debra_test_seconds_sum{thread=\"1\"} 2.000307\n"), std::string::npos) << text;
  EXPECT_NE(text.find("debra_test_seconds_count{thread=\"1\"} 3\n"), std::string::npos) << text;

  // Without labels, and a second histogram of the same name shares the header.
  Exposition bare;
  bare.histogram("debra_test_seconds", "A test", h);
  bare.histogram("debra_test_seconds", "", h);
  EXPECT_NE(bare.text().find("debra_test_seconds_bucket{le=\"+Inf\"} 3\n"), std::string::npos) << bare.text();
  EXPECT_NE(bare.text().find("debra_test_seconds_count 3\n"), std::string::npos) << bare.text();
  const auto first_type = bare.text().find("# TYPE");
  EXPECT_EQ(bare.text().find("# TYPE", first_type + 1), std::string::npos) << bare.text();
}

}  // namespace
}  // namespace debra::metrics
