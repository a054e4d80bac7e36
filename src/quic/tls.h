// SPDX-License-Identifier: MIT
#pragma once

#include <gnutls/gnutls.h>

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "util/result.h"

namespace debra::quic {

// TlsServerContext: the server's certificate and ALPN policy, shared by every connection's GnuTLS
// session. Owned by the server; must outlive its connections.
class TlsServerContext {
 public:
  // Loads a PEM certificate chain and key. alpn lists the protocols offered in order of preference.
  // A client offering none of them is refused; a client offering no ALPN at all is accepted (the
  // original debra clients send none) and the connection reports an empty alpn().
  // client_ca_file: PEM CAs for client certificates. When set, every handshake asks the client for a
  // certificate but completes without one, or with one that does not verify: the connection reports
  // what it got (peer_certificate()) and the application decides.
  static Result<TlsServerContext, Error> create(const std::string& cert_file, const std::string& key_file,
                                                std::vector<std::string> alpn, const std::string& client_ca_file = {});
  TlsServerContext(TlsServerContext&& other) noexcept;
  TlsServerContext& operator=(TlsServerContext&&) = delete;
  ~TlsServerContext();

  // Creates a server session using these credentials, ready for ngtcp2's GnuTLS glue.
  Result<gnutls_session_t, Error> new_session() const;

 private:
  TlsServerContext() = default;
  gnutls_certificate_credentials_t credentials_ = nullptr;
  gnutls_priority_t priority_ = nullptr;
  std::vector<std::string> alpn_;
  bool request_client_certificate_ = false;
};

// PeerCertificate: the certificate a client presented in the handshake (servers asking for one).
struct PeerCertificate {
  // der: the client's own certificate; empty if it presented none.
  std::vector<std::uint8_t> der;
  // verification_error: empty if der chains to the client CAs, is within its validity dates (as are
  // its issuers) and allows TLS client authentication; else why not, for humans.
  std::string verification_error;
};

// What the client of a completed server session proved. The handshake itself proved that the client
// holds the private key of der.
PeerCertificate verify_client_certificate(gnutls_session_t session);

// TlsClientOptions: how a client checks the server.
struct TlsClientOptions {
  // ca_file: PEM file of trusted CAs (or the server's self-signed certificate). Empty: the system's
  // trust store.
  std::string ca_file;
  // insecure: accept any certificate, as the original debra client did. For local experiments only.
  bool insecure = false;
  // server_name: the name (or IP address) the certificate must be valid for.
  std::string server_name = "localhost";
  // alpn: the protocol to offer; empty offers none (legacy mode).
  std::string alpn;
  // cert_file / key_file: PEM certificate and key to present when the server asks for one; both or
  // neither.
  std::string cert_file;
  std::string key_file;
};

// TlsClientContext: credentials and verification policy for client sessions.
class TlsClientContext {
 public:
  static Result<TlsClientContext, Error> create(TlsClientOptions options);
  TlsClientContext(TlsClientContext&& other) noexcept;
  TlsClientContext& operator=(TlsClientContext&&) = delete;
  ~TlsClientContext();

  Result<gnutls_session_t, Error> new_session() const;

 private:
  TlsClientContext() = default;
  gnutls_certificate_credentials_t credentials_ = nullptr;
  gnutls_priority_t priority_ = nullptr;
  TlsClientOptions options_;
};

// Writes a new self-signed ECDSA P-256 certificate valid for "localhost", 127.0.0.1 and ::1 (ten
// years) and its key as PEM files; the key file is created with mode 0600.
Result<void, Error> write_self_signed_certificate(const std::string& cert_file, const std::string& key_file);

}  // namespace debra::quic
