"""``sat_fast.run``: the streaming pipeline from a source to SAT shards, then the aggregate, flags and report."""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from sat_fast._typing import Backend, Method, Output, RunTargets, check_choice
from sat_fast.pipeline._model import ModelBundle, as_bundle, explain_batch, file_sha256, load_factory, select_device
from sat_fast.pipeline._parquet_source import ParquetImages, ParquetMasks
from sat_fast.pipeline._provenance import PROVENANCE_KEY, provenance, settings_difference
from sat_fast.pipeline._shards import (
    MANIFEST,
    RUN_JSON,
    SAT_DIR,
    ShardRecord,
    append_manifest,
    clean_unfinished,
    finished_shards,
    read_json,
    write_json_atomic,
    write_shard,
)
from sat_fast.pipeline._sources import (
    BadItemError,
    Item,
    MapShards,
    MaskSource,
    image_folder_items,
    items_digest,
    mask_source,
    read_image,
)
from sat_fast.pipeline._stages import (
    Loaded,
    ShapeBatcher,
    Skipped,
    finish_shard,
    load_image_item,
    load_map_item,
    maps_of,
    ordered_prefetch,
    reduce_batch,
)
from sat_fast.segments import DEFAULT_MAX_PIXELS

__all__ = ["RunSummary", "run"]


@dataclass(frozen=True)
class RunSummary:
    """What :func:`sat_fast.run` did.

    Attributes
    ----------
    out
        The run folder.
    run_id
        The short id in every row's ``run`` column.
    items
        Images (or precomputed maps) in the source.
    explained
        Items explained by this call (items of shards finished earlier are not counted again).
    resumed_shards
        Shards found finished and kept.
    skipped
        Every skipped item of the run, ``{"image_id": ..., "reason": ...}``, in source order.
    rows
        Rows of the per-image SAT (all shards).
    files
        The SAT shards, in the canonical row order.
    aggregate, flags
        The per-class aggregate and the shortcut flags (also written to the folder); None with
        ``summarize=False``.
    """

    out: Path
    run_id: str
    items: int
    explained: int
    resumed_shards: int
    skipped: list[dict[str, str]]
    rows: int
    files: list[Path]
    aggregate: pl.DataFrame | None
    flags: pl.DataFrame | None
    per_class: int = 1
    timings: dict[str, float] = field(default_factory=dict)

    def text(self, *, max_listed: int = 5) -> str:
        """A few lines: what was explained, skipped (and why) and written."""
        per_class = f" for each of the {self.per_class} classes" if self.per_class > 1 else ""
        lines = [
            f"explained {self.items - len(self.skipped)} images{per_class} ({self.items - len(self.skipped)} of "
            f"{self.items}; {self.explained} handled in this call, {self.resumed_shards} shards kept from before); "
            f"{self.rows} rows in {len(self.files)} shards under {self.out / SAT_DIR}; "
            + (
                "wrote aggregate.parquet, flags.parquet, report.html, run.json"
                if self.aggregate is not None
                else "wrote run.json"
            )
        ]
        if self.skipped:
            lines.append(f"skipped {len(self.skipped)} bad items (all listed in run.json):")
            lines += [f"  {s['image_id']}: {s['reason']}" for s in self.skipped[:max_listed]]
            if len(self.skipped) > max_listed:
                lines.append(f"  ... and {len(self.skipped) - max_listed} more")
        return "\n".join(lines)


