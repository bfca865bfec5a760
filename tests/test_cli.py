"""The sat-fast command: run on the example model, aggregate/compare/report, and every user error."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from PIL import Image

from sat_fast import cli

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
FACTORY = f"{EXAMPLES / 'user_model.py'}:make_model"


@pytest.fixture(scope="module")
def example_data(tmp_path_factory):
    sys.path.insert(0, str(EXAMPLES))
    try:
        from make_example_data import write_example_data
    finally:
        sys.path.remove(str(EXAMPLES))
    return write_example_data(tmp_path_factory.mktemp("data"), per_class=3)


@pytest.fixture(scope="module")
def run_output(example_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("results")
    code = cli.main(
        ["run", "--model", FACTORY, "--images", str(example_data / "images"), "--masks", str(example_data / "masks"),
         "--names", str(example_data / "names.csv"), "--steps", "4", "--batch-size", "4", "--out", str(out)]
    )  # fmt: skip
    assert code == 0
    return out


def test_run_writes_tables_and_report(run_output, example_data):
    sat = _table(run_output)
    assert {"image_id", "target", "label", "predicted", "correct", "model", "segment", "mean", "rank"} <= set(
        sat.columns
    )
    assert sat["image_id"].n_unique() == 9
    # class indices follow the sub-folder names' positions in the model's class names
    first = sat.filter(pl.col("image_id") == "bird/000").row(0, named=True)
    assert first["label"] == 1 and first["target"] == 1
    assert set(sat["segment"].cast(pl.String)) <= {
        "background",
        "body",
        "head",
        "eye",
        "tail",
        "fin",
        "beak",
        "leg",
        "ear",
        "watermark",
    }
    agg = pl.read_parquet(run_output / "aggregate.parquet")
    assert {"target", "segment", "presence", "mean", "ci_low"} <= set(agg.columns)
    assert (run_output / "report.html").read_text().startswith("<!DOCTYPE html>")
    # the per-image SAT is the run folder's shards, each listed in the manifest
    shards = sorted((run_output / "sat").glob("*.parquet"))
    manifest = [json.loads(line) for line in (run_output / "manifest.jsonl").read_text().splitlines()]
    assert [run_output / m["file"] for m in manifest] == shards and sum(m["rows"] for m in manifest) == sat.height


def test_aggregate_compare_report_commands(run_output, tmp_path, capsys):
    sat = run_output  # a run folder stands for its per-image SAT shards
    assert cli.main(["aggregate", str(sat), "--by", "label", "correct", "--out", str(tmp_path / "a.parquet")]) == 0
    agg = pl.read_parquet(tmp_path / "a.parquet")
    assert agg.columns[:4] == ["label", "label_class", "correct", "segment"]
    assert cli.main(["compare", str(sat), str(sat), "--out", str(tmp_path / "c.parquet")]) == 0
    assert pl.read_parquet(tmp_path / "c.parquet")["diff"].drop_nulls().abs().max() == 0
    capsys.readouterr()
    assert cli.main(["report", str(run_output / "aggregate.parquet"), "--out", str(tmp_path / "r.html")]) == 0
    assert (tmp_path / "r.html").stat().st_size > 1000
    assert capsys.readouterr().out.strip() == f"wrote {tmp_path / 'r.html'}"  # the report, not also the summary
    assert cli.main(["report", str(run_output), "--out", str(tmp_path / "folder.html")]) == 0  # with its flags
    assert "Shortcut flags" in (tmp_path / "folder.html").read_text(encoding="utf-8")
    assert cli.main(["aggregate", str(sat), "--by", "target"]) == 0  # no --out: printed
    out = capsys.readouterr().out
    header = next(line for line in out.splitlines() if "segment" in line)
    for column in ("target", "segment", "images", "presence", "mean_rank"):  # whole names, not "tar / get"
        assert f" {column} " in header, header


def test_config_file_supplies_options(example_data, tmp_path):
    config = tmp_path / "run.toml"
    config.write_text(
        f'[run]\nmodel = "{FACTORY}"\nimages = "{example_data / "images"}"\nmasks = "{example_data / "masks"}"\n'
        f'names = "{example_data / "names.csv"}"\nsteps = 2\nbatch-size = 9\nout = "{tmp_path / "out"}"\n'
    )
    assert cli.main(["--config", str(config), "run"]) == 0
    assert _table(tmp_path / "out")["image_id"].n_unique() == 9
    # after the command too, as users type it; options on the command line still win
    (tmp_path / "out").rename(tmp_path / "first")
    assert cli.main(["run", "--config", str(config), "--steps", "1"]) == 0
    assert _table(tmp_path / "out")["image_id"].n_unique() == 9


def _table(out):
    """The per-image SAT of a run folder: its shards, read with one glob."""
    return pl.read_parquet(out / "sat" / "*.parquet")


def _error(capsys, argv) -> str:
    code = cli.main(argv)
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert err.startswith("sat-fast: error: ") and "\n" not in err and "Traceback" not in err
    return err


def test_user_errors_are_one_line_with_status_2(example_data, tmp_path, capsys):
    images, masks, names = str(example_data / "images"), str(example_data / "masks"), str(example_data / "names.csv")
    base = ["run", "--images", images, "--masks", masks, "--names", names, "--out", str(tmp_path / "o")]
    assert "cannot import the model factory 'no_such_pkg.mod:f'" in _error(
        capsys, [*base, "--model", "no_such_pkg.mod:f"]
    )
    assert "has no callable 'nope'" in _error(capsys, [*base, "--model", f"{EXAMPLES / 'user_model.py'}:nope"])
    assert "must look like" in _error(capsys, [*base, "--model", "justaname"])
    assert "unknown --method 'magic'" in _error(capsys, [*base, "--model", FACTORY, "--method", "magic"])
    missing_dir = ["run", "--model", FACTORY, "--images", str(tmp_path / "nope"), "--masks", masks, "--names", names]
    assert "image folder" in _error(capsys, [*missing_dir, "--out", str(tmp_path / "o")])
    assert "masks" in _error(capsys, ["run", "--model", FACTORY, "--images", images, "--masks", str(tmp_path / "none"),
                                      "--names", names, "--out", str(tmp_path / "o")])  # fmt: skip
    assert "--names is required" in _error(capsys, ["run", "--model", FACTORY, "--images", images, "--masks", masks,
                                                    "--out", str(tmp_path / "o")])  # fmt: skip
    assert "table" in _error(capsys, ["aggregate", str(tmp_path / "missing.parquet")])
    bad_toml = tmp_path / "bad.toml"
    bad_toml.write_text("this is = = not toml")
    assert "not valid TOML" in _error(capsys, ["--config", str(bad_toml), "run"])


def test_unknown_class_folder_is_an_error(example_data, tmp_path, capsys):
    images = tmp_path / "images"
    (images / "dog").mkdir(parents=True)
    Image.fromarray(np.zeros((48, 48, 3), np.uint8)).save(images / "dog" / "0.png")
    err = _error(capsys, ["run", "--model", FACTORY, "--images", str(images), "--masks", str(example_data / "masks"),
                          "--names", str(example_data / "names.csv"), "--out", str(tmp_path / "o")])  # fmt: skip
    assert "sub-folder 'dog' is not one of the model's classes: fish, bird, cat" in err


def test_images_without_masks_stop_unless_skipped(example_data, tmp_path, capsys):
    masks = tmp_path / "masks"
    for p in (example_data / "masks").rglob("*.png"):
        rel = p.relative_to(example_data / "masks")
        if rel.name != "000.png":
            (masks / rel).parent.mkdir(parents=True, exist_ok=True)
            (masks / rel).write_bytes(p.read_bytes())
    argv = ["run", "--model", FACTORY, "--images", str(example_data / "images"), "--masks", str(masks),
            "--names", str(example_data / "names.csv"), "--steps", "2", "--out", str(tmp_path / "o")]  # fmt: skip
    err = _error(capsys, argv)
    assert "3 of 9 images have no masks (bird/000, cat/000, fish/000)" in err and "--skip-bad" in err
    assert cli.main([*argv, "--skip-bad"]) == 0
    out = capsys.readouterr().out
    assert "explained 6 images (6 of 9;" in out and "skipped 3 bad items" in out and "bird/000" in out
    assert _table(tmp_path / "o")["image_id"].n_unique() == 6
    skipped = json.loads((tmp_path / "o" / "run.json").read_text())["skipped"]
    assert [s["image_id"] for s in skipped] == ["bird/000", "cat/000", "fish/000"]
    assert all("has no mask" in s["reason"] for s in skipped)
    # the old spelling still works, with a notice
    assert cli.main([*argv[:-1], str(tmp_path / "o2"), "--skip-missing"]) == 0
    assert "--skip-missing is deprecated" in capsys.readouterr().err
    assert _table(tmp_path / "o2")["image_id"].n_unique() == 6


def test_debug_shows_the_traceback(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "sat_fast.cli", "--debug", "aggregate", str(tmp_path / "missing.parquet")],
        capture_output=True, text=True, cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode != 0 and "Traceback" in proc.stderr


def test_help_explains_every_command(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "sat_fast.cli", "--help"], capture_output=True, text=True, cwd=tmp_path
    )
    assert proc.returncode == 0
    for word in ("demo", "run", "aggregate", "compare", "report", "examples:"):
        assert word in proc.stdout
    run_help = subprocess.run(
        [sys.executable, "-m", "sat_fast.cli", "run", "--help"], capture_output=True, text=True, cwd=tmp_path
    )
    for option in ("--model", "--checkpoint", "--images", "--labels", "--masks", "--method", "--steps",
                   "--batch-size", "--seed", "--device", "--skip-bad", "--resume", "--shard-size",
                   "--saliency-maps", "--mask-column", "--out"):  # fmt: skip
        assert option in run_help.stdout


def test_flat_folder_with_a_labels_csv(example_data, tmp_path, capsys):
    images, masks = tmp_path / "images", tmp_path / "masks"
    images.mkdir()
    masks.mkdir()
    rows = ["image_id,label"]
    for i, p in enumerate(sorted((example_data / "images").rglob("*.png"))[:4]):
        cls = p.parent.name
        (images / f"img{i}.png").write_bytes(p.read_bytes())
        (masks / f"img{i}.png").write_bytes((example_data / "masks" / cls / p.name).read_bytes())
        rows.append(f"img{i},{cls if i % 2 else ['fish', 'bird', 'cat'].index(cls)}")  # names and indices both work
    (tmp_path / "labels.csv").write_text("\n".join(rows) + "\n")
    argv = ["run", "--model", FACTORY, "--images", str(images), "--labels", str(tmp_path / "labels.csv"),
            "--masks", str(masks), "--names", str(example_data / "names.csv"), "--steps", "2",
            "--out", str(tmp_path / "o")]  # fmt: skip
    assert cli.main(argv) == 0
    sat = _table(tmp_path / "o")
    assert sorted(sat["image_id"].unique()) == ["img0", "img1", "img2", "img3"]
    capsys.readouterr()
    (tmp_path / "labels.csv").write_text("image_id,label\nimg0,dog\n")
    assert "label 'dog' of image 'img0' is not one of the model's classes" in _error(capsys, argv)


def _flat_images(example_data, tmp_path, n=2):
    images, masks = tmp_path / "images", tmp_path / "masks"
    images.mkdir()
    masks.mkdir()
    for i, p in enumerate(sorted((example_data / "images" / "cat").glob("*.png"))[:n]):
        (images / f"i{i}.png").write_bytes(p.read_bytes())
        (masks / f"i{i}.png").write_bytes((example_data / "masks" / "cat" / p.name).read_bytes())
    return images, masks


def _flat_argv(example_data, tmp_path, images, masks, labels):
    return ["run", "--model", FACTORY, "--images", str(images), "--labels", str(labels), "--masks", str(masks),
            "--names", str(example_data / "names.csv"), "--steps", "2", "--out", str(tmp_path / "o")]  # fmt: skip


def test_two_images_with_one_id_are_an_error(example_data, tmp_path, capsys):
    images, masks = _flat_images(example_data, tmp_path)
    Image.open(images / "i1.png").convert("RGB").save(images / "i1.jpg")
    (tmp_path / "labels.csv").write_text("image_id,label\ni0,cat\ni1,cat\n")
    err = _error(capsys, _flat_argv(example_data, tmp_path, images, masks, tmp_path / "labels.csv"))
    assert "images i1.jpg and i1.png" in err and "same image id 'i1'" in err


def test_labels_csv_duplicate_rows_are_an_error(example_data, tmp_path, capsys):
    images, masks = _flat_images(example_data, tmp_path)
    (tmp_path / "labels.csv").write_text("image_id,label\ni0,cat\ni1,cat\ni0,fish\n")
    err = _error(capsys, _flat_argv(example_data, tmp_path, images, masks, tmp_path / "labels.csv"))
    assert "labels.csv: image 'i0' has more than one row (rows 1 and 3)" in err


def test_max_pixels_and_png_bombs_in_masks(example_data, tmp_path, capsys, header_only_png):
    images, masks = _flat_images(example_data, tmp_path)
    (tmp_path / "labels.csv").write_text("image_id,label\ni0,cat\ni1,cat\n")
    argv = _flat_argv(example_data, tmp_path, images, masks, tmp_path / "labels.csv")
    err = _error(capsys, [*argv, "--max-pixels", "100"])
    assert "i0.png declares 48x48 = 2,304 pixels, more than max_pixels=100" in err
    assert cli.main([*argv, "--max-pixels", "none"]) == 0
    capsys.readouterr()
    # a 74-byte PNG declaring 60000 x 60000 pixels
    header_only_png(masks / "i1.png", 60000, 60000, zlib.compress(b""))
    assert "i1.png" in _error(capsys, [*argv[:-1], str(tmp_path / "o2")])  # o holds the finished run


def test_labels_csv_bom_missing_column_and_short_row(example_data, tmp_path, capsys):
    images, masks = _flat_images(example_data, tmp_path)
    labels = tmp_path / "labels.csv"
    argv = _flat_argv(example_data, tmp_path, images, masks, labels)
    labels.write_bytes("image_id,label\ni0,cat\ni1,cat\n".encode("utf-8-sig"))  # as Excel saves it
    assert cli.main(argv) == 0
    capsys.readouterr()
    labels.write_text("image,label\ni0,cat\n")
    assert "labels.csv: no column 'image_id' in the header row" in _error(capsys, argv)
    labels.write_text("image_id,label\ni0,cat\ni1\n")
    assert "labels.csv: row 2 has 1 values, expected image_id,label" in _error(capsys, argv)
    labels.write_bytes(b"image_id,label\ni0,caf\xe9\n")
    assert "labels.csv is not a UTF-8 CSV file" in _error(capsys, argv)


def test_coco_masks_without_file_name_or_too_deep(example_data, tmp_path, capsys):
    images, _ = _flat_images(example_data, tmp_path)
    (tmp_path / "labels.csv").write_text("image_id,label\ni0,cat\ni1,cat\n")
    coco = tmp_path / "coco.json"
    argv = _flat_argv(example_data, tmp_path, images, coco, tmp_path / "labels.csv")
    coco.write_text('{"images": [{"id": 7, "height": 48, "width": 48}], "annotations": [], "categories": []}')
    assert "coco.json: image 7 ('images' entry 0) has no 'file_name'" in _error(capsys, argv)
    coco.write_text("[" * 100000 + "]" * 100000)
    assert "coco.json are nested too deeply" in _error(capsys, argv)
    # masks are built per image while the run goes (never all at once): the bad entry stops the run at its image
    coco.write_text(json.dumps({"images": [{"id": 7, "height": -48, "width": 48, "file_name": "i0.png"},
                                           {"id": 8, "height": 48, "width": 48, "file_name": "i1.png"}],
                                "annotations": [], "categories": []}))  # fmt: skip
    err = _error(capsys, argv)
    assert (
        "mask of image 'i0'" in err
        and "coco.json: COCO annotations: image 7 needs a non-negative integer 'height'" in err
    )


def test_table_inputs_and_outputs_are_one_line_errors(run_output, tmp_path, capsys, monkeypatch):
    sat = run_output / "sat" / "part-000000.parquet"
    (tmp_path / "junk.parquet").write_text("not parquet")
    (tmp_path / "empty.parquet").write_bytes(b"")
    assert "junk.parquet is not a Parquet file" in _error(capsys, ["aggregate", str(tmp_path / "junk.parquet")])
    assert "empty.parquet is not a Parquet file" in _error(capsys, ["aggregate", str(tmp_path / "empty.parquet")])
    assert "junk.parquet is not a Parquet file" in _error(capsys, ["report", str(tmp_path / "junk.parquet")])
    pl.read_parquet(sat).with_columns(pl.col("target").cast(pl.String)).write_parquet(tmp_path / "other.parquet")
    err = _error(capsys, ["aggregate", str(sat), str(tmp_path / "other.parquet")])
    assert "have different columns: 'target' is Int64 vs String" in err
    # absolute glob patterns
    (tmp_path / "parts").mkdir()
    (tmp_path / "parts" / "a.parquet").write_bytes(sat.read_bytes())
    monkeypatch.chdir(run_output)
    assert cli.main(["aggregate", str(tmp_path / "parts" / "*.parquet")]) == 0
    assert "no tables match" in _error(capsys, ["aggregate", str(tmp_path / "parts" / "*.nope")])
    if Path("/dev/full").exists():
        assert "cannot write /dev/full" in _error(capsys, ["aggregate", str(sat), "--out", "/dev/full"])
        assert "cannot write /dev/full" in _error(capsys, ["compare", str(sat), str(sat), "--out", "/dev/full"])
        assert "/dev/full" in _error(capsys, ["report", str(run_output / "aggregate.parquet"), "--out", "/dev/full"])


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        ('out = ["a"]\n', "config file .*: out must be a string, got \\['a'\\]"),
        ("run = 5\n", "config file .*: 'run' must be a table of options \\(\\[run\\]\\), got 5"),
        ("[run]\nsteps = 1.5\n", "config file .*: steps must be an integer, got 1.5"),
        ("[run]\nsteps = true\n", "config file .*: steps must be an integer, got True"),
        ('[aggregate]\nby = "target"\n', 'config file .*: by must be a list of strings, e.g. by = \\["a", "b"\\]'),
        ('[run]\nskip-missing = "yes"\n', "config file .*: skip-missing must be true or false"),
        ("[run]\nmax-pixels = 0\n", "config file .*: max-pixels must be a positive integer"),
    ],
)
def test_config_values_of_the_wrong_type(tmp_path, capsys, toml, message):
    config = tmp_path / "c.toml"
    config.write_text(toml)

    assert re.search(message, _error(capsys, ["--config", str(config), "aggregate", "x.parquet"]))


def test_errors_print_no_traceback(tmp_path):
    (tmp_path / "junk.parquet").write_text("not parquet")
    (tmp_path / "c.toml").write_text('[aggregate]\nby = "target"\n')
    for argv in (
        ["aggregate", str(tmp_path / "junk.parquet")],
        ["--config", str(tmp_path / "c.toml"), "aggregate", "x"],
    ):
        proc = subprocess.run(
            [sys.executable, "-m", "sat_fast.cli", *argv], capture_output=True, text=True, cwd=tmp_path
        )
        assert proc.returncode == 2, proc.stderr
        assert "Traceback" not in proc.stderr and proc.stderr.count("\n") == 1, proc.stderr
        assert proc.stderr.startswith("sat-fast: error: ")


def test_device_option(example_data, tmp_path, capsys):
    base = ["run", "--model", FACTORY, "--images", str(example_data / "images"), "--masks", str(example_data / "masks"),
            "--names", str(example_data / "names.csv"), "--steps", "1", "--out", str(tmp_path / "o")]  # fmt: skip
    assert "no 'gpu' device is available to JAX here (available: cpu)" in _error(capsys, [*base, "--device", "gpu"])
    assert "there are 1 cpu device(s), numbered from 0" in _error(capsys, [*base, "--device", "cpu:3"])
    assert "must look like 'cpu', 'gpu' or 'gpu:1'" in _error(capsys, [*base, "--device", "cpu:x"])
    assert cli.main([*base, "--device", "cpu:0"]) == 0


def test_model_file_imports_its_neighbours(tmp_path):
    (tmp_path / "satfast_neighbour_layers.py").write_text("def head(x):\n    return x.sum(axis=(1, 2))\n")
    (tmp_path / "factory.py").write_text(
        "import satfast_neighbour_layers\n\ndef make(checkpoint=None):\n"
        "    return satfast_neighbour_layers.head, ['a', 'b', 'c']\n"
    )
    factory = cli.load_factory(f"{tmp_path / 'factory.py'}:make")
    assert factory()[1] == ["a", "b", "c"]


def test_a_model_that_is_not_jax_says_so(example_data, tmp_path, capsys):
    (tmp_path / "numpy_model.py").write_text(
        "import numpy as np\n\ndef make(checkpoint=None):\n"
        "    return (lambda x: np.asarray(x).mean(axis=(1, 2))), ['fish', 'bird', 'cat']\n"
    )
    argv = ["run", "--model", f"{tmp_path / 'numpy_model.py'}:make", "--images", str(example_data / "images"),
            "--masks", str(example_data / "masks"), "--names", str(example_data / "names.csv"), "--steps", "1",
            "--out", str(tmp_path / "o")]  # fmt: skip
    assert cli.main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]  # after the progress bar's lines
    assert err.startswith("sat-fast: error: fn must be a JAX function of the images") and "Captum" in err


def test_progress_in_a_log_is_a_few_lines_and_no_progress_keeps_the_summary(example_data, tmp_path):
    import subprocess
    import sys

    argv = ["run", "--model", FACTORY, "--images", str(example_data / "images"), "--masks", str(example_data / "masks"),
            "--names", str(example_data / "names.csv"), "--steps", "1", "--batch-size", "4"]  # fmt: skip
    code = "import sys; from sat_fast import cli; raise SystemExit(cli.main(sys.argv[1:]))"
    logged = subprocess.run(  # stderr is a pipe, as in CI or nohup: no carriage-return bar
        [sys.executable, "-c", code, *argv, "--out", str(tmp_path / "a")], capture_output=True, text=True, cwd=tmp_path
    )
    assert logged.returncode == 0, logged.stderr
    assert "\r" not in logged.stderr
    assert logged.stderr.strip().splitlines()[-1].startswith("explaining: 9/9 img")
    quiet = subprocess.run(
        [sys.executable, "-c", code, *argv, "--no-progress", "--out", str(tmp_path / "b")],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert quiet.returncode == 0 and "explaining" not in quiet.stderr
    assert "explained 9 images" in quiet.stdout  # the summary stays


def test_run_names_classes_and_writes_a_run_id(run_output, example_data):
    sat = _table(run_output)
    assert sat.columns[:3] == ["image_id", "target", "class"]
    assert {"label_class", "predicted_class", "run"} <= set(sat.columns)
    bird = sat.filter(pl.col("image_id") == "bird/000").row(0, named=True)
    assert bird["class"] == "bird" and bird["label_class"] == "bird"
    assert sat["run"].n_unique() == 1 and re.fullmatch(r"[0-9a-f]{8}", sat["run"][0])
    for name in ("aggregate", "flags"):
        frame = pl.read_parquet(run_output / f"{name}.parquet")
        assert frame.columns[:2] == ["target", "class"], name
    html = (run_output / "report.html").read_text(encoding="utf-8")
    assert "target=bird" in html and "target=1" not in html


def test_aggregating_two_runs_over_the_same_images_says_run(run_output, tmp_path, capsys):
    sat = _table(run_output)
    for i, run in enumerate(("aaaa0000", "bbbb1111")):
        (tmp_path / f"res_{i}").mkdir()
        sat.with_columns(pl.lit(run).alias("run")).write_parquet(tmp_path / f"res_{i}" / "sat.parquet")
    pattern = str(tmp_path / "res_*" / "sat.parquet")
    capsys.readouterr()
    assert cli.main(["aggregate", pattern, "--by", "model", "target"]) == 2
    err = capsys.readouterr().err
    assert "more than one row per" in err and "add 'run' to by" in err and "image_id=" in err
    assert cli.main(["aggregate", pattern, "--by", "model", "target", "run", "--out", str(tmp_path / "a.parquet")]) == 0
    assert pl.read_parquet(tmp_path / "a.parquet")["presence"].max() <= 1.0
    assert cli.main(["compare", str(tmp_path / "res_0" / "sat.parquet"), pattern]) == 2


def test_core_file_takes_class_names_or_indices(example_data, tmp_path, capsys):
    core = tmp_path / "core.json"
    core.write_text(json.dumps({"fish": ["body", "fin"], "1": ["body", "beak"], "cat": ["body", "ear"]}))
    out = tmp_path / "out"
    code = cli.main(
        ["run", "--model", FACTORY, "--images", str(example_data / "images"), "--masks", str(example_data / "masks"),
         "--names", str(example_data / "names.csv"), "--steps", "2", "--batch-size", "9", "--core", str(core),
         "--out", str(out)]
    )  # fmt: skip
    assert code == 0
    flags = pl.read_parquet(out / "flags.parquet")
    assert "excess" not in flags.columns  # flagged against the core segments, not by excess
    core_of = {"fish": {"body", "fin"}, "bird": {"body", "beak"}, "cat": {"body", "ear"}}
    for row in flags.iter_rows(named=True):
        assert row["segment"] not in core_of[row["class"]]
    core.write_text(json.dumps({"dog": ["body"]}))
    capsys.readouterr()
    code = cli.main(
        ["run", "--model", FACTORY, "--images", str(example_data / "images"), "--masks", str(example_data / "masks"),
         "--names", str(example_data / "names.csv"), "--steps", "2", "--core", str(core), "--out", str(out) + "2"]
    )  # fmt: skip
    assert code == 2 and "core class 'dog' is not a class of agg" in capsys.readouterr().err


def test_a_mask_of_another_size_than_its_image_stops_the_run(example_data, tmp_path, capsys):
    import shutil

    import numpy as np
    from PIL import Image

    masks = tmp_path / "masks"
    shutil.copytree(example_data / "masks", masks)
    first = sorted(masks.rglob("*.png"))[0]
    h, w = np.asarray(Image.open(first)).shape
    Image.fromarray(np.zeros((h - 8, w), np.uint8)).save(first)  # the user's model would resize both to one size
    argv = ["run", "--model", FACTORY, "--images", str(example_data / "images"), "--masks", str(masks),
            "--names", str(example_data / "names.csv"), "--steps", "1", "--no-progress",
            "--out", str(tmp_path / "o")]  # fmt: skip
    err = _error(capsys, argv)
    assert f"image '{first.parent.name}/{first.stem}'" in err
    assert f"but its mask is {h - 8}x{w}" in err


# ------------------------------------------------------------ run options on par with the API (issue 10)


def _run_argv(example_data, out, *extra):
    return ["run", "--model", FACTORY, "--images", str(example_data / "images"), "--masks", str(example_data / "masks"),
            "--names", str(example_data / "names.csv"), "--steps", "1", "--batch-size", "9", "--no-progress",
            "--out", str(out), *extra]  # fmt: skip


def _sat(out):
    return _table(out).sort("image_id", "target", "segment")


def test_gradcam_with_a_layer(example_data, tmp_path, capsys):
    assert cli.main(_run_argv(example_data, tmp_path / "cam", "--method", "gradcam", "--layer", "Conv_0")) == 0
    cam = _sat(tmp_path / "cam")
    assert cam["image_id"].n_unique() == 9 and cam["mean"].is_finite().all()
    assert cli.main(_run_argv(example_data, tmp_path / "cam1", "--method", "gradcam", "--layer", "Conv_1")) == 0
    assert not np.allclose(cam["mean"].to_numpy(), _sat(tmp_path / "cam1")["mean"].to_numpy())  # another layer
    capsys.readouterr()
    err = _error(capsys, _run_argv(example_data, tmp_path / "o", "--method", "gradcam", "--layer", "Conv_9"))
    assert "unknown gradcam layer 'Conv_9'" in err and "Conv_0, Conv_1" in err
    assert "--method gradcam needs --layer" in _error(
        capsys, _run_argv(example_data, tmp_path / "o", "--method", "gradcam")
    )
    err = _error(capsys, _run_argv(example_data, tmp_path / "o", "--layer", "Conv_0"))
    assert "--layer is used only by --method gradcam, not by integrated_gradients" in err


def test_targets_label_predicted_and_all(example_data, run_output, tmp_path, capsys):
    assert cli.main(_run_argv(example_data, tmp_path / "all", "--targets", "all")) == 0
    assert "explained 9 images for each of the 3 classes" in capsys.readouterr().out
    sat = _sat(tmp_path / "all")
    per_image = sat.group_by("image_id").agg(pl.col("target").n_unique(), pl.col("label").n_unique())
    assert (per_image["target"] == 3).all() and (per_image["label"] == 1).all()
    assert sat.select("image_id", "target", "segment").is_duplicated().sum() == 0  # one row per (image, target, seg.)
    assert set(sat["class"].cast(pl.String)) == {"fish", "bird", "cat"}
    # the rows of the label's class are those of the default run (same steps): --targets label is the default
    assert cli.main(_run_argv(example_data, tmp_path / "label")) == 0
    label = _sat(tmp_path / "label")
    assert (label["target"] == label["label"]).all()
    own = sat.filter(pl.col("target") == pl.col("label"))
    assert own["mean"].to_list() == pytest.approx(label["mean"].to_list(), rel=1e-5, abs=1e-9)
    agg = pl.read_parquet(tmp_path / "all" / "aggregate.parquet")
    assert agg.group_by("target").agg(pl.col("images").max())["images"].to_list() == [9, 9, 9]
    assert cli.main(_run_argv(example_data, tmp_path / "pred", "--targets", "predicted")) == 0
    pred = _sat(tmp_path / "pred")
    assert (pred["target"] == pred["predicted"]).all()
    err = _error(capsys, _run_argv(example_data, tmp_path / "o", "--targets", "everything"))
    assert "argument --targets: invalid choice: 'everything'" in err


def test_baselines_samples_noise_and_output(example_data, tmp_path, capsys):
    def means(out, *extra):
        assert cli.main(_run_argv(example_data, tmp_path / out, *extra)) == 0
        return _sat(tmp_path / out)["mean"].to_numpy()

    zeros = means("zeros", "--steps", "2")
    assert not np.allclose(zeros, means("blur", "--steps", "2", "--baseline", "blur"))
    half = means("half", "--steps", "2", "--baseline", "0.5")
    np.save(tmp_path / "half.npy", np.full((32, 32, 3), 0.5, np.float32))
    np.testing.assert_allclose(means("half_npy", "--steps", "2", "--baseline", str(tmp_path / "half.npy")), half)
    assert not np.allclose(half, zeros)
    np.save(tmp_path / "refs.npy", np.random.default_rng(0).random((4, 32, 32, 3), np.float32))
    eg = means("eg", "--method", "expected_gradients", "--baseline", str(tmp_path / "refs.npy"), "--samples", "2")
    assert np.isfinite(eg).all()
    # without noise every sample is the image itself: the number of samples does not matter; with noise it does
    smooth = means("sg0", "--method", "smoothgrad", "--samples", "2", "--noise", "0")
    np.testing.assert_allclose(means("sg0_1", "--method", "smoothgrad", "--samples", "1", "--noise", "0"), smooth)
    noisy = means("sg5", "--method", "smoothgrad", "--samples", "2", "--noise", "0.5")
    assert not np.allclose(smooth, noisy)
    assert not np.allclose(noisy, means("sg5_3", "--method", "smoothgrad", "--samples", "3", "--noise", "0.5"))
    assert not np.allclose(zeros, means("prob", "--steps", "2", "--output", "probability"))

    def error(*extra):
        return _error(capsys, _run_argv(example_data, tmp_path / "o", *extra))

    assert "argument --baseline: expected zeros, blur, uniform, a number or a .npy file, got 'black'" in error(
        "--baseline", "black"
    )
    assert "argument --samples: expected a positive integer, got '0'" in error("--samples", "0")
    assert "argument --noise: expected a number >= 0, got '-1'" in error("--noise", "-1")
    assert "argument --output: invalid choice: 'softmax'" in error("--output", "softmax")
    assert "--method expected_gradients needs --baseline FILE.npy" in error("--method", "expected_gradients")
    assert "--baseline is used only by" in error("--method", "gradient", "--baseline", "blur")
    assert "baseline file" in error("--baseline", str(tmp_path / "missing.npy"))
    np.save(tmp_path / "objects.npy", np.array([{"a": 1}], dtype=object))
    assert "object arrays are refused" in error("--baseline", str(tmp_path / "objects.npy"))
    np.save(tmp_path / "ints.npy", np.zeros((32, 32, 3), np.int32))
    assert "must hold a floating-point array, got int32" in error("--baseline", str(tmp_path / "ints.npy"))
    assert "one baseline for every image" in error("--baseline", str(tmp_path / "refs.npy"))
    np.save(tmp_path / "small.npy", np.zeros((8, 8, 3), np.float32))
    assert "does not broadcast to images" in error("--baseline", str(tmp_path / "small.npy"))
    assert "(R, H, W, C)" in error("--method", "expected_gradients", "--baseline", str(tmp_path / "half.npy"))


def test_flag_thresholds(example_data, tmp_path, capsys):
    core = tmp_path / "core.json"
    core.write_text(json.dumps(["body"]))
    assert cli.main(_run_argv(example_data, tmp_path / "default", "--core", str(core))) == 0
    assert cli.main(_run_argv(example_data, tmp_path / "low", "--core", str(core), "--share-min", "0")) == 0
    default = pl.read_parquet(tmp_path / "default" / "flags.parquet")
    low = pl.read_parquet(tmp_path / "low" / "flags.parquet")
    assert low.height > default.height
    assert (
        low.height
        == pl.read_parquet(tmp_path / "low" / "aggregate.parquet")
        .filter((pl.col("segment") != "body") & (pl.col("presence") >= 0.05))
        .height
    )  # every present non-core segment
    assert cli.main(_run_argv(example_data, tmp_path / "rare", "--core", str(core), "--share-min", "0",
                              "--presence-min", "1")) == 0  # fmt: skip
    assert (pl.read_parquet(tmp_path / "rare" / "flags.parquet")["presence"] == 1).all()
    assert cli.main(_run_argv(example_data, tmp_path / "excess", "--excess-min", "-1")) == 0  # no --core
    excess = pl.read_parquet(tmp_path / "excess" / "flags.parquet")
    agg = pl.read_parquet(tmp_path / "excess" / "aggregate.parquet")
    assert "excess" in excess.columns and excess.height == agg.filter(pl.col("presence") >= 0.05).height
    capsys.readouterr()
    err = _error(capsys, _run_argv(example_data, tmp_path / "o", "--share-min", "2"))
    assert "argument --share-min: expected a number in [0, 1], got '2'" in err
    assert "argument --density-min: expected a number, got 'high'" in _error(
        capsys, _run_argv(example_data, tmp_path / "o", "--density-min", "high")
    )
    assert "argument --excess-min: expected a finite number, got 'nan'" in _error(
        capsys, _run_argv(example_data, tmp_path / "o", "--excess-min", "nan")
    )


def test_compare_names_its_sides(run_output, tmp_path, capsys, monkeypatch):
    sat = str(run_output)
    capsys.readouterr()
    assert cli.main(["compare", sat, sat, "--sides", "train", "ood"]) == 0
    assert capsys.readouterr().out.startswith(f"a = train ({sat}), b = ood ({sat}); diff = mean_b - mean_a\n")
    out = tmp_path / "c.parquet"
    assert cli.main(["compare", sat, sat, "--sides", "train", "ood", "--out", str(out)]) == 0
    assert json.loads(pl.read_parquet_metadata(out)["sat_fast.sides"]) == ["train", "ood"]
    assert "mean_a" in pl.read_parquet(out).columns  # the columns keep their names: report reads them

    from sat_fast import plots

    seen = []
    original = plots.plot_comparison
    monkeypatch.setattr(plots, "plot_comparison", lambda cmp, sides: seen.append(sides) or original(cmp, sides=sides))
    agg = str(run_output / "aggregate.parquet")
    assert cli.main(["report", agg, "--comparison", str(out), "--out", str(tmp_path / "r.html")]) == 0
    assert (
        cli.main(["report", agg, "--comparison", str(out), "--sides", "x", "y", "--out", str(tmp_path / "r.html")]) == 0
    )
    assert cli.main(["compare", sat, sat, "--out", str(tmp_path / "plain.parquet")]) == 0
    assert (
        cli.main(["report", agg, "--comparison", str(tmp_path / "plain.parquet"), "--out", str(tmp_path / "r.html")])
        == 0
    )
    assert seen == [("train", "ood"), ("x", "y"), ("a", "b")]
    capsys.readouterr()
    assert "--sides needs two different, non-empty names" in _error(capsys, ["compare", sat, sat, "--sides", "A", "A"])
    assert "argument --sides: expected 2 arguments" in _error(capsys, ["compare", sat, sat, "--sides", "A"])


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        ('[run]\ntargets = "everything"\n', "targets must be one of label, predicted, all, got 'everything'"),
        ("[run]\nsamples = 0\n", "samples: expected a positive integer, got '0'"),
        ('[run]\nsamples = "4"\n', "samples must be an integer, got '4'"),
        ("[run]\nnoise = true\n", "noise must be a number, got True"),
        ("[run]\nshare-min = 1.5\n", "share-min: expected a number in \\[0, 1\\], got '1.5'"),
        ('[run]\nbaseline = "black"\n', "baseline: expected zeros, blur, uniform, a number or a .npy file"),
        ('[compare]\nsides = ["x"]\n', "sides must be a list of 2 strings, got \\['x'\\]"),
    ],
)
def test_config_values_of_new_options_are_checked(tmp_path, capsys, toml, message):
    config = tmp_path / "c.toml"
    config.write_text(toml)
    assert re.search(f"config file .*: {message}", _error(capsys, ["--config", str(config), "aggregate", "x.parquet"]))


def test_config_values_of_new_options_are_used(example_data, tmp_path):
    config = tmp_path / "run.toml"
    config.write_text(
        '[run]\ntargets = "all"\nmethod = "smoothgrad"\nsamples = 2\nnoise = 0.1\nshare-min = 0\n'
        'output = "log_probability"\n[compare]\nsides = ["before", "after"]\n'
    )
    assert cli.main(["--config", str(config), *_run_argv(example_data, tmp_path / "o")]) == 0
    assert _sat(tmp_path / "o").group_by("image_id").agg(pl.col("target").n_unique())["target"].to_list() == [3] * 9
    config.write_text("[run]\nbaseline = 0.5\n")
    assert cli.main(["--config", str(config), *_run_argv(example_data, tmp_path / "b")]) == 0
    assert cli.main(_run_argv(example_data, tmp_path / "c", "--baseline", "0.5")) == 0
    assert cli.main(_run_argv(example_data, tmp_path / "d")) == 0
    assert _sat(tmp_path / "b")["mean"].to_list() == _sat(tmp_path / "c")["mean"].to_list()
    assert _sat(tmp_path / "b")["mean"].to_list() != _sat(tmp_path / "d")["mean"].to_list()


def test_resume_continues_a_run_and_refuses_other_settings(example_data, tmp_path, capsys):
    out = tmp_path / "r"
    assert cli.main(_run_argv(example_data, out, "--shard-size", "4")) == 0
    first = _table(out)
    capsys.readouterr()
    err = _error(capsys, _run_argv(example_data, out, "--shard-size", "4", "--steps", "2", "--resume"))
    assert "cannot resume the run in" in err and "steps: 1 then, 2 now" in err
    assert "already holds a run" in _error(capsys, _run_argv(example_data, out, "--shard-size", "4"))
    (out / "sat" / "part-000001.parquet").unlink()  # as if the run had stopped before its second shard
    assert cli.main(_run_argv(example_data, out, "--shard-size", "4", "--resume")) == 0
    assert "4 handled in this call, 2 shards kept from before" in capsys.readouterr().out
    assert _table(out).equals(first)
