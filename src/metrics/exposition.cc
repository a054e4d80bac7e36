// SPDX-License-Identifier: MIT
#include "metrics/exposition.h"

#include <cstdio>

namespace debra::metrics {
namespace {

std::string seconds(double value) {
  char text[32];
  std::snprintf(text, sizeof text, "%.9g", value);
  return text;
}

}  // namespace

void Exposition::counter(std::string_view name, std::string_view help, std::uint64_t value, std::string_view labels) {
  sample("counter", name, help, value, labels);
}

void Exposition::gauge(std::string_view name, std::string_view help, std::uint64_t value, std::string_view labels) {
  sample("gauge", name, help, value, labels);
}

void Exposition::histogram(std::string_view name, std::string_view help, const util::DurationHistogram& histogram,
                           std::string_view labels) {
  header("histogram", name, help);
  const std::string prefix = labels.empty() ? std::string() : std::string(labels) + ",";
  std::uint64_t cumulative = 0;
  for (std::size_t i = 0; i < util::DurationHistogram::kBuckets; ++i) {
    cumulative += histogram.in_bucket(i);
    const bool last = i == util::DurationHistogram::kBoundsNs.size();
    const std::string le = last ? "+Inf" : seconds(static_cast<double>(util::DurationHistogram::kBoundsNs[i]) / 1e9);
    text_.append(name).append("_bucket{").append(prefix).append("le=\"").append(le).append("\"} ");
    text_.append(std::to_string(cumulative)).append("\n");
  }
  const std::string braced = labels.empty() ? std::string() : "{" + std::string(labels) + "}";
  text_.append(name).append("_sum").append(braced).append(" ");
  text_.append(seconds(static_cast<double>(histogram.sum_ns()) / 1e9)).append("\n");
  text_.append(name).append("_count").append(braced).append(" ").append(std::to_string(histogram.count())).append("\n");
}

void Exposition::header(std::string_view type, std::string_view name, std::string_view help) {
  if (name == last_name_) return;
  text_.append("# HELP ").append(name).append(" ").append(help).append("\n");
  text_.append("# TYPE ").append(name).append(" ").append(type).append("\n");
  last_name_ = name;
}

void Exposition::sample(std::string_view type, std::string_view name, std::string_view help, std::uint64_t value,
                        std::string_view labels) {
  header(type, name, help);
  text_.append(name);
  if (!labels.empty()) text_.append("{").append(labels).append("}");
  text_.append(" ").append(std::to_string(value)).append("\n");
}

}  // namespace debra::metrics
