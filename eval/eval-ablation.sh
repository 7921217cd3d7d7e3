#!/usr/bin/env bash
# Reproduces an ablation table in one command (docs/technical-report.md, "Ablation"): each label-free
# technique of the default recipe alone and in combination, every class, several seeds, the
# model fit() keeps, eval-mode scores. One single-threaded eval_one_class job per variant and
# seed, `JOBS` at a time (default: the number of cores); then the table of
# eval/summarize_one_class.py --table techniques.
#
#   eval/eval-ablation.sh mnist                           # 6 variants x 10 digits x seeds 0 1 2
#   eval/eval-ablation.sh cifar10 --max-train 1000        # (scripts/fetch-cifar10.sh first)
#   VARIANTS="precise_bn restoration" SEEDS=0 eval/eval-ablation.sh mnist --classes 2,5,8
#
# The variants (the rotation head needs the rotation restoration: its inputs are the turned
# images), as eval_one_class switches:
#   official                   --recipe official
#   precise_bn                 --recipe official --recompute-batch-norm on
#   restoration                --recipe robust --recompute-batch-norm off
#   robust                     --recipe robust                 (restoration + precise BN)
#   restoration_rotation_head  --recipe robust_rotation --recompute-batch-norm off
#   robust_rotation            --recipe robust_rotation        (all three: the default)
# Extra arguments go to every run. Results: OUT/<variant>/seed<S>.json (default
# OUT=runs/ablation_<dataset>), rewritten after every class, so an interrupted run keeps what it
# finished.
set -euo pipefail
cd "$(dirname "$0")/.."
dataset="${1:?usage: $0 mnist|cifar10 [eval_one_class options]}"
shift
seeds="${SEEDS:-0 1 2}"
variants="${VARIANTS:-official precise_bn restoration robust restoration_rotation_head robust_rotation}"
out="${OUT:-runs/ablation_${dataset}}"
jobs="${JOBS:-$(nproc)}"
switches() {
  case "$1" in
    official) echo "--recipe official" ;;
    precise_bn) echo "--recipe official --recompute-batch-norm on" ;;
    restoration) echo "--recipe robust --recompute-batch-norm off" ;;
    robust) echo "--recipe robust" ;;
    restoration_rotation_head) echo "--recipe robust_rotation --recompute-batch-norm off" ;;
    robust_rotation) echo "--recipe robust_rotation" ;;
    *) echo "unknown variant '$1'" >&2; return 1 ;;
  esac
}
for variant in $variants; do switches "$variant" >/dev/null; done
[ "$dataset" = cifar10 ] && bash scripts/fetch-cifar10.sh
BUILD_TARGET=eval_one_class bash scripts/build.sh >/dev/null
eval_one_class="${BUILD_DIR:-build}/eval/eval_one_class"
for variant in $variants; do
  mkdir -p "$out/$variant"
  for seed in $seeds; do
    echo "$eval_one_class --dataset $dataset $(switches "$variant") --seed $seed --threads 1 --final-only --eval-mode-only $*" \
         "--out $out/$variant/seed$seed.json > $out/$variant/seed$seed.log 2>&1 && echo done: $variant seed $seed"
  done
done | xargs -P "$jobs" -I{} sh -c "{}"
python3 eval/summarize_one_class.py --table techniques "$out"/*/seed*.json
