// SPDX-License-Identifier: MIT
#include "quic/connection.h"

#include <gnutls/crypto.h>
#include <ngtcp2/ngtcp2_crypto_gnutls.h>

#include <algorithm>
#include <array>
#include <cstring>
#include <optional>

#include "net/udp_socket.h"
#include "util/log.h"

namespace debra::quic {
namespace {

constexpr std::size_t kCidLength = 18;
constexpr std::size_t kMaxVectorsPerWrite = 16;
constexpr std::size_t kMaxPacketsPerFlush = 64;
// QUIC's smallest packet size, which every path carries (RFC 9000, section 14).
constexpr std::size_t kMinPacket = 1200;
// Probe timeouts in a row, without an acknowledgement, after which packets larger than kMinPacket
// are taken to be what the path drops.
constexpr std::size_t kBlackHoleProbeTimeouts = 3;
// What an IP and a UDP header take of a route's MTU.
constexpr std::size_t kIpv4UdpHeaders = 20 + 8;
constexpr std::size_t kIpv6UdpHeaders = 40 + 8;
// The most UDP payload one send may carry, a GSO batch included (IPv4's 16-bit total length, less
// its headers; IPv6 allows 20 bytes more).
constexpr std::size_t kMaxSendBytes = 65'535 - kIpv4UdpHeaders;

ngtcp2_addr to_ngtcp2(const net::Address& address) {
  return {const_cast<ngtcp2_sockaddr*>(reinterpret_cast<const ngtcp2_sockaddr*>(&address.storage)), address.length};
}

net::Address from_ngtcp2(const ngtcp2_addr& address) {
  net::Address converted;
  converted.length = static_cast<socklen_t>(std::min<std::size_t>(address.addrlen, sizeof converted.storage));
  std::memcpy(&converted.storage, address.addr, converted.length);
  return converted;
}

void random_bytes(std::uint8_t* dest, std::size_t length) {
  // Only fails when the library is in an error state; a zero-filled CID is still usable.
  if (gnutls_rnd(GNUTLS_RND_RANDOM, dest, length) != 0) std::memset(dest, 0, length);
}

Connection* self(void* user_data) { return static_cast<Connection*>(user_data); }

// Why the TLS handshake failed, for humans: the certificate verification result when that is what
// failed (a client checking the server), else the TLS alert we send.
std::string tls_failure_reason(gnutls_session_t session, std::uint8_t alert) {
  unsigned status = gnutls_session_get_verify_cert_status(session);
  if (status != 0 && status != static_cast<unsigned>(-1)) {
    gnutls_datum_t text{};
    if (gnutls_certificate_verification_status_print(status, GNUTLS_CRT_X509, &text, 0) == 0) {
      std::string reason = "TLS handshake failed: certificate verification failed: " +
                           std::string(reinterpret_cast<const char*>(text.data), text.size);
      gnutls_free(text.data);
      return reason;
    }
  }
  const char* name = gnutls_alert_get_strname(static_cast<gnutls_alert_description_t>(alert));
  return std::string("TLS handshake failed: alert ") + (name != nullptr ? name : std::to_string(alert));
}

}  // namespace

std::string CloseInfo::to_string() const {
  std::string who;
  switch (initiator) {
    case Initiator::Local: who = "closed locally"; break;
    case Initiator::Peer: who = "closed by peer"; break;
    case Initiator::IdleTimeout: return "idle timeout";
    case Initiator::HandshakeTimeout: return "handshake timeout";
    case Initiator::StatelessReset: return "stateless reset by peer";
  }
  who += application ? " (application error " : " (transport error ";
  who += std::to_string(error_code) + ")";
  if (!reason.empty()) who += ": " + reason;
  return who;
}

// Callbacks: the ngtcp2 C callbacks, each forwarding to the Connection. ngtcp2's crypto helpers fill
// the TLS and packet-protection ones.
struct Callbacks {
  static void rand(std::uint8_t* dest, std::size_t length, const ngtcp2_rand_ctx*) { random_bytes(dest, length); }

  static int get_new_connection_id(ngtcp2_conn*, ngtcp2_cid* cid, std::uint8_t* token, std::size_t cidlen,
                                   void* user_data) {
    auto* c = self(user_data);
    c->transport_.new_connection_id(cid->data, cidlen);
    cid->datalen = cidlen;
    c->transport_.stateless_reset_token(token, *cid);
    c->transport_.on_connection_id_issued(*c, *cid);
    return 0;
  }

  static int remove_connection_id(ngtcp2_conn*, const ngtcp2_cid* cid, void* user_data) {
    self(user_data)->transport_.on_connection_id_retired(*cid);
    return 0;
  }

