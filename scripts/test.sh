#!/usr/bin/env bash
# The whole test suite, from a fresh machine: installs what is missing, then builds and tests.
#   software Vulkan (llvmpipe) so the wgpu shaders are tested without a GPU,
#   the wasm32 target (carve-core must build for the browser),
#   the SmolLM2-135M GGUF (scripts/fetch-models.sh).
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
[ -e /usr/share/vulkan/icd.d/lvp_icd.x86_64.json ] || ls /usr/share/vulkan/icd.d/lvp_icd*.json >/dev/null 2>&1 || need_apt+=(mesa-vulkan-drivers)
ldconfig -p | grep -q 'libvulkan.so.1' || need_apt+=(libvulkan1)
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "installing ${need_apt[*]}"
  SUDO=$([ "$(id -u)" = 0 ] && echo "" || echo sudo)
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi
rustup target list --installed | grep -q wasm32-unknown-unknown || rustup target add wasm32-unknown-unknown
scripts/fetch-models.sh

export WGPU_BACKEND="${WGPU_BACKEND:-vulkan}"
echo "== carve-core for wasm32"
cargo build -p carve-core --target wasm32-unknown-unknown
echo "== tests"
cargo test --workspace "$@"
