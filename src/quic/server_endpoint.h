// SPDX-License-Identifier: MIT
#pragma once

#include <array>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include "net/event_loop.h"
#include "net/udp_socket.h"
#include "quic/admission.h"
#include "quic/connection.h"
#include "quic/tls.h"

namespace debra::quic {

// ServerConfig: how the server endpoint listens and admits connections.
struct ServerConfig {
  // listen: the UDP address to bind (port 0 picks a free one).
  net::Address listen;
  // static_secret: keys Retry tokens and stateless reset tokens. Persist it (the server keeps it in
  // its data dir) so that resets still work for connections that survived a restart of ours.
  std::array<std::uint8_t, 32> static_secret{};
  // retry_threshold: when this many handshakes are in progress, new clients must first prove their
  // address with a Retry token (RFC 9000 §8.1). 0 demands it of every client.
  std::size_t retry_threshold = 64;
  // max_connections: connections beyond this are refused with CONNECTION_REFUSED.
  std::size_t max_connections = 100'000;
  // max_connections_per_address: connections from one IP address (any port) beyond this are refused
  // with CONNECTION_REFUSED, so one host cannot take every slot.
  std::size_t max_connections_per_address = 128;
  // transport: the settings of every accepted connection.
  TransportSettings transport;
  // thread / threads: this endpoint's place among the endpoints that share the listening address,
  // one per server thread (SO_REUSEPORT when threads > 1). The connection IDs an endpoint issues
  // carry its thread in their first byte, so a packet the kernel hands to another thread's socket
  // (the client's address changed) is passed on to the owner (ServerEndpoint::set_siblings).
  std::uint8_t thread = 0;
  std::uint8_t threads = 1;
  // admission: the connection limits, shared by all the endpoints on the address; null: the
  // endpoint makes its own from max_connections and max_connections_per_address.
  std::shared_ptr<Admission> admission;
};

// EndpointStats: counters of the server endpoint.
struct EndpointStats {
  std::uint64_t accepted = 0;
  std::uint64_t refused = 0;
  std::uint64_t refused_per_address = 0;  // included in refused
  std::uint64_t retries_sent = 0;
  std::uint64_t invalid_tokens = 0;
  // Half-made connections of clients that retransmitted their first Initial before our Retry reached
  // them, closed when the client came back with the Retry token.
  std::uint64_t abandoned_before_retry = 0;
  // Connections that freed their TLS session once their handshake was done (Connection).
  std::uint64_t tls_sessions_released = 0;
  std::uint64_t stateless_resets_sent = 0;
  std::uint64_t version_negotiations_sent = 0;
  std::uint64_t received_datagrams = 0;
  std::uint64_t dropped_datagrams = 0;  // included in received_datagrams
  // Datagrams for a connection of another thread's endpoint, passed on to it.
  std::uint64_t forwarded_datagrams = 0;
  // From the socket: datagrams sent, the system calls that sent them (one carries a run of
  // datagrams with UDP GSO), and datagrams the kernel would not take (QUIC's loss recovery resends).
  std::uint64_t sent_datagrams = 0;
  std::uint64_t send_calls = 0;
  std::uint64_t send_dropped = 0;

  EndpointStats& operator+=(const EndpointStats& other);
};

// ServerEndpoint: one UDP socket and every connection on it. Routes datagrams to connections by
// connection ID, answers what no connection owns (Version Negotiation, Retry, stateless reset),
// and flushes connections with pending output before the loop sleeps. Loop thread only.
class ServerEndpoint final : public Transport {
 public:
  // Called for every new connection; returns the handler that will own its application side, or
  // nullptr to refuse the connection.
  using Acceptor = std::function<ConnectionHandler*(Connection&)>;

  static Result<std::unique_ptr<ServerEndpoint>, Error> create(net::EventLoop& loop, ServerConfig config,
                                                               const TlsServerContext& tls, Acceptor acceptor);
  ~ServerEndpoint() override;

  const net::Address& local_address() const { return socket_.local_address(); }
  // This endpoint's connections, in any state.
  std::size_t connection_count() const { return connections_.size(); }
  // Connections not yet closing or draining.
  std::size_t open_connection_count() const;
  const Admission& admission() const { return *admission_; }
  EndpointStats stats() const;

