// SPDX-License-Identifier: MIT
#pragma once

#include <memory>
#include <vector>

#include "net/event_loop.h"
#include "net/udp_socket.h"
#include "quic/connection.h"
#include "quic/tls.h"

namespace debra::quic {

// ClientEndpoint: one client connection on its own connected UDP socket. Loop thread only. The
// handler is borrowed and must outlive the endpoint or see on_closed first.
class ClientEndpoint final : public Transport {
 public:
  // Starts the handshake with server at once; the handler hears on_handshake_completed or on_closed.
  static Result<std::unique_ptr<ClientEndpoint>, Error> connect(net::EventLoop& loop, const net::Address& server,
                                                                const TlsClientContext& tls,
                                                                const TransportSettings& settings,
                                                                ConnectionHandler& handler);
  ~ClientEndpoint() override;

  // The connection, or nullptr once it has died.
  Connection* connection() { return connection_.get(); }

  // Transport
  net::EventLoop& loop() override { return loop_; }
  std::span<std::uint8_t> tx_buffer() override;
  void send_packets(const net::Address& local, const net::Address& remote, std::span<const std::uint8_t> data,
                    std::size_t segment_size) override;
  void schedule_flush(Connection& connection) override;
  void on_connection_id_issued(Connection&, const ngtcp2_cid&) override {}
  void on_connection_id_retired(const ngtcp2_cid&) override {}
  void stateless_reset_token(std::uint8_t* token, const ngtcp2_cid& cid) override;
  void on_connection_dead(Connection& connection) override;

 private:
  ClientEndpoint(net::EventLoop& loop, net::UdpSocket socket);
  void flush_pending();

  net::EventLoop& loop_;
  net::UdpSocket socket_;
  std::unique_ptr<Connection> connection_;
  std::unique_ptr<Connection> dead_;
  bool flush_pending_ = false;
  std::uint64_t before_sleep_hook_ = 0;
};

}  // namespace debra::quic
