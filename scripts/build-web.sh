#!/usr/bin/env bash
# Builds the web app into web/dist: carve-web for wasm32 (release), the wasm-bindgen CLI pinned to
# the exact version of the wasm-bindgen crate in Cargo.lock (installed when missing), index.html.
set -euo pipefail
cd "$(dirname "$0")/.."
ver=$(grep -A1 '^name = "wasm-bindgen"$' Cargo.lock | sed -n 's/^version = "\(.*\)"$/\1/p')
if [ "$(wasm-bindgen --version 2>/dev/null | cut -d' ' -f2)" != "$ver" ]; then
  echo "installing wasm-bindgen-cli $ver (once, several minutes)"
  cargo install wasm-bindgen-cli --version "$ver"
fi
rustup target add wasm32-unknown-unknown >/dev/null 2>&1 || true
# --dev: the dev profile (dependencies optimised, quicker to build; what the tests use).
profile=release
[ "${1:-}" = "--dev" ] && profile=debug
if [ $profile = release ]; then
  # No debug info in the bundle (the native release profile keeps some for profiling).
  CARGO_PROFILE_RELEASE_DEBUG=0 cargo build --release -p carve-web --target wasm32-unknown-unknown
else
  cargo build -p carve-web --target wasm32-unknown-unknown
fi
rm -rf web/dist && mkdir -p web/dist
wasm-bindgen --target web --no-typescript --out-dir web/dist "${CARGO_TARGET_DIR:-target}/wasm32-unknown-unknown/$profile/carve_web.wasm"
cp index.html web/dist/
echo "web/dist: $(du -k web/dist/carve_web_bg.wasm | cut -f1) KiB wasm, $(gzip -9 -c web/dist/carve_web_bg.wasm | wc -c | awk '{printf "%d KiB", $1/1024}') gzipped"
