#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
#
# Starts nats-server (Debian 12: apt-get install nats-server) with TLS on 127.0.0.1, for
# debra-nats-load. Generates an ECDSA P-256 CA and a server certificate signed by it (SAN
# IP:127.0.0.1 and DNS:localhost) with openssl, writes a config, starts the server and waits until
# it reports that it is ready.
#
# Usage: run-nats-server.sh [--port PORT] [--dir DIR] [--background | --stop]
#   --port PORT    listen port (default 4222)
#   --dir DIR      where the certificates, config, log and pid file go (default: a new mktemp -d)
#   --background   start, wait until ready, print the variables below and exit, leaving the server
#                  running; stop it with --stop --dir DIR (or kill $NATS_PID)
#   --stop         stop the server started in the background with the same --dir
# Without --background it stays in the foreground until the server exits or gets SIGINT/SIGTERM.
#
# Once the port is ready it prints, on stdout, lines that a shell can eval:
#   NATS_URL=tls://127.0.0.1:PORT
#   NATS_CA=DIR/ca.pem
#   NATS_PID=PID
#   NATS_DIR=DIR
# e.g.  eval "$(bench/nats/run-nats-server.sh --background)"
#       build/bin/debra-nats-load --url "$NATS_URL" --ca "$NATS_CA" --pairs 8
#       bench/nats/run-nats-server.sh --stop --dir "$NATS_DIR"
set -euo pipefail

port=4222
dir=""
mode=foreground
while [[ $# -gt 0 ]]; do
  case "$1" in
    --port) port="$2"; shift 2 ;;
    --dir) dir="$2"; shift 2 ;;
    --background) mode=background; shift ;;
    --stop) mode=stop; shift ;;
    -h|--help) sed -n '3,25p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "run-nats-server.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done

if [[ "$mode" == stop ]]; then
  [[ -n "$dir" && -f "$dir/nats-server.pid" ]] || { echo "run-nats-server.sh: no $dir/nats-server.pid" >&2; exit 1; }
  pid="$(cat "$dir/nats-server.pid")"
  kill "$pid" 2>/dev/null || true
  for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || exit 0; sleep 0.1; done
  kill -9 "$pid" 2>/dev/null || true
  exit 0
fi

command -v nats-server >/dev/null || { echo "run-nats-server.sh: nats-server not found (apt-get install nats-server)" >&2; exit 1; }
command -v openssl >/dev/null || { echo "run-nats-server.sh: openssl not found" >&2; exit 1; }
if [[ -z "$dir" ]]; then dir="$(mktemp -d -t debra-nats.XXXXXX)"; fi
mkdir -p "$dir"
dir="$(cd "$dir" && pwd)"

if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
  echo "run-nats-server.sh: something already listens on 127.0.0.1:$port" >&2
  exit 1
fi

# Certificates: a CA, and a server certificate for 127.0.0.1/localhost signed by it.
if [[ ! -f "$dir/server.pem" ]]; then
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 30 \
    -keyout "$dir/ca-key.pem" -out "$dir/ca.pem" -subj "/CN=debra-bench NATS CA" \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
    -keyout "$dir/server-key.pem" -out "$dir/server.csr" -subj "/CN=localhost" 2>/dev/null
  printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n' \
    > "$dir/server.ext"
  openssl x509 -req -in "$dir/server.csr" -CA "$dir/ca.pem" -CAkey "$dir/ca-key.pem" -CAcreateserial \
    -days 30 -extfile "$dir/server.ext" -out "$dir/server.pem" 2>/dev/null
  rm -f "$dir/server.csr" "$dir/server.ext"
fi

cat > "$dir/nats-server.conf" <<EOF
listen: 127.0.0.1:$port
tls {
  cert_file: "$dir/server.pem"
  key_file: "$dir/server-key.pem"
  timeout: 5
}
EOF

nats-server -c "$dir/nats-server.conf" >"$dir/nats-server.log" 2>&1 &
pid=$!
echo "$pid" > "$dir/nats-server.pid"

ready=0
for _ in $(seq 100); do
  if ! kill -0 "$pid" 2>/dev/null; then break; fi
  # The server logs this once it listens; probing the port instead would log a TLS handshake error.
  if grep -q "Server is ready" "$dir/nats-server.log" 2>/dev/null; then ready=1; break; fi
  sleep 0.1
done
if [[ "$ready" != 1 ]]; then
  echo "run-nats-server.sh: nats-server did not come up; log:" >&2
  cat "$dir/nats-server.log" >&2
  kill "$pid" 2>/dev/null || true
  exit 1
fi

echo "NATS_URL=tls://127.0.0.1:$port"
echo "NATS_CA=$dir/ca.pem"
echo "NATS_PID=$pid"
echo "NATS_DIR=$dir"

if [[ "$mode" == background ]]; then exit 0; fi
trap 'kill "$pid" 2>/dev/null || true' INT TERM
wait "$pid"
