"""Regressions of issue 11 (the kernel half): every test here failed on the kernels before the fix."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import textwrap

import numpy as np
import pytest
from sat_reference import encode_rle_string

import sat_fast
from sat_fast import _core, _validate
from sat_fast._errors import KernelInputError
from sat_fast.segments import Segments, rle_encode


def run_python(code: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Runs `code` in a fresh interpreter outside the source tree (so the installed package is imported)."""
    full_env = {**os.environ, **(env or {})}
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        env=full_env,
        cwd=tempfile.gettempdir(),  # not the source tree, which would shadow the installed package
        timeout=300,
        check=False,
    )


# 1. A label equal to num_segments on a noisy label map (the per-pixel "lanes" path).

NOISY_K_LABEL = """
import numpy as np, sat_fast
from sat_fast import _core
from sat_fast._errors import KernelInputError
lab = np.random.default_rng(0).integers(0, 4, (1, 64, 64)).astype(np.uint8)
first = np.argwhere(lab[0] == 3)[0]
for dtype in (np.float32, np.float64):
    for kwargs in ({}, {"ignore_index": 200}):
        try:
            sat_fast.segment_stats(np.ones((1, 64, 64), dtype), lab, num_segments=3, include_unassigned=True, **kwargs)
        except KernelInputError as e:
            assert (e.kind, e.image, e.pixel, e.value) == ("label", 0, tuple(first), 3), e
        else:
            raise SystemExit("label 3 with num_segments=3 was accepted")
print(_core.kernel_variant())
"""


