#!/usr/bin/env bash
# Everything a GPU machine must prove, in one run of under 8 minutes on an H200 (build
# included), so that 15 minutes of GPU time hold a rerun:
#
#   1. environment: the GPU, the driver, nvcc, cuDNN, compute-sanitizer;
#   2. build: CUDA on, sm_90 only, the test programs of this configuration (the list CMake
#      writes to tests/test_programs.txt: no test_cli or test_opencv, whose examples are off)
#      and the two model benchmarks, -j16;
#   3. every CTest test with SKIPGANOMALY_REQUIRE_GPU=1: no [cuda] test may skip (the CPU
#      tests run too; only the install_consumer packaging checks, without GPU code, are left out);
#   4. compute-sanitizer memcheck, racecheck and synccheck over the CUDA kernel tests;
#   5. bench_cuda: every kernel, then the whole model at isize 32/128/256 (train step
#      batch 64, scoring batch 64 and 1), with the convolution algorithms it chose;
#   6. comparisons: our CPU model (bench_model_cpu) and PyTorch eager on the same GPU
#      (bench/compare_pytorch_cuda.py) against ours.
#
# Writes $OUT/results.md (a table of every step: PASS, FAIL, TIMEOUT or SKIP, with the
# reason) and one log per step beside it: 7 files, none deeper than $OUT. Exits 0 only
# when every required step passed (1-4; 5-6 are measurements). Each step runs under its own
# time limit and the whole under a budget (GPU_CHECKS_BUDGET_S, default 460 s): a step that
# would start too late is skipped, so the script never hangs and always writes its results.
#
# On a GPU machine (its image has CUDA, cuDNN through PyTorch's wheel, CMake and g++,
# but not Eigen, Catch2, Google Benchmark, nlohmann-json or stb):
#   here:   scripts/pack-gpu-deps.sh                       (fills .gpu-deps/, ignored by git)
#   there:  scripts/run-gpu-checks.sh, with .gpu-deps/ copied beside the tree, allowed 540 s
# Without a GPU (any CI machine) it builds, runs the tests, which fail with CUDA's reason
# under SKIPGANOMALY_REQUIRE_GPU=1, skips the GPU-only steps with that reason, and exits 1:
# the dry run, whose build row must say PASS before a GPU run is worth its time
# (a fresh build takes about 20 minutes on 2 cores):
#
#   OUT=$(mktemp -d) GPU_CHECKS_BUILD_LIMIT_S=1500 GPU_CHECKS_BUDGET_S=2000 scripts/run-gpu-checks.sh
#
# scripts/run-gpu-checks.sh --list-targets stops after the configure: it prints the targets
# the build step would build, checks that each exists, and exits 0 only then. CTest runs it
# as gpu_checks_target_list wherever CUDA is built (tests/CMakeLists.txt), in seconds.
#
# The build is made without -Werror: the device's compiler may be newer than CI's and warn
# about something new, which must not cost the tests their only GPU run. CI builds with
# warnings as errors; here the warnings are counted in a row of their own, which does not
# fail the run. Generator: the one BUILD_DIR was configured with, else Ninja, else make
# (else the ninja that scripts/pack-gpu-deps.sh packs).
#
# Environment: OUT (default ./gpu-checks), BUILD_DIR (default build-gpu-checks), JOBS
# (default: the core count, at most 16), GPU_CHECKS_BUDGET_S, GPU_CHECKS_BUILD_LIMIT_S
# (default 300; a 2-core machine needs about 1200 for a fresh build).
set -uo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
list_only=0
case "${1:-}" in
  --list-targets) list_only=1 ;;
  "") ;;
  *) echo "usage: $0 [--list-targets]" >&2; exit 2 ;;
esac
OUT=${OUT:-$root/gpu-checks}
BUILD_DIR=${BUILD_DIR:-build-gpu-checks}
JOBS=${JOBS:-$(nproc)}
[ "$JOBS" -gt 16 ] && JOBS=16
budget=${GPU_CHECKS_BUDGET_S:-460}
build_limit=${GPU_CHECKS_BUILD_LIMIT_S:-300}
mkdir -p "$OUT"
results=$OUT/results.md
start_time=$(date +%s)
failed_required=0

