"""Print a Segment Attribution Table for a tiny synthetic batch.

A stand-in "saliency map" puts most attribution on a watermark in the corner;
the table shows the watermark segment ranked first even though it is small.

    python examples/quickstart.py
"""

import numpy as np
import polars as pl

import sat_fast

rng = np.random.default_rng(0)
batch, size = 4, 64
names = ["background", "body", "head", "watermark"]

labels = np.zeros((batch, size, size), np.uint8)  # background
labels[:, 16:52, 12:44] = 1  # body
labels[:, 8:20, 36:52] = 2  # head
labels[:, 54:62, 2:14] = 3  # watermark

saliency = rng.normal(0.0, 0.05, (batch, size, size)).astype(np.float32)
saliency[labels == 1] += 0.2
saliency[labels == 2] += 0.4
saliency[labels == 3] += 1.0  # the shortcut

table = sat_fast.segment_table(saliency, labels, names=names, targets=[1, 1, 2, 2])
with pl.Config(tbl_cols=10, tbl_rows=20, float_precision=3):
    print(table.select("image_id", "target", "segment", "pixels", "area", "mean", "share", "density", "rank"))
    print(
        table.group_by("segment")
        .agg(pl.col("mean").mean(), pl.col("share").mean(), (pl.col("rank") == 1).mean().alias("top1"))
        .sort("mean", descending=True)
    )
