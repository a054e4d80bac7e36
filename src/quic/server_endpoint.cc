// SPDX-License-Identifier: MIT
#include "quic/server_endpoint.h"

#include <gnutls/crypto.h>
#include <ngtcp2/ngtcp2_crypto.h>

#include <algorithm>
#include <cstring>

#include "util/log.h"

namespace debra::quic {
namespace {

constexpr std::size_t kScidLength = 18;
constexpr std::size_t kTxBufferSize = 64 * 1024;
constexpr std::uint64_t kRetryTokenLifetime = 10 * kSecond;
// Stateless resets: a steady rate and a burst, per endpoint.
constexpr double kResetsPerSecond = 100;
constexpr double kResetBurst = 100;
// A reset must be smaller than the packet that triggered it (RFC 9000 §10.3.3), and ngtcp2 needs a
// first byte, a few random bytes and the token. Keep-alive PINGs are about 40 bytes, so the bound
// must stay well below that, or a crashed router's clients would only learn of it at their idle
// timeout.
constexpr std::size_t kMinStatelessResetLength = 1 + NGTCP2_MIN_STATELESS_RESET_RANDLEN + NGTCP2_STATELESS_RESET_TOKENLEN;

// Whether two socket addresses have the same IP address, whatever their ports.
bool same_host(const net::Address& a, const net::Address& b) {
  if (a.family() != b.family()) return false;
  if (a.family() == AF_INET) {
    return std::memcmp(&reinterpret_cast<const sockaddr_in*>(&a.storage)->sin_addr,
                       &reinterpret_cast<const sockaddr_in*>(&b.storage)->sin_addr, sizeof(in_addr)) == 0;
  }
  return std::memcmp(&reinterpret_cast<const sockaddr_in6*>(&a.storage)->sin6_addr,
                     &reinterpret_cast<const sockaddr_in6*>(&b.storage)->sin6_addr, sizeof(in6_addr)) == 0;
}

// A datagram another thread's socket received, copied for the thread that owns its connection.
struct ForwardedDatagram {
  std::vector<std::uint8_t> bytes;
  net::Address remote;
  net::Address local;
};

}  // namespace

EndpointStats& EndpointStats::operator+=(const EndpointStats& other) {
  accepted += other.accepted;
  refused += other.refused;
  refused_per_address += other.refused_per_address;
  retries_sent += other.retries_sent;
  invalid_tokens += other.invalid_tokens;
  abandoned_before_retry += other.abandoned_before_retry;
  tls_sessions_released += other.tls_sessions_released;
  stateless_resets_sent += other.stateless_resets_sent;
  version_negotiations_sent += other.version_negotiations_sent;
  received_datagrams += other.received_datagrams;
  dropped_datagrams += other.dropped_datagrams;
  forwarded_datagrams += other.forwarded_datagrams;
  sent_datagrams += other.sent_datagrams;
  send_calls += other.send_calls;
  send_dropped += other.send_dropped;
  return *this;
}

std::size_t ServerEndpoint::CidHash::operator()(const CidKey& key) const {
  // CIDs are random bytes we chose (or the client's random original DCID): any 8 of them hash well.
  std::uint64_t h = 0;
  std::memcpy(&h, key.bytes.data(), sizeof h);
  return static_cast<std::size_t>(h ^ key.length);
}

ServerEndpoint::CidKey ServerEndpoint::key_of(const std::uint8_t* data, std::size_t length) {
  CidKey key;
  key.length = static_cast<std::uint8_t>(std::min<std::size_t>(length, NGTCP2_MAX_CIDLEN));
  std::memcpy(key.bytes.data(), data, key.length);
  return key;
}

Result<std::unique_ptr<ServerEndpoint>, Error> ServerEndpoint::create(net::EventLoop& loop, ServerConfig config,
                                                                      const TlsServerContext& tls,
                                                                      Acceptor acceptor) {
  auto socket = net::UdpSocket::bind(config.listen, config.threads > 1 ? net::UdpSocket::Sharing::Shared
                                                                        : net::UdpSocket::Sharing::Exclusive);
  if (!socket) return Unexpected{socket.error()};
  std::unique_ptr<ServerEndpoint> endpoint(
      new ServerEndpoint(loop, std::move(config), tls, std::move(acceptor), std::move(*socket)));
  ServerEndpoint* raw = endpoint.get();
  loop.add_reader(raw->socket_.fd(), [raw] {
    raw->socket_.receive([raw](const net::Datagram& datagram) { raw->on_datagram(datagram); });
  });
  loop.add_before_sleep([raw] { raw->flush_pending(); });
  return endpoint;
}

ServerEndpoint::ServerEndpoint(net::EventLoop& loop, ServerConfig config, const TlsServerContext& tls,
                               Acceptor acceptor, net::UdpSocket socket)
    : loop_(loop), config_(std::move(config)), tls_(tls), acceptor_(std::move(acceptor)),
      socket_(std::move(socket)), tx_buffer_(kTxBufferSize),
      admission_(config_.admission ? config_.admission
                                   : std::make_shared<Admission>(config_.max_connections,
                                                                 config_.max_connections_per_address)),
      reset_tokens_(kResetBurst) {}

ServerEndpoint::~ServerEndpoint() { loop_.remove_reader(socket_.fd()); }

EndpointStats ServerEndpoint::stats() const {
  EndpointStats stats = stats_;
  stats.sent_datagrams = socket_.stats().datagrams_sent;
  stats.send_calls = socket_.stats().send_calls;
  stats.send_dropped = socket_.stats().send_dropped;
  return stats;
}

void ServerEndpoint::forward(std::size_t thread, const net::Datagram& datagram) {
  ServerEndpoint* owner = siblings_[thread];
  ++stats_.forwarded_datagrams;
  auto copy = std::make_shared<ForwardedDatagram>(
      ForwardedDatagram{{datagram.data.begin(), datagram.data.end()}, datagram.remote, datagram.local});
  owner->loop_.post([owner, copy] {
    owner->on_datagram(net::Datagram{copy->bytes, copy->remote, copy->local}, true);
    // Posted work runs outside the loop's socket handler, so the answer needs a flush of its own.
    owner->flush_pending();
  });
}

void ServerEndpoint::on_datagram(const net::Datagram& datagram, bool forwarded) {
  ++stats_.received_datagrams;
  ngtcp2_version_cid vc;
  int rv = ngtcp2_pkt_decode_version_cid(&vc, datagram.data.data(), datagram.data.size(), kScidLength);
  if (rv == NGTCP2_ERR_VERSION_NEGOTIATION) {
    send_version_negotiation(datagram, vc);
    return;
  }
  if (rv != 0) {
    ++stats_.dropped_datagrams;
    return;
  }
  if (auto it = by_cid_.find(key_of(vc.dcid, vc.dcidlen)); it != by_cid_.end()) {
    ngtcp2_path path{{const_cast<ngtcp2_sockaddr*>(datagram.local.sockaddr_ptr()), datagram.local.length},
                     {const_cast<ngtcp2_sockaddr*>(datagram.remote.sockaddr_ptr()), datagram.remote.length},
                     nullptr};
    it->second->on_datagram(path, datagram.data, loop_.now());
    return;
  }
  if (vc.version == 0) {
    // A connection of another thread: the kernel spreads peers over the threads' sockets by address
    // and port, so its client's address changed (a NAT rebinding, a migration).
    if (!forwarded && config_.threads > 1 && vc.dcidlen == kScidLength && vc.dcid[0] < siblings_.size() &&
        vc.dcid[0] != config_.thread) {
      forward(vc.dcid[0], datagram);
      return;
    }
    // A short-header packet for a connection we do not know (we restarted, or it is long gone).
    send_stateless_reset(datagram, vc);
    return;
  }
  ngtcp2_pkt_hd header;
  if (ngtcp2_accept(&header, datagram.data.data(), datagram.data.size()) != 0) {
    ++stats_.dropped_datagrams;
    return;
  }
  if (!accepting_) {
    refuse(datagram, header, Admission::Verdict::Full);
    return;
  }
  const bool retry_token = header.token.len != 0 && header.token.base[0] == NGTCP2_CRYPTO_TOKEN_MAGIC_RETRY;
  if (!retry_token) {
    // Refused before any Retry, so a client we cannot take does not pay a round trip to learn it.
    if (Admission::Verdict verdict = admission_->check(datagram.remote); verdict != Admission::Verdict::Admitted) {
      refuse(datagram, header, verdict);
      return;
    }
    // Without a token, or with one that is not ours (we issue no NEW_TOKEN tokens): unvalidated.
    if (admission_->handshakes_in_progress() >= config_.retry_threshold) {
      send_retry(datagram, header);
      return;
    }
    accept(datagram, header, nullptr, false);
    return;
  }
  ngtcp2_cid original_dcid;
  if (ngtcp2_crypto_verify_retry_token(&original_dcid, header.token.base, header.token.len,
                                       config_.static_secret.data(), config_.static_secret.size(), header.version,
                                       datagram.remote.sockaddr_ptr(), datagram.remote.length, &header.dcid,
                                       kRetryTokenLifetime, loop_.now()) != 0) {
    ++stats_.invalid_tokens;
    send_close(datagram, header, NGTCP2_INVALID_TOKEN);
    return;
  }
  // A client's Initial retransmitted before it saw our Retry, at a moment we were under the
  // threshold, made a connection under its original DCID that the client has now abandoned for this
  // one. Left alone it would hold a handshake slot and a per-address slot until its handshake timed
  // out, so it goes before the limits are asked: at a per-address limit of N, N clients arriving at
  // once would otherwise see some of their own half-made connections refuse them. Only this client
  // can hold a token for that DCID from this address.
  if (auto it = by_cid_.find(key_of(original_dcid)); it != by_cid_.end()) {
    Connection& abandoned = *it->second;
    if (!abandoned.handshake_completed() && same_host(abandoned.remote_address(), datagram.remote)) {
      ++stats_.abandoned_before_retry;
      // The client has keys for neither this connection's Initial packets nor a close: nothing to send.
      abandoned.abandon("the client restarted its handshake after our Retry");
    }
  }
  accept(datagram, header, &original_dcid, true);
}

void ServerEndpoint::accept(const net::Datagram& datagram, const ngtcp2_pkt_hd& header,
                            const ngtcp2_cid* original_dcid, bool validated) {
  if (Admission::Verdict verdict = admission_->admit(datagram.remote); verdict != Admission::Verdict::Admitted) {
    // A client back with a Retry token is asked here first; anyone else, again, since another
    // thread's endpoint may have taken the last place since on_datagram checked.
    refuse(datagram, header, verdict);
    return;
  }
  auto session = tls_.new_session();
  if (!session) {
    admission_->release(datagram.remote);
    spdlog::error("quic: {}", session.error().message);
    return;
  }
  ngtcp2_cid scid;
  scid.datalen = kScidLength;
  new_connection_id(scid.data, scid.datalen);
  std::array<std::uint8_t, NGTCP2_STATELESS_RESET_TOKENLEN> token{};
  stateless_reset_token(token.data(), scid);
  auto connection = Connection::create_server(*this, config_.transport, *session, header, original_dcid, scid, token,
                                              datagram.local, datagram.remote, validated, loop_.now());
  if (!connection) {  // the half-made connection already released the session
    admission_->release(datagram.remote);
    ++stats_.dropped_datagrams;
    return;
  }
  Connection* raw = connection.get();
  ConnectionHandler* handler = acceptor_(*raw);
  if (handler == nullptr) {
    admission_->release(datagram.remote);
    ++stats_.refused;
    send_close(datagram, header, NGTCP2_CONNECTION_REFUSED);
    return;
  }
  raw->set_handler(handler);
  connections_.emplace(raw, std::move(connection));
  admission_->handshake_started();
  ++stats_.accepted;
  // The client keeps addressing its Initial packets to the DCID it chose until it hears from us.
  on_connection_id_issued(*raw, header.dcid);
  on_connection_id_issued(*raw, scid);
  raw->on_datagram(ngtcp2_path{{const_cast<ngtcp2_sockaddr*>(datagram.local.sockaddr_ptr()), datagram.local.length},
                               {const_cast<ngtcp2_sockaddr*>(datagram.remote.sockaddr_ptr()), datagram.remote.length},
                               nullptr},
                   datagram.data, loop_.now());
}

void ServerEndpoint::refuse(const net::Datagram& datagram, const ngtcp2_pkt_hd& header, Admission::Verdict why) {
  ++stats_.refused;
  if (why == Admission::Verdict::AddressFull) {
    ++stats_.refused_per_address;
    spdlog::debug("quic: refusing {}: {} connections from that address already", datagram.remote.to_string(),
                  admission_->from_address(datagram.remote));
  }
  send_close(datagram, header, NGTCP2_CONNECTION_REFUSED);
}

void ServerEndpoint::send_retry(const net::Datagram& datagram, const ngtcp2_pkt_hd& header) {
  ngtcp2_cid retry_scid;
  retry_scid.datalen = kScidLength;
  gnutls_rnd(GNUTLS_RND_RANDOM, retry_scid.data, retry_scid.datalen);
  std::array<std::uint8_t, NGTCP2_CRYPTO_MAX_RETRY_TOKENLEN> token{};
  ngtcp2_ssize token_length = ngtcp2_crypto_generate_retry_token(
      token.data(), config_.static_secret.data(), config_.static_secret.size(), header.version,
      datagram.remote.sockaddr_ptr(), datagram.remote.length, &retry_scid, &header.dcid, loop_.now());
  if (token_length < 0) return;
  std::array<std::uint8_t, 256> packet{};
  ngtcp2_ssize n = ngtcp2_crypto_write_retry(packet.data(), packet.size(), header.version, &header.scid, &retry_scid,
                                             &header.dcid, token.data(), static_cast<std::size_t>(token_length));
  if (n <= 0) return;
  ++stats_.retries_sent;
  socket_.send(datagram.remote, datagram.local, {packet.data(), static_cast<std::size_t>(n)},
               static_cast<std::size_t>(n));
}

void ServerEndpoint::send_stateless_reset(const net::Datagram& datagram, const ngtcp2_version_cid& vc) {
  if (datagram.data.size() <= kMinStatelessResetLength) return;
  Timestamp now = loop_.now();
  reset_tokens_ = std::min(kResetBurst, reset_tokens_ + static_cast<double>(now - reset_tokens_at_) /
                                                            static_cast<double>(kSecond) * kResetsPerSecond);
  reset_tokens_at_ = now;
  if (reset_tokens_ < 1) return;
  reset_tokens_ -= 1;
  ngtcp2_cid dcid;
  ngtcp2_cid_init(&dcid, vc.dcid, vc.dcidlen);
  std::array<std::uint8_t, NGTCP2_STATELESS_RESET_TOKENLEN> token{};
  stateless_reset_token(token.data(), dcid);
  // One byte shorter than what triggered it, so two endpoints can never loop (RFC 9000 §10.3.3).
  std::size_t length = std::min<std::size_t>(datagram.data.size() - 1, 64);
  std::size_t random_length = length - NGTCP2_STATELESS_RESET_TOKENLEN - 1;
  std::array<std::uint8_t, 64> random{};
  gnutls_rnd(GNUTLS_RND_NONCE, random.data(), random_length);
  std::array<std::uint8_t, 64> packet{};
  ngtcp2_ssize n = ngtcp2_pkt_write_stateless_reset(packet.data(), packet.size(), token.data(), random.data(),
                                                    random_length);
  if (n <= 0) return;
  ++stats_.stateless_resets_sent;
  socket_.send(datagram.remote, datagram.local, {packet.data(), static_cast<std::size_t>(n)},
               static_cast<std::size_t>(n));
}

void ServerEndpoint::send_version_negotiation(const net::Datagram& datagram, const ngtcp2_version_cid& vc) {
  std::uint32_t versions[] = {NGTCP2_PROTO_VER_V1};
  std::array<std::uint8_t, 256> packet{};
  std::uint8_t unused = 0;
  gnutls_rnd(GNUTLS_RND_NONCE, &unused, 1);
  ngtcp2_ssize n = ngtcp2_pkt_write_version_negotiation(packet.data(), packet.size(), unused, vc.scid, vc.scidlen,
                                                        vc.dcid, vc.dcidlen, versions, 1);
  if (n <= 0) return;
  ++stats_.version_negotiations_sent;
  socket_.send(datagram.remote, datagram.local, {packet.data(), static_cast<std::size_t>(n)},
               static_cast<std::size_t>(n));
}

void ServerEndpoint::send_close(const net::Datagram& datagram, const ngtcp2_pkt_hd& header,
                                std::uint64_t error_code) {
  std::array<std::uint8_t, NGTCP2_MAX_UDP_PAYLOAD_SIZE> packet{};
  // The client's DCID doubles as our SCID: the client derives the Initial keys from it, so any other
  // value makes the close undecryptable and the client waits out its handshake timeout instead.
  ngtcp2_ssize n = ngtcp2_crypto_write_connection_close(packet.data(), packet.size(), header.version, &header.scid,
                                                        &header.dcid, error_code, nullptr, 0);
  if (n <= 0) return;
  socket_.send(datagram.remote, datagram.local, {packet.data(), static_cast<std::size_t>(n)},
               static_cast<std::size_t>(n));
}

void ServerEndpoint::send_packets(const net::Address& local, const net::Address& remote,
                                  std::span<const std::uint8_t> data, std::size_t segment_size) {
  socket_.send(remote, local, data, segment_size);
}

void ServerEndpoint::schedule_flush(Connection& connection) {
  if (connection.flush_scheduled_) return;
  connection.flush_scheduled_ = true;
  pending_flush_.push_back(&connection);
}

void ServerEndpoint::flush_pending() {
  // A flush may schedule further flushes (a handler writing in response to an ack), so swap first.
  while (!pending_flush_.empty()) {
    std::vector<Connection*> batch;
    batch.swap(pending_flush_);
    Timestamp now = loop_.now();
    for (Connection* connection : batch) {
      if (connections_.count(connection) != 0) connection->flush(now);
    }
  }
  dead_.clear();
}

void ServerEndpoint::on_connection_id_issued(Connection& connection, const ngtcp2_cid& cid) {
  CidKey key = key_of(cid);
  by_cid_[key] = &connection;
  cids_of_[&connection].push_back(key);
}

void ServerEndpoint::on_connection_id_retired(const ngtcp2_cid& cid) { by_cid_.erase(key_of(cid)); }

void ServerEndpoint::stateless_reset_token(std::uint8_t* token, const ngtcp2_cid& cid) {
  ngtcp2_crypto_generate_stateless_reset_token(token, config_.static_secret.data(), config_.static_secret.size(),
                                               &cid);
}

void ServerEndpoint::new_connection_id(std::uint8_t* data, std::size_t length) {
  Transport::new_connection_id(data, length);
  // The owner's thread, in the first byte: what a sibling reads to pass the connection's packets on.
  if (config_.threads > 1 && length > 0) data[0] = config_.thread;
}

void ServerEndpoint::on_handshake_completed(Connection&) { admission_->handshake_ended(); }

void ServerEndpoint::on_connection_dead(Connection& connection) {
  auto it = connections_.find(&connection);
  if (it == connections_.end()) return;
  if (!connection.handshake_completed()) admission_->handshake_ended();
  if (auto cids = cids_of_.find(&connection); cids != cids_of_.end()) {
    for (const CidKey& key : cids->second) {
      if (auto found = by_cid_.find(key); found != by_cid_.end() && found->second == &connection) by_cid_.erase(found);
    }
    cids_of_.erase(cids);
  }
  admission_->release(connection.remote_address());
  // Destroyed before the loop sleeps, once no frame of ours is still inside it.
  dead_.push_back(std::move(it->second));
  connections_.erase(it);
}

std::size_t ServerEndpoint::open_connection_count() const {
  std::size_t open = 0;
  for (const auto& [raw, connection] : connections_) open += connection->state() == Connection::State::Open ? 1 : 0;
  return open;
}

void ServerEndpoint::close_all(std::uint64_t app_error_code, const std::string& reason) {
  accepting_ = false;
  for (auto& [raw, connection] : connections_) connection->close(app_error_code, reason);
}

}  // namespace debra::quic
