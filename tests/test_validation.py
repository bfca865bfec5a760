"""Every bad input gets a clear exception that names the problem, never a crash."""

from __future__ import annotations

import numpy as np
import pytest

import sat_fast
from sat_fast import _core

SAL = np.zeros((2, 4, 5), np.float32)
LAB = np.zeros((2, 4, 5), np.uint8)


def test_shape_mismatch_names_both_shapes():
    with pytest.raises(ValueError, match=r"labels shape \(2, 4, 6\) does not match saliency shape \(2, 4, 5\)"):
        sat_fast.segment_stats(SAL, np.zeros((2, 4, 6), np.uint8), num_segments=2)
    with pytest.raises(ValueError, match=r"masks shape .* does not match saliency shape"):
        sat_fast.segment_stats(SAL, masks=np.zeros((2, 3, 4, 4), bool))
    with pytest.raises(ValueError, match="does not match saliency shape"):
        sat_fast.segment_stats(SAL, masks=sat_fast.pack_masks(np.zeros((1, 3, 4, 5), bool)))


@pytest.mark.parametrize("shape", [(4, 5), (2, 4, 5, 3), (20,)])
def test_saliency_rank(shape):
    with pytest.raises(ValueError, match=r"saliency must have shape \(B, H, W\)"):
        sat_fast.segment_stats(np.zeros(shape, np.float32), np.zeros(shape, np.uint8), num_segments=1)


def test_wrong_dtypes():
    with pytest.raises(TypeError, match="saliency must be a floating-point array, got dtype int32"):
        sat_fast.segment_stats(SAL.astype(np.int32), LAB, num_segments=1)
    with pytest.raises(TypeError, match=r"labels must be an integer array.*float32"):
        sat_fast.segment_stats(SAL, LAB.astype(np.float32), num_segments=1)
    with pytest.raises(TypeError, match=r"labels must be an integer array.*bool"):
        sat_fast.segment_stats(SAL, LAB.astype(bool), num_segments=1)
    with pytest.raises(TypeError, match="masks must be boolean, got dtype uint8"):
        sat_fast.segment_stats(SAL, masks=np.zeros((2, 3, 4, 5), np.uint8))
    with pytest.raises(TypeError, match="complex"):
        sat_fast.segment_stats(SAL.astype(np.complex64), LAB, num_segments=1)


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.int32])
def test_label_out_of_range_names_image_pixel_and_value(dtype):
    lab = LAB.astype(dtype).copy()
    lab[1, 2, 3] = 7
    with pytest.raises(ValueError, match=r"label 7 at image 1, pixel \(2, 3\) is outside \[0, 3\)"):
        sat_fast.segment_stats(SAL, lab, num_segments=3)


def test_negative_label_is_out_of_range():
    lab = LAB.astype(np.int32)
    lab[0, 0, 1] = -1
    with pytest.raises(ValueError, match=r"label -1 at image 0, pixel \(0, 1\)"):
        sat_fast.segment_stats(SAL, lab, num_segments=3)
    assert sat_fast.segment_stats(SAL, lab, num_segments=3, ignore_index=-1)["count"][0, 0] == 19


def test_out_of_range_in_the_per_pixel_path_and_in_later_chunks():
    rng = np.random.default_rng(0)
    sal = rng.standard_normal((2, 300, 300)).astype(np.float32)
    lab = rng.integers(0, 4, (2, 300, 300)).astype(np.uint8)  # noise: per-pixel path
    lab[1, 299, 298] = 200
    with pytest.raises(ValueError, match=r"label 200 at image 1, pixel \(299, 298\)"):
        sat_fast.segment_stats(sal, lab, num_segments=4, threads=2)


def test_huge_label_in_int64_does_not_wrap():
    lab = LAB.astype(np.int64)
    lab[1, 0, 0] = 2**32 + 1  # would wrap to 1 as int32
    with pytest.raises(ValueError, match="does not fit int32"):
        sat_fast.segment_stats(SAL, lab, num_segments=3)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_nonfinite_saliency_raises_by_default(bad):
    sal = SAL.copy()
    sal[1, 3, 4] = bad
    with pytest.raises(ValueError, match=r"non-finite value .* at image 1, pixel \(3, 4\).*nonfinite='skip'"):
        sat_fast.segment_stats(sal, LAB, num_segments=1)
    with pytest.raises(ValueError, match=r"non-finite value .* at image 1, pixel \(3, 4\)"):
        sat_fast.segment_stats(sal, masks=np.ones((2, 2, 4, 5), bool))


