"""sat_fast.run, the streaming pipeline: shards, manifest, resume after SIGKILL, corrupted shards, settings checks."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from PIL import Image
from pipeline_data import write_maps_dataset
from sat_reference import label_stats

import sat_fast
from sat_fast.pipeline import PROVENANCE_KEY, BadItemError


def _sat(out: Path) -> pl.DataFrame:
    return pl.read_parquet(out / "sat" / "*.parquet")


@pytest.fixture(scope="module")
def maps_data(tmp_path_factory):
    return write_maps_dataset(tmp_path_factory.mktemp("maps"), count=240, per_file=40)


def _run(data, out, **options):
    options.setdefault("progress", False)
    return sat_fast.run(saliency_maps=data["maps"], masks=data["masks"], names=data["names"], out=out, **options)


@pytest.fixture(scope="module")
def uninterrupted(maps_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("whole") / "run"
    _run(maps_data, out, shard_size=7, batch_size=5, run_id="feedf00d")
    return out


def test_rows_are_the_reference_sums_in_canonical_order(maps_data, uninterrupted):
    sat = _sat(uninterrupted)
    ids = [f"img{i:06d}" for i in range(240)]
    assert sat["image_id"].unique(maintain_order=True).to_list() == ids  # source order, shard after shard
    with np.load(maps_data["maps"] / "part-0000.npz") as z:
        maps = z["maps"][:3]
    labels = np.stack([np.asarray(Image.open(maps_data["masks"] / f"{i}.png")) for i in ids[:3]])
    ref = label_stats(maps.astype(np.float64), labels, 4)
    for n, image_id in enumerate(ids[:3]):
        rows = sat.filter(pl.col("image_id") == image_id)
        present = ref["count"][n] > 0
        assert rows["segment"].cast(pl.String).to_list() == [f"part{k}" for k in range(4) if present[k]]
        mean = ref["sum"][n][present] / ref["count"][n][present]
        np.testing.assert_allclose(rows["mean"].to_numpy(), mean, rtol=1e-6)
        np.testing.assert_allclose(rows["abs_sum"].to_numpy(), ref["abs_sum"][n][present], rtol=1e-6)
        assert rows["target"].to_list() == [n % 3] * rows.height and rows["label"][0] == (n + 1) % 3
    assert (sat["run"] == "feedf00d").all()


def test_layout_manifest_and_provenance(uninterrupted):
    manifest = [json.loads(line) for line in (uninterrupted / "manifest.jsonl").read_text().splitlines()]
    assert [m["shard"] for m in manifest] == list(range(35))  # ceil(240 / 7)
    assert [(m["start"], m["stop"]) for m in manifest[:2]] == [(0, 7), (7, 14)] and manifest[-1]["stop"] == 240
    files = sorted((uninterrupted / "sat").iterdir())
    assert [f.name for f in files] == [f"part-{n:06d}.parquet" for n in range(35)]
    assert sum(m["rows"] for m in manifest) == _sat(uninterrupted).height
    info = json.loads((uninterrupted / "run.json").read_text())
    assert info["status"] == "complete" and info["run"] == "feedf00d" and info["schema_version"] == 2
    assert {"sat_fast", "polars"} <= set(info["versions"]) and info["settings"]["shard_size"] == 7
    stored = json.loads(pl.read_parquet_metadata(files[3])[PROVENANCE_KEY])
    assert stored["run"] == "feedf00d" and stored["settings"] == info["settings"]
    for name in ("aggregate.parquet", "flags.parquet", "report.html"):
        assert (uninterrupted / name).is_file()


_KILLED_RUN = """
import sys, sat_fast
maps, masks, names, out = sys.argv[1:5]
sat_fast.run(saliency_maps=maps, masks=masks, names=names, out=out, shard_size=7, batch_size=5,
             run_id="feedf00d", resume=True, progress=False)
