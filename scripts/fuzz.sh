#!/usr/bin/env bash
# Fuzzes one libFuzzer target (fuzz/TARGET.cc) for SECONDS (default 60) and fails on any finding.
#
#   scripts/fuzz.sh [TARGET] [SECONDS]      # TARGET: a name from fuzz/corpus/ (default wire_decoder)
#
# Uses its own build directory (build-fuzz, or $DEBRA_FUZZ_BUILD_DIR) configured with clang++-14 and
# ASan+UBSan, so ordinary builds are untouched. The corpus grows in build-fuzz/corpus/TARGET, seeded
# from fuzz/corpus/TARGET on every run; crashing inputs land in build-fuzz/findings/. A finding worth
# keeping goes into fuzz/corpus/TARGET, where the fuzz_replay test replays it.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
target=wire_decoder
if [[ $# -gt 0 && ! "$1" =~ ^[0-9]+$ ]]; then
  target="$1"
  shift
fi
seconds="${1:-60}"
if ! [[ "$seconds" =~ ^[0-9]+$ ]] || [[ "$seconds" -eq 0 ]] || [[ ! -d "$root/fuzz/corpus/$target" ]]; then
  echo "usage: $0 [TARGET] [SECONDS]  (TARGET one of: $(ls "$root/fuzz/corpus" | tr '\n' ' ')SECONDS a positive number, default 60)" >&2
  exit 2
fi

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
cmake --build "$build" --target "fuzz_$target" --parallel

corpus="$build/corpus/$target"
findings="$build/findings/$target-$(date +%Y%m%dT%H%M%S)"
mkdir -p "$corpus" "$findings"
cp -f "$root/fuzz/corpus/$target"/* "$corpus"/

status=0
"$build/bin/fuzz_$target" \
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
echo "fuzz.sh: $target: no findings in ${seconds}s"
