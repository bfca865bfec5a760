"""What a run records about itself: settings (compared on resume), provenance, the ``run.json`` file."""

from __future__ import annotations

import platform
from collections.abc import Mapping
from typing import Any

__all__ = ["PROVENANCE_KEY", "SCHEMA_VERSION", "provenance", "settings_difference"]

#: Version of the per-image SAT's columns that runs write (2: ``class`` names and the ``run`` id).
SCHEMA_VERSION = 2
#: Parquet key-value metadata key of every shard: the run's provenance as JSON.
PROVENANCE_KEY = "sat_fast.run"


def provenance(settings: Mapping[str, Any], *, run_id: str, device: str | None) -> dict[str, Any]:
    """The run's provenance: its settings plus versions, device and table schema version."""
    from sat_fast._version import __version__

    versions = {"sat_fast": __version__, "python": platform.python_version()}
    try:
        from importlib.metadata import version

        versions["jax"] = version("jax")
        versions["polars"] = version("polars")
    except Exception:  # an uninstalled distribution: the versions stay unknown
        pass
    return {
        "run": run_id,
        "schema_version": SCHEMA_VERSION,
        "settings": dict(settings),
        "versions": versions,
        "device": device,
        "host": platform.node(),
    }


def settings_difference(before: Mapping[str, Any], now: Mapping[str, Any]) -> list[str]:
    """Human-readable differences between the stored settings of a run and the current ones."""
    out = []
    for key in sorted(set(before) | set(now)):
        if before.get(key) != now.get(key):
            out.append(f"{key}: {before.get(key)!r} then, {now.get(key)!r} now")
    return out
