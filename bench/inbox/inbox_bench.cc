// SPDX-License-Identifier: MIT
//
// debra-inbox-bench: what durable store-and-forward costs (#3). Against a running router it measures
//   enqueue: a sender pipelines N messages (window W) to an offline recipient; msgs/s until the last
//            is acknowledged as stored;
//   drain:   the recipient connects and takes (and acknowledges) all N; msgs/s until the last arrives;
//            with --recipients R the N go round-robin to R offline recipients, whose backlogs then lie
//            interleaved in the store, and all R connect at once to take theirs;
//   latency: with the recipient online, one message at a time: send -> Reply (what the sender waits
//            for) and send -> delivery, p50/p99 in microseconds.
// Prints one JSON line. Run it against routers with each --sync mode and with --store none (plain
// forwarding) to compare; bench/inbox/run.sh does exactly that.
//
// With --trickle R it does none of that: it sends R messages a second to the offline recipient for
// --seconds, as a user's inbox fills while they are away, and leaves them there. Beside other
// traffic that makes the message log compact the segments they are spread over
// (bench/inbox/compaction.sh).
#include <CLI/CLI.hpp>
#include <debra/client.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <deque>
#include <string>
#include <thread>
#include <vector>

namespace {

using Clock = std::chrono::steady_clock;

double percentile(std::vector<double> samples, double p) {
  if (samples.empty()) return 0;
  std::sort(samples.begin(), samples.end());
  auto index = static_cast<std::size_t>(p * static_cast<double>(samples.size() - 1));
  return samples[index];
}

std::unique_ptr<debra::Client> connect(const std::string& server, const std::string& ca, std::int32_t id) {
  debra::ClientOptions options;
  options.server = server;
  options.id = id;
  options.ca_file = ca;
  options.insecure = ca.empty();
  auto client = debra::Client::connect(options);
  if (!client) {
    std::fprintf(stderr, "debra-inbox-bench: connect %d: %s\n", id, client.error().message.c_str());
    std::exit(1);
  }
  return std::move(*client);
}

// Paced by the clock: by any moment, rate × elapsed messages have been sent. Each reply is waited for
// once a window's worth is out, so the router's pace is felt but does not set the rate.
int trickle(debra::Client& sender, std::int32_t recipient, const std::vector<std::uint8_t>& payload, double rate,
            double seconds, std::size_t window, const std::string& label) {
  std::deque<std::future<debra::SendResult>> in_flight;
  std::size_t sent = 0;
  std::size_t accepted = 0;
  std::string first_refusal;
  auto settle_one = [&] {
    auto result = in_flight.front().get();
    in_flight.pop_front();
    if (result.ok()) {
      ++accepted;
    } else if (first_refusal.empty()) {
      first_refusal = result.reason.empty() ? std::string(debra::to_string(result.status)) : result.reason;
    }
  };
  const auto start = Clock::now();
  for (;;) {
    const double elapsed = std::chrono::duration<double>(Clock::now() - start).count();
    if (elapsed >= seconds) break;
    while (static_cast<double>(sent) < elapsed * rate) {
      if (in_flight.size() >= window) settle_one();
      in_flight.push_back(sender.send(recipient, payload));
      ++sent;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  while (!in_flight.empty()) settle_one();
  if (!first_refusal.empty()) std::fprintf(stderr, "debra-inbox-bench: first refusal: %s\n", first_refusal.c_str());
  std::printf("{\"label\":\"%s\",\"size\":%zu,\"trickle_msgs_per_s\":%.0f,\"seconds\":%.1f,\"sent\":%zu,"
              "\"accepted\":%zu}\n",
              label.c_str(), payload.size(), rate, seconds, sent, accepted);
  return accepted == sent ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"debra-inbox-bench: enqueue/drain rates and durable-acknowledgement latency"};
  std::string server = "127.0.0.1:4433";
  std::string ca;
  std::size_t count = 20000;
  std::size_t size = 64;
  std::size_t window = 256;
  std::size_t latency_samples = 2000;
  std::int32_t base_id = 1000;
  std::string label = "";
  double trickle_rate = 0;
  double trickle_seconds = 10;
  app.add_option("--server", server)->capture_default_str();
  app.add_option("--ca", ca, "CA file; empty: --insecure");
  app.add_option("--count", count, "Messages for enqueue/drain")->capture_default_str();
  app.add_option("--size", size, "Payload bytes")->capture_default_str();
  app.add_option("--window", window, "Messages in flight while enqueueing")->capture_default_str();
  app.add_option("--latency-samples", latency_samples, "One-at-a-time messages for the latency figures")
      ->capture_default_str();
  app.add_option("--base-id", base_id, "Ids base_id and base_id+1 are used")->capture_default_str();
  std::size_t recipients = 1;
  app.add_option("--recipients", recipients,
                 "Offline recipients the messages go to round-robin, ids base_id+1 on; all take theirs at once")
      ->check(CLI::Range(1, 1000))
      ->capture_default_str();
  app.add_option("--label", label, "Copied into the JSON line");
  app.add_option("--trickle", trickle_rate,
                 "Instead: send this many messages a second to the offline recipient for --seconds, and leave them")
      ->check(CLI::NonNegativeNumber);
  app.add_option("--seconds", trickle_seconds, "How long --trickle sends")->check(CLI::PositiveNumber)->capture_default_str();
  CLI11_PARSE(app, argc, argv);

  std::vector<std::uint8_t> payload(size, 0x5a);
  const std::int32_t sender_id = base_id;
  const std::int32_t recipient_id = base_id + 1;
  auto sender = connect(server, ca, sender_id);
  if (trickle_rate > 0) return trickle(*sender, recipient_id, payload, trickle_rate, trickle_seconds, window, label);

  // Enqueue to an offline recipient (a router without a store answers RecipientOffline: skipped).
  double enqueue_rate = 0;
  double drain_rate = 0;
  std::size_t drained = 0;
  {
    std::deque<std::future<debra::SendResult>> in_flight;
    std::size_t accepted = 0;
    std::string first_refusal;
    auto start = Clock::now();
    for (std::size_t i = 0; i < count || !in_flight.empty();) {
      if (i < count && in_flight.size() < window) {
        in_flight.push_back(sender->send(recipient_id + static_cast<std::int32_t>(i % recipients), payload));
        ++i;
        continue;
      }
      auto result = in_flight.front().get();
      in_flight.pop_front();
      if (result.ok()) {
        ++accepted;
      } else if (first_refusal.empty()) {
        first_refusal = result.reason.empty() ? "status " + std::to_string(static_cast<int>(result.status)) : result.reason;
      }
    }
    double seconds = std::chrono::duration<double>(Clock::now() - start).count();
    if (accepted != count) {
      // A router without a store answers RecipientOffline; one with a store may refuse past the
      // inbox quota (--inbox-max-messages). Either way the rates would mean nothing.
      std::fprintf(stderr, "debra-inbox-bench: %zu of %zu messages accepted (first refusal: %s); enqueue and drain "
                   "rates not measured\n", accepted, count, first_refusal.c_str());
    } else {
      enqueue_rate = static_cast<double>(count) / seconds;
      auto recipient_start = Clock::now();
      std::vector<std::size_t> received(recipients, 0);
      std::vector<std::thread> takers;
      for (std::size_t r = 0; r < recipients; ++r) {
        takers.emplace_back([&, r] {
          const std::size_t share = count / recipients + (r < count % recipients ? 1 : 0);
          auto recipient = connect(server, ca, recipient_id + static_cast<std::int32_t>(r));
          while (received[r] < share && recipient->receive(std::chrono::seconds(10))) ++received[r];
          recipient->close();
        });
      }
      for (std::thread& taker : takers) taker.join();
      for (std::size_t n : received) drained += n;
      drain_rate = static_cast<double>(drained) / std::chrono::duration<double>(Clock::now() - recipient_start).count();
      if (drained != count) {
        std::fprintf(stderr, "debra-inbox-bench: %zu of %zu stored messages arrived within 10 s of the one before\n",
                     drained, count);
      }
    }
  }

  // Latency, recipient online: send -> Reply, and send -> delivery.
  std::vector<double> reply_us;
  std::vector<double> delivery_us;
  {
    auto recipient = connect(server, ca, recipient_id);
    // Whatever an earlier run left behind is taken first.
    while (recipient->receive(std::chrono::milliseconds(200))) {
    }
    for (std::size_t i = 0; i < latency_samples; ++i) {
      auto start = Clock::now();
      auto result = sender->send(recipient_id, payload).get();
      auto replied = Clock::now();
      auto message = recipient->receive(std::chrono::seconds(5));
      auto delivered = Clock::now();
      if (!result.ok() || !message) {
        std::fprintf(stderr, "debra-inbox-bench: latency sample %zu failed: %s\n", i, result.reason.c_str());
        return 1;
      }
      reply_us.push_back(std::chrono::duration<double, std::micro>(replied - start).count());
      delivery_us.push_back(std::chrono::duration<double, std::micro>(delivered - start).count());
    }
    recipient->close();
  }
  sender->close();
  std::printf(
      "{\"label\":\"%s\",\"size\":%zu,\"count\":%zu,\"recipients\":%zu,\"window\":%zu,\"drained\":%zu,"
      "\"enqueue_msgs_per_s\":%.0f,\"drain_msgs_per_s\":%.0f,\"reply_p50_us\":%.1f,\"reply_p99_us\":%.1f,"
      "\"delivery_p50_us\":%.1f,\"delivery_p99_us\":%.1f}\n",
      label.c_str(), size, count, recipients, window, drained, enqueue_rate, drain_rate, percentile(reply_us, 0.5),
      percentile(reply_us, 0.99), percentile(delivery_us, 0.5), percentile(delivery_us, 0.99));
  // Stored but not delivered is a lost message; a router without a store (nothing drained) is not.
  return enqueue_rate > 0 && drained != count ? 1 : 0;
}
