"""Shared fixtures; also makes sure the installed package is under test."""

from __future__ import annotations

from pathlib import Path

import sat_fast

_SOURCE = Path(__file__).resolve().parents[1] / "sat_fast"
if Path(sat_fast.__file__).resolve().parent == _SOURCE:
    raise RuntimeError(
        "tests imported sat_fast from the source tree, which has no compiled _core; "
        "install the package (pip install '.[test]') and run the tests with the venv's pytest"
    )