  static int recv_stream_data(ngtcp2_conn*, std::uint32_t flags, std::int64_t stream_id, std::uint64_t,
                              const std::uint8_t* data, std::size_t length, void* user_data, void*) {
    return self(user_data)->on_stream_data(stream_id, {data, length}, (flags & NGTCP2_STREAM_DATA_FLAG_FIN) != 0);
  }

  static int acked_stream_data_offset(ngtcp2_conn*, std::int64_t stream_id, std::uint64_t offset,
                                      std::uint64_t length, void* user_data, void*) {
    return self(user_data)->on_acked(stream_id, offset, length);
  }

  static int stream_close(ngtcp2_conn*, std::uint32_t flags, std::int64_t stream_id, std::uint64_t app_error_code,
                          void* user_data, void*) {
    if ((flags & NGTCP2_STREAM_CLOSE_FLAG_APP_ERROR_CODE_SET) == 0) app_error_code = 0;
    return self(user_data)->on_stream_closed(stream_id, app_error_code);
  }

  static int extend_max_stream_data(ngtcp2_conn*, std::int64_t stream_id, std::uint64_t, void* user_data, void*) {
    if (auto* stream = self(user_data)->find_stream(stream_id)) stream->blocked = false;
    return 0;
  }

  static int handshake_completed(ngtcp2_conn*, void* user_data) { return self(user_data)->on_handshake_completed(); }
  static int handshake_confirmed(ngtcp2_conn*, void* user_data) {
    self(user_data)->handshake_confirmed_ = true;
    return 0;
  }

  static int recv_crypto_data(ngtcp2_conn*, ngtcp2_crypto_level level, std::uint64_t offset, const std::uint8_t* data,
                              std::size_t length, void* user_data) {
    return self(user_data)->on_crypto_data(level, offset, {data, length});
  }

  static int recv_stateless_reset(ngtcp2_conn*, const ngtcp2_pkt_stateless_reset*, void* user_data) {
    self(user_data)->stateless_reset_ = true;
    return 0;
  }

