#!/usr/bin/env bash
# Builds sat_fast._core with AddressSanitizer and UBSan (every UB report fatal:
# -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined,
# CMake option SAT_FAST_SANITIZE=ON) into its own virtual environment and build
# folder, runs the kernel, RLE, segments, validation and fuzz tests under it, and
# fails on any sanitizer report or test failure. JAX stays out (it is not built
# for ASan): the tests that import it are deselected, and a guard plugin fails
# the run if anything imports it anyway.
#
# Run locally (Linux, GCC or Clang; about 5-8 minutes on 2 cores, most of it the build):
#   bash .ci/check_sanitizers.sh
# Environment: SAT_FAST_SAN_VENV (default build/sanitize-venv, inside the ignored build/), SAT_FAST_SAN_BUILD
# (default build/sanitize); extra arguments go to pytest, e.g.
#   bash .ci/check_sanitizers.sh -x tests/test_rle.py
# A rerun reuses the venv and the build folder (incremental build).
set -euo pipefail
cd "$(dirname "$0")/.."
start=$SECONDS

venv=${SAT_FAST_SAN_VENV:-build/sanitize-venv}
build=${SAT_FAST_SAN_BUILD:-build/sanitize}
cxx=${CXX:-g++}

# The ASan runtime must be the first library loaded; libstdc++ is preloaded
# too, or ASan's __cxa_throw interceptor finds no real __cxa_throw (python
# itself does not link libstdc++) and aborts on the first C++ exception.
asan=$("$cxx" -print-file-name=libasan.so)
stdcxx=$("$cxx" -print-file-name=libstdc++.so)
for lib in "$asan" "$stdcxx"; do
  if [[ "$lib" != /* || ! -e "$lib" ]]; then
    echo "check_sanitizers: $cxx does not ship $lib" >&2
    exit 2
  fi
done

echo "== build (ASan + UBSan) into $build, venv $venv"
[[ -x "$venv/bin/python" ]] || python3 -m venv "$venv"
"$venv/bin/pip" install -q scikit-build-core pybind11 cmake ninja \
  numpy polars pillow pycocotools pytest hypothesis
# --no-deps: the package's own dependencies include JAX, which this run avoids; so
# does the build: SAT_FAST_XLA_FFI=OFF leaves out sat_fast._xla_ffi (the XLA FFI
# custom calls, whose headers come with jaxlib), which no test run here uses.
CXX="$cxx" "$venv/bin/pip" install -q --no-deps --no-build-isolation --force-reinstall \
  -Cbuild-dir="$build" -Ccmake.define.SAT_FAST_SANITIZE=ON -Ccmake.define.SAT_FAST_WERROR=ON \
  -Ccmake.define.SAT_FAST_XLA_FFI=OFF .
echo "build: $((SECONDS - start)) s"

reports=$(mktemp -d)
trap 'rm -rf "$reports"' EXIT
args=(tests/test_kernel_errors.py tests/test_kernel_hardening.py tests/test_rle.py tests/test_segments.py
  tests/test_stats.py tests/test_validation.py tests/test_fuzz_kernels.py)
[[ $# -gt 0 ]] && args=("$@")

echo "== tests under the sanitizers"
# Every report is fatal (abort_on_error, halt_on_error): the process dies and
# pytest's exit status is non-zero. The reports themselves are written to
# stderr: --capture=sys leaves the C-level stderr to the terminal (fd capture
# would swallow a dying process's report), it is teed to a file and searched
# too, and ASan's log_path catches reports of subprocesses (UBSan's go to their stderr,
# which the tests that start them include in their failure message).
# The venv's pytest script (not python -m pytest) keeps the source tree off
# sys.path, so the sanitized, installed package is the one under test.
set +e
LD_PRELOAD="$asan $stdcxx" \
  ASAN_OPTIONS="detect_leaks=0:abort_on_error=1:log_path=$reports/asan" \
  UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1" \
  SAT_FAST_SANITIZERS=1 PYTHONPATH="$PWD/.ci" PYTHONDONTWRITEBYTECODE=1 \
  "$venv/bin/pytest" -q --capture=sys -p sanitize_guard -p no:cacheprovider -k "not jax" "${args[@]}" 2>&1 |
  tee "$reports/pytest.log"
status=${PIPESTATUS[0]}
set -e
found=0
if grep -qE "runtime error:|ERROR: AddressSanitizer|AddressSanitizer: CHECK failed|SUMMARY: (Address|UndefinedBehavior)Sanitizer" \
  "$reports/pytest.log"; then
  found=1
  echo "== sanitizer report in the test output (above)" >&2
fi
for f in "$reports"/asan* "$reports"/ubsan*; do
  [[ -e "$f" ]] || continue
  found=1
  echo "== sanitizer report $f" >&2
  cat "$f" >&2
done
echo "tests: exit $status; total $((SECONDS - start)) s"
if [[ $found -ne 0 ]]; then
  echo "check_sanitizers: FAILED (sanitizer reports above)" >&2
  exit 1
fi
if [[ $status -ne 0 ]]; then
  echo "check_sanitizers: FAILED (pytest exit $status)" >&2
  exit 1
fi
echo "check_sanitizers: no reports, tests passed"