  // The endpoints of the other threads on the same address, by thread (this one's own slot is
  // ignored): where packets for their connections go. Set before the loops run.
  void set_siblings(std::vector<ServerEndpoint*> siblings) { siblings_ = std::move(siblings); }

  // Closes every connection with app_error_code after its queued data is flushed (bounded by the
  // transport's close_drain_timeout) and stops accepting new ones.
  void close_all(std::uint64_t app_error_code, const std::string& reason);

  // Transport
  net::EventLoop& loop() override { return loop_; }
  std::span<std::uint8_t> tx_buffer() override { return tx_buffer_; }
  void send_packets(const net::Address& local, const net::Address& remote, std::span<const std::uint8_t> data,
                    std::size_t segment_size) override;
  void schedule_flush(Connection& connection) override;
  void on_connection_id_issued(Connection& connection, const ngtcp2_cid& cid) override;
  void on_connection_id_retired(const ngtcp2_cid& cid) override;
  void stateless_reset_token(std::uint8_t* token, const ngtcp2_cid& cid) override;
  void new_connection_id(std::uint8_t* data, std::size_t length) override;
  void on_connection_dead(Connection& connection) override;
  void on_handshake_completed(Connection& connection) override;
  void on_tls_session_released(Connection&) override { ++stats_.tls_sessions_released; }

 private:
  // CidKey: a connection ID as a hashable value without allocation.
  struct CidKey {
    std::uint8_t length = 0;
    std::array<std::uint8_t, NGTCP2_MAX_CIDLEN> bytes{};
    bool operator==(const CidKey& other) const {
      return length == other.length && std::equal(bytes.begin(), bytes.begin() + length, other.bytes.begin());
    }
  };
  struct CidHash {
    std::size_t operator()(const CidKey& key) const;
  };
  static CidKey key_of(const std::uint8_t* data, std::size_t length);
  static CidKey key_of(const ngtcp2_cid& cid) { return key_of(cid.data, cid.datalen); }

  ServerEndpoint(net::EventLoop& loop, ServerConfig config, const TlsServerContext& tls, Acceptor acceptor,
                 net::UdpSocket socket);
  // forwarded: a sibling's socket received it; it is never passed on again.
  void on_datagram(const net::Datagram& datagram, bool forwarded = false);
  // Passes a copy of datagram to the endpoint of thread (on that thread).
  void forward(std::size_t thread, const net::Datagram& datagram);
  void accept(const net::Datagram& datagram, const ngtcp2_pkt_hd& header, const ngtcp2_cid* original_dcid,
              bool validated);
  // Answers a new connection with CONNECTION_REFUSED and counts why.
  void refuse(const net::Datagram& datagram, const ngtcp2_pkt_hd& header, Admission::Verdict why);
  void send_retry(const net::Datagram& datagram, const ngtcp2_pkt_hd& header);
  void send_stateless_reset(const net::Datagram& datagram, const ngtcp2_version_cid& vc);
  void send_version_negotiation(const net::Datagram& datagram, const ngtcp2_version_cid& vc);
  void send_close(const net::Datagram& datagram, const ngtcp2_pkt_hd& header, std::uint64_t error_code);
  void flush_pending();

  net::EventLoop& loop_;
  ServerConfig config_;
  const TlsServerContext& tls_;
  Acceptor acceptor_;
  net::UdpSocket socket_;
  std::vector<std::uint8_t> tx_buffer_;
  std::unordered_map<CidKey, Connection*, CidHash> by_cid_;
  std::unordered_map<Connection*, std::unique_ptr<Connection>> connections_;
  std::unordered_map<Connection*, std::vector<CidKey>> cids_of_;
  std::shared_ptr<Admission> admission_;
  std::vector<ServerEndpoint*> siblings_;
  std::vector<Connection*> pending_flush_;
  std::vector<std::unique_ptr<Connection>> dead_;
  bool accepting_ = true;
  EndpointStats stats_;
  // A token bucket for stateless resets, so spoofed short packets cannot make us a reflector.
  double reset_tokens_ = 100;
  Timestamp reset_tokens_at_ = 0;
};

}  // namespace debra::quic
