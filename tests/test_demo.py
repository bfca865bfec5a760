"""The demo's quick configuration end to end: the shortcut the method promises to expose."""

from __future__ import annotations

import polars as pl
import pytest

from sat_fast import cli
from sat_fast.demo.experiment import format_summary


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    from sat_fast.demo.experiment import DemoConfig, run_demo

    out = tmp_path_factory.mktemp("demo")
    return out, run_demo(out, config=DemoConfig.quick(), progress=False)


@pytest.mark.slow
def test_accuracy_hides_what_the_table_shows(demo):
    _, r = demo
    print(r.accuracy, r.watermark_rank, r.watermark_flagged, r.deletion_drop, r.core_part)
    # accuracy barely moves out of distribution ...
    assert abs(r.ood_gap["shortcut"]) <= 0.10
    assert r.accuracy[("shortcut", "test")] > 0.7 and r.accuracy[("control", "test")] > 0.7
    # ... but the SAT puts the watermark first or second for the watermark's class, and flags it
    assert r.watermark_rank["shortcut"] in (1, 2)
    assert r.watermark_flagged["shortcut"]
    # the control model, trained without the correlation, is not flagged
    assert not r.watermark_flagged["control"]
    # and deleting the watermark hurts the shortcut model more than deleting a core part of about its area
    drops = r.deletion_drop["shortcut"]
    assert drops["watermark"] > drops["core part (same area)"]


@pytest.mark.slow
def test_the_attribution_prior_takes_the_watermark_off_the_table(demo):
    _, r = demo
    print(r.watermark_rank, r.watermark_flagged, r.ood_gap, r.train_seconds)
    # trained on the shortcut data with a penalty on the watermark's share of gradient x input:
    # for the watermark's class the SAT ranks the watermark below the top three and does not flag it ...
    assert r.watermark_rank["prior"] is not None and r.watermark_rank["prior"] > 3
    assert not r.watermark_flagged["prior"]
    # ... and its out-of-distribution gap is within 3 points of the control's
    assert abs(r.ood_gap["prior"] - r.ood_gap["control"]) <= 0.03
    assert r.accuracy[("prior", "test")] > 0.7
    summary = format_summary(r, r.tables["aggregate"])
    assert f"watermark rank {r.watermark_rank['prior']}, flagged False" in summary


@pytest.mark.slow
def test_outputs_are_written(demo):
    out, r = demo
    for name in ("sat", "aggregate", "flags", "comparison", "deletion"):
        assert (out / f"{name}.parquet").is_file()
    sat = pl.read_parquet(out / "sat.parquet")
    assert {"label", "target", "predicted", "correct", "split", "model", "run"} <= set(sat.columns)
    assert sat.columns[:3] == ["image_id", "target", "class"]
    assert set(sat["class"].cast(pl.String)) == {"fish", "bird", "cat"}
    assert set(sat["predicted_class"].cast(pl.String)) <= {"fish", "bird", "cat"}
    assert pl.read_parquet(out / "flags.parquet")["class"].cast(pl.String).is_in(["fish", "bird", "cat"]).all()
    assert set(sat["split"]) == {"test", "ood"} and set(sat["model"]) == {"shortcut", "control", "prior"}
    assert len(list(out.glob("figure_*.png"))) == len(list(out.glob("figure_*.svg"))) >= 5
    page = (out / "report.html").read_text()
    assert "<img" in page
    # each of the demo's figures once: the report's default charts (a second comparison chart among them) are off
    assert page.count("<figure>") == len(list(out.glob("figure_*.png"))) == 7
    assert f"for fish the watermark ranks {r.watermark_rank['prior']} and is not flagged" in page
    # one parameter cache per trained model (test_demo_command_reuses_the_cached_models checks their reuse)
    assert len(list((out / "cache").glob("*.msgpack"))) == len(r.accuracy) // 2 == 3


def test_demo_command_rejects_bad_options(capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(["demo", "--speed", "fast"])
    assert exc.value.code == 2


@pytest.mark.slow
def test_demo_command_reuses_the_cached_models(demo, capsys):
    out, first = demo
    cached = sorted(p.stat().st_mtime_ns for p in (out / "cache").glob("*.msgpack"))
    assert cli.main(["demo", "--quick", "--out", str(out), "--no-progress"]) == 0
    assert sorted(p.stat().st_mtime_ns for p in (out / "cache").glob("*.msgpack")) == cached  # not retrained
    again = pl.read_parquet(out / "sat.parquet")
    # same models, same seed: the same tables, but a run id of its own
    assert again.drop("run").equals(first.tables["sat"].drop("run"))
    assert again["run"].n_unique() == first.tables["sat"]["run"].n_unique() == 1
    assert again["run"][0] != first.tables["sat"]["run"][0]
