#!/usr/bin/env bash
# Copies the build dependencies the GPU machine's image lacks (Eigen, stb, Catch2 v2, Google
# Benchmark, nlohmann-json, zlib headers) from this machine's Debian packages into
# .gpu-deps/ (ignored by git, about 17 MB), so that a GPU machine can use them:
#
#   scripts/pack-gpu-deps.sh
#   then, on the GPU machine with .gpu-deps/ copied beside the tree: scripts/run-gpu-checks.sh
#
# Nothing is downloaded: the files come from the installed packages (scripts/setup.sh
# installs them). The GPU machine has CUDA, cuDNN (through PyTorch's nvidia-cudnn wheel),
# CMake and a C++ compiler of its own; run-gpu-checks.sh finds them there.
# Ninja comes too where it is installed here: run-gpu-checks.sh uses it only on a machine
# that has neither ninja nor make of its own.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
destination=.gpu-deps
rm -rf "$destination"
mkdir -p "$destination"
packages=(libeigen3-dev libstb-dev libstb0 catch2 libbenchmark-dev libbenchmark1debian nlohmann-json3-dev
          zlib1g-dev zlib1g)
if dpkg -s ninja-build >/dev/null 2>&1; then packages+=(ninja-build); fi
for package in "${packages[@]}"; do
  # Regular files and symbolic links (libz.so -> libz.so.1...), with their paths.
  dpkg -L "$package" | while IFS= read -r path; do
    # Files, and links that are not folders (/lib itself is a link to usr/lib on Debian 12).
    if [ -f "$path" ] && { [ ! -L "$path" ] || [ ! -d "$path" ]; }; then
      case "$path" in /usr/share/doc/*|/usr/share/man/*|/usr/share/lintian/*) continue ;; esac
      mkdir -p "$destination$(dirname "$path")"
      cp -P "$path" "$destination$path"
    fi
  done
done
# zlib1g installs its library under /lib: keep everything under usr/, and make absolute
# links (libz.so -> /lib/x86_64-linux-gnu/libz.so.1.2.13) point at the copy beside them.
if [ -d "$destination/lib" ]; then
  mkdir -p "$destination/usr/lib"
  cp -rP "$destination/lib/." "$destination/usr/lib/"
  rm -rf "$destination/lib"
fi
find "$destination" -type l | while IFS= read -r link; do
  target=$(readlink "$link")
  case "$target" in
    /*) if [ -e "$(dirname "$link")/$(basename "$target")" ]; then ln -sfn "$(basename "$target")" "$link"
        else echo "pack-gpu-deps: $link points outside the pack ($target)" >&2; exit 1; fi ;;
  esac
done
du -sh "$destination"
echo "pack-gpu-deps: $destination is ready; copy it beside the tree on the GPU machine"
