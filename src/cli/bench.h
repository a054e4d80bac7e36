// SPDX-License-Identifier: MIT
//
// `debra bench`: the load tool. Not a layer over libdebra's Client (one thread per connection would
// make the client the bottleneck on a small machine) but over the same pieces: quic::ClientEndpoint
// and client::ProtocolSession, with many connections on each of a few event-loop threads.
#pragma once

#include <debra/client.h>

#include <cstdint>
#include <string>

namespace debra::cli {

// BenchFlags: `debra bench`, the throughput and latency run (same shape as debra-nats-load).
struct BenchFlags {
  ClientOptions client;           // server, TLS, protocol; id and token are per connection
  std::string token_secret_file;  // mint each connection a token for its id (routers with --auth token)
  std::uint64_t pairs = 1;        // sender/receiver pairs, 2P connections
  std::uint64_t size = 64;        // payload bytes, at least the 16-byte header
  double duration_s = 5;          // measured seconds
  double warmup_s = 1;            // seconds of load before the measured window
  std::uint64_t window = 64;      // un-received messages in flight per pair, at most
  double rate = 0;                // messages per second in total, paced; 0: as fast as the window allows
  unsigned threads = 2;           // client event-loop threads
  bool json = false;
  bool verbose = false;
};

// ConnectionsFlags: `debra bench connections`, idle registered connections.
struct ConnectionsFlags {
  ClientOptions client;
  std::string token_secret_file;
  std::uint64_t count = 1000;       // connections to open and register
  std::uint64_t concurrency = 32;   // handshakes in progress at once, at most (router Retry above 64)
  int server_pid = 0;               // read this process's VmRSS before and after (0: skip)
  double hold_s = 1;                // seconds to hold the idle connections before measuring RSS
  unsigned threads = 2;
  bool json = false;
  bool verbose = false;
};

// Both return the process exit code: 0 when the run completed (the report says how it went), 1 when
// it failed (a connection could not be made or was lost), 2 for bad flags.
int run_bench(const BenchFlags& flags);
int run_bench_connections(const ConnectionsFlags& flags);

}  // namespace debra::cli
