// SPDX-License-Identifier: MIT
#include "quic/tls.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <gnutls/crypto.h>
#include <gnutls/x509.h>
#include <ngtcp2/ngtcp2_crypto_gnutls.h>
#include <unistd.h>

#include <array>
#include <cerrno>
#include <cstring>
#include <ctime>
#include <fstream>

namespace debra::quic {
namespace {

// TLS 1.3 only, the AEADs QUIC defines, and no middlebox compatibility mode (RFC 9001 §8.4 forbids
// it; rustls-based peers refuse it).
constexpr const char* kPriority =
    "NORMAL:-VERS-ALL:+VERS-TLS1.3:-CIPHER-ALL:+AES-128-GCM:+AES-256-GCM:+CHACHA20-POLY1305:+AES-128-CCM:"
    "-GROUP-ALL:+GROUP-X25519:+GROUP-SECP256R1:+GROUP-SECP384R1:%DISABLE_TLS13_COMPAT_MODE";

std::string gnutls_text(const char* what, int rv) { return std::string(what) + ": " + gnutls_strerror(rv); }

// Parsed once per context, not per session: gnutls_priority_set_direct builds a priority cache for
// every session it is called on, about 8 KiB of each idle connection's memory (docs/benchmarks.md).
Result<gnutls_priority_t, Error> parse_priority() {
  gnutls_priority_t priority = nullptr;
  const char* err_pos = nullptr;
  if (int rv = gnutls_priority_init(&priority, kPriority, &err_pos); rv != 0) {
    return make_error(gnutls_text("TLS priority string", rv));
  }
  return priority;
}

bool is_ip_address(const std::string& name) {
  std::array<unsigned char, sizeof(in6_addr)> buf{};
  return inet_pton(AF_INET, name.c_str(), buf.data()) == 1 || inet_pton(AF_INET6, name.c_str(), buf.data()) == 1;
}

}  // namespace

Result<TlsServerContext, Error> TlsServerContext::create(const std::string& cert_file, const std::string& key_file,
                                                         std::vector<std::string> alpn,
                                                         const std::string& client_ca_file) {
  TlsServerContext ctx;
  auto priority = parse_priority();
  if (!priority) return Unexpected{priority.error()};
  ctx.priority_ = *priority;
  if (int rv = gnutls_certificate_allocate_credentials(&ctx.credentials_); rv != 0) {
    return make_error(gnutls_text("allocate credentials", rv));
  }
  if (int rv = gnutls_certificate_set_x509_key_file(ctx.credentials_, cert_file.c_str(), key_file.c_str(),
                                                    GNUTLS_X509_FMT_PEM);
      rv != 0) {
    return make_error("loading certificate " + cert_file + " / key " + key_file + ": " + gnutls_strerror(rv));
  }
  if (!client_ca_file.empty()) {
    if (access(client_ca_file.c_str(), R_OK) != 0) {
      return make_error("client CA file " + client_ca_file + ": " + std::strerror(errno));
    }
    int loaded = gnutls_certificate_set_x509_trust_file(ctx.credentials_, client_ca_file.c_str(), GNUTLS_X509_FMT_PEM);
    if (loaded <= 0) {
      return make_error("client CA file " + client_ca_file + ": " +
                        (loaded == 0 ? std::string("no PEM certificate in it") : gnutls_strerror(loaded)));
    }
    ctx.request_client_certificate_ = true;
  }
  ctx.alpn_ = std::move(alpn);
  return ctx;
}

TlsServerContext::TlsServerContext(TlsServerContext&& other) noexcept
    : credentials_(other.credentials_), priority_(other.priority_), alpn_(std::move(other.alpn_)),
      request_client_certificate_(other.request_client_certificate_) {
  other.credentials_ = nullptr;
  other.priority_ = nullptr;
}

TlsServerContext::~TlsServerContext() {
  if (credentials_ != nullptr) gnutls_certificate_free_credentials(credentials_);
  if (priority_ != nullptr) gnutls_priority_deinit(priority_);
}

Result<gnutls_session_t, Error> TlsServerContext::new_session() const {
  gnutls_session_t session = nullptr;
  if (int rv = gnutls_init(&session, GNUTLS_SERVER | GNUTLS_NO_AUTO_SEND_TICKET); rv != 0) {
    return make_error(gnutls_text("gnutls_init", rv));
  }
  int rv = gnutls_priority_set(session, priority_);
  if (rv == 0) rv = ngtcp2_crypto_gnutls_configure_server_session(session);
  if (rv == 0) rv = gnutls_credentials_set(session, GNUTLS_CRD_CERTIFICATE, credentials_);
  if (rv == 0 && !alpn_.empty()) {
    std::vector<gnutls_datum_t> protocols;
    for (const auto& name : alpn_) {
      protocols.push_back({reinterpret_cast<unsigned char*>(const_cast<char*>(name.data())),
                           static_cast<unsigned>(name.size())});
    }
    // MANDATORY refuses a client that offers only other protocols, yet lets a client that offers no
    // ALPN at all through (measured: docs/architecture.md), which is what legacy clients need.
    rv = gnutls_alpn_set_protocols(session, protocols.data(), static_cast<unsigned>(protocols.size()),
                                   GNUTLS_ALPN_MANDATORY | GNUTLS_ALPN_SERVER_PRECEDENCE);
  }
  if (rv != 0) {
    gnutls_deinit(session);
    return make_error(gnutls_text("server session set-up", rv));
  }
  if (request_client_certificate_) {
    // REQUEST, not REQUIRE: a client without a certificate completes the handshake and hears why it
    // is refused from the application, not as a bare TLS alert. Not naming the trusted CAs makes a
    // client with a certificate from another CA present it anyway, so it hears that reason too.
    gnutls_certificate_server_set_request(session, GNUTLS_CERT_REQUEST);
    gnutls_certificate_send_x509_rdn_sequence(session, 1);
  }
  return session;
}

PeerCertificate verify_client_certificate(gnutls_session_t session) {
  PeerCertificate peer;
  unsigned count = 0;
  const gnutls_datum_t* chain = gnutls_certificate_get_peers(session, &count);
  if (chain == nullptr || count == 0) return peer;
  peer.der.assign(chain[0].data, chain[0].data + chain[0].size);
  gnutls_typed_vdata_st purpose{GNUTLS_DT_KEY_PURPOSE_OID,
                                reinterpret_cast<unsigned char*>(const_cast<char*>(GNUTLS_KP_TLS_WWW_CLIENT)), 0};
  unsigned status = 0;
  if (int rv = gnutls_certificate_verify_peers(session, &purpose, 1, &status); rv != 0) {
    peer.verification_error = gnutls_strerror(rv);
  } else if (status != 0) {
    gnutls_datum_t text{};
    peer.verification_error = gnutls_certificate_verification_status_print(status, GNUTLS_CRT_X509, &text, 0) == 0
                                  ? std::string(reinterpret_cast<const char*>(text.data), text.size)
                                  : "status " + std::to_string(status);
    gnutls_free(text.data);
    while (!peer.verification_error.empty() && peer.verification_error.back() == ' ') peer.verification_error.pop_back();
  }
  return peer;
}

Result<TlsClientContext, Error> TlsClientContext::create(TlsClientOptions options) {
  TlsClientContext ctx;
  auto priority = parse_priority();
  if (!priority) return Unexpected{priority.error()};
  ctx.priority_ = *priority;
  if (int rv = gnutls_certificate_allocate_credentials(&ctx.credentials_); rv != 0) {
    return make_error(gnutls_text("allocate credentials", rv));
  }
  if (options.cert_file.empty() != options.key_file.empty()) {
    return make_error("a client certificate needs both its certificate and its key file");
  }
  if (!options.cert_file.empty()) {
    if (int rv = gnutls_certificate_set_x509_key_file(ctx.credentials_, options.cert_file.c_str(),
                                                      options.key_file.c_str(), GNUTLS_X509_FMT_PEM);
        rv != 0) {
      return make_error("loading client certificate " + options.cert_file + " / key " + options.key_file + ": " +
                        gnutls_strerror(rv));
    }
  }
  if (!options.insecure) {
    int rv = options.ca_file.empty()
                 ? gnutls_certificate_set_x509_system_trust(ctx.credentials_)
                 : gnutls_certificate_set_x509_trust_file(ctx.credentials_, options.ca_file.c_str(),
                                                          GNUTLS_X509_FMT_PEM);
    if (rv <= 0) {
      return make_error(options.ca_file.empty()
                            ? std::string("no system trust store could be loaded; pass --ca FILE")
                            : "loading CA file " + options.ca_file + ": " +
                                  (rv == 0 ? std::string("no certificate in it") : gnutls_strerror(rv)));
    }
  }
  ctx.options_ = std::move(options);
  return ctx;
}

TlsClientContext::TlsClientContext(TlsClientContext&& other) noexcept
    : credentials_(other.credentials_), priority_(other.priority_), options_(std::move(other.options_)) {
  other.credentials_ = nullptr;
  other.priority_ = nullptr;
}

TlsClientContext::~TlsClientContext() {
  if (credentials_ != nullptr) gnutls_certificate_free_credentials(credentials_);
  if (priority_ != nullptr) gnutls_priority_deinit(priority_);
}

Result<gnutls_session_t, Error> TlsClientContext::new_session() const {
  gnutls_session_t session = nullptr;
  // One key share, X25519's (the first group): GnuTLS would also make a P-256 one, about a tenth of a
  // client's handshake CPU, that every debra router ignores. A server without X25519 costs one
  // HelloRetryRequest round trip.
  if (int rv = gnutls_init(&session, GNUTLS_CLIENT | GNUTLS_KEY_SHARE_TOP); rv != 0) {
    return make_error(gnutls_text("gnutls_init", rv));
  }
  int rv = gnutls_priority_set(session, priority_);
  if (rv == 0) rv = ngtcp2_crypto_gnutls_configure_client_session(session);
  if (rv == 0) rv = gnutls_credentials_set(session, GNUTLS_CRD_CERTIFICATE, credentials_);
  if (rv == 0 && !options_.alpn.empty()) {
    gnutls_datum_t protocol{reinterpret_cast<unsigned char*>(const_cast<char*>(options_.alpn.data())),
                            static_cast<unsigned>(options_.alpn.size())};
    rv = gnutls_alpn_set_protocols(session, &protocol, 1, 0);
  }
  if (rv == 0 && !is_ip_address(options_.server_name)) {
    rv = gnutls_server_name_set(session, GNUTLS_NAME_DNS, options_.server_name.data(), options_.server_name.size());
  }
  if (rv != 0) {
    gnutls_deinit(session);
    return make_error(gnutls_text("client session set-up", rv));
  }
  if (!options_.insecure) gnutls_session_set_verify_cert(session, options_.server_name.c_str(), 0);
  return session;
}

Result<void, Error> write_self_signed_certificate(const std::string& cert_file, const std::string& key_file) {
  gnutls_x509_privkey_t key = nullptr;
  gnutls_x509_crt_t crt = nullptr;
  gnutls_datum_t key_pem{};
  gnutls_datum_t crt_pem{};
  auto cleanup = [&] {
    gnutls_free(key_pem.data);
    gnutls_free(crt_pem.data);
    if (crt != nullptr) gnutls_x509_crt_deinit(crt);
    if (key != nullptr) gnutls_x509_privkey_deinit(key);
  };
  int rv = gnutls_x509_privkey_init(&key);
  if (rv == 0) rv = gnutls_x509_privkey_generate(key, GNUTLS_PK_ECDSA, GNUTLS_CURVE_TO_BITS(GNUTLS_ECC_CURVE_SECP256R1), 0);
  if (rv == 0) rv = gnutls_x509_crt_init(&crt);
  if (rv == 0) rv = gnutls_x509_crt_set_version(crt, 3);
  std::array<unsigned char, 16> serial{};
  if (rv == 0) rv = gnutls_rnd(GNUTLS_RND_NONCE, serial.data(), serial.size());
  serial[0] &= 0x7f;  // a positive integer
  if (rv == 0) rv = gnutls_x509_crt_set_serial(crt, serial.data(), serial.size());
  time_t now = time(nullptr);
  if (rv == 0) rv = gnutls_x509_crt_set_activation_time(crt, now - 3600);
  if (rv == 0) rv = gnutls_x509_crt_set_expiration_time(crt, now + 10L * 365 * 24 * 3600);
  const char cn[] = "localhost";
  if (rv == 0) rv = gnutls_x509_crt_set_dn_by_oid(crt, GNUTLS_OID_X520_COMMON_NAME, 0, cn, sizeof cn - 1);
  if (rv == 0) rv = gnutls_x509_crt_set_subject_alt_name(crt, GNUTLS_SAN_DNSNAME, cn, sizeof cn - 1, GNUTLS_FSAN_SET);
  std::array<unsigned char, 4> v4{127, 0, 0, 1};
  std::array<unsigned char, 16> v6{};
  v6[15] = 1;
  if (rv == 0) rv = gnutls_x509_crt_set_subject_alt_name(crt, GNUTLS_SAN_IPADDRESS, v4.data(), v4.size(), GNUTLS_FSAN_APPEND);
  if (rv == 0) rv = gnutls_x509_crt_set_subject_alt_name(crt, GNUTLS_SAN_IPADDRESS, v6.data(), v6.size(), GNUTLS_FSAN_APPEND);
  // CA:TRUE lets clients pass this very certificate as their --ca trust anchor.
  if (rv == 0) rv = gnutls_x509_crt_set_basic_constraints(crt, 1, -1);
  if (rv == 0) rv = gnutls_x509_crt_set_key_usage(crt, GNUTLS_KEY_DIGITAL_SIGNATURE | GNUTLS_KEY_KEY_CERT_SIGN);
  if (rv == 0) rv = gnutls_x509_crt_set_key_purpose_oid(crt, GNUTLS_KP_TLS_WWW_SERVER, 0);
  if (rv == 0) rv = gnutls_x509_crt_set_key(crt, key);
  if (rv == 0) rv = gnutls_x509_crt_sign2(crt, crt, key, GNUTLS_DIG_SHA256, 0);
  if (rv == 0) rv = gnutls_x509_privkey_export2_pkcs8(key, GNUTLS_X509_FMT_PEM, nullptr, GNUTLS_PKCS_PLAIN, &key_pem);
  if (rv == 0) rv = gnutls_x509_crt_export2(crt, GNUTLS_X509_FMT_PEM, &crt_pem);
  if (rv != 0) {
    cleanup();
    return make_error(gnutls_text("generating a self-signed certificate", rv));
  }
  int fd = open(key_file.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  bool ok = fd >= 0 && write(fd, key_pem.data, key_pem.size) == static_cast<ssize_t>(key_pem.size);
  if (fd >= 0) close(fd);
  std::ofstream cert_out(cert_file, std::ios::binary | std::ios::trunc);
  cert_out.write(reinterpret_cast<const char*>(crt_pem.data), static_cast<std::streamsize>(crt_pem.size));
  ok = ok && static_cast<bool>(cert_out);
  cleanup();
  if (!ok) return make_error("writing " + cert_file + " / " + key_file + " failed");
  return {};
}

}  // namespace debra::quic
