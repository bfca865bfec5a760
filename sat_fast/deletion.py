"""Segment deletion: does removing a high-SAT segment really change the prediction.

:func:`segment_deletion` fills one named segment at a time (with a blurred
copy of the image, its mean colour, or zeros), runs the model on the batch
under ``jax.jit`` and records how much the explained output drops, as a Polars
frame keyed like the per-image SAT (``image_id``, ``target``, ``segment``) so
that the two join. :func:`deletion_agreement` measures, per class, how well
the SAT's ranking of segments matches the deletion drops.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, get_args

import numpy as np
import polars as pl

from sat_fast import _validate as v
from sat_fast._columns import class_name_list, class_name_series, competition_rank, image_id_series
from sat_fast._deprecation import warn_deprecated
from sat_fast._typing import DeletionFill
from sat_fast.packed import PackedMasks
from sat_fast.segments import Segments

if TYPE_CHECKING:
    import jax

__all__ = ["deletion_agreement", "segment_deletion"]

_FILLS = get_args(DeletionFill)


def _gaussian_blur(x: jax.Array, sigma: float) -> jax.Array:
    """Separable Gaussian blur of (B, H, W, C) images, edges padded by replication."""
    import jax
    import jax.numpy as jnp

    radius = max(1, math.ceil(3 * sigma))
    gauss = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma) ** 2)
    taps = jnp.asarray(gauss / gauss.sum(), x.dtype)
    channels = x.shape[-1]
    padded = jnp.pad(x, ((0, 0), (radius, radius), (radius, radius), (0, 0)), mode="edge")
    numbers = ("NHWC", "HWIO", "NHWC")
    vertical = jnp.tile(taps.reshape(-1, 1, 1, 1), (1, 1, 1, channels))
    horizontal = jnp.tile(taps.reshape(1, -1, 1, 1), (1, 1, 1, channels))
    y = jax.lax.conv_general_dilated(
        padded, vertical, (1, 1), "VALID", dimension_numbers=numbers, feature_group_count=channels
    )
    return jax.lax.conv_general_dilated(
        y, horizontal, (1, 1), "VALID", dimension_numbers=numbers, feature_group_count=channels
    )


class _SlotSource:
    """Masks of a batch, one "slot" (B, H, W) at a time, with each image's name for the slot.

    Label maps and (B, K, H, W) masks have slot k = names[k] in every image; a
    sequence of per-image {name: mask} mappings has slot j = that image's
    j-th segment, so vocabularies may differ between images.
    """

    def __init__(self, segments: Any, names: Sequence[str] | None, shape: tuple[int, int, int]):

        b, h, w = shape
        self.per_image: list[list[tuple[str, np.ndarray]]] | None = None
        self.segments: list[Segments] | None = None
        self.labels: np.ndarray | None = None
        self.masks: np.ndarray | PackedMasks | None = None
        is_list = isinstance(segments, Sequence) and not isinstance(segments, np.ndarray | str)
        if is_list and len(segments) and all(isinstance(s, Segments) for s in segments):
            if names is not None:
                raise ValueError("names is given by the Segments; do not pass names= with them")
            if len(segments) != b:
                raise ValueError(f"segments has {len(segments)} Segments but images has {b}")
            for i, seg in enumerate(segments):
                if seg.shape != (h, w):
                    raise ValueError(
                        f"Segments of image {i} are {seg.shape[0]}x{seg.shape[1]} but images are {h}x{w}; "
                        "resize them with sat_fast.transforms first"
                    )
            self.segments = list(segments)
            self.num_slots = max(len(seg.names) for seg in self.segments)
            return
        if is_list and all(isinstance(s, Mapping) for s in segments):
            if names is not None:
                raise ValueError("names is given by the mappings' keys; do not pass names= with per-image mappings")
            if len(segments) != b:
                raise ValueError(f"segments has {len(segments)} per-image mappings but images has {b}")
            self.per_image = []
            for i, mapping in enumerate(segments):
                items = []
                for name, mask in mapping.items():
                    if not isinstance(name, str):
                        raise TypeError(f"segment names must be str, got {name!r} in image {i}")
                    m = v.as_numpy(mask, f"segments[{i}][{name!r}]")
                    if m.shape != (h, w):
                        raise ValueError(
                            f"mask {name!r} of image {i} has shape {v.shape_str(m.shape)}, images are {h}x{w}"
                        )
                    if m.dtype != np.bool_:
                        raise TypeError(f"mask {name!r} of image {i} must be boolean, got dtype {m.dtype}")
                    items.append((name, m))
                self.per_image.append(items)
            self.num_slots = max((len(x) for x in self.per_image), default=0)
            return
        if names is None:
            raise ValueError("names= is required with label maps and mask arrays: one name per label value or mask")
        if isinstance(segments, PackedMasks):
            if (len(segments), segments.height, segments.width) != shape:
                raise ValueError(
                    f"packed masks shape {v.shape_str(segments.shape)} does not match images {v.shape_str(shape)}"
                )
            self.masks = segments
            k = segments.num_segments
        else:
            arr = v.as_numpy(segments, "segments")
            if arr.ndim == 3 and arr.dtype.kind in "iu":
                if arr.shape != shape:
                    raise ValueError(
                        f"label map shape {v.shape_str(arr.shape)} does not match images {v.shape_str(shape)}"
                    )
                self.labels = arr
                k = len(names)
            elif arr.ndim == 4 and arr.dtype == np.bool_:
                if (arr.shape[0], arr.shape[2], arr.shape[3]) != shape:
                    raise ValueError(f"masks shape {v.shape_str(arr.shape)} does not match images {v.shape_str(shape)}")
                self.masks = arr
                k = arr.shape[1]
            else:
                raise TypeError(
                    "segments must be an integer label map (B, H, W), boolean masks (B, K, H, W), PackedMasks "
                    "or a sequence of per-image {name: mask} mappings; "
                    f"got dtype {arr.dtype} shape {v.shape_str(arr.shape)}"
                )
        self.names = v.segment_names(names, k)
        self.num_slots = k

    def batch(self, start: int, stop: int) -> Iterator[tuple[np.ndarray, list[str | None]]]:
        """(masks (n, H, W) bool, name per image or None) for each slot of images start..stop."""
        n = stop - start
        if self.per_image is not None or self.segments is not None:
            if self.segments is not None:  # decoded one batch at a time
                images = [list(zip(seg.names, seg.masks(), strict=True)) for seg in self.segments[start:stop]]
            else:
                images = self.per_image[start:stop]  # type: ignore[index]
            for j in range(self.num_slots):
                names = [items[j][0] if j < len(items) else None for items in images]
                if all(name is None for name in names):
                    continue
                first = next(items[j][1] for items in images if j < len(items))
                empty = np.zeros_like(first)
                yield np.stack([items[j][1] if j < len(items) else empty for items in images]), names
            return
        if self.labels is not None:
            chunk = self.labels[start:stop]
            for k, name in enumerate(self.names):
                yield chunk == k, [name] * n
            return
        dense = self.masks[start:stop].unpack() if isinstance(self.masks, PackedMasks) else self.masks[start:stop]  # type: ignore[index]
        for k, name in enumerate(self.names):
            yield dense[:, k], [name] * n


def _segments_argument(label_map: Any, masks: Any, segments: Any) -> Any:
    """The one segments argument given; version 1's single positional union still works, with a warning."""
    if sum(x is not None for x in (label_map, masks, segments)) != 1:
        raise ValueError("pass exactly one of label_map, masks and segments")
    if label_map is not None:
        is_masks = isinstance(label_map, PackedMasks) or getattr(label_map, "ndim", 3) == 4
        if is_masks or isinstance(label_map, (list, tuple)):
            warn_deprecated(
                "segment_deletion(fn, images, <masks, Segments or mappings>) is deprecated since sat_fast 0.2.0; "
                "pass masks= or segments= (label_map is the positional form)"
            )
        return label_map
    if segments is not None:
        seq = list(segments)
        bad = [type(s).__name__ for s in seq if not isinstance(s, Segments)]
        if bad:
            raise TypeError(f"segments must be Segments values, got {bad[0]}; use sat_fast.segments.from_masks first")
        return seq
    return masks


