#!/usr/bin/env bash
# Cross-compiles the kernel library (csrc/src, not the Python bindings) and
# the XLA FFI handlers (csrc/ffi) for aarch64, where only the portable kernel
# variant exists, with -Werror. Installs g++-aarch64-linux-gnu with apt-get
# when it is missing; the FFI headers come from the jaxlib of .venv (or of
# $PYTHON), as in the build.
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

python=${PYTHON:-.venv/bin/python}
[[ -x "$python" ]] || python=python3
if ! ffi_include=$("$python" -c "import jax.ffi; print(jax.ffi.include_dir())" 2> /dev/null); then
  echo "aarch64: XLA FFI headers not found ($python cannot import jax.ffi): install jax into .venv or set PYTHON" >&2
  exit 1
fi
# -Wno-pedantic: XLA's C API names struct fields after their function types (as in CMakeLists.txt).
"$CXX" "${flags[@]}" -Wno-pedantic -Icsrc/ffi -isystem "$ffi_include" -c csrc/ffi/handlers.cpp -o "$out/ffi_handlers.o"

# Every symbol the portable table and the FFI handlers need must be defined: link a tiny program.
cat > "$out/main.cpp" <<'CPP'
#include "handlers.hpp"
#include "sat/dispatch.hpp"
// volatile: the handlers' addresses are taken at run time, so the linker must resolve them.
XLA_FFI_Error* (*volatile handlers[])(XLA_FFI_CallFrame*) = {&sat_fast_segment_stats_labels,
                                                             &sat_fast_segment_stats_masks};
int main() { return handlers[0] && handlers[1] && sat::kernel_variant()[0] == 'g' ? 0 : 1; }
CPP
"$CXX" "${flags[@]}" -Icsrc/ffi "$out/main.cpp" "$out/ffi_handlers.o" "$out/libsat_kernels.a" -pthread -o "$out/main"
echo "aarch64: kernel library and FFI handlers compiled and linked ($(ls "$out"/*.o | wc -l) objects)"
