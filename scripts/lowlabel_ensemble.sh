#!/usr/bin/env bash
# An ensemble of two teachers against the better single one, on the low-label protocol of
# scripts/lowlabel_distill.sh (run that first: it makes OUT/teacher, the seed-42 MiniLM-L6
# teacher, and the single-teacher students OUT/kd_SEED). Adds a second MiniLM-L6 teacher (seed 7,
# same settings, same transfer set) and, per seed, the MiniLM-L3 student distilled from both
# (mean of their probabilities at T=2). Prints per-seed accuracies and the paired differences
# against the student of the better single teacher.
#
#   scripts/lowlabel_ensemble.sh [KD_BINARY] [OUT_DIR] [SEED...]   (default seeds: 0 1 2 3)
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
[ -f "$OUT/teacher2/summary.json" ] ||
  "$KD" teach --config configs/teacher.toml --model "$SHARED/models/all-MiniLM-L6-v2" \
    --unlabelled "$U" --epochs 6 --seed 7 --out "$OUT/teacher2" "${COMMON[@]}"
for seed in "${SEEDS[@]}"; do
  [ -f "$OUT/kd2_$seed/summary.json" ] ||
    "$KD" distill --config configs/student.toml --model "$SHARED/models/paraphrase-MiniLM-L3-v2" \
      --teacher "$OUT/teacher" --teacher "$OUT/teacher2" --unlabelled "$U" --epochs 2 \
      --temperature 2 --alpha 0.5 --seed "$seed" --out "$OUT/kd2_$seed" "${COMMON[@]}"
done
python3 - "$OUT" "${SEEDS[@]}" <<'PY'
import json, statistics, sys
out, seeds = sys.argv[1], sys.argv[2:]
acc = lambda run: 100 * json.load(open(f"{out}/{run}/summary.json"))["test_accuracy"]
t1, t2 = acc("teacher"), acc("teacher2")
print(f"teachers: {t1:.2f}% (seed 42), {t2:.2f}% (seed 7)")
print("| seed | student of the ensemble | student of teacher 42 | difference |")
print("| ---: | ---: | ---: | ---: |")
d = []
for s in seeds:
    e, k = acc(f"kd2_{s}"), acc(f"kd_{s}")
    d.append(e - k)
    print(f"| {s} | {e:.2f}% | {k:.2f}% | {e - k:+.2f} pt |")
se = statistics.stdev(d) / len(d) ** 0.5 if len(d) > 1 else float("nan")
print(f"mean ensemble − single {statistics.mean(d):+.2f} pt ± {se:.2f} (paired standard error)")
PY
