"""segment_table: columns, schema, values against the float64 reference, ranks, nulls."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
from sat_reference import blobs, label_stats

import sat_fast

RNG = np.random.default_rng(99)
NAMES = ["eye", "ear", "body", "background", "watermark"]


def test_columns_and_schema():
    sal = RNG.standard_normal((3, 12, 10)).astype(np.float32)
    lab = blobs(RNG, 3, 12, 10, 5).astype(np.uint8)
    t = sat_fast.segment_table(
        sal, lab, names=NAMES, targets=[0, 1, 2], metadata={"label": [0, 1, 1], "split": "ood", "model": "m"}
    )
    assert t.columns == [
        "image_id", "target", "label", "split", "model", "segment", "pixels", "area", "sum", "mean",
        "pos_sum", "neg_sum", "abs_sum", "sq_sum", "share", "density", "min", "max", "rank",
    ]  # fmt: skip
    assert t.schema["image_id"] == pl.Int64 and t.schema["target"] == pl.Int64
    assert t.schema["segment"] == pl.Categorical()
    assert t.schema["pixels"] == pl.Int64 and t.schema["rank"] == pl.Int64
    assert all(t.schema[c] == pl.Float64 for c in ("area", "sum", "mean", "share", "density", "min", "max"))
    assert t["split"].unique().to_list() == ["ood"]
    no_targets = sat_fast.segment_table(sal, lab, names=NAMES)
    assert "target" not in no_targets.columns
    assert no_targets.schema == sat_fast.table_schema()


def test_values_match_reference():
    b, h, w, k = 4, 31, 17, 5
    sal = RNG.standard_normal((b, h, w))
    lab = blobs(RNG, b, h, w, k).astype(np.uint8)
    lab[0, 0, :5] = 255  # ignored pixels count in area and totals but belong to no row
    t = sat_fast.segment_table(sal, lab, names=NAMES, ignore_index=255, image_ids=["a", "b", "c", "d"])
    ref = label_stats(sal, np.where(lab == 255, -1, lab), k)
    rows = 0
    for i, image in enumerate("abcd"):
        for s, name in enumerate(NAMES):
            row = t.filter((pl.col("image_id") == image) & (pl.col("segment") == name))
            n = ref["count"][i, s]
            if n == 0:
                assert row.height == 0
                continue
            rows += 1
            r = row.row(0, named=True)
            assert r["pixels"] == n
            assert r["area"] == pytest.approx(n / (h * w), rel=1e-15)
            assert r["sum"] == pytest.approx(ref["sum"][i, s], rel=1e-12, abs=1e-12)
            assert r["mean"] == pytest.approx(ref["sum"][i, s] / n, rel=1e-12, abs=1e-12)
            assert r["abs_sum"] == pytest.approx(ref["abs_sum"][i, s], rel=1e-12)
            share = ref["abs_sum"][i, s] / ref["total_abs"][i]
            assert r["share"] == pytest.approx(share, rel=1e-12)
            assert r["density"] == pytest.approx(share / (n / (h * w)), rel=1e-12)
            assert r["min"] == ref["min"][i, s] and r["max"] == ref["max"][i, s]
    assert rows == t.height
    # shares of one image sum to at most 1 (ignored pixels keep the rest)
    share_sum = t.group_by("image_id").agg(pl.col("share").sum()).sort("image_id")["share"].to_list()
    assert share_sum[0] < 1 and share_sum[1] == pytest.approx(1.0)


def test_rank_is_competition_ranking_by_mean():
    # segment means per image: a=2, b=2, c=1 -> ranks 1, 1, 3; d absent
    sal = np.array([[[2, 2, 2, 2, 1, 1]], [[0, 5, 5, 5, 5, 5]]], np.float32)
    lab = np.array([[[0, 0, 1, 1, 2, 2]], [[3, 1, 1, 1, 1, 1]]], np.uint8)
    t = sat_fast.segment_table(sal, lab, names=["a", "b", "c", "d"])
    got = {(r["image_id"], r["segment"]): r["rank"] for r in t.iter_rows(named=True)}
    assert got == {(0, "a"): 1, (0, "b"): 1, (0, "c"): 3, (1, "d"): 2, (1, "b"): 1}


def test_share_and_density_are_null_for_all_zero_saliency():
    t = sat_fast.segment_table(np.zeros((1, 4, 4)), np.zeros((1, 4, 4), np.uint8), names=["a"])
    assert t["share"].null_count() == 1 and t["density"].null_count() == 1
    assert t["mean"].to_list() == [0.0]


def test_unassigned_row_is_ranked_like_any_other():
    sal = np.array([[[1, 1, 5, 5]]], np.float32)
    lab = np.array([[[0, 0, 9, 9]]], np.uint8)
    t = sat_fast.segment_table(sal, lab, names=["a"], ignore_index=9, unassigned="(none)")
    assert t.select("segment", "mean", "rank", "share").rows() == [("a", 1.0, 2, 2 / 12), ("(none)", 5.0, 1, 10 / 12)]
    masks = np.zeros((1, 2, 1, 4), bool)
    masks[0, 0, 0, :2] = True
    masks[0, 1, 0, 1:2] = True
    tm = sat_fast.segment_table(sal, masks=masks, names=["a", "b"], unassigned="rest")
    assert tm.select("segment", "pixels", "sum").rows() == [("a", 2, 2.0), ("b", 1, 1.0), ("rest", 2, 10.0)]


def test_masks_table_matches_labels_table_for_disjoint_masks():
    sal = RNG.standard_normal((2, 20, 20)).astype(np.float32)
    lab = blobs(RNG, 2, 20, 20, 5).astype(np.uint8)
    masks = np.stack([lab == s for s in range(5)], axis=1)
    a = sat_fast.segment_table(sal, lab, names=NAMES)
    b = sat_fast.segment_table(sal, masks=masks, names=NAMES)
    assert a.select("image_id", "segment", "pixels", "rank").equals(b.select("image_id", "segment", "pixels", "rank"))
    np.testing.assert_allclose(a["sum"].to_numpy(), b["sum"].to_numpy(), rtol=1e-12)


def test_empty_batch_gives_empty_frame_with_schema():
    t = sat_fast.segment_table(
        np.zeros((0, 8, 8), np.float32), np.zeros((0, 8, 8), np.uint8), names=NAMES, targets=[], metadata={"split": []}
    )
    assert t.height == 0
    assert t.columns[:3] == ["image_id", "target", "split"] and t.schema["segment"] == pl.Categorical()


def test_tables_with_different_vocabularies_concatenate():
    sal = RNG.standard_normal((2, 6, 6))
    lab = RNG.integers(0, 2, (2, 6, 6)).astype(np.uint8)
    a = sat_fast.segment_table(sal, lab, names=["eye", "ear"])
    b = sat_fast.segment_table(sal, lab, names=["tail", "eye"], image_ids=[10, 11])
    both = pl.concat([a, b])
    assert both.schema["segment"] == pl.Categorical()
    assert set(both["segment"].cast(pl.String)) == {"eye", "ear", "tail"}
    assert both.filter(pl.col("segment") == "eye").height == 4


def test_table_from_merged_batches_equals_table_of_whole_batch():
    sal = RNG.standard_normal((6, 10, 10))
    lab = blobs(RNG, 6, 10, 10, 5).astype(np.uint8)
    whole = sat_fast.segment_table(sal, lab, names=NAMES)
    parts = [sat_fast.segment_stats(sal[i : i + 3], lab[i : i + 3], num_segments=5) for i in (0, 3)]
    joined = sat_fast.stats_table(sat_fast.SegmentStats.concat(parts), names=NAMES)
    assert whole.equals(joined)


def test_class_names_add_class_columns_after_their_index():
    sal = RNG.standard_normal((3, 12, 10)).astype(np.float32)
    lab = blobs(RNG, 3, 12, 10, 5).astype(np.uint8)
    classes = ["fish", "bird", "cat"]
    meta = {"label": [0, 1, 1], "predicted": [2, 1, 0], "run": "0a1b2c3d"}
    t = sat_fast.segment_table(sal, lab, names=NAMES, targets=[0, 1, 2], metadata=meta, class_names=classes)
    assert t.columns[:8] == [
        "image_id", "target", "class", "label", "label_class", "predicted", "predicted_class", "run",
    ]  # fmt: skip
    meta_schema = {"label": pl.Int64, "predicted": pl.Int64, "run": pl.String}
    assert t.schema == sat_fast.table_schema(targets=True, metadata=meta_schema, class_names=True)
    per_image = t.unique("image_id").sort("image_id")
    assert per_image["class"].cast(pl.String).to_list() == ["fish", "bird", "cat"]
    assert per_image["label_class"].cast(pl.String).to_list() == ["fish", "bird", "bird"]
    assert per_image["predicted_class"].cast(pl.String).to_list() == ["cat", "bird", "fish"]
    # the same through stats_table and per-image Segments
    st = sat_fast.segment_stats(sal, lab, num_segments=len(NAMES))
    assert sat_fast.stats_table(st, names=NAMES, targets=[0, 1, 2], class_names=classes)["class"].equals(t["class"])
    segs = list(sat_fast.segments.from_label_map(lab, NAMES))
    by_segments = sat_fast.segment_table(sal, segments=segs, targets=[0, 1, 2], class_names=classes)
    assert by_segments["class"].cast(pl.String).to_list() == t["class"].cast(pl.String).to_list()
    with pytest.raises(ValueError, match="target 3 is not a class index: class_names has 3 names"):
        sat_fast.segment_table(sal, lab, names=NAMES, targets=[0, 1, 3], class_names=classes)
    with pytest.raises(ValueError, match="'class' clashes"):
        sat_fast.segment_table(sal, lab, names=NAMES, metadata={"class": "x"})


# --- coverage (issue 10): area and share over covered pixels ---


def test_table_with_coverage_equals_a_hand_computed_covered_only_table():
    from sat_fast.segments import Segments, from_label_map, rle_encode
    from sat_fast.transforms import CenterCrop, Compose, ResizeShorter

    rng = np.random.default_rng(5)
    h, w, k = 300, 200, 4
    labels = blobs(rng, 1, h, w, k)[0]
    names = ["a", "b", "c", "d"]
    pre = Compose([ResizeShorter(256), CenterCrop(224)])
    sal224 = rng.standard_normal((224, 224)).astype(np.float32)
    back, cov = pre.saliency_to_source(sal224, (h, w))
    assert not cov.all()
    x = back.astype(np.float64)
    rows = []
    for s, name in enumerate(names):
        sel = (labels == s) & cov
        if sel.any():
            vals = x[sel]
            rows.append(
                (name, int(sel.sum()), sel.sum() / cov.sum(), vals.mean(), np.abs(vals).sum() / np.abs(x[cov]).sum())
            )
    lab_seg = from_label_map([labels.astype(np.uint8)], names)[0]
    rle_seg = Segments.from_rle(names, [[rle_encode(labels == s)] for s in range(k)], h, w)
    tables = [
        sat_fast.segment_table(back[None], labels[None].astype(np.uint8), names=names, coverage=cov[None]),
        sat_fast.segment_table(
            back[None], masks=np.stack([labels == s for s in range(k)])[None], names=names, coverage=cov[None]
        ),
        sat_fast.segment_table([back], segments=[lab_seg], coverage=[cov]),
        sat_fast.segment_table([back], segments=[rle_seg], coverage=[cov]),
    ]
    for t in tables:
        got = t.select("segment", "pixels", "area", "mean", "share").rows()
        assert [g[:2] for g in got] == [r[:2] for r in rows]
        np.testing.assert_allclose([g[2:] for g in got], [r[2:] for r in rows], rtol=1e-9)
        assert abs(t["area"].sum() - 1.0) < 1e-12  # a full partition: area sums to 1 over covered pixels
        assert abs(t["share"].sum() - 1.0) < 1e-9


def test_table_coverage_unassigned_row_holds_covered_pixels_only():
    sal = np.ones((1, 4, 4), np.float32)
    lab = np.zeros((1, 4, 4), np.uint8)
    lab[0, :, 2:] = 9  # ignored
    cov = np.zeros((1, 4, 4), bool)
    cov[0, :2] = True
    t = sat_fast.segment_table(sal, lab, names=["x"], ignore_index=9, unassigned="(none)", coverage=cov)
    assert t.select("segment", "pixels", "area").rows() == [("x", 4, 0.5), ("(none)", 4, 0.5)]
