"""Shared fixtures; also makes sure an installed, compiled package is under test."""

from __future__ import annotations

import importlib.util

import sat_fast

if importlib.util.find_spec("sat_fast._core") is None:
    raise RuntimeError(
        f"sat_fast at {sat_fast.__file__} has no compiled _core: install the package "
        "(pip install '.[test]', or pip install -e . for development) and run the tests with the venv's pytest"
    )
