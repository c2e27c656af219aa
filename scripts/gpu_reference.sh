#!/usr/bin/env bash
# The CPU f32 references of scripts/gpu_check.sh's step 2, written to scripts/gpu_reference.json:
# the same teacher (MiniLM-L3, LoRA r=8, α=32) and student (r=4, α=16, T=2, α=0.5), one epoch on
# the real split, on the CPU in f32.
#   scripts/gpu_reference.sh [KD_BINARY]
set -euo pipefail
cd "$(dirname "$0")/.."
KD=${1:-target/release/kd}
SHARED=${SHARED:-../shared}
MODEL=$SHARED/models/paraphrase-MiniLM-L3-v2 DATA=$SHARED/data/ag_news/split
W=$(mktemp -d)
COMMON=(--model "$MODEL" --data "$DATA" --epochs 1 --lr 5e-4 --device cpu --dtype f32)
"$KD" teach --config configs/teacher.toml "${COMMON[@]}" --lora-r 8 --lora-alpha 32 --out "$W/teacher"
"$KD" distill --config configs/student.toml "${COMMON[@]}" --lora-r 4 --lora-alpha 16 \
  --teacher "$W/teacher" --temperature 2 --alpha 0.5 --out "$W/student"
python3 - "$W" "$(git rev-parse --short HEAD)" > scripts/gpu_reference.json <<'PY'
import json, sys
w, commit = sys.argv[1:]
cpu = next(l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name"))
out = {"commit": commit, "cpu": cpu, "command": "scripts/gpu_reference.sh"}
for role in ("teacher", "student"):
    s = json.load(open(f"{w}/{role}/summary.json"))
    out[role] = {"test_accuracy": s["test_accuracy"], "device": s["device"]}
print(json.dumps(out, indent=2))
PY
cat scripts/gpu_reference.json
