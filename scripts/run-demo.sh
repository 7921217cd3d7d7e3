#!/usr/bin/env bash
# The main job: installs what is missing, builds, then trains Skip-GANomaly on the bundled
# MNIST subset, scores the held-out test images and prints the results.
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD_TARGET=skipganomaly_cli bash scripts/build.sh
"${BUILD_DIR:-build}/tools/skipganomaly" demo --out "${DEMO_OUT:-demo-output}" "$@"
