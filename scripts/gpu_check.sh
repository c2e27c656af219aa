#!/usr/bin/env bash
# kd's first GPU run, prepared: every check in order, one line per step, a JSON record at the end.
# Each step has a time limit, and a failed step does not stop the later ones. ~8 minutes on a GPU.
#
# On the GPU machine (no Rust, no internet, 64 MiB carried per call). The CUDA binary alone is
# 62 MiB, so scripts/gpu_pack.sh packs it compressed with everything the checks read into .gpu/
# (git-ignored): kd.xz + gpu-run.sh (from ../shared/tools/cuda-build.sh), the real split, the
# MiniLM-L3 checkpoint, the roberta-base tokenizer, the CPU f32 references and the commit. Then:
#   device run:  command "bash scripts/gpu_check.sh"   carry [".gpu"]   timeout_s 600
# The record and logs land in $OUT (the device tool brings them back).
#
# Dry run on the CPU, so the script cannot rot (tests/gpu_script.rs runs it when ../shared is
# there): a 240-row slice of the split, a few steps, `--shape small` for the bench, the peer only
# where torch is installed:
#   bash scripts/gpu_check.sh --dry-run [--kd target/release/kd] [--out DIR]
#
# Steps: 1 selftest f32 and bf16 (logits and every gradient against the CPU); 2 the real-split
# teacher (MiniLM-L3, LoRA r=8) and student (r=4, T=2, α=0.5), one epoch in bf16, accuracy against
# the CPU f32 runs (goal: within 0.3 pt); 3 a resume: kill -9 mid-run, rerun, the adapter and
# logits compared with the uninterrupted run's; 4 kd bench against the PyTorch + PEFT peer at its
# best on the roberta-base shape (samples/s, peak memory, MFU); 5 on a machine with 2+ GPUs and
# mpirun, the teacher on 2 GPUs (mpirun -np 2, NCCL; needs a kd built with --features cuda,mpi
# and NCCL's library), else a note. int8 and
# `kd serve` are CPU features: not run here.
set -uo pipefail
cd "$(dirname "$0")/.."

DRY=0 KD="" OUT_DIR="${OUT:-}" ASSETS=.gpu DEVICE=""
while [ $# -gt 0 ]; do
  case "$1" in
    --dry-run) DRY=1 ;;
    --kd) KD=$2; shift ;;
    --out) OUT_DIR=$2; shift ;;
    --assets) ASSETS=$2; shift ;;
    --device) DEVICE=$2; shift ;;
    *) echo "gpu_check.sh: unknown argument $1" >&2; exit 2 ;;
  esac
  shift
done
OUT_DIR=${OUT_DIR:-$(mktemp -d)}
mkdir -p "$OUT_DIR"
W=$(mktemp -d)                       # run folders: scratch, not brought back
STEPS="$OUT_DIR/steps.jsonl"; : > "$STEPS"
LOG="$OUT_DIR/gpu_check.log"; : > "$LOG"
SHARED=${SHARED:-../shared}

# --- what runs where -------------------------------------------------------------------------
if [ "$DRY" = 1 ]; then
  DEVICE=${DEVICE:-cpu}
  KD=${KD:-target/release/kd}
  RUN=()
  MODEL=$SHARED/models/paraphrase-MiniLM-L3-v2
  TOKENIZER=$SHARED/models/roberta-base-tokenizer
  DATA=$W/data; mkdir -p "$DATA"
  # A slice of the real split keeps the dry run to seconds.
  gzip -dc "$SHARED/data/ag_news/split/train.csv.gz" | head -n 240 | gzip > "$DATA/train.csv.gz"
  gzip -dc "$SHARED/data/ag_news/split/test.csv.gz" | head -n 80 | gzip > "$DATA/test.csv.gz"
  TRAIN_FLAGS=(--max-steps 4 --checkpoint-every 2)
  BENCH_FLAGS=(--shape small --steps 2 --warmup-steps 1 --cache-rows 64 --cache-batch-size 32)
  PEER_FLAGS=(--shape small --steps 2 --warmup-steps 1 --cache-rows 64 --cache-batch-size 32)
  KILL_AFTER_CHECKPOINTS=1
