#!/usr/bin/env bash
# Runs debra-inbox-bench against fresh routers in every durability mode and prints one JSON line per
# (mode, size). Usage: bench/inbox/run.sh [BUILD_DIR]   (default: build; binaries in BUILD_DIR/bin)
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
bin="${1:-$root/build}/bin"
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null; rm -rf "$work"' EXIT
for mode in "--sync always" "--sync batch" "--sync off" "--store none"; do
  for size in 64 1024; do
    dir="$work/$(echo "$mode" | tr -d ' -')-$size"
    # One sender sends 22,000 messages in a few seconds: the per-id rate limits would measure
    # themselves, not the store.
    "$bin/debra-server" --listen 127.0.0.1:0 --data-dir "$dir" $mode --rate-messages 0 --rate-bytes 0 \
      > "$work/out" 2> "$work/err" &
    pid=$!
    for _ in $(seq 100); do addr=$(sed -n 's/^debra-server ready on \([^ ]*\) .*/\1/p' "$work/out"); [ -n "$addr" ] && break; sleep 0.05; done
    "$bin/debra-inbox-bench" --server "$addr" --ca "$dir/cert.pem" --size "$size" --label "$mode" \
      --count "${COUNT:-20000}" --latency-samples "${SAMPLES:-2000}"
    kill -TERM $pid; wait $pid || true
  done
done
