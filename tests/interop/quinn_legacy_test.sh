#!/usr/bin/env bash
# Interop: the quinn-based legacy client (an independent QUIC stack, interop/quinn-legacy-client)
# against the real debra-server, next to the native debra CLI.
# Usage: quinn_legacy_test.sh DEBRA_SERVER DEBRA_CLI QUINN_CLIENT
set -uo pipefail
server_bin=$1 cli=$2 quinn=$3
work=$(mktemp -d)
server_pid=""
passed=0 failed=0
cleanup() {
  [ -n "$server_pid" ] && kill -TERM "$server_pid" 2>/dev/null && wait "$server_pid" 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT

check() {  # check NAME COMMAND...
  local name=$1; shift
  if "$@"; then passed=$((passed + 1)); echo "ok: $name"; else failed=$((failed + 1)); echo "FAILED: $name"; fi
}

start_server() {  # start_server LISTEN EXTRA_ARGS...
  local listen=$1; shift
  : > "$work/server.out"
  "$server_bin" --listen "$listen" --data-dir "$work/data" "$@" > "$work/server.out" 2> "$work/server.err" &
  server_pid=$!
  for _ in $(seq 100); do
    addr=$(sed -n 's/^debra-server ready on \([^ ]*\) .*/\1/p' "$work/server.out")
    [ -n "$addr" ] && return 0
    sleep 0.1
  done
  echo "server did not start"; cat "$work/server.err"; return 1
}

stop_server() {
  kill -TERM "$server_pid"; wait "$server_pid"; local rc=$?; server_pid=""
  if grep -qE "AddressSanitizer|runtime error:|LeakSanitizer" "$work/server.err"; then cat "$work/server.err"; return 1; fi
  return $rc
}

# The native CLI's credentials for an id: none, or (mtls=1) its client certificate from $work/pki.
mtls=0
auth_for() {  # auth_for ID
  [ "$mtls" = 1 ] && echo "--cert $work/pki/id-$1.pem --key $work/pki/id-$1-key.pem"
}

# A legacy receiver is registered once a native send to it is accepted rather than reported
# offline: poll with probes instead of sleeping. Each probe that lands is one extra delivery.
wait_registered() {  # wait_registered ID
  for _ in $(seq 100); do
    if "$cli" send --server "$addr" --insecure $(auth_for 999) --id 999 --to "$1" probe 2>/dev/null; then return 0; fi
    sleep 0.05
  done
  return 1
}

native_to_quinn() {
  timeout 20 "$quinn" --server "$addr" --id 2 --expect 4 --timeout 15 > "$work/q2.out" 2> "$work/q2.err" &
  local q=$!
  wait_registered 2 || return 1
  for i in 1 2 3; do "$cli" send --server "$addr" --ca "$work/data/cert.pem" $(auth_for 1) --id 1 --to 2 "native-$i" || return 1; done
  wait $q || { cat "$work/q2.err"; return 1; }
  [ "$(grep -v probe "$work/q2.out")" = "$(printf '1\tnative-1\n1\tnative-2\n1\tnative-3')" ] || { cat "$work/q2.out"; return 1; }
}

# A delivery larger than a datagram: the router's packets to quinn stay within the
# max_udp_payload_size quinn announces (1,480 bytes), even on loopback, whose route carries 64 KiB.
large_to_quinn() {
  local text
  text=$(head -c 20000 /dev/zero | tr '\0' L)
  timeout 20 "$quinn" --server "$addr" --id 7 --expect 2 --timeout 15 > "$work/q7.out" 2> "$work/q7.err" &
  local q=$!
  wait_registered 7 || return 1
  "$cli" send --server "$addr" --ca "$work/data/cert.pem" $(auth_for 1) --id 1 --to 7 "$text" || return 1
  wait $q || { cat "$work/q7.err"; return 1; }
  [ "$(grep -v probe "$work/q7.out")" = "$(printf '1\t%s' "$text")" ] || { head -c 300 "$work/q7.out"; return 1; }
}

quinn_to_native() {
  timeout 20 "$cli" listen --server "$addr" --insecure $(auth_for 3) --id 3 --count 4 --timeout 15 > "$work/l3.out" &
  local l=$!
  wait_registered 3 || return 1
  timeout 20 "$quinn" --server "$addr" --id 4 --to 3 --send quinn --count 3 || return 1
  wait $l || return 1
  [ "$(grep -v probe "$work/l3.out")" = "$(printf '4\tquinn-0\n4\tquinn-1\n4\tquinn-2')" ] || { cat "$work/l3.out"; return 1; }
}

quinn_to_quinn() {
  timeout 20 "$quinn" --server "$addr" --id 5 --expect 201 --timeout 15 > "$work/q5.out" 2> "$work/q5.err" &
  local q=$!
  wait_registered 5 || return 1
  timeout 20 "$quinn" --server "$addr" --id 6 --to 5 --send bulk --count 200 || return 1
  wait $q || { cat "$work/q5.err"; return 1; }
  # Every message exactly once and in the order sent.
  [ "$(grep -v probe "$work/q5.out")" = "$(for i in $(seq 0 199); do printf '6\tbulk-%d\n' "$i"; done)" ]
}

quinn_bad_id() {
  # An invalid id closes a legacy connection with InvalidId (application error 4).
  ! timeout 10 "$quinn" --server "$addr" --id -3 --expect 1 --timeout 5 2> "$work/bad.err" &&
    grep -q "InvalidId" "$work/bad.err"
}

for listen in 127.0.0.1:0 '[::1]:0'; do
  for retry in 64 0; do
    start_server "$listen" --retry-threshold "$retry" || exit 1
    label="$listen retry-threshold=$retry"
    check "native -> quinn ($label)" native_to_quinn
    check "native -> quinn, 20,000 bytes ($label)" large_to_quinn
    check "quinn -> native ($label)" quinn_to_native
    check "quinn -> quinn, 200 in order ($label)" quinn_to_quinn
    check "quinn invalid id ($label)" quinn_bad_id
    check "server clean exit ($label)" stop_server
  done
done
# --auth mtls --legacy allow: the quinn client presents no certificate (with_no_client_auth) and still
# gets in as a legacy client, next to native clients with certificates from `debra cert`.
"$cli" cert ca --out-dir "$work/pki" > /dev/null || exit 1
for id in 1 3 999; do "$cli" cert issue --id "$id" --ca-dir "$work/pki" --out-dir "$work/pki" > /dev/null || exit 1; done
mtls=1
start_server 127.0.0.1:0 --auth mtls --client-ca "$work/pki/ca.pem" --legacy allow || exit 1
label="--auth mtls --legacy allow"
check "native -> quinn ($label)" native_to_quinn
check "quinn -> native ($label)" quinn_to_native
check "quinn -> quinn, 200 in order ($label)" quinn_to_quinn
check "server clean exit ($label)" stop_server
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
