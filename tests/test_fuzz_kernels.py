"""Property-based fuzzing of every kernel entry point against independent float64 numpy references (issue 11).

Entry points: label maps, packed masks (``masks=`` with boolean masks and with
:class:`PackedMasks`), ``pack_masks``, RLE through ``segment_stats(segments=...)``
with ``Segments.from_rle``, and ``_core.rle_from_strings``. Inputs cover H or
W = 1, images of 65535/65536/65537 pixels (the chunk edge), K up to 70,000
(beyond the kernels' direct-indexing limit), values from 1e-30 to 1e30 in one
image, NaN/inf under ``nonfinite="raise"`` and ``"skip"``, noisy and
run-structured labels, labels equal to K (must raise), ignore_index and K-1.

Tolerance of the sums. pos_sum, neg_sum and sq_sum each add n terms of one
sign, and the terms are identical on both sides (x*x of a float32 is exact in
float64; of a float64 both sides round the same product). Recursive summation
of n same-sign terms in any order is within (n-1)*u*sum|terms| of the exact
sum (u = 2**-53), so two orders differ by at most 2*(n-1)*u*sum|terms|: that
bound, with n the segment's pixel count, is the tolerance, and it cannot fail
on a correct kernel whatever the summation order. ``sum`` and ``abs_sum`` add
pos and neg once more (one more rounding of their own size). The old RLE bug
(prefix-sum differences) broke this bound by up to 100% of the value, since
its error scaled with values outside the segment. Counts, min and max must
match exactly.
"""

from __future__ import annotations

import os

import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from sat_reference import encode_rle_string

import sat_fast
from sat_fast import _core
from sat_fast._errors import KernelInputError
from sat_fast.segments import Segments

U = 2.0**-53
SETTINGS = {
    "deadline": None,  # sanitizer builds and a busy machine are slow; the bound is max_examples
    "suppress_health_check": [HealthCheck.too_slow, HealthCheck.data_too_large],
    "derandomize": bool(os.environ.get("SAT_FAST_SANITIZERS")),
}

# (H, W): lines, tiny, odd, and the chunk edge (65536 pixels per chunk).
SHAPES = [(1, 1), (1, 7), (9, 1), (1, 300), (300, 1), (5, 13), (16, 16), (17, 33), (40, 37)]
EDGE_SHAPES = [(255, 257), (256, 256), (1, 65537), (65537, 1), (131, 501)]  # 65535, 65536, 65537 pixels


# ----------------------------------------------------------------------------- references


def reference(x: np.ndarray, slots: np.ndarray, n_slots: int, skip: bool) -> dict[str, np.ndarray]:
    """Per-(image, slot) float64 statistics by bincount; slots[b, i] in [0, n_slots) or -1 (no slot)."""
    b = x.shape[0]
    flat_x = x.reshape(b, -1).astype(np.float64)
    flat_s = slots.reshape(b, -1)
    out = {
        "count": np.zeros((b, n_slots), np.int64),
        "pos_sum": np.zeros((b, n_slots)),
        "neg_sum": np.zeros((b, n_slots)),
        "sq_sum": np.zeros((b, n_slots)),
        "abs_terms": np.zeros((b, n_slots)),  # sum |x|, for the tolerance
        "sq_terms": np.zeros((b, n_slots)),
        "min": np.full((b, n_slots), np.nan),
        "max": np.full((b, n_slots), np.nan),
        "total_sum": np.zeros(b),
        "total_abs": np.zeros(b),
        "nonfinite": np.zeros(b, np.int64),
    }
    for i in range(b):
        v, s = flat_x[i], flat_s[i]
        finite = np.isfinite(v)
        out["nonfinite"][i] = (~finite).sum() if skip else 0
        out["total_sum"][i] = v[finite].sum()
        out["total_abs"][i] = np.abs(v[finite]).sum()
        keep = (s >= 0) & finite if skip else s >= 0
        v, s = v[keep], s[keep]
        out["count"][i] = np.bincount(s, minlength=n_slots)
        out["pos_sum"][i] = np.bincount(s, np.maximum(v, 0), minlength=n_slots)
        out["neg_sum"][i] = np.bincount(s, np.minimum(v, 0), minlength=n_slots)
        out["sq_sum"][i] = np.bincount(s, v * v, minlength=n_slots)
        out["abs_terms"][i] = np.bincount(s, np.abs(v), minlength=n_slots)
        mn = np.full(n_slots, np.inf)
        mx = np.full(n_slots, -np.inf)
        np.minimum.at(mn, s, v)
        np.maximum.at(mx, s, v)
        has = out["count"][i] > 0
        out["min"][i] = np.where(has, mn, np.nan)
        out["max"][i] = np.where(has, mx, np.nan)
    return out


