// SPDX-License-Identifier: MIT
#include "auth/certificate.h"

#include <fcntl.h>
#include <gnutls/crypto.h>
#include <gnutls/gnutls.h>
#include <gnutls/x509-ext.h>
#include <gnutls/x509.h>
#include <sys/stat.h>
#include <unistd.h>

#include <array>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <memory>
#include <optional>
#include <sstream>

namespace debra::auth {
namespace {

using Certificate = std::unique_ptr<std::remove_pointer_t<gnutls_x509_crt_t>, decltype(&gnutls_x509_crt_deinit)>;
using PrivateKey = std::unique_ptr<std::remove_pointer_t<gnutls_x509_privkey_t>, decltype(&gnutls_x509_privkey_deinit)>;

std::string gnutls_text(const std::string& what, int rv) { return what + ": " + gnutls_strerror(rv); }

gnutls_datum_t datum(std::string_view text) {
  return {reinterpret_cast<unsigned char*>(const_cast<char*>(text.data())), static_cast<unsigned>(text.size())};
}

Result<Certificate, Error> import_certificate(const gnutls_datum_t& data, gnutls_x509_crt_fmt_t format) {
  gnutls_x509_crt_t raw = nullptr;
  int rv = gnutls_x509_crt_init(&raw);
  Certificate crt(raw, &gnutls_x509_crt_deinit);
  if (rv == 0) rv = gnutls_x509_crt_import(crt.get(), &data, format);
  if (rv != 0) return make_error(gnutls_text("reading a certificate", rv));
  return crt;
}

Result<PrivateKey, Error> new_key(const PemCredentials* import_from) {
  gnutls_x509_privkey_t raw = nullptr;
  int rv = gnutls_x509_privkey_init(&raw);
  PrivateKey key(raw, &gnutls_x509_privkey_deinit);
  if (rv == 0 && import_from != nullptr) {
    auto pem = datum(import_from->key);
    rv = gnutls_x509_privkey_import2(key.get(), &pem, GNUTLS_X509_FMT_PEM, nullptr, 0);
  } else if (rv == 0) {
    rv = gnutls_x509_privkey_generate(key.get(), GNUTLS_PK_ECDSA, GNUTLS_CURVE_TO_BITS(GNUTLS_ECC_CURVE_SECP256R1), 0);
  }
  if (rv != 0) return make_error(gnutls_text(import_from != nullptr ? "reading a private key" : "generating a key", rv));
  return key;
}

// What every certificate minted here has: version 3, a random serial, the validity, a subject CN and
// the subject key's identifier.
int fill_common(gnutls_x509_crt_t crt, gnutls_x509_privkey_t key, const std::string& common_name, Validity validity) {
  int rv = gnutls_x509_crt_set_version(crt, 3);
  std::array<unsigned char, 16> serial{};
  if (rv == 0) rv = gnutls_rnd(GNUTLS_RND_NONCE, serial.data(), serial.size());
  serial[0] &= 0x7f;  // a positive integer
  if (rv == 0) rv = gnutls_x509_crt_set_serial(crt, serial.data(), serial.size());
  if (rv == 0) rv = gnutls_x509_crt_set_activation_time(crt, static_cast<time_t>(validity.not_before));
  if (rv == 0) rv = gnutls_x509_crt_set_expiration_time(crt, static_cast<time_t>(validity.not_after));
  if (rv == 0) {
    rv = gnutls_x509_crt_set_dn_by_oid(crt, GNUTLS_OID_X520_COMMON_NAME, 0, common_name.data(),
                                       static_cast<unsigned>(common_name.size()));
  }
  if (rv == 0) rv = gnutls_x509_crt_set_key(crt, key);
  std::array<unsigned char, 64> key_id{};
  std::size_t key_id_size = key_id.size();
  if (rv == 0) rv = gnutls_x509_crt_get_key_id(crt, GNUTLS_KEYID_USE_SHA1, key_id.data(), &key_id_size);
  if (rv == 0) rv = gnutls_x509_crt_set_subject_key_id(crt, key_id.data(), key_id_size);
  return rv;
}

Result<PemCredentials, Error> export_pem(gnutls_x509_crt_t crt, gnutls_x509_privkey_t key) {
  gnutls_datum_t crt_pem{};
  gnutls_datum_t key_pem{};
  int rv = gnutls_x509_crt_export2(crt, GNUTLS_X509_FMT_PEM, &crt_pem);
  if (rv == 0) rv = gnutls_x509_privkey_export2_pkcs8(key, GNUTLS_X509_FMT_PEM, nullptr, GNUTLS_PKCS_PLAIN, &key_pem);
  PemCredentials out;
  if (rv == 0) {
    out.certificate.assign(reinterpret_cast<const char*>(crt_pem.data), crt_pem.size);
    out.key.assign(reinterpret_cast<const char*>(key_pem.data), key_pem.size);
  }
  gnutls_free(crt_pem.data);
  gnutls_free(key_pem.data);
  if (rv != 0) return make_error(gnutls_text("exporting the certificate", rv));
  return out;
}

Result<std::string, Error> read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream content;
  if (!in || !(content << in.rdbuf())) return make_error(path + ": " + std::strerror(errno));
  return content.str();
}

Result<void, Error> write_file(const std::string& path, std::string_view content, mode_t mode, bool overwrite) {
  int fd = open(path.c_str(), O_WRONLY | O_CREAT | O_CLOEXEC | (overwrite ? O_TRUNC : O_EXCL), mode);
  if (fd < 0) return make_error(path + ": " + std::strerror(errno));
  // An overwritten file keeps its old mode unless told otherwise.
  bool ok = fchmod(fd, mode) == 0 &&
            write(fd, content.data(), content.size()) == static_cast<ssize_t>(content.size()) && fsync(fd) == 0;
  close(fd);
  if (!ok) return make_error(path + ": write failed");
  return {};
}

// For messages and logs: a certificate's text with anything but printable ASCII as '?'.
std::string printable(std::string_view text) {
  std::string out(text);
  for (char& c : out) {
    auto byte = static_cast<unsigned char>(c);
    if (byte < 0x20 || byte > 0x7e) c = '?';
  }
  return out;
}

}  // namespace

