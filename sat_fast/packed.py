"""Overlapping boolean masks packed one bit per segment per pixel.

Packing once and reducing many saliency maps against the bit planes is the
fast path for overlapping segments (and what ``Segments`` of kind ``masks``
store).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from sat_fast import _core
from sat_fast import _validate as v

__all__ = ["PackedMasks", "pack_masks"]


@dataclass(frozen=True, eq=False)
class PackedMasks:
    """Overlapping boolean masks packed one bit per segment per pixel.

    ``words[b, k, w]`` holds pixels ``64*w .. 64*w + 63`` (row-major within the
    image) of segment ``k`` of image ``b``, lowest bit first. ``bounds[b, k]``
    is the ``[first, last)`` range of words of that mask that are not zero
    (computed when omitted), so small masks are not scanned end to end. Pack
    once with :func:`pack_masks` and reduce many saliency maps against it.

    Both arrays are read-only, so ``bounds`` can never go stale: an array the
    caller could still write to (directly or through the array it views) is
    copied, never frozen under the caller.

    Examples
    --------
    >>> import numpy as np, sat_fast
    >>> masks = np.zeros((1, 2, 4, 4), bool); masks[0, 0, :2] = True
    >>> packed = sat_fast.pack_masks(masks)
    >>> packed.shape
    (1, 2, 4, 4)
    >>> bool((packed.unpack() == masks).all())
    True
    """

    words: np.ndarray
    height: int
    width: int
    bounds: np.ndarray | None = None

    def __post_init__(self) -> None:
        w = self.words
        if not isinstance(w, np.ndarray) or w.dtype != np.uint64 or w.ndim != 3:
            raise TypeError("PackedMasks.words must be a uint64 array of shape (B, K, ceil(H*W/64))")
        if self.height < 0 or self.width < 0:
            raise ValueError(f"height and width must be non-negative, got {self.height}x{self.width}")
        expected = -(-self.height * self.width // 64)
        if w.shape[2] != expected:
            raise ValueError(
                f"PackedMasks.words has {w.shape[2]} words per mask but {self.height}x{self.width} "
                f"images need {expected}"
            )
        w = _read_only(w)
        object.__setattr__(self, "words", w)
        if self.bounds is None:
            object.__setattr__(self, "bounds", _freeze(_word_bounds(w)))
        elif (
            not isinstance(self.bounds, np.ndarray)
            or self.bounds.dtype != np.int64
            or self.bounds.shape != w.shape[:2] + (2,)
        ):
            raise ValueError(f"PackedMasks.bounds must be int64 of shape {w.shape[:2] + (2,)}")
        else:
            object.__setattr__(self, "bounds", _read_only(self.bounds))

    @property
    def shape(self) -> tuple[int, int, int, int]:
        """(B, K, H, W) of the unpacked masks."""
        return (self.words.shape[0], self.words.shape[1], self.height, self.width)

    @property
    def num_segments(self) -> int:
        """K, the number of masks per image."""
        return int(self.words.shape[1])

    def __len__(self) -> int:
        return int(self.words.shape[0])

    def __getitem__(self, index: slice | int) -> PackedMasks:
        """Images by batch index or slice, still packed."""
        if not isinstance(index, slice):
            index = slice(index, index + 1 or None)
        return PackedMasks(
            np.ascontiguousarray(self.words[index]),
            self.height,
            self.width,
            np.ascontiguousarray(self.bounds[index]),  # type: ignore[index]
        )

    def unpack(self) -> np.ndarray:
        """The boolean masks, shape (B, K, H, W)."""
        b, k, _ = self.words.shape
        n = self.height * self.width
        bits = np.unpackbits(self.words.view(np.uint8), axis=-1, bitorder="little")
        return bits[..., :n].astype(bool).reshape(b, k, self.height, self.width)


def _freeze(a: np.ndarray) -> np.ndarray:
    """``a`` itself, made read-only (for arrays nobody else holds)."""
    a.flags.writeable = False
    return a


def _read_only(a: np.ndarray) -> np.ndarray:
    """A C-contiguous read-only array equal to ``a``.

    ``a`` itself when neither it nor any array it views can be written, otherwise a frozen copy (the
    caller's array is never frozen under them).
    """
    base: Any = a
    while isinstance(base, np.ndarray):
        if base.flags.writeable:
            return _freeze(np.array(a, order="C", copy=True))
        base = base.base
    return a if a.flags.c_contiguous else _freeze(np.ascontiguousarray(a))


def _word_bounds(words: np.ndarray) -> np.ndarray:
    nonzero = words != 0
    n = words.shape[-1]
    any_set = nonzero.any(axis=-1)
    first = np.where(any_set, nonzero.argmax(axis=-1), 0)
    last = np.where(any_set, n - nonzero[..., ::-1].argmax(axis=-1), 0)
    return np.ascontiguousarray(np.stack([first, last], axis=-1).astype(np.int64))


def pack_masks(masks: Any, *, threads: int | None = None) -> PackedMasks:
    """Pack boolean masks (B, K, H, W) into one bit per segment per pixel.

    Parameters
    ----------
    masks
        Boolean array (numpy or JAX) of shape (B, K, H, W); masks may overlap.
    threads
        Worker threads; default: the CPUs this process may run on.

    Returns
    -------
    PackedMasks
        Reusable against any saliency batch of the same (B, H, W).

    Examples
    --------
    >>> import numpy as np, sat_fast
    >>> packed = sat_fast.pack_masks(np.ones((2, 3, 8, 8), bool))
    >>> packed.words.shape
    (2, 3, 1)
    """
    m = v.as_numpy(masks, "masks")
    if m.ndim != 4:
        raise ValueError(f"masks must have shape (B, K, H, W), got {v.shape_str(m.shape)}")
    if m.dtype != np.bool_:
        raise TypeError(f"masks must be boolean, got dtype {m.dtype}; use masks.astype(bool)")
    words, bounds = _core.pack_masks(np.ascontiguousarray(m), threads=v.num_threads(threads))
    # Fresh arrays that only this call holds: frozen in place, not copied.
    return PackedMasks(_freeze(words), int(m.shape[2]), int(m.shape[3]), _freeze(bounds))
