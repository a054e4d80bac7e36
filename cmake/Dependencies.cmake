# Every external library comes from Debian 12 packages (scripts/install-deps.sh).
find_package(PkgConfig REQUIRED)
# Debian ships no CMake config for ngtcp2; libngtcp2_crypto_gnutls.pc has no Requires:, so list all three.
pkg_check_modules(QUIC REQUIRED IMPORTED_TARGET libngtcp2 libngtcp2_crypto_gnutls gnutls)
# The token library (src/auth) needs GnuTLS alone.
pkg_check_modules(GNUTLS REQUIRED IMPORTED_TARGET gnutls)
find_package(FlatBuffers REQUIRED CONFIG)
find_program(FLATC flatc REQUIRED)
find_package(spdlog REQUIRED CONFIG)
find_package(CLI11 CONFIG QUIET)
if(NOT CLI11_FOUND)
  find_path(CLI11_INCLUDE_DIR CLI/CLI.hpp REQUIRED)
  add_library(CLI11::CLI11 INTERFACE IMPORTED)
  target_include_directories(CLI11::CLI11 INTERFACE ${CLI11_INCLUDE_DIR})
endif()
# TOML for --config (and the policy file): Debian builds toml++ as a shared library.
find_package(tomlplusplus REQUIRED CONFIG)
find_package(Threads REQUIRED)
if(DEBRA_BUILD_TESTS)
  find_package(GTest REQUIRED CONFIG)
endif()