def assert_matches(got, ref: dict[str, np.ndarray], cols: slice | np.ndarray = slice(None)) -> None:
    """got[key][..., cols] against ref: counts/min/max exactly, sums within the summation-order bound."""
    n = ref["count"]
    np.testing.assert_array_equal(np.asarray(got["count"]), n, err_msg="count")
    np.testing.assert_array_equal(np.asarray(got["min"]), ref["min"], err_msg="min")
    np.testing.assert_array_equal(np.asarray(got["max"]), ref["max"], err_msg="max")
    gamma = 2.0 * np.maximum(n - 1, 0) * U
    sq_terms = ref["sq_sum"]  # all terms >= 0: the sum is its own magnitude
    checks = {
        "pos_sum": (ref["pos_sum"], gamma * ref["pos_sum"]),
        "neg_sum": (ref["neg_sum"], gamma * -ref["neg_sum"]),
        "sq_sum": (ref["sq_sum"], gamma * sq_terms),
        "sum": (ref["pos_sum"] + ref["neg_sum"], (gamma + 2 * U) * ref["abs_terms"]),
        "abs_sum": (ref["pos_sum"] - ref["neg_sum"], (gamma + 2 * U) * ref["abs_terms"]),
    }
    for key, (want, tol) in checks.items():
        if key not in got:
            continue
        g = np.asarray(got[key], np.float64)
        bad = ~(np.abs(g - want) <= tol * (1 + 1e-9) + 1e-300)
        assert not bad.any(), (key, g[bad][:5], want[bad][:5], tol[bad][:5])


def first_nonfinite(x: np.ndarray) -> tuple[int, int, int] | None:
    bad = np.argwhere(~np.isfinite(x))
    return None if bad.size == 0 else tuple(int(i) for i in bad[0])  # type: ignore[return-value]


# ----------------------------------------------------------------------------- inputs