elapsed() { echo $(($(date +%s) - start_time)); }
note() { echo "[$(elapsed) s] $*" | tee -a "$OUT/environment.log"; }
row() { echo "| $1 | $2 | $3 | $4 |" >>"$results"; }

# step NAME REQUIRED LIMIT_S LOG COMMAND...: runs COMMAND under `timeout` (never past the
# budget), appends its output to LOG and a row to the results table.
step() {
  local name=$1 required=$2 limit=$3 log=$4
  shift 4
  local left=$((budget - $(elapsed)))
  if [ "$left" -lt 15 ]; then
    row "$name" "SKIP" 0 "out of time (budget ${budget} s)"
    [ "$required" = required ] && failed_required=1
    return 1
  fi
  [ "$limit" -gt "$left" ] && limit=$left
  echo "==== $name (limit ${limit} s) ====" >>"$log"
  local begin=$(date +%s)
  timeout --kill-after=10 "$limit" "$@" >>"$log" 2>&1
  local status=$?
  local took=$(($(date +%s) - begin))
  local verdict=PASS detail="exit 0"
  if [ $status -eq 124 ] || [ $status -eq 137 ]; then
    verdict=TIMEOUT detail="stopped after ${limit} s"
  elif [ $status -ne 0 ]; then
    verdict=FAIL detail="exit $status, see $(basename "$log")"
  fi
  row "$name" "$verdict" "$took" "$detail"
  note "$name: $verdict ($took s)"
  if [ "$verdict" != PASS ] && [ "$required" = required ]; then failed_required=1; fi
  [ "$verdict" = PASS ]
}

{
  echo "# GPU checks"
  echo
  echo "Run $(date -u '+%Y-%m-%d %H:%M UTC') on $(hostname), commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown)."
  echo
} >"$results"
: >"$OUT/environment.log"

# ---- 1. environment ---------------------------------------------------------------------
gpu_present=0
if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >>"$OUT/environment.log" 2>&1; then
  gpu_present=1
  nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv >>"$OUT/environment.log" 2>&1
  gpu_line=$(nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null | head -1)
elif command -v nvidia-smi >/dev/null 2>&1; then
  gpu_line="none (nvidia-smi -L: $(nvidia-smi -L 2>&1 | head -1))"
else
  gpu_line="none (no nvidia-smi)"
fi
export PATH=$PATH:/usr/local/cuda/bin
nvcc_line=$(nvcc --version 2>/dev/null | grep -o 'release [0-9.]*' || echo "no nvcc")

# cuDNN: /usr/local/cuda or /usr (Debian/NVIDIA packages), else the nvidia-cudnn wheel PyTorch brings.
cudnn_include="" cudnn_library=""
for dir in /usr/local/cuda/include /usr/include /usr/include/x86_64-linux-gnu; do
  [ -f "$dir/cudnn.h" ] && { cudnn_include=$dir; break; }
done
for dir in /usr/local/cuda/lib64 /usr/lib/x86_64-linux-gnu; do
  for file in "$dir/libcudnn.so" "$dir"/libcudnn.so.[0-9]*; do
    [ -e "$file" ] && { cudnn_library=$file; break 2; }
  done
done
if [ -z "$cudnn_include" ] || [ -z "$cudnn_library" ]; then
  # The wheels' layout has changed between CUDA versions (nvidia/cudnn/, nvidia/cu13/):
  # look for cudnn.h under every nvidia/ package folder of python3's site-packages.
  header=$(python3 - <<'PYTHON' 2>/dev/null
import os, site
roots = [os.path.join(p, "nvidia") for p in site.getsitepackages() + [site.getusersitepackages()]]
for root in roots:
    for folder, _, files in os.walk(root):
        if "cudnn.h" in files:
            print(os.path.join(folder, "cudnn.h"))
            raise SystemExit
PYTHON
)
  if [ -n "$header" ]; then
    cudnn_include=$(dirname "$header")
    cudnn_library=$(ls "$(dirname "$cudnn_include")"/lib/libcudnn.so* 2>/dev/null | head -1)
    # cuDNN loads its engine libraries (and cuBLAS, NVRTC for some engines) at run time:
    # every lib folder of the nvidia wheels goes on the loader's path.
    for lib in $(find "$(dirname "$(dirname "$cudnn_include")")" -maxdepth 3 -type d -name lib 2>/dev/null); do
      export LD_LIBRARY_PATH=$lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
    done
  fi
