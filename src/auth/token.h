// SPDX-License-Identifier: MIT
//
// Client tokens: proof that the holder may register one id until an expiry time (docs/security.md).
//
//   v1.<id>.<expiry>.<signature>
//
// id is the client id in decimal (1..2147483647), expiry the last valid second in Unix time (decimal),
// and signature base64url (no padding) of HMAC-SHA256(secret, "v1.<id>.<expiry>"). Whoever holds the
// secret (the router and `debra token issue`) can mint tokens; nobody else can. A token is a bearer
// credential: it is not bound to a connection, so a stolen token works until it expires.
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>

#include "util/result.h"

namespace debra::auth {

using ClientId = std::int32_t;

inline constexpr std::size_t kSecretSize = 32;
using TokenSecret = std::array<std::uint8_t, kSecretSize>;

// Tokens longer than this are refused before any parsing: a real one is about 70 characters.
inline constexpr std::size_t kMaxTokenSize = 256;

// TokenError: why a token does not verify. kind is for code, message for humans (and the Error frame).
struct TokenError {
  enum class Kind {
    Malformed,     // not of the form v1.<id>.<expiry>.<signature>
    BadSignature,  // well formed, but not signed with this secret (forged, tampered or another router's)
    Expired,       // genuine, but its expiry has passed
  };
  Kind kind = Kind::Malformed;
  std::string message;
  std::int64_t expiry = 0;  // Expired: the token's expiry (Unix seconds)
};

// Mints a token for id valid until expiry (Unix seconds, inclusive). Fails only if GnuTLS does.
Result<std::string, Error> mint_token(const TokenSecret& secret, ClientId id, std::int64_t expiry);

// Verifies token against secret at time now (Unix seconds): the id it was minted for, or why not. The
// signature is compared in constant time and checked before the expiry, so a forged token never
// reports "expired". The caller compares the id with the one being registered.
Result<ClientId, TokenError> verify_token(const TokenSecret& secret, std::string_view token, std::int64_t now);

// A client id as tokens and certificates spell it: decimal, 1..2147483647, no sign, no leading zeros.
std::optional<ClientId> parse_client_id(std::string_view text);

// The current wall-clock time in Unix seconds.
std::int64_t unix_now();

// Formats Unix seconds as "2026-11-25T04:18:42Z" for messages.
std::string format_utc(std::int64_t unix_seconds);

// Reads a secret file: exactly kSecretSize bytes.
Result<TokenSecret, Error> load_secret(const std::string& path);

// Loads the secret at path, or creates it (kSecretSize bytes from gnutls_rnd(GNUTLS_RND_KEY), file
// mode 0600, never overwriting) if it does not exist.
Result<TokenSecret, Error> load_or_create_secret(const std::string& path);

}  // namespace debra::auth
