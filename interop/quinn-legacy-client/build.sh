#!/usr/bin/env bash
# Builds quinn-legacy-client offline, from Debian 12's
# packaged Rust crates. Usage: build.sh [BUILD_DIR]   (default: build/interop in the repository)
# The last line printed is the path of the quinn-legacy-client binary.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
build_dir="${1:-$here/../../build/interop}"
mkdir -p "$build_dir"
build_dir="$(cd "$build_dir" && pwd)"

# Debian packages: the crates' sources (into /usr/share/cargo/registry), flatc for the
# compatibility test.
packages=(librust-quinn-dev librust-rustls-dev librust-tokio-dev flatbuffers-compiler)
missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
# A toolchain: prefer one already there (rustup's in ~/.cargo/bin), else Debian's.
if ! command -v cargo >/dev/null 2>&1 && [ -x "${HOME:-/root}/.cargo/bin/cargo" ]; then
    export PATH="${HOME:-/root}/.cargo/bin:$PATH"
fi
command -v cargo >/dev/null 2>&1 || missing+=(cargo rustc)
if [ ${#missing[@]} -gt 0 ]; then
    echo "build.sh: installing ${missing[*]}" >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# Offline cargo with its own CARGO_HOME: crates-io is replaced by Debian's directory source.
# (RUSTUP_HOME is left alone, so rustup's toolchains keep working.)
export CARGO_HOME="$build_dir/cargo-home"
mkdir -p "$CARGO_HOME"
cat > "$CARGO_HOME/config.toml" <<'EOF'
[source.crates-io]
replace-with = "debian-packages"

[source.debian-packages]
directory = "/usr/share/cargo/registry"

[net]
offline = true
EOF

cargo build --release --offline --quiet \
    --manifest-path "$here/Cargo.toml" --target-dir "$build_dir/target" >&2
echo "$build_dir/target/release/quinn-legacy-client"
