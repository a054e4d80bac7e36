# Every external library comes from Debian 12 packages (scripts/install-deps.sh).
find_package(PkgConfig REQUIRED)
# Debian ships no CMake config for ngtcp2; libngtcp2_crypto_gnutls.pc has no Requires:, so list all three.
pkg_check_modules(QUIC REQUIRED IMPORTED_TARGET libngtcp2 libngtcp2_crypto_gnutls gnutls)
# The token library (src/auth) needs GnuTLS alone.
pkg_check_modules(GNUTLS REQUIRED IMPORTED_TARGET gnutls)
# The metrics endpoint (src/metrics): Debian builds cpp-httplib as a shared library; its .pc carries
# the feature defines the header must be compiled with.
pkg_check_modules(HTTPLIB REQUIRED IMPORTED_TARGET cpp-httplib)
find_package(FlatBuffers REQUIRED CONFIG)
find_program(FLATC flatc REQUIRED)
find_package(spdlog REQUIRED CONFIG)
find_package(CLI11 CONFIG QUIET)
if(NOT CLI11_FOUND)
  find_path(CLI11_INCLUDE_DIR CLI/CLI.hpp REQUIRED)
  add_library(CLI11::CLI11 INTERFACE IMPORTED)
  target_include_directories(CLI11::CLI11 INTERFACE ${CLI11_INCLUDE_DIR})
endif()
# toml++ (libtomlplusplus-dev) reads the send policy file (src/policy) and --config. Used header-only, with
# parse errors as values: the parser is then compiled with our sanitizers and libFuzzer coverage, so
# the fuzz targets explore toml++ as well as our checks. Debian's imported target would select the
# shared library (TOML_HEADER_ONLY=0) instead, so only its include directory is taken.
find_package(tomlplusplus 3.3 REQUIRED CONFIG)
add_library(debra_tomlplusplus INTERFACE)
target_include_directories(debra_tomlplusplus SYSTEM INTERFACE
                           $<TARGET_PROPERTY:tomlplusplus::tomlplusplus,INTERFACE_INCLUDE_DIRECTORIES>)
target_compile_definitions(debra_tomlplusplus INTERFACE TOML_HEADER_ONLY=1 TOML_EXCEPTIONS=0)
find_package(Threads REQUIRED)
# The executables' allocator (docs/architecture.md, *Decisions and why*): with tcmalloc an idle
# connection holds about 16 % less memory than with glibc's malloc, and a handshake costs the router
# about 18 % less CPU (docs/benchmarks.md). Sanitizers bring their own malloc; their builds keep it.
add_library(debra_malloc INTERFACE)
# DEBRA_MALLOC_LINKED: what the executables got, for the test that bounds the router's resident memory.
set(DEBRA_MALLOC_LINKED "system")
if(DEBRA_SANITIZE OR DEBRA_TSAN OR DEBRA_MALLOC STREQUAL "system")
  message(STATUS "debra: the executables use the system allocator (or the sanitizer's)")
elseif(DEBRA_MALLOC STREQUAL "tcmalloc")
  pkg_check_modules(TCMALLOC IMPORTED_TARGET libtcmalloc_minimal)
  if(NOT TCMALLOC_FOUND)
    message(FATAL_ERROR "DEBRA_MALLOC=tcmalloc needs libtcmalloc_minimal: run scripts/install-deps.sh "
                        "(libgoogle-perftools-dev), or configure with -DDEBRA_MALLOC=system")
  endif()
  target_link_libraries(debra_malloc INTERFACE PkgConfig::TCMALLOC)
  set(DEBRA_MALLOC_LINKED "tcmalloc")
else()
  message(FATAL_ERROR "DEBRA_MALLOC must be tcmalloc or system, not '${DEBRA_MALLOC}'")
endif()
if(DEBRA_BUILD_TESTS)
  find_package(GTest REQUIRED CONFIG)
endif()
