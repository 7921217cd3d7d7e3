#!/usr/bin/env bash
# The tiled inspection configuration of docs/industrial.md, with the command-line tool: for each
# category and seed, fit on ROOT/<category>/train/good and eval on its test set, one thread a run.
#
#   [EPOCHS=40] eval/industrial/run_tiled.sh data/industrial results/<date>-industrial-tiled "0 1 2" [categories...]
#   /usr/bin/python3 eval/industrial/summarize.py results/<date>-industrial-tiled/*.eval.json
set -euo pipefail
root=$1 out=$2 seeds=$3
shift 3
categories=("$@")
[ ${#categories[@]} -gt 0 ] || categories=(wood fabric brick granite marble cork walnut gravel coin dagm)
tool=${SKIPGANOMALY_TOOL:-build/tools/skipganomaly}
mkdir -p "$out"
for seed in $seeds; do
  for c in "${categories[@]}"; do
    base="$out/${c}_seed$seed"
    [ -f "$base.eval.json" ] && continue
    "$tool" fit --data "mvtec:$root/$c" --channels 1 --image-size 32 --tile 64 --stride 32 --epochs "${EPOCHS:-40}" \
        --batch-size 16 --seed "$seed" --threads 1 --out "$base.safetensors" > "$base.log" 2>&1
    "$tool" eval --model "$base.safetensors" --data "mvtec:$root/$c" --threads 1 --json > "$base.eval.json" 2>> "$base.log"
  done
done
