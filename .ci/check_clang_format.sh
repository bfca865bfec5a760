#!/usr/bin/env bash
# Fails when a C++ file under csrc/ is not formatted as .clang-format says.
# Uses clang-format from PATH when it is the pinned version, else installs the
# pinned wheel from PyPI into the project's virtual environment (.venv, made
# when missing), so every machine formats alike.
set -euo pipefail
cd "$(dirname "$0")/.."

VERSION=18.1.8
clang_format=""
if command -v clang-format > /dev/null && clang-format --version | grep -q "version $VERSION"; then
  clang_format=clang-format
else
  venv=${SAT_FAST_VENV:-.venv}
  [[ -x "$venv/bin/python" ]] || python3 -m venv "$venv"
  if ! [[ -x "$venv/bin/clang-format" ]] || ! "$venv/bin/clang-format" --version | grep -q "version $VERSION"; then
    "$venv/bin/python" -m pip install -q "clang-format==$VERSION"
  fi
  clang_format="$venv/bin/clang-format"
fi
"$clang_format" --version
find csrc -name '*.cpp' -o -name '*.hpp' | sort | xargs "$clang_format" --dry-run --Werror
echo "clang-format: csrc is formatted"
