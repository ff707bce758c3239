#!/usr/bin/env bash
# Every side-by-side comparison of the engine-speed work, in one run on a GPU machine: carve on wgpu
# (Vulkan) against PyTorch on CUDA, and both on the machine's CPU cores, on a random model with
# SmolLM2-135M's shapes (speed does not depend on the weights) and SmolLM2's tokenizer (so the
# training benches run their tasks' prompts). Output goes to $OUT/device_check.txt.
#
# Prepared here: a stripped release binary and SmolLM2's tokenizer.json in .dev/ (ignored by git),
# the Vulkan loaders in .gl/ (see the device tool's README):
#   cargo build --release -p carve && mkdir -p .dev && strip -o .dev/carve target/release/carve
#   cp runs/<a SmolLM2 run>/model/tokenizer.json .dev/    # a pruned SmolLM2 model carries it
# Then one call, carrying .dev and .gl:
#   for f in .gl/*.deb; do dpkg -x $f /; done; ldconfig; bash bench/device_check.sh
# Each step has its own time limit, so one that hangs costs only its share.
set -u
OUT=${OUT:-/tmp/device_check}
mkdir -p "$OUT"
LOG="$OUT/device_check.txt"
export XDG_RUNTIME_DIR=${XDG_RUNTIME_DIR:-/tmp} WGPU_BACKEND=${WGPU_BACKEND:-vulkan}
BIN=${BIN:-.dev/carve}
M=${MODEL_DIR:-/tmp/smol}
PY=${PY:-python3}
# Where each side runs (cpu, cpu: a dry run of the script on a machine without a GPU).
TD=${TORCH_DEVICE:-cuda}
CG=${CARVE_GPU:-gpu}

step() { # seconds, title, command...
  local limit="$1" title="$2"; shift 2
  echo -e "\n## $title\n\n\$ $*" | tee -a "$LOG"
  timeout "$limit" "$@" 2>&1 | grep -v -e "Loading weights" -e "Warning" | tee -a "$LOG"
  echo "(exit ${PIPESTATUS[0]})" | tee -a "$LOG"
}

{ date; nvidia-smi --query-gpu=name,driver_version --format=csv,noheader; echo "$(nproc) CPU cores"; } 2>&1 | tee -a "$LOG"
step 120 "random SmolLM2-shaped model" "$PY" bench/torch_forward.py --make "$M" --device "$TD" --batch 1 --seq 4 --iters 1
cp .dev/tokenizer.json "$M/"