fi
[ -d /usr/local/cuda/lib64 ] && export LD_LIBRARY_PATH=${LD_LIBRARY_PATH:+$LD_LIBRARY_PATH:}/usr/local/cuda/lib64
sanitizer=$(command -v compute-sanitizer || ls /usr/local/cuda/bin/compute-sanitizer 2>/dev/null || true)
cmake_prefix=""
if [ -d "$root/.gpu-deps/usr" ]; then
  cmake_prefix=$root/.gpu-deps/usr
  export LD_LIBRARY_PATH=$cmake_prefix/lib/x86_64-linux-gnu${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
fi
# CMake refuses to change the generator of a configured folder; a fresh one gets Ninja where
# it is installed, else make, else the ninja of .gpu-deps (scripts/pack-gpu-deps.sh).
generator=() generator_line="from $BUILD_DIR/CMakeCache.txt"
if [ ! -f "$BUILD_DIR/CMakeCache.txt" ]; then
  if command -v ninja >/dev/null 2>&1; then
    generator=(-G Ninja) generator_line="Ninja ($(command -v ninja))"
  elif command -v make >/dev/null 2>&1; then
    generator=(-G "Unix Makefiles") generator_line="Unix Makefiles ($(command -v make))"
  elif [ -n "$cmake_prefix" ] && [ -x "$cmake_prefix/bin/ninja" ]; then
    generator=(-G Ninja "-DCMAKE_MAKE_PROGRAM=$cmake_prefix/bin/ninja") generator_line="Ninja ($cmake_prefix/bin/ninja)"
  else
    generator_line="none: neither ninja nor make is on PATH"
  fi
fi
# ctest runs 4 programs at once (fewer on a smaller machine); the CPU tests' thread budget
# (set_cpu_threads in include/skipganomaly/device.hpp) defaults to OMP_NUM_THREADS, so each
# gets its share of the cores: jobs x threads <= cores.
cores=$(nproc)
ctest_jobs=4
[ "$cores" -lt "$ctest_jobs" ] && ctest_jobs=$cores
test_threads=$((cores / ctest_jobs))
{
  echo "| what | found |"
  echo "| --- | --- |"
  echo "| GPU | $gpu_line |"
  echo "| nvcc | $nvcc_line |"
  echo "| cuDNN | ${cudnn_library:-not found} |"
  echo "| compute-sanitizer | ${sanitizer:-not found} |"
  echo "| dependencies | ${cmake_prefix:-system packages} |"
  echo "| generator | $generator_line |"
  echo "| CPU cores used | $JOBS to build; ctest $ctest_jobs jobs x $test_threads threads |"
  echo
  echo "| step | result | seconds | detail |"
  echo "| --- | --- | --- | --- |"
} >>"$results"
note "GPU: $gpu_line; nvcc: $nvcc_line; cuDNN: ${cudnn_library:-not found}"
note "LD_LIBRARY_PATH=${LD_LIBRARY_PATH:-}"

# ---- 2. build -----------------------------------------------------------------------------
# Warnings as errors OFF: see the header; they are counted after the build.
configure=(cmake -S . -B "$BUILD_DIR" "${generator[@]}" -DCMAKE_BUILD_TYPE=Release -DSKIPGANOMALY_CUDA=ON
           -DCMAKE_CUDA_ARCHITECTURES=90 -DSKIPGANOMALY_WARNINGS_AS_ERRORS=OFF -DSKIPGANOMALY_BUILD_EXAMPLES=OFF)
[ -n "$cmake_prefix" ] && configure+=("-DCMAKE_PREFIX_PATH=$cmake_prefix")
[ -n "$cudnn_include" ] && configure+=("-DSKIPGANOMALY_CUDNN_INCLUDE_DIR=$cudnn_include")
[ -n "$cudnn_library" ] && configure+=("-DSKIPGANOMALY_CUDNN_LIBRARY=$cudnn_library")
built=0 targets_ok=0 build_targets=()
if step "configure (CUDA on, sm_90)" required 120 "$OUT/build.log" "${configure[@]}"; then
  # The targets of this configuration, as CMake lists them: the test programs CTest runs
  # (tests/CMakeLists.txt writes them) and the two benchmarks; each must be a target that
  # the build system knows, so that the build step cannot fail on a name alone.
  if [ -f "$BUILD_DIR/tests/test_programs.txt" ]; then
    mapfile -t build_targets < <(grep -v '^$' "$BUILD_DIR/tests/test_programs.txt")
  fi
  build_targets+=(bench_cuda bench_model_cpu)
  known=$(cmake --build "$BUILD_DIR" --target help 2>>"$OUT/build.log")
  missing=()
  for target in "${build_targets[@]}"; do
    # make: "... NAME"; Ninja: "NAME: phony" (or another rule).
    grep -qE "^(\.\.\. )?$target(:|\$| )" <<<"$known" || missing+=("$target")
  done
  if [ ${#build_targets[@]} -gt 2 ] && [ ${#missing[@]} -eq 0 ]; then
    targets_ok=1
    row "build targets" PASS 0 "${#build_targets[@]}: ${build_targets[*]}"
  else
    row "build targets" FAIL 0 "not targets of $BUILD_DIR: ${missing[*]:-no test programs listed in tests/test_programs.txt}"
    failed_required=1
  fi
  note "build targets: ${build_targets[*]}${missing[*]:+ (missing: ${missing[*]})}"
fi
if [ $list_only -eq 1 ]; then
  {
    echo
    echo "Listed only (--list-targets): nothing was built. Required steps: $([ $failed_required -eq 0 ] && echo "all passed" || echo "NOT all passed")."
  } >>"$results"
  cat "$results"
  printf '%s\n' "${build_targets[@]}"
  exit $failed_required
fi
if [ $targets_ok -eq 1 ]; then
  step "build ($JOBS jobs)" required "$build_limit" "$OUT/build.log" \
    cmake --build "$BUILD_DIR" -j "$JOBS" --target "${build_targets[@]}" && built=1
  # Every compiler and linker warning of this build (gcc "file:line:col: warning:", nvcc
  # "file(line): warning #N-D:"); a file that was up to date prints none.
  warnings=$(awk '/^==== build/ { count = 0 } /: warning:|: warning #/ { count++ } END { print count + 0 }' "$OUT/build.log")
  row "compiler warnings (not errors here)" "$([ "$warnings" -eq 0 ] && echo PASS || echo WARN)" - \
    "$warnings warning lines in build.log"
fi

# ---- 3. every test, the GPU required --------------------------------------------------------
if [ $built -eq 1 ]; then
  # What the library itself says about the GPU (a skipped test prints CUDA's exact error).
  probe=$(env -u SKIPGANOMALY_REQUIRE_GPU timeout 30 "$BUILD_DIR/tests/test_cuda" "[cuda][context]" 2>&1 |
          grep -m1 -o "no usable CUDA device: .*")
  row "CUDA runtime probe" "-" "-" "${probe:-a usable GPU: the [cuda] tests run}"
  note "CUDA runtime probe: ${probe:-a usable GPU}"
  # -j4 at most: the CUDA tests share the GPU, which has room for four; the CPU tests share
  # the cores, test_threads each (above).
  step "ctest, SKIPGANOMALY_REQUIRE_GPU=1" required 240 "$OUT/tests.log" \
    env SKIPGANOMALY_REQUIRE_GPU=1 OMP_NUM_THREADS="$test_threads" \
    ctest --test-dir "$BUILD_DIR" -j "$ctest_jobs" --output-on-failure --timeout 200 \
    -E '^install_consumer(_shared)?$'
  summary=$(grep -E "tests passed|tests failed" "$OUT/tests.log" | tail -1)
  row "ctest summary" "-" "-" "${summary:-no summary}"
else
  row "ctest, SKIPGANOMALY_REQUIRE_GPU=1" SKIP 0 "the build failed"
  failed_required=1
fi

# ---- 4. compute-sanitizer -----------------------------------------------------------------
if [ $built -eq 0 ]; then
  row "compute-sanitizer" SKIP 0 "the build failed"
  failed_required=1
elif [ $gpu_present -eq 0 ]; then
  row "compute-sanitizer" SKIP 0 "no GPU: $gpu_line"
  failed_required=1
elif [ -z "$sanitizer" ]; then
  row "compute-sanitizer" FAIL 0 "compute-sanitizer not found"
  failed_required=1
else
  tests=$BUILD_DIR/tests
  # Our own kernels in every family (and small cuDNN convolutions: wrong descriptor sizes
  # would read or write out of bounds), the runtime's copies and arena. The batch-64 model
  # shapes ([large], [determinism], [workspace]) would take minutes under instrumentation.
  kernel_tests='[cuda]~[large]~[determinism]~[workspace]~[no-gpu]'
  step "memcheck: test_cuda" required 90 "$OUT/sanitizers.log" env SKIPGANOMALY_REQUIRE_GPU=1 \
    "$sanitizer" --tool memcheck --error-exitcode 1 --leak-check no "$tests/test_cuda" "$kernel_tests"
  step "memcheck: test_cuda_runtime copies and arena" required 45 "$OUT/sanitizers.log" env SKIPGANOMALY_REQUIRE_GPU=1 \
    "$sanitizer" --tool memcheck --error-exitcode 1 "$tests/test_cuda_runtime" '[copy],[arena]'
  # racecheck and synccheck look at shared memory and __syncthreads: the reductions
  # (batch norm, losses, bias gradient, per-sample MSE) are what uses them.
  shared_memory_tests='[batchnorm],[losses],[bias],[adam]'
  step "racecheck: reductions" required 45 "$OUT/sanitizers.log" env SKIPGANOMALY_REQUIRE_GPU=1 \
    "$sanitizer" --tool racecheck --racecheck-report all --error-exitcode 1 "$tests/test_cuda" "$shared_memory_tests"
  step "synccheck: reductions" required 30 "$OUT/sanitizers.log" env SKIPGANOMALY_REQUIRE_GPU=1 \
    "$sanitizer" --tool synccheck --error-exitcode 1 "$tests/test_cuda" "$shared_memory_tests"
fi

# ---- 5. benchmarks ------------------------------------------------------------------------
if [ $built -eq 1 ]; then
  step "bench_cuda (kernels, then the model at isize 32/128/256)" measured 90 "$OUT/bench.log" \
    env SKIPGANOMALY_REQUIRE_GPU=1 SKIPGANOMALY_CUDA_LOG_ALGORITHMS=1 "$BUILD_DIR/bench/bench_cuda" \
    --benchmark_min_time=0.1 --benchmark_out="$OUT/bench_cuda.json" --benchmark_out_format=json
else
  row "bench_cuda" SKIP 0 "the build failed"
fi

# ---- 6. comparisons ------------------------------------------------------------------------
if [ $built -eq 1 ]; then
  step "CPU model (bench_model_cpu, $JOBS threads)" measured 40 "$OUT/compare.log" \
    env OMP_NUM_THREADS="$JOBS" "$BUILD_DIR/bench/bench_model_cpu" --benchmark_min_time=0.2
  if [ $gpu_present -eq 1 ]; then
    step "PyTorch eager on the same GPU (compare_pytorch_cuda.py)" measured 120 "$OUT/compare.log" \
      python3 bench/compare_pytorch_cuda.py --bench "$BUILD_DIR/bench/bench_cuda"
  else
    row "PyTorch eager on the same GPU" SKIP 0 "no GPU: $gpu_line"
  fi
fi

{
  echo
  echo "Total: $(elapsed) s (budget $budget s). Required steps: $([ $failed_required -eq 0 ] && echo "all passed" || echo "NOT all passed")."
  echo
  echo "Logs beside this file: environment.log, build.log, tests.log, sanitizers.log, bench.log (with every"
  echo "convolution algorithm chosen), bench_cuda.json, compare.log."
} >>"$results"
cat "$results"
exit $failed_required
