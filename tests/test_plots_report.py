"""Figures have the requested pixel size and are not blank; the HTML report parses and its images decode."""

from __future__ import annotations

import base64
import io
import xml.etree.ElementTree as ET
from html.parser import HTMLParser

import numpy as np
import polars as pl
import pytest
from matplotlib.figure import Figure
from PIL import Image

import sat_fast

NAMES = ["eye", "ear", "fur", "watermark", "background"]
# Grey-level variance of an all-white figure is 0; a figure with axes, bars and text has far more.
VARIANCE_FLOOR = 50.0


@pytest.fixture(scope="module")
def tables() -> dict[str, pl.DataFrame]:
    rng = np.random.default_rng(0)
    b = 60
    sal = rng.normal(size=(b, 16, 16)).astype(np.float32)
    labels = rng.integers(0, len(NAMES), size=(b, 16, 16)).astype(np.uint8)
    labels[:20][labels[:20] == 3] = 4
    table = sat_fast.segment_table(
        sal,
        labels,
        names=NAMES,
        targets=rng.integers(0, 3, b),
        metadata={"model": np.where(np.arange(b) % 2, "A", "B")},
    )
    agg = sat_fast.aggregate(table)
    comparison = sat_fast.compare(table.filter(pl.col("model") == "A"), table.filter(pl.col("model") == "B"))
    flags = sat_fast.flag_shortcuts(agg, core={0: ["eye"], 1: ["ear"], 2: ["fur"]}, share_min=0.2)
    return {"table": table, "agg": agg, "comparison": comparison, "flags": flags, "sal": sal, "labels": labels}


def png_of(fig: Figure) -> Image.Image:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=fig.dpi)
    return Image.open(io.BytesIO(buffer.getvalue()))


def assert_not_blank(image: Image.Image) -> None:
    grey = np.asarray(image.convert("L"), dtype=np.float64)
    assert grey.var() > VARIANCE_FLOOR


def figures(t: dict, figsize: tuple[float, float], dpi: float) -> dict[str, Figure]:
    rng = np.random.default_rng(1)
    return {
        "bars": sat_fast.plot_class_bars(t["agg"], figsize=figsize, dpi=dpi),
        "heatmap": sat_fast.plot_heatmap(t["agg"], figsize=figsize, dpi=dpi),
        "scatter": sat_fast.plot_presence_scatter(t["agg"], figsize=figsize, dpi=dpi),
        "image": sat_fast.plot_image(
            rng.random((16, 16, 3)), t["sal"][0], t["labels"][0], names=NAMES, figsize=figsize, dpi=dpi
        ),
        "comparison": sat_fast.plot_comparison(t["comparison"], sides=("A", "B"), figsize=figsize, dpi=dpi),
    }


@pytest.mark.parametrize(("figsize", "dpi"), [((8.0, 5.0), 100), ((6.0, 4.0), 72)])
def test_figures_have_size_and_content(tables, figsize, dpi):
    for name, fig in figures(tables, figsize, dpi).items():
        image = png_of(fig)
        assert image.size == (round(figsize[0] * dpi), round(figsize[1] * dpi)), name
        assert_not_blank(image)


def test_blank_floor_catches_a_blank_figure():
    assert np.asarray(png_of(Figure(figsize=(2, 2), dpi=50)).convert("L"), dtype=np.float64).var() < VARIANCE_FLOOR


def test_save_png_and_svg(tables, tmp_path):
    fig = sat_fast.plot_heatmap(tables["agg"], figsize=(5, 4), dpi=80)
    written = sat_fast.save_figure(fig, tmp_path / "heat", formats=["png", "svg"])
    assert [p.name for p in written] == ["heat.png", "heat.svg"]
    png = Image.open(written[0])
    assert png.size == (400, 320)
    assert_not_blank(png)
    root = ET.parse(written[1]).getroot()
    assert root.tag.endswith("svg") and len(list(root.iter())) > 50
    single = sat_fast.save_figure(fig, tmp_path / "again.svg")
    assert single == [tmp_path / "again.svg"] and single[0].stat().st_size > 1000
    with pytest.raises(ValueError, match="cannot tell the format"):
        sat_fast.save_figure(fig, tmp_path / "heat.jpg")
    with pytest.raises(ValueError, match="formats must be among"):
        sat_fast.save_figure(fig, tmp_path / "heat", formats=["pdf"])


