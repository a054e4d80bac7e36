#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
#
# The side-by-side figures of docs/benchmarks.md, from one run on one machine: debra native, debra
# legacy and NATS over TLS, sizes x pairs, medians of several runs; then p99 at half of debra's
# peak rate, idle-connection memory and handshakes/s. Loopback only (127.0.0.1).
#
# Usage: bench/run-comparison.sh [BUILD_DIR]      (default BUILD_DIR: build-release)
#
# It builds BUILD_DIR as Release (debra, debra-server, debra-nats-load), starts nats-server with TLS
# (bench/nats/run-nats-server.sh) and a fresh debra-server with its default flags (but for the
# per-address connection limit and the per-id rate limits, see start_debra) for every run,
# and writes into RESULTS_DIR:
#   raw.jsonl        every run: {"label","run","server_args","result":{the tool's JSON line}}
#   summary.tsv      medians per label, size and pairs
#   extra.json       p99 at 50 % of peak, idle connections, handshakes/s
#   summary.md       the markdown tables (also printed)
#   comparison.png   msgs/s and p99 against pairs, one panel per size (gnuplot)
#   conditions.txt   machine, load average before and after, the settings below
#
# Settings (environment variables, defaults in brackets):
#   RUNS [3]                runs per cell; the tables show medians
#   DURATION [3]            measured seconds per run      WARMUP [1]   warm-up seconds per run
#   SIZES ["64 1024 16384"] payload bytes                 PAIRS ["1 8 64"]  pair counts
#   WINDOW [64]             in-flight messages per pair
#   LABELS ["native legacy nats native-nostore native-1thread native-sqlite"]   which rows to run:
#       native / legacy: debra as shipped (--store log --sync batch, a loop thread per CPU), by protocol
#       native-1thread:  debra native with --threads 1 (one loop thread, as before #5's threads)
#       native-nostore:  debra native with --store none (forwarding only, the original semantics)
#       native-sqlite:   debra native with --store sqlite (the first store)
#       nats:            nats-server 2.9 with TLS, through debra-nats-load
#   IDLE_CONNECTIONS [10000]  idle registered connections for the memory and handshake figures, RUNS
#                           times (0: skip)
#   HALF_PEAK [1]           measure p99 at 50 % of debra native's 64 B peak (0: skip)
#   THREADS [2]             client event-loop threads of both load tools
#   DEBRA_PORT [14433]  NATS_PORT [14222]   RESULTS_DIR [bench/results]   SKIP_BUILD [0]
#
# Needs: cmake, ninja, nats-server, libnats-dev, openssl, jq, gnuplot, time (scripts/install-deps.sh --bench).
set -euo pipefail

here="$(cd "$(dirname "$0")/.." && pwd)"
build="${1:-$here/build-release}"
RUNS="${RUNS:-3}"
DURATION="${DURATION:-3}"
WARMUP="${WARMUP:-1}"
SIZES="${SIZES:-64 1024 16384}"
PAIRS="${PAIRS:-1 8 64}"
WINDOW="${WINDOW:-64}"
LABELS="${LABELS:-native legacy nats native-nostore native-1thread native-sqlite}"
IDLE_CONNECTIONS="${IDLE_CONNECTIONS:-10000}"
HALF_PEAK="${HALF_PEAK:-1}"
THREADS="${THREADS:-2}"
DEBRA_PORT="${DEBRA_PORT:-14433}"
NATS_PORT="${NATS_PORT:-14222}"
RESULTS_DIR="${RESULTS_DIR:-$here/bench/results}"
SKIP_BUILD="${SKIP_BUILD:-0}"

for tool in jq gnuplot nats-server openssl /usr/bin/time; do
  command -v "$tool" >/dev/null || { echo "run-comparison.sh: $tool not found (scripts/install-deps.sh --bench)" >&2; exit 1; }
done
started_at=$(date +%s)
log() { printf '[%4ds] %s\n' "$(( $(date +%s) - started_at ))" "$*" >&2; }

if [[ "$SKIP_BUILD" != 1 ]]; then
  log "building $build (Release)"
  cmake -S "$here" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DDEBRA_BUILD_TESTS=OFF >/dev/null
  cmake --build "$build" --target debra debra-server debra-nats-load >/dev/null
fi
bin="$build/bin"
[[ -x "$bin/debra-nats-load" ]] || { echo "run-comparison.sh: $bin/debra-nats-load missing (libnats-dev)" >&2; exit 1; }