def test_nonfinite_mode_is_checked():
    with pytest.raises(ValueError, match="nonfinite must be one of 'raise', 'skip'; got 'ignore'"):
        sat_fast.segment_stats(SAL, LAB, num_segments=1, nonfinite="ignore")


@pytest.mark.parametrize("k", [0, -3, 2**24 + 1])
def test_num_segments_range(k):
    with pytest.raises(ValueError, match=r"num_segments must be in \[1, 2\*\*24\], got"):
        sat_fast.segment_stats(SAL, LAB, num_segments=k)
    with pytest.raises(ValueError, match=r"num_segments must be in \[1, 2\*\*24\]"):
        _core.reduce_labels(SAL, LAB, k)


def test_threads_must_be_positive():
    with pytest.raises(ValueError, match="threads must be at least 1, got 0"):
        sat_fast.segment_stats(SAL, LAB, num_segments=1, threads=0)
    with pytest.raises(TypeError, match="threads must be an int"):
        sat_fast.segment_stats(SAL, LAB, num_segments=1, threads=1.5)


def test_exactly_one_segment_source():
    with pytest.raises(ValueError, match="exactly one of label_map, masks and segments"):
        sat_fast.segment_stats(SAL)
    with pytest.raises(ValueError, match="exactly one of label_map, masks and segments"):
        sat_fast.segment_stats(SAL, LAB, masks=np.zeros((2, 1, 4, 5), bool))


def test_ignore_index_must_fit_label_dtype():
    with pytest.raises(ValueError, match="ignore_index -1 cannot occur in uint8 labels"):
        sat_fast.segment_stats(SAL, LAB, num_segments=2, ignore_index=-1)
    with pytest.raises(ValueError, match="ignore_index applies to label maps"):
        sat_fast.segment_stats(SAL, masks=np.zeros((2, 1, 4, 5), bool), ignore_index=0)


def test_names_checks():
    lab = LAB.copy()
    lab[0, 0, 0] = 2
    with pytest.raises(ValueError, match=r"label 2 .* outside \[0, 2\).*names has 2 entries"):
        sat_fast.segment_table(SAL, lab, names=["a", "b"])
    with pytest.raises(ValueError, match="names has 2 entries but there are 3 segments"):
        sat_fast.segment_table(SAL, masks=np.zeros((2, 3, 4, 5), bool), names=["a", "b"])
    with pytest.raises(ValueError, match="duplicate segment name 'a' at positions 0 and 2"):
        sat_fast.segment_table(SAL, LAB, names=["a", "b", "a"])
    with pytest.raises(TypeError, match="names must be a sequence of strings"):
        sat_fast.segment_table(SAL, LAB, names="ab")
    with pytest.raises(TypeError, match=r"names\[1\] must be a string"):
        sat_fast.segment_table(SAL, LAB, names=["a", 3])


def test_table_argument_checks():
    with pytest.raises(ValueError, match="image_ids has 3 entries but the batch has 2 images"):
        sat_fast.segment_table(SAL, LAB, names=["a"], image_ids=[1, 2, 3])
    with pytest.raises(ValueError, match="image_ids must be unique; 'x' appears more than once"):
        sat_fast.segment_table(SAL, LAB, names=["a"], image_ids=["x", "x"])
    with pytest.raises(ValueError, match=r"targets must have one value per image \(2\)"):
        sat_fast.segment_table(SAL, LAB, names=["a"], targets=[1, 2, 3])
    with pytest.raises(TypeError, match="targets must be integers"):
        sat_fast.segment_table(SAL, LAB, names=["a"], targets=[0.5, 1.5])
    with pytest.raises(ValueError, match="metadata column 'mean' clashes"):
        sat_fast.segment_table(SAL, LAB, names=["a"], metadata={"mean": 1})
    with pytest.raises(ValueError, match="unassigned name 'a' is already a segment name"):
        sat_fast.segment_table(SAL, LAB, names=["a"], unassigned="a")


