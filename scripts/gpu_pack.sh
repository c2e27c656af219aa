#!/usr/bin/env bash
# Packs .gpu/, the one folder the GPU check carries (scripts/gpu_check.sh says why and how).
# Run here, from the project root, with ../shared beside it:
#   scripts/gpu_pack.sh            build the CUDA binary (../shared/tools/cuda-build.sh, ~18 min
#                                  the first time, incremental after), then pack
#   scripts/gpu_pack.sh --no-build pack the binary already in target/cuda-dist
# The device call carries [".gpu"]; the working tree travels too, so the pack must stay under
# 64 MiB less the tree's tracked files (checked below).
set -euo pipefail
cd "$(dirname "$0")/.."
SHARED=${SHARED:-../shared}
[ "${1:-}" = --no-build ] || "$SHARED/tools/cuda-build.sh"
[ -x target/cuda-dist/kd ] || { echo "no target/cuda-dist/kd: run without --no-build" >&2; exit 1; }
# .gpu/ is in .gitignore: only the device call's carry takes it along.
rm -rf .gpu && mkdir -p .gpu
# The binary's CUDA kernels (PTX and cubins) compress well; the device has xz.
xz -T0 -6 -c target/cuda-dist/kd > .gpu/kd.xz
cp target/cuda-dist/gpu-run.sh .gpu/
cp -r "$SHARED/data/ag_news/split" .gpu/split
cp -r "$SHARED/models/paraphrase-MiniLM-L3-v2" .gpu/
cp -r "$SHARED/models/roberta-base-tokenizer" .gpu/
git rev-parse HEAD > .gpu/COMMIT
git diff --quiet HEAD || echo "$(cat .gpu/COMMIT)+uncommitted" > .gpu/COMMIT
chmod -R u+w .gpu
pack=$(du -sb .gpu | cut -f1)
tree=$(git ls-files -z | xargs -0 du -cb 2>/dev/null | tail -1 | cut -f1)
echo ".gpu: $((pack / 1048576)) MiB; tracked tree: $((tree / 1048576)) MiB; limit 64 MiB"
[ $((pack + tree)) -lt $((64 * 1048576)) ] || { echo "over the 64 MiB carry limit" >&2; exit 1; }
