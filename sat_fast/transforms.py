"""Keep masks aligned with saliency maps: the same geometry for images and masks.

Saliency is computed at the model's input size (say 224x224 after resizing the
shorter side and centre-cropping) while masks come at the original image size.
Either apply the model's preprocessing to the masks too (:class:`Compose` of
:class:`ResizeShorter`, :class:`CenterCrop`, :class:`Resize`, :class:`Pad`:
bilinear or nearest for images, always nearest for masks and label maps), or
bring the saliency back into the source image's frame with
:meth:`Transform.saliency_to_source`, which undoes every step (resize back,
un-crop, un-pad) and returns a coverage mask of the source pixels the model saw
(pass it to ``segment_table(..., coverage=...)``). :func:`resize_saliency`
alone is right only for a pure resize: after a crop it would stretch the
cropped map over the whole image.

Geometry: output pixel ``i`` of a resize from ``n`` to ``m`` pixels samples
input coordinate ``(i + 0.5) * n / m - 0.5`` (pixel centres, as in
``torch.nn.functional.interpolate(..., align_corners=False)``; nearest takes
``floor((i + 0.5) * n / m)``, torch's "nearest-exact"). Sizes follow
torchvision: ``ResizeShorter(s)`` makes the shorter side ``s`` and the longer
``int(s * long / short)``; ``CenterCrop`` starts at ``round((n - m) / 2)``.
A shape mismatch is an error naming both shapes, never a broadcast.
"""

from __future__ import annotations

import operator
from collections.abc import Sequence
from typing import Any

import numpy as np

from sat_fast import _validate as v
from sat_fast._typing import Interpolation, check_choice
from sat_fast.packed import pack_masks
from sat_fast.segments import Segments, rle_encode

__all__ = ["CenterCrop", "Compose", "Pad", "Resize", "ResizeShorter", "Transform", "resize_saliency"]


def _size_pair(size: Any, what: str) -> tuple[int, int]:
    if isinstance(size, (tuple, list)):
        if len(size) != 2:
            raise ValueError(f"{what} must be an int or (height, width), got {size!r}")
        h, w = (operator.index(s) for s in size)
    else:
        h = w = operator.index(size)
    if h < 1 or w < 1:
        raise ValueError(f"{what} must be positive, got {size!r}")
    return h, w


def _nearest_index(n: int, m: int) -> np.ndarray:
    return np.minimum(((np.arange(m) + 0.5) * (n / m)).astype(np.int64), n - 1)