def segment_deletion(
    fn: Callable[[jax.Array], jax.Array],
    images: Any,
    label_map: Any = None,
    *,
    masks: Any = None,
    segments: Sequence[Segments] | None = None,
    names: Sequence[str] | None = None,
    fill: DeletionFill | float | Any = "blur",
    targets: Any = None,
    image_ids: Any = None,
    metadata: Mapping[str, Any] | None = None,
    batch_size: int = 32,
    blur_sigma: float | None = None,
    class_names: Sequence[str] | None = None,
) -> pl.DataFrame:
    """Remove one named segment at a time and record the drop of the explained output.

    Parameters
    ----------
    fn
        JAX-traceable model: images (B, H, W, C) -> outputs (B, N), e.g.
        logits (wrap it with ``jax.nn.softmax`` to explain probabilities).
    images
        (B, H, W, C) floating-point images, numpy or JAX.
    label_map
        An integer segment label map (B, H, W) with ``names`` (label k is
        ``names[k]``; other values belong to no segment).
    masks
        Boolean masks (B, K, H, W) or :class:`sat_fast.PackedMasks` with
        ``names`` (masks may overlap).
    segments
        A sequence of :class:`sat_fast.Segments`, one per image at the
        images' size (label maps, packed masks or RLE; decoded a batch at a
        time; no ``names``). Per-image ``{name: mask}`` mappings become
        Segments with :func:`sat_fast.segments.from_masks`. Exactly one of
        ``label_map``, ``masks`` and ``segments`` is given, as in
        :func:`sat_fast.segment_table`.
    names
        Segment names for label maps and mask arrays.
    fill
        What replaces the deleted pixels: ``"blur"`` (default; a Gaussian
        blur of the image with ``blur_sigma``), ``"mean"`` (the image's mean
        colour per channel), ``"zeros"``, a constant, or an array shaped like
        ``images`` holding each image's replacement (e.g. an in-painted
        background, the most natural way to remove an object).
    targets
        Output index explained per image (int per image, or one int);
        default: each image's predicted class (argmax of ``fn(images)``).
    image_ids, metadata
        As in :func:`sat_fast.segment_table`, so the frames join (with
        ``Segments``, ids default to theirs when every one has an id).
    batch_size
        Images per jitted forward pass; the last batch is padded so the model
        compiles once.
    blur_sigma
        Standard deviation of the blur in pixels; default max(H, W) / 16.
    class_names
        The model's class names (index i is ``class_names[i]``): adds
        ``class`` after ``target`` and ``label_class`` / ``predicted_class``
        after ``label`` / ``predicted`` metadata, as in
        :func:`sat_fast.segment_table`.

    Returns
    -------
    polars.DataFrame
        One row per (image, present segment), in image then segment order:
        ``image_id``, ``target``, ``class`` (with ``class_names``), metadata,
        ``segment`` (Categorical),
        ``pixels``, ``area``, ``output`` (the explained output of the intact
        image), ``deleted`` (with the segment filled), ``drop`` (output -
        deleted: positive when the segment supported the prediction) and
        ``drop_rank`` (competition rank of drop within the image, 1 =
        largest). Join with the SAT on ``["image_id", "target", "segment"]``
        and aggregate with ``aggregate(frame, value="drop", rank="drop_rank")``.

    Raises
    ------
    ValueError, TypeError
        Shapes that do not match, missing ``names``, an unknown ``fill``,
        non-floating images, targets out of range.

    Examples
    --------
    >>> import numpy as np, jax.numpy as jnp, sat_fast
    >>> fn = lambda x: jnp.stack([x[:, :2].sum((1, 2, 3)), -x.sum((1, 2, 3))], axis=1)
    >>> images = np.ones((1, 4, 4, 1), np.float32)
    >>> label_map = np.zeros((1, 4, 4), np.uint8); label_map[0, 2:] = 1
    >>> d = sat_fast.segment_deletion(fn, images, label_map, names=["top", "bottom"], fill="zeros", targets=0)
    >>> d.select("segment", "output", "drop", "drop_rank").rows()
    [('top', 8.0, 8.0, 1), ('bottom', 8.0, 0.0, 2)]
    """
    # JAX is imported on first use so that `import sat_fast` stays light.
    import jax
    import jax.numpy as jnp

    if not callable(fn):
        raise TypeError(f"fn must be a callable images -> outputs, got {type(fn).__name__}")
    x_all = v.as_numpy(images, "images")
    if x_all.ndim != 4:
        raise ValueError(f"images must have shape (B, H, W, C), got {v.shape_str(x_all.shape)}")
    if x_all.dtype.kind != "f":
        raise TypeError(f"images must be floating point, got dtype {x_all.dtype}; scale them to floats first")
    b, h, w, _ = x_all.shape
    fill_images = None
    if not isinstance(fill, (str, float, int)):
        fill_images = v.as_numpy(fill, "fill")
        if fill_images.shape != x_all.shape:
            raise ValueError(
                f"fill images shape {v.shape_str(fill_images.shape)} does not match "
                f"images shape {v.shape_str(x_all.shape)}"
            )
        fill_images = fill_images.astype(x_all.dtype, copy=False)
    elif isinstance(fill, str):
        if fill not in _FILLS:
            raise ValueError(f"fill must be one of {list(_FILLS)} or a number, got {fill!r}")
    elif not isinstance(fill, float | int) or isinstance(fill, bool) or not math.isfinite(fill):
        raise TypeError(f"fill must be one of {list(_FILLS)} or a finite number, got {fill!r}")
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    sigma = max(h, w) / 16 if blur_sigma is None else float(blur_sigma)
    if not sigma > 0:
        raise ValueError(f"blur_sigma must be positive, got {blur_sigma!r}")
    source = _SlotSource(_segments_argument(label_map, masks, segments), names, (b, h, w))
    if image_ids is None and source.segments is not None:
        # Like segment_table(segments=...): the Segments' own ids when all have one.
        own = [seg.image_id for seg in source.segments]
        image_ids = own if all(i is not None for i in own) else None
    ids = image_id_series(image_ids, b)
    target_arr = v.target_array(targets, b)
    meta = {name: v.per_image(vals, b, f"metadata[{name!r}]") for name, vals in (metadata or {}).items()}
    classes = class_name_list(class_names)
    named = {"class", "label_class", "predicted_class"} if classes is not None else set()
    clash = sorted(set(meta) & ({"image_id", "target", "segment", "pixels", "area", "output", "deleted"} | named))
    if clash:
        raise ValueError(f"metadata column {clash[0]!r} clashes with a deletion column")

    def make_fill(x: jax.Array) -> jax.Array:
        if fill == "blur":
            return _gaussian_blur(x, sigma)
        if fill == "mean":
            return jnp.broadcast_to(x.mean(axis=(1, 2), keepdims=True), x.shape)
        return jnp.full_like(x, 0.0 if fill == "zeros" else float(fill))

    def explained(x: jax.Array, filler: jax.Array, mask: jax.Array, t: jax.Array) -> jax.Array:
        out = fn(jnp.where(mask[..., None], filler, x))
        return jnp.take_along_axis(out, t[:, None], axis=1)[:, 0]

    logits_step = jax.jit(fn)
    fill_step = jax.jit(make_fill)
    explain_step = jax.jit(explained)

    rows_image: list[np.ndarray] = []
    rows_name: list[str] = []
    rows_pixels: list[np.ndarray] = []
    rows_deleted: list[np.ndarray] = []
    outputs = np.empty(b, np.float64)
    target_used = np.empty(b, np.int64)
    size = min(batch_size, b) if b else 1
    example = jax.ShapeDtypeStruct((size, *x_all.shape[1:]), x_all.dtype)  # type: ignore[no-untyped-call]
    out_shape = jax.eval_shape(fn, example).shape
    if len(out_shape) != 2 or out_shape[0] != size:
        raise ValueError(
            f"fn must map ({size}, H, W, C) images to outputs of shape ({size}, N), got {v.shape_str(out_shape)}"
        )
    num_outputs = int(out_shape[1])
    if target_arr is not None:
        bad = (target_arr < 0) | (target_arr >= num_outputs)
        if bad.any():
            i = int(np.argmax(bad))
            raise ValueError(f"target {int(target_arr[i])} of image {i} is outside [0, {num_outputs})")
    for start in range(0, b, size):
        stop = min(b, start + size)
        n = stop - start
        x = np.zeros((size, *x_all.shape[1:]), x_all.dtype)
        x[:n] = x_all[start:stop]
        xj = jnp.asarray(x)
        if target_arr is None:
            logits = np.asarray(logits_step(xj))
            t_chunk = np.zeros(size, np.int64)
            t_chunk[:n] = logits[:n].argmax(axis=1)
        else:
            t_chunk = np.zeros(size, np.int64)
            t_chunk[:n] = target_arr[start:stop]
        tj = jnp.asarray(t_chunk.astype(np.int32))
        if fill_images is None:
            filler = fill_step(xj)
        else:
            replacement = np.zeros_like(x)
            replacement[:n] = fill_images[start:stop]
            filler = jnp.asarray(replacement)
        no_mask = jnp.zeros((size, h, w), bool)
        base = np.asarray(explain_step(xj, filler, no_mask, tj), np.float64)
        outputs[start:stop] = base[:n]
        target_used[start:stop] = t_chunk[:n]
        for mask, slot_names in source.batch(start, stop):
            pixels = mask.reshape(n, -1).sum(axis=1)
            present = (pixels > 0) & np.array([s is not None for s in slot_names])
            if not present.any():
                continue
            padded = np.zeros((size, h, w), bool)
            padded[:n] = mask
            deleted = np.asarray(explain_step(xj, filler, jnp.asarray(padded), tj), np.float64)[:n]
            idx = np.nonzero(present)[0]
            rows_image.append(start + idx)
            rows_name.extend(slot_names[i] for i in idx)  # type: ignore[misc]
            rows_pixels.append(pixels[idx])
            rows_deleted.append(deleted[idx])

    image = np.concatenate(rows_image) if rows_image else np.zeros(0, np.int64)
    pixels_col = np.concatenate(rows_pixels) if rows_pixels else np.zeros(0, np.int64)
    deleted_col = np.concatenate(rows_deleted) if rows_deleted else np.zeros(0)
    # Rows were produced slot by slot within each batch; order them by image, keeping slot order.
    order = np.argsort(image, kind="stable")
    image, pixels_col, deleted_col = image[order], pixels_col[order], deleted_col[order]
    name_col = [rows_name[i] for i in order]
    output_col = outputs[image]
    drop = output_col - deleted_col
    target_col = pl.Series("target", target_used[image], dtype=pl.Int64)
    columns = [ids.gather(image), target_col]
    if classes is not None:
        columns.append(class_name_series("class", target_col, classes, "target"))
    for name, arr in meta.items():
        values = arr.tolist() if arr.dtype == object else arr
        columns.append(pl.Series(name, values).gather(image))
        if classes is not None and name in ("label", "predicted"):
            columns.append(class_name_series(f"{name}_class", columns[-1], classes, f"metadata[{name!r}]"))
    columns += [
        pl.Series("segment", name_col, dtype=pl.Categorical),
        pl.Series("pixels", pixels_col, dtype=pl.Int64),
        pl.Series("area", pixels_col / float(h * w), dtype=pl.Float64),
        pl.Series("output", output_col, dtype=pl.Float64),
        pl.Series("deleted", deleted_col, dtype=pl.Float64),
        pl.Series("drop", drop, dtype=pl.Float64),
        pl.Series("drop_rank", competition_rank(image, drop), dtype=pl.Int64),
    ]
    return pl.DataFrame(columns)


