// SPDX-License-Identifier: MIT
#include "auth/token.h"

#include <fcntl.h>
#include <gnutls/crypto.h>
#include <gnutls/gnutls.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <ctime>

namespace debra::auth {
namespace {

constexpr std::string_view kVersionPrefix = "v1.";
constexpr std::size_t kMacSize = 32;  // SHA-256
// base64url of 32 bytes without padding.
constexpr std::size_t kSignatureChars = 43;

std::string base64url(std::span<const std::uint8_t> bytes) {
  static constexpr char kAlphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
  std::string out;
  out.reserve((bytes.size() * 4 + 2) / 3);
  std::size_t i = 0;
  for (; i + 3 <= bytes.size(); i += 3) {
    std::uint32_t v = (std::uint32_t{bytes[i]} << 16) | (std::uint32_t{bytes[i + 1]} << 8) | bytes[i + 2];
    out += kAlphabet[(v >> 18) & 63];
    out += kAlphabet[(v >> 12) & 63];
    out += kAlphabet[(v >> 6) & 63];
    out += kAlphabet[v & 63];
  }
  if (std::size_t rest = bytes.size() - i; rest > 0) {
    std::uint32_t v = std::uint32_t{bytes[i]} << 16;
    if (rest == 2) v |= std::uint32_t{bytes[i + 1]} << 8;
    out += kAlphabet[(v >> 18) & 63];
    out += kAlphabet[(v >> 12) & 63];
    if (rest == 2) out += kAlphabet[(v >> 6) & 63];
  }
  return out;
}

// The signature over payload ("v1.<id>.<expiry>"), base64url-encoded.
Result<std::string, Error> sign(const TokenSecret& secret, std::string_view payload) {
  std::array<std::uint8_t, kMacSize> mac{};
  if (int rc = gnutls_hmac_fast(GNUTLS_MAC_SHA256, secret.data(), secret.size(), payload.data(), payload.size(),
                                mac.data());
      rc != 0) {
    return make_error(std::string("HMAC-SHA256 failed: ") + gnutls_strerror(rc));
  }
  return base64url(mac);
}

// A decimal without sign or leading zeros ("0" itself allowed), at most max_digits long.
bool parse_decimal(std::string_view text, std::size_t max_digits, std::int64_t& out) {
  if (text.empty() || text.size() > max_digits) return false;
  if (text.size() > 1 && text[0] == '0') return false;
  std::int64_t value = 0;
  for (char c : text) {
    if (c < '0' || c > '9') return false;
    value = value * 10 + (c - '0');
  }
  out = value;
  return true;
}

Unexpected<TokenError> malformed(std::string why) {
  return {TokenError{TokenError::Kind::Malformed, "malformed token: " + std::move(why), 0}};
}

}  // namespace

Result<std::string, Error> mint_token(const TokenSecret& secret, ClientId id, std::int64_t expiry) {
  if (id < 1) return make_error("a token needs an id in 1..2147483647, not " + std::to_string(id));
  if (expiry < 0) return make_error("a token's expiry cannot be before 1970");
  std::string payload = std::string(kVersionPrefix) + std::to_string(id) + "." + std::to_string(expiry);
  auto signature = sign(secret, payload);
  if (!signature) return Unexpected{signature.error()};
  return payload + "." + *signature;
}

Result<ClientId, TokenError> verify_token(const TokenSecret& secret, std::string_view token, std::int64_t now) {
  if (token.empty()) return malformed("empty");
  if (token.size() > kMaxTokenSize) {
    return malformed(std::to_string(token.size()) + " bytes, more than a token can be");
  }
  if (token.substr(0, kVersionPrefix.size()) != kVersionPrefix) return malformed("it does not start with \"v1.\"");
  std::string_view rest = token.substr(kVersionPrefix.size());
  std::size_t dot1 = rest.find('.');
  if (dot1 == std::string_view::npos) return malformed("expected v1.<id>.<expiry>.<signature>");
  std::size_t dot2 = rest.find('.', dot1 + 1);
  if (dot2 == std::string_view::npos) return malformed("expected v1.<id>.<expiry>.<signature>");
  std::string_view id_text = rest.substr(0, dot1);
  std::string_view expiry_text = rest.substr(dot1 + 1, dot2 - dot1 - 1);
  std::string_view signature = rest.substr(dot2 + 1);
  auto id = parse_client_id(id_text);
  if (!id) return malformed("the id is not a decimal in 1..2147483647");
  std::int64_t expiry = 0;
  // 18 digits cannot overflow int64 and reach far beyond any real expiry.
  if (!parse_decimal(expiry_text, 18, expiry)) return malformed("the expiry is not a decimal Unix time");
  if (signature.size() != kSignatureChars) return malformed("the signature is not 43 base64url characters");

  std::string_view payload = token.substr(0, token.size() - signature.size() - 1);
  auto expected = sign(secret, payload);
  if (!expected) return Unexpected{TokenError{TokenError::Kind::BadSignature, expected.error().message, 0}};
  // Constant time: how much of a forged signature matches must not show in the time taken. Comparing
  // the canonical encodings also refuses the non-canonical spellings of a signature's last character.
  if (gnutls_memcmp(expected->data(), signature.data(), kSignatureChars) != 0) {
    return Unexpected{TokenError{TokenError::Kind::BadSignature, "token signature invalid", 0}};
  }
  if (now > expiry) {
    return Unexpected{TokenError{TokenError::Kind::Expired, "token expired at " + format_utc(expiry), expiry}};
  }
  return *id;
}

std::optional<ClientId> parse_client_id(std::string_view text) {
  std::int64_t id = 0;
  if (!parse_decimal(text, 10, id) || id < 1 || id > 2147483647) return std::nullopt;
  return static_cast<ClientId>(id);
}

std::int64_t unix_now() {
  return std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch())
      .count();
}

std::string format_utc(std::int64_t unix_seconds) {
  std::time_t t = static_cast<std::time_t>(unix_seconds);
  std::tm tm{};
  char buf[64];
  if (gmtime_r(&t, &tm) == nullptr || std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm) == 0) {
    return std::to_string(unix_seconds) + " (Unix time)";
  }
  return buf;
}

Result<TokenSecret, Error> load_secret(const std::string& path) {
  TokenSecret secret{};
  int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return make_error("token secret " + path + ": " + std::strerror(errno));
  ssize_t n = read(fd, secret.data(), secret.size());
  char extra = 0;
  ssize_t more = n == static_cast<ssize_t>(secret.size()) ? read(fd, &extra, 1) : 0;
  close(fd);
  if (n != static_cast<ssize_t>(secret.size()) || more != 0) {
    return make_error("token secret " + path + ": expected exactly " + std::to_string(kSecretSize) + " bytes");
  }
  return secret;
}

Result<TokenSecret, Error> load_or_create_secret(const std::string& path) {
  if (access(path.c_str(), F_OK) == 0) return load_secret(path);
  TokenSecret secret{};
  if (gnutls_rnd(GNUTLS_RND_KEY, secret.data(), secret.size()) != 0) {
    return make_error("no randomness for the token secret");
  }
  // O_EXCL: never overwrite a secret (a concurrent start may have just created it).
  int fd = open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
  if (fd < 0) {
    if (errno == EEXIST) return load_secret(path);
    return make_error("token secret " + path + ": " + std::strerror(errno));
  }
  bool ok = write(fd, secret.data(), secret.size()) == static_cast<ssize_t>(secret.size()) && fsync(fd) == 0;
  close(fd);
  if (!ok) {
    unlink(path.c_str());
    return make_error("token secret " + path + ": write failed");
  }
  return secret;
}

}  // namespace debra::auth