# Forwards: 100×20 and 32×256, all and last position. carve's forward and training benches also
# time each part with a submit every 256 dispatches beside the default submit per read (whether
# overlapping the host's recording with the device pays: if so, make it the default), and the
# training benches with the matrix products on the real rows only beside every row (whether
# packing pays on a GPU: if so, turn `WgpuOptions::pack_rows` on by default).
step 60 "PyTorch forward 100×20 ($TD)" "$PY" bench/torch_forward.py --model "$M" --device "$TD" --batch 100 --seq 20
step 90 "carve forward 100×20 ($CG)" "$BIN" bench forward --model "$M" --batch 100 --seq 20 --backend "$CG"
step 60 "PyTorch forward 32×256 ($TD)" "$PY" bench/torch_forward.py --model "$M" --device "$TD" --batch 32 --seq 256
step 120 "carve forward 32×256 ($CG)" "$BIN" bench forward --model "$M" --batch 32 --seq 256 --backend "$CG"
# The matmul at a forward's shape and a large square one: each GEMM kernel (64×64 and 128×128),
# each with vec4 loads beside f32 loads (if vec4 loads are not faster, make `WgpuOptions::vec4_loads`
# false).
step 60 "carve matmul 2000×576×1536 ($CG)" "$BIN" bench matmul --m 2000 --k 576 --n 1536 --backend "$CG"
step 60 "carve matmul 4096³ ($CG)" "$BIN" bench matmul --m 4096 --k 4096 --n 4096 --iters 5 --backend "$CG"
step 30 "carve attention 100×20, fused vs two GEMMs ($CG)" "$BIN" bench attention --batch 100 --seq 20 --backend "$CG"
step 30 "carve attention 32×256, fused vs two GEMMs ($CG)" "$BIN" bench attention --batch 32 --seq 256 --backend "$CG"
step 60 "carve matmul 2000×576×1536 --precision mixed ($CG): cooperative matrices beside the plain kernels" "$BIN" bench matmul --m 2000 --k 576 --n 1536 --precision mixed --backend "$CG"
step 60 "carve matmul 4096³ --precision mixed ($CG)" "$BIN" bench matmul --m 4096 --k 4096 --n 4096 --iters 5 --precision mixed --backend "$CG"
step 90 "carve forward 100×20 at --precision mixed ($CG): cooperative matrices where the GPU has them" "$BIN" bench forward --model "$M" --batch 100 --seq 20 --backend "$CG" --precision mixed
step 120 "carve precision f32 / mixed / mixed-bf16, ioi ($CG; random weights)" "$BIN" bench precision --model "$M" --task ioi --backend "$CG"
# Training steps, batch 32 of IOI prompts (carve prints the padded length; PyTorch runs 32×20).
step 120 "carve node-prune step ($CG)" "$BIN" bench train --model "$M" --task ioi --batch 32 --method node-prune --backend "$CG"
step 60 "PyTorch node-prune step ($TD)" "$PY" bench/torch_train_step.py --model "$M" --batch 32 --seq 20 --device "$TD"
step 180 "carve edge-prune step ($CG)" "$BIN" bench train --model "$M" --task ioi --batch 32 --iters 3 --method edge-prune --backend "$CG"
step 90 "PyTorch edge-prune step ($TD)" "$PY" bench/torch_edge_step.py --model "$M" --batch 32 --seq 20 --device "$TD" --check
# ablate's sweep: carve's reference and fast implementations, then the same sweep as the paper's
# code runs it (a full forward per candidate) in PyTorch, which also checks carve's decisions.
step 150 "carve ablate sweep, ioi, 16 prompts, heads and MLPs ($CG)" "$BIN" bench extract --model "$M" --task ioi --alpha 0.005 --mlps --discovery 16 --all-batchings --backend "$CG" --save-sweep "$OUT/sweep.json"
step 120 "PyTorch ablate sweep, paper-style loop ($TD)" "$PY" bench/torch_ablate.py --model "$M" --inputs "$OUT/sweep.json" --device "$TD"
# Where a step's time goes on the GPU: each kernel's device time from timestamp queries.
step 90 "carve ops, node-prune step ($CG)" "$BIN" bench ops --model "$M" --task ioi --batch 32 --iters 2 --method node-prune --backend "$CG"
step 120 "carve ops, edge-prune step ($CG)" "$BIN" bench ops --model "$M" --task ioi --batch 32 --iters 2 --method edge-prune --backend "$CG"
# The CPU cores, both sides.
step 120 "PyTorch forward 100×20 (CPU)" "$PY" bench/torch_forward.py --model "$M" --device cpu --batch 100 --seq 20
step 120 "carve forward 100×20 (CPU)" "$BIN" bench forward --model "$M" --batch 100 --seq 20 --backend cpu
step 60 "carve matmul 288×1536×576, w as a tensor and as a weight, the threads on tiles, on gemm's and one (CPU)" "$BIN" bench matmul --m 288 --k 1536 --n 576 --iters 20 --backend cpu
step 60 "carve matmul 515×576×192 (CPU)" "$BIN" bench matmul --m 515 --k 576 --n 192 --iters 20 --backend cpu
step 60 "carve matmul 2000×576×1536 (CPU)" "$BIN" bench matmul --m 2000 --k 576 --n 1536 --iters 10 --backend cpu
step 120 "carve node-prune step (CPU)" "$BIN" bench train --model "$M" --task ioi --batch 32 --method node-prune --backend cpu
step 120 "PyTorch node-prune step (CPU)" "$PY" bench/torch_train_step.py --model "$M" --batch 32 --seq 20 --device cpu
date | tee -a "$LOG"
