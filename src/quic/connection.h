// SPDX-License-Identifier: MIT
//
// One QUIC connection on ngtcp2, for either role. The endpoints (server_endpoint.h,
// client_endpoint.h) own connections, feed them datagrams and timer expiries, and send the packets
// they produce. The layer above sees only streams of bytes through ConnectionHandler; it knows no
// ngtcp2 types, and this layer knows no debra message types.
#pragma once

#include <gnutls/gnutls.h>
#include <ngtcp2/ngtcp2.h>
#include <ngtcp2/ngtcp2_crypto.h>

#include <atomic>
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <unordered_map>
#include <vector>

#include "net/address.h"
#include "net/event_loop.h"
#include "quic/send_buffer.h"
#include "quic/tls.h"
#include "util/result.h"

namespace debra::quic {

using StreamId = std::int64_t;
using net::Timestamp;

inline constexpr std::uint64_t kMillisecond = 1'000'000;  // in Timestamp units (ns)
inline constexpr std::uint64_t kSecond = 1'000 * kMillisecond;

// CloseInfo: why a connection ended, and who ended it.
struct CloseInfo {
  enum class Initiator {
    Local,             // this side closed (close() or a protocol violation by the peer)
    Peer,              // the peer sent CONNECTION_CLOSE
    IdleTimeout,       // no packets for the idle timeout
    HandshakeTimeout,  // the handshake did not finish in time
    StatelessReset,    // the peer lost its state (e.g. restarted) and said so
  };
  Initiator initiator = Initiator::Local;
  bool application = true;  // error_code is an application code (else a QUIC transport code)
  std::uint64_t error_code = 0;
  std::string reason;

  std::string to_string() const;
};

// ConnectionHandler: the application side of one connection (the server's session bridge, or the
// client library). Called on the loop thread, possibly from inside ngtcp2 callbacks: it may call
// Connection::write/open_*_stream/close, which only queue work.
class ConnectionHandler {
 public:
  virtual ~ConnectionHandler() = default;
  // The TLS handshake finished; alpn() is known.
  virtual void on_handshake_completed() {}
  // Bytes arrived in order on stream id; valid during the call. fin: the peer finished the stream.
  virtual void on_stream_data(StreamId id, std::span<const std::uint8_t> data, bool fin) = 0;
  // The stream is fully closed (both directions done, or reset).
  virtual void on_stream_closed(StreamId /*id*/, std::uint64_t /*app_error_code*/) {}
  // The peer acknowledged stream data; queued_bytes() dropped.
  virtual void on_data_acknowledged() {}
  // The connection stopped carrying data: the peer closed it (draining) or we did (closing). Called at
  // most once, before on_closed, which follows after the closing period.
  virtual void on_closing(const CloseInfo& /*info*/) {}
  // The connection is gone. Called exactly once; the Connection is destroyed right after.
  virtual void on_closed(const CloseInfo& info) = 0;
};

// TransportSettings: what a connection allows its peer and how it times out.
struct TransportSettings {
  // idle_timeout: close after this long without packets (ns). The smaller of both sides' wins.
  std::uint64_t idle_timeout = 30 * kSecond;
  // keep_alive: send a PING after this long without packets (ns); 0 disables.
  std::uint64_t keep_alive = 0;
  // initial_rtt: the RTT assumed before the first sample (ns). ngtcp2's 333 ms default makes pacing
  // hold the first messages back for ~20 ms on a LAN; 10 ms is realistic and still safe.
  std::uint64_t initial_rtt = 10 * kMillisecond;
  // handshake_timeout: give up on a handshake after this long (ns).
  std::uint64_t handshake_timeout = 10 * kSecond;
  // max_udp_payload: the largest UDP payload sent (bytes, 1,200 to 65,507). Path MTU discovery in
  // ngtcp2 0.12 finds at most 1,452 bytes; where the route to the peer carries more than that
  // (loopback, jumbo frames: net::route_mtu), a connection sends up to this much per datagram once
  // its handshake is confirmed, as TCP takes its segment size from the route, and falls back to 1,200
  // bytes if the path turns out to drop them. At or below 1,452 it caps discovery. The default puts
  // four datagrams in one GSO batch.
  std::size_t max_udp_payload = 16'000;
  // stream_window / connection_window: initial receive flow-control credit (bytes). Credit is given
  // back as the application consumes data, so these bound what a peer can have in flight.
  std::uint64_t stream_window = 4 * 1024 * 1024;
  std::uint64_t connection_window = 16 * 1024 * 1024;
  // max_stream_window / max_connection_window: ceilings for ngtcp2's window auto-tuning.
  std::uint64_t max_stream_window = 16 * 1024 * 1024;
  std::uint64_t max_connection_window = 32 * 1024 * 1024;
  // peer_bidi_streams / peer_uni_streams: streams the peer may open at once.
  std::uint64_t peer_bidi_streams = 1;
  std::uint64_t peer_uni_streams = 0;
  // close_drain_timeout: how long close() waits for queued data to be acknowledged before sending
  // CONNECTION_CLOSE anyway (ns).
  std::uint64_t close_drain_timeout = 2 * kSecond;
};

class Transport;

// Connection: one ngtcp2 connection plus its GnuTLS session and per-stream send buffers. Owned by
// an endpoint; used on the loop thread only. A server connection lets go of its TLS session once
// the handshake is done (docs/architecture.md, *Decisions and why*): from then on ngtcp2 needs only
// the packet keys it derived, and a client may send no more TLS messages (RFC 9001 §4.4, §6).
class Connection {
 public:
  enum class State { Open, Draining, Closing, Dead };