def _positive(value: Any, name: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return value


def _describe(value: Any) -> Any:
    """A JSON-able description of an option value (arrays by shape and hash)."""
    if isinstance(value, np.ndarray):
        import hashlib

        return {"shape": list(value.shape), "sha256": hashlib.sha256(np.ascontiguousarray(value).tobytes()).hexdigest()}
    if isinstance(value, Path):
        return str(value)
    return value


def _absolute(path: Any) -> str | None:
    """A path as stored in the settings: absolute, so that a resume from another folder compares equal."""
    return None if path is None else str(Path(path).resolve())


def _model_id(model: Any, bundle: ModelBundle) -> str:
    if isinstance(model, str):
        return model
    apply = getattr(bundle.apply, "func", bundle.apply)  # functools.partial(model.apply, params)
    return f"{getattr(apply, '__module__', '?')}.{getattr(apply, '__qualname__', type(apply).__name__)}"


def run(
    model: str | ModelBundle | tuple[Any, ...] | None = None,
    *,
    out: str | os.PathLike[str],
    images: str | os.PathLike[str] | None = None,
    labels: str | os.PathLike[str] | None = None,
    masks: str | os.PathLike[str] | MaskSource | None = None,
    mask_column: str | None = None,
    names: Any = None,
    ignore_index: int | None = None,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    saliency_maps: str | os.PathLike[str] | MapShards | None = None,
    class_names: Sequence[str] | None = None,
    checkpoint: str | os.PathLike[str] | None = None,
    method: Method = "integrated_gradients",
    steps: int = 32,
    baseline: Any = None,
    samples: int = 32,
    noise: float = 0.15,
    seed: int = 0,
    output: Output = "logit",
    layer: str | None = None,
    targets: RunTargets = "label",
    batch_size: int = 32,
    shard_size: int = 1024,
    device: str | None = None,
    core: Any = None,
    share_min: float = 0.3,
    density_min: float = 2.0,
    presence_min: float = 0.05,
    excess_min: float = 0.1,
    skip_bad: bool = False,
    resume: bool = False,
    progress: bool = True,
    workers: int = 2,
    backend: Backend = "stream",
    run_id: str | None = None,
    summarize: bool = True,
    ray_address: str | None = None,
) -> RunSummary:
    """Explain every image of a dataset and write its SATs as resumable Parquet shards, then aggregate.

    The images are read, decoded, transformed and matched with their masks on ``workers`` threads, a bounded
    number ahead of the model; each shard of ``shard_size`` input items is explained in batches of one shape,
    reduced to rows, put in canonical order (source order of the images, then explained class, then segment)
    and written atomically to ``out/sat/part-NNNNNN.parquet``, then recorded in ``out/manifest.jsonl``. The
    aggregate, flags and HTML report are computed at the end by streaming over the shards.

    Parameters
    ----------
    model
        A factory spec ``"pkg.module:function"`` / ``"file.py:function"`` (called with ``checkpoint``), or what
        a factory returns: a :class:`sat_fast.pipeline.ModelBundle` or ``(apply, class_names[, transform[,
        preprocess]])``. Not with ``saliency_maps``.
    out
        The run folder (created). A folder holding finished shards of a run is refused unless ``resume``.
    images
        Image folder: one sub-folder per class (named after the model's classes), or flat with ``labels``; or a
        Parquet dataset (``*.parquet``: a file or a glob) with an ``image`` column of encoded bytes (or
        ``{"bytes": ...}`` structs), a ``label`` column (class index or name) and optionally ``image_id``.
    labels
        CSV file with columns ``image_id,label`` (class name or index).
    masks, names, ignore_index, max_pixels
        Segments: a folder of PNG label maps named like the images (with the ``names`` table), a COCO JSON file
        (matched by ``file_name``) or a sat_fast ``.npz`` bundle; loaded per image, never all at once.
    mask_column
        With a Parquet image dataset: its mask column, instead of ``masks``: per row PNG label-map bytes (named
        by ``names``) or COCO RLE, a struct ``{size: [h, w], counts, category}`` or a list of them (``category``
        a name, or an integer of ``names``).
    saliency_maps
        Instead of a model: precomputed maps (``.npz``/``.npy`` shards with an ``image_id`` array, or a
        Parquet file with a ``saliency`` column; see :class:`sat_fast.pipeline.MapShards`), matched to the
        masks by image id.
    class_names
        With ``saliency_maps``: the class names in index order (adds the ``class`` column).
    checkpoint
        Passed to a factory spec; its SHA-256 is part of the provenance.
    method, steps, baseline, samples, noise, seed, output, layer
        As in :func:`sat_fast.saliency`.
    targets
        The explained class: each image's ``"label"``, the model's ``"predicted"`` class, or ``"all"``.
    batch_size, shard_size
        Images per saliency call, and input items per output shard (the unit of resumption).
    device
        JAX device: ``"cpu"``, ``"gpu"``, ``"gpu:1"``...
    core, share_min, density_min, presence_min, excess_min
        As in :func:`sat_fast.flag_shortcuts`, for the flags written at the end (not part of the settings
        compared on resume).
    skip_bad
        Skip bad items (unreadable image, missing mask, mask of another size than its image), listing them in
        the summary and ``run.json``, instead of stopping at the first with a ``ValueError`` naming it.
    resume
        Continue the run in ``out``: finished shards are kept, unfinished or corrupted ones redone. Settings
        that differ from the stored ones are an error naming them.
    progress
        Show a progress bar (images/s and ETA).
    workers
        Threads reading and decoding images and masks.
    backend
        ``"stream"``: this machine, threads and one device. ``"ray"``: the same stages as a Ray Data job (extra
        ``sat_fast[ray]``): loading and the reduction in Ray tasks, saliency in actors holding the model (one per
        GPU), the same shards, manifest and resume; the run folder and inputs must be on a shared filesystem.
    run_id
        The ``run`` column's value (default: a new 8-hex id; kept on resume).
    summarize
        Compute and write the aggregate, flags and report at the end (``False``: the shards and ``run.json``
        only, e.g. to aggregate several runs together later).
    ray_address
        With ``backend="ray"``: the cluster to connect to (default: ``RAY_ADDRESS``, else a new local instance).

    Returns
    -------
    RunSummary

    Examples
    --------
    >>> import numpy as np, tempfile, pathlib, sat_fast
    >>> from sat_fast.segments import from_label_map, save_segments
    >>> work = pathlib.Path(tempfile.mkdtemp())
    >>> label_maps = np.zeros((3, 4, 4), np.uint8); label_maps[:, :2] = 1
    >>> save_segments(from_label_map(label_maps, ["sky", "dog"], image_ids=["a", "b", "c"]), work / "m.npz")
    >>> np.savez(work / "maps.npz", maps=np.ones((3, 4, 4), np.float32), image_id=["a", "b", "c"], target=[0, 1, 0])
    >>> done = sat_fast.run(saliency_maps=work / "maps.npz", masks=work / "m.npz", out=work / "run",
    ...                     progress=False)
    >>> done.rows, sorted(p.name for p in (work / "run").iterdir())
    (6, ['aggregate.parquet', 'flags.parquet', 'manifest.jsonl', 'report.html', 'run.json', 'sat'])
    """
    check_choice(backend, "backend", Backend)
    if backend == "ray" or ray_address is not None:  # before anything is written
        from sat_fast.pipeline._ray import check_ray_options

        check_ray_options(backend, ray_address)
    check_choice(targets, "targets", RunTargets)
    check_choice(output, "output", Output)
    check_choice(method, "method", Method)
    for value, name in ((batch_size, "batch_size"), (shard_size, "shard_size"), (steps, "steps"), (workers, "workers")):
        _positive(value, name)
    out_dir = Path(out)
    timings: dict[str, float] = {}
    started = time.perf_counter()
    bundle: ModelBundle | None = None
    maps_source: MapShards | None = None
    dataset: ParquetImages | None = None
    if saliency_maps is None:
        if model is None or images is None:
            raise ValueError("run needs a model and images (or saliency_maps= instead of both)")
        if device is not None:
            select_device(device)
        bundle = as_bundle(load_factory(model)(checkpoint) if isinstance(model, str) else model)
        names_of_classes: tuple[str, ...] | None = bundle.class_names
        if str(images).endswith(".parquet"):
            if labels is not None:
                raise ValueError("a Parquet image dataset has its own 'label' column; pass it without labels")
            dataset = ParquetImages(images, bundle.class_names)
            items, read = dataset.items(), dataset.read
        else:
            items = image_folder_items(Path(images), Path(labels) if labels is not None else None, bundle.class_names)
            read = read_image
        model_id = _model_id(model, bundle)
    else:
        if model is not None or images is not None:
            raise ValueError("saliency_maps= replaces the model and the images; pass it without them")
        if targets != "label":
            raise ValueError(
                f"precomputed maps explain the class they were made for; targets={targets!r} needs a model"
            )
        # A MapShards (or a subclass serving maps from elsewhere, as the benchmark does), or its path.
        maps_source = saliency_maps if isinstance(saliency_maps, MapShards) else MapShards(saliency_maps)
        items = maps_source.items()
        names_of_classes = tuple(class_names) if class_names is not None else None
        model_id = f"precomputed:{saliency_maps if not isinstance(saliency_maps, MapShards) else maps_source.source}"
    _check_unique_ids(items)
    if mask_column is not None:
        if masks is not None or dataset is None:
            raise ValueError("mask_column= names a column of a Parquet image dataset (images=*.parquet), not masks=")
        mask_src: MaskSource = ParquetMasks(
            dataset, items, mask_column, names=names, ignore_index=ignore_index, max_pixels=max_pixels
        )
    elif masks is None:
        raise ValueError("run needs masks (a PNG folder with names, a COCO .json or an .npz bundle)")
    else:
        mask_src = mask_source(masks, names=names, ignore_index=ignore_index, max_pixels=max_pixels)
    missing = [item.image_id for item in items if not mask_src.has(item.image_id)]
    if missing and not skip_bad:
        shown = ", ".join(missing[:5]) + (" ..." if len(missing) > 5 else "")
        raise BadItemError(
            f"{len(missing)} of {len(items)} images have no masks ({shown})",
            "pass skip_bad=True (sat-fast run --skip-bad) to skip them and list them in run.json",
        )

    settings = {
        "model": model_id,
        "checkpoint_sha256": file_sha256(Path(checkpoint))
        if checkpoint is not None and Path(checkpoint).is_file()
        else None,
        "method": method,
        "steps": steps,
        "baseline": _describe(baseline),
        "samples": samples,
        "noise": noise,
        "seed": seed,
        "output": output,
        "layer": layer,
        "targets": targets,
        "batch_size": batch_size,
        "shard_size": shard_size,
        "images": _absolute(images) if dataset is None else dataset.describe(),
        "labels": _absolute(labels),
        "saliency_maps": None if maps_source is None else maps_source.describe(),
        "class_names": None if names_of_classes is None else list(names_of_classes),
        "segments": {**mask_src.describe(), "max_pixels": max_pixels},
        "skip_bad": skip_bad,
        "items": {"count": len(items), "sha256": items_digest(items)},
    }
    run_id = _open_run_folder(out_dir, settings, resume=resume, run_id=run_id)
    device_name = _device_name() if bundle is not None else None
    prov = provenance(settings, run_id=run_id, device=device_name)
    write_json_atomic(out_dir / RUN_JSON, {**prov, "status": "running"})
    finished = finished_shards(out_dir)
    clean_unfinished(out_dir, finished)
    resumed = len(finished)
    timings["prepare"] = time.perf_counter() - started

    shard_count = math.ceil(len(items) / shard_size)
    todo = [n for n in range(shard_count) if n not in finished]
    todo_items = sum(min(len(items), (n + 1) * shard_size) - n * shard_size for n in todo)
    parquet_metadata = {PROVENANCE_KEY: json.dumps(prov, sort_keys=True)}

    if bundle is not None:
        options: dict[str, Any] = {
            "method": method, "steps": steps, "samples": samples, "noise": noise, "seed": seed,
            "output": output, "layer": layer,
        }  # fmt: skip
        if baseline is not None:
            options["baseline"] = baseline
        metadata: dict[str, Any] = {
            "label": lambda b, e: np.array([x.item.label for x in b]),
            "predicted": lambda b, e: e.predicted,
            "correct": lambda b, e: e.predicted == np.array([x.item.label for x in b]),
            "model": model_id,
            "run": run_id,
        }
        transform, active = bundle.transform, bundle

        def load(item: Item) -> Loaded:
            return load_image_item(item, mask_src, transform, read)

        def explain(batch: list[Loaded]) -> Any:
            labels_arr = np.array([x.item.label for x in batch])
            first = not state["checked"]
            state["checked"] = True
            return explain_batch(
                active, np.stack([x.array for x in batch]), labels_arr, targets=targets, options=options,
                check_outputs=first,
            )  # fmt: skip

    else:
        assert maps_source is not None
        source = maps_source
        extra = source.extra_columns()
        metadata = {"model": model_id, "run": run_id}
        if extra["target"] and extra["label"]:
            metadata = {"label": lambda b, e: np.array([x.values["label"] for x in b]), **metadata}

        def load(item: Item) -> Loaded:
            return load_map_item(item, source, mask_src)

        explain = maps_of
    state = {"checked": False}

    def load_or_skip(position: int) -> Loaded | Skipped:
        item = items[position]
        try:
            return load(item)
        except BadItemError as exc:
            if not skip_bad:
                raise
            return Skipped(item, str(exc))

    def finish() -> RunSummary:
        return _finish(
            out_dir, prov, finished, items=len(items), explained=todo_items, resumed=resumed, model_id=model_id,
            per_class=len(names_of_classes or ()) if targets == "all" else 1, timings=timings,
            summarize=summarize, flag_options={"core": core, "share_min": share_min, "density_min": density_min,
                          "presence_min": presence_min, "excess_min": excess_min},
        )  # fmt: skip

    if backend == "ray":  # the same stages as a Ray Data job, writing the same shards and manifest
        from sat_fast.pipeline._ray import RayJob, run_on_ray

        job = RayJob(
            out_dir, items, todo, shard_size, batch_size, skip_bad, mask_src, parquet_metadata, metadata,
            names_of_classes, model=model, checkpoint=checkpoint, bundle=bundle, maps=maps_source, targets=targets,
            options=options if bundle is not None else {}, device=device, dataset=dataset,
        )  # fmt: skip
        timings.update(run_on_ray(job, finished, address=ray_address, progress=progress))
        return finish()

    from sat_fast._progress import Progress

    bar = Progress(todo_items, "explaining", unit="img", enabled=progress)
    # Items are loaded in chunks (one task per chunk keeps the per-item cost of the pool small); at most
    # `window` chunks are in flight, which bounds what is held ahead of the model.
    chunk = max(1, min(batch_size, 64))
    window = 2 * workers + 2
    stage_time = {"wait": 0.0, "explain": 0.0, "reduce": 0.0, "write": 0.0}
    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="sat-fast-load")
    # A finished shard is sorted, written, hashed and recorded on its own thread while the next shard is
    # reduced (Parquet encoding and hashing release the GIL); one write at a time, in shard order, so the
    # manifest stays in order and at most one shard's rows wait in memory.
    writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sat-fast-write")
    writing: Future[None] | None = None

    def write(n: int, start: int, stop: int, frames: list[pl.DataFrame], skipped: list[dict[str, str]]) -> None:
        t0 = time.perf_counter()
        record = write_shard(out_dir, n, start, stop, finish_shard(frames), metadata=parquet_metadata, skipped=skipped)
        append_manifest(out_dir, record)
        finished[n] = record
        stage_time["write"] += time.perf_counter() - t0

    try:
        stream = ordered_prefetch(
            lambda part: pool.submit(lambda: [load_or_skip(item) for item in part]),
            _chunks(todo, len(items), shard_size, chunk),
            window,
        )
        for n in todo:
            start, stop = n * shard_size, min(len(items), (n + 1) * shard_size)
            batcher, skipped = ShapeBatcher(batch_size), []
            frames: list[pl.DataFrame] = []

            def process(batch: list[Loaded], frames: list[pl.DataFrame]) -> None:
                t0 = time.perf_counter()
                explained = explain(batch)
                t1 = time.perf_counter()
                frames.extend(reduce_batch(batch, explained, metadata=metadata, class_names=names_of_classes))
                stage_time["explain"] += t1 - t0
                stage_time["reduce"] += time.perf_counter() - t1
                bar.update(len(batch))
                _eta(bar)

            for _ in range(start, stop):
                t0 = time.perf_counter()
                got = next(stream)
                stage_time["wait"] += time.perf_counter() - t0
                if isinstance(got, Skipped):
                    skipped.append({"image_id": got.item.image_id, "reason": got.reason})
                    bar.update(1)
                    continue
                full = batcher.add(got)
                if full is not None:
                    process(full, frames)
            for rest in batcher.flush():
                process(rest, frames)
            if writing is not None:
                writing.result()  # the previous shard is on disk and in the manifest (or its error is raised)
            writing = writer.submit(write, n, start, stop, frames, skipped)
        if writing is not None:
            writing.result()
    except BaseException:
        if bar.bar is not None:  # the terminal's bar goes; a log gets no final count for a failed run
            bar.bar.close()
        raise
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        # A shard already handed to the writer is finished (it is whole): a later item's error loses no work.
        writer.shutdown(wait=True)
    bar.close()
    timings.update(stage_time)
    return finish()


