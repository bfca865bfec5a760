"""aggregate, compare and flag_shortcuts against independent float64 references (numpy, scipy)."""

from __future__ import annotations

import math

import numpy as np
import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from polars.testing import assert_frame_equal
from scipy import stats

import sat_fast
import sat_fast.aggregation as AGG

# --------------------------------------------------------------------------- references


def reference_aggregate(rows: list[dict], keys: list[str], value: str = "mean", ci: float = 0.95) -> dict:
    """Plain-Python per group x segment summary: {(key values..., segment): {column: value}}."""
    groups: dict[tuple, set] = {}
    cells: dict[tuple, list[dict]] = {}
    for r in rows:
        g = tuple(r[k] for k in keys)
        groups.setdefault(g, set()).add(r["image_id"])
        cells.setdefault((*g, r["segment"]), []).append(r)
    out = {}
    for cell, members in cells.items():
        images = len(groups[cell[:-1]])
        x = np.array([m[value] for m in members if m[value] is not None], dtype=np.float64)
        n = x.size
        row = {
            "images": images,
            "present": len(members),
            "presence": len(members) / images,
            "mean": float(x.mean()),
            "median": float(np.median(x)),
            "share": _mean_or_none([m.get("share") for m in members]),
            "density": _mean_or_none([m.get("density") for m in members]),
            "top1": float(np.mean([m["rank"] == 1 for m in members])),
            "mean_rank": float(np.mean([m["rank"] for m in members])),
        }
        if n >= 2:
            sd = float(x.std(ddof=1))
            sem = sd / math.sqrt(n)
            low, high = stats.t.interval(ci, n - 1, loc=x.mean(), scale=sem) if sem > 0 else (x.mean(), x.mean())
            row.update(std=sd, sem=sem, ci_low=float(low), ci_high=float(high))
        else:
            row.update(std=None, sem=None, ci_low=None, ci_high=None)
        out[cell] = row
    return out


def _mean_or_none(values: list) -> float | None:
    vals = [v for v in values if v is not None]
    return float(np.mean(vals)) if vals else None


def assert_matches_reference(result: pl.DataFrame, ref: dict, keys: list[str]) -> None:
    assert result.columns == [*keys, *sat_fast.AGGREGATE_COLUMNS]
    assert result.height == len(ref)
    for row in result.iter_rows(named=True):
        expected = ref[(*(row[k] for k in keys), row["segment"])]
        for column, want in expected.items():
            got = row[column]
            if want is None:
                assert got is None, (column, row)
            else:
                assert got == pytest.approx(want, rel=1e-12, abs=1e-12), (column, row)


def hand_table() -> pl.DataFrame:
    """Three classes: absent segments, a single-image class, and tied ranks."""
    rows = [
        # class 0: images 1, 2, 3; "tail" absent from image 3; image 2 ties eye and fur at rank 1
        (1, 0, "eye", 0.9, 0.5, 2.0, 1),
        (1, 0, "fur", 0.3, 0.3, 0.6, 2),
        (1, 0, "tail", 0.1, 0.2, 0.9, 3),
        (2, 0, "eye", 0.5, 0.4, 1.8, 1),
        (2, 0, "fur", 0.5, 0.4, 0.7, 1),
        (2, 0, "tail", -0.2, 0.2, 1.1, 3),
        (3, 0, "eye", 0.7, 0.6, 2.5, 1),
        (3, 0, "fur", 0.2, 0.4, 0.5, 2),
        # class 1: a single image
        (4, 1, "eye", 0.4, 0.7, 3.0, 1),
        (4, 1, "sky", -0.1, 0.3, 0.4, 2),
        # class 2: two images, "sky" only in one; equal values (zero spread) for eye
        (5, 2, "eye", 0.25, 0.5, 1.0, 1),
        (6, 2, "eye", 0.25, 0.5, 1.0, 2),
        (6, 2, "sky", 0.75, 0.5, 1.0, 1),
    ]
    cols = list(zip(*rows, strict=True))
    return pl.DataFrame(
        [
            pl.Series("image_id", cols[0], dtype=pl.Int64),
            pl.Series("target", cols[1], dtype=pl.Int64),
            pl.Series("segment", cols[2], dtype=pl.Categorical),
            pl.Series("mean", cols[3], dtype=pl.Float64),
            pl.Series("share", cols[4], dtype=pl.Float64),
            pl.Series("density", cols[5], dtype=pl.Float64),
            pl.Series("rank", cols[6], dtype=pl.Int64),
        ]
    )


