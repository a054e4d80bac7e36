#!/usr/bin/env bash
# What the message log's compaction costs the traffic beside it: a router on its defaults (durable,
# 64 MiB segments), 64 B × 64 pairs of `debra bench` at full speed, and an offline recipient whose
# inbox fills at TRICKLE 1 KiB messages a second meanwhile, spread over every segment, so that old
# segments are compacted as the log moves on. With BACKLOG=N, another offline recipient is first
# sent N messages of BACKLOG_SIZE bytes (64), BACKLOG_RATE a second (200,000), which it holds all
# along. Prints, per run, the bench's JSON line, the trickle's, how many
# compaction rounds ran and the bytes they copied (debra_store_compactions_total,
# debra_store_compacted_bytes_total), and how many loop iterations over the bench's run took longer
# than 10 and 25 ms (debra_loop_iteration_seconds). TRICKLE=0 runs without a trickle; RATE paces
# the bench (its --rate; 0: as fast as the window allows).
# Usage: bench/inbox/compaction.sh [BUILD_DIR]   (default: build; binaries in BUILD_DIR/bin)
#        env: RUNS (1), TRICKLE (1000), TRICKLE_SIZE (1024), DURATION (15), PAIRS (64), SIZE (64),
#             RATE (0), BACKLOG (0), BACKLOG_SIZE (64), BACKLOG_RATE (200000)
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
bin="${1:-$root/build}/bin"
runs=${RUNS:-1} trickle=${TRICKLE:-1000} duration=${DURATION:-15} backlog=${BACKLOG:-0}
backlog_size=${BACKLOG_SIZE:-64} backlog_rate=${BACKLOG_RATE:-200000}
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null; rm -rf "$work"' EXIT
for run in $(seq "$runs"); do
  dir="$work/run-$run"
  # The limits would pace the tools rather than let the log fill: off.
  "$bin/debra-server" --listen 127.0.0.1:0 --data-dir "$dir" --rate-messages 0 --rate-bytes 0 \
    --max-connections-per-address 1000 --inbox-max-messages "$((backlog + 100000))" \
    --metrics-listen 127.0.0.1:0 > "$work/out" 2> "$work/err" &
  pid=$!
  addr=
  for _ in $(seq 100); do addr=$(sed -n 's/^debra-server ready on \([^ ]*\) .*/\1/p' "$work/out"); [ -n "$addr" ] && break; sleep 0.05; done
  [ -n "$addr" ] || { echo "compaction.sh: the router did not start" >&2; cat "$work/err" >&2; exit 1; }
  metrics=$(sed -n 's/^debra-server metrics on \(http[^ ]*\)$/\1/p' "$work/out")
  # Loop iterations over 10 ms and over 25 ms so far, all threads.
  long_iterations() {
    curl -s "$metrics" | awk '/^debra_loop_iteration_seconds_bucket/ {
      if ($1 ~ /le="0.01"/) a += $2; if ($1 ~ /le="0.025"/) b += $2; if ($1 ~ /le="\+Inf"/) t += $2 }
      END { print t - a, t - b }'
  }
  counter() { curl -s "$metrics" | awk -v name="$1" '$1 == name { printf "%d", $2 }'; }
  if [ "$backlog" != 0 ]; then
    "$bin/debra-inbox-bench" --server "$addr" --ca "$dir/cert.pem" --size "$backlog_size" --window 4096 \
      --base-id 5000 --trickle "$backlog_rate" --seconds "$(awk -v n="$backlog" -v r="$backlog_rate" 'BEGIN { print n / r }')" \
      --label backlog
  fi
  before=$(long_iterations)
  trickler=
  if [ "$trickle" != 0 ]; then
    "$bin/debra-inbox-bench" --server "$addr" --ca "$dir/cert.pem" --size "${TRICKLE_SIZE:-1024}" \
      --trickle "$trickle" --seconds "$((duration + 3))" --label trickle &
    trickler=$!
  fi
  "$bin/debra" bench --server "$addr" --ca "$dir/cert.pem" --pairs "${PAIRS:-64}" --size "${SIZE:-64}" \
    --duration "$duration" --warmup 1 --rate "${RATE:-0}" --json 2> /dev/null
  [ -z "$trickler" ] || wait "$trickler"
  sleep 0.5  # the metrics page is at most 250 ms old
  read -r over10 over25 <<< "$(echo "$before $(long_iterations)" | awk '{ print $3 - $1, $4 - $2 }')"
  echo "{\"compactions\":$(counter debra_store_compactions_total),\"compacted_bytes\":$(counter debra_store_compacted_bytes_total),\"iterations_over_10ms\":$over10,\"iterations_over_25ms\":$over25}"
  kill -TERM $pid; wait $pid || true
done
