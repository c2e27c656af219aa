#!/usr/bin/env bash
# Does distillation help beyond seed noise? On ../shared/data/ag_news/split: one MiniLM-L6 teacher
# (as in real_data_runs.sh, made if OUT_DIR/teacher is missing), then for each seed the MiniLM-L3
# student distilled from it (T=$TEMPERATURE, α=$ALPHA; default 2 and 0.5) and the same student on
# the labels alone (--alpha 0) with the same seed: same validation slice, shuffling, dropout and
# LoRA initialisation, so each pair differs only in the loss. Prints per-seed test accuracies, the paired differences and their mean.
#
#   [TEMPERATURE=T] [ALPHA=A] scripts/distill_seeds.sh [KD_BINARY] [OUT_DIR] [SEED...]
# (default seeds: 42 1 2 3; the teacher and the labels-alone runs are reused across T and α)
set -euo pipefail
KD=${1:-target/release/kd}
OUT=${2:-runs/seeds}
shift $(($# < 2 ? $# : 2))
SEEDS=("$@")
[ ${#SEEDS[@]} -gt 0 ] || SEEDS=(42 1 2 3)
T=${TEMPERATURE:-2}
A=${ALPHA:-0.5}
SHARED=${SHARED:-../shared}
DATA=$SHARED/data/ag_news/split
COMMON=(--data "$DATA" --epochs 2 --batch-size 32 --lr 5e-4 --max-len 128)
STUDENT=(--config configs/student.toml --model "$SHARED/models/paraphrase-MiniLM-L3-v2"
         --teacher "$OUT/teacher" "${COMMON[@]}")
mkdir -p "$OUT"
if [ ! -f "$OUT/teacher/summary.json" ]; then
  "$KD" teach --config configs/teacher.toml --model "$SHARED/models/all-MiniLM-L6-v2" \
    --out "$OUT/teacher" "${COMMON[@]}"
fi
for seed in "${SEEDS[@]}"; do
  [ -f "$OUT/kd_T${T}_a${A}_$seed/summary.json" ] ||
    "$KD" distill "${STUDENT[@]}" --seed "$seed" --temperature "$T" --alpha "$A" \
      --out "$OUT/kd_T${T}_a${A}_$seed"
  [ -f "$OUT/alone_$seed/summary.json" ] ||
    "$KD" distill "${STUDENT[@]}" --seed "$seed" --alpha 0 --out "$OUT/alone_$seed"
done
python3 - "$OUT" "$T" "$A" "${SEEDS[@]}" <<'EOF'
import json, statistics, sys
out, t, a, seeds = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4:]
acc = lambda run: 100 * json.load(open(f"{out}/{run}/summary.json"))["test_accuracy"]
print(f"teacher: {acc('teacher'):.2f}%")
print(f"| seed | student, KD (T={t}, α={a}) | student alone | KD − alone |")
print("| ---: | ---: | ---: | ---: |")
diffs = []
for s in seeds:
    k, alone = acc(f"kd_T{t}_a{a}_{s}"), acc(f"alone_{s}")
    diffs.append(k - alone)
    print(f"| {s} | {k:.2f}% | {alone:.2f}% | {k - alone:+.2f} pt |")
mean = statistics.mean(diffs)
sd = statistics.stdev(diffs) if len(diffs) > 1 else float("nan")
print(f"mean difference {mean:+.2f} pt, standard deviation {sd:.2f} pt over {len(diffs)} seeds")
EOF
