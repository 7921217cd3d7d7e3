#!/usr/bin/env bash
# Builds the libFuzzer targets (tests/fuzz) with clang, AddressSanitizer and
# UndefinedBehaviorSanitizer, and runs each for SECONDS (default 60) on a scratch copy of its
# seed corpus (tests/fuzz/corpus_*), so the committed corpus stays small.
#
#   scripts/run-fuzzers.sh [SECONDS]
#
# SECONDS is the image decoder's budget; the model file reader gets three times as long
# (FUZZ_MODEL_FILE_SECONDS overrides it): its inputs are larger and slower (each accepted file
# is loaded into a model). fuzz_model_file also checks every file the reader accepts against
# the documented layout on its own (tests/fuzz/fuzz_model_file.cpp, check_layout), so a file
# wrongly accepted, such as one naming a tensor twice, is a finding like a crash.
#
# Environment: BUILD_DIR (default build-fuzz), JOBS (build parallelism, default nproc),
# CC / CXX (default clang-14 / clang++-14), FUZZ_TIMEOUT (seconds one input may take,
# default 30), FUZZ_RSS_LIMIT_MB (default 2048), FUZZ_SEED (libFuzzer's random seed, default 1;
# 0 picks a new one each run). A fixed seed makes a CI run explore the same inputs every time,
# so CI does not fail at random on an old bug; search with other seeds and longer runs by hand.
# Prints each target's libFuzzer final statistics (stat::number_of_executed_units,
# stat::average_exec_per_sec, ...) and a summary of executions and coverage. Exits non-zero when a target finds a crash,
# a sanitizer report, an uncaught non-sga exception, a timeout or an out-of-memory; the inputs
# that caused it are copied to $BUILD_DIR/fuzz-findings/<target>/ and can be replayed with
#   $BUILD_DIR/tests/fuzz/<target> <file>
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-60}"
build_dir="${BUILD_DIR:-build-fuzz}"
jobs="${JOBS:-$(nproc)}"
export CC="${CC:-clang-14}" CXX="${CXX:-clang++-14}"

bash scripts/setup.sh --tools  # clang-14, libFuzzer and its sanitizer runtimes
if ! command -v "$CXX" >/dev/null; then
  echo "run-fuzzers: '$CXX' not found; libFuzzer needs clang (scripts/setup.sh --tools installs clang-14)" >&2
  exit 2
fi

if ! grep -q 'add_subdirectory(tests/fuzz)' CMakeLists.txt; then
  echo "run-fuzzers: CMakeLists.txt does not add tests/fuzz (option SKIPGANOMALY_BUILD_FUZZERS)" >&2
  exit 2
fi
cmake -S . -B "$build_dir" -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DSKIPGANOMALY_BUILD_FUZZERS=ON -DSKIPGANOMALY_CUDA=OFF -DSKIPGANOMALY_BUILD_TESTS=OFF \
  -DSKIPGANOMALY_BUILD_BENCHMARKS=OFF -DSKIPGANOMALY_BUILD_EXAMPLES=OFF
cmake --build "$build_dir" --target fuzz_model_file fuzz_image_decode -j "$jobs"

# One thread per process: the inputs are small, and it keeps the run off the other cores.
export OMP_NUM_THREADS=1
export UBSAN_OPTIONS="${UBSAN_OPTIONS:-halt_on_error=1:print_stacktrace=1}"
scratch="$(mktemp -d "${TMPDIR:-/tmp}/sga-fuzz.XXXXXX")"
trap 'rm -rf "$scratch"' EXIT
findings_dir="$build_dir/fuzz-findings"
rm -rf "$findings_dir"

failed=0
summary=()
model_file_seconds="${FUZZ_MODEL_FILE_SECONDS:-$((seconds * 3))}"
for pair in fuzz_model_file:corpus_model:$model_file_seconds fuzz_image_decode:corpus_image:$seconds; do
  target="${pair%%:*}"
  rest="${pair#*:}"
  corpus="${rest%%:*}"
  target_seconds="${rest##*:}"
  work="$scratch/$target"
  mkdir -p "$work/corpus" "$work/artifacts"
  cp tests/fuzz/"$corpus"/* "$work/corpus/"
  # A target's dictionary, when it has one: tests/fuzz/model_file.dict for fuzz_model_file.
  dictionary=(); [ -f "tests/fuzz/${target#fuzz_}.dict" ] && dictionary=(-dict="tests/fuzz/${target#fuzz_}.dict")
  echo "== $target: ${target_seconds}s on a copy of tests/fuzz/$corpus ($(ls "$work/corpus" | wc -l) seeds)"
  status=0
  "$build_dir/tests/fuzz/$target" "$work/corpus" "${dictionary[@]}" \
    -seed="${FUZZ_SEED:-1}" -max_total_time="$target_seconds" -timeout="${FUZZ_TIMEOUT:-30}" -rss_limit_mb="${FUZZ_RSS_LIMIT_MB:-2048}" \
    -artifact_prefix="$work/artifacts/" -print_final_stats=1 >"$work/log" 2>&1 || status=$?
  executions="$(sed -n 's/^stat::number_of_executed_units: *//p' "$work/log" | tail -1)"
  coverage="$(grep -o 'cov: [0-9]*' "$work/log" | tail -1 || true)"
  corpus_size="$(ls "$work/corpus" | wc -l)"
  # libFuzzer's closing lines: "Done N runs in S second(s)" and the final statistics.
  grep -E '^(Done [0-9]+ runs|stat::)' "$work/log" | sed "s/^/   $target /" || echo "   $target: no final statistics in its log"
  if [ "$status" -ne 0 ] || [ -n "$(ls -A "$work/artifacts")" ]; then
    failed=1
    mkdir -p "$findings_dir/$target"
    cp "$work/artifacts"/* "$findings_dir/$target/" 2>/dev/null || true
    cp "$work/log" "$findings_dir/$target/log.txt"
    echo "!! $target: FINDING (libFuzzer exit $status); the report:"
    grep -E -A40 '^==ORACLE==|^==[0-9]+==ERROR|runtime error|uncaught exception|deadly signal|out-of-memory|timeout' "$work/log" | head -80 || tail -40 "$work/log"
    echo "!! inputs and log copied to $findings_dir/$target/"
    summary+=("$target: FINDING after ${executions:-?} executions ($coverage)")
  else
    summary+=("$target: ${executions:-?} executions in ${target_seconds}s, ${coverage:-cov: ?}, corpus ${corpus_size} inputs, no findings")
  fi
done

echo "== fuzzing summary"
printf '%s\n' "${summary[@]}"
exit "$failed"