def test_plot_image_with_masks_and_given_table(tables):
    labels = tables["labels"][0]
    masks = np.stack([labels == k for k in range(len(NAMES))])
    table = tables["table"].filter(pl.col("image_id") == 0)
    fig = sat_fast.plot_image(
        np.zeros((16, 16), np.uint8), tables["sal"][0], masks, names=NAMES, table=table, figsize=(6, 3), dpi=60
    )
    assert png_of(fig).size == (360, 180)
    bars = fig.axes[1]
    assert sorted(t.get_text() for t in bars.get_yticklabels()) == sorted(table["segment"].cast(pl.String).to_list())


def test_plot_image_with_segments_object(tables):
    from sat_fast.segments import from_label_map

    seg = from_label_map(tables["labels"][:1], NAMES)[0]
    fig = sat_fast.plot_image(np.ones((16, 16, 3)), tables["sal"][0], seg, figsize=(4, 2), dpi=50)
    image = png_of(fig)
    assert image.size == (200, 100)
    assert_not_blank(image)
    with pytest.raises(ValueError, match="names is given by the Segments"):
        sat_fast.plot_image(np.ones((16, 16, 3)), tables["sal"][0], seg, names=NAMES)


def test_plot_bad_input(tables):
    with pytest.raises(ValueError, match="does not match saliency shape"):
        sat_fast.plot_image(np.zeros((8, 8, 3)), tables["sal"][0], tables["labels"][0], names=NAMES)
    with pytest.raises(ValueError, match="missing required columns"):
        sat_fast.plot_class_bars(tables["agg"].drop("ci_low"))
    with pytest.raises(ValueError, match="'segment' column"):
        sat_fast.plot_heatmap(tables["agg"].drop("segment"))
    with pytest.raises(TypeError, match="polars DataFrame"):
        sat_fast.plot_presence_scatter(tables["agg"].lazy())


def test_empty_aggregate_still_draws(tables):
    fig = sat_fast.plot_class_bars(tables["agg"].head(0), figsize=(3, 2), dpi=50)
    assert png_of(fig).size == (150, 100)


