#!/usr/bin/env bash
# Data-parallel throughput on this machine (docs/benchmarks.md, "Data-parallel training over MPI"):
# the MiniLM-L3 teacher on the real split, 30 steps at a global batch of 32, as 1 rank × 2
# threads and as 2 ranks × 1 thread (mpirun, shared memory), then the caching pass over the
# split's 6,000 rows (chunks of 1,000: whole chunks are dealt to the ranks); and the all-reduce
# alone (examples/allreduce). Prints one markdown row per layout and the all-reduce's cost.
# Needs a release build with the feature:
#
#   cargo build --release --features mpi --bin kd --example allreduce
#   bash scripts/dp_bench.sh [--repeats N]
#
# On an idle machine: each rank spins on its core while it waits, and another process on the
# cores skews both layouts.
set -euo pipefail
REPEATS=1
[ "${1:-}" = --repeats ] && REPEATS=$2
KD=${KD:-target/release/kd}
ALLREDUCE=${ALLREDUCE:-target/release/examples/allreduce}
SHARED=${SHARED:-../shared}
W=$(mktemp -d)
trap 'rm -rf "$W"' EXIT
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 RUST_LOG=warn

teach() { # teach OUT BATCH LAUNCHER...: 30 steps of the MiniLM-L3 teacher (LoRA r=8), then the caching pass
  local out=$1 batch=$2; shift 2
  "$@" "$KD" teach --model "$SHARED/models/paraphrase-MiniLM-L3-v2" \
    --data "$SHARED/data/ag_news/split" --out "$out" --device cpu --batch-size "$batch" \
    --max-steps 30 --epochs 1 --lr 5e-4 --max-len 128 --lora-r 8 --lora-alpha 32 --seed 0 \
    --cache-chunk-rows 1000 > /dev/null
}
row() { # row LAYOUT RUN: samples/s (training, caching) and the all-reduce's mean share of a step
  python3 - "$1" "$2" <<'PY'
import json, sys
layout, run = sys.argv[1:]
s = json.load(open(f"{run}/summary.json"))
lines = [json.loads(l) for l in open(f"{run}/metrics.jsonl")]
ms = [l["allreduce_ms"] for l in lines if "allreduce_ms" in l]
step_ms = 1e3 * 32 / s["train_samples_per_s"]
share = f"{ms[-1]:.1f} ms ({100 * ms[-1] / step_ms:.1f}%)" if ms else "–"
print(f"| {layout} | {s['train_samples_per_s']:.1f} | {step_ms:.0f} ms | {share} | {s['cache_samples_per_s']:.1f} | {s['kept_epoch']} |")
PY
}

echo "| layout | train samples/s | step | all-reduce a step (share, waiting included) | cache samples/s | kept epoch |"
echo "| --- | ---: | ---: | ---: | ---: | ---: |"
for r in $(seq "$REPEATS"); do
  teach "$W/one-$r" 32 env RAYON_NUM_THREADS=2
  row "1 rank × 2 threads" "$W/one-$r"
  teach "$W/two-$r" 16 env RAYON_NUM_THREADS=1 mpirun -np 2 --bind-to core -x RAYON_NUM_THREADS
  row "2 ranks × 1 thread" "$W/two-$r"
done
echo
for floats in 186246 888582; do   # MiniLM-L3 r=8 (+ loss, stop flag); the roberta-base teacher
  mpirun -np 2 --bind-to core "$ALLREDUCE" "$floats" 300
done
