#!/usr/bin/env bash
# The test command: installs what is missing, builds everything with warnings as errors and
# runs the whole suite through CTest. CUDA tests report "skipped" where no GPU is present.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/build.sh -DSKIPGANOMALY_WARNINGS_AS_ERRORS=ON
ctest --test-dir "${BUILD_DIR:-build}" --output-on-failure -j "$(nproc)"
