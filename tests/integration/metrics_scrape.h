// SPDX-License-Identifier: MIT
//
// Scrapes a router's /metrics (--metrics-listen) over HTTP, as Prometheus would, and parses the text
// format into samples keyed by name and labels, e.g. "debra_connections" or
// `debra_connections_refused_total{reason="per_address"}`.
#pragma once

#include <cstdint>
#include <map>
#include <string>

#include "server_process.h"
#include "util/result.h"

namespace debra::testing {

struct MetricsScrape {
  std::string text;  // the page as served
  std::map<std::string, double> samples;

  // The sample's value; a missing sample is a test failure (and 0), so a renamed metric cannot pass.
  double value(const std::string& key) const;
  // Whether the sample is present with that value (no failure if it is not: for polling).
  bool shows(const std::string& key, double expected) const {
    auto it = samples.find(key);
    return it != samples.end() && it->second == expected;
  }
};

Result<MetricsScrape, Error> scrape_metrics(const ServerProcess& server);

}  // namespace debra::testing
