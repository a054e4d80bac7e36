#!/usr/bin/env bash
# Installs everything debra builds, tests and runs with, from Debian 12 packages. Idempotent: does
# nothing (and asks apt nothing) when all of it is already installed. --test adds what CI needs,
# --bench what bench/run-comparison.sh needs.
set -euo pipefail

packages=(
  build-essential cmake ninja-build pkg-config git
  libngtcp2-dev libngtcp2-crypto-gnutls-dev libgnutls28-dev   # QUIC + TLS
  libflatbuffers-dev flatbuffers-compiler                      # wire format
  libsqlite3-dev                                               # the SQLite message store (--store sqlite)
  libtomlplusplus-dev                                          # the send policy file, --config
  libspdlog-dev libfmt-dev libcli11-dev                        # logs, flags
  libcpp-httplib-dev                                           # the metrics endpoint
  libgoogle-perftools-dev                                      # tcmalloc, the executables' allocator
  libgtest-dev libgmock-dev                                    # tests
)
if [ "${1:-}" = "--test" ]; then
  packages+=(
    clang-14 libclang-rt-14-dev                                # libFuzzer
    libbenchmark-dev                                           # micro-benchmarks (built, not run)
    librust-quinn-dev librust-rustls-dev librust-tokio-dev     # the quinn interop client
    cargo rustc
  )
fi
if [ "${1:-}" = "--bench" ]; then
  packages+=(
    libnats-dev nats-server openssl                            # the NATS-over-TLS comparison
    jq gnuplot-nox time                                        # bench/run-comparison.sh: medians, the plot, CPU
    libbenchmark-dev                                           # micro-benchmarks
  )
fi

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
# A rustup toolchain, where one is installed, serves as well as Debian's cargo.
if command -v cargo >/dev/null 2>&1 || [ -x "${HOME:-/root}/.cargo/bin/cargo" ]; then
  missing=("${missing[@]/cargo}")
  missing=("${missing[@]/rustc}")
fi
read -r -a missing <<< "${missing[*]}"
[ ${#missing[@]} -eq 0 ] && exit 0

echo "install-deps: installing ${missing[*]}" >&2
sudo=""
[ "$(id -u)" -ne 0 ] && sudo="sudo"
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
$sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
