"""Compares `carve logits` output with reference logits (last position of each prompt), printing
the largest error relative to the reference's max magnitude and the top-1 agreement.

    python3 bench/compare_logits.py carve.safetensors reference.safetensors
"""
import sys

from safetensors.numpy import load_file

got, ref = load_file(sys.argv[1]), load_file(sys.argv[2])
n = len([k for k in got if k.startswith("logits.")])
worst, agree = 0.0, 0
for i in range(n):
    g = got[f"logits.{i}"][-1]
    r = ref["logits"][i] if "logits" in ref and ref["logits"].ndim == 2 else ref[f"logits.{i}"][-1]
    worst = max(worst, float(abs(g - r).max() / abs(r).max()))
    agree += int(g.argmax() == r.argmax())
print(f"{n} prompts: max relative error {worst:.2e}, top-1 agrees on {agree}/{n}")
sys.exit(0 if worst < 1e-3 and agree == n else 1)
