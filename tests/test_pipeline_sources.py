"""sat_fast.run's sources: precomputed maps (.npz, .npy, Parquet) equal the model path; mixed image sizes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image
from sat_reference import label_stats

import sat_fast

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
SAT_COLUMNS = ["image_id", "target", "label", "segment", "pixels", "area", "sum", "mean", "share", "rank", "min"]


def _example(root: Path, size: int, per_class: int) -> Path:
    sys.path.insert(0, str(EXAMPLES))
    try:
        from make_example_data import write_example_data
    finally:
        sys.path.remove(str(EXAMPLES))
    return write_example_data(root, per_class=per_class, size=size)


def _model():
    sys.path.insert(0, str(EXAMPLES))
    try:
        from user_model import make_model
    finally:
        sys.path.remove(str(EXAMPLES))
    return make_model()


def _sat(out: Path) -> pl.DataFrame:
    return pl.read_parquet(out / "sat" / "*.parquet")


@pytest.fixture(scope="module")
def model_run(tmp_path_factory):
    """The example model on 32x32 images (its transform changes nothing), explained by the pipeline."""
    root = tmp_path_factory.mktemp("same")
    data = _example(root / "data", 32, 3)
    out = root / "model"
    sat_fast.run(
        _model(), images=data / "images", masks=data / "masks", names=data / "names.csv", out=out, steps=4,
        batch_size=9, progress=False,
    )  # fmt: skip
    return data, out


def test_precomputed_maps_give_the_model_paths_tables(model_run, tmp_path):
    data, out = model_run
    apply, class_names, transform = _model()
    paths = sorted((data / "images").rglob("*.png"))
    ids = [p.relative_to(data / "images").with_suffix("").as_posix() for p in paths]
    labels = np.array([class_names.index(i.split("/")[0]) for i in ids])
    images = np.stack([transform.image(np.asarray(Image.open(p).convert("RGB"), np.float32) / 255.0) for p in paths])
    maps, _ = sat_fast.saliency(apply, images, labels, steps=4, return_info=True)  # as the pipeline calls it
    maps = np.asarray(maps)
    model_sat = _sat(out).select(SAT_COLUMNS)

    np.savez(tmp_path / "maps.npz", maps=maps, image_id=np.array(ids), target=labels, label=labels)
    (tmp_path / "npy").mkdir()
    np.save(tmp_path / "npy" / "maps.npy", maps)
    np.save(tmp_path / "npy" / "maps.image_id.npy", np.array(ids))
    np.save(tmp_path / "npy" / "maps.target.npy", labels)
    np.save(tmp_path / "npy" / "maps.label.npy", labels)
    pl.DataFrame(
        {"image_id": ids, "saliency": pl.Series(maps, dtype=pl.Array(pl.Float32, (32, 32))), "target": labels,
         "label": labels}
    ).write_parquet(tmp_path / "maps.parquet")  # fmt: skip
    for name, source in (("npz", tmp_path / "maps.npz"), ("npy", tmp_path / "npy"), ("pq", tmp_path / "maps.parquet")):
        done = sat_fast.run(
            saliency_maps=source, masks=data / "masks", names=data / "names.csv", out=tmp_path / name,
            class_names=class_names, progress=False,
        )  # fmt: skip
        assert _sat(tmp_path / name).select(SAT_COLUMNS).equals(model_sat), name
        assert _sat(tmp_path / name)["class"].cast(pl.String).to_list() == _sat(out)["class"].cast(pl.String).to_list()
        assert done.aggregate is not None and done.aggregate.height > 0


def test_mixed_image_sizes_are_batched_by_shape(tmp_path):
    """No transform: 32x32 and 40x40 images go to the model in batches of one shape, rows in source order."""
    small, large = _example(tmp_path / "small", 32, 2), _example(tmp_path / "large", 40, 2)
    images, masks = tmp_path / "images", tmp_path / "masks"
    for source, prefix in ((small, "s"), (large, "l")):
        for p in sorted((source / "images").rglob("*.png")):
            rel = p.relative_to(source / "images")
            for folder, src in ((images, p), (masks, source / "masks" / rel)):
                (folder / rel.parent).mkdir(parents=True, exist_ok=True)
                (folder / rel.parent / f"{prefix}{rel.name}").write_bytes(src.read_bytes())
    apply, class_names, _ = _model()
    out = tmp_path / "out"
    sat_fast.run(
        (apply, class_names), images=images, masks=masks, names=small / "names.csv", out=out, steps=2, batch_size=3,
        progress=False,
    )  # fmt: skip
    sat = _sat(out)
    paths = sorted(images.rglob("*.png"))
    ids = [p.relative_to(images).with_suffix("").as_posix() for p in paths]
    assert sat["image_id"].unique(maintain_order=True).to_list() == ids  # canonical order across the shapes
    names = [line.split(",")[1] for line in (small / "names.csv").read_text().splitlines()[1:]]
    for path, image_id in zip(paths, ids, strict=True):
        image = np.asarray(Image.open(path).convert("RGB"), np.float32)[None] / 255.0
        label = class_names.index(image_id.split("/")[0])
        one = np.asarray(sat_fast.saliency(apply, image, np.array([label]), steps=2), np.float64)
        label_map = np.asarray(Image.open(masks / f"{image_id}.png"))[None]
        ref = label_stats(one, label_map, len(names))
        rows = sat.filter(pl.col("image_id") == image_id)
        present = ref["count"][0] > 0
        assert rows["segment"].cast(pl.String).to_list() == [n for n, p in zip(names, present, strict=True) if p]
        np.testing.assert_allclose(rows["sum"].to_numpy(), ref["sum"][0][present], rtol=1e-4, atol=1e-9)


def test_captum_example_writes_shards_the_pipeline_reads(tmp_path):
    pytest.importorskip("torch")
    pytest.importorskip("captum")
    done = subprocess.run(
        [sys.executable, str(EXAMPLES / "captum_saliency.py"), str(tmp_path / "maps")],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    with np.load(tmp_path / "maps" / "part-0000.npz") as z:
        assert z["maps"].ndim == 3 and len(z["image_id"]) == len(z["maps"]) == len(z["target"])


def test_a_parquet_dataset_with_image_and_mask_columns_gives_the_folders_tables(model_run, tmp_path):
    data, out = model_run
    paths = sorted((data / "images").rglob("*.png"))
    ids = [p.relative_to(data / "images").with_suffix("").as_posix() for p in paths]
    pl.DataFrame(
        {
            "image_id": ids,
            "image": [{"bytes": p.read_bytes(), "path": p.name} for p in paths],  # as Hugging Face datasets store it
            "label": [i.split("/")[0] for i in ids],  # class names (indices work too)
            "mask": [(data / "masks" / f"{i}.png").read_bytes() for i in ids],
        }
    ).write_parquet(tmp_path / "dataset.parquet", row_group_size=4)
    sat_fast.run(
        _model(), images=tmp_path / "dataset.parquet", mask_column="mask", names=data / "names.csv",
        out=tmp_path / "pq", steps=4, batch_size=9, progress=False,
    )  # fmt: skip
    assert _sat(tmp_path / "pq").drop("run").equals(_sat(out).drop("run"))
    with pytest.raises(ValueError, match="mask_column= names a column of a Parquet image dataset"):
        sat_fast.run(_model(), images=data / "images", mask_column="mask", names=data / "names.csv", out=tmp_path / "x")


def _column_major_runs(mask: np.ndarray) -> list[int]:
    """COCO's uncompressed RLE of a boolean mask (column-major runs, starting with background), written here."""
    flat = mask.T.reshape(-1)
    runs, current, length = [], False, 0
    for v in flat:
        if bool(v) != current:
            runs.append(length)
            current, length = bool(v), 0
        length += 1
    runs.append(length)
    return runs


