#!/usr/bin/env bash
# Fuzzes the wire decoder with libFuzzer for SECONDS (default 60) and fails on any finding.
#
#   scripts/fuzz.sh [SECONDS]
#
# Uses its own build directory (build-fuzz, or $DEBRA_FUZZ_BUILD_DIR) configured with clang++-14 and
# ASan+UBSan, so ordinary builds are untouched. The corpus grows in build-fuzz/corpus/wire_decoder,
# seeded from fuzz/corpus/wire_decoder on every run; crashing inputs land in build-fuzz/findings/. A
# finding worth keeping goes into fuzz/corpus/wire_decoder, where the fuzz_replay test replays it.
set -euo pipefail

seconds="${1:-60}"
if ! [[ "$seconds" =~ ^[0-9]+$ ]] || [[ "$seconds" -eq 0 ]]; then
  echo "usage: $0 [SECONDS]  (a positive number of seconds, default 60)" >&2
  exit 2
fi

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
build="${DEBRA_FUZZ_BUILD_DIR:-$root/build-fuzz}"
cxx=clang++-14

if ! command -v "$cxx" >/dev/null 2>&1 ||
   [[ ! -e "$("$cxx" -print-file-name=libclang_rt.fuzzer-x86_64.a)" ]]; then
  echo "fuzz.sh: installing clang-14 and libclang-rt-14-dev" >&2
  sudo_cmd=()
  [[ "$(id -u)" -ne 0 ]] && sudo_cmd=(sudo)
  "${sudo_cmd[@]}" apt-get install -y clang-14 libclang-rt-14-dev
fi

generator=()
command -v ninja >/dev/null 2>&1 && [[ ! -e "$build/CMakeCache.txt" ]] && generator=(-G Ninja)
cmake -S "$root" -B "$build" "${generator[@]}" \
  -DCMAKE_CXX_COMPILER="$cxx" \
  -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DDEBRA_SANITIZE=ON \
  -DDEBRA_FUZZ=ON \
  -DDEBRA_BUILD_TESTS=OFF
cmake --build "$build" --target fuzz_wire_decoder --parallel

corpus="$build/corpus/wire_decoder"
findings="$build/findings/wire_decoder-$(date +%Y%m%dT%H%M%S)"
mkdir -p "$corpus" "$findings"
cp -f "$root"/fuzz/corpus/wire_decoder/* "$corpus"/

status=0
"$build/bin/fuzz_wire_decoder" \
  -max_total_time="$seconds" \
  -max_len=65536 \
  -timeout=10 \
  -rss_limit_mb=2048 \
  -print_final_stats=1 \
  -artifact_prefix="$findings/" \
  "$corpus" || status=$?

if [[ "$status" -ne 0 ]] || [[ -n "$(ls -A "$findings")" ]]; then
  echo "fuzz.sh: FINDING (exit status $status); inputs in $findings" >&2
  ls -l "$findings" >&2 || true
  exit 1
fi
rmdir "$findings"
echo "fuzz.sh: no findings in ${seconds}s"
