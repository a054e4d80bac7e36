// SPDX-License-Identifier: MIT
//
// libFuzzer target for reading the id out of a client certificate (auth::certificate_client_id), which
// the router runs under --auth mtls on the DER certificate a client presented. Besides memory safety:
// an id it returns is always a valid client id.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <span>

#include "auth/certificate.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  auto id = debra::auth::certificate_client_id(std::span(data, size));
  if (id && *id < 1) std::abort();
  return 0;
}