else
  DEVICE=${DEVICE:-cuda}
  BIN=/tmp/kd-gpu; mkdir -p "$BIN"
  xz -dc "$ASSETS/kd.xz" > "$BIN/kd" && chmod +x "$BIN/kd"
  KD=${KD:-$BIN/kd}
  RUN=(bash "$ASSETS/gpu-run.sh")    # sets LD_LIBRARY_PATH to the PyTorch venv's CUDA 13 libraries
  MODEL=$ASSETS/paraphrase-MiniLM-L3-v2
  TOKENIZER=$ASSETS/roberta-base-tokenizer
  DATA=$ASSETS/split
  TRAIN_FLAGS=(--checkpoint-every 40)
  BENCH_FLAGS=(--shape roberta-base --steps 30 --warmup-steps 5 --cache-rows 1024 --cache-batch-size 128)
  PEER_FLAGS=(--shape roberta-base --steps 30 --warmup-steps 5 --cache-rows 1024 --cache-batch-size 128)
  KILL_AFTER_CHECKPOINTS=2
fi
kd() { "${RUN[@]}" "$KD" "$@"; }

# --- one step: a time limit, one line, one JSON record -----------------------------------------
# step NAME LIMIT_S COMMAND...: runs COMMAND (a shell function or program) under `timeout`,
# appending its output to the log; DETAIL (set by the command) goes into the record.
step() {
  local name=$1 limit=$2; shift 2
  DETAIL=""
  local t0=$SECONDS status
  echo "=== $name" >> "$LOG"
  if timeout --kill-after=10 "$limit" bash -c "$(declare -f); $(declare -p KD RUN MODEL TOKENIZER DATA W OUT_DIR DEVICE DRY TRAIN_FLAGS BENCH_FLAGS PEER_FLAGS KILL_AFTER_CHECKPOINTS ASSETS 2>/dev/null); $*" >> "$LOG" 2>&1; then
    status=ok
  else
    local rc=$?
    status=$([ $rc = 124 ] || [ $rc = 137 ] && echo timeout || echo "fail (exit $rc)")
  fi
  [ -f "$W/detail" ] && DETAIL=$(cat "$W/detail") && rm -f "$W/detail"
  printf '%-28s %-16s %4ds  %s\n' "$name" "$status" $((SECONDS - t0)) "$DETAIL"
  python3 - "$STEPS" "$name" "$status" $((SECONDS - t0)) "$DETAIL" <<'PY'
import json, sys
path, name, status, secs, detail = sys.argv[1:]
with open(path, "a") as f:
    f.write(json.dumps({"step": name, "status": status, "seconds": int(secs), "detail": detail}) + "\n")
PY
}
skip() { printf '%-28s %-16s %4ds  %s\n' "$1" skipped 0 "$2"
  python3 -c 'import json,sys; open(sys.argv[1],"a").write(json.dumps({"step":sys.argv[2],"status":"skipped","seconds":0,"detail":sys.argv[3]})+"\n")' "$STEPS" "$1" "$2"; }

# --- the checks ----------------------------------------------------------------------------------
selftest() { kd selftest --device "$DEVICE" --dtype "$1" | tee "$OUT_DIR/selftest_$1.json"; }

teach() { # teach OUT [extra flags]: MiniLM-L3 teacher, LoRA r=8, one epoch, bf16
  local out=$1; shift
  kd teach --config configs/teacher.toml --model "$MODEL" --data "$DATA" --out "$out" \
    --epochs 1 --lr 5e-4 --lora-r 8 --lora-alpha 32 --device "$DEVICE" --dtype bf16 \
    "${TRAIN_FLAGS[@]}" "$@"
}
distill() {
  kd distill --config configs/student.toml --model "$MODEL" --data "$DATA" --out "$W/student" \
    --teacher "$W/teacher" --temperature 2 --alpha 0.5 --epochs 1 --lr 5e-4 --lora-r 4 \
    --lora-alpha 16 --device "$DEVICE" --dtype bf16 "${TRAIN_FLAGS[@]}"
}
accuracy() { # accuracy ROLE RUN: test accuracy against the CPU f32 reference, into DETAIL
  python3 scripts/gpu_check_tools.py accuracy "$1" "$2/summary.json" scripts/gpu_reference.json "$DRY" > "$W/detail"
}
train_teacher() { teach "$W/teacher" && accuracy teacher "$W/teacher"; }
train_student() { distill && accuracy student "$W/student"; }