Validity valid_for_days(std::int64_t days, std::int64_t now) { return {now - 3600, now + days * 24 * 3600}; }

Result<PemCredentials, Error> mint_client_ca(Validity validity) {
  auto key = new_key(nullptr);
  if (!key) return Unexpected{key.error()};
  gnutls_x509_crt_t raw = nullptr;
  int rv = gnutls_x509_crt_init(&raw);
  Certificate crt(raw, &gnutls_x509_crt_deinit);
  if (rv == 0) rv = fill_common(crt.get(), key->get(), "debra client CA", validity);
  // Path length 0: it signs client certificates, never another CA.
  if (rv == 0) rv = gnutls_x509_crt_set_basic_constraints(crt.get(), 1, 0);
  if (rv == 0) rv = gnutls_x509_crt_set_key_usage(crt.get(), GNUTLS_KEY_KEY_CERT_SIGN | GNUTLS_KEY_CRL_SIGN);
  if (rv == 0) rv = gnutls_x509_crt_sign2(crt.get(), crt.get(), key->get(), GNUTLS_DIG_SHA256, 0);
  if (rv != 0) return make_error(gnutls_text("minting a client CA", rv));
  return export_pem(crt.get(), key->get());
}

Result<PemCredentials, Error> mint_client_certificate(const PemCredentials& ca, ClientId id, Validity validity) {
  if (id < 1) return make_error("a client certificate needs an id in 1..2147483647, not " + std::to_string(id));
  auto ca_crt = import_certificate(datum(ca.certificate), GNUTLS_X509_FMT_PEM);
  if (!ca_crt) return Unexpected{ca_crt.error()};
  auto ca_key = new_key(&ca);
  if (!ca_key) return Unexpected{ca_key.error()};
  auto key = new_key(nullptr);
  if (!key) return Unexpected{key.error()};
  gnutls_x509_crt_t raw = nullptr;
  int rv = gnutls_x509_crt_init(&raw);
  Certificate crt(raw, &gnutls_x509_crt_deinit);
  const std::string uri = std::string(kIdUriPrefix) + std::to_string(id);
  if (rv == 0) rv = fill_common(crt.get(), key->get(), "debra id " + std::to_string(id), validity);
  if (rv == 0) {
    rv = gnutls_x509_crt_set_subject_alt_name(crt.get(), GNUTLS_SAN_URI, uri.data(), static_cast<unsigned>(uri.size()),
                                              GNUTLS_FSAN_SET);
  }
  if (rv == 0) rv = gnutls_x509_crt_set_basic_constraints(crt.get(), 0, -1);
  if (rv == 0) rv = gnutls_x509_crt_set_key_usage(crt.get(), GNUTLS_KEY_DIGITAL_SIGNATURE);
  if (rv == 0) rv = gnutls_x509_crt_set_key_purpose_oid(crt.get(), GNUTLS_KP_TLS_WWW_CLIENT, 0);
  std::array<unsigned char, 64> ca_key_id{};
  std::size_t ca_key_id_size = ca_key_id.size();
  unsigned critical = 0;
  if (rv == 0 &&
      gnutls_x509_crt_get_subject_key_id(ca_crt->get(), ca_key_id.data(), &ca_key_id_size, &critical) == 0) {
    rv = gnutls_x509_crt_set_authority_key_id(crt.get(), ca_key_id.data(), ca_key_id_size);
  }
  if (rv == 0) rv = gnutls_x509_crt_sign2(crt.get(), ca_crt->get(), ca_key->get(), GNUTLS_DIG_SHA256, 0);
  if (rv != 0) return make_error(gnutls_text("minting a client certificate", rv));
  return export_pem(crt.get(), key->get());
}