@st.composite
def saliency_maps(draw, b: int, h: int, w: int, rng: np.random.Generator):
    dtype = draw(st.sampled_from([np.float32, np.float64]))
    spread = draw(st.sampled_from(["normal", "wide", "huge_and_tiny"]))
    x = rng.standard_normal((b, h, w))
    if spread != "normal":
        # magnitudes 1e-30 .. 1e30 in one image, both signs
        x = np.sign(x) * 10.0 ** rng.uniform(-30, 30, (b, h, w))
    if spread == "huge_and_tiny":
        x[:, : max(1, h // 2)] *= 1e10 if dtype == np.float64 else 1.0  # large values above the rest of the column
    x = x.astype(dtype)
    nonfinite = draw(st.sampled_from(["none", "none", "some"]))
    if nonfinite == "some":
        n = int(rng.integers(1, 4))
        for _ in range(n):
            x[rng.integers(0, b), rng.integers(0, h), rng.integers(0, w)] = rng.choice([np.nan, np.inf, -np.inf])
    return x


@st.composite
def label_case(draw):
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    h, w = draw(st.sampled_from(SHAPES + EDGE_SHAPES))
    b = draw(st.integers(1, 3)) if h * w < 60000 else 1
    ltype = draw(st.sampled_from([np.uint8, np.uint16, np.int32, np.int32]))
    cap = {np.uint8: 255, np.uint16: 65535, np.int32: 2**31 - 1}[ltype]
    # K itself must fit the dtype (labels equal to K are tested); beyond 65,535 the kernels' compact scratch
    small = [1, 2, 3, 7, 16, 254, 255, 4094, 4095, 65534, 65535]
    k = draw(st.sampled_from([v for v in small if v <= cap] + ([65536, 70_000, 70_000, 2**20] if cap > 2**16 else [])))
    structure = draw(st.sampled_from(["noise", "runs", "blocks"]))
    if structure == "noise":
        lab = rng.integers(0, k, (b, h * w))
    elif structure == "runs":
        lengths = rng.integers(1, 200, h * w)
        ids = rng.integers(0, k, h * w)
        lab = np.repeat(ids, lengths)[: b * h * w]
        lab = np.resize(lab, (b, h * w))
    else:
        lab = np.repeat(rng.integers(0, k, (b, (h * w + 63) // 64)), 64, axis=1)[:, : h * w]
    lab = lab.reshape(b, h, w)
    lab[rng.integers(0, b), rng.integers(0, h), rng.integers(0, w)] = k - 1  # K-1 occurs
    ignore = draw(st.sampled_from([None, "k", "inside", "above"]))
    ignore_index = {None: None, "k": k, "inside": int(rng.integers(0, k)), "above": cap}[ignore]
    if ignore_index is not None and ignore_index <= cap:
        lab.reshape(-1)[rng.integers(0, lab.size, 1 + lab.size // 10)] = ignore_index
    bad = draw(st.sampled_from([None, None, "k", "k_plus", "negative"]))
    bad_pixel = None
    if bad is not None and not (bad == "negative" and ltype != np.int32) and not (bad == "k_plus" and k + 1 > cap):
        value = {"k": k, "k_plus": k + 1, "negative": -1}[bad]
        if value != ignore_index:
            bad_pixel = (int(rng.integers(0, b)), int(rng.integers(0, h)), int(rng.integers(0, w)))
            lab[bad_pixel] = value
    x = draw(saliency_maps(b, h, w, rng))
    return x, lab.astype(ltype), k, ignore_index, bad_pixel


@settings(max_examples=1000, **SETTINGS)
@given(case=label_case(), skip=st.booleans(), unassigned=st.booleans(), threads=st.integers(1, 3))
def test_label_maps(case, skip, unassigned, threads):
    x, lab, k, ignore_index, bad_pixel = case
    event(f"pixels {'>= 65535' if x[0].size >= 65535 else '< 65535'}, K {'> 65535' if k > 65535 else '<= 65535'}")
    call = lambda: sat_fast.segment_stats(  # noqa: E731
        x,
        lab,
        num_segments=k,
        ignore_index=ignore_index,
        nonfinite="skip" if skip else "raise",
        include_unassigned=unassigned,
        threads=threads,
    )
    lab64 = lab.astype(np.int64)
    invalid = ((lab64 < 0) | (lab64 >= k)) & (lab64 != (ignore_index if ignore_index is not None else -(2**40)))
    if invalid.any():
        # the first bad label in (image, row, col) order wins, whatever the chunking and threads
        assert bad_pixel is not None
        where = tuple(int(i) for i in np.argwhere(invalid)[0])
        nonfinite_before = first_nonfinite(x)
        with pytest.raises(KernelInputError) as info:
            call()
        event("outcome: label error")
        if nonfinite_before is None or skip:
            assert (info.value.kind, info.value.image, info.value.pixel) == ("label", where[0], where[1:])
            assert info.value.value == int(lab64[where])
        return
    if not skip and first_nonfinite(x) is not None:
        where = first_nonfinite(x)
        event("outcome: nonfinite error")
        with pytest.raises(KernelInputError) as info:
            call()
        assert (info.value.kind, info.value.image, info.value.pixel) == ("nonfinite", where[0], where[1:])
        got_value = info.value.value
        assert (np.isnan(got_value) and np.isnan(x[where])) or got_value == x[where]
        return
    st_ = call()
    event(f"outcome: statistics (nonfinite skipped: {skip and first_nonfinite(x) is not None})")
    slots = np.where(lab64 == (ignore_index if ignore_index is not None else -(2**40)), k, lab64)
    ref = reference(x, slots, k + 1, skip)
    assert_matches(st_, {key: (a[:, :k] if a.ndim == 2 else a) for key, a in ref.items()})
    np.testing.assert_array_equal(st_["nonfinite"], ref["nonfinite"])
    tol = 2 * x[0].size * U * ref["total_abs"] * 2
    assert np.all(np.abs(st_["total_abs"] - ref["total_abs"]) <= tol + 1e-300)
    assert np.all(np.abs(st_["total_sum"] - ref["total_sum"]) <= tol + 1e-300)
    if unassigned:
        assert st_.unassigned is not None
        assert_matches(
            {key: st_.unassigned[key][:, None] for key in ("count", "min", "max", "pos_sum", "neg_sum", "sq_sum")},
            {key: (a[:, k:] if a.ndim == 2 else a) for key, a in ref.items()},
        )


@st.composite
def mask_case(draw):
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    h, w = draw(st.sampled_from(SHAPES + EDGE_SHAPES[:3]))
    b = draw(st.integers(1, 2))
    k = draw(st.integers(1, 6))
    kinds = rng.integers(0, 4, k)
    masks = np.zeros((b, k, h, w), bool)
    yy, xx = np.mgrid[:h, :w]
    for j, kind in enumerate(kinds):
        if kind == 0:
            masks[:, j] = rng.random((b, h, w)) < rng.uniform(0.02, 0.98)
        elif kind == 1:
            cy, cx, r = rng.uniform(0, h), rng.uniform(0, w), rng.uniform(0.5, max(h, w))
            masks[:, j] = (yy - cy) ** 2 + (xx - cx) ** 2 < r * r
        elif kind == 2:
            masks[:, j, rng.integers(0, h), rng.integers(0, w)] = True
        # kind 3: empty
    x = draw(saliency_maps(b, h, w, rng))
    return x, masks


def mask_reference(x: np.ndarray, masks: np.ndarray, skip: bool) -> dict[str, np.ndarray]:
    """Masks overlap: one bincount pass per mask (plus the uncovered pixels), then stacked."""
    k = masks.shape[1]
    parts = []
    for j in range(k + 1):
        m = masks[:, j] if j < k else ~masks.any(axis=1)
        parts.append(reference(x, np.where(m, 0, -1), 1, skip))
    out = {key: np.concatenate([p[key] for p in parts], axis=1) for key in parts[0] if parts[0][key].ndim == 2}
    out.update({key: parts[0][key] for key in parts[0] if parts[0][key].ndim == 1})
    return out


@settings(max_examples=400, **SETTINGS)
@given(case=mask_case(), skip=st.booleans(), unassigned=st.booleans(), packed=st.booleans(), threads=st.integers(1, 3))
def test_masks(case, skip, unassigned, packed, threads):
    x, masks = case
    k = masks.shape[1]
    arg = sat_fast.pack_masks(masks, threads=threads) if packed else masks
    call = lambda: sat_fast.segment_stats(  # noqa: E731
        x, masks=arg, nonfinite="skip" if skip else "raise", include_unassigned=unassigned, threads=threads
    )
    where = first_nonfinite(x)
    if not skip and where is not None:
        with pytest.raises(KernelInputError) as info:
            call()
        assert (info.value.kind, info.value.image, info.value.pixel) == ("nonfinite", where[0], where[1:])
        return
    got = call()
    ref = mask_reference(x, masks, skip)
    assert_matches(got, {key: (a[:, :k] if a.ndim == 2 else a) for key, a in ref.items()})
    np.testing.assert_array_equal(got["nonfinite"], ref["nonfinite"])
    if unassigned:
        assert got.unassigned is not None
        assert_matches(
            {key: got.unassigned[key][:, None] for key in ("count", "min", "max", "pos_sum", "neg_sum", "sq_sum")},
            {key: (a[:, k:] if a.ndim == 2 else a) for key, a in ref.items()},
        )


@settings(max_examples=150, **SETTINGS)
@given(
    seed=st.integers(0, 2**32 - 1),
    shape=st.sampled_from(
        [(1, 1, 1, 1), (2, 3, 1, 63), (1, 2, 64, 1), (1, 1, 65, 1), (2, 2, 17, 31), (1, 1, 1, 65537)]
    ),
    density=st.sampled_from([0.0, 0.01, 0.5, 0.99, 1.0]),
    threads=st.integers(1, 3),
)
def test_pack_masks(seed, shape, density, threads):
    rng = np.random.default_rng(seed)
    masks = rng.random(shape) < density
    packed = sat_fast.pack_masks(masks, threads=threads)
    b, k, h, w = shape
    nw = (h * w + 63) // 64
    bits = np.zeros((b, k, nw * 64), bool)
    bits[..., : h * w] = masks.reshape(b, k, -1)
    # little-endian bit order within bytes, bytes within words: pixel 64*w + i is bit i of word w
    want = np.packbits(bits, axis=-1, bitorder="little").view("<u8").reshape(b, k, nw)
    np.testing.assert_array_equal(packed.words, want)
    assert packed.bounds is not None
    for i in range(b):
        for j in range(k):
            nz = np.flatnonzero(want[i, j])
            expected = (int(nz[0]), int(nz[-1]) + 1) if nz.size else (0, 0)
            assert tuple(packed.bounds[i, j]) == expected


# ----------------------------------------------------------------------------- RLE


def encode_counts(mask: np.ndarray) -> np.ndarray:
    """COCO counts of a mask: alternating runs of 0s and 1s in column-major order, starting with 0s."""
    flat = np.asarray(mask, bool).ravel(order="F").astype(np.int8)
    change = np.flatnonzero(np.diff(flat)) + 1
    edges = np.concatenate([[0], change, [flat.size]])
    runs = np.diff(edges)
    if flat.size and flat[0]:
        runs = np.concatenate([[0], runs])
    return runs.astype(np.uint32)


@st.composite
def rle_case(draw):
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    n_images = draw(st.integers(1, 3))
    images = []
    for _ in range(n_images):
        h, w = draw(st.sampled_from(SHAPES + [(256, 256), (1, 65537)]))
        x = draw(saliency_maps(1, h, w, rng))[0]
        k = int(rng.integers(0, 5))
        yy, xx = np.mgrid[:h, :w]
        segs = []
        for _ in range(k):
            inst = []
            for _ in range(int(rng.integers(1, 4))):
                kind = int(rng.integers(0, 5))
                if kind == 0:
                    m = rng.random((h, w)) < rng.uniform(0.05, 0.95)
                elif kind == 1:
                    cy, cx, r = rng.uniform(0, h), rng.uniform(0, w), rng.uniform(0.5, max(h, w))
                    m = (yy - cy) ** 2 + (xx - cx) ** 2 < r * r
                elif kind == 2:
                    m = np.zeros((h, w), bool)
                    c0, c1 = sorted(rng.integers(0, w + 1, 2))
                    m[:, c0:c1] = True  # whole columns
                elif kind == 3:
                    m = np.zeros((h, w), bool)
                    m.reshape(-1, order="F")[slice(*sorted(rng.integers(0, h * w + 1, 2)))] = True
                else:
                    m = np.zeros((h, w), bool)
                inst.append(m)
            segs.append(inst)
        images.append((x, segs))
    return images


@settings(max_examples=400, **SETTINGS)
@given(images=rle_case(), skip=st.booleans(), unassigned=st.booleans(), threads=st.integers(1, 3))
def test_rle_segments(images, skip, unassigned, threads):
    maps = [x for x, _ in images]
    segments = [
        Segments.from_rle(
            [f"s{j}" for j in range(len(segs))], [[encode_counts(m) for m in inst] for inst in segs], *x.shape
        )
        for x, segs in images
    ]
    call = lambda: sat_fast.segment_stats(  # noqa: E731
        maps, segments=segments, nonfinite="skip" if skip else "raise", include_unassigned=unassigned, threads=threads
    )
    if not skip:
        for i, x in enumerate(maps):
            where = first_nonfinite(x[None])
            if where is not None:
                with pytest.raises(KernelInputError) as info:
                    call()
                assert (info.value.kind, info.value.image, info.value.pixel) == ("nonfinite", i, where[1:])
                return
    got = call()
    kmax = got.shape[1]
    for i, (x, segs) in enumerate(images):
        k = len(segs)
        union = np.array([np.logical_or.reduce(inst) for inst in segs]).reshape(k, *x.shape)
        ref = mask_reference(x[None], union[None], skip)
        row = {
            key: np.asarray(got[key])[i : i + 1, :k]
            for key in ("count", "min", "max", "pos_sum", "neg_sum", "sq_sum", "sum", "abs_sum")
        }
        assert_matches(row, {key: (a[:, :k] if a.ndim == 2 else a) for key, a in ref.items()})
        assert (np.asarray(got["count"])[i, k:kmax] == 0).all()
        assert got["nonfinite"][i] == ref["nonfinite"][0]
        tol = 4 * x.size * U * ref["total_abs"][0]
        assert abs(got["total_sum"][i] - ref["total_sum"][0]) <= tol + 1e-300
        if unassigned:
            assert got.unassigned is not None
            assert_matches(
                {
                    key: got.unassigned[key][i : i + 1, None]
                    for key in ("count", "min", "max", "pos_sum", "neg_sum", "sq_sum")
                },
                {key: (a[:, k:] if a.ndim == 2 else a) for key, a in ref.items()},
            )


# ----------------------------------------------------------------------------- RLE strings


def decode_string(s: bytes) -> list[int] | None:
    """The reference decoder with the documented limits: None when malformed, over-long or out of range."""
    counts: list[int] = []
    p = 0
    while p < len(s):
        x, k, more = 0, 0, True
        while more:
            if p >= len(s) or k == 7:
                return None
            c = s[p] - 48
            if not 0 <= c <= 63:
                return None
            x |= (c & 0x1F) << (5 * k)
            more = bool(c & 0x20)
            p += 1
            k += 1
            if not more and c & 0x10:
                x -= 1 << (5 * k)
        if len(counts) > 2:
            x += counts[-2]
        if not 0 <= x < 2**32:
            return None
        counts.append(x)
    return counts


@settings(max_examples=1000, **SETTINGS)
@given(
    counts=st.lists(
        st.one_of(st.integers(0, 40), st.integers(0, 2**32 - 1), st.sampled_from([0, 2**32 - 1, 2**31])), max_size=12
    ),
    garbage=st.lists(
        st.one_of(
            st.binary(max_size=16).map(lambda b: bytes(48 + (c % 66) for c in b)),
            # over-long counts: zero groups with the continuation bit ("P"), or all ones ("o")
            st.tuples(st.integers(1, 12), st.sampled_from(["P", "o", "_"]), st.sampled_from(["0", "1", "O", "?"])).map(
                lambda t: (t[1] * t[0] + t[2]).encode()
            ),
        ),
        max_size=3,
    ),
)
def test_rle_from_strings(counts, garbage):
    arr = np.array(counts, np.uint32)
    good = encode_rle_string(arr)
    strings: list[str | bytes] = [good, *garbage]
    refs = [decode_string(s if isinstance(s, bytes) else s.encode()) for s in strings]
    assert refs[0] == counts
    bad = [i for i, r in enumerate(refs) if r is None]
    if bad:
        with pytest.raises(KernelInputError, match=rf"malformed COCO RLE string {bad[0]}\b") as info:
            _core.rle_from_strings(strings)
        assert info.value.kind == "input"
        return
    got, offsets = _core.rle_from_strings(strings)
    want = [c for r in refs for c in r]  # type: ignore[union-attr]
    np.testing.assert_array_equal(got, np.array(want, np.uint32))
    np.testing.assert_array_equal(offsets, np.cumsum([0] + [len(r) for r in refs]))  # type: ignore[arg-type]