class _Collector(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[str] = []
        self.images: list[str] = []
        self.headings: list[str] = []
        self._in_heading = False

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        attrs = dict(attrs)
        if tag == "img":
            self.images.append(attrs["src"])
        for name, value in attrs.items():
            assert not (value or "").startswith(("http:", "https:", "//")), (tag, name, value)
        self._in_heading = tag == "h2"

    def handle_data(self, data):
        if self._in_heading:
            self.headings.append(data)
            self._in_heading = False


def test_report_parses_and_images_decode(tables, tmp_path):
    extra = {"one image": figures(tables, (5, 3), 60)["image"]}
    path = sat_fast.report(
        tables["agg"],
        tmp_path / "report.html",
        flags=tables["flags"],
        comparison=tables["comparison"],
        figures=extra,
        sides=("A", "B"),
        title="Test <report>",
    )
    text = path.read_text(encoding="utf-8")
    parser = _Collector()
    parser.feed(text)
    parser.close()
    assert "script" not in parser.tags and "link" not in parser.tags
    assert parser.headings == ["Summary", "Shortcut flags", "Comparison", "Figures", "Aggregated table"]
    assert len(parser.images) == 5  # bars, heatmap, scatter, comparison, and the extra figure
    for src in parser.images:
        prefix = "data:image/png;base64,"
        assert src.startswith(prefix)
        image = Image.open(io.BytesIO(base64.b64decode(src[len(prefix) :], validate=True)))
        image.load()
        assert image.format == "PNG"
        assert_not_blank(image)
    assert "Test &lt;report&gt;" in text
    assert parser.tags.count("tr") >= tables["agg"].height + tables["comparison"].height


def test_report_of_empty_table_and_bad_input(tmp_path):
    empty = sat_fast.aggregate(
        pl.DataFrame({"image_id": [1], "target": [0], "segment": ["eye"], "mean": [1.0]}).head(0)
    )
    path = sat_fast.report(empty, tmp_path / "empty.html")
    parser = _Collector()
    parser.feed(path.read_text(encoding="utf-8"))
    assert parser.images == []
    with pytest.raises(ValueError, match="does not exist"):
        sat_fast.report(empty, tmp_path / "missing" / "r.html")
    with pytest.raises(TypeError, match="DataFrame from aggregate"):
        sat_fast.report(empty.lazy(), tmp_path / "r.html")
    with pytest.raises(TypeError, match=r"figures\['x'\] must be a matplotlib Figure"):
        sat_fast.report(empty, tmp_path / "r.html", figures={"x": "not a figure"})


def test_summary_markdown_and_text(tables):
    md = sat_fast.summary(tables["agg"], flags=tables["flags"], comparison=tables["comparison"], top=3)
    lines = md.splitlines()
    assert lines[0] == "# Segment attribution summary"
    assert [line for line in lines if line.startswith("## target=")] == [
        f"## target={k} (top 3 segments by mean)" for k in range(3)
    ]
    assert any(line.startswith("## Shortcut flags") for line in lines)
    assert any(line.startswith("## Largest changes") for line in lines)
    table_rows = [line for line in lines if line.startswith("| ")]
    assert all(line.count("|") == table_rows[0].count("|") for line in table_rows[:5])
    first_group = tables["agg"].filter(pl.col("target") == 0).sort("mean", descending=True)
    assert lines[lines.index("## target=0 (top 3 segments by mean)") + 3].startswith(f"| {first_group['segment'][0]} |")
    text = sat_fast.summary(tables["agg"], format="text", top=2)
    assert "|" not in text and "segment  presence" in text
    with pytest.raises(ValueError, match="format must be"):
        sat_fast.summary(tables["agg"], format="html")


def test_summary_of_many_groups_is_capped_with_a_count():
    agg = pl.DataFrame({"target": list(range(30)), "segment": ["eye"] * 30, "mean": [1.0] * 30})
    text = sat_fast.summary(agg, format="text")
    assert text.count("## target=") == 20 and "... and 10 more groups" in text
    assert sat_fast.summary(agg, format="text", max_groups=None).count("## target=") == 30
    with pytest.raises(ValueError, match="max_groups must be a positive int"):
        sat_fast.summary(agg, max_groups=0)


def test_class_bars_show_every_group_or_say_how_many_are_left_out():
    agg = pl.DataFrame(
        {
            "target": [t for t in range(12) for _ in range(2)],
            "segment": ["eye", "fur"] * 12,
            "presence": [1.0, 0.5] * 12,
            "mean": [0.8, 0.2] * 12,
            "ci_low": [0.6, 0.1] * 12,
            "ci_high": [1.0, 0.3] * 12,
        }
    )
    fig = sat_fast.plot_class_bars(agg, dpi=30)
    titles = [ax.get_title() for ax in fig.axes if ax.get_visible() and ax.get_title()]
    assert titles == [f"target={t}" for t in range(12)]  # version 1 drew the first nine and said nothing
    capped = sat_fast.plot_class_bars(agg, max_groups=4, dpi=30)
    assert len([ax for ax in capped.axes if ax.get_visible() and ax.get_title()]) == 4
    assert "the first 4 of 12 groups" in capped._suptitle.get_text()


def test_report_summary_is_html_and_explains_flags_and_empty_intervals(tables, tmp_path):
    text = sat_fast.report(tables["agg"], tmp_path / "r.html", flags=tables["flags"], default_figures=False).read_text()
    summary = text[text.index("<h2>Summary</h2>") : text.index("<h2>Shortcut flags</h2>")]
    assert "<pre>" not in text and "<table>" in summary and "# Segment attribution summary" not in text
    assert "fewer than two images of the group" in text  # why interval cells can be empty
    assert "core segments" in text and "not a verdict" in text  # how to read flags and give core


def test_figures_summary_and_report_name_classes(tmp_path):
    agg = pl.DataFrame(
        {
            "target": [0, 0, 1],
            "class": pl.Series(["fish", "fish", "bird"], dtype=pl.Categorical),
            "segment": ["fin", "watermark", "beak"],
            "images": [4, 4, 3],
            "present": [4, 3, 3],
            "presence": [1.0, 0.75, 1.0],
            "mean": [0.2, 0.9, 0.4],
            "share": [0.2, 0.6, 0.5],
            "density": [1.0, 5.0, 1.5],
            "top1": [0.0, 1.0, 1.0],
            "mean_rank": [2.0, 1.0, 1.0],
        }
    )
    text = sat_fast.summary(agg, format="text")
    assert "target=fish" in text and "target=bird" in text and "target=0" not in text
    fig = sat_fast.plot_heatmap(agg)
    labels = [t.get_text() for ax in fig.axes for t in ax.get_yticklabels()]
    assert "target=fish" in labels and "target=0" not in labels
    flags = sat_fast.flag_shortcuts(agg, core={"fish": ["fin"]})
    assert flags["class"].cast(pl.String).to_list() == ["fish"]
    html = sat_fast.report(agg, tmp_path / "r.html", flags=flags).read_text(encoding="utf-8")
    assert "target=fish" in html
