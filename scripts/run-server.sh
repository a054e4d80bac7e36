#!/usr/bin/env bash
# Installs what is missing, builds debra (build/bin/debra-server, build/bin/debra) and runs the
# router on its embedded defaults: 127.0.0.1:4433, data in ./debra-data. Arguments are passed to
# debra-server (see build/bin/debra-server --help).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
"$root/scripts/install-deps.sh"
cmake -S "$root" -B "$root/build" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build "$root/build" --target debra-server debra
exec "$root/build/bin/debra-server" "$@"
