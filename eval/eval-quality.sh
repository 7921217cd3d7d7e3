#!/usr/bin/env bash
# Reproduces a detection-quality table in one command (docs/quality.md): every class of a data
# set, several seeds, the model fit() keeps (no test label in any decision), eval-mode scores.
# Runs one single-threaded job per seed, `JOBS` at a time (default: the number of cores), then
# prints per-class mean and standard deviation over seeds and the mean over classes.
#
#   eval/eval-quality.sh mnist                          # 10 digits x seeds 0 1 2, default recipe
#   eval/eval-quality.sh cifar10 --max-train 1000       # CIFAR-10 (scripts/fetch-cifar10.sh first)
#   SEEDS="0 1" RECIPE=official OUT=runs/official eval/eval-quality.sh mnist
#
# Extra arguments go to every eval_one_class run (e.g. --classes 2,5,8, --epochs 15, or the
# ablation switches --gated-skips, --rotation, --recompute-batch-norm, ... in eval/eval_one_class.cpp).
set -euo pipefail
cd "$(dirname "$0")/.."
dataset="${1:?usage: $0 mnist|cifar10 [eval_one_class options]}"
shift
seeds="${SEEDS:-0 1 2}"
recipe="${RECIPE:-robust_rotation}"
out="${OUT:-runs/${dataset}_${recipe}}"
jobs="${JOBS:-$(nproc)}"
[ "$dataset" = cifar10 ] && bash scripts/fetch-cifar10.sh
BUILD_TARGET=eval_one_class bash scripts/build.sh >/dev/null
mkdir -p "$out"
for seed in $seeds; do
  echo "$seed"
done | xargs -P "$jobs" -I{} sh -c \
  "\"${BUILD_DIR:-build}/eval/eval_one_class\" --dataset $dataset --recipe $recipe --seed {} --threads 1 --final-only $* \
     --out \"$out/seed{}.json\" > \"$out/seed{}.log\" 2> \"$out/seed{}.err\" && tail -n 1 \"$out/seed{}.log\""
python3 eval/summarize_one_class.py "$out"/seed*.json
