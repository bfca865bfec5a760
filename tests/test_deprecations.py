"""Names renamed in 0.2.0 keep working for one release, with a DeprecationWarning that names the new spelling."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

import sat_fast
from sat_fast.segments import from_label_map, load_segments, save_segments

SAL = np.array([[[1.0, 2.0], [3.0, -4.0]]], np.float32)
LAB = np.array([[[0, 0], [1, 255]]], np.uint8)


def test_segment_stats_labels_and_unassigned_keywords():
    new = sat_fast.segment_stats(SAL, label_map=LAB, num_segments=2, ignore_index=255, include_unassigned=True)
    with pytest.warns(DeprecationWarning, match=r"segment_stats\(labels=\.\.\.\).*use label_map="):
        old = sat_fast.segment_stats(SAL, labels=LAB, num_segments=2, ignore_index=255, include_unassigned=True)
    np.testing.assert_array_equal(old["sum"], new["sum"])
    with pytest.warns(DeprecationWarning, match="use include_unassigned="):
        old = sat_fast.segment_stats(SAL, LAB, num_segments=2, ignore_index=255, unassigned=True)
    assert old.unassigned is not None and old.unassigned["sum"].tolist() == [-4.0]
    with pytest.raises(TypeError, match=r"both labels= .* and label_map="):
        sat_fast.segment_stats(SAL, LAB, labels=LAB)
    with pytest.raises(TypeError, match="unexpected keyword argument 'lables'"):
        sat_fast.segment_stats(SAL, lables=LAB)


def test_segments_stats_is_segment_stats_with_segments():
    segs = from_label_map(LAB[0], ["a", "b"], ignore_index=255)
    with pytest.warns(DeprecationWarning, match=r"use segment_stats\(saliency, segments=segments\)"):
        old = sat_fast.segments.segments_stats(SAL, segs)
    np.testing.assert_array_equal(old["sum"], sat_fast.segment_stats(SAL, segments=segs)["sum"])


def test_segment_table_labels_keyword():
    with pytest.warns(DeprecationWarning, match="use label_map="):
        old = sat_fast.segment_table(SAL, labels=LAB, names=["a", "b"], ignore_index=255)
    assert old.equals(sat_fast.segment_table(SAL, LAB, names=["a", "b"], ignore_index=255))


def test_segments_labels_attribute():
    seg = from_label_map(LAB[0], ["a", "b"], ignore_index=255)[0]
    with pytest.warns(DeprecationWarning, match="use Segments.label_map"):
        assert seg.labels is seg.label_map


def test_from_coco_image_ids_keyword():
    coco = {
        "images": [{"id": 1, "height": 2, "width": 2, "file_name": "a.png"}, {"id": 2, "height": 2, "width": 2}],
        "categories": [{"id": 5, "name": "dog"}],
        "annotations": [
            {"id": 9, "image_id": i, "category_id": 5, "segmentation": {"size": [2, 2], "counts": [1, 3]}}
            for i in (1, 2)
        ],
    }
    with pytest.warns(DeprecationWarning, match="use select_ids="):
        old = sat_fast.segments.from_coco(coco, image_ids=[2])
    assert [s.image_id for s in old] == [s.image_id for s in sat_fast.segments.from_coco(coco, select_ids=[2])] == [2]


def test_path_first_writers(tmp_path):
    segs = from_label_map(LAB[0], ["a", "b"], ignore_index=255)
    with pytest.warns(DeprecationWarning, match=r"save_segments\(segments, path\)"):
        save_segments(tmp_path / "s.npz", segs)
    assert load_segments(tmp_path / "s.npz")[0].names == ("a", "b")
    agg = pl.DataFrame({"target": [0], "segment": ["a"], "mean": [1.0]})
    with pytest.warns(DeprecationWarning, match=r"report\(agg, path\)"):
        out = sat_fast.report(tmp_path / "r.html", agg, default_figures=False)
    assert out.read_text().startswith("<!DOCTYPE html>")


def test_sides_keywords(tmp_path):
    cmp = pl.DataFrame({"target": [0], "segment": ["eye"], "mean_a": [0.2], "mean_b": [0.6]})
    with pytest.warns(DeprecationWarning, match="use sides="):
        fig = sat_fast.plot_comparison(cmp, labels=("in", "ood"), figsize=(3, 2), dpi=40)
    assert "in vs ood" in fig.axes[0].get_title()
    agg = pl.DataFrame({"target": [0], "segment": ["eye"], "mean": [1.0]})
    with pytest.warns(DeprecationWarning, match="use sides="):
        sat_fast.report(agg, tmp_path / "r.html", comparison=cmp, comparison_labels=("x", "y"))


def test_segment_deletion_positional_masks():
    import jax.numpy as jnp

    def fn(x):
        return jnp.stack([x.sum((1, 2, 3)), -x.sum((1, 2, 3))], axis=1)

    images = np.ones((1, 2, 2, 1), np.float32)
    masks = np.stack([LAB == 0, LAB == 1], axis=1)
    new = sat_fast.segment_deletion(fn, images, masks=masks, names=["a", "b"], fill="zeros", targets=0)
    with pytest.warns(DeprecationWarning, match="pass masks= or segments="):
        old = sat_fast.segment_deletion(fn, images, masks, names=["a", "b"], fill="zeros", targets=0)
    assert old.equals(new)
