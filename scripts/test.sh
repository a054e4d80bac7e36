#!/usr/bin/env bash
# Runs every test of debra, from a fresh Debian 12 machine on: installs what is missing, builds the
# release binaries (build/), builds everything again with clang, AddressSanitizer and
# UndefinedBehaviorSanitizer (build-test/), builds the quinn interop client, and runs the whole CTest
# suite there: unit, integration, interop, fuzz-corpus replay and a bounded libFuzzer run.
# Environment: DEBRA_FUZZ_SECONDS (default 60) bounds the fuzz run.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
scripts/install-deps.sh --test

jobs=$(nproc)
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build -j "$jobs"

quinn_client=$(interop/quinn-legacy-client/build.sh "$root/build-test/interop" | tail -n 1)

cmake -S . -B build-test -G Ninja -DCMAKE_BUILD_TYPE=Debug \
  -DCMAKE_CXX_COMPILER=clang++-14 -DDEBRA_SANITIZE=ON -DDEBRA_FUZZ=ON \
  -DDEBRA_FUZZ_SECONDS="${DEBRA_FUZZ_SECONDS:-60}" -DDEBRA_QUINN_CLIENT="$quinn_client" >/dev/null
cmake --build build-test -j "$jobs"

# Sanitizer reports fail the run; leak checking stays on.
export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
ctest --test-dir build-test --output-on-failure -j "$jobs" --timeout 600