Result<ClientId, Error> client_id_from_uris(const std::vector<std::string_view>& uris) {
  std::optional<ClientId> found;
  for (std::string_view uri : uris) {
    if (uri.substr(0, kIdUriPrefix.size()) != kIdUriPrefix) continue;
    if (found) return make_error("the client certificate names more than one id (two " + std::string(kIdUriPrefix) + " URIs)");
    found = parse_client_id(uri.substr(kIdUriPrefix.size()));
    if (!found) return make_error("the client certificate's " + printable(uri.substr(0, 40)) + " is not an id in 1..2147483647");
  }
  if (!found) {
    return make_error("the client certificate names no id (it needs a subjectAltName URI " + std::string(kIdUriPrefix) +
                      "N)");
  }
  return *found;
}

Result<ClientId, Error> certificate_client_id(std::span<const std::uint8_t> der) {
  gnutls_datum_t data{const_cast<unsigned char*>(der.data()), static_cast<unsigned>(der.size())};
  auto crt = import_certificate(data, GNUTLS_X509_FMT_DER);
  if (!crt) return Unexpected{crt.error()};
  gnutls_datum_t extension{};
  unsigned critical = 0;
  int rv = gnutls_x509_crt_get_extension_by_oid2(crt->get(), GNUTLS_X509EXT_OID_SAN, 0, &extension, &critical);
  if (rv == GNUTLS_E_REQUESTED_DATA_NOT_AVAILABLE) return client_id_from_uris({});
  if (rv != 0) return make_error(gnutls_text("reading the certificate's subjectAltName", rv));
  gnutls_subject_alt_names_t names = nullptr;
  rv = gnutls_subject_alt_names_init(&names);
  if (rv == 0) rv = gnutls_x509_ext_import_subject_alt_names(&extension, names, 0);
  gnutls_free(extension.data);
  std::vector<std::string> uris;
  for (unsigned i = 0; rv == 0; ++i) {
    unsigned type = 0;
    gnutls_datum_t name{};
    int got = gnutls_subject_alt_names_get(names, i, &type, &name, nullptr);
    if (got == GNUTLS_E_REQUESTED_DATA_NOT_AVAILABLE) break;
    rv = got;
    if (rv == 0 && type == GNUTLS_SAN_URI) uris.emplace_back(reinterpret_cast<const char*>(name.data), name.size);
  }
  if (names != nullptr) gnutls_subject_alt_names_deinit(names);
  if (rv != 0) return make_error(gnutls_text("reading the certificate's subjectAltName", rv));
  return client_id_from_uris(std::vector<std::string_view>(uris.begin(), uris.end()));
}

Result<std::vector<std::uint8_t>, Error> pem_certificate_to_der(std::string_view pem) {
  auto crt = import_certificate(datum(pem), GNUTLS_X509_FMT_PEM);
  if (!crt) return Unexpected{crt.error()};
  gnutls_datum_t der{};
  if (int rv = gnutls_x509_crt_export2(crt->get(), GNUTLS_X509_FMT_DER, &der); rv != 0) {
    return make_error(gnutls_text("exporting a certificate", rv));
  }
  std::vector<std::uint8_t> out(der.data, der.data + der.size);
  gnutls_free(der.data);
  return out;
}

Result<PemCredentials, Error> read_credentials(const std::string& cert_file, const std::string& key_file) {
  auto certificate = read_file(cert_file);
  if (!certificate) return Unexpected{certificate.error()};
  auto key = read_file(key_file);
  if (!key) return Unexpected{key.error()};
  return PemCredentials{std::move(*certificate), std::move(*key)};
}

Result<void, Error> write_credentials(const PemCredentials& credentials, const std::string& cert_file,
                                      const std::string& key_file, bool overwrite) {
  if (!overwrite) {
    for (const std::string* path : {&cert_file, &key_file}) {
      if (access(path->c_str(), F_OK) == 0) return make_error(*path + " exists; not overwriting it");
    }
  }
  if (auto written = write_file(key_file, credentials.key, 0600, overwrite); !written) return written;
  return write_file(cert_file, credentials.certificate, 0644, overwrite);
}

}  // namespace debra::auth
