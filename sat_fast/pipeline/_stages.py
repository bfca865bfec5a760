"""The pipeline's stages as plain functions.

Load an item, group items into batches, reduce a batch to rows, finish a shard. Each works on one unit and holds
no state between calls, so any executor can run them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import polars as pl

from sat_fast import _core
from sat_fast.pipeline._model import Explained
from sat_fast.pipeline._sources import BadItemError, Item, MapShards, MaskSource, read_image
from sat_fast.segments import Segments

__all__ = [
    "POSITION",
    "Loaded",
    "ShapeBatcher",
    "Skipped",
    "finish_shard",
    "load_image_item",
    "load_map_item",
    "maps_of",
    "ordered_prefetch",
    "reduce_batch",
    "shared_label_map",
    "stack_rows",
]

#: Temporary column: the item's position in the source, for the canonical row order of a shard.
POSITION = "__position"


@dataclass(slots=True)  # treated as immutable; not frozen, which is 4x slower to make (one per input)
class Loaded:
    """One item ready for the explain stage.

    ``array`` is the model input (H, W, C) after the transform, or a precomputed (H, W) map; ``segments`` are at
    the same size; ``values`` hold a map's ``target``/``label``.
    """

    item: Item
    array: np.ndarray
    segments: Segments
    values: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Skipped:
    """An item left out (``skip_bad``), with the reason."""

    item: Item
    reason: str


def load_image_item(
    item: Item, masks: MaskSource, transform: Any, read: Callable[[Item], np.ndarray] = read_image
) -> Loaded:
    """Read the image (``read``: from its file by default) and its mask, check sizes, transform both alike.

    The sizes are compared before any transform: image and mask are transformed alike, so a mismatch would pass
    silently after.
    """
    image = read(item)
    segments = masks.load(item.image_id)
    # Before any transform: image and mask are transformed alike, so a size mismatch would pass silently after.
    if image.shape[:2] != segments.shape:
        raise BadItemError(
            f"image {item.image_id!r} ({item.path})",
            f"is {image.shape[0]}x{image.shape[1]} but its mask is {segments.shape[0]}x{segments.shape[1]}; "
            "masks must have their image's size",
        )
    if transform is not None:
        image, segments = transform.image(image), transform.segments(segments)
    return Loaded(item, np.ascontiguousarray(image, np.float32), segments)


def load_map_item(item: Item, maps: MapShards, masks: MaskSource) -> Loaded:
    """A precomputed map and its mask, which must have the map's size."""
    array, values = maps.read(item)
    segments = masks.load(item.image_id)
    if array.shape != segments.shape:
        raise BadItemError(
            f"saliency map of image {item.image_id!r}",
            f"is {array.shape[0]}x{array.shape[1]} but its mask is {segments.shape[0]}x{segments.shape[1]}; "
            "masks must have their map's size",
        )
    return Loaded(item, array, segments, values)


def ordered_prefetch(submit: Callable[[Any], Any], parts: Iterable[Any], window: int) -> Iterator[Loaded | Skipped]:
    """The items of ``submit(part)`` futures (each a list), in order, at most ``window`` parts in flight."""
    from collections import deque

    pending: deque[Any] = deque()
    source = iter(parts)
    for part in source:
        pending.append(submit(part))
        if len(pending) >= window:
            break
    while pending:
        future = pending.popleft()
        following = next(source, None)
        if following is not None:
            pending.append(submit(following))
        yield from future.result()


class ShapeBatcher:
    """Groups loaded items into batches of one array shape, ``batch_size`` at most, in order of arrival.

    Items of another shape wait in their own group until it is full or the shard ends (:meth:`flush`), so at
    most one partial batch per shape is held.
    """

    def __init__(self, batch_size: int) -> None:
        self.batch_size = batch_size
        self.groups: dict[tuple[int, ...], list[Loaded]] = {}

    def add(self, loaded: Loaded) -> list[Loaded] | None:
        group = self.groups.setdefault(loaded.array.shape, [])
        group.append(loaded)
        if len(group) == self.batch_size:
            del self.groups[loaded.array.shape]
            return group
        return None

    def flush(self) -> list[list[Loaded]]:
        out, self.groups = list(self.groups.values()), {}
        return out


