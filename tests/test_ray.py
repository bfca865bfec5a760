"""backend="ray": the pipeline as a Ray Data job on a local Ray instance equals the streaming path row for row."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from PIL import Image

import sat_fast
from sat_fast import cli
from sat_fast.segments import from_label_map, load_segments, save_segments

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
FACTORY = f"{EXAMPLES / 'user_model.py'}:make_model"
RUN_ID = "0123abcd"

# A model without a transform (any image size) and, for the interrupted run, one whose transform is slow.
_FACTORY_FILE = """
import time
import jax.numpy as jnp

WEIGHTS = jnp.array([[1.0, -0.5], [0.3, 0.8], [-0.7, 0.2]])


def make(checkpoint=None):
    def apply(x):
        return jnp.tanh(x @ WEIGHTS).mean(axis=(1, 2))

    return apply, ("a", "b")


class Slow:
    def image(self, image):
        time.sleep(0.4)
        return image

    def segments(self, segments):
        return segments


def make_slow(checkpoint=None):
    return make(checkpoint)[0], ("a", "b"), Slow()


def make_wrong(checkpoint=None):
    return make(checkpoint)[0], ("a", "b", "c")  # two logits, three class names
"""


def _sat(out: Path) -> pl.DataFrame:
    """The run's per-image SAT in the shards' order (the canonical order), shard by shard."""
    files = sorted((out / "sat").glob("part-*.parquet"))
    assert files, f"no shards in {out}"
    return pl.concat([pl.read_parquet(f) for f in files])


def _manifest(out: Path) -> list[dict]:
    lines = (out / "manifest.jsonl").read_text().splitlines()
    return sorted((json.loads(line) for line in lines), key=lambda r: r["shard"])


def _same_runs(a: Path, b: Path) -> None:
    """Two run folders hold the same tables, row for row, and the same shards, ranges and skipped items."""
    assert _sat(a).equals(_sat(b))
    assert pl.read_parquet(a / "aggregate.parquet").equals(pl.read_parquet(b / "aggregate.parquet"))
    keys = ("shard", "start", "stop", "file", "rows", "skipped")
    assert [{k: r[k] for k in keys} for r in _manifest(a)] == [{k: r[k] for k in keys} for r in _manifest(b)]
    ja, jb = json.loads((a / "run.json").read_text()), json.loads((b / "run.json").read_text())
    assert ja["status"] == jb["status"] == "complete"
    assert ja["skipped"] == jb["skipped"] and ja["settings"] == jb["settings"]


@pytest.fixture(scope="module")
def maps_data(tmp_path_factory):
    """Precomputed maps in two files of two sizes; one map has no mask (skipped with skip_bad)."""
    work = tmp_path_factory.mktemp("maps")
    (work / "maps").mkdir()
    rng = np.random.default_rng(3)
    segments = []
    for name, (n, h, w) in {"a": (5, 12, 12), "b": (4, 10, 16)}.items():
        ids = [f"{name}{i}" for i in range(n)]
        maps = rng.standard_normal((n, h, w)).astype(np.float32)
        np.savez(
            work / "maps" / f"{name}.npz",
            maps=maps,
            image_id=ids,
            target=rng.integers(0, 3, n),
            label=rng.integers(0, 3, n),
        )
        labels = rng.integers(0, 4, (n, h, w)).astype(np.uint8)
        np.save(work / f"{name}.labels.npy", labels)
        segments += (
            from_label_map(labels[1:], ["sky", "dog", "cat", "grass"], image_ids=ids[1:])
            if name == "b"
            else (from_label_map(labels, ["sky", "dog", "cat", "grass"], image_ids=ids))
        )
    save_segments(segments, work / "masks.npz")
    return work


def _maps_run(data: Path, out: Path, backend: str, **options):
    return sat_fast.run(
        saliency_maps=data / "maps", masks=data / "masks.npz", out=out, backend=backend, progress=False,
        run_id=RUN_ID, skip_bad=True, class_names=["c0", "c1", "c2"], **{"batch_size": 2, "shard_size": 2, **options},
    )  # fmt: skip


def test_precomputed_maps_give_the_streaming_tables(ray_local, maps_data, tmp_path):
    stream = _maps_run(maps_data, tmp_path / "stream", "stream")
    ray = _maps_run(maps_data, tmp_path / "ray", "ray")
    _same_runs(tmp_path / "stream", tmp_path / "ray")
    assert ray.rows == stream.rows > 0 and len(ray.files) == 5
    assert ray.skipped == stream.skipped == [{"image_id": "b0", "reason": "image 'b0': has no mask in " +
                                             str((maps_data / "masks.npz").resolve())}]  # fmt: skip
    # Independent check of the rows of one map: its mean over each segment's pixels, in float64.
    with np.load(maps_data / "maps" / "b.npz") as z:
        saliency = z["maps"][2].astype(np.float64)
    label_map = np.load(maps_data / "b.labels.npy")[2]
    rows = _sat(tmp_path / "ray").filter(pl.col("image_id") == "b2")
    names = ["sky", "dog", "cat", "grass"]
    expected = {n: saliency[label_map == v].mean() for v, n in enumerate(names) if (label_map == v).any()}
    assert dict(zip(rows["segment"].cast(pl.String), rows["mean"], strict=True)) == pytest.approx(expected, rel=1e-6)


def test_model_path_gives_the_streaming_tables_through_the_cli(ray_local, tmp_path):
    sys.path.insert(0, str(EXAMPLES))
    try:
        from make_example_data import write_example_data
    finally:
        sys.path.remove(str(EXAMPLES))
    data = write_example_data(tmp_path / "data", per_class=3)
    common = ["run", "--model", FACTORY, "--images", str(data / "images"), "--masks", str(data / "masks"),
              "--names", str(data / "names.csv"), "--steps", "2", "--batch-size", "2", "--shard-size", "4",
              "--targets", "all", "--no-progress"]  # fmt: skip
    assert cli.main([*common, "--out", str(tmp_path / "stream")]) == 0
    run_id = json.loads((tmp_path / "stream" / "run.json").read_text())["run"]
    done = sat_fast.run(
        FACTORY, images=data / "images", masks=data / "masks", names=data / "names.csv", steps=2, batch_size=2,
        shard_size=4, targets="all", progress=False, out=tmp_path / "ray", backend="ray", run_id=run_id,
    )  # fmt: skip
    assert done.items == 9 and len(done.files) == 3 and done.rows == _sat(tmp_path / "stream").height
    _same_runs(tmp_path / "stream", tmp_path / "ray")
    # The command, given the tests' local instance by its address as a cluster would be (a new run id).
    assert cli.main([*common, "--out", str(tmp_path / "cli"), "--backend", "ray", "--ray-address", ray_local]) == 0
    assert _sat(tmp_path / "cli").drop("run").equals(_sat(tmp_path / "stream").drop("run"))


def _mixed_images(root: Path, sizes: list[tuple[int, int]]) -> Path:
    """Images of several sizes in class folders, PNG label maps beside them, a names table."""
    rng = np.random.default_rng(5)
    for n, (h, w) in enumerate(sizes):
        stem = f"{'ab'[n % 2]}/{n:03d}.png"
        for folder, array in (
            ("images", rng.integers(0, 256, (h, w, 3)).astype(np.uint8)),
            ("masks", rng.integers(0, 3, (h, w)).astype(np.uint8)),
        ):
            (root / folder / stem).parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(array).save(root / folder / stem)
    (root / "names.csv").write_text("value,name\n0,ground\n1,body\n2,head\n")
    (root / "factory.py").write_text(_FACTORY_FILE)
    return root


def test_mixed_image_sizes_give_the_streaming_tables(ray_local, tmp_path):
    data = _mixed_images(tmp_path / "data", [(12, 12), (10, 14), (12, 12), (10, 14), (12, 12), (9, 9), (10, 14)])

    def run(backend):
        return sat_fast.run(
            f"{data / 'factory.py'}:make", images=data / "images", masks=data / "masks", names=data / "names.csv",
            steps=3, batch_size=2, shard_size=5, out=tmp_path / backend, backend=backend, progress=False,
            run_id=RUN_ID, targets="predicted",
        )  # fmt: skip

    stream, ray = run("stream"), run("ray")
    assert ray.rows == stream.rows
    _same_runs(tmp_path / "stream", tmp_path / "ray")
    assert _sat(tmp_path / "ray")["image_id"].unique(maintain_order=True).to_list() == sorted(
        p.relative_to(data / "images").with_suffix("").as_posix() for p in (data / "images").rglob("*.png")
    )


@pytest.mark.parametrize(("first", "then"), [("ray", "ray"), ("stream", "ray"), ("ray", "stream")])
def test_resume_keeps_finished_shards_and_redoes_broken_ones_across_backends(
    ray_local, maps_data, tmp_path, first, then
):
    _maps_run(maps_data, tmp_path / "whole", "stream")
    out = tmp_path / "run"
    _maps_run(maps_data, out, first)
    shards = sorted((out / "sat").glob("part-*.parquet"))
    assert len(shards) == 5
    kept = {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in (shards[0], shards[4])}
    shards[1].write_bytes(shards[1].read_bytes()[:-20])  # corrupted (a torn write)
    shards[2].unlink()  # lost
    lines = (out / "manifest.jsonl").read_text().splitlines()
    (out / "manifest.jsonl").write_text("\n".join(line for line in lines if '"shard": 3' not in line) + '\n{"sha')
    done = _maps_run(maps_data, out, then, resume=True)
    assert done.resumed_shards == 2 and done.explained == 6  # shards 1-3: items 2..7
    assert {p: (Path(out / "sat" / p).stat().st_ino, Path(out / "sat" / p).stat().st_mtime_ns) for p in kept} == kept
    _same_runs(tmp_path / "whole", out)


def test_a_killed_ray_driver_resumes_to_the_uninterrupted_tables(ray_local, tmp_path):
    sizes = [(12, 12), (10, 14)] * 6
    data = _mixed_images(tmp_path / "data", sizes)
    options = {"images": data / "images", "masks": data / "masks", "names": data / "names.csv", "steps": 2,
               "batch_size": 2, "shard_size": 2, "progress": False}  # fmt: skip
    out = tmp_path / "ray"
    command = [
        str(Path(sys.executable).parent / "sat-fast"), "run", "--model", f"{data / 'factory.py'}:make_slow",
        "--images", str(data / "images"), "--masks", str(data / "masks"), "--names", str(data / "names.csv"),
        "--steps", "2", "--batch-size", "2", "--shard-size", "2", "--no-progress", "--backend", "ray",
        "--ray-address", ray_local, "--out", str(out),
    ]  # fmt: skip
    with (tmp_path / "driver.log").open("wb") as log:
        driver = subprocess.Popen(command, stdout=log, stderr=log, cwd=tmp_path)
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and driver.poll() is None:
            if (out / "manifest.jsonl").is_file() and (out / "manifest.jsonl").read_text().count("\n") >= 1:
                break
            time.sleep(0.05)
        running = driver.poll() is None
        os.kill(driver.pid, signal.SIGKILL)
        driver.wait()
    assert running, (tmp_path / "driver.log").read_text()
    assert 1 <= len(_manifest(out)) < len(sizes) // 2  # interrupted part-way
    run_id = json.loads((out / "run.json").read_text())["run"]
    done = sat_fast.run(f"{data / 'factory.py'}:make_slow", out=out, backend="ray", resume=True, **options)
    assert done.resumed_shards >= 1 and done.items == len(sizes)
    sat_fast.run(f"{data / 'factory.py'}:make_slow", out=tmp_path / "whole", run_id=run_id, **options)
    _same_runs(tmp_path / "whole", out)


def test_a_bad_item_stops_the_ray_run_naming_it(ray_local, maps_data, tmp_path):
    masks = list(load_segments(maps_data / "masks.npz"))  # a0..a4, b1..b3
    masks[5] = masks[0].replace(image_id="b1")  # a mask of another size than its map
    masks.append(masks[6].replace(image_id="b0"))
    save_segments(masks, tmp_path / "wrong.npz")
    with pytest.raises(ValueError, match="saliency map of image 'b1': is 10x16 but its mask is 12x12"):
        sat_fast.run(
            saliency_maps=maps_data / "maps",
            masks=tmp_path / "wrong.npz",
            out=tmp_path / "wrong",
            backend="ray",
            progress=False,
            shard_size=3,
            skip_bad=False,
            class_names=None,
        )


def test_an_error_in_an_actor_is_the_users_one_line_error(ray_local, tmp_path, capsys):
    data = _mixed_images(tmp_path / "data", [(12, 12), (10, 14)])
    argv = ["run", "--model", f"{data / 'factory.py'}:make_wrong", "--images", str(data / "images"), "--masks",
            str(data / "masks"), "--names", str(data / "names.csv"), "--steps", "1", "--no-progress", "--backend",
            "ray", "--out", str(tmp_path / "out")]  # fmt: skip
    assert cli.main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err == "sat-fast: error: the model returns 2 logits per image but its factory names 3 classes"


def test_without_ray_the_error_says_how_to_install_it(tmp_path, monkeypatch, capsys, maps_data):
    monkeypatch.setitem(sys.modules, "ray", None)  # as if not installed
    with pytest.raises(ImportError, match=r"pip install 'sat_fast\[ray\]'"):
        _maps_run(maps_data, tmp_path / "out", "ray")
    assert not (tmp_path / "out").exists()  # nothing written
    argv = ["run", "--saliency-maps", str(maps_data / "maps" / "a.npz"), "--masks", str(maps_data / "masks.npz"),
            "--backend", "ray", "--out", str(tmp_path / "out")]  # fmt: skip
    assert cli.main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "pip install 'sat_fast[ray]'" in err
    with pytest.raises(ValueError, match="ray_address='x:1' is used only with backend='ray'"):
        sat_fast.run(
            saliency_maps=maps_data / "maps" / "a.npz", masks=maps_data / "masks.npz", out=tmp_path, ray_address="x:1"
        )


def _coco_rle(mask: np.ndarray) -> list[int]:
    """COCO's uncompressed run lengths of a boolean mask (column-major, background first), written here."""
    flat = mask.T.reshape(-1).astype(np.int8)
    edges = np.flatnonzero(np.diff(flat)) + 1
    runs = np.diff(np.concatenate([[0], edges, [flat.size]])).tolist()
    return ([0] + runs) if flat[0] else runs


