"""The run folder on disk: SAT shards written atomically, the manifest of finished shards, ``run.json``.

Layout of ``out/``::

    run.json             provenance, settings, status, skipped items (rewritten atomically)
    manifest.jsonl       one JSON line per finished shard, appended and fsynced after its file is in place
    sat/part-000000.parquet, ...   the per-image SAT, one file per shard of input items

A shard is written to ``sat/.part-NNNNNN.parquet.tmp``, fsynced, renamed over its final name and the folder
fsynced; only then is its manifest line appended. A shard file without a manifest line, or whose size,
SHA-256 or row count differ from its line, is unfinished: :func:`finished_shards` leaves it out (and
:func:`clean_unfinished` deletes it) so that the run redoes it. Nothing unfinished is ever read.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import polars as pl

__all__ = [
    "MANIFEST",
    "RUN_JSON",
    "SAT_DIR",
    "ShardRecord",
    "append_manifest",
    "clean_unfinished",
    "finished_shards",
    "read_json",
    "write_json_atomic",
    "write_shard",
]

SAT_DIR = "sat"
MANIFEST = "manifest.jsonl"
RUN_JSON = "run.json"


@dataclass(frozen=True)
class ShardRecord:
    """One finished shard: input positions ``[start, stop)``, its file, rows, bytes, SHA-256, skipped items."""

    shard: int
    start: int
    stop: int
    file: str
    rows: int
    bytes: int
    sha256: str
    skipped: list[dict[str, str]] = field(default_factory=list)


def shard_name(shard: int) -> str:
    return f"{SAT_DIR}/part-{shard:06d}.parquet"


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # not every platform opens folders
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


def write_shard(
    out: Path,
    shard: int,
    start: int,
    stop: int,
    frame: pl.DataFrame | None,
    *,
    metadata: Mapping[str, str],
    skipped: list[dict[str, str]],
) -> ShardRecord:
    """Write one shard's rows atomically (temporary name, fsync, rename, fsync the folder); its record.

    A shard whose items were all skipped (``frame`` None) has no file: its record says so with ``file=""``.
    """
    if frame is None:
        return ShardRecord(shard, start, stop, "", 0, 0, "", skipped)
    final = out / shard_name(shard)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.with_name(f".{final.name}.tmp")
    frame.write_parquet(tmp, metadata=dict(metadata))
    with tmp.open("rb+") as fh:
        os.fsync(fh.fileno())
    record = ShardRecord(shard, start, stop, shard_name(shard), frame.height, tmp.stat().st_size, _sha256(tmp), skipped)
    os.replace(tmp, final)
    _fsync_dir(final.parent)
    return record


def append_manifest(out: Path, record: ShardRecord) -> None:
    """Append one finished shard's line to the manifest and fsync it (a torn last line is ignored on resume)."""
    with (out / MANIFEST).open("a", encoding="utf-8") as fh:
        fh.write(json.dumps(asdict(record), sort_keys=True) + "\n")
        fh.flush()
        os.fsync(fh.fileno())


def _read_manifest(out: Path) -> list[ShardRecord]:
    path = out / MANIFEST
    if not path.is_file():
        return []
    records = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            records.append(ShardRecord(**json.loads(line)))
        except (json.JSONDecodeError, TypeError):
            continue  # a line torn by a crash while appending: its shard is redone
    return records


def _intact(out: Path, record: ShardRecord) -> bool:
    if not record.file:
        return record.rows == 0
    path = out / record.file
    if not path.is_file() or path.stat().st_size != record.bytes or _sha256(path) != record.sha256:
        return False
    try:
        rows = pl.scan_parquet(path).select(pl.len()).collect().item()
    except (pl.exceptions.PolarsError, OSError):
        return False
    return bool(rows == record.rows)


def finished_shards(out: Path) -> dict[int, ShardRecord]:
    """The shards whose files are intact (size, SHA-256 and row count as the manifest says), by shard number.

    The manifest is rewritten (atomically) to hold exactly these, so that a redone shard gets one line.
    """
    found: dict[int, ShardRecord] = {}
    for record in _read_manifest(out):
        found[record.shard] = record  # a shard redone after a corruption: its last line counts
    intact = {n: r for n, r in sorted(found.items()) if _intact(out, r)}
    if (out / MANIFEST).is_file():
        text = "".join(json.dumps(asdict(r), sort_keys=True) + "\n" for r in intact.values())
        _write_atomic(out / MANIFEST, text)
    return intact


def clean_unfinished(out: Path, finished: Mapping[int, ShardRecord]) -> list[str]:
    """Delete temporary files and shard files no intact manifest line covers; their names."""
    keep = {out / r.file for r in finished.values()}
    removed = []
    folder = out / SAT_DIR
    if folder.is_dir():
        for path in sorted(folder.iterdir()):
            if path not in keep and (path.name.endswith(".tmp") or path.suffix == ".parquet"):
                path.unlink()
                removed.append(path.name)
    return removed


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with tmp.open("w", encoding="utf-8") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    _fsync_dir(path.parent)


def write_json_atomic(path: Path, value: Any) -> None:
    _write_atomic(path, json.dumps(value, indent=2, sort_keys=True) + "\n")


def read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path} is not a readable run file: {exc}") from None
