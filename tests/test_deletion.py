"""segment_deletion and deletion_agreement against float64 numpy/scipy references."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import polars as pl
import pytest
from polars.testing import assert_frame_equal
from scipy import ndimage, stats

import sat_fast

B, H, W, C = 7, 12, 10, 3
NAMES = ["key", "left", "rest"]
# The model looks at the top-left 4x4 block only, weighting the channels differently.
WEIGHTS = np.array([1.0, -0.5, 2.0])


def model(x):
    block = x[:, :4, :4, :]
    score = (block * jnp.asarray(WEIGHTS, x.dtype)).sum(axis=(1, 2, 3))
    return jnp.stack([score, -score, jnp.zeros_like(score)], axis=1)


def data(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    images = rng.random((B, H, W, C)).astype(np.float32)
    labels = np.full((B, H, W), 2, np.uint8)
    labels[:, :4, :4] = 0  # "key" is exactly the block the model reads
    labels[:, 4:, :3] = 1  # "left" never touches it
    labels[3, 4:, :3] = 2  # image 3 has no "left"
    return images, labels


def reference_drop(images: np.ndarray, filled: np.ndarray) -> np.ndarray:
    """Drop of output 0 when the key block is replaced by `filled` (float64)."""
    x = images.astype(np.float64)
    before = (x[:, :4, :4] * WEIGHTS).sum(axis=(1, 2, 3))
    after = (filled.astype(np.float64)[:, :4, :4] * WEIGHTS).sum(axis=(1, 2, 3))
    return before - after


@pytest.mark.parametrize("fill", ["zeros", "mean", "blur", 0.25])
def test_only_the_used_segment_drops(fill):
    images, labels = data()
    result = sat_fast.segment_deletion(
        model, images, labels, names=NAMES, fill=fill, targets=0, blur_sigma=1.0, batch_size=3
    )
    x = images.astype(np.float64)
    if fill == "zeros":
        filled = np.zeros_like(x)
    elif fill == "mean":
        filled = np.broadcast_to(x.mean(axis=(1, 2), keepdims=True), x.shape)
    elif fill == "blur":
        filled = ndimage.gaussian_filter(x, sigma=(0, 1.0, 1.0, 0), mode="nearest", truncate=3.0)
    else:
        filled = np.full_like(x, 0.25)
    key = result.filter(pl.col("segment") == "key").sort("image_id")
    np.testing.assert_allclose(key["drop"].to_numpy(), reference_drop(images, filled), rtol=1e-4, atol=1e-4)
    others = result.filter(pl.col("segment") != "key")
    np.testing.assert_allclose(others["drop"].to_numpy(), 0.0, atol=1e-5)
    np.testing.assert_allclose(
        result["output"].to_numpy(),
        (x[:, :4, :4] * WEIGHTS).sum(axis=(1, 2, 3))[result["image_id"].to_numpy()],
        rtol=1e-5,
    )
    assert (result["drop"] == result["output"] - result["deleted"]).all()


def test_frame_layout_and_join_with_sat():
    images, labels = data()
    result = sat_fast.segment_deletion(
        model, images, labels, names=NAMES, fill="zeros", targets=0, metadata={"split": "val"}
    )
    assert result.columns == [
        "image_id",
        "target",
        "split",
        "segment",
        "pixels",
        "area",
        "output",
        "deleted",
        "drop",
        "drop_rank",
    ]
    assert result.schema["segment"] == pl.Categorical and result.schema["pixels"] == pl.Int64
    # one row per (image, present segment), image-major, segments in name order
    assert result.height == 3 * B - 1
    assert result.filter(pl.col("image_id") == 3)["segment"].cast(pl.String).to_list() == ["key", "rest"]
    assert result.filter(pl.col("image_id") == 0)["pixels"].to_list() == [16, 24, H * W - 40]
    np.testing.assert_allclose(result["area"].to_numpy(), result["pixels"].to_numpy() / (H * W))
    sal = images.mean(axis=3)
    sat = sat_fast.segment_table(sal, labels, names=NAMES, targets=np.zeros(B, np.int64), metadata={"split": "val"})
    joined = sat.join(result, on=["image_id", "target", "segment"], how="inner")
    assert joined.height == sat.height == result.height
    assert (joined["pixels"] == joined["pixels_right"]).all()
    # drop_rank: competition rank of drop within the image, largest first (ties share: 1, 2, 2)
    for image_id, frame in result.group_by("image_id"):
        drop = frame["drop"].to_numpy()
        expected = [1 + int((drop > d).sum()) for d in drop]
        assert frame["drop_rank"].to_list() == expected, image_id


def test_class_names_name_target_label_and_prediction_like_the_sat():
    images, labels = data()
    classes = ["fish", "bird", "cat"]
    meta = {"label": np.arange(B) % 3, "predicted": np.zeros(B, np.int64)}
    result = sat_fast.segment_deletion(
        model, images, labels, names=NAMES, fill="zeros", targets=np.arange(B) % 2, metadata=meta,
        class_names=classes,
    )  # fmt: skip
    assert result.columns[:7] == ["image_id", "target", "class", "label", "label_class", "predicted", "predicted_class"]
    for column, index in (("class", "target"), ("label_class", "label"), ("predicted_class", "predicted")):
        assert result.schema[column] == pl.Categorical
        assert result[column].cast(pl.String).to_list() == [classes[i] for i in result[index].to_list()]
    sat = sat_fast.segment_table(
        images.mean(axis=3), labels, names=NAMES, targets=np.arange(B) % 2, metadata=meta,
        class_names=classes,
    )  # fmt: skip
    joined = sat.join(result, on=["image_id", "target", "class", "segment"], how="inner")
    assert joined.height == sat.height == result.height
    with pytest.raises(ValueError, match="target 5 is not a class index"):
        sat_fast.segment_deletion(
            lambda x: jnp.zeros((x.shape[0], 6)), images, labels, names=NAMES, targets=5, class_names=classes
        )
    with pytest.raises(ValueError, match="metadata column 'class' clashes"):
        sat_fast.segment_deletion(model, images, labels, names=NAMES, metadata={"class": 1}, class_names=classes)


def test_segment_forms_agree():
    images, labels = data(1)
    base = sat_fast.segment_deletion(model, images, labels, names=NAMES, fill="mean", targets=0, batch_size=4)
    masks = np.stack([labels == k for k in range(3)], axis=1)
    dense = sat_fast.segment_deletion(model, images, masks=masks, names=NAMES, fill="mean", targets=0, batch_size=2)
    packed = sat_fast.segment_deletion(
        model, images, masks=sat_fast.pack_masks(masks), names=NAMES, fill="mean", targets=0
    )
    assert_frame_equal(base, dense, check_exact=False, rel_tol=1e-6, abs_tol=1e-5)
    assert_frame_equal(base, packed, check_exact=False, rel_tol=1e-6, abs_tol=1e-5)
    # per-image vocabularies, in a different order per image: same rows after sorting
    mappings = []
    for i in range(B):
        items = [(NAMES[k], labels[i] == k) for k in range(3) if (labels[i] == k).any()]
        mappings.append(dict(items[::-1] if i % 2 else items))
    with pytest.warns(DeprecationWarning, match="pass masks= or segments="):  # version 1's mappings still work
        mapped = sat_fast.segment_deletion(model, images, mappings, fill="mean", targets=0, batch_size=3)
    order = [pl.col("image_id"), pl.col("segment").cast(pl.String)]
    assert_frame_equal(
        mapped.sort(order).drop("drop_rank"),
        base.sort(order).drop("drop_rank"),
        check_exact=False,
        rel_tol=1e-6,
        abs_tol=1e-5,
    )


def test_overlapping_masks_and_default_targets():
    images, labels = data(2)
    masks = np.stack([labels == 0, labels != 2, np.ones_like(labels, bool)], axis=1)  # "left" now covers the key block
    result = sat_fast.segment_deletion(model, images, masks=masks, names=["key", "key+left", "all"], fill="zeros")
    assert (result["target"] == 0).all()  # block scores are positive, so output 0 is the argmax
    per_image = result.pivot(on="segment", index="image_id", values="drop")
    np.testing.assert_allclose(per_image["key"].to_numpy(), per_image["key+left"].to_numpy(), rtol=1e-5)
    np.testing.assert_allclose(per_image["key"].to_numpy(), per_image["all"].to_numpy(), rtol=1e-5)
    other = sat_fast.segment_deletion(
        model, images, labels, names=NAMES, fill="zeros", targets=[1] * B, image_ids=[f"im{i}" for i in range(B)]
    )
    key = other.filter(pl.col("segment") == "key")
    np.testing.assert_allclose(key["drop"].to_numpy(), -reference_drop(images, np.zeros_like(images)), rtol=1e-4)
    assert other["image_id"].dtype == pl.String


def test_deletion_frame_aggregates():
    images, labels = data()
    result = sat_fast.segment_deletion(model, images, labels, names=NAMES, fill="zeros", targets=0)
    agg = sat_fast.aggregate(result, value="drop", rank="drop_rank")
    key = agg.filter(pl.col("segment") == "key").row(0, named=True)
    assert key["images"] == B and key["top1"] == 1.0 and key["mean_rank"] == 1.0
    left = agg.filter(pl.col("segment") == "left").row(0, named=True)
    assert left["present"] == B - 1 and left["share"] is None


def test_deletion_agreement_matches_scipy():
    rng = np.random.default_rng(0)
    rows = []
    for image in range(12):
        segs = rng.choice(["a", "b", "c", "d", "e"], size=rng.integers(1, 6), replace=False)
        for s in segs:
            rows.append((image, image % 2, s, float(rng.integers(0, 4)), float(rng.integers(0, 4))))
    ids, target, seg, mean, drop = (list(c) for c in zip(*rows, strict=True))
    sat = pl.DataFrame({"image_id": ids, "target": target, "segment": seg, "mean": mean}).with_columns(
        pl.col("segment").cast(pl.Categorical)
    )
    deletion = pl.DataFrame({"image_id": ids, "target": target, "segment": seg, "drop": drop})
    result = sat_fast.deletion_agreement(sat, deletion)
    for row in result.iter_rows(named=True):
        rhos, tops, total = [], [], 0
        for image in range(row["target"], 12, 2):
            m = np.array([r[3] for r in rows if r[0] == image])
            d = np.array([r[4] for r in rows if r[0] == image])
            if m.size < 2:
                continue
            total += 1
            tops.append(bool(((m == m.max()) & (d == d.max())).any()))
            if np.ptp(m) > 0 and np.ptp(d) > 0:
                rhos.append(stats.spearmanr(m, d).statistic)
        assert row["images"] == len(rhos)
        assert row["spearman"] == pytest.approx(np.mean(rhos), rel=1e-12)
        assert row["spearman_median"] == pytest.approx(np.median(rhos), rel=1e-12)
        assert row["top1_agreement"] == pytest.approx(np.mean(tops))
        assert len(tops) == total
    with pytest.raises(ValueError, match="deletion has no column 'drop'"):
        sat_fast.deletion_agreement(sat, deletion.drop("drop"))
    with pytest.raises(ValueError, match="sat has no column 'label'"):
        sat_fast.deletion_agreement(sat, deletion, by="label")


def test_bad_input():
    images, labels = data()
    with pytest.raises(ValueError, match="names= is required"):
        sat_fast.segment_deletion(model, images, labels)
    with pytest.raises(ValueError, match="label map shape"):
        sat_fast.segment_deletion(model, images, labels[:, :5], names=NAMES)
    with pytest.raises(ValueError, match=r"names has 2 entries but there are 3"):
        sat_fast.segment_deletion(model, images, masks=np.stack([labels == k for k in range(3)], 1), names=NAMES[:2])
    with pytest.raises(ValueError, match="fill must be one of"):
        sat_fast.segment_deletion(model, images, labels, names=NAMES, fill="noise")
    with pytest.raises(TypeError, match="images must be floating point"):
        sat_fast.segment_deletion(model, (images * 255).astype(np.uint8), labels, names=NAMES)
    with pytest.raises(ValueError, match=r"images must have shape \(B, H, W, C\)"):
        sat_fast.segment_deletion(model, images[..., 0], labels, names=NAMES)
    with pytest.raises(ValueError, match="target 5 of image 0 is outside"):
        sat_fast.segment_deletion(model, images, labels, names=NAMES, targets=5)
    with pytest.raises(TypeError, match="segments must be an integer label map"):
        sat_fast.segment_deletion(model, images, labels.astype(np.float32), names=NAMES)
    with pytest.raises(ValueError, match="mask 'key' of image 0 has shape"), pytest.warns(DeprecationWarning):
        sat_fast.segment_deletion(model, images, [{"key": np.ones((3, 3), bool)}] * B)
    with pytest.raises(ValueError, match="per-image mappings but images has"), pytest.warns(DeprecationWarning):
        sat_fast.segment_deletion(model, images, [{"key": labels[0] == 0}])
    with pytest.raises(ValueError, match="exactly one of label_map, masks and segments"):
        sat_fast.segment_deletion(model, images, labels, masks=labels[:, None] == 0, names=NAMES)
    with pytest.raises(TypeError, match="segments must be Segments values"):
        sat_fast.segment_deletion(model, images, segments=[{"key": labels[0] == 0}] * B)
    with pytest.raises(ValueError, match="batch_size must be a positive int"):
        sat_fast.segment_deletion(model, images, labels, names=NAMES, batch_size=0)


def test_model_output_shape_is_checked():
    images, labels = data()
    with pytest.raises(ValueError, match="fn must map"):
        sat_fast.segment_deletion(lambda x: x.sum(axis=(1, 2, 3)), images, labels, names=NAMES)


def test_segments_objects_match_arrays_and_join_like_segment_table():
    from sat_fast.segments import from_label_map, from_masks

    images, labels = data(3)
    base = sat_fast.segment_deletion(
        model, images, labels, names=NAMES, fill="zeros", targets=0, image_ids=[10 + i for i in range(B)]
    )
    ids = [10 + i for i in range(B)]
    from_labels = sat_fast.segment_deletion(
        model, images, segments=from_label_map(labels, NAMES, image_ids=ids), fill="zeros", targets=0
    )
    assert_frame_equal(from_labels, base, check_exact=False, rel_tol=1e-6, abs_tol=1e-5)
    per_image = [{NAMES[k]: labels[i] == k for k in range(3) if (labels[i] == k).any()} for i in range(B)]
    segs = from_masks(per_image, image_ids=ids)
    from_mask_segments = sat_fast.segment_deletion(model, images, segments=segs, fill="zeros", targets=0, batch_size=4)
    order = [pl.col("image_id"), pl.col("segment").cast(pl.String)]
    assert_frame_equal(
        from_mask_segments.sort(order).drop("drop_rank"),
        base.sort(order).drop("drop_rank"),
        check_exact=False,
        rel_tol=1e-6,
        abs_tol=1e-5,
    )
    sat = sat_fast.segment_table(images.mean(axis=3), segments=segs, targets=np.zeros(B, np.int64))
    assert sat.join(from_mask_segments, on=["image_id", "target", "segment"], how="inner").height == sat.height
    with pytest.raises(ValueError, match="Segments of image 0 are 12x5"):
        sat_fast.segment_deletion(model, images, segments=from_label_map(labels[:, :, :5], NAMES), targets=0)
    with pytest.raises(ValueError, match="names is given by the Segments"):
        sat_fast.segment_deletion(model, images, segments=segs, names=NAMES)


def test_fill_with_replacement_images():
    # The output reads pixel (0, 0) only; deleting its segment swaps in the replacement.
    images = np.zeros((2, 4, 4, 1), np.float32)
    images[:, 0, 0, 0] = [1.0, 2.0]
    labels = np.zeros((2, 4, 4), np.uint8)
    labels[:, 0, 0] = 1
    replacement = np.full_like(images, 0.25)

    def fn(x):
        return x[:, 0, 0, :]

    frame = sat_fast.segment_deletion(fn, images, labels, names=["rest", "corner"], fill=replacement, targets=0)
    corner = frame.filter(pl.col("segment") == "corner").sort("image_id")
    assert corner["deleted"].to_list() == [0.25, 0.25]
    assert corner["drop"].to_list() == [0.75, 1.75]
    with pytest.raises(
        ValueError, match=r"fill images shape \(1, 4, 4, 1\) does not match images shape \(2, 4, 4, 1\)"
    ):
        sat_fast.segment_deletion(fn, images, labels, names=["rest", "corner"], fill=replacement[:1], targets=0)
