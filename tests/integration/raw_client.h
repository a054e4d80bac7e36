// SPDX-License-Identifier: MIT
//
// RawClient: a QUIC client that speaks debra frames byte by byte, for tests that must send what
// libdebra never would (malformed frames, lying length prefixes, forged sender ids, router-only
// message types). It runs quic::ClientEndpoint on its own net::EventLoop thread and records every
// frame the router sends and how the connection ended.
#pragma once

#include <gtest/gtest.h>

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

#include "net/event_loop.h"
#include "quic/client_endpoint.h"
#include "wire/codec.h"

namespace debra::testing {

using namespace std::chrono_literals;

// RawMessage: an owned copy of a decoded frame from the router.
struct RawMessage {
  wire::MessageType type = wire::MessageType::ClientRegistration;
  std::int32_t client_id = 0;
  std::int32_t for_client = 0;
  std::vector<std::uint8_t> payload;
  std::uint64_t message_id = 0;
  wire::DeliveryStatus status = wire::DeliveryStatus::Accepted;
  wire::ErrorCode error_code = wire::ErrorCode::NoError;
  std::string reason;
  std::uint32_t max_frame_size = 0;
  std::uint64_t sequence = 0;
  std::uint64_t features = 0;
  std::vector<std::uint64_t> message_ids;  // a batched Reply's ids after message_id
  quic::StreamId stream = -1;

  std::string describe() const;
};

struct RawClientOptions {
  std::string server;       // HOST:PORT or [V6]:PORT
  std::string ca_file;      // the router's certificate
  bool native = true;       // offer ALPN debra/1; false: offer none (legacy mode)
  std::string server_name;  // empty: the host part of server
  std::string cert_file;    // client certificate and key to present (--auth mtls); empty: none
  std::string key_file;
  std::uint64_t features = 0;  // the Feature bits the registration announces
  std::size_t max_udp_payload = quic::TransportSettings{}.max_udp_payload;
};

class RawClient final : public quic::ConnectionHandler {
 public:
  // Connects and completes the handshake (bounded by timeout), then opens the client's bidirectional
  // stream. Fails with a reason.
  static Result<std::unique_ptr<RawClient>, Error> connect(RawClientOptions options,
                                                           std::chrono::milliseconds timeout = 10s);
  ~RawClient() override;  // closes (application code 0) if still open, stops the thread

  // Queues bytes on the client's stream.
  void send(std::vector<std::uint8_t> bytes);
  // Ends the client's stream (FIN) once everything sent so far has been acknowledged by the router.
  void finish();

  // Sends a ClientRegistration for id (announcing options.features); native: waits for the Welcome and
  // fails on anything else.
  ::testing::AssertionResult register_id(std::int32_t id, std::chrono::milliseconds timeout = 10s);

  // The next frame from the router (any stream, in arrival order), waiting up to timeout.
  std::optional<RawMessage> next_message(std::chrono::milliseconds timeout);
  // Skips frames until one of type arrives (the skipped ones are appended to *skipped if given).
  std::optional<RawMessage> wait_for(wire::MessageType type, std::chrono::milliseconds timeout,
                                     std::vector<RawMessage>* skipped = nullptr);
  // Waits until the connection is gone; nullopt on timeout.
  std::optional<quic::CloseInfo> wait_closed(std::chrono::milliseconds timeout);
  bool closed() const;

  // How much of the client's stream the router has acknowledged. It can have received only what its
  // flow-control credit allowed, so this shows whether the router holds credit back.
  std::uint64_t acknowledged_bytes() const;

  // The streams the router lets this client open (its transport parameters), and whether the QUIC
  // stack refused to open any stream beyond the session stream because of them.
  struct StreamLimits {
    std::uint64_t bidirectional = 0;
    std::uint64_t unidirectional = 0;
  };
  StreamLimits stream_limits() const;
  bool second_stream_refused() const;

  // Runs call on the loop thread with the QUIC connection and the loop's time, sends what it queued,
  // and returns what it returned: for what libdebra never asks of ngtcp2 (a key update, CRYPTO data
  // after the handshake). nullopt if the connection is gone or the loop did not answer in time.
  std::optional<int> drive_ngtcp2(std::function<int(ngtcp2_conn*, net::Timestamp)> call,
                                  std::chrono::milliseconds timeout = 10s);

  std::string alpn() const;
  // Whether the router made this connection validate its address with a Retry (the server's
  // transport parameters then carry retry_source_connection_id).
  bool retried() const;
  // Frames from the router this client could not parse (router bugs): empty when all was well.
  std::vector<std::string> receive_errors() const;

  // quic::ConnectionHandler, on the loop thread.
  void on_handshake_completed() override;
  void on_stream_data(quic::StreamId id, std::span<const std::uint8_t> data, bool fin) override;
  void on_data_acknowledged() override;
  void on_closed(const quic::CloseInfo& info) override;

 private:
  explicit RawClient(RawClientOptions options);
  void try_finish();  // loop thread, outside ngtcp2 callbacks

  RawClientOptions options_;
  std::optional<quic::TlsClientContext> tls_;
  net::EventLoop loop_;
  std::thread thread_;

  // Loop thread only.
  std::unique_ptr<quic::ClientEndpoint> endpoint_;
  std::unordered_map<quic::StreamId, wire::FrameReader> readers_;
  bool finish_requested_ = false;
  bool finish_sent_ = false;
  std::uint64_t finish_hook_ = 0;

  // Shared, under mutex_.
  mutable std::mutex mutex_;
  std::condition_variable cv_;
  bool handshake_done_ = false;
  quic::StreamId stream_ = -1;
  std::string alpn_;
  bool retried_ = false;
  std::optional<quic::CloseInfo> close_info_;
  std::uint64_t acknowledged_ = 0;
  StreamLimits stream_limits_;
  bool second_stream_refused_ = false;
  std::deque<RawMessage> messages_;
  std::vector<std::string> receive_errors_;
};

}  // namespace debra::testing
