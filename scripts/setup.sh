#!/usr/bin/env bash
# Installs the Debian 12 packages skipganomaly needs (as root, with apt). Idempotent: does
# nothing when everything is already there. CUDA and cuDNN are optional and never installed
# here; the build detects them under /usr/local/cuda.
#
#   scripts/setup.sh            what building and testing need
#   scripts/setup.sh --tools    also the checking tools: clang-14 with libFuzzer and its
#                               sanitizer runtimes, clang's OpenMP, valgrind
#                               (scripts/run-fuzzers.sh, run-sanitizers.sh, run-leak-check.sh)
set -euo pipefail

packages=(build-essential cmake pkg-config libeigen3-dev libstb-dev catch2 libbenchmark-dev
          nlohmann-json3-dev zlib1g-dev
          # the scoring server (docs/serving.md)
          libcpp-httplib-dev
          # the Python module (python/README.md) and its tests
          pybind11-dev python3-dev python3-pybind11 python3-numpy python3-pytest python3-dask
          python3-distributed)
case "${1:-}" in
  "") ;;
  --tools) packages+=(clang-14 libclang-rt-14-dev libomp-14-dev valgrind) ;;
  *) echo "usage: $0 [--tools]" >&2; exit 2 ;;
esac
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing ${missing[*]}"
  sudo_cmd=""
  [ "$(id -u)" -ne 0 ] && sudo_cmd="sudo"
  $sudo_cmd apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