def _names(data: Path) -> dict[int, str]:
    rows = (data / "names.csv").read_text().splitlines()[1:]
    return {int(v): n for v, n in (row.split(",", 1) for row in rows)}


def test_a_parquet_mask_column_of_coco_rle_structs_gives_the_png_tables(model_run, tmp_path):
    data, out = model_run
    names = _names(data)
    paths = sorted((data / "images").rglob("*.png"))
    ids = [p.relative_to(data / "images").with_suffix("").as_posix() for p in paths]
    masks = []
    for n, i in enumerate(ids):
        label_map = np.asarray(Image.open(data / "masks" / f"{i}.png"))
        h, w = label_map.shape
        rle = []
        for value in np.unique(label_map).tolist():
            region = label_map == value
            parts = [region]
            if n % 2 == 0:  # a category in two instances (top half, the rest): they merge into one segment
                top = region.copy()
                top[h // 2 :] = False
                parts = [part for part in (top, region & ~top) if part.any()]
            rle += [{"size": [h, w], "counts": _column_major_runs(part), "category": value} for part in parts]
        masks.append(rle)
    # Two files (a glob): categories by name in the first, by names-table value in the second.
    half = len(ids) // 2
    for name, rows in (("a", slice(0, half)), ("b", slice(half, None))):
        column = masks[rows]
        if name == "a":
            column = [[{**e, "category": names[e["category"]]} for e in rle] for rle in column]
        pl.DataFrame(
            {"image_id": ids[rows], "image": [p.read_bytes() for p in paths[rows]],
             "label": [i.split("/")[0] for i in ids[rows]], "mask": column}
        ).write_parquet(tmp_path / f"{name}.parquet", row_group_size=4)  # fmt: skip
    sat_fast.run(
        _model(), images=str(tmp_path / "*.parquet"), mask_column="mask", names=data / "names.csv",
        out=tmp_path / "rle", steps=4, batch_size=9, progress=False,
    )  # fmt: skip
    got, want = _sat(tmp_path / "rle").drop("run"), _sat(out).drop("run")
    assert got.height == want.height
    exact = ["image_id", "target", "label", "pixels", "area", "rank"]
    assert got.select(exact).equals(want.select(exact))
    assert got["segment"].cast(pl.String).equals(want["segment"].cast(pl.String))
    for column in ("sum", "mean", "share", "min"):  # the RLE kernel sums column by column: last bits may differ
        np.testing.assert_allclose(
            got[column].to_numpy(), want[column].to_numpy(), rtol=1e-6, atol=1e-9, err_msg=column
        )


def test_bad_coco_rle_cells_name_the_image_and_the_problem(model_run, tmp_path):
    from sat_fast.pipeline import BadItemError

    data, _ = model_run
    paths = sorted((data / "images").rglob("*.png"))[:2]
    ids = [p.relative_to(data / "images").with_suffix("").as_posix() for p in paths]
    h, w = np.asarray(Image.open(paths[0])).shape[:2]
    good = {"size": [h, w], "counts": [0, h * w], "category": "body"}
    cases = {
        "counts sum to": {"size": [h, w], "counts": [3, 4], "category": "body"},
        "masks must have their image's size": {"size": [h + 1, w], "counts": [0, (h + 1) * w], "category": "body"},
        "category 99 is not in the names table": {"size": [h, w], "counts": [1, h * w - 1], "category": 99},
        "declares": {"size": [100000, 100000], "counts": [1], "category": "body"},
    }
    for n, (message, bad) in enumerate(cases.items()):
        folder = tmp_path / f"case{n}"
        folder.mkdir()
        masks = [[good], [bad]] if isinstance(bad["category"], str) else [[good | {"category": 1}], [bad]]
        pl.DataFrame(
            {"image_id": ids, "image": [p.read_bytes() for p in paths], "label": [i.split("/")[0] for i in ids],
             "mask": masks}
        ).write_parquet(folder / "d.parquet")  # fmt: skip
        with pytest.raises(BadItemError, match=message) as info:
            sat_fast.run(
                _model(), images=folder / "d.parquet", mask_column="mask", names=data / "names.csv", out=folder / "o",
                steps=2, batch_size=2, progress=False,
            )  # fmt: skip
        assert ids[1] in str(info.value)
    # PNG bytes without names are refused before anything is written
    pl.DataFrame(
        {"image_id": ids, "image": [p.read_bytes() for p in paths], "label": [i.split("/")[0] for i in ids],
         "mask": [p.read_bytes() for p in paths]}
    ).write_parquet(tmp_path / "png.parquet")  # fmt: skip
    with pytest.raises(ValueError, match="need their names"):
        sat_fast.run(_model(), images=tmp_path / "png.parquet", mask_column="mask", out=tmp_path / "p", progress=False)
    assert not (tmp_path / "p").exists()


def test_a_batch_of_consecutive_shard_rows_is_a_view_not_a_copy():
    from sat_fast.pipeline import stack_rows

    shard = np.random.default_rng(0).normal(size=(6, 5, 4)).astype(np.float32)
    rows = [np.asarray(shard[i], np.float32) for i in range(1, 5)]  # what a .npy shard source yields
    batch = stack_rows(rows)
    assert np.shares_memory(batch, shard) and not batch.flags.writeable
    np.testing.assert_array_equal(batch, shard[1:5])
    # anything else is stacked (copied), with the values np.stack gives
    for other in (
        [shard[0], shard[2]],  # a gap
        [shard[2], shard[1]],  # another order
        [shard[1], shard[1]],  # a repeat
        [shard[0], shard.copy()[1]],  # another buffer
        [shard[0][:, ::2], shard[1][:, ::2]],  # not contiguous
        [shard[0], np.zeros((5, 4), np.float64)],  # another dtype
        [shard[0][:4], shard[1][:3]],  # another shape
    ):
        if len({a.shape for a in other}) > 1:
            with pytest.raises(ValueError):
                stack_rows(other)
            continue
        got = stack_rows(other)
        assert not np.shares_memory(got, shard)
        np.testing.assert_array_equal(got, np.stack(other))


@pytest.mark.parametrize("empty", [0, 1, 3])
def test_rows_carry_their_images_source_positions_when_an_image_has_no_segments(empty):
    from sat_fast.pipeline import Item, Loaded, maps_of, reduce_batch
    from sat_fast.segments import Segments

    rng = np.random.default_rng(empty)
    names = ("a", "b", "c")
    batch = []
    for n in range(4):
        label_map = rng.integers(0, 3, (5, 6)).astype(np.uint8)
        if n == empty:
            label_map[:] = 3  # every pixel in no segment: this image has no rows
        segments = Segments(names, 5, 6, label_map=label_map)  # value 3 = len(names): in no segment
        item = Item(100 + 7 * n, f"img{n}", 0)
        batch.append(Loaded(item, rng.normal(size=(5, 6)).astype(np.float32), segments, {"target": 0}))
    (table,) = reduce_batch(batch, maps_of(batch), metadata={}, class_names=None)
    expected = {f"img{n}": 100 + 7 * n for n in range(4) if n != empty}
    assert table.height > 0 and f"img{empty}" not in table["image_id"].to_list()
    assert table["__position"].to_list() == [expected[i] for i in table["image_id"].to_list()]


def test_a_batch_of_a_memory_mapped_npy_shards_rows_is_a_view(tmp_path):
    from sat_fast.pipeline import MapShards, stack_rows

    maps = np.random.default_rng(1).normal(size=(6, 4, 5)).astype(np.float32)
    np.save(tmp_path / "part.npy", maps)
    np.save(tmp_path / "part.image_id.npy", np.array([f"i{n}" for n in range(6)]))
    np.save(tmp_path / "part.target.npy", np.arange(6) % 2)
    source = MapShards(tmp_path / "part.npy")
    rows = [source.read(item)[0] for item in source.items()[1:5]]
    batch = stack_rows(rows)
    assert not batch.flags.owndata and np.shares_memory(batch, rows[0])  # no copy of the maps
    np.testing.assert_array_equal(batch, maps[1:5])


@settings(max_examples=300, deadline=None)
@given(
    picks=st.one_of(  # runs of consecutive rows (the case that is a view), and anything else
        st.tuples(st.integers(0, 7), st.integers(0, 8)).map(lambda t: list(range(t[0], min(8, t[0] + t[1])))),
        st.lists(st.integers(0, 7), min_size=0, max_size=6),
    ),
    shape=st.sampled_from([(8, 3, 4), (8, 12), (8, 2, 3, 2)]),
    dtype=st.sampled_from([np.float32, np.float64, np.uint8]),
    other=st.sampled_from(["none", "copy", "other base", "slice", "list"]),
)
def test_the_zero_copy_check_agrees_with_its_definition(picks, shape, dtype, other):
    """``_core.rows_back_to_back`` against the rule written out here: views of one base, alike, back to back."""
    from sat_fast import _core

    base = np.arange(np.prod(shape), dtype=dtype).reshape(shape)
    arrays: list = [base[i] for i in picks]
    if other == "copy" and arrays:
        arrays[-1] = arrays[-1].copy()
    elif other == "other base" and arrays:
        arrays[-1] = base.copy()[picks[-1]]
    elif other == "slice" and arrays:
        arrays = [a[..., :1] for a in arrays]
    elif other == "list" and arrays:
        arrays[-1] = arrays[-1].tolist()
    # Whole rows of one array, in order, each right after the previous one (a slice of a row is never back to
    # back with the next row's slice; a copy, another array or a list is not a view of this one).
    expected = other == "none" and len(picks) > 1 and picks == list(range(picks[0], picks[0] + len(picks)))
    assert _core.rows_back_to_back(arrays) == expected
    if len(arrays) > 1 and all(isinstance(a, np.ndarray) for a in arrays):
        from sat_fast.pipeline import stack_rows

        shapes = {a.shape for a in arrays}
        if len(shapes) == 1:
            np.testing.assert_array_equal(stack_rows(arrays), np.stack(arrays))


def test_an_image_id_in_two_map_shards_is_refused_not_counted_twice(tmp_path):
    from sat_fast.segments import from_label_map, save_segments

    rng = np.random.default_rng(4)
    (tmp_path / "maps").mkdir()
    for name, ids in (("a", ["x0", "x1", "x2"]), ("b", ["x3", "x1"])):  # "x1" in both shards
        np.savez(
            tmp_path / "maps" / f"{name}.npz", maps=rng.normal(size=(len(ids), 4, 4)).astype(np.float32),
            image_id=np.array(ids), target=np.zeros(len(ids), np.int64),
        )  # fmt: skip
    labels = rng.integers(0, 2, (4, 4, 4)).astype(np.uint8)
    save_segments(from_label_map(labels, ["a", "b"], image_ids=["x0", "x1", "x2", "x3"]), tmp_path / "m.npz")
    with pytest.raises(ValueError, match=r"image ids must be unique across the inputs .*'x1' \(2 times\)"):
        sat_fast.run(
            saliency_maps=tmp_path / "maps", masks=tmp_path / "m.npz", out=tmp_path / "run", progress=False,
            batch_size=2,  # the two "x1" in different batches: no table would ever see both
        )  # fmt: skip
    assert not (tmp_path / "run").exists()