work="$(mktemp -d -t debra-comparison.XXXXXX)"
mkdir -p "$RESULTS_DIR"
raw="$RESULTS_DIR/raw.jsonl"
: > "$raw"
debra_pid=""
nats_dir="$work/nats"

stop_debra() {
  if [[ -n "$debra_pid" ]]; then
    kill "$debra_pid" 2>/dev/null || true
    wait "$debra_pid" 2>/dev/null || true
    debra_pid=""
  fi
}
cleanup() {
  stop_debra
  [[ -f "$nats_dir/nats-server.pid" ]] && bench/nats/run-nats-server.sh --stop --dir "$nats_dir" || true
  rm -rf "$work"
}
trap cleanup EXIT
cd "$here"

# start_debra ARGS...: a fresh data dir and a fresh router, so no run inherits another's store.
# Every load connection comes from 127.0.0.1, and the connections of the previous run may still be
# in their closing period, so the per-address limit (default 128) is lifted. The per-id rate limits
# (default 1,000 msgs/s and 8 MiB/s per sender) are off: they cap one sender by policy, and this
# measures what the router can carry (NATS has no such limit either). Nothing else differs from the
# defaults unless ARGS say so.
start_debra() {
  stop_debra
  local dir="$work/debra-$RANDOM$RANDOM"
  mkdir -p "$dir"
  "$bin/debra-server" --listen "127.0.0.1:$DEBRA_PORT" --data-dir "$dir" --max-connections-per-address 100000 \
    --rate-messages 0 --rate-bytes 0 "$@" \
    >"$dir/stdout" 2>"$dir/stderr" &
  debra_pid=$!
  for _ in $(seq 200); do
    grep -q "debra-server ready" "$dir/stdout" 2>/dev/null && { debra_ca="$dir/cert.pem"; return 0; }
    kill -0 "$debra_pid" 2>/dev/null || break
    sleep 0.05
  done
  echo "run-comparison.sh: debra-server did not start:" >&2
  cat "$dir/stderr" >&2
  exit 1
}

# The median of a list of numbers, for every jq program below.
jq_median='def median: sort | if length == 0 then 0 elif length % 2 == 1 then .[length/2|floor]
                     else (.[length/2 - 1] + .[length/2]) / 2 end;'

clk_tck=$(getconf CLK_TCK)
# cpu_seconds PID: the user + system CPU time the process has used so far (0 if it is gone).
cpu_seconds() { awk -v t="$clk_tck" '{ printf "%.3f", ($14 + $15) / t }' "/proc/$1/stat" 2>/dev/null || echo 0; }

# record LABEL RUN SERVER_ARGS JSON_LINE [SERVER_CPU_S CLIENT_CPU_S]
record() {
  jq -c --arg name "$1" --argjson run "$2" --arg server "$3" --argjson server_cpu "${5:-0}" --argjson client_cpu "${6:-0}" \
    '{"label": $name, "run": $run, "server_args": $server, "server_cpu_s": $server_cpu, "client_cpu_s": $client_cpu,
      "result": .}' <<< "$4" >> "$raw"
}

# run_once LABEL SIZE PAIRS RUN: one run of one tool on one shape, against a fresh debra-server for
# the debra labels (nats-server runs throughout).
run_once() {
  local label="$1" size="$2" pairs="$3" run="$4" server_args="" line
  local shape=(--pairs "$pairs" --size "$size" --window "$WINDOW" --duration "$DURATION" --warmup "$WARMUP"
               --threads "$THREADS" --json)
  case "$label" in
    native|legacy) server_args="" ;;
    native-nostore) server_args="--store none" ;;
    native-sqlite) server_args="--store sqlite" ;;
    native-1thread) server_args="--threads 1" ;;
  esac
  if [[ "$label" != nats ]]; then
    # shellcheck disable=SC2086
    start_debra $server_args
  fi
  local server_pid="$debra_pid" timed=(/usr/bin/time -f '%U %S' -o "$work/time")
  [[ "$label" == nats ]] && server_pid="$NATS_PID"
  local cpu_before cpu_after
  cpu_before=$(cpu_seconds "$server_pid")
  case "$label" in
    nats) line="$("${timed[@]}" "$bin/debra-nats-load" --url "tls://127.0.0.1:$NATS_PORT" --ca "$nats_dir/ca.pem" "${shape[@]}" 2>"$work/err")" || true ;;
    legacy) line="$("${timed[@]}" "$bin/debra" bench --server "127.0.0.1:$DEBRA_PORT" --ca "$debra_ca" --mode legacy "${shape[@]}" 2>"$work/err")" || true ;;
    *) line="$("${timed[@]}" "$bin/debra" bench --server "127.0.0.1:$DEBRA_PORT" --ca "$debra_ca" --mode native "${shape[@]}" 2>"$work/err")" || true ;;
  esac
  cpu_after=$(cpu_seconds "$server_pid")
  if [[ -z "$line" ]] || ! jq -e . >/dev/null 2>&1 <<< "$line"; then
    echo "run-comparison.sh: $label ${size} B x $pairs run $run produced no report:" >&2
    cat "$work/err" >&2
    return 0
  fi
  record "$label" "$run" "$server_args" "$line" "$(awk -v a="$cpu_after" -v b="$cpu_before" 'BEGIN { printf "%.3f", a - b }')" \
    "$(awk '{ printf "%.3f", $1 + $2 }' "$work/time" 2>/dev/null || echo 0)"
  log "$(jq -r --arg l "$label" '"\($l) \(.size) B x \(.pairs): \(.msgs_per_s|floor) msgs/s, p99 \(.p99_us) us, lost \(.lost)"' <<< "$line")"
}