def deletion_agreement(
    sat: pl.DataFrame,
    deletion: pl.DataFrame,
    *,
    by: str | Sequence[str] | None = ("target",),
    value: str = "mean",
    drop: str = "drop",
) -> pl.DataFrame:
    """Per class, how well the SAT's segment ranking matches the deletion drops.

    For every image, Spearman's rank correlation between the SAT ``value``
    and the deletion ``drop`` over the segments present in both frames
    (average ranks for ties; undefined, and left out, for an image with
    fewer than two segments or constant values); per group, its mean and
    median, and how often the segment(s) the SAT ranks first include the one
    whose deletion hurts most.

    Parameters
    ----------
    sat
        Per-image SAT (:func:`sat_fast.segment_table`).
    deletion
        Result of :func:`segment_deletion` on the same images.
    by
        Grouping columns of ``sat`` (default the class, ``target``).
    value, drop
        Column of ``sat`` and of ``deletion`` compared.

    Returns
    -------
    polars.DataFrame
        The ``by`` keys, ``images`` (images with a defined correlation),
        ``spearman`` (mean per-image rho), ``spearman_median`` and
        ``top1_agreement`` (fraction of images with two or more joined
        segments where a top SAT segment has the largest drop), sorted by
        the keys.

    Examples
    --------
    >>> import polars as pl, sat_fast
    >>> sat = pl.DataFrame({"image_id": [0, 0, 0], "target": [1, 1, 1], "segment": ["a", "b", "c"],
    ...                     "mean": [3.0, 2.0, 1.0]})
    >>> dele = sat.select("image_id", "target", "segment", pl.Series("drop", [0.9, 0.5, 0.1]))
    >>> sat_fast.deletion_agreement(sat, dele).rows()
    [(1, 1, 1.0, 1.0, 1.0)]
    """
    for frame, name in ((sat, "sat"), (deletion, "deletion")):
        if not isinstance(frame, pl.DataFrame):
            raise TypeError(f"{name} must be a polars DataFrame, got {type(frame).__name__}")
    keys = [by] if isinstance(by, str) else list(by or [])
    for col in ["image_id", "segment", value, *keys]:
        if col not in sat.columns:
            raise ValueError(f"sat has no column {col!r}; its columns are {sat.columns}")
    for col in ["image_id", "segment", drop]:
        if col not in deletion.columns:
            raise ValueError(f"deletion has no column {col!r}; its columns are {deletion.columns}")
    on = ["image_id", "segment"] + (["target"] if "target" in sat.columns and "target" in deletion.columns else [])
    left = sat.select(*dict.fromkeys([*on, *keys]), pl.col(value).alias("__value")).with_columns(
        pl.col("segment").cast(pl.String)
    )
    right = deletion.select(*on, pl.col(drop).alias("__drop")).with_columns(pl.col("segment").cast(pl.String))
    joined = left.join(right, on=on, how="inner")
    image = [*dict.fromkeys([*keys, *[k for k in on if k != "segment"]])]
    per_image = joined.group_by(image).agg(
        pl.len().alias("__pairs"),
        pl.corr("__value", "__drop", method="spearman").alias("__rho"),
        ((pl.col("__value") == pl.col("__value").max()) & (pl.col("__drop") == pl.col("__drop").max()))
        .any()
        .alias("__top1"),
    )
    per_image = per_image.filter(pl.col("__pairs") >= 2).with_columns(pl.col("__rho").fill_nan(None))
    group: list[str | pl.Expr] = [*keys] if keys else [pl.lit(0).alias("__all")]
    out = per_image.group_by(group).agg(
        pl.col("__rho").count().cast(pl.Int64).alias("images"),
        pl.col("__rho").mean().alias("spearman"),
        pl.col("__rho").median().alias("spearman_median"),
        pl.col("__top1").cast(pl.Float64).mean().alias("top1_agreement"),
    )
    if not keys:
        out = out.drop("__all")
    return out.sort(keys) if keys else out