  ~Connection();
  Connection(const Connection&) = delete;
  Connection& operator=(const Connection&) = delete;

  void set_handler(ConnectionHandler* handler) { handler_ = handler; }

  // The negotiated ALPN, empty when the client offered none.
  const std::string& alpn() const { return alpn_; }
  bool handshake_completed() const { return handshake_completed_; }
  // Server side, once the handshake completed: the client's certificate, if it presented one, and
  // whether it verified (TlsServerContext with client CAs).
  const PeerCertificate& peer_certificate() const { return peer_certificate_; }
  const net::Address& remote_address() const { return remote_; }
  State state() const { return state_; }

  // Opens a locally initiated stream. Fails when the peer's stream limit is reached.
  Result<StreamId, Error> open_bidi_stream();
  Result<StreamId, Error> open_uni_stream();

  // Queues a copy of bytes on a stream, kept until the peer acknowledges it. Returns the stream offset
  // just past them (compare with acknowledged_offset), or 0 if the stream is gone.
  std::uint64_t write(StreamId id, std::span<const std::uint8_t> bytes);
  // How much of the stream the peer has acknowledged, as a stream offset.
  std::uint64_t acknowledged_offset(StreamId id) const;
  // Bytes written on all streams and not yet acknowledged by the peer. The one member that may be
  // read on any thread (a router thread weighing a delivery to this connection); a moment stale there.
  std::uint64_t queued_bytes() const { return queued_bytes_.load(std::memory_order_relaxed); }

  // Receive flow control. Bytes handed to ConnectionHandler::on_stream_data count as consumed when
  // that call returns, and their credit goes back to the peer then. A handler that cannot take them
  // yet (a rate-limited sender's, say) calls hold_credit during the call for as many of them as it
  // keeps unconsumed, and release_credit once it has consumed them. Meanwhile the peer can send only
  // what is left of its window: that is how backpressure reaches it.
  void hold_credit(std::uint64_t bytes) { credit_held_in_call_ += bytes; }
  void release_credit(StreamId id, std::uint64_t bytes);

  // Closes the connection with an application error code once queued data has been acknowledged
  // (at most close_drain_timeout later), so a final error message reaches the peer. Idempotent: the
  // first code wins.
  void close(std::uint64_t app_error_code, std::string reason);
  // Closes at once, dropping queued data.
  void close_now(std::uint64_t app_error_code, std::string reason);
  // Ends the connection at once without a word to the peer, who has given up on it (a half-made
  // connection its client restarted after a Retry). The handler hears on_closing and on_closed.
  void abandon(std::string reason);

  // Endpoint interface.
  void on_datagram(const ngtcp2_path& path, std::span<const std::uint8_t> data, Timestamp now);
  void flush(Timestamp now);
  ngtcp2_conn* native() const { return conn_; }

 private:
  friend class ServerEndpoint;
  friend class ClientEndpoint;
  friend struct Callbacks;

  struct Stream {
    SendBuffer buffer;
    bool blocked = false;  // flow-control blocked until extend_max_stream_data
  };

  Connection(Transport& transport, const TransportSettings& settings, net::Address local, net::Address remote);
  // Creates the ngtcp2 connection; for endpoints only.
  static std::unique_ptr<Connection> create_server(Transport& transport, const TransportSettings& settings,
                                                   gnutls_session_t session, const ngtcp2_pkt_hd& header,
                                                   const ngtcp2_cid* original_dcid, const ngtcp2_cid& scid,
                                                   std::span<const std::uint8_t, 16> reset_token,
                                                   const net::Address& local, const net::Address& remote,
                                                   bool address_validated, Timestamp now);
  static std::unique_ptr<Connection> create_client(Transport& transport, const TransportSettings& settings,
                                                   gnutls_session_t session, const net::Address& local,
                                                   const net::Address& remote, Timestamp now);