def _check_unique_ids(items: Sequence[Item]) -> None:
    """Every input has its own image id: rows are keyed by it, and a repeated id would be counted twice."""
    ids = [item.image_id for item in items]
    if len(set(ids)) == len(ids):
        return
    from collections import Counter

    repeated = [(image_id, n) for image_id, n in Counter(ids).items() if n > 1]
    shown = ", ".join(f"{image_id!r} ({n} times)" for image_id, n in repeated[:5])
    more = f" and {len(repeated) - 5} more" if len(repeated) > 5 else ""
    raise ValueError(
        f"image ids must be unique across the inputs (rows and masks are matched by id): {shown}{more} repeated"
    )


def _chunks(todo: list[int], count: int, shard_size: int, chunk: int) -> Any:
    """Position ranges of the shards to do, cut into chunks (a chunk never spans two shards)."""
    for n in todo:
        stop = min(count, (n + 1) * shard_size)
        for start in range(n * shard_size, stop, chunk):
            yield range(start, min(stop, start + chunk))


def _eta(bar: Any) -> None:
    """Time left at the rate so far (the log lines show images/s; a terminal's bar shows both itself)."""
    elapsed = time.monotonic() - bar.start
    if bar.count and elapsed > 0 and bar.bar is None:
        bar.set_postfix(eta=f"{max(bar.total - bar.count, 0) * elapsed / bar.count:.0f}s")