def synthetic_table(seed: int, images: int = 60, segments: int = 5, size: int = 8) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    sal = rng.normal(size=(images, size, size)).astype(np.float32)
    sal[: images // 4] = np.round(sal[: images // 4])  # ties in values and in ranks
    lab = rng.integers(0, segments, size=(images, size, size)).astype(np.uint8)
    lab[: images // 3][lab[: images // 3] == segments - 1] = 0  # last segment absent from some images
    return sat_fast.segment_table(
        sal,
        lab,
        names=[f"s{k}" for k in range(segments)],
        targets=rng.integers(0, 3, images),
        metadata={
            "split": np.where(rng.random(images) < 0.5, "train", "ood"),
            "correct": rng.random(images) < 0.7,
        },
    )


def rows_of(table: pl.DataFrame) -> list[dict]:
    return table.with_columns(pl.col("segment").cast(pl.String)).to_dicts()


# --------------------------------------------------------------------------- aggregate


def test_hand_table_matches_reference():
    table = hand_table()
    result = sat_fast.aggregate(table)
    assert_matches_reference(result, reference_aggregate(rows_of(table), ["target"]), ["target"])
    # spot checks written out by hand
    tail = result.filter((pl.col("target") == 0) & (pl.col("segment") == "tail")).row(0, named=True)
    assert (tail["images"], tail["present"], tail["presence"]) == (3, 2, pytest.approx(2 / 3))
    fur = result.filter((pl.col("target") == 0) & (pl.col("segment") == "fur")).row(0, named=True)
    assert fur["top1"] == pytest.approx(1 / 3) and fur["mean_rank"] == pytest.approx(5 / 3)
    assert fur["median"] == 0.3


def test_single_image_groups_give_nulls_not_nan():
    result = sat_fast.aggregate(hand_table())
    single = result.filter(pl.col("target") == 1)
    assert single["present"].to_list() == [1, 1]
    for column in ("std", "sem", "ci_low", "ci_high"):
        assert single[column].null_count() == 2
    sky = result.filter((pl.col("target") == 2) & (pl.col("segment") == "sky"))
    assert sky["std"].null_count() == 1 and sky["median"].item() == 0.75
    for column in ("std", "sem", "ci_low", "ci_high", "mean", "median"):
        assert not result[column].is_nan().any()
    # zero spread: the interval collapses to the mean, it is not null
    eye = result.filter((pl.col("target") == 2) & (pl.col("segment") == "eye")).row(0, named=True)
    assert (eye["std"], eye["ci_low"], eye["ci_high"]) == (0.0, 0.25, 0.25)


@pytest.mark.parametrize("ci", [0.9, 0.99])
def test_confidence_level(ci):
    table = synthetic_table(3)
    result = sat_fast.aggregate(table, ci=ci)
    assert_matches_reference(result, reference_aggregate(rows_of(table), ["target"], ci=ci), ["target"])


@pytest.mark.parametrize(
    "by",
    [("target",), ["target", "split"], ("correct",), "split", (), None],
)
def test_grouping_keys_match_reference(by):
    table = synthetic_table(1)
    keys = [by] if isinstance(by, str) else list(by or [])
    result = sat_fast.aggregate(table, by=by)
    assert_matches_reference(result, reference_aggregate(rows_of(table), keys), keys)


def test_null_group_key_is_a_group():
    table = hand_table().with_columns(
        pl.when(pl.col("image_id") == 4).then(None).otherwise(pl.col("target")).alias("target")
    )
    result = sat_fast.aggregate(table)
    assert result.filter(pl.col("target").is_null())["segment"].cast(pl.String).to_list() == ["eye", "sky"]
    assert result["target"].to_list()[-1] is None  # nulls sort last


def test_value_expression():
    table = synthetic_table(2)
    value = pl.col("abs_sum") / pl.col("pixels")
    rows = [dict(r, v=r["abs_sum"] / r["pixels"]) for r in rows_of(table)]
    result = sat_fast.aggregate(table, value=value)
    assert_matches_reference(result, reference_aggregate(rows, ["target"], value="v"), ["target"])
    by_name = sat_fast.aggregate(table.with_columns(value.alias("v")), value="v")
    assert_frame_equal(result, by_name)


def test_null_values_are_left_out():
    table = hand_table().with_columns(
        pl.when(pl.col("image_id") == 1).then(None).otherwise(pl.col("mean")).alias("mean")
    )
    result = sat_fast.aggregate(table)
    eye = result.filter((pl.col("target") == 0) & (pl.col("segment") == "eye")).row(0, named=True)
    assert eye["present"] == 3 and eye["mean"] == pytest.approx(0.6)
    assert eye["sem"] == pytest.approx(np.std([0.5, 0.7], ddof=1) / math.sqrt(2))


def test_optional_columns_missing_give_null_columns():
    table = hand_table().drop("share", "density", "rank")
    result = sat_fast.aggregate(table)
    for column in ("share", "density", "top1", "mean_rank"):
        assert result[column].null_count() == result.height
    renamed = hand_table().rename({"rank": "drop_rank"})
    assert_frame_equal(sat_fast.aggregate(renamed, rank="drop_rank"), sat_fast.aggregate(hand_table()))


@pytest.mark.parametrize(
    ("bins", "groups", "collect"),
    [(1024, 1 << 16, 1 << 22), (2, 1 << 16, 0), (3, 1 << 16, 7), (16, 1 << 16, 40), (1024, 40, 0)],
)
def test_streaming_equals_in_memory(monkeypatch, bins, groups, collect):
    """Small bin counts, group budgets and collect thresholds force many streaming median passes."""
    monkeypatch.setattr(AGG, "_MEDIAN_BINS", bins)
    monkeypatch.setattr(AGG, "_MEDIAN_GROUPS", groups)
    monkeypatch.setattr(AGG, "_MEDIAN_COLLECT_ROWS", collect)
    table = synthetic_table(4, images=80)
    for by in (("target",), ("target", "split"), ()):
        streamed = sat_fast.aggregate(table.lazy(), by=by)
        in_memory = sat_fast.aggregate(table, by=by, engine="in-memory")
        assert_frame_equal(streamed, in_memory, check_exact=False, rel_tol=1e-12, abs_tol=1e-14)
        assert_matches_reference(streamed, reference_aggregate(rows_of(table), list(by)), list(by))


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    values=st.lists(st.integers(-4, 4), min_size=1, max_size=40),
    groups=st.integers(1, 3),
    bins=st.integers(2, 5),
)
def test_streaming_median_property(monkeypatch, values, groups, bins):
    """Exact median with many ties and every pass forced, against numpy."""
    monkeypatch.setattr(AGG, "_MEDIAN_BINS", bins)
    monkeypatch.setattr(AGG, "_MEDIAN_COLLECT_ROWS", 0)
    n = len(values)
    table = pl.DataFrame(
        [
            pl.Series("image_id", np.arange(n), dtype=pl.Int64),
            pl.Series("target", np.arange(n) % groups, dtype=pl.Int64),
            pl.Series("segment", ["s"] * n, dtype=pl.Categorical),
            pl.Series("mean", np.asarray(values, np.float64) / 3, dtype=pl.Float64),
        ]
    )
    result = sat_fast.aggregate(table.lazy())
    x = np.asarray(values, np.float64) / 3
    for row in result.iter_rows(named=True):
        assert row["median"] == pytest.approx(np.median(x[np.arange(n) % groups == row["target"]]), rel=1e-15)


def test_scan_parquet_over_many_files(tmp_path):
    table = synthetic_table(5, images=90)
    parts = table.with_row_index("__i").with_columns((pl.col("__i") % 4).alias("__part"))
    for part, frame in parts.group_by("__part"):
        frame.drop("__i", "__part").write_parquet(tmp_path / f"part-{part[0]}.parquet")
    scanned = sat_fast.aggregate(pl.scan_parquet(tmp_path / "*.parquet"), by=["target", "split"])
    expected = sat_fast.aggregate(table, by=["target", "split"], engine="in-memory")
    assert_frame_equal(scanned, expected, check_exact=False, rel_tol=1e-12, abs_tol=1e-14)


def test_bootstrap_interval():
    rng = np.random.default_rng(0)
    n = 400
    x = rng.normal(1.0, 2.0, n)
    table = pl.DataFrame(
        [
            pl.Series("image_id", np.arange(n + 1), dtype=pl.Int64),
            pl.Series("target", [0] * n + [1], dtype=pl.Int64),
            pl.Series("segment", ["s"] * (n + 1), dtype=pl.Categorical),
            pl.Series("mean", np.r_[x, 5.0], dtype=pl.Float64),
        ]
    )
    a = sat_fast.aggregate(table, interval="bootstrap", seed=1, n_boot=3000)
    b = sat_fast.aggregate(table, interval="bootstrap", seed=1, n_boot=3000)
    c = sat_fast.aggregate(table, interval="bootstrap", seed=2, n_boot=3000)
    assert_frame_equal(a, b)
    assert a["ci_low"][0] != c["ci_low"][0]
    assert a["ci_low"][1] is None and a["ci_high"][1] is None
    ref = stats.bootstrap((x,), np.mean, n_resamples=3000, method="percentile", random_state=5).confidence_interval
    width = ref.high - ref.low
    assert a["ci_low"][0] == pytest.approx(ref.low, abs=0.05 * width)
    assert a["ci_high"][0] == pytest.approx(ref.high, abs=0.05 * width)
    # everything but the interval is the t-interval result
    t = sat_fast.aggregate(table)
    assert_frame_equal(a.drop("ci_low", "ci_high"), t.drop("ci_low", "ci_high"))


def test_empty_table_gives_empty_frame():
    table = hand_table().head(0)
    for engine in ("streaming", "in-memory"):
        result = sat_fast.aggregate(table, engine=engine)
        assert result.height == 0
        assert result.columns == ["target", *sat_fast.AGGREGATE_COLUMNS]


def test_bad_input():
    table = hand_table()
    with pytest.raises(ValueError, match=r"missing required columns \['image_id'\]"):
        sat_fast.aggregate(table.drop("image_id"))
    with pytest.raises(ValueError, match="grouping key 'label' is not a column"):
        sat_fast.aggregate(table, by="label")
    with pytest.raises(ValueError, match="grouping key 'share' clashes with a result column"):
        sat_fast.aggregate(table, by="share")
    with pytest.raises(ValueError, match="by cannot contain 'segment'"):
        sat_fast.aggregate(table, by=["target", "segment"])
    with pytest.raises(ValueError, match="value column 'abs_sum' is not in the table"):
        sat_fast.aggregate(table, value="abs_sum")
    with pytest.raises(ValueError, match=r"uses columns \['pixels'\]"):
        sat_fast.aggregate(table, value=pl.col("mean") / pl.col("pixels"))
    with pytest.raises(TypeError, match="value must be numeric"):
        sat_fast.aggregate(table.with_columns(pl.col("segment").alias("name")), value="name")
    with pytest.raises(TypeError, match="polars DataFrame or LazyFrame"):
        sat_fast.aggregate(table.to_dicts())
    with pytest.raises(ValueError, match="ci must be in"):
        sat_fast.aggregate(table, ci=95)
    with pytest.raises(ValueError, match="interval must be one of"):
        sat_fast.aggregate(table, interval="normal")
    with pytest.raises(ValueError, match="engine must be one of"):
        sat_fast.aggregate(table, engine="gpu")
    with pytest.raises(TypeError, match="column names"):
        sat_fast.aggregate(table, by=[1])


# --------------------------------------------------------------------------- compare


def two_tables(seed: int = 0) -> tuple[pl.DataFrame, pl.DataFrame]:
    table = synthetic_table(seed, images=120)
    rng = np.random.default_rng(seed)
    shifted = table.with_columns(pl.col("mean") + pl.Series(rng.normal(0.3, 0.2, table.height)))
    return table.filter(pl.col("split") == "train"), shifted.filter(pl.col("split") == "ood")


def test_compare_welch_and_bh_match_scipy():
    a, b = two_tables()
    result = sat_fast.compare(a, b)
    assert result.height > 5
    ps = []
    for row in result.iter_rows(named=True):
        xa = a.filter((pl.col("target") == row["target"]) & (pl.col("segment") == row["segment"]))["mean"].to_numpy()
        xb = b.filter((pl.col("target") == row["target"]) & (pl.col("segment") == row["segment"]))["mean"].to_numpy()
        ref = stats.ttest_ind(xb, xa, equal_var=False)
        assert row["t"] == pytest.approx(ref.statistic, rel=1e-10)
        assert row["p"] == pytest.approx(ref.pvalue, rel=1e-9)
        assert row["df"] == pytest.approx(ref.df, rel=1e-10)
        pooled = math.sqrt(((xa.size - 1) * xa.var(ddof=1) + (xb.size - 1) * xb.var(ddof=1)) / (xa.size + xb.size - 2))
        assert row["effect"] == pytest.approx((xb.mean() - xa.mean()) / pooled, rel=1e-10)
        assert row["diff"] == pytest.approx(xb.mean() - xa.mean(), rel=1e-12)
        ps.append(row["p"])
    np.testing.assert_allclose(result["p_adj"].to_numpy(), stats.false_discovery_control(ps, method="bh"), rtol=1e-12)
    bonf = sat_fast.compare(a, b, correction="bonferroni", sort="p")
    np.testing.assert_allclose(bonf["p_adj"].to_numpy(), np.minimum(np.sort(ps) * len(ps), 1), rtol=1e-12)
    assert (bonf["significant"] == (bonf["p_adj"] <= 0.05)).all()
    effect = result["effect"].abs().to_numpy()
    assert (np.diff(effect) <= 0).all()  # sorted by size of change


def test_compare_aggregated_equals_per_image():
    a, b = two_tables(1)
    from_images = sat_fast.compare(a, b, by=["target", "split"][:1])
    from_aggregates = sat_fast.compare(sat_fast.aggregate(a), sat_fast.aggregate(b))
    assert_frame_equal(from_images, from_aggregates)


def test_compare_segment_on_one_side_only():
    a = hand_table()
    b = hand_table().filter(pl.col("segment") != "tail").with_columns(pl.col("mean") * 2)
    result = sat_fast.compare(a, b, correction=None)
    tail = result.filter(pl.col("segment") == "tail").row(0, named=True)
    assert tail["mean_b"] is None and tail["p"] is None and tail["p_adj"] is None and tail["significant"] is None
    assert result["segment"].cast(pl.String).to_list()[-1] in {"tail", "sky"}  # untested rows sort last
    tested = result.filter(pl.col("p").is_not_null())
    assert (tested["p_adj"] == tested["p"]).all()


def test_compare_permutation_matches_scipy():
    rng = np.random.default_rng(7)
    xa, xb = rng.normal(0, 1, 9), rng.normal(0.8, 1, 7)

    def frame(x: np.ndarray, start: int) -> pl.DataFrame:
        return pl.DataFrame(
            [
                pl.Series("image_id", np.arange(start, start + x.size), dtype=pl.Int64),
                pl.Series("target", [0] * x.size, dtype=pl.Int64),
                pl.Series("segment", ["eye"] * x.size, dtype=pl.Categorical),
                pl.Series("mean", x, dtype=pl.Float64),
            ]
        )

    result = sat_fast.compare(frame(xa, 0), frame(xb, 100), test="permutation", n_perm=20000, seed=3)
    exact = stats.permutation_test(
        (xb, xa), lambda u, w: np.mean(u) - np.mean(w), permutation_type="independent", n_resamples=np.inf
    ).pvalue
    assert result["p"].item() == pytest.approx(exact, abs=0.01)
    with pytest.raises(ValueError, match="needs per-image tables"):
        sat_fast.compare(sat_fast.aggregate(frame(xa, 0)), sat_fast.aggregate(frame(xb, 100)), test="permutation")


def test_compare_bad_input():
    a, b = two_tables()
    with pytest.raises(ValueError, match="a is a per-image table but b is a aggregated table"):
        sat_fast.compare(a, sat_fast.aggregate(b))
    with pytest.raises(ValueError, match=r"grouped by \['target'\] but b by \['target', 'split'\]"):
        sat_fast.compare(sat_fast.aggregate(a), sat_fast.aggregate(b, by=["target", "split"]))
    with pytest.raises(ValueError, match="group key 'target' is Int64 in a but String in b"):
        sat_fast.compare(a, b.with_columns(pl.col("target").cast(pl.String)))
    with pytest.raises(ValueError, match="neither a per-image SAT"):
        sat_fast.compare(a.drop("image_id"), b)
    with pytest.raises(ValueError, match="grouping key 'model'"):
        sat_fast.compare(a, b, by="model")
    with pytest.raises(ValueError, match="correction must be one of"):
        sat_fast.compare(a, b, correction="holm")
    with pytest.raises(ValueError, match="test must be one of"):
        sat_fast.compare(a, b, test="mannwhitney")


# --------------------------------------------------------------------------- flag_shortcuts


def shortcut_agg() -> pl.DataFrame:
    return pl.DataFrame(
        {
            "target": [0, 0, 0, 0, 1, 1, 1],
            "segment": ["eye", "ear", "watermark", "background", "eye", "watermark", "background"],
            "images": [10] * 7,
            "present": [10, 9, 6, 10, 10, 1, 10],
            "presence": [1.0, 0.9, 0.6, 1.0, 1.0, 0.01, 1.0],
            "mean": [0.5, 0.3, 0.9, 0.05, 0.6, 0.9, 0.1],
            "share": [0.3, 0.2, 0.35, 0.15, 0.5, 0.4, 0.1],
            "density": [3.0, 2.5, 8.0, 0.2, 4.0, 9.0, 0.9],
            "top1": [0.3, 0.1, 0.6, 0.0, 0.8, 1.0, 0.0],
            "mean_rank": [1.9, 2.5, 1.4, 4.0, 1.2, 1.0, 3.0],
        }
    ).with_columns(pl.col("segment").cast(pl.Categorical))


def test_flag_shortcuts_with_core():
    agg = shortcut_agg()
    flags = sat_fast.flag_shortcuts(agg, core={0: ["eye", "ear"], 1: ["eye"]})
    # watermark in class 1 is too rare (presence 0.01 < 0.05); background is neither large nor dense
    assert flags.select("target", "segment", "reason").rows() == [(0, "watermark", "share+density")]
    assert flags.columns[:3] == ["target", "segment", "reason"] and "density" in flags.columns
    looser = sat_fast.flag_shortcuts(
        agg, core={0: ["eye", "ear"], 1: ["eye"]}, presence_min=0.0, share_min=0.12, density_min=100
    )
    # strongest evidence first: share * presence = 0.21, 0.15, 0.004 (the class-1 watermark is in 1% of images)
    assert looser.select("target", "segment", "reason").rows() == [
        (0, "watermark", "share"),
        (0, "background", "share"),
        (1, "watermark", "share"),
    ]
    only_class_0 = sat_fast.flag_shortcuts(agg, core={0: ["eye"]}, density_min=2.0)
    assert only_class_0.select("segment", "reason").rows() == [("watermark", "share+density"), ("ear", "density")]
    same_for_all = sat_fast.flag_shortcuts(agg, core=["eye", "ear"], presence_min=0.0)
    assert same_for_all["segment"].cast(pl.String).to_list() == ["watermark", "watermark"]


def test_flags_are_ordered_by_strength_of_evidence_not_by_share_of_rare_segments():
    # "blob" has the larger share/excess but is in 1 image of 10; "watermark" in 9 of 10: it is the stronger evidence
    agg = pl.DataFrame(
        {
            "target": [0, 0, 0, 1, 1, 1],
            "segment": ["fin", "blob", "watermark", "fin", "blob", "watermark"],
            "images": [10] * 6,
            "present": [10, 1, 9, 10, 1, 1],
            "presence": [1.0, 0.1, 0.9, 1.0, 0.1, 0.1],
            "mean": [0.3, 0.9, 0.6, 0.5, 0.1, 0.1],
            "share": [0.2, 0.7, 0.5, 0.8, 0.1, 0.1],
            "density": [1.0, 9.0, 5.0, 1.0, 1.0, 1.0],
            "top1": [0.0, 0.1, 0.9, 1.0, 0.0, 0.0],
            "mean_rank": [2.0, 1.0, 1.1, 1.0, 2.0, 3.0],
        }
    )
    without_core = sat_fast.flag_shortcuts(agg, presence_min=0.0)
    assert without_core.filter(pl.col("target") == 0)["segment"].cast(pl.String).to_list() == ["watermark", "blob"]
    expected = [(0.5 - 0.1) * 0.9, (0.7 - 0.1) * 0.1]
    np.testing.assert_allclose(without_core.filter(pl.col("target") == 0)["evidence"].to_numpy(), expected)
    with_core = sat_fast.flag_shortcuts(agg, core={0: ["fin"]}, presence_min=0.0)
    assert with_core["segment"].cast(pl.String).to_list() == ["watermark", "blob"]
    np.testing.assert_allclose(with_core["evidence"].to_numpy(), [0.5 * 0.9, 0.7 * 0.1])
    assert with_core.columns[-1] == "evidence" and without_core.columns[-1] == "evidence"


def test_flag_shortcuts_without_core():
    agg = shortcut_agg()
    flags = sat_fast.flag_shortcuts(agg, presence_min=0.0, excess_min=0.1)
    # others' share: eye 0 -> 0.5, eye 1 -> 0.3; ear 0 -> 0 (absent in class 1); watermark 1 -> 0.35 ...
    got = {(r["target"], r["segment"]): (r["others_share"], r["excess"]) for r in flags.iter_rows(named=True)}
    assert set(got) == {(0, "ear"), (1, "eye")}
    assert got[(0, "ear")] == (pytest.approx(0.0), pytest.approx(0.2))
    assert got[(1, "eye")] == (pytest.approx(0.3), pytest.approx(0.2))
    assert (flags["reason"] == "excess").all()
    per_model = pl.concat([agg.with_columns(model=pl.lit("m1")), agg.with_columns(model=pl.lit("m2"))]).select(
        "model", *agg.columns
    )
    both = sat_fast.flag_shortcuts(per_model, class_column="target", presence_min=0.0)
    assert both.height == 2 * flags.height


def test_flag_shortcuts_bad_input():
    agg = shortcut_agg()
    with pytest.raises(ValueError, match="class_column 'label' is not a group key"):
        sat_fast.flag_shortcuts(agg, class_column="label")
    with pytest.raises(ValueError, match=r"missing required columns \['density'\]"):
        sat_fast.flag_shortcuts(agg.drop("density"))
    with pytest.raises(TypeError, match="list of segment names"):
        sat_fast.flag_shortcuts(agg, core={0: "eye"})
    with pytest.raises(TypeError, match="DataFrame from aggregate"):
        sat_fast.flag_shortcuts(agg.lazy())
    with pytest.raises(TypeError, match="core class 'dog' does not match 'target' of dtype Int64"):
        sat_fast.flag_shortcuts(agg, core={"dog": ["eye"]})
    with pytest.raises(ValueError, match="share_min must be a finite number"):
        sat_fast.flag_shortcuts(agg, core=["eye"], share_min=float("nan"))
    two_keys = agg.with_columns(model=pl.lit("m")).select("model", *agg.columns).rename({"target": "label"})
    with pytest.raises(ValueError, match="say which one holds the class"):
        sat_fast.flag_shortcuts(two_keys)


# --------------------------------------------------------------------------- class names, runs, duplicates


def _named_table(run: str = "0a1b2c3d") -> pl.DataFrame:
    rng = np.random.default_rng(5)
    sal = rng.standard_normal((6, 4, 4)).astype(np.float32)
    lab = np.zeros((6, 4, 4), np.uint8)
    lab[:, :2] = 1
    lab[::2, 3, 3] = 2  # the watermark in half the images
    return sat_fast.segment_table(
        sal,
        lab,
        names=["background", "fin", "watermark"],
        image_ids=[f"img{i}" for i in range(6)],
        targets=[0, 0, 0, 1, 1, 1],
        metadata={"run": run},
        class_names=["fish", "bird"],
    )


def test_aggregate_carries_class_names_beside_target_and_version_1_tables_still_aggregate():
    t = _named_table()
    agg = sat_fast.aggregate(t)
    assert agg.columns[:3] == ["target", "class", "segment"]
    assert dict(zip(agg["target"], agg["class"].cast(pl.String), strict=True)) == {0: "fish", 1: "bird"}
    v1 = sat_fast.aggregate(t.drop("class", "run"))
    assert_frame_equal(agg.drop("class"), v1)
    assert sat_fast.aggregate(t, by=()).columns[0] == "segment"
    named = t.with_columns(pl.col("class").cast(pl.String))
    other = named.with_columns(
        pl.when(pl.col("target") == 1).then(pl.lit("cat")).otherwise(pl.col("class")).alias("class"),
        pl.col("image_id") + "-b",
    )
    with pytest.raises(ValueError, match="target=1 is named both 'bird' and 'cat'"):
        sat_fast.aggregate(pl.concat([named, other]))


def test_two_runs_over_the_same_images_are_an_error_naming_a_key_and_run():
    a, b = _named_table("aaaa1111"), _named_table("bbbb2222")
    both = pl.concat([a, b])
    with pytest.raises(ValueError, match="more than one row per") as info:
        sat_fast.aggregate(both)
    message = str(info.value)
    assert "image_id='img0'" in message and "segment='background'" in message
    assert "'aaaa1111', 'bbbb2222'" in message and "add 'run' to by" in message
    # the streaming and the in-memory engine agree, and lazily scanned input is checked too
    with pytest.raises(ValueError, match="add 'run' to by"):
        sat_fast.aggregate(both.lazy(), engine="in-memory")
    # a run that shares only one image with the other is caught too
    partial = pl.concat([a, b.filter(pl.col("image_id") == "img4")])
    with pytest.raises(ValueError, match="image_id='img4'"):
        sat_fast.aggregate(partial)
    per_run = sat_fast.aggregate(both, by=["target", "run"])
    assert per_run.columns[:4] == ["target", "class", "run", "segment"]
    assert per_run["presence"].max() <= 1.0
    assert_frame_equal(
        per_run.filter(pl.col("run") == "aaaa1111").drop("run"), sat_fast.aggregate(a), check_dtypes=False
    )
    # compare names the side with duplicates
    with pytest.raises(ValueError, match=r"^b: table has more than one row"):
        sat_fast.compare(a, both)


def test_duplicates_without_a_run_column_are_an_error_too():
    t = _named_table().drop("run", "class")
    with pytest.raises(ValueError, match=r"more than one row per .*image_id='img0'.*add the column that tells them"):
        sat_fast.aggregate(pl.concat([t, t]))


def test_compare_and_flags_carry_class_names_and_core_takes_names():
    t = _named_table()
    cmp = sat_fast.compare(t, t.with_columns(pl.col("mean") + 1.0))
    assert cmp.columns[:3] == ["target", "class", "segment"]
    v1_cmp = sat_fast.compare(t.drop("class"), t.drop("class"))
    assert "class" not in v1_cmp.columns
    agg = sat_fast.aggregate(t)
    by_name = sat_fast.flag_shortcuts(agg, core={"fish": ["fin"], "bird": ["fin"]}, share_min=0.0)
    by_index = sat_fast.flag_shortcuts(agg, core={0: ["fin"], 1: ["fin"]}, share_min=0.0)
    assert_frame_equal(by_name, by_index)
    assert by_name.columns[:3] == ["target", "class", "segment"]
    assert set(by_name["segment"].cast(pl.String)) == {"background", "watermark"}
    with pytest.raises(ValueError, match="core class 'dog' is not a class of agg"):
        sat_fast.flag_shortcuts(agg, core={"dog": ["fin"]})
    without_core = sat_fast.flag_shortcuts(agg, excess_min=0.0, presence_min=0.0)
    assert without_core.height > 0 and "others_share" in without_core.columns
