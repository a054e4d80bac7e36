// SPDX-License-Identifier: MIT
//
// SessionConnection: what a Session needs of its connection, and nothing else: the ALPN, the peer's
// address and certificate, writing and closing streams, holding back credit. The router runs every Session over a quic::Connection
// (QuicSessionConnection); fuzz/session_registration.cc runs them over an in-memory one, so the bytes
// a client sends can be driven through the real registration path without a handshake.
#pragma once

#include <cstdint>
#include <span>
#include <string>

#include "net/address.h"
#include "quic/connection.h"
#include "util/result.h"

namespace debra::server {

class SessionConnection {
 public:
  virtual ~SessionConnection() = default;
  // The negotiated ALPN, empty for a client that offered none (legacy).
  virtual const std::string& alpn() const = 0;
  virtual const net::Address& remote_address() const = 0;
  virtual Result<quic::StreamId, Error> open_uni_stream() = 0;
  // As quic::Connection::write: the stream offset just past bytes, or 0 if the stream is gone.
  virtual std::uint64_t write(quic::StreamId id, std::span<const std::uint8_t> bytes) = 0;
  virtual std::uint64_t acknowledged_offset(quic::StreamId id) const = 0;
  virtual std::uint64_t queued_bytes() const = 0;
  // As quic::Connection::close: after the queued data, with an application error code.
  virtual void close(std::uint64_t app_error_code, std::string reason) = 0;
  // --auth mtls: the client's certificate as the handshake verified it.
  virtual const quic::PeerCertificate& peer_certificate() const = 0;
  // As quic::Connection: flow-control credit a rate-limited legacy sender does not get back yet.
  virtual void hold_credit(std::uint64_t bytes) = 0;
  virtual void release_credit(quic::StreamId id, std::uint64_t bytes) = 0;
};

// QuicSessionConnection: a SessionConnection that is a quic::Connection.
class QuicSessionConnection final : public SessionConnection {
 public:
  explicit QuicSessionConnection(quic::Connection& connection) : connection_(connection) {}
  const std::string& alpn() const override { return connection_.alpn(); }
  const net::Address& remote_address() const override { return connection_.remote_address(); }
  Result<quic::StreamId, Error> open_uni_stream() override { return connection_.open_uni_stream(); }
  std::uint64_t write(quic::StreamId id, std::span<const std::uint8_t> bytes) override {
    return connection_.write(id, bytes);
  }
  std::uint64_t acknowledged_offset(quic::StreamId id) const override { return connection_.acknowledged_offset(id); }
  std::uint64_t queued_bytes() const override { return connection_.queued_bytes(); }
  void close(std::uint64_t app_error_code, std::string reason) override {
    connection_.close(app_error_code, std::move(reason));
  }
  const quic::PeerCertificate& peer_certificate() const override { return connection_.peer_certificate(); }
  void hold_credit(std::uint64_t bytes) override { connection_.hold_credit(bytes); }
  void release_credit(quic::StreamId id, std::uint64_t bytes) override { connection_.release_credit(id, bytes); }

 private:
  quic::Connection& connection_;
};

}  // namespace debra::server
