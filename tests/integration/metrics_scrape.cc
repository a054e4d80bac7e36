// SPDX-License-Identifier: MIT
#include "metrics_scrape.h"

#include <gtest/gtest.h>
#include <httplib.h>

#include <sstream>

namespace debra::testing {

double MetricsScrape::value(const std::string& key) const {
  auto it = samples.find(key);
  if (it == samples.end()) {
    ADD_FAILURE() << "no sample " << key << " in /metrics:\n" << text;
    return 0;
  }
  return it->second;
}

Result<MetricsScrape, Error> scrape_metrics(const ServerProcess& server) {
  if (server.metrics_port() == 0) return make_error("the server announced no metrics endpoint");
  httplib::Client http("127.0.0.1", server.metrics_port());
  http.set_connection_timeout(5, 0);
  http.set_read_timeout(5, 0);
  auto response = http.Get("/metrics");
  if (!response) return make_error("GET /metrics: " + httplib::to_string(response.error()));
  if (response->status != 200) return make_error("GET /metrics: status " + std::to_string(response->status));
  if (response->get_header_value("Content-Type").rfind("text/plain; version=0.0.4", 0) != 0) {
    return make_error("GET /metrics: content type " + response->get_header_value("Content-Type"));
  }
  MetricsScrape scrape;
  scrape.text = response->body;
  std::istringstream lines(response->body);
  std::string line;
  while (std::getline(lines, line)) {
    if (line.empty() || line[0] == '#') continue;
    std::size_t space = line.rfind(' ');
    if (space == std::string::npos) return make_error("GET /metrics: malformed line: " + line);
    scrape.samples[line.substr(0, space)] = std::stod(line.substr(space + 1));
  }
  return scrape;
}

}  // namespace debra::testing
