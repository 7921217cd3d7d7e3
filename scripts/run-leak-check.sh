#!/usr/bin/env bash
# Leak check: builds the library (CUDA off, no tests, benchmarks or examples) and
# tests/leak_cycle.cpp, a fit / save / load / score cycle with its error paths, and runs it
# under valgrind memcheck.
#
#   scripts/run-leak-check.sh
#
# Fails (exit 1) on any memcheck error (invalid access, uninitialised value) and on memory
# "definitely lost" or "indirectly lost". "Possibly lost" is reported but does not fail: the
# OpenMP runtime keeps its worker threads (and their thread-local blocks) alive until the
# process exits, and memcheck counts such blocks as possibly lost.
# -march=native is off for this build: valgrind 3.19 cannot run AVX-512 instructions.
# Environment: BUILD_DIR (default build-leak), JOBS (default nproc), OMP_NUM_THREADS
# (default 2, so the OpenMP pool exists), CXX (default c++).
set -euo pipefail
cd "$(dirname "$0")/.."
build_dir="${BUILD_DIR:-build-leak}"
jobs="${JOBS:-$(nproc)}"

if ! command -v valgrind >/dev/null; then
  echo "run-leak-check: valgrind not found (Debian: apt-get install valgrind)" >&2
  exit 2
fi
bash scripts/setup.sh --tools
cmake -S . -B "$build_dir" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DSKIPGANOMALY_NATIVE_ARCH=OFF \
  -DSKIPGANOMALY_CUDA=OFF -DSKIPGANOMALY_BUILD_TESTS=OFF -DSKIPGANOMALY_BUILD_BENCHMARKS=OFF \
  -DSKIPGANOMALY_BUILD_EXAMPLES=OFF
cmake --build "$build_dir" --target skipganomaly -j "$jobs"
"${CXX:-c++}" -std=c++20 -O1 -g -fopenmp -pthread -Iinclude -I"$build_dir/include" \
  tests/leak_cycle.cpp "$build_dir/libskipganomaly.a" -lz -o "$build_dir/leak_cycle"

model="$(mktemp -u "${TMPDIR:-/tmp}/sga_leak_cycle.XXXXXX").safetensors"
log="$build_dir/valgrind.log"
status=0
OMP_NUM_THREADS="${OMP_NUM_THREADS:-2}" valgrind --tool=memcheck --leak-check=full \
  --show-leak-kinds=definite,indirect,possible --errors-for-leak-kinds=definite,indirect \
  --error-exitcode=1 --num-callers=30 --log-file="$log" \
  "$build_dir/leak_cycle" "$model" || status=$?
rm -f "$model"

echo "== valgrind memcheck (full log: $log)"
sed -n '/HEAP SUMMARY/,$p' "$log" | sed 's/^==[0-9]*== //'
if [ "$status" -ne 0 ]; then
  echo "run-leak-check: FAILED (exit $status)" >&2
fi
exit "$status"
