#!/usr/bin/env bash
# Coverage-guided fuzzing of one of carve's readers with libFuzzer (see fuzz/README.md).
#
#   scripts/fuzz.sh TARGET [SECONDS | EXECSx]    e.g. `scripts/fuzz.sh gguf 180`, `scripts/fuzz.sh link 1000000x`
#   scripts/fuzz.sh build                        builds every target
#
# Targets: safetensors_config gguf task_jsonl circuit_json means state_json link. Inputs the
# fuzzer finds go to fuzz/work/TARGET (not committed); crashes to fuzz/artifacts/TARGET/.
# KEEP_GOING=1 runs in fork mode and carries on past crashes, timeouts and out-of-memory inputs;
# FUZZ_ARGS passes more libFuzzer flags (e.g. FUZZ_ARGS=-jobs=2).
set -euo pipefail
cd "$(dirname "$0")/.."

target=${1:?usage: scripts/fuzz.sh TARGET [SECONDS | EXECSx]}
limit=${2:-120}
host=$(rustc -vV | sed -n 's/^host: //p')
# What cargo-fuzz passes, all stable rustc flags: SanitizerCoverage counters, PC tables and
# comparison tracing for libFuzzer. `--target` keeps them off build scripts and proc macros.
export RUSTFLAGS="-Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4 \
-Cllvm-args=-sanitizer-coverage-inline-8bit-counters -Cllvm-args=-sanitizer-coverage-pc-table \
-Cllvm-args=-sanitizer-coverage-trace-compares --cfg fuzzing"
build() { cargo build --manifest-path fuzz/Cargo.toml --release --target "$host" "$@"; }

if [[ $target == build ]]; then
    build --bins
    exit
fi
build --bin "$target"
work=fuzz/work/$target
artifacts=fuzz/artifacts/$target
mkdir -p "$work" "$artifacts"
case $limit in
    *x) stop=(-runs="${limit%x}") ;;
    *) stop=(-max_total_time="$limit") ;;
esac
# Tokens of the format (keys, names, edge values) for the mutator to insert.
dict=()
if [[ -f fuzz/dict/$target.dict ]]; then
    dict=(-dict="fuzz/dict/$target.dict")
fi
keep=()
if [[ -n ${KEEP_GOING:-} ]]; then
    keep=(-fork=1 -ignore_crashes=1 -ignore_ooms=1 -ignore_timeouts=1)
fi
# shellcheck disable=SC2086
exec "fuzz/target/$host/release/$target" "$work" "fuzz/corpus/$target" "${stop[@]}" "${dict[@]}" "${keep[@]}" \
    -timeout=10 -rss_limit_mb=4096 -artifact_prefix="$artifacts/" -print_final_stats=1 ${FUZZ_ARGS:-}
