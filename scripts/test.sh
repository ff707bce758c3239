#!/usr/bin/env bash
# The whole test suite, from a fresh machine: installs what is missing, then builds and tests.
#   software Vulkan (llvmpipe) so the wgpu shaders are tested without a GPU,
#   the wasm32 target (carve-core must build for the browser),
#   the SmolLM2-135M GGUF (scripts/fetch-models.sh),
#   for the web app: the wasm-bindgen CLI (scripts/build-web.sh), Debian's chromium, node and
#   playwright-core (tests/e2e).
# After the tests it runs the demo (scripts/demo.sh) on SmolLM2 with the test build, as a user would.
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
[ -e /usr/share/vulkan/icd.d/lvp_icd.x86_64.json ] || ls /usr/share/vulkan/icd.d/lvp_icd*.json >/dev/null 2>&1 || need_apt+=(mesa-vulkan-drivers)
ldconfig -p | grep -q 'libvulkan.so.1' || need_apt+=(libvulkan1)
command -v chromium >/dev/null || need_apt+=(chromium)
command -v node >/dev/null || need_apt+=(nodejs)
command -v npm >/dev/null || need_apt+=(npm)
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "installing ${need_apt[*]}"
  SUDO=$([ "$(id -u)" = 0 ] && echo "" || echo sudo)
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi
rustup target list --installed | grep -q wasm32-unknown-unknown || rustup target add wasm32-unknown-unknown
scripts/fetch-models.sh

export WGPU_BACKEND="${WGPU_BACKEND:-vulkan}"
echo "== the web app for wasm32 (carve-core with it)"
scripts/build-web.sh --dev
echo "== tests"
# carve-web is tested where it runs: built for wasm32 above, driven in chromium below.
cargo test --workspace --exclude carve-web "$@"
echo "== the demo (scripts/demo.sh, the README's main command) with the build the tests made"
rm -rf target/demo-run
CARVE=target/debug/carve OUT=target/demo-run scripts/demo.sh
for f in circuit.json means.safetensors report.json report.md circuit.svg task.json model/config.json model/model.safetensors; do
  [ -s "target/demo-run/$f" ] || { echo "the demo wrote no $f"; exit 1; }
done
target/debug/carve run --model target/demo-run/model --prompt "When Lisa and Kevin went to the park, Kevin gave a ball to"
echo "== the web app in headless chromium (with target/debug/carve, built by the tests above)"
(cd tests/e2e && npm ci --no-audit --no-fund --silent)
node tests/e2e/web.mjs
node tests/e2e/web-edges.mjs
