"""Write a small image folder with PNG label maps, the layout ``sat-fast run`` reads.

    python examples/make_example_data.py example_data [--per-class 8]

Creates ``images/<class>/<n>.png`` (48x48 RGB, so the example model's
transform has to resize), ``masks/<class>/<n>.png`` (label maps) and
``names.csv`` (value,name).
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

import numpy as np
from PIL import Image

from sat_fast.demo.data import CLASS_NAMES, SEGMENT_NAMES, DataConfig, make_split


def write_example_data(root: Path, per_class: int = 8, size: int = 48) -> Path:
    data = make_split(DataConfig(image_size=size, test_size=per_class * len(CLASS_NAMES)), "test")
    counts = dict.fromkeys(CLASS_NAMES, 0)
    for image, labels, cls in zip(data.images, data.segments, data.label, strict=True):
        name = CLASS_NAMES[cls]
        stem = f"{name}/{counts[name]:03d}.png"
        counts[name] += 1
        for folder, array in (("images", (image * 255).round().astype(np.uint8)), ("masks", labels)):
            path = root / folder / stem
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(array).save(path)
    with (root / "names.csv").open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["value", "name"])
        writer.writerows(enumerate(SEGMENT_NAMES))
    return root


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root", type=Path)
    parser.add_argument("--per-class", type=int, default=8)
    args = parser.parse_args()
    print(f"wrote {write_example_data(args.root, args.per_class)}")
