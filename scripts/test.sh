#!/usr/bin/env bash
# Runs every test of debra, from a fresh Debian 12 machine on: installs what is missing, builds the
# release binaries (build/) and runs the CTest suite against them, builds everything again with
# clang, AddressSanitizer and UndefinedBehaviorSanitizer (build-test/), builds the quinn interop
# client, and runs the whole CTest suite there: unit, integration, interop, fuzz-corpus replay and a
# bounded libFuzzer run. Then it builds the router and the integration suites that load its threads
# with ThreadSanitizer (build-tsan/) and runs them.
# Environment: DEBRA_FUZZ_SECONDS (default 60) bounds the fuzz run.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
scripts/install-deps.sh --test

jobs=$(nproc)
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build -j "$jobs"
# The binaries as shipped: optimised, on tcmalloc. The sanitizer builds below bring their own malloc,
# so this run is the one that tests the router on the allocator it ships with.
ctest --test-dir build --output-on-failure -j "$jobs" --timeout 600

quinn_client=$(interop/quinn-legacy-client/build.sh "$root/build-test/interop" | tail -n 1)

cmake -S . -B build-test -G Ninja -DCMAKE_BUILD_TYPE=Debug \
  -DCMAKE_CXX_COMPILER=clang++-14 -DDEBRA_SANITIZE=ON -DDEBRA_FUZZ=ON \
  -DDEBRA_FUZZ_SECONDS="${DEBRA_FUZZ_SECONDS:-60}" -DDEBRA_QUINN_CLIENT="$quinn_client" >/dev/null
cmake --build build-test -j "$jobs"

# Sanitizer reports fail the run; leak checking stays on.
export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
ctest --test-dir build-test --output-on-failure -j "$jobs" --timeout 600

# The router's threads share the routing core and hand work to each other: ThreadSanitizer watches
# the suites that drive them hardest (a report in the router's stderr fails the test), and the
# message log's own tests, whose sync and compaction threads hand their results back through post.
tsan_suites=(integration_threads integration_client integration_limits integration_lifecycle unit_store)
cmake -S . -B build-tsan -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_CXX_COMPILER=clang++-14 \
  -DDEBRA_TSAN=ON -DDEBRA_BUILD_BENCH=OFF >/dev/null
cmake --build build-tsan -j "$jobs" --target debra-server debra "${tsan_suites[@]}"
export TSAN_OPTIONS=halt_on_error=0
ctest --test-dir build-tsan --output-on-failure -j "$jobs" --timeout 600 \
  -R '^(ThreadsIntegration|ClientIntegration|LimitsIntegration|LifecycleIntegration|LogStore|LogStoreOnASmallDisk|RollOverByARemoval)\.' 
