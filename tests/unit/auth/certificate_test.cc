// SPDX-License-Identifier: MIT
#include "auth/certificate.h"

#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>

namespace debra::auth {
namespace {

PemCredentials ca_or_fail() {
  auto ca = mint_client_ca(valid_for_days(30));
  EXPECT_TRUE(ca) << ca.error().message;
  return ca ? *ca : PemCredentials{};
}

Result<ClientId, Error> id_of(const PemCredentials& credentials) {
  auto der = pem_certificate_to_der(credentials.certificate);
  if (!der) return Unexpected{der.error()};
  return certificate_client_id(*der);
}

TEST(ClientCertificate, MintedCertificateNamesItsId) {
  auto ca = ca_or_fail();
  for (ClientId id : {1, 7, 2147483647}) {
    auto issued = mint_client_certificate(ca, id, valid_for_days(1));
    ASSERT_TRUE(issued) << issued.error().message;
    EXPECT_NE(issued->certificate.find("BEGIN CERTIFICATE"), std::string::npos);
    EXPECT_NE(issued->key.find("BEGIN PRIVATE KEY"), std::string::npos);
    auto named = id_of(*issued);
    ASSERT_TRUE(named) << named.error().message;
    EXPECT_EQ(*named, id);
  }
}

TEST(ClientCertificate, EachCertificateHasItsOwnKey) {
  auto ca = ca_or_fail();
  auto a = mint_client_certificate(ca, 1, valid_for_days(1));
  auto b = mint_client_certificate(ca, 1, valid_for_days(1));
  ASSERT_TRUE(a && b);
  EXPECT_NE(a->key, b->key);
  EXPECT_NE(a->certificate, b->certificate);
  EXPECT_NE(a->key, ca.key);
}

TEST(ClientCertificate, CaCertificateNamesNoId) {
  auto ca = ca_or_fail();
  auto named = id_of(ca);
  ASSERT_FALSE(named);
  EXPECT_NE(named.error().message.find("names no id"), std::string::npos) << named.error().message;
}

TEST(ClientCertificate, MintRefusesInvalidIdsAndBrokenCa) {
  auto ca = ca_or_fail();
  EXPECT_FALSE(mint_client_certificate(ca, 0, valid_for_days(1)));
  EXPECT_FALSE(mint_client_certificate(ca, -5, valid_for_days(1)));
  PemCredentials broken = ca;
  broken.key = "not a key";
  EXPECT_FALSE(mint_client_certificate(broken, 1, valid_for_days(1)));
  broken = ca;
  broken.certificate = "not a certificate";
  EXPECT_FALSE(mint_client_certificate(broken, 1, valid_for_days(1)));
}

TEST(ClientCertificate, IdFromUrisNeedsExactlyOneValidIdUri) {
  using Uris = std::vector<std::string_view>;
  auto ok = client_id_from_uris(Uris{"https://example.org/", "debra:id:42"});
  ASSERT_TRUE(ok) << ok.error().message;
  EXPECT_EQ(*ok, 42);

  auto none = client_id_from_uris(Uris{"https://example.org/", "urn:debra:id:3"});
  ASSERT_FALSE(none);
  EXPECT_NE(none.error().message.find("names no id"), std::string::npos);

  auto two = client_id_from_uris(Uris{"debra:id:1", "debra:id:2"});
  ASSERT_FALSE(two);
  EXPECT_NE(two.error().message.find("more than one id"), std::string::npos);
  // The same id twice is still ambiguous about what the issuer meant: refused.
  EXPECT_FALSE(client_id_from_uris(Uris{"debra:id:1", "debra:id:1"}));

  auto injected = client_id_from_uris(Uris{"debra:id:1\nfake log line"});
  ASSERT_FALSE(injected);
  EXPECT_EQ(injected.error().message.find('\n'), std::string::npos) << injected.error().message;

  for (std::string_view bad : {"debra:id:", "debra:id:0", "debra:id:007", "debra:id:-7", "debra:id:+7",
                               "debra:id:2147483648", "debra:id:7 ", "debra:id:7x", "debra:id:99999999999"}) {
    auto refused = client_id_from_uris(Uris{bad});
    ASSERT_FALSE(refused) << bad;
    EXPECT_NE(refused.error().message.find("is not an id in 1..2147483647"), std::string::npos)
        << bad << ": " << refused.error().message;
  }
}

TEST(ClientCertificate, GarbageDerIsAnErrorNotACrash) {
  std::vector<std::uint8_t> garbage{0x30, 0x82, 0xff, 0xff, 0x01};
  EXPECT_FALSE(certificate_client_id(garbage));
  EXPECT_FALSE(certificate_client_id({}));
  EXPECT_FALSE(pem_certificate_to_der("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"));
}

class CredentialFiles : public ::testing::Test {
 protected:
  void SetUp() override {
    char pattern[] = "/tmp/debra-cert-test-XXXXXX";
    ASSERT_NE(mkdtemp(pattern), nullptr);
    dir_ = pattern;
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }
  std::string dir_;
};

TEST_F(CredentialFiles, WriteThenReadRoundTripsWithAPrivateKeyFile) {
  auto ca = ca_or_fail();
  const std::string cert = dir_ + "/ca.pem";
  const std::string key = dir_ + "/ca-key.pem";
  auto written = write_credentials(ca, cert, key, false);
  ASSERT_TRUE(written) << written.error().message;
  struct stat st {};
  ASSERT_EQ(stat(key.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  auto read = read_credentials(cert, key);
  ASSERT_TRUE(read) << read.error().message;
  EXPECT_EQ(read->certificate, ca.certificate);
  EXPECT_EQ(read->key, ca.key);
  // What was read signs certificates like the original.
  auto issued = mint_client_certificate(*read, 9, valid_for_days(1));
  ASSERT_TRUE(issued) << issued.error().message;
}

TEST_F(CredentialFiles, NoOverwriteUnlessAsked) {
  auto first = ca_or_fail();
  auto second = ca_or_fail();
  const std::string cert = dir_ + "/c.pem";
  const std::string key = dir_ + "/k.pem";
  ASSERT_TRUE(write_credentials(first, cert, key, false));
  auto refused = write_credentials(second, cert, key, false);
  ASSERT_FALSE(refused);
  EXPECT_NE(refused.error().message.find("exists; not overwriting it"), std::string::npos);
  EXPECT_EQ(read_credentials(cert, key)->key, first.key);

  ASSERT_TRUE(write_credentials(second, cert, key, true));
  EXPECT_EQ(read_credentials(cert, key)->key, second.key);
}

TEST_F(CredentialFiles, MissingFilesSayWhich) {
  auto read = read_credentials(dir_ + "/nope.pem", dir_ + "/nope-key.pem");
  ASSERT_FALSE(read);
  EXPECT_NE(read.error().message.find("nope.pem"), std::string::npos) << read.error().message;
}

}  // namespace
}  // namespace debra::auth
