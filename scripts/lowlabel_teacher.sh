#!/usr/bin/env bash
# The low-label teacher of ../shared/data/ag_news/lowlabel (1,000 labelled rows) over several
# seeds, with the settings of the PyTorch + PEFT reference in its README (all-MiniLM-L6-v2, LoRA
# r=8, α=32 on query+value, 6 epochs, batch 32, lr 5e-4, max-len 128) and kd's default epoch
# selection. Prints each seed's kept epoch and test accuracy, then mean ± standard error.
#
#   scripts/lowlabel_teacher.sh [KD_BINARY] [OUT_DIR] [SEED...]   (default seeds: 42 0 1)
set -euo pipefail
KD=${1:-target/release/kd}
OUT=${2:-runs/lowlabel}
shift $(($# < 2 ? $# : 2))
SEEDS=("$@")
[ ${#SEEDS[@]} -gt 0 ] || SEEDS=(42 0 1)
SHARED=${SHARED:-../shared}
mkdir -p "$OUT"
for seed in "${SEEDS[@]}"; do
  [ -f "$OUT/teacher_$seed/summary.json" ] ||
    "$KD" teach --config configs/teacher.toml --model "$SHARED/models/all-MiniLM-L6-v2" \
      --data "$SHARED/data/ag_news/lowlabel" --epochs 6 --batch-size 32 --lr 5e-4 --max-len 128 \
      --seed "$seed" --out "$OUT/teacher_$seed"
done
python3 - "$OUT" "${SEEDS[@]}" <<'PY'
import json, statistics, sys
out, seeds = sys.argv[1], sys.argv[2:]
accs = []
print("| seed | kept epoch | why | test accuracy |")
print("| ---: | ---: | --- | ---: |")
for s in seeds:
    d = json.load(open(f"{out}/teacher_{s}/summary.json"))
    accs.append(100 * d["test_accuracy"])
    print(f"| {s} | {d['kept_epoch']} | {d['selection']['reason']} | {accs[-1]:.2f}% |")
se = statistics.stdev(accs) / len(accs) ** 0.5 if len(accs) > 1 else float("nan")
print(f"mean {statistics.mean(accs):.2f}% ± {se:.2f} (standard error, {len(accs)} seeds); PyTorch + PEFT: 88.5%")
PY