def _device_name() -> str | None:
    try:
        import jax

        device = jax.config.jax_default_device or jax.devices()[0]  # type: ignore[attr-defined]
        return str(device)
    except Exception:  # no JAX backend: the provenance says so
        return None


def _open_run_folder(out: Path, settings: Mapping[str, Any], *, resume: bool, run_id: str | None) -> str:
    """Create or reopen the run folder; the run id (kept on resume). Other settings on resume are an error."""
    from sat_fast.table import new_run_id

    stored_path = out / RUN_JSON
    if stored_path.is_file() and not resume and not finished_shards(out):
        # A run that stopped before finishing any shard leaves nothing to lose: start again.
        for name in (RUN_JSON, MANIFEST):
            (out / name).unlink(missing_ok=True)
        clean_unfinished(out, {})
    if stored_path.is_file():
        if not resume:
            raise ValueError(
                f"{out} already holds a run ({RUN_JSON}); resume it (resume=True, sat-fast run --resume) or "
                "choose another folder"
            )
        stored = read_json(stored_path)
        before = stored.get("settings", {}) if isinstance(stored, dict) else {}
        differ = settings_difference(before, json.loads(json.dumps(settings)))
        if differ:
            raise ValueError(f"cannot resume the run in {out}: its settings differ: " + "; ".join(differ))
        if run_id is not None and run_id != stored.get("run"):
            raise ValueError(f"cannot resume the run in {out} under run id {run_id!r}: it is {stored.get('run')!r}")
        return str(stored["run"])
    if (out / SAT_DIR).is_dir() and any((out / SAT_DIR).iterdir()):
        raise ValueError(f"{out / SAT_DIR} holds files but {out} has no {RUN_JSON}: choose another folder")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ValueError(f"cannot create the output folder {out}: {exc.strerror or exc}") from None
    if not out.is_dir():
        raise ValueError(f"out {out} is not a folder")
    return run_id if run_id is not None else new_run_id(settings)


