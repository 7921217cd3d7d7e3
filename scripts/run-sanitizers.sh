#!/usr/bin/env bash
# Builds skipganomaly and its tests with a sanitizer and runs them through CTest.
#
#   scripts/run-sanitizers.sh [asan|tsan]      (default asan)
#
#   asan  AddressSanitizer + UndefinedBehaviorSanitizer (-fno-omit-frame-pointer), every test
#         program; halt_on_error makes any report fail its test.
#   tsan  ThreadSanitizer, only the Detector and score-batcher tests (tests/test_detector.cpp,
#         tests/test_score_batcher.cpp), including "score is safe from many threads at once"
#         (8 threads x 250 score calls) and the batcher's 8 concurrent callers.
#         OMP_NUM_THREADS=1: libgomp is not built with TSan, so TSan cannot see the barriers
#         that order work inside an OpenMP parallel region and reports races between the pool
#         threads that are not there. With one OpenMP thread a parallel region runs on the
#         calling thread, and every thread TSan sees is one the test started itself, ordered
#         by the mutexes and joins TSan understands. What this checks is the Detector's own
#         locking (shared score() calls, the scoring-slot pool, the score batcher), not OpenMP's.
#
# Environment: BUILD_DIR (default build-asan / build-tsan), JOBS (build parallelism, default
# nproc), CTEST_ARGS (extra ctest arguments, e.g. "-R images" to run fewer tests).
# CUDA, benchmarks and examples are off. The install_consumer tests are skipped: they build a separate
# project against the installed library without the sanitizer's link flags.
set -euo pipefail
cd "$(dirname "$0")/.."
mode="${1:-asan}"
build_dir="${BUILD_DIR:-build-$mode}"
jobs="${JOBS:-$(nproc)}"

case "$mode" in
  asan)
    flags="-fsanitize=address,undefined -fno-omit-frame-pointer -g"
    export ASAN_OPTIONS="${ASAN_OPTIONS:-detect_leaks=1:strict_string_checks=1:check_initialization_order=1}"
    export UBSAN_OPTIONS="${UBSAN_OPTIONS:-halt_on_error=1:print_stacktrace=1}"
    targets=()  # everything
    ctest_select=(-E '^install_consumer(_shared)?$')
    ;;
  tsan)
    flags="-fsanitize=thread -g"
    export TSAN_OPTIONS="${TSAN_OPTIONS:-halt_on_error=1:second_deadlock_stack=1}"
    export OMP_NUM_THREADS=1
    targets=(--target test_detector test_score_batcher)
    ctest_select=()  # filled below with the test cases of those two programs
    ;;
  *)
    echo "usage: $0 [asan|tsan]" >&2
    exit 2
    ;;
esac

bash scripts/setup.sh --tools
cmake -S . -B "$build_dir" -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DSKIPGANOMALY_CUDA=OFF -DSKIPGANOMALY_BUILD_TESTS=ON \
  -DSKIPGANOMALY_BUILD_BENCHMARKS=OFF -DSKIPGANOMALY_BUILD_EXAMPLES=OFF \
  -DCMAKE_CXX_FLAGS="$flags" -DCMAKE_EXE_LINKER_FLAGS="$flags" -DCMAKE_SHARED_LINKER_FLAGS="$flags"
cmake --build "$build_dir" -j "$jobs" "${targets[@]}"

if [ "$mode" = tsan ]; then
  # CTest names each Catch2 test case by its title: select exactly these programs' cases.
  # (Catch2 v2 exits with the number of tests listed.)
  # Except the cases that set several OpenMP threads on purpose (set_cpu_threads(2), (3), (8)
  # to compare thread counts): inside libgomp TSan reports the same phantom races as above.
  # Their concurrent-callers part is what "score is safe from many threads at once" checks here.
  names="$(for program in test_detector test_score_batcher; do
             "$build_dir/tests/$program" --list-test-names-only || true
           done | sed '/^$/d' |
           grep -vx -e 'scores are bit-identical for any thread count and under concurrent callers' \
                    -e "a Detector's scores do not depend on the thread budget" || true)"
  regex="$(printf '%s\n' "$names" | sed 's/[][\\.^$*+?(){}|]/\\&/g; s/^/^/; s/$/$/' | paste -sd'|')"
  ctest_select=(-R "$regex")
  echo "tsan: $(printf '%s\n' "$names" | wc -l) test cases of tests/test_detector.cpp and test_score_batcher.cpp, OMP_NUM_THREADS=1"
fi

# shellcheck disable=SC2086
ctest --test-dir "$build_dir" --output-on-failure "${ctest_select[@]}" ${CTEST_ARGS:-}
