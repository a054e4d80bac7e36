// SPDX-License-Identifier: MIT
#include "auth/token.h"

#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <string>

namespace debra::auth {
namespace {

using Kind = TokenError::Kind;

TokenSecret secret_of(std::uint8_t fill) {
  TokenSecret secret{};
  for (std::size_t i = 0; i < secret.size(); ++i) secret[i] = static_cast<std::uint8_t>(fill + i);
  return secret;
}

constexpr std::int64_t kNow = 1'800'000'000;

std::string mint(const TokenSecret& secret, ClientId id, std::int64_t expiry) {
  auto token = mint_token(secret, id, expiry);
  EXPECT_TRUE(token) << token.error().message;
  return token ? *token : std::string();
}

Kind kind_of(const TokenSecret& secret, std::string_view token, std::int64_t now = kNow) {
  auto verified = verify_token(secret, token, now);
  EXPECT_FALSE(verified) << "token verified: " << token;
  return verified ? Kind::Malformed : verified.error().kind;
}

TEST(Token, RoundTrip) {
  const auto secret = secret_of(1);
  const std::string token = mint(secret, 7, kNow + 60);
  EXPECT_EQ(token.rfind("v1.7.1800000060.", 0), 0u) << token;
  auto verified = verify_token(secret, token, kNow);
  ASSERT_TRUE(verified) << verified.error().message;
  EXPECT_EQ(*verified, 7);
  // Valid through its expiry second, not after.
  EXPECT_TRUE(verify_token(secret, token, kNow + 60));
  EXPECT_EQ(kind_of(secret, token, kNow + 61), Kind::Expired);
}

TEST(Token, LargestIdRoundTrips) {
  const auto secret = secret_of(2);
  auto verified = verify_token(secret, mint(secret, 2147483647, kNow), kNow);
  ASSERT_TRUE(verified);
  EXPECT_EQ(*verified, 2147483647);
}

TEST(Token, MintRefusesInvalidIds) {
  EXPECT_FALSE(mint_token(secret_of(1), 0, kNow));
  EXPECT_FALSE(mint_token(secret_of(1), -5, kNow));
  EXPECT_FALSE(mint_token(secret_of(1), 5, -1));
}

TEST(Token, ExpiredSaysWhen) {
  const auto secret = secret_of(3);
  auto verified = verify_token(secret, mint(secret, 9, 1'700'000'000), kNow);
  ASSERT_FALSE(verified);
  EXPECT_EQ(verified.error().kind, Kind::Expired);
  EXPECT_EQ(verified.error().expiry, 1'700'000'000);
  EXPECT_EQ(verified.error().message, "token expired at 2023-11-14T22:13:20Z");
}

TEST(Token, FlippedSignatureCharacterIsRefused) {
  const auto secret = secret_of(4);
  const std::string token = mint(secret, 7, kNow + 60);
  for (std::size_t i = token.rfind('.') + 1; i < token.size(); ++i) {
    std::string forged = token;
    forged[i] = forged[i] == 'A' ? 'B' : 'A';
    EXPECT_EQ(kind_of(secret, forged), Kind::BadSignature) << "position " << i;
  }
}

TEST(Token, TamperedIdOrExpiryIsRefused) {
  const auto secret = secret_of(5);
  const std::string token = mint(secret, 7, kNow + 60);
  const std::string signature = token.substr(token.rfind('.'));
  EXPECT_EQ(kind_of(secret, "v1.8.1800000060" + signature), Kind::BadSignature);
  EXPECT_EQ(kind_of(secret, "v1.7.1800000061" + signature), Kind::BadSignature);
  EXPECT_EQ(kind_of(secret, "v1.7.9999999999" + signature), Kind::BadSignature);
  // A forged token never reports "expired", even when its expiry has passed.
  EXPECT_EQ(kind_of(secret, "v1.7.1000" + signature), Kind::BadSignature);
}

TEST(Token, AnotherSecretIsRefused) {
  const std::string token = mint(secret_of(6), 7, kNow + 60);
  EXPECT_EQ(kind_of(secret_of(7), token), Kind::BadSignature);
}

TEST(Token, MalformedInputs) {
  const auto secret = secret_of(8);
  const std::string good = mint(secret, 7, kNow + 60);
  const std::string signature = good.substr(good.rfind('.') + 1);
  const std::string inputs[] = {
      "",
      "v1",
      "v1.",
      "v1...",
      "v2.7.1800000060." + signature,
      "V1.7.1800000060." + signature,
      "v1.7." + signature,
      "v1.7.1800000060",
      "v1.7.1800000060.",
      "v1..1800000060." + signature,
      "v1.0.1800000060." + signature,
      "v1.-7.1800000060." + signature,
      "v1.+7.1800000060." + signature,
      "v1.07.1800000060." + signature,
      "v1.2147483648.1800000060." + signature,
      "v1.99999999999999999999.1800000060." + signature,
      "v1.7.-1." + signature,
      "v1.7.01800000060." + signature,
      "v1.7.1800000060x." + signature,
      "v1.7.9999999999999999999999." + signature,
      "v1.7.1800000060." + signature + "A",
      "v1.7.1800000060." + signature.substr(1),
      "v1.7.1800000060." + signature + ".extra",
      " " + good,
      good + " ",
      std::string(100000, 'v'),
      "v1.7.1800000060." + std::string(100000, 'A'),
      std::string("v1.7\0.1800000060.", 17) + signature,
      "\xff\xfe\x00garbage",
  };
  for (const auto& input : inputs) {
    auto verified = verify_token(secret, input, kNow);
    ASSERT_FALSE(verified) << input.substr(0, 80);
    EXPECT_NE(verified.error().kind, Kind::Expired) << input.substr(0, 80);
    EXPECT_FALSE(verified.error().message.empty());
  }
  EXPECT_EQ(kind_of(secret, ""), Kind::Malformed);
  EXPECT_EQ(kind_of(secret, std::string(100000, 'x')), Kind::Malformed);
  EXPECT_EQ(kind_of(secret, "v1.07.1800000060." + signature), Kind::Malformed);
  EXPECT_EQ(kind_of(secret, "garbage"), Kind::Malformed);
  // A good token still verifies after all that.
  EXPECT_TRUE(verify_token(secret, good, kNow));
}

class SecretFile : public ::testing::Test {
 protected:
  void SetUp() override {
    char pattern[] = "/tmp/debra-auth-test-XXXXXX";
    ASSERT_NE(mkdtemp(pattern), nullptr);
    dir_ = pattern;
  }
  void TearDown() override {
    std::remove((dir_ + "/token-secret").c_str());
    std::remove((dir_ + "/short").c_str());
    rmdir(dir_.c_str());
  }
  std::string dir_;
};

TEST_F(SecretFile, CreatedOnceWithMode0600AndReusedAfterwards) {
  const std::string path = dir_ + "/token-secret";
  auto first = load_or_create_secret(path);
  ASSERT_TRUE(first) << first.error().message;
  struct stat st {};
  ASSERT_EQ(stat(path.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  EXPECT_EQ(st.st_size, static_cast<off_t>(kSecretSize));
  auto second = load_or_create_secret(path);
  ASSERT_TRUE(second);
  EXPECT_EQ(*first, *second);
  auto loaded = load_secret(path);
  ASSERT_TRUE(loaded);
  EXPECT_EQ(*first, *loaded);
  EXPECT_NE(*first, TokenSecret{});  // random, not zeros
}

TEST_F(SecretFile, WrongSizeOrMissingIsAnError) {
  const std::string path = dir_ + "/short";
  std::ofstream(path) << "too short";
  auto loaded = load_secret(path);
  ASSERT_FALSE(loaded);
  EXPECT_NE(loaded.error().message.find("expected exactly 32 bytes"), std::string::npos) << loaded.error().message;
  EXPECT_FALSE(load_secret(dir_ + "/does-not-exist"));
}

}  // namespace
}  // namespace debra::auth
