#!/usr/bin/env bash
# The README's results table: ablate (heads and MLPs, mean ablation) on SmolLM2-135M-Instruct for
# the three built-in tasks, at the given α values; one run directory per task and α under runs/.
#   scripts/results.sh                       # TASKS and ALPHAS below
#   TASKS="ioi" ALPHAS="0.001 0.003" scripts/results.sh
set -euo pipefail
cd "$(dirname "$0")/.."
tasks="${TASKS:-ioi acronyms greater-than}"
alphas="${ALPHAS:-0.001 0.003}"
discovery="${DISCOVERY:-32}"
model=models/SmolLM2-135M-Instruct.Q4_1.gguf
scripts/fetch-models.sh
cargo build --release -p carve
for task in $tasks; do
  for a in $alphas; do
    out="runs/$task-$a"
    [ -f "$out/report.json" ] || target/release/carve extract --model "$model" --task "$task" --alpha "$a" \
      --ablation mean --mlps --discovery "$discovery" --out "$out" --force > "$out.log" 2>&1 || { tail "$out.log"; exit 1; }
  done
done
python3 - $tasks -- $alphas <<'PY'
import json, sys
args = sys.argv[1:]; i = args.index("--"); tasks, alphas = args[:i], args[i + 1:]
print("| task | α | test acc full | circuit | pruned | KL | heads | MLPs | non-emb params cut | speedup | FLOPs ratio | extract (s) |")
print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
for t in tasks:
    for a in alphas:
        r = json.load(open(f"runs/{t}-{a}/report.json"))
        T, P, L = r["test"], r["params"], r["latency_ms"]
        print(f"| {t} | {a} | {T['full']['accuracy']:.3f} | {T['circuit']['accuracy']:.3f} | {T['pruned']['accuracy']:.3f} "
              f"| {T['kl']:.3f} | {r['kept']['heads']}/{r['total']['heads']} | {r['kept']['mlps']}/{r['total']['mlps']} "
              f"| {100 * P['reduction_non_embedding']:.1f}% | {L['speedup']:.2f}× | {L['flops_ratio']:.2f}× | {r['extract_seconds']:.0f} |")
PY
