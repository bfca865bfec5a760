"""Alignment transforms: images and masks keep the same geometry."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sat_fast import segment_table
from sat_fast.segments import Segments, from_label_map, from_masks, rle_encode
from sat_fast.transforms import CenterCrop, Compose, Pad, Resize, ResizeShorter, resize_saliency


def marker(h: int, w: int, r: int, c: int) -> np.ndarray:
    m = np.zeros((h, w), bool)
    m[r, c] = True
    return m


PIPELINES = [
    Compose([ResizeShorter(60), CenterCrop(50)]),
    Compose([Resize((45, 81)), Pad(top=3, bottom=1, left=2, right=5)]),
    Compose([CenterCrop((20, 30)), Resize(64)]),
]


@pytest.mark.parametrize("pipeline", PIPELINES, ids=repr)
@pytest.mark.parametrize("where", [(0, 0), (7, 11), (29, 39), (15, 20)])
def test_one_pixel_marker_lands_in_the_same_place(pipeline, where):
    h, w = 30, 40
    r, c = where
    image = np.zeros((h, w, 3), np.uint8)
    image[r, c] = 255
    mask = marker(h, w, r, c)
    out_mask = pipeline.mask(mask)
    out_nearest = pipeline.image(image, interpolation="nearest")
    assert out_mask.shape == out_nearest.shape[:2] == pipeline.output_size(h, w)
    np.testing.assert_array_equal(out_nearest[..., 0] == 255, out_mask)
    if out_mask.any():
        # Bilinear spreads the marker, but its peak stays inside the mask's copy.
        smooth = pipeline.image(image.astype(np.float32))[..., 0]
        assert out_mask[np.unravel_index(np.argmax(smooth), smooth.shape)]
    # Segments of every kind move the same way.
    names = ["dot"]
    for seg in (
        from_label_map(np.where(mask, 0, 1).astype(np.uint8), ["dot", "rest"])[0],
        from_masks([{"dot": mask}])[0],
        Segments.from_rle(names, [[rle_encode(mask)]], h, w, image_id=0),
    ):
        moved = pipeline.segments(seg)
        assert moved.kind == seg.kind and moved.shape == out_mask.shape
        np.testing.assert_array_equal(moved.masks()[0], out_mask)


def test_padding_is_no_segment_in_label_maps():
    seg = from_label_map(np.zeros((2, 2), np.uint8), ["a"])[0]
    moved = Pad(top=1, right=1).segments(seg)
    assert moved.shape == (3, 3)
    np.testing.assert_array_equal(moved.masks()[0], np.array([[0, 0, 0], [1, 1, 0], [1, 1, 0]], bool))
    t = segment_table(np.ones((1, 3, 3)), segments=[moved], unassigned="pad")
    assert dict(zip(t["segment"].cast(str), t["pixels"], strict=True)) == {"a": 4, "pad": 5}


def test_sizes_follow_torchvision():
    assert ResizeShorter(256).output_size(480, 640) == (256, 341)
    assert ResizeShorter(256).output_size(640, 480) == (341, 256)
    assert Compose([ResizeShorter(256), CenterCrop(224)]).output_size(375, 500) == (224, 224)
    image = np.arange(10 * 12).reshape(10, 12)
    np.testing.assert_array_equal(CenterCrop((4, 5)).image(image), image[3:7, 4:9])
    np.testing.assert_array_equal(CenterCrop((5, 4)).image(image), image[2:7, 4:8])


def reference_bilinear(x: np.ndarray, h: int, w: int) -> np.ndarray:
    """Pixel by pixel, half-pixel centres, edges clamped (torch align_corners=False)."""
    n_h, n_w = x.shape
    out = np.zeros((h, w))
    for i in range(h):
        for j in range(w):
            sy = min(max((i + 0.5) * n_h / h - 0.5, 0), n_h - 1)
            sx = min(max((j + 0.5) * n_w / w - 0.5, 0), n_w - 1)
            y0, x0 = int(sy), int(sx)
            y1, x1 = min(y0 + 1, n_h - 1), min(x0 + 1, n_w - 1)
            fy, fx = sy - y0, sx - x0
            out[i, j] = (1 - fy) * ((1 - fx) * x[y0, x0] + fx * x[y0, x1]) + fy * (
                (1 - fx) * x[y1, x0] + fx * x[y1, x1]
            )
    return out


@pytest.mark.parametrize("size", [(7, 9), (14, 3), (2, 2), (5, 5)])
def test_resize_saliency_is_bilinear(size):
    x = np.random.default_rng(0).standard_normal((5, 6))
    np.testing.assert_allclose(resize_saliency(x, size), reference_bilinear(x, *size), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(Resize(size).image(x), reference_bilinear(x, *size), rtol=1e-12, atol=1e-12)
    batch = resize_saliency(np.stack([x, 2 * x]).astype(np.float32), size)
    assert batch.dtype == np.float32 and batch.shape == (2, *size)
    np.testing.assert_allclose(batch[1], 2 * reference_bilinear(x, *size), rtol=1e-5, atol=1e-5)


@settings(max_examples=30, deadline=None)
@given(
    h=st.integers(1, 20),
    w=st.integers(1, 20),
    oh=st.integers(1, 50),
    ow=st.integers(1, 50),
    seed=st.integers(0, 2**32 - 1),
)
def test_preserve_total_keeps_every_map_sum(h, w, oh, ow, seed):
    x = np.random.default_rng(seed).standard_normal((2, h, w))
    out = resize_saliency(x, (oh, ow), preserve_total=True)
    np.testing.assert_allclose(out.sum(axis=(1, 2)), x.sum(axis=(1, 2)), rtol=1e-10, atol=1e-10)
    # a non-negative map stays non-negative: attribution is moved, never invented
    assert (resize_saliency(np.abs(x), (oh, ow), preserve_total=True) >= 0).all()


def test_resized_saliency_lines_up_with_masks():
    mask = np.zeros((40, 60), bool)
    mask[10:20, 30:50] = True
    seg = from_masks([{"box": mask}])[0]
    small = np.zeros((20, 30))
    small[5:10, 15:25] = 1.0
    big = resize_saliency(small, seg.shape, preserve_total=True)
    t = segment_table([big], segments=[seg], unassigned="rest")
    share = dict(zip(t["segment"].cast(str), t["share"], strict=True))
    assert share["box"] > 0.8
    assert abs(t["sum"].sum() - small.sum()) < 1e-9


def test_shape_errors_name_both_shapes():
    with pytest.raises(ValueError, match=r"cannot centre-crop \(50, 50\) from an image of shape \(30, 40\)"):
        CenterCrop(50).image(np.zeros((30, 40)))
    with pytest.raises(ValueError, match=r"saliency must be \(H, W\) or \(B, H, W\), got \(1, 2, 3, 4\)"):
        resize_saliency(np.zeros((1, 2, 3, 4)), 5)
    with pytest.raises(ValueError, match=r"image must be \(H, W\) or \(H, W, C\), got \(5,\)"):
        Resize(3).image(np.zeros(5))
    with pytest.raises(TypeError, match="saliency must be a floating-point array"):
        resize_saliency(np.zeros((3, 3), np.int32), 5)
    with pytest.raises(ValueError, match="size must be positive"):
        Resize((0, 3))


@settings(max_examples=40, deadline=None)
@given(
    h=st.integers(2, 40),
    w=st.integers(2, 40),
    side=st.integers(1, 50),
    crop=st.floats(0.3, 1.0),
    pad=st.tuples(*[st.integers(0, 3)] * 4),
    out=st.tuples(st.integers(1, 60), st.integers(1, 60)),
    data=st.data(),
)
def test_property_images_and_segments_share_the_geometry(h, w, side, crop, pad, out, data):
    r, c = data.draw(st.integers(0, h - 1)), data.draw(st.integers(0, w - 1))
    first = ResizeShorter(side)
    mid_h, mid_w = first.output_size(h, w)
    pipeline = Compose(
        [
            first,
            CenterCrop((max(1, int(mid_h * crop)), max(1, int(mid_w * crop)))),
            Pad(top=pad[0], bottom=pad[1], left=pad[2], right=pad[3]),
            Resize(out),
        ]
    )
    image = np.zeros((h, w), np.int32)
    image[r, c] = 7
    mask = image == 7
    moved_image = pipeline.image(image, interpolation="nearest")
    moved_mask = pipeline.mask(mask)
    assert moved_mask.shape == moved_image.shape == pipeline.output_size(h, w) == out
    np.testing.assert_array_equal(moved_image == 7, moved_mask)
    seg = Segments.from_rle(["dot"], [[rle_encode(mask)]], h, w, image_id=0)
    np.testing.assert_array_equal(pipeline.segments(seg).masks()[0], moved_mask)


# --- saliency_to_source: the inverse for saliency maps, with a coverage mask (issue 10) ---

README_PIPELINE = Compose([ResizeShorter(256), CenterCrop(224)])


def _crop_region(h: int, w: int) -> np.ndarray:
    """Source pixels whose centres map into the 224 crop of ResizeShorter(256) -> CenterCrop(224), by hand."""
    rh, rw = (int(256 * h / w), 256) if h > w else (256, int(256 * w / h))
    top, left = round((rh - 224) / 2), round((rw - 224) / 2)
    ys = (np.arange(h) + 0.5) * rh / h
    xs = (np.arange(w) + 0.5) * rw / w
    rows = (ys >= top) & (ys < top + 224)
    cols = (xs >= left) & (xs < left + 224)
    return rows[:, None] & cols[None, :]


@pytest.mark.parametrize("preserve_total", [False, True])
def test_readme_pipeline_maps_saliency_back_into_the_crop_only(preserve_total):
    rng = np.random.default_rng(0)
    sal = rng.random((2, 224, 224)).astype(np.float32) + 0.5
    back, cov = README_PIPELINE.saliency_to_source(sal, (300, 200), preserve_total=preserve_total)
    assert back.shape == cov.shape == (2, 300, 200) and back.dtype == np.float32 and cov.dtype == np.bool_
    region = _crop_region(300, 200)
    assert 0 < region.sum() < 300 * 200
    np.testing.assert_array_equal(cov, np.broadcast_to(region, cov.shape))
    assert np.all(back[~cov] == 0)  # no mass outside the crop
    assert np.all(back[cov] > 0)  # every covered pixel carries interpolated saliency (all inputs >= 0.5)
    if preserve_total:
        np.testing.assert_allclose(back.sum(axis=(1, 2)), sal.astype(np.float64).sum(axis=(1, 2)), rtol=1e-5)


def test_resize_back_without_crop_equals_resize_saliency():
    sal = np.random.default_rng(1).standard_normal((3, 24, 24))
    for preserve_total in (False, True):
        back, cov = Resize(24).saliency_to_source(sal, (30, 17), preserve_total=preserve_total)
        assert cov.all()
        np.testing.assert_allclose(back, resize_saliency(sal, (30, 17), preserve_total=preserve_total), atol=1e-12)


def test_pad_inverse_drops_the_pad_exactly():
    pad = Pad(top=2, bottom=1, left=3, right=4)
    sal = np.random.default_rng(2).standard_normal((5 + 3, 6 + 7))
    back, cov = pad.saliency_to_source(sal, (5, 6))
    assert cov.all()
    np.testing.assert_array_equal(back, sal[2:7, 3:9])


def test_center_crop_inverse_places_the_map_and_nothing_else():
    sal = np.arange(1.0, 7.0).reshape(2, 3)
    back, cov = CenterCrop((2, 3)).saliency_to_source(sal, (4, 6))
    top, left = round((4 - 2) / 2), round((6 - 3) / 2)
    expected = np.zeros((4, 6))
    expected[top : top + 2, left : left + 3] = sal
    np.testing.assert_array_equal(back, expected)
    np.testing.assert_array_equal(cov, expected != 0)


def test_composition_inverts_in_reverse_order_and_ands_coverage():
    t = Compose([Pad(top=4, left=4), CenterCrop(10)])  # crop of the padded 14x14: rows/cols 2..11 in it
    sal = np.ones((10, 10))
    back, cov = t.saliency_to_source(sal, (10, 10))
    # padded frame rows 2..11 -> source rows -2..7: source rows 0..7 and cols 0..7 covered
    expected = np.zeros((10, 10), bool)
    expected[:8, :8] = True
    np.testing.assert_array_equal(cov, expected)
    np.testing.assert_array_equal(back, expected.astype(float))


def test_saliency_to_source_checks_the_shape():
    with pytest.raises(ValueError, match=r"\(224, 224\)"):
        README_PIPELINE.saliency_to_source(np.zeros((200, 200), np.float32), (300, 200))
    with pytest.raises(TypeError, match="floating"):
        README_PIPELINE.saliency_to_source(np.zeros((224, 224), np.int32), (300, 200))
