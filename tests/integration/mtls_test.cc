// SPDX-License-Identifier: MIT
//
// Client certificates (--auth mtls) against the real router process over real QUIC. The client CA
// and the certificates are minted with auth/certificate.h (the code behind `debra cert`) and written
// to files, as a user would; the CLI test goes through `debra cert` itself.
#include <gtest/gtest.h>

#include "auth/certificate.h"
#include "quic/tls.h"
#include "server_process.h"
#include "test_support.h"

namespace debra::testing {
namespace {

// The files of one certificate and its key.
struct CertificateFiles {
  std::string cert;
  std::string key;
};

class MtlsIntegration : public ::testing::Test {
 protected:
  void SetUp() override {
    auto ca = auth::mint_client_ca(auth::valid_for_days(30));
    ASSERT_TRUE(ca) << ca.error().message;
    ca_ = *ca;
    ASSERT_TRUE(auth::write_credentials(ca_, client_ca_file(), dir() + "/client-ca-key.pem", false));
  }

  std::string dir() const { return server_.data_dir(); }
  std::string client_ca_file() const { return dir() + "/client-ca.pem"; }
  std::vector<std::string> mtls_args(std::vector<std::string> extra = {}) const {
    std::vector<std::string> args{"--auth", "mtls", "--client-ca", client_ca_file()};
    args.insert(args.end(), extra.begin(), extra.end());
    return args;
  }

  // A certificate for id signed by ca, written to files named after name.
  CertificateFiles issue(std::int32_t id, const auth::PemCredentials& ca, auth::Validity validity,
                         const std::string& name) {
    auto issued = auth::mint_client_certificate(ca, id, validity);
    EXPECT_TRUE(issued) << issued.error().message;
    CertificateFiles files{dir() + "/" + name + ".pem", dir() + "/" + name + "-key.pem"};
    if (issued) {
      EXPECT_TRUE(auth::write_credentials(*issued, files.cert, files.key, true));
    }
    return files;
  }
  CertificateFiles issue(std::int32_t id) { return issue(id, ca_, auth::valid_for_days(1), "id-" + std::to_string(id)); }

  ClientOptions with_certificate(std::int32_t id, const CertificateFiles& files,
                                 Protocol protocol = Protocol::Native) const {
    auto options = client_options(server_, id, protocol);
    options.cert_file = files.cert;
    options.key_file = files.key;
    return options;
  }

  struct Pair {
    std::unique_ptr<Client> a;
    std::unique_ptr<Client> b;
  };
  Pair certified_pair() {
    Pair pair;
    pair.a = connect_client(with_certificate(1, issue(1)));
    pair.b = connect_client(with_certificate(2, issue(2)));
    return pair;
  }

