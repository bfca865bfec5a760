"""Small datasets for the pipeline tests: precomputed maps with PNG label maps, written to disk."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image


def write_maps_dataset(
    root: Path, *, count: int, size: int = 16, segments: int = 4, per_file: int = 50, seed: int = 0
) -> dict[str, Path]:
    """``count`` random saliency maps in ``.npz`` shards of ``per_file``, PNG label maps and a names table.

    Image ids are ``img000000``...; each map explains ``target`` = id % 3 and has label = (id + 1) % 3.
    """
    rng = np.random.default_rng(seed)
    maps_dir, masks_dir = root / "maps", root / "masks"
    maps_dir.mkdir(parents=True)
    masks_dir.mkdir()
    (root / "names.csv").write_text("value,name\n" + "".join(f"{i},part{i}\n" for i in range(segments)))
    for start in range(0, count, per_file):
        ids = [f"img{i:06d}" for i in range(start, min(count, start + per_file))]
        maps = rng.standard_normal((len(ids), size, size)).astype(np.float32)
        positions = np.arange(start, start + len(ids))
        np.savez(
            maps_dir / f"part-{start // per_file:04d}.npz",
            maps=maps,
            image_id=np.array(ids),
            target=positions % 3,
            label=(positions + 1) % 3,
        )
        for image_id in ids:
            label_map = rng.integers(0, segments, (size, size), dtype=np.uint8)
            Image.fromarray(label_map).save(masks_dir / f"{image_id}.png")
    return {"maps": maps_dir, "masks": masks_dir, "names": root / "names.csv"}
