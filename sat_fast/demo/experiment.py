"""The demo experiment: a watermark shortcut that accuracy hides and the SAT shows.

Three models learn the synthetic classes (:mod:`sat_fast.demo.data`): the
*shortcut* model on images where a watermark co-occurs with one class (and a
background kind with another), the *control* model on the same images with
watermark and background independent of the class, and the *prior* model on
the shortcut model's images with an attribution prior in its loss (a penalty
on the share of gradient x input saliency that falls on the watermark,
:func:`sat_fast.functional.segment_share_penalty`). All are evaluated in
distribution ("test") and out of distribution ("ood", shortcuts decorrelated);
integrated gradients explain every image, per-image SATs are aggregated per
class, shortcuts are flagged against each class's core parts, and a deletion
check confirms what the tables say.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from sat_fast._progress import Progress
from sat_fast.aggregation import aggregate
from sat_fast.attribution import saliency
from sat_fast.comparison import compare
from sat_fast.deletion import segment_deletion
from sat_fast.demo.data import CLASS_NAMES, SEGMENT_NAMES, DataConfig, SyntheticImages, make_splits
from sat_fast.demo.model import SmallCNN
from sat_fast.demo.train import TrainConfig, cache_key, predict, train_model
from sat_fast.flags import flag_shortcuts
from sat_fast.plots import (
    plot_class_bars,
    plot_comparison,
    plot_heatmap,
    plot_image,
    plot_presence_scatter,
    save_figure,
)
from sat_fast.reports import report
from sat_fast.table import new_run_id, segment_table

__all__ = ["CORE_PARTS", "MODELS", "DemoConfig", "DemoResult", "run_demo"]

#: The demo's models, in the order they are trained, tabled and printed.
MODELS: tuple[str, ...] = ("shortcut", "control", "prior")

#: The parts that legitimately identify each class (everything else is context).
CORE_PARTS: dict[str, tuple[str, ...]] = {
    "fish": ("body", "head", "eye", "tail", "fin"),
    "bird": ("body", "head", "eye", "tail", "beak", "leg"),
    "cat": ("body", "head", "eye", "tail", "leg", "ear"),
}


@dataclass(frozen=True)
class DemoConfig:
    """Dataset, training and explanation settings of the demo.

    ``DemoConfig.full()`` is the default run; ``DemoConfig.quick()`` is the
    smaller run the tests use (same models, fewer images explained, fewer
    integration steps).
    """

    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    ig_steps: int = 32
    # The background covers about 70% of every image, so its share of the
    # attribution is always large: flag by density (flag_shortcuts' default,
    # a segment drawing twice the attribution its area would) and by share
    # only for a segment that takes nearly all of it.
    flag_share_min: float = 0.9
    flag_density_min: float = 2.0
    # Deletion fills a segment with a blurred copy of the image
    # (segment_deletion's default): it takes away a segment's detail, not its
    # colour, so a removed part does not become a hole of another colour.
    deletion_fill: str = "blur"
    # The prior model's loss: cross-entropy + prior_weight * the batch's mean
    # share of |gradient x input| (of the true class's log-probability) on
    # the prior_segment.
    prior_segment: str = "watermark"
    prior_weight: float = 20.0

    @classmethod
    def full(cls) -> DemoConfig:
        """The default run: every setting at its default."""
        return cls()

    @classmethod
    def quick(cls) -> DemoConfig:
        """The smaller run the tests use: the same models, 450 test and OOD images, 16 integration steps."""
        return cls(data=DataConfig(test_size=450, ood_size=450), ig_steps=16)


@dataclass
class DemoResult:
    """What the demo found; every number it prints is here."""

    accuracy: dict[tuple[str, str], float]
    watermark_class: str
    watermark_rank: dict[str, int | None]
    watermark_flagged: dict[str, bool]
    deletion_drop: dict[str, dict[str, float]]
    core_part: str
    tables: dict[str, pl.DataFrame]
    files: list[Path]
    seconds: float
    #: Seconds each model took to train in this run (None: loaded from the cache).
    train_seconds: dict[str, float | None] = field(default_factory=dict)

    @property
    def ood_gap(self) -> dict[str, float]:
        """In-distribution minus out-of-distribution accuracy, per model."""
        return {m: self.accuracy[(m, "test")] - self.accuracy[(m, "ood")] for m in MODELS}


def _log(progress: bool) -> Callable[[str], None]:
    return print if progress else (lambda _msg: None)


def _closest_core_part(data: SyntheticImages, core: tuple[str, ...], area: float) -> str:
    """The core part whose mean area over ``data`` is closest to ``area`` pixels."""
    areas = {p: float((data.segments == SEGMENT_NAMES.index(p)).sum(axis=(1, 2)).mean()) for p in core}
    return min(areas, key=lambda p: (abs(areas[p] - area), p))


def run_demo(
    out_dir: str | Path,
    *,
    config: DemoConfig | None = None,
    cache_dir: str | Path | None = None,
    progress: bool = True,
    summary: bool = True,
) -> DemoResult:
    """Run the whole demo and write its tables, figures and report to ``out_dir``.

    Parameters
    ----------
    out_dir
        Output folder: ``sat.parquet`` (per-image SATs of every model and
        split), ``aggregate.parquet``, ``flags.parquet``,
        ``comparison.parquet``, ``deletion.parquet``, figures (PNG and SVG)
        and ``report.html``.
    config
        :class:`DemoConfig`; default ``DemoConfig.full()``.
    cache_dir
        Where trained parameters are cached (Flax msgpack, keyed by a hash of
        the data and training configs); default ``out_dir / "cache"``.
    progress
        Show progress (a bar on a terminal, a few lines in a log).
    summary
        Print the summary of what the tables show.

    Returns
    -------
    DemoResult
    """
    started = time.perf_counter()
    config = config or DemoConfig.full()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    cache = Path(cache_dir) if cache_dir is not None else out / "cache"
    log = _log(progress)

    log("generating the synthetic dataset ...")
    splits = make_splits(config.data)
    wm_class = config.data.watermark_class
    wm_name = CLASS_NAMES[wm_class]
    names = list(SEGMENT_NAMES)
    core_by_class = {i: list(CORE_PARTS[c]) for i, c in enumerate(CLASS_NAMES)}

    models: dict[str, Any] = {}
    params: dict[str, Any] = {}
    network = SmallCNN(num_classes=len(CLASS_NAMES), widths=config.train.widths)
    train_seconds: dict[str, float | None] = {}
    for model_name, split in (("shortcut", "train"), ("control", "train_control"), ("prior", "train")):
        prior = (config.prior_segment, config.prior_weight) if model_name == "prior" else None
        key = cache_key(config.data, config.train, model_name, prior)
        cached = any(cache.glob(f"{model_name}-{key}.msgpack"))
        t0 = time.perf_counter()
        params[model_name] = train_model(
            splits[split], config.data, config.train, role=model_name, cache_dir=cache, progress=progress, prior=prior
        )
        train_seconds[model_name] = None if cached else time.perf_counter() - t0
        models[model_name] = functools.partial(network.apply, params[model_name])

    accuracy: dict[tuple[str, str], float] = {}
    tables = []
    run = new_run_id((config, time.time()))
    steps = [(m, split) for m in MODELS for split in ("test", "ood")]
    bar = Progress(len(steps), "integrated gradients", unit="split", enabled=progress)
    for model_name, split in steps:
        bar.update()
        data = splits[split]
        predicted = predict(params[model_name], data.images, config.train).argmax(1)
        accuracy[(model_name, split)] = float((predicted == data.label).mean())
        maps = saliency(
            models[model_name], data.images, targets=data.label, method="integrated_gradients", steps=config.ig_steps
        )
        tables.append(
            segment_table(
                np.asarray(maps),
                data.segments,
                names=names,
                image_ids=[f"{split}-{i}" for i in range(len(data))],
                targets=data.label,
                metadata={
                    "label": data.label.astype(np.int64),
                    "predicted": predicted.astype(np.int64),
                    "correct": predicted == data.label,
                    "split": split,
                    "model": model_name,
                    "background_kind": data.background_kind_names(),
                    "watermarked": data.watermark,
                    "run": run,
                },
                class_names=list(CLASS_NAMES),
            )
        )
    bar.close()
    sat = pl.concat(tables)
    agg = aggregate(sat, by=("model", "split", "target"))

    def class_view(model_name: str, split: str = "test") -> pl.DataFrame:
        return agg.filter((pl.col("model") == model_name) & (pl.col("split") == split)).drop("model", "split")

    flags = {}
    rank: dict[str, int | None] = {}
    flagged: dict[str, bool] = {}
    for model_name in MODELS:
        view = class_view(model_name)
        flags[model_name] = flag_shortcuts(
            view,
            core=core_by_class,
            share_min=config.flag_share_min,
            density_min=config.flag_density_min,
        ).with_columns(pl.lit(model_name).alias("model"))
        ordered = view.filter(pl.col("target") == wm_class).sort("mean", descending=True)["segment"].cast(pl.String)
        position = ordered.to_list().index("watermark") + 1 if "watermark" in ordered.to_list() else None
        rank[model_name] = position
        flagged[model_name] = (
            flags[model_name]
            .filter((pl.col("target") == wm_class) & (pl.col("segment").cast(pl.String) == "watermark"))
            .height
            > 0
        )
    all_flags = pl.concat(list(flags.values()), how="diagonal_relaxed")

    comparison = compare(
        sat.filter((pl.col("model") == "shortcut") & (pl.col("split") == "test")),
        sat.filter((pl.col("model") == "control") & (pl.col("split") == "test")),
        by=("target",),
    )

    # Deletion check on the watermarked images of the watermark's class: the
    # watermark against the core part of about the same area.
    log("deletion check ...")
    test = splits["test"]
    chosen = np.flatnonzero((test.label == wm_class) & test.watermark)
    subset = test.subset(chosen)
    wm_area = float((subset.segments == SEGMENT_NAMES.index("watermark")).sum(axis=(1, 2)).mean())
    core_part = _closest_core_part(subset, CORE_PARTS[wm_name], wm_area)
    deletions = []
    drops: dict[str, dict[str, float]] = {}
    for model_name in ("shortcut", "control"):
        frame = segment_deletion(
            models[model_name],
            subset.images,
            subset.segments,
            names=names,
            fill=config.deletion_fill,
            targets=np.full(len(subset), wm_class),
            image_ids=[f"test-{i}" for i in chosen],
            metadata={"model": model_name},
        )
        deletions.append(frame)
        mean_drop = frame.group_by("segment").agg(pl.col("drop").mean(), pl.col("pixels").mean())
        drops[model_name] = {str(s): float(d) for s, d, _ in mean_drop.iter_rows()}
        drops[model_name]["core part (same area)"] = drops[model_name][core_part]
    deletion = pl.concat(deletions)

    prior_title = (
        f"prior model (trained with a penalty on the watermark's share of gradient x input): mean saliency per "
        f"class (in distribution); for {wm_name} the watermark ranks {rank['prior']} and is "
        f"{'flagged' if flagged['prior'] else 'not flagged'}"
    )
    files = _write_outputs(
        out, sat, agg, all_flags, comparison, deletion, class_view, splits, models, names, prior_title
    )
    result = DemoResult(
        accuracy=accuracy,
        watermark_class=wm_name,
        watermark_rank=rank,
        watermark_flagged=flagged,
        deletion_drop=drops,
        core_part=core_part,
        tables={"sat": sat, "aggregate": agg, "flags": all_flags, "comparison": comparison, "deletion": deletion},
        files=files,
        seconds=time.perf_counter() - started,
        train_seconds=train_seconds,
    )
    if summary:
        print(format_summary(result, agg))
    return result


def _write_outputs(
    out: Path,
    sat: pl.DataFrame,
    agg: pl.DataFrame,
    flags: pl.DataFrame,
    comparison: pl.DataFrame,
    deletion: pl.DataFrame,
    class_view: Callable[[str], pl.DataFrame],
    splits: Mapping[str, SyntheticImages],
    models: Mapping[str, Callable[..., Any]],
    names: Sequence[str],
    prior_title: str,
) -> list[Path]:
    files: list[Path] = []
    for name, frame in (
        ("sat", sat),
        ("aggregate", agg),
        ("flags", flags),
        ("comparison", comparison),
        ("deletion", deletion),
    ):
        path = out / f"{name}.parquet"
        frame.write_parquet(path)
        files.append(path)
    shortcut_view = class_view("shortcut")
    test = splits["test"]
    example = int(np.flatnonzero(test.watermark)[0])
    example_map = np.asarray(
        saliency(models["shortcut"], test.images[example : example + 1], targets=test.label[example : example + 1])
    )[0]
    example_table = sat.filter((pl.col("model") == "shortcut") & (pl.col("image_id") == f"test-{example}"))
    named = [
        ("shortcut_classes", "shortcut model: mean saliency per class (in distribution)",
         plot_class_bars(shortcut_view)),
        ("control_classes", "control model: mean saliency per class (in distribution)",
         plot_class_bars(class_view("control"))),
        ("prior_classes", prior_title, plot_class_bars(class_view("prior"))),
        ("shortcut_heatmap", "shortcut model: class x segment", plot_heatmap(shortcut_view)),
        ("shortcut_presence", "shortcut model: presence against mean attribution",
         plot_presence_scatter(shortcut_view)),
        ("shortcut_vs_control", "shortcut vs control (in distribution)",
         plot_comparison(comparison, sides=("shortcut", "control"))),
        ("watermarked_example", "one watermarked image (shortcut model)",
         plot_image(test.images[example], example_map, test.segments[example], names=names, table=example_table)),
    ]  # fmt: skip
    figures = {title: fig for _, title, fig in named}
    for slug, _, fig in named:
        files.extend(save_figure(fig, out / f"figure_{slug}", formats=("png", "svg")))
    files.append(
        report(
            agg,
            out / "report.html",
            flags=flags,
            comparison=comparison,
            figures=figures,
            default_figures=False,  # the demo's own figures above already cover them, with its titles
            sides=("shortcut", "control"),
            title="sat_fast demo: a watermark shortcut",
        )
    )
    return files


def format_summary(result: DemoResult, agg: pl.DataFrame) -> str:
    """The terminal summary: accuracies, top segments per class, flags and the deletion check."""
    lines = ["", "accuracy          in-distribution   out-of-distribution   gap"]
    for m in MODELS:
        lines.append(
            f"  {m:<16}{result.accuracy[(m, 'test')]:>10.3f}{result.accuracy[(m, 'ood')]:>20.3f}"
            f"{result.ood_gap[m]:>9.3f}"
        )
    for m in MODELS:
        lines.append(f"\n{m} model, top segments by mean saliency (in distribution):")
        view = agg.filter((pl.col("model") == m) & (pl.col("split") == "test"))
        for cls in sorted(view["target"].unique().to_list()):
            top = view.filter(pl.col("target") == cls).sort("mean", descending=True).head(3)
            parts = ", ".join(f"{s} {v:+.3f}" for s, v in zip(top["segment"].cast(pl.String), top["mean"], strict=True))
            lines.append(f"  {CLASS_NAMES[cls]:<6} {parts}")
    flags = result.tables["flags"]
    lines.append("\nflags (non-core segments with a large share or density):")
    if flags.height == 0:
        lines.append("  none")
    for row in flags.iter_rows(named=True):
        lines.append(
            f"  {row['model']:<9} {CLASS_NAMES[row['target']]:<6} {row['segment']:<11} "
            f"share {row['share']:.3f} density {row['density']:.2f} presence {row['presence']:.2f}"
        )
    cls = result.watermark_class
    ranks = ", ".join(f"{m} {result.watermark_rank[m]}" for m in MODELS)
    flagged = ", ".join(f"{m} {result.watermark_flagged[m]}" for m in MODELS)
    lines.append(f"\nwatermark in class {cls!r}: rank by mean saliency  {ranks}; flagged  {flagged}")
    gap = result.ood_gap["prior"] - result.ood_gap["control"]
    lines.append(
        f"prior model (trained with a penalty on the watermark's share of gradient x input): watermark rank "
        f"{result.watermark_rank['prior']}, flagged {result.watermark_flagged['prior']}, OOD gap "
        f"{gap * 100:+.1f} points from the control's"
    )
    shortcut_s, prior_s = result.train_seconds.get("shortcut"), result.train_seconds.get("prior")
    if shortcut_s and prior_s:
        lines.append(
            f"the prior's training cost: {prior_s:.0f} s against {shortcut_s:.0f} s for the same data without it "
            f"({prior_s / shortcut_s:.1f}x)"
        )
    for m in ("shortcut", "control"):
        d = result.deletion_drop[m]
        lines.append(
            f"deletion ({m}): removing the watermark lowers the {cls} logit by {d['watermark']:+.3f}, "
            f"its {result.core_part} (about the same area) by {d['core part (same area)']:+.3f}"
        )
    lines.append(f"\nfinished in {result.seconds:.0f} s")
    return "\n".join(lines)
