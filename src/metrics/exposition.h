// SPDX-License-Identifier: MIT
//
// Exposition: builds a page in the Prometheus text format (version 0.0.4), one sample per call:
//
//   metrics::Exposition page;
//   page.counter("debra_messages_in_total", "Messages received from clients", counters.messages_in);
//   page.gauge("debra_connections", "Connections the endpoint holds", endpoint.connection_count());
//   page.counter("debra_connections_refused_total", "...", refused, "reason=\"per_address\"");
//
// Consecutive samples of one name share one HELP/TYPE header, so a labelled family is a run of calls.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "util/duration_histogram.h"

namespace debra::metrics {

class Exposition {
 public:
  // labels: the inside of the braces, e.g. `reason="per_address"`; empty for none.
  void counter(std::string_view name, std::string_view help, std::uint64_t value, std::string_view labels = {});
  void gauge(std::string_view name, std::string_view help, std::uint64_t value, std::string_view labels = {});
  // name_bucket{le="..."} (cumulative, in seconds), name_sum (seconds) and name_count.
  void histogram(std::string_view name, std::string_view help, const util::DurationHistogram& histogram,
                 std::string_view labels = {});

  const std::string& text() const { return text_; }
  std::string take() { return std::move(text_); }

 private:
  void header(std::string_view type, std::string_view name, std::string_view help);
  void sample(std::string_view type, std::string_view name, std::string_view help, std::uint64_t value,
              std::string_view labels);

  std::string text_;
  std::string last_name_;
};

}  // namespace debra::metrics
