#!/usr/bin/env bash
# What the message log's compaction costs the traffic beside it: a router on its defaults (durable,
# 64 MiB segments), 64 B × 64 pairs of `debra bench` at full speed, and an offline recipient whose
# inbox fills at TRICKLE 1 KiB messages a second meanwhile, spread over every segment, so that old
# segments are compacted as the log moves on. Prints, per run, the bench's JSON line, the trickle's,
# and how many compactions ran. TRICKLE=0 runs the same without it.
# Usage: bench/inbox/compaction.sh [BUILD_DIR]   (default: build; binaries in BUILD_DIR/bin)
#        env: RUNS (1), TRICKLE (1000), TRICKLE_SIZE (1024), DURATION (15), PAIRS (64), SIZE (64)
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
bin="${1:-$root/build}/bin"
runs=${RUNS:-1} trickle=${TRICKLE:-1000} duration=${DURATION:-15}
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null; rm -rf "$work"' EXIT
for run in $(seq "$runs"); do
  dir="$work/run-$run"
  # The limits would pace the tools rather than let the log fill: off. --log-level debug for the
  # compaction lines, which are counted.
  "$bin/debra-server" --listen 127.0.0.1:0 --data-dir "$dir" --rate-messages 0 --rate-bytes 0 \
    --max-connections-per-address 1000 --log-level debug > "$work/out" 2> "$work/err" &
  pid=$!
  addr=
  for _ in $(seq 100); do addr=$(sed -n 's/^debra-server ready on \([^ ]*\) .*/\1/p' "$work/out"); [ -n "$addr" ] && break; sleep 0.05; done
  [ -n "$addr" ] || { echo "compaction.sh: the router did not start" >&2; cat "$work/err" >&2; exit 1; }
  trickler=
  if [ "$trickle" != 0 ]; then
    "$bin/debra-inbox-bench" --server "$addr" --ca "$dir/cert.pem" --size "${TRICKLE_SIZE:-1024}" \
      --trickle "$trickle" --seconds "$((duration + 3))" --label trickle &
    trickler=$!
  fi
  "$bin/debra" bench --server "$addr" --ca "$dir/cert.pem" --pairs "${PAIRS:-64}" --size "${SIZE:-64}" \
    --duration "$duration" --warmup 1 --json 2> /dev/null
  [ -z "$trickler" ] || wait "$trickler"
  echo "{\"compactions\":$(grep -c 'message log: compacting' "$work/out" "$work/err" | awk -F: '{s+=$2} END {print s}')}"
  kill -TERM $pid; wait $pid || true
done
