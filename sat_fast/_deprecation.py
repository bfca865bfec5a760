"""Renamed keywords and functions keep working for one release, with a warning."""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from typing import Any

__all__ = ["renamed_keywords", "warn_deprecated"]


def warn_deprecated(message: str, *, stacklevel: int = 3) -> None:
    """Emit a ``DeprecationWarning`` pointing at the caller's caller."""
    warnings.warn(message, DeprecationWarning, stacklevel=stacklevel)


def renamed_keywords(
    func: str, old_values: Mapping[str, Any], renames: Mapping[str, str], current: Mapping[str, Any]
) -> dict[str, Any]:
    """Map keywords given under their old names to the new names.

    Parameters
    ----------
    func
        The public function's name, for messages.
    old_values
        The keywords the caller passed that the signature does not know.
    renames
        Old name -> new name.
    current
        The new-named arguments as passed (None when not given).

    Returns
    -------
    dict
        The new-named values to use instead of ``current``'s.

    Examples
    --------
    >>> import warnings
    >>> with warnings.catch_warnings(record=True) as w:
    ...     warnings.simplefilter("always")
    ...     renamed_keywords("f", {"labels": 1}, {"labels": "label_map"}, {"label_map": None})
    {'label_map': 1}
    >>> str(w[0].message)
    'f(labels=...) is deprecated since sat_fast 0.2.0; use label_map=...'
    """
    out: dict[str, Any] = {}
    for old, value in old_values.items():
        new = renames.get(old)
        if new is None:
            raise TypeError(f"{func}() got an unexpected keyword argument {old!r}")
        if current.get(new) is not None:
            raise TypeError(f"{func}() got both {old}= (deprecated) and {new}=; pass only {new}=")
        warn_deprecated(f"{func}({old}=...) is deprecated since sat_fast 0.2.0; use {new}=...", stacklevel=4)
        out[new] = value
    return out
