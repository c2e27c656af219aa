#!/usr/bin/env bash
# Distillation that pays, on ../shared/data/ag_news/lowlabel (1,000 labelled rows, 5,000 unlabelled
# rows, 1,600 test rows), with the settings of the PyTorch + PEFT reference in its README:
#   teacher: all-MiniLM-L6-v2, LoRA r=8, α=32, 6 epochs on the labelled rows, scoring the
#            labelled and unlabelled rows into its cache (one teacher, seed 42);
#   student: paraphrase-MiniLM-L3-v2, LoRA r=4, α=16, per seed
#            - KD: T=2, α=0.5 on labelled rows, T²·KL alone on unlabelled rows, 2 epochs;
#            - alone: the labelled rows only (--alpha 0), 6 epochs.
# Batch 32, lr 5e-4, max-len 128. Prints per-seed test accuracies, the paired differences and
# their mean ± standard error.
#
#   scripts/lowlabel_distill.sh [KD_BINARY] [OUT_DIR] [SEED...]   (default seeds: 0 1 2 3)
set -euo pipefail
KD=${1:-target/release/kd}
OUT=${2:-runs/lowlabel_kd}
shift $(($# < 2 ? $# : 2))
SEEDS=("$@")
[ ${#SEEDS[@]} -gt 0 ] || SEEDS=(0 1 2 3)
SHARED=${SHARED:-../shared}
DATA=$SHARED/data/ag_news/lowlabel
U=$DATA/unlabelled.csv.gz
COMMON=(--data "$DATA" --batch-size 32 --lr 5e-4 --max-len 128)
STUDENT=(--config configs/student.toml --model "$SHARED/models/paraphrase-MiniLM-L3-v2"
         --teacher "$OUT/teacher" "${COMMON[@]}")
mkdir -p "$OUT"
[ -f "$OUT/teacher/summary.json" ] ||
  "$KD" teach --config configs/teacher.toml --model "$SHARED/models/all-MiniLM-L6-v2" \
    --unlabelled "$U" --epochs 6 --seed 42 --out "$OUT/teacher" "${COMMON[@]}"
for seed in "${SEEDS[@]}"; do
  [ -f "$OUT/kd_$seed/summary.json" ] ||
    "$KD" distill "${STUDENT[@]}" --unlabelled "$U" --epochs 2 --temperature 2 --alpha 0.5 \
      --seed "$seed" --out "$OUT/kd_$seed"
  [ -f "$OUT/alone_$seed/summary.json" ] ||
    "$KD" distill "${STUDENT[@]}" --alpha 0 --epochs 6 --seed "$seed" --out "$OUT/alone_$seed"
done
python3 - "$OUT" "${SEEDS[@]}" <<'PY'
import json, statistics, sys
out, seeds = sys.argv[1], sys.argv[2:]
acc = lambda run: 100 * json.load(open(f"{out}/{run}/summary.json"))["test_accuracy"]
print(f"teacher: {acc('teacher'):.2f}%")
print("| seed | student, KD over labelled + unlabelled | student alone | KD − alone |")
print("| ---: | ---: | ---: | ---: |")
diffs = []
for s in seeds:
    k, a = acc(f"kd_{s}"), acc(f"alone_{s}")
    diffs.append(k - a)
    print(f"| {s} | {k:.2f}% | {a:.2f}% | {k - a:+.2f} pt |")
se = statistics.stdev(diffs) / len(diffs) ** 0.5 if len(diffs) > 1 else float("nan")
print(f"mean KD − alone {statistics.mean(diffs):+.2f} pt ± {se:.2f} (paired standard error, {len(diffs)} seeds)")
PY