{
  echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo "machine: $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(free -g | awk '/Mem:/{print $2}') GiB"
  echo "kernel: $(uname -r)"
  echo "nats-server: $(nats-server --version 2>&1 | head -1)"
  echo "settings: RUNS=$RUNS DURATION=$DURATION WARMUP=$WARMUP SIZES='$SIZES' PAIRS='$PAIRS' WINDOW=$WINDOW THREADS=$THREADS LABELS='$LABELS' IDLE_CONNECTIONS=$IDLE_CONNECTIONS"
  echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
  # The durable rows wait for one fsync per router loop iteration: how long one takes here and now.
  echo "synchronous 4 KiB writes (dd oflag=dsync, 100 of them, in $work): $(dd if=/dev/zero of="$work/fsync-probe" bs=4k count=100 oflag=dsync 2>&1 | tail -1)"
  rm -f "$work/fsync-probe"
} > "$RESULTS_DIR/conditions.txt"

if [[ " $LABELS " == *" nats "* ]]; then
  eval "$(bench/nats/run-nats-server.sh --background --port "$NATS_PORT" --dir "$nats_dir")"
fi

# Within a shape the tools take turns, run by run: the VM's speed drifts over minutes (NATS moved 16 %
# more at 64 B x 64 pairs in one run than in another an hour before), and a tool whose runs all came
# in one stretch would carry that stretch's drift into the ratio.
for size in $SIZES; do
  for pairs in $PAIRS; do
    for run in $(seq "$RUNS"); do
      for label in $LABELS; do run_once "$label" "$size" "$pairs" "$run"; done
    done
  done
done
[[ -f "$nats_dir/nats-server.pid" ]] && bench/nats/run-nats-server.sh --stop --dir "$nats_dir"

# Medians per label, size and pairs.
jq -rs "$jq_median"'
  # server_us_per_msg: the server CPU of a whole run (warm-up, window and drain) over the messages
  # of the whole run, estimated as msgs/s x (warm-up + duration): an approximation.
  ["label","size","pairs","runs","msgs_per_s","mib_per_s","p50_us","p99_us","p999_us","lost","reordered",
   "server_us_per_msg","server_cpu_s","client_cpu_s"],
  (map(select(.result.duration_s)) | group_by([.label, .result.size, .result.pairs])[] |
   [.[0].label, .[0].result.size, .[0].result.pairs, length,
    (map(.result.msgs_per_s) | median), (map(.result.mib_per_s) | median),
    (map(.result.p50_us) | median), (map(.result.p99_us) | median), (map(.result.p999_us) | median),
    (map(.result.lost) | add), (map(.result.reordered) | add),
    (map(if .result.msgs_per_s > 0 then .server_cpu_s * 1e6 / (.result.msgs_per_s * ($warmup + .result.duration_s))
         else 0 end) | median * 100 | round / 100),
    (map(.server_cpu_s) | median), (map(.client_cpu_s) | median)]) | @tsv' --argjson warmup "$WARMUP" "$raw" \
  > "$RESULTS_DIR/summary.tsv"