@pytest.mark.parametrize("variant", ["dispatched", "generic"])
def test_label_equal_to_num_segments_raises_on_noisy_labels(variant):
    env = {"SAT_FAST_KERNEL": "generic"} if variant == "generic" else {"SAT_FAST_KERNEL": ""}
    proc = run_python(NOISY_K_LABEL, env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    if variant == "generic":
        assert proc.stdout.strip() == "generic"


@pytest.mark.parametrize("k", [1, 2, 3, 16, 200])
@pytest.mark.parametrize("ltype", [np.uint8, np.uint16, np.int32])
def test_label_k_raises_in_every_label_path(k, ltype):
    """Noisy (lanes), run-structured (runs) labels: a pixel labelled K is refused, ignore_index or not."""
    rng = np.random.default_rng(k)
    noisy = rng.integers(0, k, (2, 40, 50)).astype(ltype)
    runs = np.sort(noisy.reshape(2, -1), axis=1).reshape(2, 40, 50)
    for lab in (noisy, runs):
        lab = lab.copy()
        lab[1, 30, 7] = k
        for ignore in (None, 250):
            with pytest.raises(KernelInputError) as info:
                _core.reduce_labels(np.ones((2, 40, 50), np.float32), lab, k, ignore_index=ignore)
            assert (info.value.kind, info.value.image, info.value.pixel, info.value.value) == ("label", 1, (30, 7), k)


def test_ignore_index_equal_to_k_still_goes_to_the_unassigned_slot():
    lab = np.random.default_rng(0).integers(0, 4, (1, 64, 64)).astype(np.uint8)
    st = sat_fast.segment_stats(np.ones((1, 64, 64), np.float32), lab, num_segments=3, ignore_index=3,
                                include_unassigned=True)  # fmt: skip
    assert st.unassigned is not None
    assert st.unassigned["count"].tolist() == [int((lab == 3).sum())]
    assert st["count"][0].tolist() == [int((lab == s).sum()) for s in range(3)]


# 2. RLE sums lose a segment's own values when larger values sit earlier in the same column.


def rle_vs_dense(x: np.ndarray, mask: np.ndarray) -> tuple[sat_fast.SegmentStats, sat_fast.SegmentStats]:
    seg = Segments.from_rle(["s"], [[rle_encode(mask)]], *mask.shape)
    rle = sat_fast.segment_stats([x], segments=[seg])
    dense = sat_fast.segment_stats(x[None], masks=mask[None, None])
    return rle, dense


@pytest.mark.parametrize(
    ("dtype", "big"),
    [(np.float32, 1e8), (np.float32, 1e20), (np.float32, -3e38), (np.float64, 1e200), (np.float64, -1e300)],
)
@pytest.mark.parametrize("where", ["above", "earlier_columns", "both"])
def test_rle_sums_do_not_cancel_against_larger_values_in_the_column(dtype, big, where):
    h, w = 64, 8
    x = np.ones((h, w), dtype)
    x[:, 1] = -2.0
    mask = np.zeros((h, w), bool)
    if where in ("above", "both"):
        x[:32, 0] = big  # above the segment, same column
        x[:32, 2] = big
        mask[32:, 0] = True  # a column piece
        mask[40:50, 2] = True
    if where in ("earlier_columns", "both"):
        x[:, 3] = big  # whole columns before the segment's whole columns
        mask[:, 4:6] = True
        mask[5:, 6] = True
        mask[:20, 7] = True
    rle, dense = rle_vs_dense(x, mask)
    ref = x[mask].astype(np.float64)
    expected = {"sum": ref.sum(), "pos_sum": np.maximum(ref, 0).sum(), "neg_sum": np.minimum(ref, 0).sum()}
    expected["sq_sum"] = (ref * ref).sum()
    for key, value in expected.items():
        # Only the segment's own pixels enter: the bound is relative to their own magnitude.
        tol = 1e-13 * np.abs(ref).sum() * (np.abs(ref).max() if key == "sq_sum" else 1.0)
        assert abs(rle[key][0, 0] - value) <= tol, (key, rle[key][0, 0], value)
        assert abs(dense[key][0, 0] - value) <= tol, (key, dense[key][0, 0], value)
    assert rle["count"][0, 0] == dense["count"][0, 0] == mask.sum()
    assert rle["min"][0, 0] == dense["min"][0, 0] and rle["max"][0, 0] == dense["max"][0, 0]


def test_rle_issue_examples():
    x = np.ones((64, 4), np.float32)
    x[:32] = 1e8
    mask = np.zeros((64, 4), bool)
    mask[32:, 0] = True
    rle, _ = rle_vs_dense(x, mask)
    assert rle["sq_sum"][0, 0] == 32.0
    x[:32] = 1e20
    rle, _ = rle_vs_dense(x, mask)
    assert rle["sum"][0, 0] == 32.0
    x64 = np.ones((64, 4), np.float64)
    x64[:32] = 1e200
    rle, _ = rle_vs_dense(x64, mask)
    assert rle["sq_sum"][0, 0] == 32.0


# 3. threads: an upper bound, and no allocation per requested thread.


@pytest.mark.parametrize("threads", [1025, 10**8, 2**31, 2**63])
def test_absurd_thread_counts_are_refused_with_a_reason(threads):
    with pytest.raises(ValueError, match=r"threads must be in \[1, 1024\], got \d+"):
        _validate.num_threads(threads)
    sal = np.ones((1, 4, 4), np.float32)
    with pytest.raises(ValueError, match=r"threads must be in \[1, 1024\]"):
        sat_fast.segment_stats(sal, np.zeros((1, 4, 4), np.uint8), threads=threads)
    # the bindings refuse them too (not pybind's "incompatible function arguments")
    with pytest.raises(KernelInputError, match=r"threads must be in \[1, 1024\]"):
        _core.reduce_labels(sal, np.zeros((1, 4, 4), np.uint8), 1, threads=threads)
    words, bounds = _core.pack_masks(np.ones((1, 1, 4, 4), bool))
    with pytest.raises(KernelInputError, match=r"threads must be in \[1, 1024\]"):
        _core.reduce_masks(sal, words, bounds, 1, threads=threads)
    with pytest.raises(KernelInputError, match=r"threads must be in \[1, 1024\]"):
        _core.pack_masks(np.ones((1, 1, 4, 4), bool), threads=threads)
    with pytest.raises(KernelInputError, match=r"threads must be in \[1, 1024\]"):
        _core.reduce_rle([sal[0]], np.array([0, 1]), np.array([0, 1]), np.array([0, 2]),
                         np.array([0, 16], np.uint32), threads=threads)  # fmt: skip


# Peak memory is checked under an address-space limit in a fresh interpreter:
# the limit is what the process uses after the imports plus `budget` MiB.
MEMORY_PROBE = """
import os, resource, sys
import numpy as np, sat_fast
from sat_fast import _core
def vm_bytes():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmSize:"):
                return int(line.split()[1]) * 1024
budget = int(sys.argv[1]) << 20
resource.setrlimit(resource.RLIMIT_AS, (vm_bytes() + budget, resource.RLIM_INFINITY))
{body}
print("ok")
"""


def run_under_memory_limit(body: str, budget_mib: int) -> subprocess.CompletedProcess[str]:
    code = textwrap.dedent(MEMORY_PROBE).replace("{body}", textwrap.dedent(body))
    full_env = {**os.environ, "MALLOC_ARENA_MAX": "1", "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [sys.executable, "-c", code, str(budget_mib)],
        capture_output=True,
        text=True,
        env=full_env,
        cwd=tempfile.gettempdir(),
        timeout=300,
        check=False,
    )


needs_rlimit = pytest.mark.skipif(
    not sys.platform.startswith("linux") or bool(os.environ.get("SAT_FAST_SANITIZERS")),
    reason="needs Linux's RLIMIT_AS and /proc, and no AddressSanitizer (it reserves terabytes of address space)",
)


@needs_rlimit
def test_many_threads_on_a_tiny_image_allocate_nothing_per_thread():
    proc = run_under_memory_limit(
        """
        sal = np.ones((1, 4, 4), np.float32)
        lab = np.zeros((1, 4, 4), np.uint8)
        st = sat_fast.segment_stats(sal, lab, threads=1024)
        assert st["count"].tolist() == [[16]]
        words, bounds = _core.pack_masks(np.ones((1, 1, 4, 4), bool), threads=1024)
        assert _core.reduce_masks(sal, words, bounds, 1, threads=1024)["count"].tolist() == [[16, 0]]
        """,
        budget_mib=200,
    )
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stdout + proc.stderr


# 4. Per-thread scratch is bounded by the work, not by K.


@needs_rlimit
def test_scratch_does_not_grow_with_num_segments():
    # Outputs: 2 images x (2**21 + 1) slots x 6 arrays x 8 bytes = 201 MB, which the caller asked for.
    # Scratch used to be 72 bytes per slot per thread (302 MB for two threads) on top.
    proc = run_under_memory_limit(
        """
        k = 1 << 21
        sal = np.arange(2 * 3 * 5, dtype=np.float32).reshape(2, 3, 5)
        lab = (np.arange(2 * 3 * 5, dtype=np.int32).reshape(2, 3, 5) * 69_997) % k
        out = _core.reduce_labels(sal, lab, k, threads=2)
        assert out["count"].sum() == 30
        flat = lab.reshape(2, -1)
        for b in range(2):
            for i, label in enumerate(flat[b]):
                assert out["pos_sum"][b, label] == sal.reshape(2, -1)[b, i]
        """,
        budget_mib=300,
    )
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stdout + proc.stderr


@pytest.mark.parametrize("stray", [2**20, 2**24 - 1, 2**30])
def test_num_segments_is_not_inferred_from_a_far_outlier(stray):
    sal = np.ones((2, 8, 8), np.float32)
    lab = np.random.default_rng(0).integers(0, 5, (2, 8, 8)).astype(np.int32)
    lab[1, 6, 2] = stray
    with pytest.raises(ValueError, match=rf"largest label is {stray} at image 1, pixel \(6, 2\).*pass num_segments"):
        sat_fast.segment_stats(sal, lab)


def test_num_segments_is_still_inferred_for_dense_or_small_vocabularies():
    sal = np.ones((1, 100, 100), np.float32)
    lab = (np.arange(10_000, dtype=np.int32) % 5000).reshape(1, 100, 100)  # 5000 ids, all present
    assert sat_fast.segment_stats(sal, lab).shape == (1, 5000)
    sparse = np.zeros((1, 4, 4), np.int32)
    sparse[0, 0, 0] = 4000  # few ids but a small K: accepted
    assert sat_fast.segment_stats(np.ones((1, 4, 4), np.float32), sparse).shape == (1, 4001)


def test_large_num_segments_reduce_exactly_with_bounded_scratch():
    """K above the direct-indexing limit: the compact map gives the same statistics as the reference."""
    rng = np.random.default_rng(5)
    k = 70_000
    sal = rng.standard_normal((2, 300, 301)).astype(np.float32)  # two chunks per image
    lab = rng.integers(0, k, (2, 300, 301)).astype(np.int32)
    lab[:, 100:200] = rng.integers(0, 40, (2, 1, 301))  # runs too
    lab[0, 5, 5] = k - 1
    out = [_core.reduce_labels(sal, lab, k, ignore_index=7, threads=t) for t in (1, 2, 3)]
    for o in out[1:]:
        for key in out[0]:
            np.testing.assert_array_equal(o[key], out[0][key], err_msg=key)
    flat_l = lab.reshape(2, -1).astype(np.int64)
    flat_x = sal.reshape(2, -1).astype(np.float64)
    for b in range(2):
        slots = np.where(flat_l[b] == 7, k, flat_l[b])
        count = np.bincount(slots, minlength=k + 1)
        np.testing.assert_array_equal(out[0]["count"][b], count)
        pos = np.bincount(slots, np.maximum(flat_x[b], 0), minlength=k + 1)
        np.testing.assert_allclose(out[0]["pos_sum"][b], pos, rtol=1e-12, atol=1e-12)
        mn = np.full(k + 1, np.inf)
        np.minimum.at(mn, slots, flat_x[b])
        np.testing.assert_array_equal(out[0]["min"][b], np.where(count > 0, mn, np.nan))


# 5. The COCO compressed-counts decoder: over-long counts.


@pytest.mark.parametrize("bad", ["ooooooooooooO", "PPPPPPP0", "PPPPPPPPPPPP0", "oooooooO", "ooooooO"])
def test_overlong_or_overflowing_rle_string_counts_are_refused(bad):
    with pytest.raises(KernelInputError, match=r"COCO RLE string 1\b") as info:
        _core.rle_from_strings(["1", "2" + bad])
    assert info.value.kind == "input"


def test_longest_valid_rle_string_counts_decode():
    # 2**32 - 1 needs 7 characters; so does the delta of a count whose predecessor but one is 2**32 - 1.
    counts = np.array([0, 2**32 - 1, 5, 1, 2**32 - 2, 0], np.uint32)
    enc = encode_rle_string(counts)
    got, offsets = _core.rle_from_strings([enc])
    np.testing.assert_array_equal(got, counts)
    assert offsets.tolist() == [0, 6]


VARIANT_SCRIPT = """
import sys, numpy as np
from sat_fast import _core
rng = np.random.default_rng(3)
sal = rng.standard_normal((2, 300, 301)).astype(np.float32)
sal[1, 7, 9] = np.nan
out = {}
for k in (5, 70_000):
    lab = rng.integers(0, k, (2, 300, 301)).astype(np.int32)
    lab[:, 100:200] = rng.integers(0, min(k, 40), (2, 1, 301))
    for skip in (False, True):
        try:
            res = _core.reduce_labels(sal, lab, k, ignore_index=3, skip_nonfinite=skip, threads=2)
        except ValueError as e:
            out[f"{k}_{skip}_error"] = np.array(str(e))
            continue
        for key, a in res.items():
            out[f"{k}_{skip}_{key}"] = a
np.savez(sys.argv[1], variant=np.array(_core.kernel_variant()), **out)
"""


@pytest.mark.skipif(
    _core.kernel_variant() == "generic",
    reason="the dispatched kernel is the portable one here (no AVX2, or SAT_FAST_KERNEL=generic): nothing to compare",
)
def test_kernel_variants_agree_bitwise_with_compact_scratch(tmp_path):
    """Noisy and run-structured labels with K beyond the direct-indexing limit, skip and raise: generic == AVX2."""
    results = {}
    for variant in ("generic", ""):
        path = tmp_path / f"{variant or 'dispatched'}.npz"
        proc = subprocess.run(
            [sys.executable, "-c", VARIANT_SCRIPT, str(path)],
            capture_output=True,
            text=True,
            env={**os.environ, "SAT_FAST_KERNEL": variant},
            cwd=tempfile.gettempdir(),
            timeout=300,
            check=False,
        )
        assert proc.returncode == 0, proc.stderr
        results[variant] = dict(np.load(path))
    assert str(results["generic"].pop("variant")) == "generic"
    assert str(results[""].pop("variant")) == "avx2"
    assert results["generic"].keys() == results[""].keys()
    assert any(key.startswith("70000_True_") for key in results[""])
    for key, a in results["generic"].items():
        np.testing.assert_array_equal(a, results[""][key], err_msg=key)
