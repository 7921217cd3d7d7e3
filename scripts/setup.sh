#!/usr/bin/env bash
# Installs the Debian 12 packages skipganomaly needs to build and test (as root, with apt).
# Idempotent: does nothing when everything is already there. CUDA and cuDNN are optional
# and never installed here; the build detects them under /usr/local/cuda.
set -euo pipefail

packages=(build-essential cmake pkg-config libeigen3-dev libstb-dev catch2 libbenchmark-dev
          nlohmann-json3-dev zlib1g-dev)
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