def _bilinear_weights(n: int, m: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    src = np.clip((np.arange(m) + 0.5) * (n / m) - 0.5, 0.0, n - 1)
    i0 = np.floor(src).astype(np.int64)
    i1 = np.minimum(i0 + 1, n - 1)
    return i0, i1, src - i0


def _resize_axis(a: np.ndarray, axis: int, m: int, mode: Interpolation) -> np.ndarray:
    n = a.shape[axis]
    if n == m:
        return a
    if mode == "nearest":
        return np.take(a, _nearest_index(n, m), axis=axis)
    i0, i1, frac = _bilinear_weights(n, m)
    shape = [1] * a.ndim
    shape[axis] = m
    f = frac.reshape(shape)
    x = a.astype(np.float64, copy=False)
    out: np.ndarray = np.take(x, i0, axis=axis) * (1.0 - f) + np.take(x, i1, axis=axis) * f
    return out


class Transform:
    """One geometric step applied alike to images, masks and :class:`Segments`.

    Images are (H, W) or (H, W, C) arrays; masks are (H, W) or (K, H, W)
    boolean (or integer label) arrays and always use nearest neighbour.
    """

    def output_size(self, height: int, width: int) -> tuple[int, int]:
        """(H, W) of the output for an input of ``height`` x ``width``."""
        """(H, W) after this step for an input of (height, width)."""
        raise NotImplementedError

    def _apply(self, a: np.ndarray, axes: tuple[int, int], mode: Interpolation, fill: Any) -> np.ndarray:
        raise NotImplementedError

    def _invert(
        self, x: np.ndarray, rows: np.ndarray, cols: np.ndarray, source: tuple[int, int], preserve_total: bool
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(B, h, w) float64 maps at this step's output, back at its input size ``source``.

        Coverage is a rectangle (every step maps rectangles to rectangles), so
        it travels as one boolean vector per axis: ``rows`` (h,) and ``cols`` (w,).
        """
        raise NotImplementedError

    def saliency_to_source(
        self, saliency: Any, source_shape: tuple[int, int], *, preserve_total: bool = False
    ) -> tuple[np.ndarray, np.ndarray]:
        """Saliency computed on this transform's output, brought back into the source image's frame.

        The inverse of every step, last step first: a resize is undone by
        resizing back (bilinear, as :func:`resize_saliency`), a crop by placing
        the map at its place in a zero array of the source size, a pad by
        dropping the padding. ``coverage`` is True at the source pixels the
        model saw; pixels cut away by a crop are 0 in the map and False in
        ``coverage`` (never NaN, so they cannot be mistaken for non-finite
        model output). Pass it on: ``segment_table(maps, segments=segs,
        coverage=coverage)`` leaves uncovered pixels out of every statistic.

        Parameters
        ----------
        saliency
            (H, W) or (B, H, W), numpy or JAX, at ``output_size(*source_shape)``.
        source_shape
            (height, width) of the image before the transform (a
            :class:`Segments`' ``shape``).
        preserve_total
            Resize back with :func:`resize_saliency`'s ``preserve_total``, so
            the attribution inside the crop keeps its sum (attribution of
            padding is dropped either way).

        Returns
        -------
        (numpy.ndarray, numpy.ndarray)
            The map (float64, or float32 for float32 input) and the boolean
            coverage, both of shape (..., height, width).

        Examples
        --------
        >>> import numpy as np
        >>> m, cov = CenterCrop(2).saliency_to_source(np.ones((2, 2)), (2, 4))
        >>> m.tolist(), cov.astype(int).tolist()
        ([[0.0, 1.0, 1.0, 0.0], [0.0, 1.0, 1.0, 0.0]], [[0, 1, 1, 0], [0, 1, 1, 0]])
        """
        x = v.as_numpy(saliency, "saliency")
        if x.ndim not in (2, 3):
            raise ValueError(f"saliency must be (H, W) or (B, H, W), got {v.shape_str(x.shape)}")
        if x.dtype.kind != "f" and x.dtype.name != "bfloat16":
            raise TypeError(f"saliency must be a floating-point array, got dtype {x.dtype}")
        source = _size_pair(source_shape, "source_shape")
        expected = self.output_size(*source)
        if x.shape[-2:] != expected:
            raise ValueError(
                f"saliency has shape {v.shape_str(x.shape)} but {self!r} maps an image of shape "
                f"{v.shape_str(source)} to {v.shape_str(expected)}"
            )
        batch = x.reshape((-1,) + x.shape[-2:]).astype(np.float64)
        rows, cols = np.ones(expected[0], np.bool_), np.ones(expected[1], np.bool_)
        out, rows, cols = self._invert(batch, rows, cols, source, bool(preserve_total))
        out = out.reshape(x.shape[:-2] + source)
        cov = np.ascontiguousarray(np.broadcast_to(rows[:, None] & cols[None, :], out.shape))
        result: np.ndarray = out.astype(np.float32) if x.dtype == np.float32 else np.ascontiguousarray(out)
        return result, cov

    def image(self, image: Any, *, interpolation: Interpolation = "bilinear") -> np.ndarray:
        """The transformed image, same dtype (integers are rounded and clipped)."""
        check_choice(interpolation, "interpolation", Interpolation)
        a = v.as_numpy(image, "image")
        if a.ndim not in (2, 3):
            raise ValueError(f"image must be (H, W) or (H, W, C), got {v.shape_str(a.shape)}")
        out = self._apply(a, (0, 1), interpolation, None)
        if out.dtype != a.dtype:
            if a.dtype.kind in "iu":
                info = np.iinfo(a.dtype)
                out = np.clip(np.rint(out), info.min, info.max)
            out = out.astype(a.dtype)
        return out

    def mask(self, mask: Any, *, fill: Any = 0) -> np.ndarray:
        """The transformed mask(s) or label map, nearest neighbour; padding gets ``fill``."""
        a = v.as_numpy(mask, "mask")
        if a.ndim not in (2, 3):
            raise ValueError(f"mask must be (H, W) or (K, H, W), got {v.shape_str(a.shape)}")
        return self._apply(a, (a.ndim - 2, a.ndim - 1), "nearest", fill)

    def segments(self, segments: Segments) -> Segments:
        """The same geometry applied to one image's :class:`sat_fast.Segments` (masks by nearest neighbour)."""
        """The same segments after this step (kept in their representation)."""
        if not isinstance(segments, Segments):
            raise TypeError(f"expected Segments, got {type(segments).__name__}")
        s = segments
        h, w = self.output_size(s.height, s.width)
        k = len(s)
        if s.label_map is not None:
            return s.replace(height=h, width=w, label_map=np.ascontiguousarray(self.mask(s.label_map, fill=k)))
        masks = self.mask(s.masks(), fill=False)
        if s.words is not None:
            words = (
                pack_masks(np.ascontiguousarray(masks[None])).words[0]
                if k
                else np.zeros((0, -(-h * w // 64)), np.uint64)
            )
            return s.replace(height=h, width=w, words=words)
        return Segments.from_rle(s.names, [[rle_encode(m)] for m in masks], h, w, image_id=s.image_id, source=s.source)

    def __call__(self, image: Any) -> np.ndarray:
        """Same as :meth:`image`."""
        return self.image(image)


class Resize(Transform):
    """Resize to ``size`` = (height, width), or a square side.

    Examples
    --------
    >>> import numpy as np
    >>> Resize((2, 4)).mask(np.eye(2, dtype=bool)).astype(int).tolist()
    [[1, 1, 0, 0], [0, 0, 1, 1]]
    """

    def __init__(self, size: int | tuple[int, int]):
        self.size = _size_pair(size, "size")

    def __repr__(self) -> str:
        return f"Resize({self.size})"

    def output_size(self, height: int, width: int) -> tuple[int, int]:
        """(H, W) of the output for an input of ``height`` x ``width``."""
        return self.size

    def _apply(self, a: np.ndarray, axes: tuple[int, int], mode: Interpolation, fill: Any) -> np.ndarray:
        out = _resize_axis(a, axes[0], self.size[0], mode)
        return _resize_axis(out, axes[1], self.size[1], mode)

    def _invert(
        self, x: np.ndarray, rows: np.ndarray, cols: np.ndarray, source: tuple[int, int], preserve_total: bool
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        wr, rows = _inverse_weights(rows, source[0], preserve_total)
        wc, cols = _inverse_weights(cols, source[1], preserve_total)
        return np.matmul(np.matmul(wr, x), wc.T), rows, cols


class ResizeShorter(Resize):
    """Resize so the shorter side is ``size``, keeping the aspect ratio (torchvision's ``Resize(int)``).

    Examples
    --------
    >>> ResizeShorter(256).output_size(480, 640)
    (256, 341)
    """

    def __init__(self, size: int):
        self.side = operator.index(size)
        if self.side < 1:
            raise ValueError(f"size must be positive, got {size!r}")

    def __repr__(self) -> str:
        return f"ResizeShorter({self.side})"

    def output_size(self, height: int, width: int) -> tuple[int, int]:
        """(H, W) of the output for an input of ``height`` x ``width``."""
        s = self.side
        if height <= width:
            return (s, int(s * width / height))
        return (int(s * height / width), s)

    def _apply(self, a: np.ndarray, axes: tuple[int, int], mode: Interpolation, fill: Any) -> np.ndarray:
        h, w = self.output_size(a.shape[axes[0]], a.shape[axes[1]])
        return _resize_axis(_resize_axis(a, axes[0], h, mode), axes[1], w, mode)


class CenterCrop(Transform):
    """Crop the central ``size`` = (height, width), or a square side.

    Examples
    --------
    >>> CenterCrop(224).output_size(256, 341)
    (224, 224)
    """

    def __init__(self, size: int | tuple[int, int]):
        self.size = _size_pair(size, "size")

    def __repr__(self) -> str:
        return f"CenterCrop({self.size})"

    def output_size(self, height: int, width: int) -> tuple[int, int]:
        """(H, W) of the output for an input of ``height`` x ``width``."""
        if self.size[0] > height or self.size[1] > width:
            raise ValueError(
                f"cannot centre-crop {v.shape_str(self.size)} from an image of shape {v.shape_str((height, width))}"
            )
        return self.size

    def _apply(self, a: np.ndarray, axes: tuple[int, int], mode: Interpolation, fill: Any) -> np.ndarray:
        h, w = a.shape[axes[0]], a.shape[axes[1]]
        th, tw = self.output_size(h, w)
        top, left = round((h - th) / 2.0), round((w - tw) / 2.0)
        index: list[Any] = [slice(None)] * a.ndim
        index[axes[0]] = slice(top, top + th)
        index[axes[1]] = slice(left, left + tw)
        cropped: np.ndarray = a[tuple(index)]
        return cropped

    def _invert(
        self, x: np.ndarray, rows: np.ndarray, cols: np.ndarray, source: tuple[int, int], preserve_total: bool
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        h, w = source
        th, tw = self.output_size(h, w)
        top, left = round((h - th) / 2.0), round((w - tw) / 2.0)
        out = np.zeros((x.shape[0], h, w), np.float64)
        out[:, top : top + th, left : left + tw] = x
        rows_out, cols_out = np.zeros(h, np.bool_), np.zeros(w, np.bool_)
        rows_out[top : top + th] = rows
        cols_out[left : left + tw] = cols
        return out, rows_out, cols_out


class Pad(Transform):
    """Pad with ``top``, ``bottom``, ``left``, ``right`` pixels of ``fill`` (images) / no segment (masks).

    Examples
    --------
    >>> Pad(top=1, left=2).output_size(3, 3)
    (4, 5)
    """

    def __init__(self, *, top: int = 0, bottom: int = 0, left: int = 0, right: int = 0, fill: float = 0):
        self.pads = tuple(operator.index(p) for p in (top, bottom, left, right))
        if min(self.pads) < 0:
            raise ValueError(f"padding must be non-negative, got {self.pads}")
        self.fill = fill

    def __repr__(self) -> str:
        t, b, lft, r = self.pads
        return f"Pad(top={t}, bottom={b}, left={lft}, right={r})"

    def output_size(self, height: int, width: int) -> tuple[int, int]:
        """(H, W) of the output for an input of ``height`` x ``width``."""
        t, b, lft, r = self.pads
        return (height + t + b, width + lft + r)

    def _apply(self, a: np.ndarray, axes: tuple[int, int], mode: Interpolation, fill: Any) -> np.ndarray:
        t, b, lft, r = self.pads
        widths = [(0, 0)] * a.ndim
        widths[axes[0]] = (t, b)
        widths[axes[1]] = (lft, r)
        return np.pad(a, widths, constant_values=self.fill if fill is None else fill)

    def _invert(
        self, x: np.ndarray, rows: np.ndarray, cols: np.ndarray, source: tuple[int, int], preserve_total: bool
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        t, _, lft, _ = self.pads
        h, w = source
        return x[:, t : t + h, lft : lft + w], rows[t : t + h], cols[lft : lft + w]


class Compose(Transform):
    """Several steps in order, e.g. ``Compose([ResizeShorter(256), CenterCrop(224)])``.

    Examples
    --------
    >>> import numpy as np
    >>> t = Compose([ResizeShorter(4), CenterCrop(4)])
    >>> t.output_size(8, 12)
    (4, 4)
    >>> t.image(np.zeros((8, 12, 3), np.uint8)).shape
    (4, 4, 3)
    """

    def __init__(self, steps: Sequence[Transform]):
        self.steps = list(steps)
        for i, s in enumerate(self.steps):
            if not isinstance(s, Transform):
                raise TypeError(f"steps[{i}] must be a Transform, got {type(s).__name__}")

    def __repr__(self) -> str:
        return f"Compose({self.steps!r})"

    def output_size(self, height: int, width: int) -> tuple[int, int]:
        """(H, W) of the output for an input of ``height`` x ``width``."""
        for s in self.steps:
            height, width = s.output_size(height, width)
        return (height, width)

    def _apply(self, a: np.ndarray, axes: tuple[int, int], mode: Interpolation, fill: Any) -> np.ndarray:
        for s in self.steps:
            a = s._apply(a, axes, mode, fill)
        return a

    def _invert(
        self, x: np.ndarray, rows: np.ndarray, cols: np.ndarray, source: tuple[int, int], preserve_total: bool
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        sizes = [source]
        for s in self.steps[:-1]:
            sizes.append(s.output_size(*sizes[-1]))
        for s, size in zip(reversed(self.steps), reversed(sizes[: len(self.steps)]), strict=True):
            x, rows, cols = s._invert(x, rows, cols, size, preserve_total)
        return x, rows, cols

    def segments(self, segments: Segments) -> Segments:
        """Every step's geometry applied in turn to one image's :class:`sat_fast.Segments`."""
        for s in self.steps:
            segments = s.segments(segments)
        return segments


def _weights(n: int, m: int, preserve_total: bool) -> np.ndarray:
    """(m, n) resampling matrix along one axis."""
    i0, i1, frac = _bilinear_weights(n, m)
    w = np.zeros((m, n))
    rows = np.arange(m)
    np.add.at(w, (rows, i0), 1.0 - frac)
    np.add.at(w, (rows, i1), frac)
    if not preserve_total:
        return w
    col = w.sum(axis=0)
    if (col <= 0).any():
        # Shrinking more than 2x: bilinear samples skip some input pixels,
        # whose attribution would be lost; area weights cover every pixel.
        edges = np.arange(m + 1) * (n / m)
        lo, hi = edges[:-1, None], edges[1:, None]
        j = np.arange(n)[None, :]
        w = np.clip(np.minimum(hi, j + 1) - np.maximum(lo, j), 0.0, None)
        col = w.sum(axis=0)
    weights: np.ndarray = w / col
    return weights


def _inverse_weights(covered: np.ndarray, m: int, preserve_total: bool) -> tuple[np.ndarray, np.ndarray]:
    """(m, n) weights resizing one axis of n pixels, of which ``covered`` are real, back to m; the m covered.

    An output pixel is covered when its nearest input pixel is. Covered
    outputs interpolate covered inputs only (weights renormalised per output),
    so nothing leaks into uncovered pixels; with ``preserve_total`` every
    covered input's value is spread over covered outputs only (renormalised
    per input; one whose weights all fall outside goes to the nearest covered
    output), so the total is kept.
    """
    n = covered.shape[0]
    out_covered = covered[_nearest_index(n, m)]
    w = _weights(n, m, preserve_total) * out_covered[:, None] * covered[None, :]
    if not preserve_total:
        row = w.sum(axis=1, keepdims=True)
        return np.divide(w, row, out=np.zeros_like(w), where=row > 0), out_covered
    col = w.sum(axis=0)
    targets = np.flatnonzero(out_covered)
    if targets.size:
        centres = (targets + 0.5) * (n / m)
        for j in np.flatnonzero(covered & (col <= 0)):
            w[targets[np.argmin(np.abs(centres - (j + 0.5)))], j] = 1.0
        col = w.sum(axis=0)
    return np.divide(w, col, out=np.zeros_like(w), where=col > 0), out_covered


def resize_saliency(saliency: Any, size: int | tuple[int, int], *, preserve_total: bool = False) -> np.ndarray:
    """Resize saliency maps (H, W) or (B, H, W) to ``size`` = (height, width), bilinear.

    Parameters
    ----------
    saliency
        numpy or JAX array, (H, W) or (B, H, W).
    size
        Target (height, width), typically a :class:`Segments`' ``shape``.
    preserve_total
        Keep each map's total attribution: every input pixel's value is
        spread over the output pixels in proportion to its bilinear weights
        (area weights when shrinking more than 2x), so sums (and so the
        shares of segments) are preserved up to rounding. Without it values
        are interpolated, which preserves the mean value instead.

    Returns
    -------
    numpy.ndarray
        float64 (or float32 for float32 input), shape (..., height, width).

    Examples
    --------
    >>> import numpy as np
    >>> s = np.arange(4.0).reshape(2, 2)
    >>> resize_saliency(s, (4, 4)).shape
    (4, 4)
    >>> float(resize_saliency(s, (3, 5), preserve_total=True).sum())
    6.0
    """
    x = v.as_numpy(saliency, "saliency")
    if x.ndim not in (2, 3):
        raise ValueError(f"saliency must be (H, W) or (B, H, W), got {v.shape_str(x.shape)}")
    if x.dtype.kind != "f" and x.dtype.name != "bfloat16":
        raise TypeError(f"saliency must be a floating-point array, got dtype {x.dtype}")
    h, w = _size_pair(size, "size")
    n_h, n_w = x.shape[-2], x.shape[-1]
    wr = _weights(n_h, h, preserve_total)
    wc = _weights(n_w, w, preserve_total)
    out = np.matmul(np.matmul(wr, x.astype(np.float64)), wc.T)
    result: np.ndarray = out.astype(np.float32) if x.dtype == np.float32 else out
    return result
