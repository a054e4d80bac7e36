// SPDX-License-Identifier: MIT
#include "quic/client_endpoint.h"

#include <gnutls/crypto.h>

namespace debra::quic {
namespace {
constexpr std::size_t kTxBufferSize = 64 * 1024;
}

Result<std::unique_ptr<ClientEndpoint>, Error> ClientEndpoint::connect(net::EventLoop& loop,
                                                                       const net::Address& server,
                                                                       const TlsClientContext& tls,
                                                                       const TransportSettings& settings,
                                                                       ConnectionHandler& handler) {
  auto socket = net::UdpSocket::connect(server);
  if (!socket) return Unexpected{socket.error()};
  auto session = tls.new_session();
  if (!session) return Unexpected{session.error()};
  std::unique_ptr<ClientEndpoint> endpoint(new ClientEndpoint(loop, std::move(*socket)));
  ClientEndpoint* raw = endpoint.get();
  // Registered first: the connection may ask for a flush as soon as it exists.
  raw->before_sleep_hook_ = loop.add_before_sleep_on_request([raw] { raw->flush_pending(); });
  endpoint->connection_ = Connection::create_client(*endpoint, settings, *session, endpoint->socket_.local_address(),
                                                    server, loop.now());
  if (!endpoint->connection_) return make_error("cannot create a QUIC connection");
  endpoint->connection_->set_handler(&handler);
  loop.add_reader(raw->socket_.fd(), [raw] {
    raw->socket_.receive([raw](const net::Datagram& datagram) {
      if (!raw->connection_) return;
      ngtcp2_path path{{const_cast<ngtcp2_sockaddr*>(datagram.local.sockaddr_ptr()), datagram.local.length},
                       {const_cast<ngtcp2_sockaddr*>(datagram.remote.sockaddr_ptr()), datagram.remote.length},
                       nullptr};
      raw->connection_->on_datagram(path, datagram.data, raw->loop_.now());
    });
  });
  raw->schedule_flush(*raw->connection_);  // the first flight: ClientHello
  return endpoint;
}

ClientEndpoint::ClientEndpoint(net::EventLoop& loop, net::UdpSocket socket)
    : loop_(loop), socket_(std::move(socket)) {}

std::span<std::uint8_t> ClientEndpoint::tx_buffer() {
  // Shared by every client endpoint of the thread: a connection fills and sends it within one
  // flush, and one thread may run thousands of endpoints (`debra bench connections`).
  thread_local std::vector<std::uint8_t> buffer(kTxBufferSize);
  return buffer;
}

ClientEndpoint::~ClientEndpoint() {
  loop_.remove_reader(socket_.fd());
  if (before_sleep_hook_ != 0) loop_.remove_before_sleep(before_sleep_hook_);
  if (connection_) connection_->set_handler(nullptr);
}

void ClientEndpoint::send_packets(const net::Address& local, const net::Address& remote,
                                  std::span<const std::uint8_t> data, std::size_t segment_size) {
  socket_.send(remote, local, data, segment_size);
}

void ClientEndpoint::schedule_flush(Connection&) {
  if (flush_pending_) return;
  flush_pending_ = true;
  loop_.request_before_sleep(before_sleep_hook_);
}

void ClientEndpoint::flush_pending() {
  while (flush_pending_) {
    flush_pending_ = false;
    if (connection_) connection_->flush(loop_.now());
  }
  dead_.reset();
}

void ClientEndpoint::stateless_reset_token(std::uint8_t* token, const ngtcp2_cid&) {
  // A client's reset tokens only matter if it hands out extra CIDs to a server that loses state
  // about it, which cannot happen for a server; random tokens are fine.
  gnutls_rnd(GNUTLS_RND_RANDOM, token, NGTCP2_STATELESS_RESET_TOKENLEN);
}

void ClientEndpoint::on_connection_dead(Connection& connection) {
  if (connection_.get() == &connection) dead_ = std::move(connection_);
}

}  // namespace debra::quic
