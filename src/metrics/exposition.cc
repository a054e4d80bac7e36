// SPDX-License-Identifier: MIT
#include "metrics/exposition.h"

namespace debra::metrics {

void Exposition::counter(std::string_view name, std::string_view help, std::uint64_t value, std::string_view labels) {
  sample("counter", name, help, value, labels);
}

void Exposition::gauge(std::string_view name, std::string_view help, std::uint64_t value, std::string_view labels) {
  sample("gauge", name, help, value, labels);
}

void Exposition::sample(std::string_view type, std::string_view name, std::string_view help, std::uint64_t value,
                        std::string_view labels) {
  if (name != last_name_) {
    text_.append("# HELP ").append(name).append(" ").append(help).append("\n");
    text_.append("# TYPE ").append(name).append(" ").append(type).append("\n");
    last_name_ = name;
  }
  text_.append(name);
  if (!labels.empty()) text_.append("{").append(labels).append("}");
  text_.append(" ").append(std::to_string(value)).append("\n");
}

}  // namespace debra::metrics
