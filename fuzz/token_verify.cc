// SPDX-License-Identifier: MIT
//
// libFuzzer target for token verification, the first thing the router does with a registration's
// token under --auth token. The input is the token text. Properties checked besides memory safety:
// verification never accepts a token that the secret did not mint (a verified input must be exactly
// the token minted for its id and expiry), and a minted token always verifies before its expiry.
#include <charconv>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>

#include "auth/token.h"

namespace {

constexpr std::int64_t kNow = 1'800'000'000;  // a fixed clock: findings must reproduce

const debra::auth::TokenSecret& secret() {
  static const debra::auth::TokenSecret s = [] {
    debra::auth::TokenSecret bytes{};
    for (std::size_t i = 0; i < bytes.size(); ++i) bytes[i] = static_cast<std::uint8_t>(i * 7 + 3);
    return bytes;
  }();
  return s;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  std::string_view token(reinterpret_cast<const char*>(data), size);
  auto verified = debra::auth::verify_token(secret(), token, kNow);
  if (verified) {
    // Only a genuine token verifies: re-mint it from the fields it claims and compare.
    auto first = token.find('.');
    auto second = token.find('.', first + 1);
    auto third = token.find('.', second + 1);
    std::int64_t expiry = 0;
    auto expiry_text = token.substr(second + 1, third - second - 1);
    std::from_chars(expiry_text.data(), expiry_text.data() + expiry_text.size(), expiry);
    auto minted = debra::auth::mint_token(secret(), *verified, expiry);
    if (!minted || *minted != token) std::abort();
  } else if (verified.error().message.empty()) {
    std::abort();  // every refusal says why
  }
  // Round trip: an id and expiry drawn from the input always mint a token that verifies.
  if (size >= 12) {
    std::int32_t id = 0;
    std::int64_t expiry = 0;
    __builtin_memcpy(&id, data, sizeof id);
    __builtin_memcpy(&expiry, data + 4, sizeof expiry);
    if (id >= 1 && expiry >= kNow && expiry < 4'000'000'000) {
      auto minted = debra::auth::mint_token(secret(), id, expiry);
      if (!minted) std::abort();
      auto again = debra::auth::verify_token(secret(), *minted, kNow);
      if (!again || *again != id) std::abort();
    }
  }
  return 0;
}
