#!/usr/bin/env bash
# The real-data evidence of docs/results.md: on ../shared/data/ag_news/split, a MiniLM-L6 teacher
# (LoRA r=8, α=32, query+value), then the MiniLM-L3 student (r=4, α=16) distilled at T=2, α=0.5,
# and the same student with --alpha 0, then `kd compare`. 2 epochs, batch 32, lr 5e-4, max-len 128.
#
#   scripts/real_data_runs.sh [KD_BINARY] [OUT_DIR] [extra kd flags, e.g. --device cuda]
set -euo pipefail
KD=${1:-target/release/kd}
OUT=${2:-runs/real}
shift $(($# < 2 ? $# : 2))
SHARED=${SHARED:-../shared}
DATA=$SHARED/data/ag_news/split
COMMON=(--data "$DATA" --epochs 2 --batch-size 32 --lr 5e-4 --max-len 128 "$@")
mkdir -p "$OUT"
"$KD" teach --config configs/teacher.toml --model "$SHARED/models/all-MiniLM-L6-v2" \
  --out "$OUT/teacher" "${COMMON[@]}"
"$KD" distill --config configs/student.toml --model "$SHARED/models/paraphrase-MiniLM-L3-v2" \
  --teacher "$OUT/teacher" --out "$OUT/student_kd" --temperature 2 --alpha 0.5 "${COMMON[@]}"
"$KD" distill --config configs/student.toml --model "$SHARED/models/paraphrase-MiniLM-L3-v2" \
  --teacher "$OUT/teacher" --out "$OUT/student_alone" --alpha 0 "${COMMON[@]}"
"$KD" compare "$OUT/teacher" "$OUT/student_kd" "$OUT/student_alone" --data "$DATA" --json "$OUT/compare.json"