  ServerProcess server_;
  auth::PemCredentials ca_;
};

TEST_F(MtlsIntegration, ValidCertificatesRegisterAndChat) {
  ASSERT_TRUE(server_.start(with_args(mtls_args())));
  auto pair = certified_pair();
  ASSERT_TRUE(pair.a && pair.b);
  EXPECT_TRUE(exchange(*pair.a, 1, *pair.b, 2, "certified"));
  EXPECT_NE(server_.stderr_text().find("authentication: mtls"), std::string::npos) << server_.stderr_text();
}

TEST_F(MtlsIntegration, MessagesCarryTheCertificatesIdWhateverTheFrameClaims) {
  ASSERT_TRUE(server_.start(with_args(mtls_args())));
  auto pair = certified_pair();
  ASSERT_TRUE(pair.a && pair.b);
  auto options = raw_options(server_);
  auto three = issue(3);
  options.cert_file = three.cert;
  options.key_file = three.key;
  auto raw = RawClient::connect(options);
  ASSERT_TRUE(raw) << raw.error().message;
  ASSERT_TRUE((*raw)->register_id(3));
  // Claims to be id 1.
  (*raw)->send(wire::encode_client_to_client(1, 2, 99, to_bytes("who am I")));
  auto reply = (*raw)->wait_for(wire::MessageType::Reply, 10s);
  ASSERT_TRUE(reply);
  EXPECT_EQ(reply->status, wire::DeliveryStatus::Accepted) << reply->describe();
  auto message = pair.b->receive(10s);
  ASSERT_TRUE(message);
  EXPECT_EQ(message->sender, 3);
  EXPECT_EQ(message->text(), "who am I");
}

TEST_F(MtlsIntegration, BadCertificatesAreRefusedWithTheirReasonWhileOthersKeepChatting) {
  ASSERT_TRUE(server_.start(with_args(mtls_args())));
  auto pair = certified_pair();
  ASSERT_TRUE(pair.a && pair.b);

  EXPECT_TRUE(refused(client_options(server_, 7), "no client certificate"));
  EXPECT_TRUE(exchange(*pair.a, 1, *pair.b, 2, "after none"));

  auto other_ca = auth::mint_client_ca(auth::valid_for_days(30));
  ASSERT_TRUE(other_ca);
  auto foreign = issue(7, *other_ca, auth::valid_for_days(1), "foreign-7");
  EXPECT_TRUE(refused(with_certificate(7, foreign), "client certificate not accepted"));
  EXPECT_TRUE(refused(with_certificate(7, foreign), "issuer is unknown"));
  EXPECT_TRUE(exchange(*pair.a, 1, *pair.b, 2, "after foreign"));

  std::int64_t now = auth::unix_now();
  auto expired = issue(7, ca_, auth::Validity{now - 7200, now - 60}, "expired-7");
  EXPECT_TRUE(refused(with_certificate(7, expired), "expired"));
  auto not_yet = issue(7, ca_, auth::Validity{now + 3600, now + 7200}, "future-7");
  EXPECT_TRUE(refused(with_certificate(7, not_yet), "not yet valid"));
  EXPECT_TRUE(exchange(*pair.a, 1, *pair.b, 2, "after expired"));

  EXPECT_TRUE(refused(with_certificate(7, issue(5)), "certificate is for id 5, not 7"));
  EXPECT_TRUE(exchange(*pair.a, 1, *pair.b, 2, "after wrong id"));

  const std::string log = server_.stderr_text();
  for (const char* cause : {"no client certificate", "client certificate not accepted", "certificate is for id 5, not 7"}) {
    EXPECT_NE(log.find(std::string("closing with Unauthenticated: ") + cause), std::string::npos) << cause << "\n"
                                                                                                   << log;
  }
}

TEST_F(MtlsIntegration, CertificateNotForClientAuthenticationIsRefused) {
  // The router's own kind of certificate: self-signed (its own trust anchor here) and for TLS servers only.
  const std::string cert = dir() + "/server-only.pem";
  const std::string key = dir() + "/server-only-key.pem";
  ASSERT_TRUE(quic::write_self_signed_certificate(cert, key));
  ASSERT_TRUE(server_.start(with_args({"--auth", "mtls", "--client-ca", cert})));
  EXPECT_TRUE(refused(with_certificate(7, {cert, key}), "does not match the intended purpose"));
}

TEST_F(MtlsIntegration, TakeoverNeedsTheIdsCertificate) {
  ASSERT_TRUE(server_.start(with_args(mtls_args())));
  auto pair = certified_pair();
  ASSERT_TRUE(pair.a && pair.b);
  ConnectionEvents events_of_1;
  events_of_1.attach(*pair.a);

  EXPECT_TRUE(refused(with_certificate(1, issue(2)), "certificate is for id 2, not 1"));
  EXPECT_TRUE(refused(client_options(server_, 1), "no client certificate"));
  EXPECT_TRUE(pair.a->connected());
  EXPECT_TRUE(exchange(*pair.a, 1, *pair.b, 2, "still mine"));
  EXPECT_TRUE(events_of_1.wait(1, 200ms).empty());

  // A certificate for id 1 (a second one, as a reconnecting owner on another machine might hold) may.
  auto successor = connect_client(with_certificate(1, issue(1, ca_, auth::valid_for_days(1), "id-1-second")));
  ASSERT_TRUE(successor);
  EXPECT_TRUE(displaced(events_of_1));
  EXPECT_TRUE(exchange(*successor, 1, *pair.b, 2, "new owner"));
}

TEST_F(MtlsIntegration, LegacyClientsRefusedByDefaultEvenWithACertificate) {
  ASSERT_TRUE(server_.start(with_args(mtls_args())));
  for (bool with_certificate : {false, true}) {
    auto options = raw_options(server_, /*native=*/false);
    if (with_certificate) {
      auto files = issue(3);
      options.cert_file = files.cert;
      options.key_file = files.key;
    }
    EXPECT_TRUE(registration_closed(options, 3,
                                    "legacy clients are not allowed on this router (it requires debra/1 with a "
                                    "client certificate"));
  }
  auto pair = certified_pair();
  ASSERT_TRUE(pair.a && pair.b);
  EXPECT_TRUE(exchange(*pair.a, 1, *pair.b, 2, "after legacy"));
}

TEST_F(MtlsIntegration, LegacyAllowRegistersLegacyClientsUnauthenticated) {
  ASSERT_TRUE(server_.start(with_args(mtls_args({"--legacy", "allow"}))));
  auto native = connect_client(with_certificate(1, issue(1)));
  ASSERT_TRUE(native);
  // No certificate, and an id a native client would need one for.
  auto legacy = connect_client(server_, 2, Protocol::Legacy);
  ASSERT_TRUE(legacy);
  EXPECT_TRUE(legacy_reaches(*native, 1, *legacy, 2));
}

TEST_F(MtlsIntegration, ClientCaIsRequiredAndMustBeReadable) {
  const std::string base = "--listen 127.0.0.1:0 --data-dir " + dir();
  auto [no_ca, no_ca_output] = run_server_briefly(base + " --auth mtls");
  EXPECT_EQ(no_ca, 2) << no_ca_output;
  EXPECT_NE(no_ca_output.find("--auth mtls needs --client-ca FILE"), std::string::npos) << no_ca_output;

  auto [missing, missing_output] = run_server_briefly(base + " --auth mtls --client-ca " + dir() + "/nope.pem");
  EXPECT_NE(missing, 0) << missing_output;
  EXPECT_NE(missing_output.find("client CA file " + dir() + "/nope.pem: No such file or directory"), std::string::npos)
      << missing_output;
  EXPECT_EQ(missing_output.find("ready on"), std::string::npos) << missing_output;

  const std::string not_pem = dir() + "/client-ca-key.pem";  // a key, no certificate
  auto [empty, empty_output] = run_server_briefly(base + " --auth mtls --client-ca " + not_pem);
  EXPECT_NE(empty, 0) << empty_output;
  EXPECT_NE(empty_output.find("no PEM certificate in it"), std::string::npos) << empty_output;

  auto [stray, stray_output] = run_server_briefly(base + " --auth token --client-ca " + client_ca_file());
  EXPECT_EQ(stray, 2) << stray_output;
  EXPECT_NE(stray_output.find("--client-ca is for --auth mtls"), std::string::npos) << stray_output;
}

TEST_F(MtlsIntegration, NonLoopbackStartsWithMtls) {
  ASSERT_TRUE(server_.start(listening_on("0.0.0.0:0", mtls_args())));
  EXPECT_TRUE(server_.running());
  EXPECT_EQ(server_.stop(SIGTERM).exit_code(), 0);
}

TEST_F(MtlsIntegration, CliMintsCertificatesAndSendsWithThem) {
  const std::string pki = dir() + "/pki";
  auto ca = run_cli({"cert", "ca", "--out-dir", pki});
  ASSERT_EQ(ca.exit_code, 0) << ca.describe();
  EXPECT_NE(ca.out.find(pki + "/ca.pem"), std::string::npos) << ca.describe();
  // A second CA in the same place would orphan every certificate the first signed.
  auto again = run_cli({"cert", "ca", "--out-dir", pki});
  EXPECT_EQ(again.exit_code, 1) << again.describe();
  EXPECT_NE(again.err.find("exists; not overwriting it"), std::string::npos) << again.describe();

  for (const char* id : {"1", "2"}) {
    auto issued = run_cli({"cert", "issue", "--id", id, "--ca-dir", pki, "--out-dir", pki, "--days", "2"});
    ASSERT_EQ(issued.exit_code, 0) << issued.describe();
  }
  auto bad_id = run_cli({"cert", "issue", "--id", "0", "--ca-dir", pki, "--out-dir", pki});
  EXPECT_EQ(bad_id.exit_code, 2) << bad_id.describe();
  auto no_ca = run_cli({"cert", "issue", "--id", "1", "--ca-dir", dir() + "/nowhere", "--out-dir", pki});
  EXPECT_EQ(no_ca.exit_code, 1) << no_ca.describe();
  EXPECT_NE(no_ca.err.find("debra cert ca"), std::string::npos) << no_ca.describe();

  ASSERT_TRUE(server_.start(with_args({"--auth", "mtls", "--client-ca", pki + "/ca.pem"})));
  auto listener = connect_client(with_certificate(2, {pki + "/id-2.pem", pki + "/id-2-key.pem"}));
  ASSERT_TRUE(listener);

  const std::vector<std::string> send{"send", "--server", server_.address(), "--ca", server_.ca_file()};
  auto args = [&](std::vector<std::string> rest) {
    std::vector<std::string> all = send;
    all.insert(all.end(), rest.begin(), rest.end());
    return all;
  };
  auto sent = run_cli(args({"--id", "1", "--to", "2", "--cert", pki + "/id-1.pem", "--key", pki + "/id-1-key.pem",
                            "certified", "hello"}));
  EXPECT_EQ(sent.exit_code, 0) << sent.describe();
  auto message = listener->receive(10s);
  ASSERT_TRUE(message);
  EXPECT_EQ(message->sender, 1);
  EXPECT_EQ(message->text(), "certified hello");

  auto anonymous = run_cli(args({"--id", "1", "--to", "2", "no certificate"}));
  EXPECT_EQ(anonymous.exit_code, 1) << anonymous.describe();
  EXPECT_NE(anonymous.err.find("Unauthenticated: no client certificate"), std::string::npos) << anonymous.describe();
  auto wrong = run_cli(args({"--id", "3", "--to", "2", "--cert", pki + "/id-1.pem", "--key", pki + "/id-1-key.pem",
                             "not mine"}));
  EXPECT_EQ(wrong.exit_code, 1) << wrong.describe();
  EXPECT_NE(wrong.err.find("certificate is for id 1, not 3"), std::string::npos) << wrong.describe();

  auto legacy = run_cli(args({"--legacy", "--id", "1", "--to", "2", "--cert", pki + "/id-1.pem", "--key",
                              pki + "/id-1-key.pem", "old"}));
  EXPECT_EQ(legacy.exit_code, 2) << legacy.describe();
  EXPECT_NE(legacy.err.find("--cert needs the native protocol"), std::string::npos) << legacy.describe();
  auto half = run_cli(args({"--id", "1", "--to", "2", "--cert", pki + "/id-1.pem", "half"}));
  EXPECT_NE(half.exit_code, 0) << half.describe();
  auto unreadable = run_cli(args({"--id", "1", "--to", "2", "--cert", pki + "/nope.pem", "--key", pki + "/nope.pem", "x"}));
  EXPECT_EQ(unreadable.exit_code, 1) << unreadable.describe();
  EXPECT_NE(unreadable.err.find("loading client certificate"), std::string::npos) << unreadable.describe();
}

}  // namespace
}  // namespace debra::testing