resume() { # kill -9 once a checkpoint is staged, rerun, compare with the uninterrupted teacher
  local out=$W/teacher_killed staged="$W/.teacher_killed.kd-staging/checkpoint.safetensors"
  teach "$out" & local pid=$!
  local seen=0 last="" killed="not killed: the run ended first"
  while kill -0 $pid 2>/dev/null; do
    if [ -f "$staged" ]; then
      local now; now=$(stat -c %Y.%s "$staged")
      if [ "$now" != "$last" ]; then last=$now; seen=$((seen + 1)); fi
      # The kd process itself (under the backgrounded function and gpu-run.sh), by its --out.
      if [ $seen -ge "$KILL_AFTER_CHECKPOINTS" ] && pkill -9 -f -- "--out $out --epochs"; then
        killed="killed -9 after $seen staged checkpoint(s)"; break
      fi
    fi
    sleep 0.1
  done
  wait $pid 2>/dev/null
  echo "$killed"
  teach "$out" || return 1
  echo "$killed; $(python3 scripts/gpu_check_tools.py same-run "$W/teacher" "$out")" > "$W/detail"
}

bench() { # kd, then the peer at its best, on the same rows and shapes
  kd bench "${BENCH_FLAGS[@]}" --tokenizer "$TOKENIZER" --data "$DATA/test.csv.gz" \
    --device "$DEVICE" --json "$OUT_DIR/bench_kd.json" | tail -n 4
  if python3 -c 'import torch, transformers, peft' 2>/dev/null; then
    python3 bench/peer_hf.py "${PEER_FLAGS[@]}" --tokenizer "$TOKENIZER" --data "$DATA/test.csv.gz" \
      --device "$DEVICE" --json "$OUT_DIR/bench_peer.json" | tail -n 4
  fi
  python3 scripts/gpu_check_tools.py bench "$OUT_DIR/bench_kd.json" "$OUT_DIR/bench_peer.json" > "$W/detail"
}

multi_gpu() { # 2 ranks, one GPU each (NCCL all-reduce): the 2a teacher at 2 × 16 rows a step
  local out=$W/teacher_2gpu
  OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 KD_COLLECTIVE_TIMEOUT=120 \
    mpirun -np 2 --oversubscribe "${RUN[@]}" "$KD" teach --config configs/teacher.toml \
    --model "$MODEL" --data "$DATA" --out "$out" --epochs 1 --lr 5e-4 --lora-r 8 --lora-alpha 32 \
    --device "$DEVICE" --dtype bf16 --batch-size 16 "${TRAIN_FLAGS[@]}" 2>&1 | tail -n 20
  [ -f "$out/summary.json" ] || { echo "no run folder: a kd built with --features cuda,mpi (and NCCL) is needed" > "$W/detail"; return 1; }
  { accuracy teacher "$out" && cat "$W/detail"
    echo "against 1 GPU at batch 32 (dropout masks differ on GPUs): $(python3 scripts/gpu_check_tools.py same-run "$W/teacher" "$out")"; } > "$W/detail.2"
  mv "$W/detail.2" "$W/detail"
}

# --- run them ------------------------------------------------------------------------------------
echo "kd GPU check: device $DEVICE, kd $KD, dry run $DRY, output $OUT_DIR"
step "1a selftest f32" 90 selftest f32
step "1b selftest bf16" 90 selftest bf16
step "2a teacher (bf16, 1 epoch)" 240 train_teacher
step "2b student (bf16, 1 epoch)" 240 train_student
step "3 kill -9 and resume" 300 resume
step "4 bench vs PyTorch peer" 300 bench
GPUS=$(nvidia-smi -L 2>/dev/null | wc -l || true)
if [ "${GPUS:-0}" -ge 2 ] && command -v mpirun > /dev/null; then
  step "5 multi-GPU (NCCL, 2 ranks)" 300 multi_gpu
elif [ "${GPUS:-0}" -ge 2 ]; then
  skip "5 multi-GPU (NCCL)" "$GPUS GPUs here but no mpirun (apt-get install openmpi-bin)"
else
  skip "5 multi-GPU (NCCL)" "one GPU (or none) here"
fi
skip "6 int8 and kd serve" "CPU features: not run on the GPU machine"

python3 scripts/gpu_check_tools.py record "$STEPS" "$ASSETS" "$DEVICE" "$DRY" > "$OUT_DIR/gpu_check.json"
echo "record: $OUT_DIR/gpu_check.json"
python3 -c 'import json,sys; r=json.load(open(sys.argv[1])); sys.exit(0 if r["failed"] == 0 else 1)' "$OUT_DIR/gpu_check.json"
