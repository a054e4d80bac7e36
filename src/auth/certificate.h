// SPDX-License-Identifier: MIT
//
// Client certificates for --auth mtls (docs/security.md): a small CA that signs one certificate per
// client id, and the id a certificate names. The id lives in exactly one subjectAltName URI
//
//   debra:id:<id>
//
// with id in decimal, 1..2147483647, no sign and no leading zeros. The Subject CN ("debra id 7") is
// only for people: a CA shared with other uses may well issue CNs that happen to be numbers, a URI
// in debra's own scheme it will not.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "auth/token.h"
#include "util/result.h"

namespace debra::auth {

inline constexpr std::string_view kIdUriPrefix = "debra:id:";

// PemCredentials: a certificate and its private key, both PEM.
struct PemCredentials {
  std::string certificate;
  std::string key;
};

// Validity: the first and last second a certificate is valid, in Unix time.
struct Validity {
  std::int64_t not_before = 0;
  std::int64_t not_after = 0;
};

// From an hour before now (clocks differ) to days after now.
Validity valid_for_days(std::int64_t days, std::int64_t now = unix_now());

// A new CA for client certificates: ECDSA P-256, self-signed, CA:TRUE with path length 0, allowed to
// sign certificates only.
Result<PemCredentials, Error> mint_client_ca(Validity validity);

// A new client certificate for id, signed by ca: ECDSA P-256, the id in its debra:id: URI, CA:FALSE,
// for digital signatures and TLS client authentication only.
Result<PemCredentials, Error> mint_client_certificate(const PemCredentials& ca, ClientId id, Validity validity);

// The id a DER certificate names, or why it names none (no debra:id: URI, more than one, or one that
// is not a valid id). Says nothing about whether the certificate is to be trusted.
Result<ClientId, Error> certificate_client_id(std::span<const std::uint8_t> der);

// The rule behind certificate_client_id, over a certificate's subjectAltName URIs: exactly one
// starting with kIdUriPrefix, and it holds a valid id. Other URIs are ignored.
Result<ClientId, Error> client_id_from_uris(const std::vector<std::string_view>& uris);

// The first certificate of a PEM text, as DER.
Result<std::vector<std::uint8_t>, Error> pem_certificate_to_der(std::string_view pem);

// Reads both PEM files.
Result<PemCredentials, Error> read_credentials(const std::string& cert_file, const std::string& key_file);

// Writes the certificate (mode 0644) and the key (mode 0600). Without overwrite, fails before
// writing anything if either file exists.
Result<void, Error> write_credentials(const PemCredentials& credentials, const std::string& cert_file,
                                      const std::string& key_file, bool overwrite);

}  // namespace debra::auth