# p99 at 50 % of debra native's peak: the 64 B cell with the highest median, paced at half of it.
extra="{}"
if [[ "$HALF_PEAK" == 1 && " $LABELS " == *" native "* ]]; then
  read -r peak_pairs peak_rate < <(awk -F'\t' '$1=="native" && $2==64 { if ($5 > best) { best=$5; p=$3 } }
                                   END { if (best > 0) printf "%d %.0f\n", p, best }' "$RESULTS_DIR/summary.tsv") || true
  if [[ -n "${peak_rate:-}" ]]; then
    half=$(( peak_rate / 2 ))
    start_debra
    for run in $(seq "$RUNS"); do
      line="$("$bin/debra" bench --server "127.0.0.1:$DEBRA_PORT" --ca "$debra_ca" --pairs "$peak_pairs" --size 64 \
              --window "$WINDOW" --duration "$DURATION" --warmup "$WARMUP" --threads "$THREADS" --rate "$half" --json 2>"$work/err")" || true
      if jq -e . >/dev/null 2>&1 <<< "$line"; then
        record "native-half-peak" "$run" "" "$line"
        log "$(jq -r '"half peak \(.pairs) pairs at '"$half"' msgs/s: \(.msgs_per_s|floor) msgs/s, p50 \(.p50_us) p99 \(.p99_us) us"' <<< "$line")"
      else
        cat "$work/err" >&2
      fi
    done
    extra=$(jq -s --argjson peak "$peak_rate" --argjson half "$half" --argjson pairs "$peak_pairs" "$jq_median"'
      map(select(.label == "native-half-peak")) |
      {half_peak: {peak_msgs_per_s: $peak, rate: $half, pairs: $pairs, runs: length,
                   msgs_per_s: (map(.result.msgs_per_s) | median), p50_us: (map(.result.p50_us) | median),
                   p99_us: (map(.result.p99_us) | median), p999_us: (map(.result.p999_us) | median)}}' "$raw")
  fi
fi

# Idle connections: each client connection is one UDP socket, hence the descriptor limit.
if [[ "$IDLE_CONNECTIONS" -gt 0 ]]; then
  need=$(( IDLE_CONNECTIONS + 256 ))
  if [[ "$(ulimit -n)" != unlimited && "$(ulimit -n)" -lt "$need" ]]; then
    ulimit -n "$need" 2>/dev/null || { echo "run-comparison.sh: ulimit -n is $(ulimit -n), $need needed" >&2; exit 1; }
  fi
  # RUNS runs, a fresh router each, medians: one run's handshake rate moved by a third with what the
  # machine had just done (1,965 and 2,296/s at the end of two script runs, 2,900–3,110/s by hand).
  for run in $(seq "$RUNS"); do
    start_debra
    sleep 0.5
    line="$("$bin/debra" bench connections --server "127.0.0.1:$DEBRA_PORT" --ca "$debra_ca" --count "$IDLE_CONNECTIONS" \
            --server-pid "$debra_pid" --hold 2 --threads "$THREADS" --json 2>"$work/err")" || true
    if jq -e . >/dev/null 2>&1 <<< "$line"; then
      record "connections" "$run" "" "$line"
      log "$(jq -r '"\(.connected) idle connections: \(.handshakes_per_s|floor) handshakes/s, \(.rss_per_connection_kib) KiB RSS each"' <<< "$line")"
    else
      cat "$work/err" >&2
    fi
    stop_debra
  done
  connections=$(jq -s -c "$jq_median"'
      map(select(.label == "connections") | .result) |
      if length == 0 then empty else
        {count: .[0].count, runs: length, connected: (map(.connected) | min),
         handshakes_per_s: (map(.handshakes_per_s) | median), handshakes_per_s_runs: map(.handshakes_per_s),
         server_rss_before_kib: (map(.server_rss_before_kib) | median),
         server_rss_after_kib: (map(.server_rss_after_kib) | median),
         rss_per_connection_kib: (map(.rss_per_connection_kib) | median)} end' "$raw")
  [[ -n "$connections" ]] && extra=$(jq -c --argjson c "$connections" '. + {connections: $c}' <<< "$extra")
fi
echo "$extra" | jq . > "$RESULTS_DIR/extra.json"
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)" >> "$RESULTS_DIR/conditions.txt"
echo "runtime: $(( $(date +%s) - started_at )) s" >> "$RESULTS_DIR/conditions.txt"

# table_rows AWK_ACTION EMPTY: one markdown row per size and pair count, a cell per label, printed by
# AWK_ACTION from that label's line of summary.tsv, or EMPTY where there is none.
table_rows() {
  local action="$1" empty="$2" size pairs label row cell
  for size in $SIZES; do
    for pairs in $PAIRS; do
      row="| $size B | $pairs |"
      for label in $LABELS; do
        cell=$(awk -F'\t' -v l="$label" -v s="$size" -v p="$pairs" "\$1==l && \$2==s && \$3==p { $action }" \
               "$RESULTS_DIR/summary.tsv")
        row="$row ${cell:-$empty} |"
      done
      echo "$row"
    done
  done
}

# The markdown tables.
{
  echo "| size | pairs | $(for l in $LABELS; do printf '%s msgs/s | %s p99 µs | ' "$l" "$l"; done | sed 's/ | $//') |"
  echo "|---|---|$(for _ in $LABELS; do printf -- '---|---|'; done)"
  table_rows 'printf "%s | %s", ($5 >= 1000 ? sprintf("%.1f k", $5/1000) : sprintf("%.0f", $5)), sprintf("%.0f", $8)' \
    '— | —'
  echo
  echo "MiB/s (medians):"
  echo
  echo "| size | pairs | $(for l in $LABELS; do printf '%s | ' "$l"; done | sed 's/ | $//') |"
  echo "|---|---|$(for _ in $LABELS; do printf -- '---|'; done)"
  table_rows 'printf "%.1f", $6' '—'
  echo
  echo "CPU per run (medians): the server's µs of CPU per message (approximate: a whole run's CPU over"
  echo "msgs/s × (warm-up + duration)) and the load tool's CPU seconds (user + system) per run of"
  echo "$WARMUP + $DURATION s plus set-up and drain:"
  echo
  echo "| size | pairs | $(for l in $LABELS; do printf '%s server µs/msg | %s tool CPU s | ' "$l" "$l"; done | sed 's/ | $//') |"
  echo "|---|---|$(for _ in $LABELS; do printf -- '---|---|'; done)"
  table_rows 'printf "%.2f | %.2f", $12, $14' '— | —'
  echo
  jq -r 'if .half_peak then "- p99 at 50 % of peak: debra native, 64 B x \(.half_peak.pairs) pairs paced at \(.half_peak.rate) msgs/s (peak \(.half_peak.peak_msgs_per_s)): p50 \(.half_peak.p50_us|round) µs, p99 \(.half_peak.p99_us|round) µs, p99.9 \(.half_peak.p999_us|round) µs" else empty end' "$RESULTS_DIR/extra.json"
  jq -r 'if .connections then "- idle connections (medians of \(.connections.runs) runs): \(.connections.connected) of \(.connections.count) registered (the fewest of any run), \(.connections.handshakes_per_s) handshakes/s (runs: \(.connections.handshakes_per_s_runs | map(floor | tostring) | join(", "))), server RSS \(.connections.server_rss_before_kib) -> \(.connections.server_rss_after_kib) KiB = \(.connections.rss_per_connection_kib) KiB per connection" else empty end' "$RESULTS_DIR/extra.json"
} > "$RESULTS_DIR/summary.md"

# The plot: one column per size; msgs/s (top) and p99 (bottom) against pairs, one line per label.
plot_data="$work/plot"
mkdir -p "$plot_data"
for label in $LABELS; do
  for size in $SIZES; do
    awk -F'\t' -v l="$label" -v s="$size" '$1==l && $2==s { print $3, $5, $8 }' "$RESULTS_DIR/summary.tsv" | sort -n \
      > "$plot_data/$label-$size.dat"
  done
done
ncols=$(wc -w <<< "$SIZES")
{
  echo "set terminal pngcairo size $(( 420 * ncols )),760 font ',9'"
  echo "set output '$RESULTS_DIR/comparison.png'"
  echo "set multiplot layout 2,$ncols title 'debra vs NATS-TLS, window $WINDOW, medians of $RUNS runs ($(date -u +%Y-%m-%d), $(nproc) CPUs shared by router and load tool)'"
  echo "set logscale x 2; set logscale y; set grid; set key bottom right; set xlabel 'pairs'"
  for what in msgs p99; do
    for size in $SIZES; do
      if [[ "$what" == msgs ]]; then echo "set ylabel 'msgs/s'; set title '$size B: throughput'"; col=2
      else echo "set ylabel 'p99 one-way latency, µs'; set title '$size B: p99 latency'"; col=3; fi
      plots=()
      for label in $LABELS; do
        [[ -s "$plot_data/$label-$size.dat" ]] && plots+=("'$plot_data/$label-$size.dat' using 1:$col with linespoints title '$label'")
      done
      (IFS=,; echo "plot ${plots[*]}")
    done
  done
  echo "unset multiplot"
} > "$work/plot.gp"
gnuplot "$work/plot.gp"

cat "$RESULTS_DIR/summary.md"
log "done: $RESULTS_DIR (runtime $(( $(date +%s) - started_at )) s)"
