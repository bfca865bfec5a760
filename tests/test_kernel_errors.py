"""The compiled kernels raise KernelInputError with structured attributes (issue 9)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from sat_fast import _core
from sat_fast._errors import KernelInputError


def test_bad_label_is_located():
    sal = np.zeros((2, 3, 4), np.float32)
    lab = np.zeros((2, 3, 4), np.uint8)
    lab[1, 2, 3] = 7
    with pytest.raises(KernelInputError) as info:
        _core.reduce_labels(sal, lab, 3)
    err = info.value
    assert isinstance(err, ValueError)
    assert (err.kind, err.image, err.pixel, err.value) == ("label", 1, (2, 3), 7)
    assert isinstance(err.value, int)
    assert str(err) == "label 7 at image 1, pixel (2, 3) is outside [0, 3) and is not ignore_index"


def test_first_bad_label_wins_across_chunks_and_threads():
    h, w = 300, 300  # more than one chunk per image
    assert h * w > _core.CHUNK_PIXELS
    sal = np.zeros((3, h, w), np.float32)
    lab = np.zeros((3, h, w), np.int32)
    lab[2, 10, 10] = -1
    lab[1, 299, 299] = 5
    lab[1, 250, 7] = 9
    for threads in (1, 2, 5):
        with pytest.raises(KernelInputError) as info:
            _core.reduce_labels(sal, lab, 4, threads=threads)
        assert (info.value.kind, info.value.image, info.value.pixel, info.value.value) == ("label", 1, (250, 7), 9)


@pytest.mark.parametrize("kind", ["labels", "masks"])
def test_nan_pixel_is_located(kind):
    sal = np.zeros((2, 4, 5), np.float64)
    sal[1, 3, 4] = np.nan
    with pytest.raises(KernelInputError) as info:
        if kind == "labels":
            _core.reduce_labels(sal, np.zeros((2, 4, 5), np.uint8), 1)
        else:
            words, bounds = _core.pack_masks(np.ones((2, 1, 4, 5), bool))
            _core.reduce_masks(sal, words, bounds, 1)
    err = info.value
    assert (err.kind, err.image, err.pixel) == ("nonfinite", 1, (3, 4))
    assert isinstance(err.value, float) and math.isnan(err.value)
    assert str(err).startswith("saliency has a non-finite value (nan) at image 1, pixel (3, 4)")


def test_infinite_pixel_in_rle_is_located():
    maps = [np.zeros((4, 5), np.float32), np.zeros((4, 5), np.float32)]
    maps[1][2, 1] = -np.inf
    counts = np.array([0, 20, 0, 20], np.uint32)
    with pytest.raises(KernelInputError) as info:
        _core.reduce_rle(maps, np.array([0, 1, 2]), np.array([0, 1, 2]), np.array([0, 2, 4]), counts)
    err = info.value
    assert (err.kind, err.image, err.pixel, err.value) == ("nonfinite", 1, (2, 1), -math.inf)


def test_bad_rle_counts_are_located():
    maps = [np.zeros((4, 5), np.float32), np.zeros((4, 5), np.float32)]
    counts = np.array([0, 20, 3, 4, 12], np.uint32)  # the second instance sums to 19, not 20
    with pytest.raises(KernelInputError) as info:
        _core.reduce_rle(maps, np.array([0, 1, 2]), np.array([0, 1, 2]), np.array([0, 2, 5]), counts)
    err = info.value
    assert (err.kind, err.image, err.pixel, err.value) == ("rle", 1, None, 19)
    assert str(err) == "RLE counts of instance 1 (image 1) sum to 19, expected H*W = 4*5 = 20"


def test_refused_input_is_kind_input():
    with pytest.raises(KernelInputError) as info:
        _core.rle_from_strings(["o"])
    assert (info.value.kind, info.value.image, info.value.pixel, info.value.value) == ("input", None, None, None)
    assert str(info.value).startswith("malformed COCO RLE string 0 at byte")
    with pytest.raises(KernelInputError) as info:
        _core.reduce_labels(np.zeros((1, 2, 2), np.float32), np.zeros((1, 2, 3), np.uint8), 1)
    assert info.value.kind == "input"
    with pytest.raises(TypeError):  # dtypes stay TypeErrors
        _core.reduce_labels(np.zeros((1, 2, 2), np.float16), np.zeros((1, 2, 2), np.uint8), 1)
