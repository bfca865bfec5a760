"""The ``sat-fast`` command: the demo, and SATs for your own model and data.

User errors (missing files, unknown options, a factory that cannot be
imported, images without masks) end with one line on stderr and exit status
2; ``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import argparse
import glob
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import polars as pl


from sat_fast._cli_common import UserError, first_line, write_parquet, write_report
from sat_fast._cli_parser import apply_config, build_parser
from sat_fast._cli_run import ModelBundle, load_factory, run_command

__all__ = ["ModelBundle", "UserError", "load_factory", "main"]


def _demo(args: argparse.Namespace) -> int:
    from sat_fast.demo.experiment import DemoConfig, run_demo

    config = DemoConfig.quick() if args.quick else DemoConfig.full()
    result = run_demo(args.out, config=config, cache_dir=args.cache, progress=not args.no_progress)
    print(f"\nwrote {len(result.files)} files to {args.out} (open {args.out / 'report.html'})")
    return 0


def _run_folder_tables(folder: Path) -> list[Path]:
    """The per-image SAT shards of a `sat-fast run` folder (its sat/part-*.parquet, in shard order)."""
    parts = sorted((folder / "sat").glob("part-*.parquet"))
    if not parts:
        raise UserError(f"{folder} is a folder but not a run folder: no sat/part-*.parquet in it")
    return parts


def _read(paths: Sequence[Path]) -> pl.LazyFrame:
    import polars as pl

    files = []
    for p in paths:
        # glob.glob takes absolute patterns too (Path().glob does not)
        matches = sorted(map(Path, glob.glob(str(p), recursive=True))) if any(ch in str(p) for ch in "*?[") else [p]
        # A run folder stands for its per-image SAT shards.
        matches = [t for m in matches for t in (_run_folder_tables(m) if m.is_dir() else [m])]
        for m in matches:
            if not m.is_file():
                raise UserError(f"table {m} does not exist")
            files.append(m)
    if not files:
        raise UserError(f"no tables match {', '.join(map(str, paths))}")
    schemas = []
    for f in files:
        try:
            schemas.append(dict(pl.read_parquet_schema(f)))
        except (pl.exceptions.PolarsError, OSError) as exc:
            raise UserError(f"table {f} is not a Parquet file (or is empty): {first_line(exc)}") from None
    for f, schema in zip(files[1:], schemas[1:], strict=True):
        if schema != schemas[0]:
            raise UserError(f"tables {files[0]} and {f} have different columns: {_schema_change(schemas[0], schema)}")
    return pl.scan_parquet(files)


def _schema_change(a: dict[str, Any], b: dict[str, Any]) -> str:
    only_a, only_b = [c for c in a if c not in b], [c for c in b if c not in a]
    if only_a or only_b:
        return f"only in the first: {only_a}, only in the second: {only_b}"
    differ = [f"{c!r} is {a[c]} vs {b[c]}" for c in a if a[c] != b[c]]
    return "; ".join(differ)


def _emit(frame: pl.DataFrame, out: Path | None, metadata: dict[str, str] | None = None) -> int:
    import polars as pl

    if out is None:
        # Wide enough that no header is folded ("tar / get"): the terminal, or a log, scrolls sideways.
        shown = 50
        with pl.Config(
            tbl_rows=shown,
            tbl_cols=-1,
            tbl_width_chars=10_000,
            fmt_str_lengths=60,
            tbl_hide_column_data_types=True,
            tbl_hide_dataframe_shape=True,
        ):
            print(frame.head(shown))
        if frame.height > shown:
            print(f"... {frame.height - shown} more rows ({frame.height} in all); write them all with --out FILE")
    else:
        write_parquet(frame, out, metadata=metadata)
        print(f"wrote {out} ({frame.height} rows)")
    return 0


def _aggregate(args: argparse.Namespace) -> int:
    from sat_fast.aggregation import aggregate

    return _emit(aggregate(_read(args.tables), by=tuple(args.by), value=args.value), args.out)


_SIDES_KEY = "sat_fast.sides"


def _compare(args: argparse.Namespace) -> int:
    from sat_fast.comparison import compare

    sides = _sides(args.sides, "--sides")
    frame = compare(_read([args.a]), _read([args.b]), by=tuple(args.by))
    print(f"a = {sides[0]} ({args.a}), b = {sides[1]} ({args.b}); diff = mean_b - mean_a")
    # The names travel in the Parquet file's metadata: `sat-fast report --comparison` labels the sides with them.
    return _emit(frame, args.out, metadata={_SIDES_KEY: json.dumps(list(sides))})


def _sides(values: Sequence[str], option: str) -> tuple[str, str]:
    a, b = (str(v).strip() for v in values)
    if not a or not b or a == b:
        raise UserError(f"{option} needs two different, non-empty names, got {list(values)!r}")
    return a, b


def _stored_sides(path: Path) -> tuple[str, str] | None:
    """The side names `sat-fast compare --sides` stored in a comparison Parquet file, if any."""
    import polars as pl

    try:
        text = pl.read_parquet_metadata(path).get(_SIDES_KEY)
        value = json.loads(text) if text is not None else None
    except (pl.exceptions.PolarsError, OSError, json.JSONDecodeError):
        return None
    if isinstance(value, list) and len(value) == 2 and all(isinstance(v, str) and v for v in value):
        return value[0], value[1]
    return None


def _report(args: argparse.Namespace) -> int:
    from sat_fast.reports import report

    aggregate_path, flags_path = args.aggregate, args.flags
    if aggregate_path.is_dir():  # a run folder: its aggregate and (unless --flags) its flags
        aggregate_path = aggregate_path / "aggregate.parquet"
        if flags_path is None and (args.aggregate / "flags.parquet").is_file():
            flags_path = args.aggregate / "flags.parquet"
    agg = _read([aggregate_path]).collect()
    flags = _read([flags_path]).collect() if flags_path else None
    comparison = _read([args.comparison]).collect() if args.comparison else None
    if args.sides is not None:
        sides = _sides(args.sides, "--sides")
    else:
        sides = (_stored_sides(args.comparison) if args.comparison else None) or ("a", "b")
    path = write_report(report, args.out, agg, flags=flags, comparison=comparison, sides=sides)
    print(f"wrote {path}")
    return 0


_COMMANDS = {"demo": _demo, "run": run_command, "aggregate": _aggregate, "compare": _compare, "report": _report}


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``sat-fast``; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    debug = "--debug" in argv
    try:
        apply_config(parser, argv)
        args = parser.parse_args(argv)
        if args.command is None:
            parser.print_help()
            return 2
        return _COMMANDS[args.command](args)
    except UserError as exc:
        if debug:
            raise
        print(f"sat-fast: error: {exc}", file=sys.stderr)
        return 2
    except argparse.ArgumentError as exc:
        # A bad option value (type or choice): one line naming the option, as for every user error.
        if debug:
            raise
        print(f"sat-fast: error: {exc} (see sat-fast --help)", file=sys.stderr)
        return 2
    except (ValueError, TypeError, OSError, RecursionError) as exc:
        # Problems in the user's data surface as these from the library; one line, unless --debug.
        if debug:
            raise
        print(f"sat-fast: error: {first_line(exc)}", file=sys.stderr)
        return 2
    except Exception as exc:
        import polars as pl

        # Polars rejects the user's tables (types, columns) with its own exceptions.
        if debug or not isinstance(exc, pl.exceptions.PolarsError):
            raise
        print(f"sat-fast: error: {first_line(exc)}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