  static ngtcp2_callbacks make(bool server) {
    ngtcp2_callbacks cb{};
    if (server) {
      cb.recv_client_initial = ngtcp2_crypto_recv_client_initial_cb;
    } else {
      cb.client_initial = ngtcp2_crypto_client_initial_cb;
      cb.recv_retry = ngtcp2_crypto_recv_retry_cb;
      cb.recv_stateless_reset = recv_stateless_reset;
    }
    cb.recv_crypto_data = recv_crypto_data;
    cb.encrypt = ngtcp2_crypto_encrypt_cb;
    cb.decrypt = ngtcp2_crypto_decrypt_cb;
    cb.hp_mask = ngtcp2_crypto_hp_mask_cb;
    cb.update_key = ngtcp2_crypto_update_key_cb;
    cb.delete_crypto_aead_ctx = ngtcp2_crypto_delete_crypto_aead_ctx_cb;
    cb.delete_crypto_cipher_ctx = ngtcp2_crypto_delete_crypto_cipher_ctx_cb;
    cb.get_path_challenge_data = ngtcp2_crypto_get_path_challenge_data_cb;
    cb.version_negotiation = ngtcp2_crypto_version_negotiation_cb;
    cb.rand = rand;
    cb.get_new_connection_id = get_new_connection_id;
    cb.remove_connection_id = remove_connection_id;
    cb.recv_stream_data = recv_stream_data;
    cb.acked_stream_data_offset = acked_stream_data_offset;
    cb.stream_close = stream_close;
    cb.extend_max_stream_data = extend_max_stream_data;
    cb.handshake_completed = handshake_completed;
    cb.handshake_confirmed = handshake_confirmed;
    return cb;
  }
};

namespace {

// The payload size a datagram to remote may have by its route, when that is more than discovery can
// find and config allows it; 0 otherwise.
std::size_t payload_by_route(const TransportSettings& config, const net::Address& remote) {
  if (config.max_udp_payload <= NGTCP2_MAX_PMTUD_UDP_PAYLOAD_SIZE) return 0;
  const std::optional<std::size_t> mtu = net::route_mtu(remote);
  const std::size_t headers = remote.family() == AF_INET ? kIpv4UdpHeaders : kIpv6UdpHeaders;
  if (!mtu || *mtu <= headers) return 0;
  const std::size_t payload = std::min({*mtu - headers, config.max_udp_payload, kMaxSendBytes});
  return payload > NGTCP2_MAX_PMTUD_UDP_PAYLOAD_SIZE ? payload : 0;
}

void fill_settings(ngtcp2_settings& settings, const TransportSettings& config, std::size_t route_payload,
                   Timestamp now) {
  ngtcp2_settings_default(&settings);
  settings.initial_ts = now;
  settings.initial_rtt = config.initial_rtt;
  settings.max_window = config.max_connection_window;
  settings.max_stream_window = config.max_stream_window;
  settings.handshake_timeout = config.handshake_timeout;
  settings.cc_algo = NGTCP2_CC_ALGO_CUBIC;
  if (route_payload != 0) {
    // Every packet is then as large as the buffer write_streams offers, up to the route's size and
    // the peer's max_udp_payload_size, with no probing: the route already said what it carries.
    settings.max_tx_udp_payload_size = route_payload;
    settings.no_tx_udp_payload_size_shaping = 1;
    settings.no_pmtud = 1;
  } else {
    settings.max_tx_udp_payload_size =
        std::clamp(config.max_udp_payload, kMinPacket, std::size_t{NGTCP2_MAX_PMTUD_UDP_PAYLOAD_SIZE});
    if (settings.max_tx_udp_payload_size == kMinPacket) settings.no_pmtud = 1;
  }
}

void fill_params(ngtcp2_transport_params& params, const TransportSettings& config) {
  ngtcp2_transport_params_default(&params);
  params.initial_max_stream_data_bidi_local = config.stream_window;
  params.initial_max_stream_data_bidi_remote = config.stream_window;
  params.initial_max_stream_data_uni = config.stream_window;
  params.initial_max_data = config.connection_window;
  params.initial_max_streams_bidi = config.peer_bidi_streams;
  params.initial_max_streams_uni = config.peer_uni_streams;
  params.max_idle_timeout = config.idle_timeout;
}

}  // namespace

Connection::Connection(Transport& transport, const TransportSettings& settings, net::Address local,
                       net::Address remote)
    : transport_(transport), settings_(settings), local_(local), remote_(remote) {
  conn_ref_.get_conn = [](ngtcp2_crypto_conn_ref* ref) { return static_cast<Connection*>(ref->user_data)->conn_; };
  conn_ref_.user_data = this;
}

Connection::~Connection() {
  if (timer_ != 0) transport_.loop().cancel_timer(timer_);
  if (conn_ != nullptr) ngtcp2_conn_del(conn_);
  if (session_ != nullptr) gnutls_deinit(session_);
}

std::unique_ptr<Connection> Connection::create_server(Transport& transport, const TransportSettings& config,
                                                      gnutls_session_t session, const ngtcp2_pkt_hd& header,
                                                      const ngtcp2_cid* original_dcid, const ngtcp2_cid& scid,
                                                      std::span<const std::uint8_t, 16> reset_token,
                                                      const net::Address& local, const net::Address& remote,
                                                      bool address_validated, Timestamp now) {
  std::unique_ptr<Connection> c(new Connection(transport, config, local, remote));
  c->session_ = session;
  c->route_payload_ = payload_by_route(config, remote);
  ngtcp2_settings settings;
  fill_settings(settings, config, c->route_payload_, now);
  if (address_validated) settings.token = header.token;
  ngtcp2_transport_params params;
  fill_params(params, config);
  params.stateless_reset_token_present = 1;
  std::memcpy(params.stateless_reset_token, reset_token.data(), reset_token.size());
  if (original_dcid != nullptr) {
    params.original_dcid = *original_dcid;
    params.retry_scid = header.dcid;
    params.retry_scid_present = 1;
  } else {
    params.original_dcid = header.dcid;
  }
  ngtcp2_path path{to_ngtcp2(c->local_), to_ngtcp2(c->remote_), nullptr};
  ngtcp2_callbacks callbacks = Callbacks::make(true);
  if (ngtcp2_conn_server_new(&c->conn_, &header.scid, &scid, &path, header.version, &callbacks, &settings, &params,
                             nullptr, c.get()) != 0) {
    return nullptr;
  }
  gnutls_session_set_ptr(session, &c->conn_ref_);
  ngtcp2_conn_set_tls_native_handle(c->conn_, session);
  return c;
}

std::unique_ptr<Connection> Connection::create_client(Transport& transport, const TransportSettings& config,
                                                      gnutls_session_t session, const net::Address& local,
                                                      const net::Address& remote, Timestamp now) {
  std::unique_ptr<Connection> c(new Connection(transport, config, local, remote));
  c->session_ = session;
  ngtcp2_cid dcid;
  ngtcp2_cid scid;
  dcid.datalen = scid.datalen = kCidLength;
  random_bytes(dcid.data, kCidLength);
  random_bytes(scid.data, kCidLength);
  c->route_payload_ = payload_by_route(config, remote);
  ngtcp2_settings settings;
  fill_settings(settings, config, c->route_payload_, now);
  ngtcp2_transport_params params;
  fill_params(params, config);
  ngtcp2_path path{to_ngtcp2(c->local_), to_ngtcp2(c->remote_), nullptr};
  ngtcp2_callbacks callbacks = Callbacks::make(false);
  if (ngtcp2_conn_client_new(&c->conn_, &dcid, &scid, &path, NGTCP2_PROTO_VER_V1, &callbacks, &settings, &params,
                             nullptr, c.get()) != 0) {
    return nullptr;
  }
  gnutls_session_set_ptr(session, &c->conn_ref_);
  ngtcp2_conn_set_tls_native_handle(c->conn_, session);
  if (config.keep_alive != 0) ngtcp2_conn_set_keep_alive_timeout(c->conn_, config.keep_alive);
  return c;
}

Connection::Stream* Connection::find_stream(StreamId id) {
  auto it = streams_.find(id);
  return it == streams_.end() ? nullptr : &it->second;
}

Result<StreamId, Error> Connection::open_bidi_stream() {
  StreamId id = -1;
  if (state_ != State::Open) return make_error("connection is closing");
  if (int rv = ngtcp2_conn_open_bidi_stream(conn_, &id, nullptr); rv != 0) {
    return make_error(std::string("cannot open a stream: ") + ngtcp2_strerror(rv));
  }
  streams_.try_emplace(id);
  return id;
}

Result<StreamId, Error> Connection::open_uni_stream() {
  StreamId id = -1;
  if (state_ != State::Open) return make_error("connection is closing");
  if (int rv = ngtcp2_conn_open_uni_stream(conn_, &id, nullptr); rv != 0) {
    return make_error(std::string("cannot open a stream: ") + ngtcp2_strerror(rv));
  }
  streams_.try_emplace(id);
  return id;
}

std::uint64_t Connection::write(StreamId id, std::span<const std::uint8_t> bytes) {
  if (state_ != State::Open) return 0;
  Stream* stream = find_stream(id);
  if (stream == nullptr) return 0;  // closed or reset by the peer: nothing can reach it any more
  set_queued_bytes(queued_bytes() + bytes.size());
  stream->buffer.append(bytes);
  transport_.schedule_flush(*this);
  return stream->buffer.end();
}

std::uint64_t Connection::acknowledged_offset(StreamId id) const {
  auto it = streams_.find(id);
  return it == streams_.end() ? 0 : it->second.buffer.acknowledged();
}

void Connection::close(std::uint64_t app_error_code, std::string reason) {
  if (state_ != State::Open || pending_close_) return;
  pending_close_ = CloseInfo{CloseInfo::Initiator::Local, true, app_error_code, std::move(reason)};
  pending_close_deadline_ = transport_.loop().now() + settings_.close_drain_timeout;
  transport_.schedule_flush(*this);
}

void Connection::close_now(std::uint64_t app_error_code, std::string reason) {
  if (state_ != State::Open) return;
  if (!pending_close_) pending_close_ = CloseInfo{CloseInfo::Initiator::Local, true, app_error_code, std::move(reason)};
  pending_close_deadline_ = 0;
  transport_.schedule_flush(*this);
}

int Connection::on_stream_data(StreamId id, std::span<const std::uint8_t> data, bool fin) {
  streams_.try_emplace(id);
  credit_held_in_call_ = 0;
  if (handler_ != nullptr) handler_->on_stream_data(id, data, fin);
  // The handler consumed the bytes (it copies what it keeps and bounds what it queues elsewhere), so
  // the credit goes straight back to the peer, except for what it holds back.
  std::uint64_t consumed = data.size() - std::min<std::uint64_t>(credit_held_in_call_, data.size());
  credit_held_in_call_ = 0;
  ngtcp2_conn_extend_max_stream_offset(conn_, id, consumed);
  ngtcp2_conn_extend_max_offset(conn_, consumed);
  return 0;
}

void Connection::release_credit(StreamId id, std::uint64_t bytes) {
  if (bytes == 0 || state_ != State::Open) return;
  // Outside a callback, so the MAX_STREAM_DATA / MAX_DATA frames need a flush to go out.
  ngtcp2_conn_extend_max_stream_offset(conn_, id, bytes);
  ngtcp2_conn_extend_max_offset(conn_, bytes);
  transport_.schedule_flush(*this);
}

int Connection::on_acked(StreamId id, std::uint64_t offset, std::uint64_t length) {
  Stream* stream = find_stream(id);
  if (stream == nullptr) return 0;
  std::uint64_t before = stream->buffer.unacked_bytes();
  stream->buffer.acknowledge(offset + length);
  set_queued_bytes(queued_bytes() - (before - stream->buffer.unacked_bytes()));
  if (handler_ != nullptr) handler_->on_data_acknowledged();
  return 0;
}

int Connection::on_stream_closed(StreamId id, std::uint64_t app_error_code) {
  if (auto it = streams_.find(id); it != streams_.end()) {
    set_queued_bytes(queued_bytes() - it->second.buffer.unacked_bytes());
    streams_.erase(it);
  }
  // Give the peer its stream credit back (RFC 9000 §4.6): a client may replace a stream it closed.
  bool peer_initiated = ngtcp2_conn_is_server(conn_) ? (id & 1) == 0 : (id & 1) == 1;
  if (peer_initiated) {
    if ((id & 2) == 0) {
      ngtcp2_conn_extend_max_streams_bidi(conn_, 1);
    } else {
      ngtcp2_conn_extend_max_streams_uni(conn_, 1);
    }
  }
  if (handler_ != nullptr) handler_->on_stream_closed(id, app_error_code);
  return 0;
}

int Connection::on_handshake_completed() {
  handshake_completed_ = true;
  // A server's handshake is confirmed as it completes (RFC 9001 §4.1.2); ngtcp2 calls
  // handshake_confirmed for clients only.
  if (ngtcp2_conn_is_server(conn_)) handshake_confirmed_ = true;
  gnutls_datum_t alpn{};
  if (gnutls_alpn_get_selected_protocol(session_, &alpn) == 0) {
    alpn_.assign(reinterpret_cast<const char*>(alpn.data), alpn.size);
  }
  if (ngtcp2_conn_is_server(conn_)) peer_certificate_ = verify_client_certificate(session_);
  if (settings_.keep_alive != 0) {
    // The idle timeout in force is the smaller of both sides' (RFC 9000 §10.1). A keep-alive longer
    // than it would let an idle connection time out between two PINGs, so ping at half of it.
    std::uint64_t idle = settings_.idle_timeout;
    if (const ngtcp2_transport_params* remote = ngtcp2_conn_get_remote_transport_params(conn_);
        remote != nullptr && remote->max_idle_timeout != 0) {
      idle = idle == 0 ? remote->max_idle_timeout : std::min<std::uint64_t>(idle, remote->max_idle_timeout);
    }
    if (idle != 0) ngtcp2_conn_set_keep_alive_timeout(conn_, std::min(settings_.keep_alive, idle / 2));
  }
  transport_.on_handshake_completed(*this);
  if (handler_ != nullptr) handler_->on_handshake_completed();
  return 0;
}

int Connection::on_crypto_data(ngtcp2_crypto_level level, std::uint64_t offset, std::span<const std::uint8_t> data) {
  if (session_ == nullptr) {
    // A server's handshake is done and its session gone. A client sends no TLS message after its
    // Finished (RFC 9001 §6: no KeyUpdate; §4.4: no post-handshake authentication), so whatever this
    // is, it is the error a TLS stack would report.
    ngtcp2_conn_set_tls_alert(conn_, GNUTLS_A_UNEXPECTED_MESSAGE);
    return NGTCP2_ERR_CRYPTO;
  }
  return ngtcp2_crypto_recv_crypto_data_cb(conn_, level, offset, data.data(), data.size(), this);
}

void Connection::release_tls_session() {
  // What ngtcp2 uses after the handshake, key updates included, is its own copy of the secrets and
  // the packet-protection contexts it derived; only the CRYPTO-data callback and the handshake's
  // key installation reach for the session (read off libngtcp2_crypto_gnutls's calls).
  ngtcp2_conn_set_tls_native_handle(conn_, nullptr);
  gnutls_deinit(session_);
  session_ = nullptr;
  transport_.on_tls_session_released(*this);
}

void Connection::on_datagram(const ngtcp2_path& path, std::span<const std::uint8_t> data, Timestamp now) {
  if (state_ == State::Closing) {
    // Answer a peer that keeps sending with our CONNECTION_CLOSE, at an exponentially falling rate
    // so a flood of packets cannot turn us into an amplifier (RFC 9000 §10.2.1).
    ++packets_while_closing_;
    if ((packets_while_closing_ & (packets_while_closing_ - 1)) == 0) send_close_packet();
    return;
  }
  if (state_ != State::Open) return;
  ngtcp2_pkt_info info{};
  int rv = ngtcp2_conn_read_pkt(conn_, &path, &info, data.data(), data.size(), now);
  if (rv == 0) {
    // Not from inside the handshake callback: GnuTLS is still on the stack there.
    if (handshake_completed_ && session_ != nullptr && ngtcp2_conn_is_server(conn_)) release_tls_session();
    transport_.schedule_flush(*this);
    return;
  }
  ngtcp2_connection_close_error error;
  std::string reason = ngtcp2_strerror(rv);
  switch (rv) {
    case NGTCP2_ERR_DRAINING:
      start_draining(now);
      return;
    case NGTCP2_ERR_DROP_CONN:
      die(CloseInfo{CloseInfo::Initiator::Local, false, 0, "connection dropped"});
      return;
    case NGTCP2_ERR_CRYPTO:
      ngtcp2_connection_close_error_set_transport_error_tls_alert(&error, ngtcp2_conn_get_tls_alert(conn_), nullptr, 0);
      reason = session_ != nullptr ? tls_failure_reason(session_, ngtcp2_conn_get_tls_alert(conn_))
                                   : "the client sent a TLS message after the handshake";
      break;
    default:
      ngtcp2_connection_close_error_set_transport_error_liberr(&error, rv, nullptr, 0);
      break;
  }
  spdlog::debug("quic: {}: packet error: {}", remote_.to_string(), reason);
  start_closing(error, CloseInfo{CloseInfo::Initiator::Local, false, error.error_code, std::move(reason)}, now);
}

void Connection::handle_expiry(Timestamp now) {
  if (state_ == State::Closing || state_ == State::Draining) {
    die(close_info_);
    return;
  }
  if (state_ != State::Open) return;
  if (pending_close_ && now >= pending_close_deadline_) {
    flush(now);
    return;
  }
  int rv = ngtcp2_conn_handle_expiry(conn_, now);
  if (rv == NGTCP2_ERR_IDLE_CLOSE) {
    die(CloseInfo{CloseInfo::Initiator::IdleTimeout, false, 0, "idle timeout"});
    return;
  }
  if (rv != 0) {
    ngtcp2_connection_close_error error;
    ngtcp2_connection_close_error_set_transport_error_liberr(&error, rv, nullptr, 0);
    auto initiator = rv == NGTCP2_ERR_HANDSHAKE_TIMEOUT ? CloseInfo::Initiator::HandshakeTimeout
                                                        : CloseInfo::Initiator::Local;
    start_closing(error, CloseInfo{initiator, false, error.error_code, ngtcp2_strerror(rv)}, now);
    return;
  }
  flush(now);
}

void Connection::flush(Timestamp now) {
  flush_scheduled_ = false;
  if (state_ != State::Open) return;
  if (!write_streams(now)) return;
  if (pending_close_ && (queued_bytes() == 0 || now >= pending_close_deadline_)) {
    ngtcp2_connection_close_error error;
    ngtcp2_connection_close_error_set_application_error(
        &error, pending_close_->error_code, reinterpret_cast<const std::uint8_t*>(pending_close_->reason.data()),
        pending_close_->reason.size());
    start_closing(error, *pending_close_, now);
    return;
  }
  update_timer();
}

bool Connection::write_streams(Timestamp now) {
  std::span<std::uint8_t> buffer = transport_.tx_buffer();
  // Room for the largest packet ngtcp2 may write, not just the path's current size: a Path MTU probe
  // is larger than the path is known to carry, and ngtcp2 skips the probe when it does not fit. With
  // room only for the path's size, the path stayed at 1,200 bytes for the connection's whole life.
  std::size_t max_udp = ngtcp2_conn_get_max_tx_udp_payload_size(conn_);
  std::size_t path_udp = ngtcp2_conn_get_path_max_tx_udp_payload_size(conn_);
  if (route_payload_ != 0 && !handshake_confirmed_) {
    // Until then the peer's max_udp_payload_size may not be known, and a peer that receives into
    // buffers of its size would lose a larger handshake datagram; and ngtcp2 pads a datagram with an
    // Initial packet to the whole buffer.
    max_udp = path_udp = kMinPacket;
  }
  if (path_udp > kMinPacket && !small_packets_) {
    // A route whose MTU fell below the discovered size drops every full packet, and ngtcp2 0.12
    // would go on sending them until the connection timed out (RFC 8899, section 4.3: black-hole
    // detection is the sender's job). Probe timeouts in a row are the sign; smaller packets are
    // always carried, and without room for larger ones ngtcp2 also stops probing.
    ngtcp2_conn_stat stat;
    ngtcp2_conn_get_conn_stat(conn_, &stat);
    if (stat.pto_count >= kBlackHoleProbeTimeouts) {
      small_packets_ = true;
      // Debug, not info: a peer that vanished with data in flight looks the same.
      spdlog::debug("quic: {}: {} probe timeouts in a row with {}-byte packets: {} bytes from now on",
                    remote_.to_string(), stat.pto_count, path_udp, kMinPacket);
    }
  }
  if (small_packets_) max_udp = path_udp = kMinPacket;
  buffer = buffer.first(std::min(buffer.size(), kMaxSendBytes));
  std::size_t max_packets = std::clamp<std::size_t>(ngtcp2_conn_get_send_quantum(conn_) / path_udp, 1,
                                                    std::min(kMaxPacketsPerFlush, buffer.size() / path_udp));
  ngtcp2_path_storage ps;
  ngtcp2_path_storage_zero(&ps);
  ngtcp2_pkt_info info{};
  std::size_t batch_bytes = 0;
  std::size_t segment = 0;
  std::size_t packets = 0;
  // The path of the packets in the batch: ngtcp2 chooses it per packet, since a peer whose address
  // changed (a NAT rebinding, a migration) is answered on the new path, and probed on it, while
  // the old one may still carry packets.
  ngtcp2_path_storage batch_path;
  ngtcp2_path_storage_zero(&batch_path);
  auto send = [&](std::size_t bytes, std::size_t segment_size) {
    transport_.send_packets(from_ngtcp2(batch_path.path.local), from_ngtcp2(batch_path.path.remote),
                            buffer.first(bytes), segment_size);
  };
  auto send_batch = [&] {
    if (batch_bytes > 0) send(batch_bytes, segment);
    batch_bytes = 0;
    segment = 0;
  };
  std::array<ngtcp2_vec, kMaxVectorsPerWrite> vectors{};
  for (;;) {
    StreamId stream_id = -1;
    Stream* stream = nullptr;
    std::size_t count = 0;
    if (ngtcp2_conn_get_max_data_left(conn_) > 0) {
      for (auto& [id, s] : streams_) {
        if (!s.blocked && s.buffer.has_unsent()) {
          stream_id = id;
          stream = &s;
          count = s.buffer.unsent(vectors.data(), vectors.size());
          break;
        }
      }
    }
    ngtcp2_ssize consumed = -1;
    ngtcp2_ssize n = ngtcp2_conn_writev_stream(conn_, &ps.path, &info, buffer.data() + batch_bytes, max_udp, &consumed,
                                               NGTCP2_WRITE_STREAM_FLAG_MORE, stream_id, vectors.data(), count, now);
    if (n < 0) {
      if (n == NGTCP2_ERR_WRITE_MORE) {
        stream->buffer.mark_sent(static_cast<std::size_t>(consumed));
        continue;
      }
      if (n == NGTCP2_ERR_STREAM_DATA_BLOCKED) {
        stream->blocked = true;
        continue;
      }
      if (n == NGTCP2_ERR_STREAM_SHUT_WR || n == NGTCP2_ERR_STREAM_NOT_FOUND) {
        // The peer stopped the stream: its queued bytes can never be delivered.
        set_queued_bytes(queued_bytes() - stream->buffer.unacked_bytes());
        streams_.erase(stream_id);
        continue;
      }
      send_batch();
      ngtcp2_connection_close_error error;
      ngtcp2_connection_close_error_set_transport_error_liberr(&error, static_cast<int>(n), nullptr, 0);
      start_closing(error, CloseInfo{CloseInfo::Initiator::Local, false, error.error_code,
                                     ngtcp2_strerror(static_cast<int>(n))},
                    now);
      return false;
    }
    if (stream != nullptr && consumed > 0) stream->buffer.mark_sent(static_cast<std::size_t>(consumed));
    if (n == 0) break;
    auto size = static_cast<std::size_t>(n);
    if (segment != 0 && (size > segment || !ngtcp2_path_eq(&ps.path, &batch_path.path))) {
      // GSO needs equal segments (only the last may be shorter) on one path: send what we have, and
      // start a new batch with this packet.
      std::size_t previous = batch_bytes;
      send(previous, segment);
      std::memmove(buffer.data(), buffer.data() + previous, size);
      batch_bytes = 0;
      segment = 0;
    }
    if (segment == 0) ngtcp2_path_copy(&batch_path.path, &ps.path);
    if (segment == 0) segment = size;
    batch_bytes += size;
    ++packets;
    // A packet larger than the path is known to carry is a Path MTU probe: it goes alone. As the
    // first segment of a GSO batch it would set the segment size, and a route that refuses that size
    // fails the whole batch (EMSGSIZE), where only the probe was meant to be at risk.
    if (size < segment || size > path_udp || batch_bytes + max_udp > buffer.size()) send_batch();
    if (packets >= max_packets) break;
  }
  send_batch();
  ngtcp2_conn_update_pkt_tx_time(conn_, now);
  return true;
}

void Connection::update_timer() {
  Timestamp deadline = ngtcp2_conn_get_expiry(conn_);
  if (pending_close_) deadline = std::min(deadline, pending_close_deadline_);
  if (deadline == timer_deadline_ && timer_ != 0) return;
  auto& loop = transport_.loop();
  timer_deadline_ = deadline;
  if (deadline == UINT64_MAX) {
    if (timer_ != 0) loop.cancel_timer(timer_);
    timer_ = 0;
    return;
  }
  if (timer_ != 0 && loop.move_timer(timer_, deadline)) return;
  timer_ = loop.add_timer(deadline, [this] {
    timer_ = 0;
    handle_expiry(transport_.loop().now());
  });
}

void Connection::start_closing(ngtcp2_connection_close_error error, CloseInfo info, Timestamp now) {
  if (state_ != State::Open) return;
  close_info_ = std::move(info);
  state_ = State::Closing;
  std::span<std::uint8_t> buffer = transport_.tx_buffer();
  ngtcp2_path_storage ps;
  ngtcp2_path_storage_zero(&ps);
  ngtcp2_pkt_info pi{};
  ngtcp2_ssize n = ngtcp2_conn_write_connection_close(conn_, &ps.path, &pi, buffer.data(),
                                                      ngtcp2_conn_get_path_max_tx_udp_payload_size(conn_), &error, now);
  streams_.clear();
  set_queued_bytes(0);
  if (n <= 0) {
    // Nothing can be sent (e.g. before any keys exist): there is no closing period to keep.
    die(close_info_);
    return;
  }
  close_packet_.assign(buffer.data(), buffer.data() + n);
  send_close_packet();
  if (handler_ != nullptr) handler_->on_closing(close_info_);
  if (timer_ != 0) transport_.loop().cancel_timer(timer_);
  // Keep the state for three PTOs to answer retransmissions (RFC 9000 §10.2).
  timer_ = transport_.loop().add_timer(now + 3 * ngtcp2_conn_get_pto(conn_), [this] {
    timer_ = 0;
    die(close_info_);
  });
}

void Connection::abandon(std::string reason) {
  if (state_ == State::Dead) return;
  if (state_ == State::Open) {
    close_info_ = CloseInfo{CloseInfo::Initiator::Local, false, NGTCP2_NO_ERROR, std::move(reason)};
    if (handler_ != nullptr) handler_->on_closing(close_info_);
  }
  die(close_info_);
}

void Connection::start_draining(Timestamp now) {
  if (state_ != State::Open) return;
  state_ = State::Draining;
  ngtcp2_connection_close_error error{};
  ngtcp2_conn_get_connection_close_error(conn_, &error);
  close_info_ = CloseInfo{stateless_reset_ ? CloseInfo::Initiator::StatelessReset : CloseInfo::Initiator::Peer,
                          error.type == NGTCP2_CONNECTION_CLOSE_ERROR_CODE_TYPE_APPLICATION, error.error_code,
                          std::string(reinterpret_cast<const char*>(error.reason), error.reasonlen)};
  streams_.clear();
  set_queued_bytes(0);
  if (timer_ != 0) transport_.loop().cancel_timer(timer_);
  timer_ = transport_.loop().add_timer(now + 3 * ngtcp2_conn_get_pto(conn_), [this] {
    timer_ = 0;
    die(close_info_);
  });
  if (handler_ != nullptr) handler_->on_closing(close_info_);
}

void Connection::send_close_packet() {
  if (close_packet_.empty()) return;
  const ngtcp2_path* path = ngtcp2_conn_get_path(conn_);
  transport_.send_packets(from_ngtcp2(path->local), from_ngtcp2(path->remote), close_packet_, close_packet_.size());
}

void Connection::die(CloseInfo info) {
  if (state_ == State::Dead) return;
  state_ = State::Dead;
  if (timer_ != 0) transport_.loop().cancel_timer(timer_);
  timer_ = 0;
  ConnectionHandler* handler = handler_;
  handler_ = nullptr;
  if (handler != nullptr) handler->on_closed(info);
  transport_.on_connection_dead(*this);
}

void Transport::new_connection_id(std::uint8_t* data, std::size_t length) { random_bytes(data, length); }

}  // namespace debra::quic