"""


def test_sigkill_at_random_moments_then_resume_equals_an_uninterrupted_run(tmp_path):
    data = write_maps_dataset(tmp_path / "data", count=1500, per_file=100, seed=1)

    def argv(out):
        return [sys.executable, "-c", _KILLED_RUN, *(str(data[k]) for k in ("maps", "masks", "names")), str(out)]

    started = time.monotonic()
    whole = subprocess.run(argv(tmp_path / "whole"), capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert whole.returncode == 0, whole.stderr[-2000:]
    duration = time.monotonic() - started
    out, rng, interrupted = tmp_path / "killed", random.Random(13), []
    for _ in range(6):  # each kill at a random moment of what an uninterrupted run takes
        proc = subprocess.Popen(argv(out), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=tmp_path)
        try:
            proc.wait(timeout=rng.uniform(0.1, 1.0) * duration)
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            manifest = out / "manifest.jsonl"
            interrupted.append(len(manifest.read_text().splitlines()) if manifest.is_file() else 0)
    assert any(0 < n < 215 for n in interrupted), interrupted  # at least one kill landed mid-run (215 shards)
    done = subprocess.run(argv(out), capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    assert _sat(out).equals(_sat(tmp_path / "whole"))  # row for row, run id included: none lost, none twice
    # The aggregate streams over the same rows; Polars' streaming engine sums in parallel chunks, so it is
    # reproducible to the last few bits only (two uninterrupted runs differ as much).
    whole_agg = pl.read_parquet(tmp_path / "whole" / "aggregate.parquet")
    from polars.testing import assert_frame_equal

    resumed_agg = pl.read_parquet(out / "aggregate.parquet")
    assert_frame_equal(resumed_agg, whole_agg, check_exact=False, rel_tol=1e-12, abs_tol=1e-15)
    assert not [p for p in (out / "sat").iterdir() if p.suffix != ".parquet"]  # no temporary files left


def test_truncated_or_corrupted_shards_are_redone(maps_data, uninterrupted, tmp_path):
    import shutil

    out = tmp_path / "damaged"
    shutil.copytree(uninterrupted, out)
    truncated, flipped = out / "sat" / "part-000003.parquet", out / "sat" / "part-000010.parquet"
    truncated.write_bytes(truncated.read_bytes()[: truncated.stat().st_size // 2])
    data = bytearray(flipped.read_bytes())
    data[len(data) // 2] ^= 0xFF  # same size, another checksum
    flipped.write_bytes(bytes(data))
    (out / "sat" / ".part-000011.parquet.tmp").write_bytes(b"half a shard")
    with (out / "manifest.jsonl").open("a") as fh:
        fh.write('{"shard": 12, "torn')  # a crash while appending
    summary = _run(maps_data, out, shard_size=7, batch_size=5, run_id="feedf00d", resume=True)
    assert summary.resumed_shards == 33 and summary.explained == 14  # two shards of 7 redone
    assert _sat(out).equals(_sat(uninterrupted))
    assert not (out / "sat" / ".part-000011.parquet.tmp").exists()
    manifest = [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]
    assert sorted(m["shard"] for m in manifest) == list(range(35))  # one line per shard


def test_resume_with_other_settings_is_refused(maps_data, uninterrupted, tmp_path):
    import shutil

    out = tmp_path / "other"
    shutil.copytree(uninterrupted, out)
    with pytest.raises(ValueError, match="settings differ: shard_size: 7 then, 8 now"):
        _run(maps_data, out, shard_size=8, batch_size=5, resume=True)
    with pytest.raises(ValueError, match="batch_size: 5 then, 6 now"):
        _run(maps_data, out, shard_size=7, batch_size=6, resume=True)
    with pytest.raises(ValueError, match="already holds a run"):
        _run(maps_data, out, shard_size=7, batch_size=5)
    with pytest.raises(ValueError, match="under run id 'aaaa0000'"):
        _run(maps_data, out, shard_size=7, batch_size=5, resume=True, run_id="aaaa0000")


def test_resume_with_other_inputs_is_refused(maps_data, uninterrupted, tmp_path):
    import shutil

    maps = tmp_path / "maps"
    shutil.copytree(maps_data["maps"], maps)
    (maps / "part-0005.npz").unlink()
    out = tmp_path / "fewer"
    shutil.copytree(uninterrupted, out)
    data = {**maps_data, "maps": maps}
    with pytest.raises(ValueError, match=r"settings differ:.*items: .*'count': 240.* then, .*'count': 200"):
        _run(data, out, shard_size=7, batch_size=5, resume=True)


def test_memory_stays_bounded_when_the_tables_would_not_fit(tmp_path):
    """2 million rows: the whole table is several times what the pipeline may hold (peak RSS, measured).

    The pipeline alone (summarize=False): sat_fast.aggregate's streaming median, run at the end, holds memory
    that grows with the rows under Polars 2.1 (about 150 bytes per row; see benchmarks/RESULTS.md).
    """
    data = write_maps_dataset(tmp_path / "big", count=8000, size=32, segments=250, per_file=1000)
    script = textwrap.dedent(
        """
        import resource, sys, sat_fast
        maps, masks, names, out = sys.argv[1:5]
        start = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        done = sat_fast.run(saliency_maps=maps, masks=masks, names=names, out=out, shard_size=256,
                            batch_size=64, progress=False, summarize=False)
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        print(start * 1024, peak * 1024, done.rows)
        """
    )
    argv = [sys.executable, "-c", script, *(str(data[k]) for k in ("maps", "masks", "names")), str(tmp_path / "o")]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=900, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    start, peak, rows = map(int, done.stdout.split()[-3:])
    table_bytes = _sat(tmp_path / "o").estimated_size()
    assert rows > 1_900_000
    # Holding the tables at once would add table_bytes; the run adds a fraction (shards, prefetch, two map files).
    assert peak - start < table_bytes / 2, (peak - start, table_bytes)


def test_bad_items_stop_the_run_or_are_skipped(maps_data, tmp_path):
    import shutil

    masks = tmp_path / "masks"
    shutil.copytree(maps_data["masks"], masks)
    (masks / "img000004.png").unlink()
    Image.fromarray(np.zeros((16, 15), np.uint8)).save(masks / "img000009.png")
    (masks / "img000100.png").write_bytes(b"not a png")
    data = {**maps_data, "masks": masks}
    with pytest.raises(BadItemError, match=r"1 of 240 images have no masks \(img000004\).*skip_bad=True"):
        _run(data, tmp_path / "a", shard_size=50)
    (masks / "img000004.png").write_bytes((maps_data["masks"] / "img000004.png").read_bytes())
    with pytest.raises(BadItemError, match=r"saliency map of image 'img000009'.* is 16x16 but its mask is 16x15"):
        _run(data, tmp_path / "b", shard_size=50)
    (masks / "img000004.png").unlink()
    done = _run(data, tmp_path / "c", shard_size=50, skip_bad=True)
    assert [s["image_id"] for s in done.skipped] == ["img000004", "img000009", "img000100"]
    reasons = [s["reason"] for s in done.skipped]
    assert "has no mask" in reasons[0] and "16x15" in reasons[1] and "img000100" in reasons[2]
    assert json.loads((tmp_path / "c" / "run.json").read_text())["skipped"] == done.skipped
    assert "skipped 3 bad items" in done.text() and "img000100" in done.text()
    assert _sat(tmp_path / "c")["image_id"].n_unique() == 237


def test_options_are_checked(maps_data, tmp_path):
    with pytest.raises(ValueError, match="backend must be one of 'stream', 'ray'; got 'spark'"):
        _run(maps_data, tmp_path / "o", backend="spark")
    with pytest.raises(ValueError, match="shard_size must be a positive integer, got 0"):
        _run(maps_data, tmp_path / "o", shard_size=0)
    with pytest.raises(ValueError, match="saliency_maps= replaces the model and the images"):
        sat_fast.run("m.py:f", saliency_maps=maps_data["maps"], masks=maps_data["masks"], out=tmp_path / "o")
    np.savez(tmp_path / "not_maps.npz", weights=np.zeros(3))  # a glob that also matches some other .npz
    with pytest.raises(ValueError, match=r"not_maps.npz has no 'image_id' array \(or column\): is it a maps file"):
        sat_fast.run(saliency_maps=tmp_path / "*.npz", masks=maps_data["masks"], out=tmp_path / "o")
    assert not (tmp_path / "o").exists()
    assert os.fspath(tmp_path)  # the folder itself was not touched by the refused calls


def test_a_batch_of_one_vocabulary_is_reduced_as_the_per_image_segments_are():
    """The batched label-map path of reduce_batch gives the rows segment_table gives per-image Segments."""
    from sat_fast.pipeline import Explained, Item, Loaded, reduce_batch
    from sat_fast.segments import Segments

    rng = np.random.default_rng(3)
    names = tuple(f"s{k}" for k in range(12))
    label_maps = rng.integers(0, 13, (5, 20, 20)).astype(np.uint8)  # 12 = no segment
    segments = [Segments(names, 20, 20, label_map=lab) for lab in label_maps]
    maps = rng.standard_normal((5, 1, 20, 20)).astype(np.float32)
    batch = [Loaded(Item(10 + i, f"i{i}", 0), maps[i, 0], segments[i]) for i in range(5)]
    explained = Explained(maps, [np.arange(5) % 3], None)
    got = pl.concat(reduce_batch(batch, explained, metadata={"run": "x"}, class_names=["a", "b", "c"]))
    want = sat_fast.segment_table(
        maps[:, 0], segments=segments, image_ids=[f"i{i}" for i in range(5)], targets=np.arange(5) % 3,
        metadata={"run": "x"}, class_names=["a", "b", "c"],
    )  # fmt: skip
    assert got.drop("__position").equals(want)
    assert got["__position"].to_list() == [10 + int(i[1]) for i in got["image_id"]]