def stack_rows(arrays: Sequence[np.ndarray]) -> np.ndarray:
    """``np.stack(arrays)``, without a copy when the arrays are consecutive rows of one buffer.

    Maps read from a ``.npy`` shard, and a batch of a shard's rows, are views that lie back to back in the
    shard's array: a (B, H, W) view of them costs nothing, where a stack would copy every byte once more (about
    a fifth of the reduction's own time on precomputed maps). Anything else is stacked as usual. The view is
    read-only.
    """
    # Views of one array (the same base object), laid out alike, back to back in order: the view then covers
    # exactly their bytes, all of one allocation (checked in C++: a few ns per array instead of 1.3 us).
    if _core.rows_back_to_back(arrays):
        first = arrays[0]
        return np.lib.stride_tricks.as_strided(
            first, shape=(len(arrays), *first.shape), strides=(first.nbytes, *first.strides), writeable=False
        )
    return np.stack(arrays)


def maps_of(batch: Sequence[Loaded]) -> Explained:
    """The explain stage of precomputed maps: the maps themselves, explaining their ``target`` (or ``label``)."""
    maps = stack_rows([x.array for x in batch])[:, None]
    key = "target" if "target" in batch[0].values else "label"
    return Explained(maps, [np.array([x.values[key] for x in batch])], None)


def reduce_batch(
    batch: Sequence[Loaded],
    explained: Explained,
    *,
    metadata: dict[str, Any],
    class_names: Sequence[str] | None,
) -> list[pl.DataFrame]:
    """One table per explained class of the batch, each with the items' positions (column ``__position``)."""
    from sat_fast.table import segment_table

    segments = [x.segments for x in batch]
    ids = [x.item.image_id for x in batch]
    # A callable value is computed from the batch and its explanation (labels, predictions).
    per_image = {k: (v(batch, explained) if callable(v) else v) for k, v in metadata.items()}
    shared = shared_label_map(segments)
    frames = []
    for t, targets in enumerate(explained.targets):
        if shared is not None:  # one vocabulary, dense label maps: one (B, H, W) kernel call, no per-image work
            label_map, names = shared
            table = segment_table(
                explained.maps[:, t], label_map, names=names, ignore_index=len(names), image_ids=ids,
                targets=targets, metadata=per_image, class_names=class_names,
            )  # fmt: skip
        else:
            table = segment_table(
                explained.maps[:, t], segments=segments, image_ids=ids, targets=targets, metadata=per_image,
                class_names=class_names,
            )  # fmt: skip
        frames.append(table.with_columns(_positions(table, batch)))
    return frames


def _positions(table: pl.DataFrame, batch: Sequence[Loaded]) -> pl.Series:
    """Each row's item position in the source.

    Rows come image by image in batch order, and an image without segments has none: the images present are a
    subsequence of the batch, matched by walking both in order (an order the batch does not have would run past
    its end and raise, never give a wrong position).
    """
    ids = table["image_id"]
    runs = ids.rle_id().to_numpy()  # 0, 0, ..., 1, 1, ...: the row's image among those present
    present = ids.gather(np.flatnonzero(np.diff(runs, prepend=-1))).to_list()
    positions, k = np.empty(len(present), np.int64), 0
    for n, image_id in enumerate(present):
        while batch[k].item.image_id != image_id:  # images of the batch that have no rows
            k += 1
        positions[n] = batch[k].item.position
        k += 1
    return pl.Series(POSITION, positions[runs])


def shared_label_map(segments: Sequence[Segments]) -> tuple[np.ndarray, list[str]] | None:
    """The batch's label maps stacked, when every image has a dense label map of one size and one vocabulary."""
    first = segments[0]
    if first.label_map is None:
        return None
    label_maps = []
    for seg in segments:
        if seg.label_map is None or seg.names != first.names or seg.shape != first.shape:
            return None
        label_maps.append(seg.label_map)
    return stack_rows(label_maps), list(first.names)


def finish_shard(frames: list[pl.DataFrame]) -> pl.DataFrame | None:
    """The shard's rows in canonical order: source position, then explained class, then segment."""
    if not frames:
        return None
    table = pl.concat(frames, how="vertical_relaxed")
    order = [POSITION, "target"] if "target" in table.columns else [POSITION]
    return table.sort(order, maintain_order=True).drop(POSITION)