@pytest.mark.parametrize("kind", ["png", "rle"])
def test_a_parquet_image_dataset_with_a_mask_column_gives_the_streaming_tables(ray_local, tmp_path, kind):
    data = _mixed_images(tmp_path / "data", [(12, 12), (10, 14), (12, 12), (9, 9), (10, 14), (12, 12), (10, 14)])
    paths = sorted((data / "images").rglob("*.png"))
    ids = [p.relative_to(data / "images").with_suffix("").as_posix() for p in paths]
    names = ["ground", "body", "head"]
    masks = []
    for i in ids:
        png = data / "masks" / f"{i}.png"
        if kind == "png":
            masks.append(png.read_bytes())
            continue
        label_map = np.asarray(Image.open(png))
        masks.append(
            [
                {"size": list(label_map.shape), "counts": _coco_rle(label_map == v), "category": names[v]}
                for v in np.unique(label_map).tolist()
            ]
        )
    pl.DataFrame(
        {
            "image_id": ids,
            "image": [{"bytes": p.read_bytes(), "path": p.name} for p in paths],
            "label": [i.split("/")[0] for i in ids],
            "mask": masks,
        }
    ).write_parquet(tmp_path / "d.parquet", row_group_size=3)

    def run(backend):
        return sat_fast.run(
            f"{data / 'factory.py'}:make", images=tmp_path / "d.parquet", mask_column="mask",
            names=data / "names.csv", steps=3, batch_size=2, shard_size=3, out=tmp_path / backend, backend=backend,
            progress=False, run_id=RUN_ID, targets="predicted",
        )  # fmt: skip

    stream, ray = run("stream"), run("ray")
    assert ray.rows == stream.rows and ray.items == len(ids)
    _same_runs(tmp_path / "stream", tmp_path / "ray")
