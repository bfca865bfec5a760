"""Segments, their loaders, the npz bundle and segment_table(segments=...)."""

from __future__ import annotations

import io
import json
import sys
import tracemalloc
import warnings
import zipfile
import zlib

import numpy as np
import polars as pl
import pycocotools.mask as coco_mask
import pytest
from PIL import Image

import sat_fast
from sat_fast import segment_table
from sat_fast.segments import (
    LoadReport,
    Segments,
    from_coco,
    from_label_map,
    from_masks,
    from_png,
    load_segments,
    merge_vocabularies,
    open_segments,
    rename_map,
    rle_encode,
    save_segments,
    segment_with,
)


def coco_decode(rle) -> np.ndarray:
    """pycocotools' decoder, the reference; it trips a numpy 2 DeprecationWarning inside its Cython code."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "__array__ implementation", DeprecationWarning)
        return coco_mask.decode(rle).astype(bool)


def ref_rows(x: np.ndarray, masks: dict[str, np.ndarray]) -> dict[str, tuple[int, float, float, float]]:
    """name -> (pixels, mean, share, max), independent float64 numpy."""
    x = x.astype(np.float64)
    total = np.abs(x).sum()
    out = {}
    for name, m in masks.items():
        if m.any():
            v = x[m]
            out[name] = (int(v.size), v.mean(), np.abs(v).sum() / total, v.max())
    return out


def table_rows(t: pl.DataFrame, image_id) -> dict[str, tuple[int, float, float, float]]:
    sub = t.filter(pl.col("image_id") == image_id)
    return {r["segment"]: (r["pixels"], r["mean"], r["share"], r["max"]) for r in sub.iter_rows(named=True)}


def assert_rows_close(got, want):
    assert set(got) == set(want)
    for name in want:
        assert got[name][0] == want[name][0], name
        np.testing.assert_allclose(got[name][1:], want[name][1:], rtol=1e-9, atol=1e-12)


# ---------------------------------------------------------------- label maps


def test_label_map_names_list_dict_and_ignore():
    lab = np.array([[0, 0, 3], [255, 3, 3]], np.uint8)
    seg = from_label_map(lab, {0: "sky", 3: "dog", 7: "cat"}, ignore_index=255, image_ids=["a"])[0]
    assert seg.names == ("sky", "dog") and seg.image_id == "a" and seg.kind == "labels"
    m = seg.masks()
    np.testing.assert_array_equal(m[0], lab == 0)
    np.testing.assert_array_equal(m[1], lab == 3)
    segs = from_label_map(np.stack([lab, lab]).astype(np.int64), ["a", "b", "c", "d"], ignore_index=255)
    assert [s.names for s in segs] == [("a", "d"), ("a", "d")]


def test_label_values_sharing_a_name_form_one_segment():
    lab = np.array([[1, 2], [3, 1]])
    seg = from_label_map(lab, {1: "eye", 2: "eye", 3: "fur"})[0]
    assert seg.names == ("eye", "fur")
    np.testing.assert_array_equal(seg.masks()[0], np.isin(lab, [1, 2]))


def test_label_value_missing_from_names_table():
    lab = np.zeros((3, 4), np.uint8)
    lab[2, 1] = 9
    with pytest.raises(
        ValueError, match=r"image 'img7'.*label value 9 at pixel \(2, 1\) is missing from the names table"
    ):
        from_label_map(lab, ["bg"], image_ids=["img7"])


def test_names_tables_from_csv_and_json(tmp_path):
    csv_path = tmp_path / "names.csv"
    csv_path.write_text("value,name\n0,background\n5,person\n")
    json_path = tmp_path / "names.json"
    json_path.write_text(json.dumps({"0": "background", "5": "person"}))
    list_path = tmp_path / "list.json"
    list_path.write_text(json.dumps(["background", "a", "b", "c", "d", "person"]))
    lab = np.array([[0, 5]])
    for table in (csv_path, json_path, list_path):
        assert from_label_map(lab, table)[0].names == ("background", "person")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ValueError, match=r"bad.json is not valid JSON"):
        from_label_map(lab, bad)


# ---------------------------------------------------------------- PNG files


def write_png(path, array, mode=None, palette=False):
    im = Image.fromarray(array, mode=mode) if mode else Image.fromarray(array)
    if palette:
        im = im.convert("P") if im.mode != "P" else im
        im.putpalette([c for i in range(256) for c in ((i * 37) % 256, (i * 91) % 256, (i * 13) % 256)])
    im.save(path)
    return path


def test_png_greyscale_palette_and_16bit(tmp_path):
    lab = np.array([[0, 1, 2], [2, 2, 255]], np.uint8)
    grey = write_png(tmp_path / "grey.png", lab)
    pal = Image.fromarray(lab, mode="L").convert("P")
    pal.putpalette([c for i in range(256) for c in (i, 255 - i, (7 * i) % 256)])
    pal.save(tmp_path / "pal.png")
    wide = Image.fromarray(np.array([[0, 1000], [1000, 1000]], np.uint16))
    wide.save(tmp_path / "wide.png")
    segs = from_png([grey, tmp_path / "pal.png"], ["bg", "cat", "dog"], ignore_index=255)
    assert [s.image_id for s in segs] == ["grey", "pal"]
    for s in segs:
        assert s.names == ("bg", "cat", "dog") and s.source.endswith(".png")
        np.testing.assert_array_equal(s.masks()[2], lab == 2)
    with Image.open(tmp_path / "pal.png") as im:
        assert im.mode == "P"
    w = from_png([tmp_path / "wide.png"], {0: "bg", 1000: "wall"})[0]
    assert w.names == ("bg", "wall")
    np.testing.assert_array_equal(w.masks()[1], np.array([[0, 1], [1, 1]], bool))


def test_corrupt_truncated_and_colour_pngs(tmp_path):
    good = write_png(tmp_path / "good.png", np.zeros((40, 40), np.uint8))
    data = good.read_bytes()
    (tmp_path / "trunc.png").write_bytes(data[: len(data) // 2])
    (tmp_path / "junk.png").write_bytes(b"not a png at all")
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(tmp_path / "rgb.png")
    for name in ("trunc.png", "junk.png"):
        with pytest.raises(ValueError, match=f"cannot read label PNG .*{name}"):
            from_png([tmp_path / name], ["bg"])
    with pytest.raises(ValueError, match=r"rgb.png has mode RGB"):
        from_png([tmp_path / "rgb.png"], ["bg"])
    report = LoadReport()
    segs = from_png(
        [good, tmp_path / "trunc.png", tmp_path / "junk.png", tmp_path / "rgb.png"], ["bg"], report=report, lazy=True
    )
    assert not isinstance(segs, list)
    assert [s.image_id for s in segs] == ["good"]
    assert [p.item for p in report] == ["trunc", "junk", "rgb"]
    assert "trunc.png" in str(report)


# ---------------------------------------------------------------- COCO


def blob(h, w, cy, cx, r):
    yy, xx = np.mgrid[:h, :w]
    return (yy - cy) ** 2 + (xx - cx) ** 2 < r * r


@pytest.fixture
def coco(tmp_path):
    h, w = 30, 40
    m1, m2, _m3 = blob(h, w, 8, 8, 6), blob(h, w, 12, 14, 5), blob(h, w, 20, 30, 7)
    enc = lambda m: coco_mask.encode(np.asfortranarray(m.astype(np.uint8)))  # noqa: E731
    compressed = enc(m1)
    compressed["counts"] = compressed["counts"].decode()
    uncompressed = {"size": [h, w], "counts": rle_encode(m2).tolist()}
    polygon = [[25.0, 15.0, 35.0, 15.0, 35.0, 25.0, 25.0, 25.0]]
    data = {
        "images": [
            {"id": 1, "height": h, "width": w, "file_name": "a.jpg"},
            {"id": 2, "height": 10, "width": 12, "file_name": "b.jpg"},
        ],
        "categories": [{"id": 1, "name": "person"}, {"id": 3, "name": "dog"}],
        "annotations": [
            {"id": 10, "image_id": 1, "category_id": 1, "segmentation": compressed, "iscrowd": 1},
            {"id": 11, "image_id": 1, "category_id": 1, "segmentation": uncompressed, "iscrowd": 1},
            {"id": 12, "image_id": 1, "category_id": 3, "segmentation": polygon, "iscrowd": 0},
            {"id": 13, "image_id": 2, "category_id": 3, "segmentation": [[1, 1, 8, 1, 8, 6]], "iscrowd": 0},
        ],
    }
    path = tmp_path / "instances.json"
    path.write_text(json.dumps(data))
    poly_mask = coco_decode(coco_mask.merge(coco_mask.frPyObjects(polygon, h, w)))
    return path, data, {"person": m1 | m2, "dog": poly_mask, "m1": m1, "m2": m2}


def test_coco_merges_instances_and_matches_pycocotools(coco):
    path, _, masks = coco
    segs = from_coco(path)
    assert [s.image_id for s in segs] == [1, 2]
    a = segs[0]
    assert a.names == ("person", "dog") and a.kind == "rle" and a.shape == (30, 40)
    got = a.masks()
    np.testing.assert_array_equal(got[0], masks["person"])
    np.testing.assert_array_equal(got[1], masks["dog"])
    kept = from_coco(path, keep_instances=True, select_ids=[1])
    assert kept[0].names == ("person#1", "person#2", "dog#1")
    np.testing.assert_array_equal(kept[0].masks()[1], masks["m2"])
    lazy = from_coco(json.loads(path.read_text()), lazy=True)
    assert next(iter(lazy)).names == ("person", "dog")


def test_coco_rle_needs_no_pycocotools_and_polygons_say_what_they_need(monkeypatch):
    """The ``coco`` extra is for polygons only: RLE annotations load without pycocotools."""
    monkeypatch.setitem(sys.modules, "pycocotools", None)  # import pycocotools now raises ImportError
    monkeypatch.setitem(sys.modules, "pycocotools.mask", None)
    data = {
        "images": [{"id": 1, "height": 2, "width": 3}],
        "categories": [{"id": 5, "name": "dog"}],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 5, "segmentation": {"size": [2, 3], "counts": [1, 4, 1]}}
        ],
    }
    (seg,) = from_coco(data)
    assert seg.names == ("dog",) and seg.kind == "rle"
    data["annotations"][0]["segmentation"] = [[0.0, 0.0, 2.0, 0.0, 2.0, 1.0]]
    with pytest.raises(ValueError, match=r"polygons need pycocotools \(pip install 'sat_fast\[coco\]'\)"):
        from_coco(data)


def test_coco_table_equals_reference(coco):
    path, _, masks = coco
    segs = from_coco(path)
    rng = np.random.default_rng(0)
    maps = [rng.standard_normal(s.shape) for s in segs]
    t = segment_table(maps, segments=segs, unassigned="rest")
    assert t["image_id"].dtype == pl.Int64 and t["segment"].dtype == pl.Categorical
    covered = masks["person"] | masks["dog"]
    want = ref_rows(maps[0], {"person": masks["person"], "dog": masks["dog"], "rest": ~covered})
    assert_rows_close(table_rows(t, 1), want)
    dog2 = segs[1].masks()[0]
    assert_rows_close(table_rows(t, 2), ref_rows(maps[1], {"dog": dog2, "rest": ~dog2}))


def bad_coco(data, **change):
    d = json.loads(json.dumps(data))
    for ann in d["annotations"]:
        if ann["id"] == 11:
            ann.update(change)
    return d


def test_coco_bad_inputs_raise_naming_file_and_annotation(coco, tmp_path):
    _path, data, _ = coco
    cases = {
        "counts": (
            {"segmentation": {"size": [30, 40], "counts": [5, 10]}},
            r"annotation 11 \(image 1\): RLE counts sum to 15, expected",
        ),
        "size": (
            {"segmentation": {"size": [3, 4], "counts": [12]}},
            r"annotation 11.*RLE size \[3, 4\] does not match",
        ),
        "outside": ({"segmentation": [[0, 0, 50, 0, 50, 5]]}, r"annotation 11.*polygon 0 lies outside the image"),
        "empty": ({"segmentation": {"size": [30, 40], "counts": [1200]}}, r"annotation 11.*the mask is empty"),
        "image": ({"image_id": 99}, r"annotation 11 refers to image id 99, which is not in 'images'"),
        "category": ({"category_id": 5}, r"annotation 11 \(image 1\) has unknown category id 5"),
        "string": ({"segmentation": {"size": [30, 40], "counts": "\x01\x02"}}, r"annotation 11.*malformed COCO RLE"),
    }
    for key, (change, message) in cases.items():
        file = tmp_path / f"{key}.json"
        file.write_text(json.dumps(bad_coco(data, **change)))
        with pytest.raises(ValueError, match=message) as info:
            from_coco(file)
        assert f"{key}.json" in str(info.value)


def test_coco_images_without_annotations_and_report(coco, tmp_path):
    _, data, masks = coco
    d = bad_coco(data, segmentation={"size": [30, 40], "counts": [5, 10]})
    d["images"].append({"id": 3, "height": 5, "width": 5})
    d["annotations"].append({"id": 20, "image_id": 42, "category_id": 1, "segmentation": [[0, 0, 1, 0, 1, 1]]})
    file = tmp_path / "bad.json"
    file.write_text(json.dumps(d))
    with pytest.raises(ValueError, match=r"annotation 20 refers to image id 42"):
        from_coco(file)
    d["annotations"].pop()
    file.write_text(json.dumps(d))
    with pytest.raises(ValueError, match=r"bad.json: image 3 has no annotations"):
        from_coco(file, select_ids=[3])
    report = LoadReport()
    segs = from_coco(file, report=report)
    assert [s.image_id for s in segs] == [1, 2, 3]
    assert segs[2].names == () and segs[2].shape == (5, 5)
    assert [p.item for p in report] == ["annotation 11", "image 3"]
    np.testing.assert_array_equal(segs[0].masks()[0], masks["m1"])
    # an image without segments still has a table row for its unassigned pixels
    t = segment_table([np.ones(s.shape) for s in segs], segments=segs, unassigned="rest")
    assert table_rows(t, 3) == {"rest": (25, 1.0, 1.0, 1.0)}


# ---------------------------------------------------------------- open vocabulary


def test_from_masks_scores_synonyms_groups_and_union():
    h, w = 6, 7
    left, right, eyes, fur = (np.zeros((h, w), bool) for _ in range(4))
    left[1, 1] = right[1, 5] = eyes[2, 2] = True
    fur[3:] = True
    outputs = [
        [("left eye", left, 0.9), ("right eye", right, 0.8), ("fur", fur, 0.1)],
        {"eyes": eyes, "fur": fur},
    ]
    segs = from_masks(
        outputs,
        score_threshold=0.5,
        synonyms={"eyes": "eye"},
        groups={"eye": ["left eye", "right eye"]},
        image_ids=["x", "y"],
    )
    assert segs[0].names == ("eye",) and segs[1].names == ("eye", "fur")
    np.testing.assert_array_equal(segs[0].masks()[0], left | right)
    assert merge_vocabularies(segs) == ["eye", "fur"]
    rng = np.random.default_rng(2)
    sal = rng.standard_normal((2, h, w))
    t = segment_table(sal, segments=segs)
    assert t["image_id"].to_list() == ["x", "y", "y"]
    assert_rows_close(table_rows(t, "x"), ref_rows(sal[0], {"eye": left | right}))
    assert_rows_close(table_rows(t, "y"), ref_rows(sal[1], {"eye": eyes, "fur": fur}))


def test_rename_merges_segments_of_every_kind(tmp_path, coco):
    labels = from_label_map(np.array([[0, 1], [2, 2]]), ["left eye", "right eye", "fur"])[0]
    masks = from_masks([{"left eye": np.eye(2, dtype=bool), "right eye": ~np.eye(2, dtype=bool)}])[0]
    rle = from_coco(coco[0], keep_instances=True, select_ids=[1])[0]
    groups = rename_map(groups={"eye": ["left eye", "right eye"], "person": ["person#1", "person#2"]})
    for seg in (labels, masks, rle):
        before = seg.masks()
        after = seg.rename(groups)
        assert after.kind == seg.kind
        for name in after.names:
            members = [i for i, n in enumerate(seg.names) if groups.get(n, n) == name]
            np.testing.assert_array_equal(after.masks()[after.names.index(name)], before[members].any(axis=0))
    assert labels.rename(groups).names == ("eye", "fur")
    assert rle.rename(groups).names == ("person", "dog#1")


def test_rename_map_chains_and_conflicts():
    assert rename_map(synonyms={"eyes": "eye", "eye": "face"}) == {"eyes": "face", "eye": "face"}
    with pytest.raises(ValueError, match="'iris' is mapped to both 'eye' and 'pupil'"):
        rename_map(synonyms={"iris": "eye"}, groups={"pupil": ["iris"]})


def test_masks_of_wrong_shape_and_empty_masks():
    m = np.ones((4, 4), bool)
    with pytest.raises(ValueError, match=r"image 1: mask 'b' has shape \(3, 4\), expected \(4, 4\)"):
        from_masks([{"a": m}, {"a": m, "b": np.ones((3, 4), bool)}])
    with pytest.raises(ValueError, match=r"image 0: mask 'z' is empty"):
        from_masks([{"z": np.zeros((4, 4), bool)}])
    report = LoadReport()
    segs = from_masks([{"z": np.zeros((4, 4), bool), "a": m}], report=report)
    assert segs[0].names == ("a",) and len(report) == 1
    with pytest.raises(ValueError, match=r"image 0: no masks to take the image size from"):
        from_masks([{}])
    assert from_masks([{}], sizes=[(2, 3)])[0].shape == (2, 3)


def test_segmenter_protocol_in_the_loop():
    calls = []

    def segmenter(images):
        calls.append(len(images))
        return [{"bright": img > 0.5, "dark": img <= 0.5} for img in images]

    rng = np.random.default_rng(4)
    images = [rng.random((5 + i, 6)) for i in range(5)]
    segs = segment_with(segmenter, images, batch_size=2, synonyms={"dark": "shadow"})
    assert calls == [2, 2, 1] and [s.image_id for s in segs] == [0, 1, 2, 3, 4]
    assert segs[3].names == ("bright", "shadow") and segs[3].shape == (8, 6)
    t = segment_table(images, segments=segs)
    assert_rows_close(table_rows(t, 4), ref_rows(images[4], {"bright": images[4] > 0.5, "shadow": images[4] <= 0.5}))
    with pytest.raises(TypeError, match="segmenter must be callable"):
        segment_with(42, images)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="segmenter returned 1 results for a batch of 2 images"):
        segment_with(lambda imgs: [{}], images[:2])
    with pytest.raises(ValueError, match=r"image 0: mask 'bright' has shape \(5, 6\), expected \(9, 9\)"):
        segment_with(lambda imgs: [{"bright": np.ones((5, 6), bool)}], [np.zeros((9, 9))])


# ---------------------------------------------------------------- npz bundles


def all_kinds(tmp_path, coco_path):
    labels = from_label_map(
        [np.array([[0, 1, 2], [2, 2, 9]]), np.array([[1]])], ["a", "b", "c"], ignore_index=9, image_ids=[10, 11]
    )
    masks = from_masks([{"eye": np.eye(5, dtype=bool), "fur": ~np.eye(5, dtype=bool)}], image_ids=[12])
    rle = from_coco(coco_path, keep_instances=True)
    return labels + masks + [r for r in rle if r.image_id == 1]


def test_npz_round_trip_of_every_kind(tmp_path, coco):
    segs = all_kinds(tmp_path, coco[0])
    path = tmp_path / "bundle.npz"
    save_segments(segs, path)
    back = load_segments(path)
    assert [s.kind for s in back] == ["labels", "labels", "masks", "rle"]
    for a, b in zip(segs, back, strict=True):
        assert a.names == b.names and a.image_id == b.image_id and a.shape == b.shape
        np.testing.assert_array_equal(a.masks(), b.masks())
    with np.load(path, allow_pickle=False) as z:
        assert z["vocabulary"].dtype.kind == "U"
    strs = from_label_map([np.zeros((2, 2), np.uint8)], ["only"], image_ids=["p"])
    save_segments(strs, tmp_path / "s.bundle")
    assert load_segments(tmp_path / "s.bundle")[0].image_id == "p"


def test_an_opened_bundle_builds_each_image_as_load_segments_does_without_reading_the_masks(tmp_path, coco):
    import pickle

    segs = all_kinds(tmp_path, coco[0])
    # every kind, twice and interleaved, so that each image's offsets into the shared arrays are exercised
    segs = [s.replace(image_id=f"{n}") for n, s in enumerate(segs + segs[::-1])]
    path = tmp_path / "bundle.npz"
    save_segments(segs, path)
    eager = load_segments(path)
    lazy = open_segments(path)
    assert len(lazy) == len(eager) and lazy.image_ids == [s.image_id for s in eager]
    for n in [3, 0, 7, 1, 5, 2, 6, 4]:  # any order
        a, b = eager[n], lazy[n]
        assert (a.names, a.image_id, a.shape, a.kind) == (b.names, b.image_id, b.shape, b.kind)
        np.testing.assert_array_equal(a.masks(), b.masks())
    assert [s.image_id for s in lazy[1:3]] == ["1", "2"] and lazy[-1].image_id == "7"
    again = pickle.loads(pickle.dumps(lazy))  # pickles as its path: a worker opens its own
    assert len(pickle.dumps(lazy)) < 1000 and again[2].names == eager[2].names

    # Opening reads the index, not the masks: 64 label maps of 512x512 (16 MB) stay in the file.
    big = from_label_map(np.random.default_rng(0).integers(0, 3, (64, 512, 512)).astype(np.uint8), ["a", "b", "c"])
    save_segments(big, tmp_path / "big.npz")
    tracemalloc.start()
    try:
        opened = open_segments(tmp_path / "big.npz")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 2**20, peak
    np.testing.assert_array_equal(opened[63].label_map, big[63].label_map)

    # A label value out of range is found when its image is built, naming it.
    bad = from_label_map(np.zeros((2, 3, 4), np.uint8), ["a", "b"], image_ids=["ok", "broken"])
    save_segments(bad, tmp_path / "bad.npz")
    with zipfile.ZipFile(tmp_path / "bad.npz") as z:
        members = {n: z.read(n) for n in z.namelist()}
    labels = np.load(io.BytesIO(members["labels.npy"]))
    labels[-1] = 9
    buffer = io.BytesIO()
    np.save(buffer, labels)
    members["labels.npy"] = buffer.getvalue()
    with zipfile.ZipFile(tmp_path / "bad.npz", "w") as z:  # stored, as np.savez writes it
        for n, data in members.items():
            z.writestr(n, data)
    opened = open_segments(tmp_path / "bad.npz")
    assert opened[0].image_id == "ok"
    with pytest.raises(ValueError, match=r"image 'broken' has label values above"):
        opened[1]
    # A compressed bundle (not what save_segments writes) is read, not mapped: the same segments.
    with zipfile.ZipFile(tmp_path / "big.npz") as z, zipfile.ZipFile(tmp_path / "zipped.npz", "w") as out:
        for n in z.namelist():
            out.writestr(n, z.read(n), compress_type=zipfile.ZIP_DEFLATED)
    np.testing.assert_array_equal(open_segments(tmp_path / "zipped.npz")[5].label_map, big[5].label_map)


def test_npz_bad_bundles(tmp_path, coco):
    segs = all_kinds(tmp_path, coco[0])
    path = tmp_path / "bundle.npz"
    save_segments(segs, path)
    data = path.read_bytes()
    (tmp_path / "trunc.npz").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match=r"trunc.npz"):
        load_segments(tmp_path / "trunc.npz")
    with np.load(path, allow_pickle=False) as z:
        arrays = dict(z)
    # sizes that disagree are caught from the headers, before reading the data
    wrong = dict(arrays, heights=arrays["heights"] * 1000)
    np.savez(tmp_path / "wrong.npz", **wrong)
    with pytest.raises(ValueError, match=r"wrong.npz: labels has shape \(7,\), expected \(7000,\)"):
        load_segments(tmp_path / "wrong.npz")
    pickled = dict(arrays, vocabulary=np.array(["a", 1], dtype=object))
    np.savez(tmp_path / "pickled.npz", **pickled)
    with pytest.raises(ValueError, match="holds Python objects"):
        load_segments(tmp_path / "pickled.npz")
    missing = {k: a for k, a in arrays.items() if k != "kinds"}
    np.savez(tmp_path / "missing.npz", **missing)
    with pytest.raises(ValueError, match="not a sat_fast segments bundle"):
        load_segments(tmp_path / "missing.npz")
    big = dict(arrays, name_ids=arrays["name_ids"] + 100)
    np.savez(tmp_path / "big.npz", **big)
    with pytest.raises(ValueError, match="name_ids point outside the vocabulary"):
        load_segments(tmp_path / "big.npz")


# ---------------------------------------------------------------- tables


def test_table_over_mixed_kinds_sizes_and_vocabularies(tmp_path, coco):
    segs = all_kinds(tmp_path, coco[0])
    rng = np.random.default_rng(9)
    maps = [rng.standard_normal(s.shape).astype(np.float32) for s in segs]
    t = segment_table(maps, segments=segs, targets=[1, 2, 3, 4], metadata={"split": "val"}, unassigned="none")
    assert t.columns[:4] == ["image_id", "target", "split", "segment"]
    assert set(t["segment"].cast(pl.String).unique()) == {
        "a",
        "b",
        "c",
        "eye",
        "fur",
        "person#1",
        "person#2",
        "dog#1",
        "none",
    }
    for s, x in zip(segs, maps, strict=True):
        m = s.masks()
        want = {n: m[i] for i, n in enumerate(s.names)}
        want["none"] = ~m.any(axis=0)
        assert_rows_close(table_rows(t, s.image_id), ref_rows(x, want))
    ranks = t.filter(pl.col("image_id") == 10).sort("rank")["rank"].to_list()
    assert ranks[0] == 1
    stats = sat_fast.segment_stats(maps, segments=segs)
    assert stats.shape == (4, 3)


def test_tables_built_in_chunks_equal_one_pass(monkeypatch):
    import sat_fast.table as segments_module

    rng = np.random.default_rng(12)
    sizes = [(3, 4), (5, 2), (4, 4), (2, 6), (6, 3)]
    outputs = [{f"n{(i + j) % 7}": rng.random(hw) < 0.5 for j in range(i + 1)} for i, hw in enumerate(sizes)]
    segs = from_masks(outputs, image_ids=["a", "b", "c", "d", "e"])
    maps = [rng.standard_normal(hw) for hw in sizes]
    kwargs = dict(
        segments=segs, targets=[1, 2, 3, 4, 5], metadata={"split": "x", "label": [0, 1, 0, 1, 0]}, unassigned="rest"
    )
    whole = segment_table(maps, **kwargs)
    monkeypatch.setattr(segments_module, "_CHUNK_ENTRIES", 6)
    assert list(segments_module._chunks(segs)) == [(0, 2), (2, 3), (3, 4), (4, 5)]
    chunked = segment_table(maps, **kwargs)
    assert chunked.schema == whole.schema
    assert chunked.rows() == whole.rows()
    with pytest.raises(ValueError, match="image_ids must be unique"):
        segment_table(maps, segments=segs, image_ids=[1, 2, 3, 4, 1])


def test_saliency_shape_must_match_each_image():
    segs = from_label_map([np.zeros((4, 5), np.uint8), np.zeros((2, 3), np.uint8)], ["a"], image_ids=["p", "q"])
    with pytest.raises(
        ValueError, match=r"saliency of image 'q' has shape \(3, 2\) but its segments have shape \(2, 3\)"
    ):
        segment_table([np.zeros((4, 5)), np.zeros((3, 2))], segments=segs)
    with pytest.raises(ValueError, match="2 saliency maps but 1 Segments"):
        segment_table(np.zeros((2, 4, 5)), segments=segs[:1])
    with pytest.raises(ValueError, match="segments= replaces label_map"):
        segment_table(np.zeros((1, 4, 5)), np.zeros((1, 4, 5), np.uint8), names=["a"], segments=segs[:1])
    with pytest.raises(ValueError, match="non-finite value"):
        segment_table([np.full((4, 5), np.nan), np.zeros((2, 3))], segments=segs)


def test_top_level_exports():
    assert sat_fast.Segments is Segments
    assert sat_fast.segments.from_coco is from_coco
    assert "Segments" in sat_fast.__all__


def test_segments_validation():
    with pytest.raises(ValueError, match="give exactly one of label_map, words and counts"):
        Segments(("a",), 2, 2)
    with pytest.raises(ValueError, match=r"label map shape \(3, 2\) does not match the image shape \(2, 2\)"):
        Segments(("a",), 2, 2, label_map=np.zeros((3, 2), np.uint8))
    with pytest.raises(ValueError, match="duplicate segment name 'a'"):
        Segments(("a", "a"), 2, 2, label_map=np.zeros((2, 2), np.uint8))
    with pytest.raises(ValueError, match="packed masks must be uint64 of shape"):
        Segments(("a",), 2, 2, words=np.zeros((2, 1), np.uint64))


# ---------------------------------------------------------------- hardening (issue 11)


@pytest.mark.parametrize(
    ("counts", "shown"),
    [([2**32 + 1, 3], "4294967297"), ([-1, 5], "-1"), ([1.9, 2.1], "1.9"), ([True, False, True, True], "True")],
)
def test_rle_counts_out_of_range_or_not_integers_are_rejected(counts, shown):
    where = r"image 'x' in f\.json: RLE count"
    with pytest.raises(ValueError, match=rf"{where} {shown} .*must be an integer in \[0, 2\*\*32\)"):
        Segments(("a",), 2, 2, counts=np.array(counts), instance_offsets=[0, len(counts)], segment_instances=[0, 1],
                 image_id="x", source="f.json")  # fmt: skip
    with pytest.raises(ValueError, match=rf"{where} {shown} "):
        Segments.from_rle(["a"], [[np.array(counts)]], 2, 2, image_id="x", source="f.json")
    with pytest.raises(ValueError, match=rf"RLE count {shown} "):
        sat_fast.segments.rle_decode(np.array(counts), 2, 2)
    # integral floats and every integer dtype are still counts
    seg = Segments.from_rle(["a"], [[np.array([1.0, 3.0])]], 2, 2)
    assert seg.counts.dtype == np.uint32 and seg.counts.tolist() == [1, 3]


@pytest.mark.parametrize("bad", [2**32 + 1, -1])
def test_npz_counts_out_of_range_are_rejected(tmp_path, coco, bad):
    save_segments(all_kinds(tmp_path, coco[0]), tmp_path / "b.npz")
    with np.load(tmp_path / "b.npz", allow_pickle=False) as z:
        arrays = dict(z)
    counts = arrays["counts"].astype(np.int64)
    counts[1] = bad
    np.savez(tmp_path / "bad.npz", **dict(arrays, counts=counts))
    with pytest.raises(ValueError, match=rf"image 1 in .*bad\.npz: RLE count {bad} "):
        load_segments(tmp_path / "bad.npz")


def test_duplicate_coco_image_ids_are_an_error(coco, tmp_path):
    _, data, masks = coco
    d = json.loads(json.dumps(data))
    d["images"].append({"id": 1, "height": 5, "width": 5, "file_name": "c.jpg"})
    file = tmp_path / "dup.json"
    file.write_text(json.dumps(d))
    with pytest.raises(
        ValueError, match=r"dup\.json: image id 1 appears more than once in 'images' \(entries 0 and 2\)"
    ):
        from_coco(file)
    report = LoadReport()
    segs = from_coco(file, report=report)
    assert [p.item for p in report] == ["image 1"]
    assert [s.image_id for s in segs] == [1, 2] and segs[0].shape == (30, 40)  # the first entry, as annotated
    np.testing.assert_array_equal(segs[0].masks()[0], masks["person"])


def test_names_table_values_named_twice_are_an_error(tmp_path):
    lab = np.array([[0, 1]], np.uint8)
    (tmp_path / "n.csv").write_text("value,name\n0,sky\n1,dog\n1,cat\n")
    with pytest.raises(ValueError, match=r"names table .*n\.csv: label value 1 is named both 'dog' and 'cat'"):
        from_label_map(lab, tmp_path / "n.csv")
    (tmp_path / "n.json").write_text('{"0": "sky", "1": "dog", "1": "cat"}')
    with pytest.raises(ValueError, match=r"names table .*n\.json: label value 1 is named both 'dog' and 'cat'"):
        from_label_map(lab, tmp_path / "n.json")
    (tmp_path / "m.json").write_text('{"0": "sky", "1": "dog", "01": "cat"}')
    with pytest.raises(ValueError, match=r"m\.json: label value 1 is named both 'dog' and 'cat'"):
        from_label_map(lab, tmp_path / "m.json")
    with pytest.raises(ValueError, match=r"names table: label value 1 is named both 'dog' and 'cat'"):
        from_label_map(lab, {0: "sky", 1: "dog", "1": "cat"})
    # the same value with the same name twice is harmless
    (tmp_path / "same.csv").write_text("0,sky\n1,dog\n1,dog\n")
    assert from_label_map(lab, tmp_path / "same.csv")[0].names == ("sky", "dog")


def test_png_declaring_a_huge_image_is_a_value_error_the_report_collects(tmp_path, header_only_png):
    bomb = header_only_png(tmp_path / "bomb.png", 60000, 60000, zlib.compress(b""))
    assert bomb.stat().st_size < 100
    with pytest.raises(ValueError, match=r"label PNG .*bomb\.png"):
        from_png([bomb], ["bg"])
    with pytest.raises(ValueError, match=r"label PNG .*bomb\.png"):
        from_png([bomb], ["bg"], max_pixels=None)  # Pillow's own limit, as a ValueError
    good = write_png(tmp_path / "good.png", np.zeros((3, 3), np.uint8))
    report = LoadReport()
    assert [s.image_id for s in from_png([bomb, good], ["bg"], report=report)] == ["good"]
    assert [p.item for p in report] == ["bomb"]


def test_png_max_pixels_is_checked_before_decoding(tmp_path, header_only_png):
    # declares 1000x1000 but its pixel data is garbage: only decoding would notice
    png = header_only_png(tmp_path / "big.png", 1000, 1000, b"garbage")
    message = r"label PNG .*big\.png declares 1000x1000 = 1,000,000 pixels, more than max_pixels=999,999"
    with pytest.raises(ValueError, match=message):
        from_png([png], ["bg"], max_pixels=999_999)
    with pytest.raises(ValueError, match=r"cannot read label PNG .*big\.png"):
        from_png([png], ["bg"], max_pixels=1_000_000)
    with pytest.raises(ValueError, match="max_pixels must be at least 1"):
        from_png([png], ["bg"], max_pixels=0)


@pytest.mark.parametrize(("dtype", "mode_bytes"), [(np.uint8, 1), (np.uint16, 2)])
def test_from_png_working_memory_is_a_small_multiple_of_the_image(tmp_path, dtype, mode_bytes):
    lab = (np.arange(2000 * 1000).reshape(2000, 1000) // 50000 % 7).astype(dtype)
    Image.fromarray(lab).save(tmp_path / "a.png")
    names = [str(i) for i in range(7)]
    from_png([tmp_path / "a.png"], names)  # warm up imports
    tracemalloc.start()
    try:
        seg = from_png([tmp_path / "a.png"], names)[0]
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    np.testing.assert_array_equal(seg.label_map, lab)
    assert peak < 3 * lab.size * mode_bytes + (1 << 20), peak / lab.size


def _zeros_bundle(path, height, width):
    """A bundle declaring one height x width label map of zeros, deflated: a few hundred KB on disk."""
    arrays = {
        "format": np.array("sat_fast.segments/1"),
        "vocabulary": np.array(["bg"]),
        "kinds": np.zeros(1, np.int8),
        "heights": np.array([height], np.int64),
        "widths": np.array([width], np.int64),
        "name_offsets": np.array([0, 1], np.int64),
        "name_ids": np.zeros(1, np.int64),
        "image_ids": np.array(["big"]),
    }
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as zf:
        for key, a in arrays.items():
            with zf.open(key + ".npy", "w") as f:
                np.lib.format.write_array(f, a)
        with zf.open("labels.npy", "w", force_zip64=True) as f:
            np.lib.format.write_array_header_1_0(
                f, {"descr": "|u1", "fortran_order": False, "shape": (height * width,)}
            )
            block = bytes(1 << 24)
            left = height * width
            while left:
                f.write(block[: min(left, len(block))])
                left -= min(left, len(block))
    return path


def test_npz_max_pixels_is_checked_before_reading(tmp_path):
    path = _zeros_bundle(tmp_path / "big.npz", 16385, 16384)  # 2**28 + 16384 pixels
    assert path.stat().st_size < 2_000_000
    tracemalloc.start()
    try:
        with pytest.raises(ValueError, match=r"big\.npz: image 'big' \(entry 0\) declares 16385x16384 = 268,451,840 "):
            load_segments(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 10_000_000
    small = _zeros_bundle(tmp_path / "small.npz", 30, 40)
    with pytest.raises(ValueError, match=r"small\.npz: image 'big' \(entry 0\) declares 30x40 = 1,200 pixels"):
        load_segments(small, max_pixels=1000)
    assert load_segments(small, max_pixels=None)[0].shape == (30, 40)
    huge = _zeros_bundle(tmp_path / "huge.npz", 0, 0)
    with np.load(huge) as z:
        arrays = dict(z)
    np.savez(huge, **dict(arrays, heights=np.array([2**32]), widths=np.array([2**32])))
    with pytest.raises(ValueError, match=r"huge\.npz: labels has shape \(0,\), expected \(18446744073709551616,\)"):
        load_segments(huge, max_pixels=None)  # no int64 wrap-around to 0 pixels


def test_coco_image_sizes_max_pixels_and_the_rle_limit(coco, tmp_path):
    _, data, _ = coco
    d = json.loads(json.dumps(data))
    d["images"].append({"id": 5, "height": 100000, "width": 100000})
    d["annotations"].append(
        {"id": 50, "image_id": 5, "category_id": 1, "segmentation": [[0, 0, 100000, 0, 100000, 100000, 0, 100000]]}
    )
    file = tmp_path / "huge.json"
    file.write_text(json.dumps(d))
    with pytest.raises(ValueError, match=r"huge\.json: image 5 is 100000x100000 = .* too large for COCO RLE"):
        from_coco(file, max_pixels=None)
    report = LoadReport()
    segs = from_coco(file, report=report)
    assert [s.image_id for s in segs] == [1, 2] and [p.item for p in report] == ["image 5"]
    with pytest.raises(
        ValueError, match=r"huge\.json: image 1 declares 30x40 = 1,200 pixels, more than max_pixels=1,000"
    ):
        from_coco(file, max_pixels=1000)
    report = LoadReport()
    assert [s.image_id for s in from_coco(file, max_pixels=1000, report=report)] == [2]
    assert [p.item for p in report] == ["image 1", "image 5"]


def test_npz_round_trip_with_rle_before_other_kinds(tmp_path, coco):
    segs = all_kinds(tmp_path, coco[0])
    segs = segs[3:] + segs[:3]
    save_segments(segs, tmp_path / "b.npz")
    back = load_segments(tmp_path / "b.npz")
    assert [s.kind for s in back] == ["rle", "labels", "labels", "masks"]
    for a, b in zip(segs, back, strict=True):
        assert a.names == b.names and a.image_id == b.image_id and a.shape == b.shape
        np.testing.assert_array_equal(a.masks(), b.masks())


def test_malformed_coco_is_a_value_error_naming_file_and_item(coco, tmp_path):
    _, data, _ = coco
    cases = {
        "size4": ({"segmentation": {"size": 4, "counts": [1200]}}, r"annotation 11 \(image 1\): RLE size 4 does not"),
        "polydict": ({"segmentation": [{"x": 1}]}, r"annotation 11 \(image 1\): polygon 0 must be a flat list"),
        "polystr": ({"segmentation": [["1", "2", "3", "4", "5", "6"]]}, r"annotation 11 .*polygon 0 must be"),
        "ragged": ({"segmentation": {"size": [30, 40], "counts": [[1], [2, 3]]}}, r"annotation 11 .*list of integers"),
        "catid": ({"category_id": [1]}, r"annotation 11 \(image 1\) has unknown category id \[1\]"),
        "imgid": ({"image_id": {"a": 1}}, r"annotation 11 refers to image id \{'a': 1\}"),
    }
    for key, (change, message) in cases.items():
        file = tmp_path / f"{key}.json"
        file.write_text(json.dumps(bad_coco(data, **change)))
        with pytest.raises(ValueError, match=rf"{key}\.json: {message}"):
            from_coco(file)
        report = LoadReport()
        assert [s.image_id for s in from_coco(file, report=report)] == [1, 2]
        assert [p.item for p in report] == ["annotation 11"]
    entries = {
        "nondict_ann": (("annotations", 5), r"'annotations' entry 4 must be an object, got int", "annotation entry 4"),
        "nondict_img": (("images", [3]), r"'images' entry 2 must be an object, got list", "image entry 2"),
        "negative": (
            ("images", {"id": 3, "height": -5, "width": 5}),
            r"image 3 needs a non-negative integer 'height', got -5",
            "image 3",
        ),
        "float_size": (
            ("images", {"id": 3, "height": 5.5, "width": 5}),
            r"image 3 needs a non-negative integer 'height', got 5\.5",
            "image 3",
        ),
        "str_size": (
            ("images", {"id": 3, "height": "5", "width": 5}),
            r"image 3 needs a non-negative integer 'height'",
            "image 3",
        ),
        "nondict_cat": (("categories", "dog"), r"'categories' entry 2 must be an object, got str", "category entry 2"),
        "noname": (("categories", {"id": 9}), r"category 9 needs a string 'name', got None", "category entry 2"),
    }
    for key, ((section, entry), message, item) in entries.items():
        d = json.loads(json.dumps(data))
        d[section].append(entry)
        file = tmp_path / f"{key}.json"
        file.write_text(json.dumps(d))
        with pytest.raises(ValueError, match=rf"{key}\.json: {message}"):
            from_coco(file)
        report = LoadReport()
        assert [s.image_id for s in from_coco(file, report=report)] == [1, 2]
        assert [p.item for p in report] == [item]
    # a negative size with its annotation: the image is left out, not raised, under report=
    d = json.loads(json.dumps(data))
    d["images"][1]["width"] = -12
    (tmp_path / "neg.json").write_text(json.dumps(d))
    report = LoadReport()
    assert [s.image_id for s in from_coco(tmp_path / "neg.json", report=report)] == [1]
    assert [p.item for p in report] == ["image 2"]


def test_malformed_coco_files_are_value_errors(tmp_path):
    files = {
        "list.json": ("[1, 2]", r"list\.json: expected a JSON object with 'images'.*got a list"),
        "deep.json": ("[" * 100000 + "]" * 100000, r"deep\.json are nested too deeply"),
        "latin1.json": (b'{"images": "\xe9"}', r"latin1\.json are not valid JSON"),
        "noimages.json": ('{"annotations": [], "categories": []}', r"noimages\.json: missing or malformed 'images'"),
    }
    for name, (text, message) in files.items():
        path = tmp_path / name
        path.write_bytes(text if isinstance(text, bytes) else text.encode())
        with pytest.raises(ValueError, match=message):
            from_coco(path)
        report = LoadReport()
        assert from_coco(path, report=report) == []
        assert [p.item for p in report] == ["file"] and name in str(report)


def test_malformed_npz_is_a_value_error_naming_the_file(tmp_path, coco):
    save_segments(all_kinds(tmp_path, coco[0]), tmp_path / "b.npz")
    with np.load(tmp_path / "b.npz", allow_pickle=False) as z:
        arrays = dict(z)
    n = len(arrays["kinds"])
    cases = {
        "tall": (
            {"heights": np.full(n, 2**32)},
            r"image 10 \(entry 0\) declares 4294967296x3 = .* more than max_pixels",
        ),
        "kinds2d": (
            {"kinds": arrays["kinds"][:, None]},
            r"array 'kinds' is int8 of shape \(4, 1\), expected a 1-D array",
        ),
        "float_heights": (
            {"heights": arrays["heights"] + 0.5},
            r"array 'heights' is float64 .*expected a 1-D array of integers",
        ),
        "float_labels": ({"labels": arrays["labels"].astype(np.float64)}, r"array 'labels' is float64"),
        "int64_labels": (
            {"labels": arrays["labels"].astype(np.int64)},
            r"array 'labels' is int64, expected uint8, uint16 or int32",
        ),
        "words32": ({"words": arrays["words"].astype(np.uint32)}, r"array 'words' is uint32, expected uint64"),
    }
    for key, (change, message) in cases.items():
        np.savez(tmp_path / f"{key}.npz", **dict(arrays, **change))
        with pytest.raises(ValueError, match=rf"{key}\.npz: {message}"):
            load_segments(tmp_path / f"{key}.npz")
    with pytest.raises(ValueError, match=r"tall\.npz: labels has shape"):
        load_segments(tmp_path / "tall.npz", max_pixels=None)
