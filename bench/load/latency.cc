// SPDX-License-Identifier: MIT
#include "load/latency.h"

#include <algorithm>
#include <bit>
#include <cassert>
#include <chrono>
#include <cmath>
#include <cstring>

namespace debra::bench {

namespace {

void store_le64(std::uint8_t* out, std::uint64_t v) {
  for (int i = 0; i < 8; ++i) out[i] = static_cast<std::uint8_t>(v >> (8 * i));
}

std::uint64_t load_le64(const std::uint8_t* in) {
  std::uint64_t v = 0;
  for (int i = 0; i < 8; ++i) v |= static_cast<std::uint64_t>(in[i]) << (8 * i);
  return v;
}

void append_json_string(std::string& out, const std::string& s) {
  out += '"';
  for (const char c : s) {
    if (c == '"' || c == '\\') {
      out += '\\';
      out += c;
    } else if (static_cast<unsigned char>(c) < 0x20) {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\u%04x", static_cast<unsigned>(static_cast<unsigned char>(c)));
      out += buf;
    } else {
      out += c;
    }
  }
  out += '"';
}

// A finite number for JSON (which has no inf/nan), with the given decimals.
std::string json_number(double v, int decimals) {
  if (!std::isfinite(v)) v = 0;
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.*f", decimals, v);
  return buf;
}

}  // namespace

std::uint64_t now_ns() {
  return static_cast<std::uint64_t>(
      std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now().time_since_epoch())
          .count());
}

void write_header(std::span<std::uint8_t> payload, const PayloadHeader& header) {
  assert(payload.size() >= kHeaderSize);
  store_le64(payload.data(), header.send_ns);
  store_le64(payload.data() + 8, header.seq);
}

void fill_payload(std::span<std::uint8_t> payload) {
  for (std::size_t i = kHeaderSize; i < payload.size(); ++i) {
    payload[i] = static_cast<std::uint8_t>('a' + (i % 26));
  }
}

std::optional<PayloadHeader> read_header(std::span<const std::uint8_t> payload) {
  if (payload.size() < kHeaderSize) return std::nullopt;
  return PayloadHeader{load_le64(payload.data()), load_le64(payload.data() + 8)};
}

std::optional<PayloadHeader> read_header(const void* data, std::size_t size) {
  return read_header(std::span<const std::uint8_t>(static_cast<const std::uint8_t*>(data), size));
}

// ---- LatencyHistogram ----

LatencyHistogram::LatencyHistogram() : counts_(bucket_count(), 0) {}

std::size_t LatencyHistogram::bucket_count() {
  return kSubBuckets + (kMaxExponent - kSubBucketBits) * kSubBuckets;
}

std::size_t LatencyHistogram::bucket_index(std::uint64_t v) {
  if (v < kSubBuckets) return static_cast<std::size_t>(v);
  constexpr std::uint64_t kLimit = (std::uint64_t{1} << kMaxExponent) - 1;
  if (v > kLimit) v = kLimit;
  const unsigned exponent = static_cast<unsigned>(std::bit_width(v)) - 1;  // kSubBucketBits..kMaxExponent-1
  const unsigned shift = exponent - kSubBucketBits;
  const std::uint64_t sub = (v >> shift) - kSubBuckets;  // 0..kSubBuckets-1
  return static_cast<std::size_t>(kSubBuckets + shift * kSubBuckets + sub);
}

std::uint64_t LatencyHistogram::bucket_low(std::size_t index) {
  if (index < kSubBuckets) return index;
  const std::size_t k = index - kSubBuckets;
  const unsigned shift = static_cast<unsigned>(k / kSubBuckets);
  const std::uint64_t sub = k % kSubBuckets;
  return (kSubBuckets + sub) << shift;
}

std::uint64_t LatencyHistogram::bucket_width(std::size_t index) {
  if (index < kSubBuckets) return 1;
  return std::uint64_t{1} << ((index - kSubBuckets) / kSubBuckets);
}

void LatencyHistogram::record(std::uint64_t value_ns) {
  ++counts_[bucket_index(value_ns)];
  ++count_;
  min_ = std::min(min_, value_ns);
  max_ = std::max(max_, value_ns);
}

void LatencyHistogram::merge(const LatencyHistogram& other) {
  for (std::size_t i = 0; i < counts_.size(); ++i) counts_[i] += other.counts_[i];
  count_ += other.count_;
  min_ = std::min(min_, other.min_);
  max_ = std::max(max_, other.max_);
}

void LatencyHistogram::reset() {
  std::fill(counts_.begin(), counts_.end(), 0);
  count_ = 0;
  min_ = ~std::uint64_t{0};
  max_ = 0;
}

std::uint64_t LatencyHistogram::percentile(double q) const {
  if (count_ == 0) return 0;
  q = std::clamp(q, 0.0, 1.0);
  auto rank = static_cast<std::uint64_t>(std::ceil(q * static_cast<double>(count_)));
  rank = std::clamp<std::uint64_t>(rank, 1, count_);
  std::uint64_t cumulative = 0;
  for (std::size_t i = 0; i < counts_.size(); ++i) {
    cumulative += counts_[i];
    if (cumulative >= rank) {
      const std::uint64_t mid = bucket_low(i) + bucket_width(i) / 2;
      return std::clamp(mid, min(), max_);
    }
  }
  return max_;
}

