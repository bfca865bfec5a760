"""The demo's synthetic dataset, and the shortcut its quick configuration must show."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from sat_fast.demo.data import (
    BACKGROUND_KINDS,
    CLASS_NAMES,
    SEGMENT_NAMES,
    DataConfig,
    make_split,
    make_splits,
)

SMALL = DataConfig(train_size=300, test_size=150, ood_size=300, seed=3)
WM = SEGMENT_NAMES.index("watermark")
PARTS = [n for n in SEGMENT_NAMES if n not in ("background", "watermark")]
FIELDS = ("images", "segments", "label", "background_kind", "watermark", "backdrop", "colours")


@pytest.fixture(scope="module")
def splits():
    return make_splits(SMALL)


def test_same_seed_same_arrays_other_seed_other_arrays():
    a, b = make_split(SMALL, "test"), make_split(SMALL, "test")
    for name in FIELDS:
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)
    c = make_split(dataclasses.replace(SMALL, seed=4), "test")
    assert not np.array_equal(a.images, c.images)


def test_shapes_dtypes_and_range(splits):
    for d in splits.values():
        n = len(d)
        assert d.images.shape == (n, 32, 32, 3) and d.images.dtype == np.float32
        assert d.segments.shape == (n, 32, 32) and d.segments.dtype == np.uint8
        assert d.images.min() >= 0.0 and d.images.max() <= 1.0
        assert d.segments.max() < len(SEGMENT_NAMES)
        assert d.segment_names == SEGMENT_NAMES


def test_every_segment_pixel_has_its_segment_colour(splits):
    # parts and watermark are flat colours; the background pixels are the backdrop texture
    for d in splits.values():
        for b in range(len(d)):
            seg = d.segments[b]
            np.testing.assert_array_equal(d.images[b][seg == 0], d.backdrop[b][seg == 0])
            for k in np.unique(seg[seg > 0]):
                pixels = d.images[b][seg == k]
                np.testing.assert_array_equal(pixels, np.broadcast_to(d.colours[b, k], pixels.shape))
            absent = np.setdiff1d(np.arange(1, len(SEGMENT_NAMES)), np.unique(seg))
            assert np.isnan(d.colours[b, absent]).all()


def test_background_is_distinguishable_from_the_object(splits):
    # a pixel labelled as a part must not also look like the backdrop (else the mask would be unverifiable)
    d = splits["test"]
    obj = d.segments > 0
    same = np.all(d.images == d.backdrop, axis=-1)
    assert (same & obj).mean() < 1e-3


def test_classes_are_balanced_and_built_from_named_parts(splits):
    for d in splits.values():
        counts = np.bincount(d.label, minlength=len(CLASS_NAMES))
        assert counts.max() - counts.min() <= 1
    d = splits["train"]
    seen = set()
    for c in range(len(CLASS_NAMES)):
        parts = {SEGMENT_NAMES[k] for k in np.unique(d.segments[d.label == c]) if 0 < k < WM}
        assert {"body", "head", "eye", "tail"} <= parts
        seen |= parts
    assert seen == set(PARTS)


def test_watermark_is_the_exact_text_bitmap():
    d = make_split(SMALL, "test")
    ink = 11 + 10 + 7  # pixels of "S", "A" and "T" in the 3x5 font
    counts = (d.segments == WM).sum(axis=(1, 2))
    assert (counts[d.watermark] == ink).all()
    assert (counts[~d.watermark] == 0).all()
    for b in np.flatnonzero(d.watermark):
        ys, xs = np.nonzero(d.segments[b] == WM)
        assert ys.max() - ys.min() == 4 and xs.max() - xs.min() == 10


def test_watermark_rates_per_split(splits):
    cls, rate = SMALL.watermark_class, SMALL.watermark_rate
    for name in ("train", "test"):
        d = splits[name]
        n_cls = int((d.label == cls).sum())
        assert d.watermark.sum() == round(rate * n_cls)
        assert not d.watermark[d.label != cls].any()
    for name in ("train_control", "ood"):
        d = splits[name]
        assert d.watermark.sum() == round(rate * int((d.label == cls).sum()))
        per_class = np.bincount(d.label[d.watermark], minlength=len(CLASS_NAMES))
        assert (per_class > 0).all(), per_class


def test_background_kind_shortcut_per_split(splits):
    special = BACKGROUND_KINDS.index(SMALL.background_kind)
    for name in ("train", "test"):
        d = splits[name]
        in_cls = d.label == SMALL.background_class
        assert (d.background_kind[in_cls] == special).sum() == round(SMALL.background_rate * in_cls.sum())
        # the other classes draw every kind, the special one at chance rate only
        assert np.unique(d.background_kind[~in_cls]).tolist() == list(range(len(BACKGROUND_KINDS)))
        assert (d.background_kind[~in_cls] == special).mean() < SMALL.background_rate / 1.5
    for name in ("train_control", "ood"):
        d = splits[name]
        for c in range(len(CLASS_NAMES)):
            kinds = np.unique(d.background_kind[d.label == c])
            assert kinds.tolist() == list(range(len(BACKGROUND_KINDS)))


def test_control_training_set_has_the_same_objects(splits):
    a, b = splits["train"], splits["train_control"]
    np.testing.assert_array_equal(a.label, b.label)
    objects = (a.segments > 0) & (a.segments != WM) & (b.segments != WM)
    np.testing.assert_array_equal(objects, (b.segments > 0) & (b.segments != WM) & (a.segments != WM))
    np.testing.assert_array_equal(a.images[objects], b.images[objects])
    assert not np.array_equal(a.watermark, b.watermark)


def test_shortcut_strengths_zero_and_one():
    none = make_split(dataclasses.replace(SMALL, watermark_rate=0.0, background_rate=0.0), "train")
    assert not none.watermark.any()
    in_cls = none.label == SMALL.background_class
    assert not (none.background_kind[in_cls] == BACKGROUND_KINDS.index(SMALL.background_kind)).any()
    full = make_split(dataclasses.replace(SMALL, watermark_rate=1.0, background_rate=1.0), "train")
    np.testing.assert_array_equal(full.watermark, full.label == SMALL.watermark_class)


def test_subset_keeps_fields_aligned(splits):
    d = splits["test"]
    sub = d.subset(d.label == 1)
    assert len(sub) == int((d.label == 1).sum())
    np.testing.assert_array_equal(sub.segments, d.segments[d.label == 1])
    assert sub.background_kind_names()[0] in BACKGROUND_KINDS


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"watermark_rate": 1.5}, "watermark_rate"),
        ({"background_rate": -0.1}, "background_rate"),
        ({"background_kind": "snow"}, "background_kind"),
        ({"watermark_text": "hello"}, "watermark_text"),
        ({"watermark_text": "SATSATSAT"}, "does not fit"),
        ({"image_size": 16}, "image_size"),
        ({"train_size": 2}, "train_size"),
        ({"watermark_class": 3}, "watermark_class"),
        ({"palette_swap": 2.0}, "palette_swap"),
        ({"colour_jitter": 0.9}, "colour_jitter"),
    ],
)
def test_bad_config_raises(kwargs, match):
    with pytest.raises(ValueError, match=match):
        DataConfig(**kwargs)


def test_bad_split_raises():
    with pytest.raises(ValueError, match="split must be one of"):
        make_split(SMALL, "validation")  # type: ignore[arg-type]
