"""Names tables (list, dict, CSV, JSON), renaming by synonyms and groups, merged vocabularies."""

from __future__ import annotations

import csv
import io
import json
import operator
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from sat_fast.segments._types import (
    Segments,
)

# --------------------------------------------------------------------------
# Names tables, synonyms and vocabularies
# --------------------------------------------------------------------------


class _JsonPairs(list[tuple[str, Any]]):
    """A JSON object as its (key, value) pairs, so that a key given twice is seen, not overwritten."""


def names_table(names: Any) -> dict[int, str]:
    """Value -> name from a list, a dict, or a CSV/JSON file; a value named twice differently is an error."""
    source = None
    pairs: list[tuple[Any, Any]] | None = None
    if isinstance(names, (str, os.PathLike)):
        source = str(names)
        path = Path(names)
        try:
            text = path.read_text(encoding="utf-8-sig")
        except (OSError, UnicodeDecodeError) as exc:
            raise ValueError(f"cannot read names table {source}: {exc}") from None
        if path.suffix.lower() == ".json":
            try:
                names = json.loads(text, object_pairs_hook=_JsonPairs)
            except (json.JSONDecodeError, RecursionError) as exc:
                raise ValueError(f"names table {source} is not valid JSON: {exc}") from None
            if isinstance(names, _JsonPairs):
                pairs = list(names)
        else:
            rows = [r for r in csv.reader(io.StringIO(text)) if r and any(x.strip() for x in r)]
            if rows and not rows[0][0].strip().lstrip("-").isdigit():
                rows = rows[1:]  # header
            pairs = []
            for i, r in enumerate(rows):
                if len(r) < 2:
                    raise ValueError(f"names table {source}: row {i + 1} needs 'value,name', got {r!r}")
                pairs.append((r[0].strip(), r[1].strip()))
    where = f"names table{' ' + source if source else ''}"
    # A file's contents are data (ValueError); a Python object of the wrong kind is a TypeError.
    wrong_kind = ValueError if source else TypeError
    if isinstance(names, Mapping):
        pairs = list(names.items())
    if pairs is not None:
        out: dict[int, str] = {}
        for key, name in pairs:
            value = _label_value(key)
            if value is None:
                raise ValueError(f"{where}: key {key!r} is not an integer label value")
            if not isinstance(name, str):
                raise wrong_kind(f"{where}: name of {value} must be a string, got {name!r}")
            if out.get(value, name) != name:
                raise ValueError(f"{where}: label value {value} is named both {out[value]!r} and {name!r}")
            out[value] = name
        return out
    if isinstance(names, Sequence) and not isinstance(names, (str, bytes)):
        for i, name in enumerate(names):
            if not isinstance(name, str):
                raise wrong_kind(f"{where + ': ' if source else ''}names[{i}] must be a string, got {name!r}")
        return dict(enumerate(names))
    if source:
        raise ValueError(f"{where}: expected a JSON list or object of names, got {type(names).__name__}")
    raise TypeError(f"names must be a list, a dict or a CSV/JSON path, got {type(names).__name__}")


def _label_value(key: Any) -> int | None:
    """The integer label value of a names-table key (``"3"``, ``3``), or None (``1.5``, ``True``, ``"a"``)."""
    if isinstance(key, str):
        try:
            return int(key)
        except ValueError:
            return None
    if isinstance(key, bool):
        return None
    try:
        return operator.index(key)
    except TypeError:
        return None


def rename_map(
    *, synonyms: Mapping[str, str] | None = None, groups: Mapping[str, Iterable[str]] | None = None
) -> dict[str, str]:
    """One old-name -> new-name map from synonyms and groups.

    Parameters
    ----------
    synonyms
        ``{"eyes": "eye"}``: each key is renamed to its value.
    groups
        ``{"eye": ["left eye", "right eye"]}``: every member is renamed to the
        group's name. A name in two groups is an error.

    Examples
    --------
    >>> rename_map(synonyms={"eyes": "eye"}, groups={"eye": ["left eye", "right eye"]})
    {'eyes': 'eye', 'left eye': 'eye', 'right eye': 'eye'}
    """
    out: dict[str, str] = {}
    for old, new in (synonyms or {}).items():
        if not isinstance(old, str) or not isinstance(new, str):
            raise TypeError(f"synonyms must map strings to strings, got {old!r} -> {new!r}")
        out[old] = new
    for new, members in (groups or {}).items():
        if isinstance(members, str):
            raise TypeError(f"groups[{new!r}] must be a list of names, got the string {members!r}")
        for old in members:
            if old in out and out[old] != new:
                raise ValueError(f"{old!r} is mapped to both {out[old]!r} and {new!r}")
            out[old] = new
    # Chains ("eyes" -> "eye" -> "face") resolve to their end.
    for old in list(out):
        seen = {old}
        new = out[old]
        while new in out and new not in seen:
            seen.add(new)
            new = out[new]
        out[old] = new
    return out


def merge_vocabularies(segments: Iterable[Segments | Sequence[str]]) -> list[str]:
    """The union of the images' segment names, in order of first appearance.

    Examples
    --------
    >>> merge_vocabularies([["dog", "sky"], ["cat", "dog"]])
    ['dog', 'sky', 'cat']
    """
    seen: dict[str, None] = {}
    for s in segments:
        for n in s.names if isinstance(s, Segments) else s:
            seen.setdefault(n, None)
    return list(seen)
