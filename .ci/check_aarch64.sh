#!/usr/bin/env bash
# Cross-compiles the kernel library (csrc/src, not the Python bindings) for
# aarch64, where only the portable kernel variant exists, with -Werror.
# Installs g++-aarch64-linux-gnu with apt-get when it is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

CXX=aarch64-linux-gnu-g++
if ! command -v "$CXX" > /dev/null; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends g++-aarch64-linux-gnu > /dev/null
fi
"$CXX" --version | head -n 1

out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
flags=(-std=c++17 -O2 -Wall -Wextra -Wpedantic -Wshadow -Werror -ffp-contract=off -Icsrc/include)
export CXX OUT="$out" FLAGS="${flags[*]}"
# Two compilers at a time; every x86-64-only source (*_avx2.cpp) is left out,
# as CMake leaves it out on other architectures.
if ! ls csrc/src/*.cpp | grep -v '_avx2\.cpp$' |
  xargs -P 2 -I{} sh -c '$CXX $FLAGS -c "$1" -o "$OUT/$(basename "$1" .cpp).o" || { echo "FAILED: $1"; exit 1; }' _ {}; then
  echo "aarch64: the kernel library does not compile" >&2
  exit 1
fi
aarch64-linux-gnu-ar rcs "$out/libsat_kernels.a" "$out"/*.o
# Every symbol the portable table needs must be defined: link a tiny program.
cat > "$out/main.cpp" <<'CPP'
#include "sat/dispatch.hpp"
int main() { return sat::kernel_variant()[0] == 'g' ? 0 : 1; }
CPP
"$CXX" "${flags[@]}" "$out/main.cpp" "$out/libsat_kernels.a" -pthread -o "$out/main"
echo "aarch64: kernel library compiled and linked ($(ls "$out"/*.o | wc -l) objects)"