// ---- ReceiveTracker ----

void ReceiveTracker::on_message(const PayloadHeader& header, std::uint64_t recv_ns, const MeasureWindow& window) {
  ++received_;
  if (header.seq == expected_) {
    ++expected_;
  } else if (header.seq > expected_) {
    gaps_ += header.seq - expected_;
    expected_ = header.seq + 1;
  } else {
    ++reordered_;
    if (gaps_ > 0) --gaps_;
  }
  if (window.contains(header.send_ns)) {
    ++measured_received_;
    histogram_->record(recv_ns > header.send_ns ? recv_ns - header.send_ns : 0);
  }
}

// ---- Report ----

double Report::msgs_per_s() const {
  return duration_s > 0 ? static_cast<double>(received) / duration_s : 0.0;
}

std::uint64_t Report::add_pair(std::uint64_t sent_measured, std::uint64_t sent_total, const ReceiveTracker& tracker,
                               std::uint64_t pair_refused) {
  sent += sent_measured;
  received += tracker.measured_received();
  // A refused message never arrives, so the tracker counts it missing; the sender was told, so it is
  // not lost.
  const std::uint64_t missing = tracker.lost(sent_total);
  lost += missing - std::min(missing, pair_refused);
  reordered += tracker.reordered();
  refused += pair_refused;
  const std::uint64_t accounted = tracker.received() + pair_refused;
  return sent_total - std::min(sent_total, accounted);
}

double Report::mib_per_s() const { return msgs_per_s() * static_cast<double>(size) / (1024.0 * 1024.0); }

void Report::set_latency(const LatencyHistogram& histogram) {
  p50_us = static_cast<double>(histogram.percentile(0.50)) / 1e3;
  p99_us = static_cast<double>(histogram.percentile(0.99)) / 1e3;
  p999_us = static_cast<double>(histogram.percentile(0.999)) / 1e3;
}

std::string format_text(const Report& r) {
  char buf[512];
  std::string out;
  std::snprintf(buf, sizeof buf, "%s (%s): %llu pairs, %llu B payload, window %llu, %.3f s measured\n",
                r.tool.c_str(), r.mode.c_str(), static_cast<unsigned long long>(r.pairs),
                static_cast<unsigned long long>(r.size), static_cast<unsigned long long>(r.window), r.duration_s);
  out += buf;
  std::snprintf(buf, sizeof buf, "  throughput  %.0f msgs/s, %.2f MiB/s\n", r.msgs_per_s(), r.mib_per_s());
  out += buf;
  std::snprintf(buf, sizeof buf, "  latency     p50 %.1f us, p99 %.1f us, p99.9 %.1f us\n", r.p50_us, r.p99_us,
                r.p999_us);
  out += buf;
  std::snprintf(buf, sizeof buf, "  messages    sent %llu, received %llu, lost %llu, reordered %llu, refused %llu\n",
                static_cast<unsigned long long>(r.sent), static_cast<unsigned long long>(r.received),
                static_cast<unsigned long long>(r.lost), static_cast<unsigned long long>(r.reordered),
                static_cast<unsigned long long>(r.refused));
  out += buf;
  return out;
}

std::string format_json(const Report& r) {
  std::string out = "{\"tool\":";
  append_json_string(out, r.tool);
  out += ",\"mode\":";
  append_json_string(out, r.mode);
  out += ",\"pairs\":" + std::to_string(r.pairs);
  out += ",\"size\":" + std::to_string(r.size);
  out += ",\"window\":" + std::to_string(r.window);
  out += ",\"duration_s\":" + json_number(r.duration_s, 3);
  out += ",\"sent\":" + std::to_string(r.sent);
  out += ",\"received\":" + std::to_string(r.received);
  out += ",\"msgs_per_s\":" + json_number(r.msgs_per_s(), 1);
  out += ",\"mib_per_s\":" + json_number(r.mib_per_s(), 3);
  out += ",\"p50_us\":" + json_number(r.p50_us, 1);
  out += ",\"p99_us\":" + json_number(r.p99_us, 1);
  out += ",\"p999_us\":" + json_number(r.p999_us, 1);
  out += ",\"lost\":" + std::to_string(r.lost);
  out += ",\"reordered\":" + std::to_string(r.reordered);
  out += ",\"refused\":" + std::to_string(r.refused);
  out += '}';
  return out;
}

void print_report(const Report& report, bool json) {
  const std::string text = format_text(report);
  if (json) {
    std::fputs(text.c_str(), stderr);
    std::printf("%s\n", format_json(report).c_str());
  } else {
    std::fputs(text.c_str(), stdout);
  }
  std::fflush(stdout);
}

}  // namespace debra::bench
