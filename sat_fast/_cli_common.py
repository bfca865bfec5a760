"""What every ``sat-fast`` command shares: the user-error type and writing outputs."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import polars as pl


__all__ = ["UserError", "first_line", "write_parquet", "write_report"]


class UserError(Exception):
    """A problem with the user's input: reported in one line, exit status 2."""


def write_parquet(frame: pl.DataFrame, path: Path, metadata: dict[str, str] | None = None) -> None:
    import polars as pl

    try:
        frame.write_parquet(path, metadata=metadata)
    except (pl.exceptions.PolarsError, OSError) as exc:
        raise UserError(f"cannot write {path}: {first_line(exc)}") from None


def write_report(report: Callable[..., Path], path: Path, agg: pl.DataFrame, **options: Any) -> Path:
    try:
        return report(agg, path, **options)
    except OSError as exc:
        raise UserError(f"cannot write {path}: {exc.strerror or exc}") from None


def first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__
