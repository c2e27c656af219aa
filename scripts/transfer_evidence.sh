#!/usr/bin/env bash
# A student closer to its teacher (issue 23, item 3) on the low-label protocol
# (../shared/data/ag_news/lowlabel: 1,000 labelled rows, 5,000 unlabelled, 1,600 test rows):
# augmented transfer sets, longer student training, the representation term and the ensemble
# teacher, each against the same baseline student, four paired seeds.
#
# Teacher: the one scripts/repr_evidence.sh trains (all-MiniLM-L6-v2, LoRA r=8/α=32, 6 epochs on
# the labelled rows, seed 42, logits and representations of labelled + unlabelled rows); this
# script trains it when TEACHER does not hold it yet. Student: paraphrase-MiniLM-L3-v2, LoRA
# r=4/α=16, T=2, α=0.5 on labelled rows, T²·KL alone on transfer rows, batch 32, lr 5e-4. Arms:
#   base    2 epochs over labelled + unlabelled rows (scripts/lowlabel_distill.sh's student)
#   e4      4 epochs
#   e8      8 epochs
#   aug4    + 4 augmented variants of every labelled row (kd augment, Tang et al. 2019: masking,
#           shuffles within a window, n-gram samples), scored by the teacher (kd cache), 2 epochs
#   aug16   + 16 variants of every labelled row, 2 epochs
#   aug16r  aug16 + β = 0.2 cosine representation term
#   aug16e4 aug16, 4 epochs
#   ens     base, distilled from the mean of two teachers (the seed-42 one and a seed-7 one)
# The labelled rows are the ones augmented: they are the task's own rows and the scarce ones
# (Tang et al. augment the training set); the 5,000 unlabelled rows are a transfer set already.
# Every arm of a seed shares the seed (split, batch order, dropout, initialisation), so the
# differences are paired. Writes OUT/transfer_evidence.md: accuracies per seed, each arm's
# difference to base (mean ± paired standard error), its gap to the teacher, and its costs (rows
# scored by the teacher, cache sizes, scoring and training seconds).
#
#   scripts/transfer_evidence.sh [KD_BINARY] [OUT_DIR] [SEED...]   (default seeds: 0 1 2 3)
#   TEACHER=runs/repr_evidence/teacher (default) reuses that teacher.
#   REPORT_ONLY=1 writes the report from the runs there are, training nothing.
# An arm missing for some seeds (a run cut short) is reported over the seeds it has, and says so.
set -euo pipefail
KD=${1:-target/release/kd}
OUT=${2:-runs/transfer_evidence}
shift $(($# < 2 ? $# : 2))
SEEDS=("$@")
[ ${#SEEDS[@]} -gt 0 ] || SEEDS=(0 1 2 3)
SHARED=${SHARED:-../shared}
TEACHER=${TEACHER:-runs/repr_evidence/teacher}
DATA=$SHARED/data/ag_news/lowlabel
U=$DATA/unlabelled.csv.gz
COMMON=(--data "$DATA" --batch-size 32 --lr 5e-4 --max-len 128)
STUDENT=(--config configs/student.toml --model "$SHARED/models/paraphrase-MiniLM-L3-v2"
         --temperature 2 --alpha 0.5 "${COMMON[@]}")
mkdir -p "$OUT"
seconds() { local start=$(date +%s); "$@" >&2; echo $(($(date +%s) - start)); }

if [ ! -f "$TEACHER/summary.json" ]; then
  s=$(seconds "$KD" teach --config configs/teacher.toml --model "$SHARED/models/all-MiniLM-L6-v2" \
    --unlabelled "$U" --epochs 6 --seed 42 --cache-representations --out "$TEACHER" "${COMMON[@]}")
  echo "$s" > "$TEACHER.seconds"
fi
if [ ! -f "$OUT/teacher2/summary.json" ]; then
  s=$(seconds "$KD" teach --config configs/teacher.toml --model "$SHARED/models/all-MiniLM-L6-v2" \
    --unlabelled "$U" --epochs 6 --seed 7 --out "$OUT/teacher2" "${COMMON[@]}")
  echo "$s" > "$OUT/teacher2.seconds"
fi
for n in 4 16; do
  [ -f "$OUT/aug$n.csv" ] ||
    "$KD" augment "$DATA/train.csv.gz" --variants "$n" --seed 7 --out "$OUT/aug$n.csv"
  if [ ! -f "$OUT/teacher_aug$n/summary.json" ]; then
    rm -rf "$OUT/teacher_aug$n.tmp"
    cp -r "$TEACHER" "$OUT/teacher_aug$n.tmp"
    s=$(seconds "$KD" cache "$OUT/teacher_aug$n.tmp" --unlabelled "$U" --unlabelled "$OUT/aug$n.csv")
    echo "$s" > "$OUT/teacher_aug$n.cache_seconds"
    mv "$OUT/teacher_aug$n.tmp" "$OUT/teacher_aug$n"
  fi
done

arm() { # name, then kd distill arguments
  local name=$1; shift
  [ -f "$OUT/$name/summary.json" ] && return
  rm -rf "$OUT/$name"
  local s; s=$(seconds "$KD" distill "${STUDENT[@]}" "$@" --out "$OUT/$name")
  echo "$s" > "$OUT/$name.seconds"
}
[ "${REPORT_ONLY:-0}" = 1 ] && SEEDS_RUN=() || SEEDS_RUN=("${SEEDS[@]}")
for seed in "${SEEDS_RUN[@]}"; do
  arm "base_$seed" --teacher "$TEACHER" --unlabelled "$U" --epochs 2 --seed "$seed"
  arm "e4_$seed" --teacher "$TEACHER" --unlabelled "$U" --epochs 4 --seed "$seed"
  arm "e8_$seed" --teacher "$TEACHER" --unlabelled "$U" --epochs 8 --seed "$seed"
  for n in 4 16; do
    arm "aug${n}_$seed" --teacher "$OUT/teacher_aug$n" --unlabelled "$U" \
      --unlabelled "$OUT/aug$n.csv" --epochs 2 --seed "$seed"
  done
  arm "aug16r_$seed" --teacher "$OUT/teacher_aug16" --unlabelled "$U" \
    --unlabelled "$OUT/aug16.csv" --epochs 2 --repr-weight 0.2 --seed "$seed"
  arm "ens_$seed" --teacher "$TEACHER" --teacher "$OUT/teacher2" --unlabelled "$U" --epochs 2 \
    --seed "$seed"
  arm "aug16e4_$seed" --teacher "$OUT/teacher_aug16" --unlabelled "$U" \
    --unlabelled "$OUT/aug16.csv" --epochs 4 --seed "$seed"
done

python3 - "$OUT" "$TEACHER" "$(git rev-parse --short HEAD 2>/dev/null || echo '?')" \
  "$("$KD" --version)" "${SEEDS[@]}" <<'PY' | tee "$OUT/transfer_evidence.md"
import json, os, platform, statistics, sys
out, teacher_dir, commit, version, seeds = *sys.argv[1:5], sys.argv[5:]
load = lambda path: json.load(open(f"{path}/summary.json"))
acc = lambda run: 100 * load(f"{out}/{run}")["test_accuracy"]
secs = lambda path: int(open(path).read()) if os.path.exists(path) else float("nan")
size = lambda d, f: os.path.getsize(f"{d}/{f}") / 1e6 if os.path.exists(f"{d}/{f}") else 0.0
cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
teacher = 100 * load(teacher_dir)["test_accuracy"]
teacher2 = 100 * load(f"{out}/teacher2")["test_accuracy"]
def mean_se(xs):
    se = statistics.stdev(xs) / len(xs) ** 0.5 if len(xs) > 1 else float("nan")
    return statistics.mean(xs), se
arms = [("base", "2 epochs, labelled + 5,000 unlabelled rows", teacher_dir),
        ("e4", "4 epochs", teacher_dir),
        ("e8", "8 epochs", teacher_dir),
        ("aug4", "+ 4 variants per labelled row (4,000 rows)", f"{out}/teacher_aug4"),
        ("aug16", "+ 16 variants per labelled row (16,000 rows)", f"{out}/teacher_aug16"),
        ("aug16r", "aug16 + β = 0.2 cosine representation term", f"{out}/teacher_aug16"),
        ("aug16e4", "aug16, 4 epochs", f"{out}/teacher_aug16"),
        ("ens", "two teachers (seeds 42 and 7), 2 epochs", f"{out}/teacher2")]
have = lambda a, s: os.path.exists(f"{out}/{a}_{s}/summary.json")
arms = [arm for arm in arms if any(have(arm[0], s) for s in seeds)]
print("# Closer to the teacher: augmentation, epochs, representations, ensemble (low-label protocol)\n")
print(f"{version}, commit {commit}, {cpu}, {os.cpu_count()} CPUs, {platform.machine()}; "
      f"teacher {teacher:.2f}% (seed 42), second teacher {teacher2:.2f}% (seed 7)\n")
print("| seed | " + " | ".join(a for a, _, _ in arms) + " |")
print("| ---: |" + " ---: |" * len(arms))
for s in seeds:
    print(f"| {s} | " + " | ".join(f"{acc(f'{a}_{s}'):.2f}%" if have(a, s) else "—" for a, _, _ in arms) + " |")
print(f"\n| arm | what | seeds | mean accuracy | − base (paired) | gap to teacher | transfer cache | teacher scoring s | student training s (mean) |")
print("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
for a, what, tdir in arms:
    ss = [s for s in seeds if have(a, s) and have("base", s)]
    accs = [acc(f"{a}_{s}") for s in ss]
    m, _ = mean_se(accs)
    d, dse = mean_se([acc(f"{a}_{s}") - acc(f"base_{s}") for s in ss])
    g, gse = mean_se([teacher - x for x in accs])
    cache = size(tdir, "logits.bin") + (size(tdir, "representations.bin") if a == "aug16r" else 0.0)
    scoring = {"base": secs(f"{teacher_dir}.seconds"), "aug4": secs(f"{out}/teacher_aug4.cache_seconds"),
               "aug16": secs(f"{out}/teacher_aug16.cache_seconds"),
               "ens": secs(f"{out}/teacher2.seconds")}.get(a, 0)
    train = statistics.mean(secs(f"{out}/{a}_{s}.seconds") for s in ss)
    diff = "—" if a == "base" else f"{d:+.2f} ± {dse:.2f} pt"
    print(f"| {a} | {what} | {len(ss)} | {m:.2f}% | {diff} | {g:.2f} ± {gse:.2f} pt | {cache:.2f} MB | {scoring} | {train:.0f} |")
print(f"\nUp to {len(seeds)} paired seeds (column seeds); ± is the standard error over seeds. Teacher scoring seconds: base = "
      "training + scoring the teacher; aug = kd cache of the teacher's unlabelled + augmented rows; "
      "ens = the second teacher's training and scoring; 0 = nothing new to score. Goal: the student within 0.5 pt of its teacher.")
PY
