#!/usr/bin/env bash
# The sweep table and the calibration figures of docs/results.md, on ../shared/data/ag_news/split
# with the settings of scripts/real_data_runs.sh (2 epochs, batch 32, lr 5e-4, max-len 128):
# a MiniLM-L6 teacher trained with --calibrate (a temperature fitted on its validation rows; its
# summary records test NLL/Brier/ECE before and after), then `kd sweep` of the MiniLM-L3 student
# over T ∈ {1,2,4,8} × α ∈ {0,0.5,0.9} × seeds {0,1}, also with --calibrate. α = 0 is trained
# once per seed (T plays no part there): 9 points × 2 seeds = 18 students. A rerun skips what is
# finished (SEEDS=0 first, then the default, spreads the work over two sittings). Prints
# sweep.md and the calibration table.
#
#   [SEEDS=0,1] scripts/full_split_sweep.sh [KD_BINARY] [OUT_DIR] [extra kd flags, e.g. --device cuda]
set -euo pipefail
KD=${1:-target/release/kd}
OUT=${2:-runs/sweep}
shift $(($# < 2 ? $# : 2))
SHARED=${SHARED:-../shared}
DATA=$SHARED/data/ag_news/split
COMMON=(--data "$DATA" --epochs 2 --batch-size 32 --lr 5e-4 --max-len 128 --calibrate "$@")
mkdir -p "$OUT"
[ -f "$OUT/teacher/summary.json" ] ||
  "$KD" teach --config configs/teacher.toml --model "$SHARED/models/all-MiniLM-L6-v2" \
    --out "$OUT/teacher" "${COMMON[@]}"
"$KD" sweep --config configs/student.toml --model "$SHARED/models/paraphrase-MiniLM-L3-v2" \
  --teacher "$OUT/teacher" --temperature 1,2,4,8 --alpha 0,0.5,0.9 --seeds "${SEEDS:-0,1}" \
  --out "$OUT/students" "${COMMON[@]}"
cat "$OUT/students/sweep.md"
python3 - "$OUT" <<'PY'
import json, os, sys
out = sys.argv[1]
runs = [("teacher", f"{out}/teacher")] + [
    (name, f"{out}/students/{name}") for name in sorted(os.listdir(f"{out}/students"))
    if os.path.isfile(f"{out}/students/{name}/summary.json")]
print("| run | T fitted | NLL before → after | Brier before → after | ECE before → after |")
print("| --- | ---: | ---: | ---: | ---: |")
for name, path in runs:
    s = json.load(open(f"{path}/summary.json"))
    b, a = s.get("test_calibration_before"), s.get("test_calibration")
    if not (b and a):
        continue
    t = s.get("calibrated_temperature")
    print(f"| {name} | {t:.3f} | {b['nll']:.4f} → {a['nll']:.4f} | {b['brier']:.4f} → {a['brier']:.4f}"
          f" | {100*b['ece']:.2f}% → {100*a['ece']:.2f}% |")
PY
