// SPDX-License-Identifier: MIT
//
// What every load tool shares (`debra bench`, debra-nats-load): the payload header, the per-receiver
// tracker, the latency histogram and the report printer. C++20 standard library only, so any tool
// can link it whatever client library it drives.
//
// Payload layout (S bytes, S >= 16; a requested size below 16 is rounded up to 16):
//
//   offset 0   8 bytes  send timestamp: nanoseconds of std::chrono::steady_clock (CLOCK_MONOTONIC
//                       on Linux, so comparable across processes of one machine), little-endian
//   offset 8   8 bytes  sequence number of the sender -> receiver pair, from 0, little-endian
//   offset 16  S-16     filler (a fixed pattern, never read)
//
// Measurement: a run has a warm-up, then a measured window [begin_ns, end_ns). A message belongs to
// the window when its *send* timestamp does, whenever it is received, so the latency tail of the
// last messages is not cut off and sent/received compare like with like. `lost` and `reordered` are
// counted over the whole run, warm-up included: any non-zero value is a correctness finding.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <optional>
#include <span>
#include <string>
#include <vector>

namespace debra::bench {

inline constexpr std::size_t kHeaderSize = 16;

// The payload size a tool really sends for a requested size: at least kHeaderSize.
constexpr std::size_t effective_payload_size(std::size_t requested) {
  return requested < kHeaderSize ? kHeaderSize : requested;
}

// Nanoseconds of std::chrono::steady_clock.
std::uint64_t now_ns();

struct PayloadHeader {
  std::uint64_t send_ns = 0;
  std::uint64_t seq = 0;
};

// Writes the header into the first kHeaderSize bytes of payload, which must hold at least that many.
void write_header(std::span<std::uint8_t> payload, const PayloadHeader& header);
// Writes the filler pattern into bytes [kHeaderSize, size): once per buffer, the header is then
// rewritten per message.
void fill_payload(std::span<std::uint8_t> payload);
// Reads the header; nullopt if the payload is shorter than kHeaderSize.
std::optional<PayloadHeader> read_header(std::span<const std::uint8_t> payload);
std::optional<PayloadHeader> read_header(const void* data, std::size_t size);

// MeasureWindow: the measured interval of a run, in now_ns() time. Empty (contains nothing) by default.
struct MeasureWindow {
  std::uint64_t begin_ns = 0;
  std::uint64_t end_ns = 0;

  bool contains(std::uint64_t t_ns) const { return t_ns >= begin_ns && t_ns < end_ns; }
  double seconds() const { return end_ns > begin_ns ? static_cast<double>(end_ns - begin_ns) * 1e-9 : 0.0; }
};

// LatencyHistogram: log-linear buckets over nanoseconds, HDR-style. Values below 128 ns are exact;
// above, each power of two is split into 128 equal buckets, and a percentile is reported as its
// bucket's midpoint, so the error is at most 1/256 (0.4%) of the value. Covers up to 2^40 ns
// (18 minutes; larger values land in the last bucket). About 35 KB; not thread-safe: keep one per
// thread and merge().
class LatencyHistogram {
 public:
  static constexpr unsigned kSubBucketBits = 7;
  static constexpr std::uint64_t kSubBuckets = 1u << kSubBucketBits;  // 128
  static constexpr unsigned kMaxExponent = 40;

  LatencyHistogram();

  void record(std::uint64_t value_ns);
  void merge(const LatencyHistogram& other);
  void reset();

  std::uint64_t count() const { return count_; }
  std::uint64_t min() const { return count_ == 0 ? 0 : min_; }
  std::uint64_t max() const { return max_; }
  // The value at quantile q (0..1): the bucket where the cumulative count first reaches
  // ceil(q * count), reported as its midpoint clamped to [min, max]. 0 when empty.
  std::uint64_t percentile(double q) const;

  static std::size_t bucket_index(std::uint64_t value_ns);
  static std::uint64_t bucket_low(std::size_t index);
  static std::uint64_t bucket_width(std::size_t index);
  static std::size_t bucket_count();

 private:
  std::vector<std::uint64_t> counts_;
  std::uint64_t count_ = 0;
  std::uint64_t min_ = ~std::uint64_t{0};
  std::uint64_t max_ = 0;
};

// ReceiveTracker: one receiver's view of one sender's sequence. Sequence numbers start at 0. A
// message whose seq is below the next expected one is counted as reordered (it fills a gap left
// earlier); one above it leaves a gap. A duplicate cannot be told from a late message and counts as
// reordered too. Latency (receive time minus send timestamp, 0 if negative) of
// messages sent inside the window goes into the histogram given at construction, which may be
// shared by the trackers of one thread. Not thread-safe.
class ReceiveTracker {
 public:
  explicit ReceiveTracker(LatencyHistogram& histogram) : histogram_(&histogram) {}

  void on_message(const PayloadHeader& header, std::uint64_t recv_ns, const MeasureWindow& window);

  std::uint64_t received() const { return received_; }                    // whole run
  std::uint64_t measured_received() const { return measured_received_; }  // sent inside the window
  std::uint64_t reordered() const { return reordered_; }                  // whole run
  std::uint64_t expected_next() const { return expected_; }
  // Gaps not filled yet, plus the tail the sender sent (sequence numbers 0..sent-1) that never came.
  std::uint64_t lost(std::uint64_t sent) const {
    return gaps_ + (sent > expected_ ? sent - expected_ : 0);
  }

 private:
  LatencyHistogram* histogram_;
  std::uint64_t expected_ = 0;
  std::uint64_t received_ = 0;
  std::uint64_t measured_received_ = 0;
  std::uint64_t reordered_ = 0;
  std::uint64_t gaps_ = 0;
};

// Report: one run's result. sent/received count the messages sent inside the window; msgs/s and
// MiB/s (payload bytes, 2^20) are received / duration_s.
struct Report {
  std::string tool;  // "debra", "nats"
  std::string mode;  // e.g. "quic", "tls"
  std::uint64_t pairs = 0;
  std::uint64_t size = 0;  // effective payload size
  std::uint64_t window = 0;
  double duration_s = 0;  // the measured window
  std::uint64_t sent = 0;
  std::uint64_t received = 0;
  std::uint64_t lost = 0;      // accepted (or, without replies, sent) and never received
  std::uint64_t reordered = 0;
  std::uint64_t refused = 0;   // refused by the router with a reason (a rate limit, a quota): not lost
  double p50_us = 0;
  double p99_us = 0;
  double p999_us = 0;

  double msgs_per_s() const;
  double mib_per_s() const;
  void set_latency(const LatencyHistogram& histogram);
  // Adds one pair: its sender sent sequence numbers 0..sent_total-1, sent_measured of them inside the
  // window, and the router refused `refused` of them (whole run); tracker is its receiver's. Returns
  // how many of the messages not refused never arrived.
  std::uint64_t add_pair(std::uint64_t sent_measured, std::uint64_t sent_total, const ReceiveTracker& tracker,
                         std::uint64_t refused = 0);
};

// A few human-readable lines, each ending in '\n'.
std::string format_text(const Report& report);
// One JSON object on one line, no trailing newline, keys in this order:
// {"tool","mode","pairs","size","window","duration_s","sent","received","msgs_per_s","mib_per_s",
//  "p50_us","p99_us","p999_us","lost","reordered","refused"}.
std::string format_json(const Report& report);
// Without json: the text on stdout. With json: the JSON line (and '\n') alone on stdout, the text
// on stderr, so `tool --json > result.json` captures exactly one line.
void print_report(const Report& report, bool json);

}  // namespace debra::bench