def test_core_rejects_what_python_would_convert():
    with pytest.raises(ValueError, match="C-contiguous"):
        _core.reduce_labels(np.asfortranarray(np.zeros((2, 3, 4), np.float32)), np.zeros((2, 3, 4), np.uint8), 1)
    with pytest.raises(TypeError, match="labels must be uint8, uint16 or int32"):
        _core.reduce_labels(np.zeros((2, 3, 4), np.float32), np.zeros((2, 3, 4), np.int64), 1)
    with pytest.raises(ValueError, match="packed masks shape"):
        _core.reduce_masks(
            np.zeros((2, 3, 4), np.float32), np.zeros((2, 1, 2), np.uint64), np.zeros((2, 1, 2), np.int64), 1
        )
    with pytest.raises(ValueError, match="mask bounds must be int64"):
        _core.reduce_masks(
            np.zeros((2, 3, 4), np.float32), np.zeros((2, 1, 1), np.uint64), np.zeros((2, 1), np.int64), 1
        )


def test_packed_masks_with_stray_padding_bits_stay_in_bounds():
    packed = sat_fast.pack_masks(np.zeros((1, 1, 3, 3), bool))
    words = packed.words.copy()
    words[:] = np.uint64(2**64 - 1)  # bits past the 9th pixel are set too
    got = sat_fast.segment_stats(np.ones((1, 3, 3), np.float32), masks=sat_fast.PackedMasks(words, 3, 3))
    assert got["count"].tolist() == [[9]]
    # bounds past the end of the mask are clamped, never followed
    wild = sat_fast.PackedMasks(words, 3, 3, np.array([[[-5, 99]]], np.int64))
    assert sat_fast.segment_stats(np.ones((1, 3, 3), np.float32), masks=wild)["count"].tolist() == [[9]]
    with pytest.raises(ValueError, match="words per mask"):
        sat_fast.PackedMasks(np.zeros((1, 1, 5), np.uint64), 3, 3)


def test_long_double_saliency_widens_to_float64():
    sal = np.zeros((1, 2, 3), np.longdouble)
    sal[0, 0, 0] = 1e300
    got = sat_fast.segment_stats(sal, np.zeros((1, 2, 3), np.uint8), num_segments=1)
    assert got["max"][0, 0] == 1e300 and got["sum"][0, 0] == 1e300
    if np.finfo(np.longdouble).max > np.finfo(np.float64).max:  # x86: 80-bit long double
        sal[0, 1, 2] = np.longdouble(1e300) * np.longdouble(1e100)
        with pytest.raises(ValueError, match=r"saliency value .* at image 0, pixel \(1, 2\) is beyond float64"):
            sat_fast.segment_stats(sal, np.zeros((1, 2, 3), np.uint8), num_segments=1)


def test_packed_masks_are_immutable():
    masks = np.zeros((1, 2, 4, 4), bool)
    masks[0, 0, 0, 0] = True
    packed = sat_fast.pack_masks(masks)
    for array in (packed.words, packed.bounds):
        assert not array.flags.writeable
        with pytest.raises(ValueError, match="read-only"):
            array[...] = 1
    # the caller's arrays are copied, not frozen under them, and later edits do not reach the masks
    words = np.zeros((1, 1, 1), np.uint64)
    words[0, 0, 0] = 1
    mine = sat_fast.PackedMasks(words, 4, 4)
    assert words.flags.writeable and not mine.words.flags.writeable
    words[0, 0, 0] = 0
    assert mine.unpack()[0, 0, 0, 0]
    sal = np.ones((1, 4, 4), np.float32)
    assert sat_fast.segment_stats(sal, masks=mine)["count"][0, 0] == 1
    # a read-only view of a writable array is copied too
    base = np.zeros((1, 1, 1), np.uint64)
    view = base.view()
    view.flags.writeable = False
    frozen = sat_fast.PackedMasks(view, 4, 4)
    base[0, 0, 0] = 1
    assert not frozen.unpack().any()
    with pytest.raises(ValueError, match="read-only"):
        packed[0].words[...] = 1