def _finish(
    out: Path,
    prov: dict[str, Any],
    finished: Mapping[int, ShardRecord],
    *,
    items: int,
    explained: int,
    resumed: int,
    model_id: str,
    per_class: int,
    timings: dict[str, float],
    summarize: bool,
    flag_options: dict[str, Any],
) -> RunSummary:
    """Aggregate, flags and report by streaming over the shards; the final ``run.json``."""
    from sat_fast.aggregation import aggregate
    from sat_fast.flags import flag_shortcuts
    from sat_fast.reports import report

    records = [finished[n] for n in sorted(finished)]
    files = [out / r.file for r in records if r.file]
    skipped = [s for r in records for s in r.skipped]
    rows = sum(r.rows for r in records)
    final = {**prov, "status": "complete", "items": items, "rows": rows, "shards": len(records), "skipped": skipped}
    if not files:
        write_json_atomic(out / RUN_JSON, {**final, "status": "failed: no image could be explained"})
        raise ValueError(f"no image could be explained ({len(skipped)} skipped; see {out / RUN_JSON})")
    if not summarize:
        write_json_atomic(out / RUN_JSON, final)
        return RunSummary(
            out, str(prov["run"]), items, explained, resumed, skipped, rows, files, None, None, per_class, timings
        )
    t0 = time.perf_counter()
    agg = aggregate(pl.scan_parquet(files), by=("target",))
    timings["aggregate"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    flags = flag_shortcuts(agg, **flag_options)
    agg.write_parquet(out / "aggregate.parquet")
    flags.write_parquet(out / "flags.parquet")
    report(agg, out / "report.html", flags=flags, title=f"SATs of {model_id}")
    timings["flags_report"] = time.perf_counter() - t0
    write_json_atomic(out / RUN_JSON, final)
    return RunSummary(
        out, str(prov["run"]), items, explained, resumed, skipped, rows, files, agg, flags, per_class, timings
    )