  void handle_expiry(Timestamp now);
  void update_timer();
  void start_closing(ngtcp2_connection_close_error error, CloseInfo info, Timestamp now);
  void start_draining(Timestamp now);
  void die(CloseInfo info);
  bool write_streams(Timestamp now);
  void send_close_packet();
  Stream* find_stream(StreamId id);

  // ngtcp2 callback bodies (see callbacks in connection.cc).
  int on_stream_data(StreamId id, std::span<const std::uint8_t> data, bool fin);
  int on_acked(StreamId id, std::uint64_t offset, std::uint64_t length);
  int on_stream_closed(StreamId id, std::uint64_t app_error_code);
  int on_handshake_completed();
  int on_crypto_data(ngtcp2_crypto_level level, std::uint64_t offset, std::span<const std::uint8_t> data);
  void release_tls_session();

  Transport& transport_;
  TransportSettings settings_;
  ngtcp2_crypto_conn_ref conn_ref_{};
  ngtcp2_conn* conn_ = nullptr;
  gnutls_session_t session_ = nullptr;
  ConnectionHandler* handler_ = nullptr;
  net::Address local_;
  net::Address remote_;
  std::string alpn_;
  PeerCertificate peer_certificate_;
  bool handshake_completed_ = false;
  bool handshake_confirmed_ = false;  // RFC 9001 §4.1.2: no Initial or Handshake packet goes out any more
  State state_ = State::Open;
  std::unordered_map<StreamId, Stream> streams_;
  void set_queued_bytes(std::uint64_t bytes) { queued_bytes_.store(bytes, std::memory_order_relaxed); }
  std::atomic<std::uint64_t> queued_bytes_ = 0;  // written on the loop thread only
  std::uint64_t credit_held_in_call_ = 0;  // hold_credit() during the current on_stream_data
  std::optional<CloseInfo> pending_close_;   // close() requested, waiting for the drain
  Timestamp pending_close_deadline_ = 0;
  CloseInfo close_info_;                     // why we are closing/draining
  std::vector<std::uint8_t> close_packet_;   // CONNECTION_CLOSE, resent while closing
  std::uint64_t packets_while_closing_ = 0;
  bool stateless_reset_ = false;
  net::EventLoop::TimerId timer_ = 0;
  Timestamp timer_deadline_ = 0;
  bool flush_scheduled_ = false;
  // The datagram size taken from the route, without discovery, once the handshake is confirmed
  // (TransportSettings::max_udp_payload); 0: Path MTU discovery sizes the packets.
  std::size_t route_payload_ = 0;
  // Path MTU black hole: the path stopped carrying the size discovery found or the route promised,
  // so every packet from then on is 1,200 bytes (ngtcp2 0.12 never lowers a size itself).
  bool small_packets_ = false;
};

// Transport: what a connection needs from its endpoint.
class Transport {
 public:
  virtual ~Transport() = default;
  virtual net::EventLoop& loop() = 0;
  // A scratch buffer for building packets, shared by the endpoint's connections (single thread).
  virtual std::span<std::uint8_t> tx_buffer() = 0;
  // Sends data (back-to-back packets of segment_size, the last may be shorter) on path.
  virtual void send_packets(const net::Address& local, const net::Address& remote, std::span<const std::uint8_t> data,
                            std::size_t segment_size) = 0;
  // Asks for flush(now) of connection before the loop sleeps.
  virtual void schedule_flush(Connection& connection) = 0;
  // Fills a connection ID of length bytes that this endpoint will route to connection: random, but
  // a server with several threads marks which thread owns it (ServerEndpoint).
  virtual void new_connection_id(std::uint8_t* data, std::size_t length);
  // Server: route packets for a new connection ID to connection / stop routing one.
  virtual void on_connection_id_issued(Connection& connection, const ngtcp2_cid& cid) = 0;
  virtual void on_connection_id_retired(const ngtcp2_cid& cid) = 0;
  // Fills a stateless reset token for cid.
  virtual void stateless_reset_token(std::uint8_t* token, const ngtcp2_cid& cid) = 0;
  // The connection finished its handshake.
  virtual void on_handshake_completed(Connection& /*connection*/) {}
  // The connection freed its TLS session, its handshake being done.
  virtual void on_tls_session_released(Connection& /*connection*/) {}
  // The connection died; the endpoint destroys it once the current call stack has unwound.
  virtual void on_connection_dead(Connection& connection) = 0;
};

}  // namespace debra::quic
