"""``backend="ray"``: the pipeline's stages as a Ray Data job, writing the same run folder as the streaming path.

The job has three operators over one row per *shard* (the streaming path's unit: the same input range, so a run
can be resumed with either backend):

1. **load** (Ray tasks): a shard's items are read and matched with their masks (:func:`load_image_item` /
   :func:`load_map_item`) and grouped by :class:`ShapeBatcher` exactly as the streaming path groups them, so
   every batch holds the same images; a generator yields one row per batch, then an end-of-shard row that counts
   the shard's batches and lists its skipped items.
2. **explain** (Ray actors, models only): each actor builds the model once (the factory is called in the actor)
   and runs :func:`explain_batch`; one actor per GPU where the cluster has GPUs (``num_gpus=1`` each).
3. **reduce** (Ray tasks): :func:`reduce_batch`, the C++ kernels, turns a batch into rows. Precomputed maps
   need no model: their explain step is :func:`maps_of`, and the load tasks reduce their batches themselves, so
   only table rows, never maps, leave a task.

The driver collects each shard's rows, and once its end row and all its batches are in, puts them in canonical
order (:func:`finish_shard`), writes ``sat/part-NNNNNN.parquet`` atomically and appends the manifest line: the
one writer of the run folder, as in the streaming path. Paths are made absolute, so the run folder and the inputs
must be on a filesystem every node mounts at the same path.
"""

from __future__ import annotations

import copy
import logging
import os
import pickle
import time
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from sat_fast.pipeline._model import ModelBundle, as_bundle, explain_batch, load_factory, select_device
from sat_fast.pipeline._parquet_source import ParquetImages
from sat_fast.pipeline._shards import ShardRecord, append_manifest, write_shard
from sat_fast.pipeline._sources import BadItemError, Item, MapShards, MaskSource, read_image
from sat_fast.pipeline._stages import Loaded, ShapeBatcher, finish_shard, load_image_item, load_map_item, maps_of
from sat_fast.pipeline._stages import reduce_batch as reduce_rows

__all__ = ["RayJob", "check_ray_options", "require_ray", "run_on_ray"]

#: Rows flowing through the job: a batch of loaded items, its explanation, its table rows, or a shard's end.
_BATCH, _EXPLAINED, _ROWS, _END, _BAD, _ERROR = "batch", "explained", "rows", "end", "bad", "error"
#: Errors of the user's inputs or model that travel to the driver as they are (Ray would wrap them in its own).
_USER_ERRORS = (ValueError, TypeError, OSError)


def require_ray() -> Any:
    """The ``ray`` module with Ray Data, or an ``ImportError`` that says how to install it."""
    try:
        import ray
        import ray.data
    except ImportError as exc:
        raise ImportError(
            f"backend='ray' needs Ray Data, which is not installed ({exc}): pip install 'sat_fast[ray]'"
        ) from None
    return ray


def check_ray_options(backend: str, address: str | None) -> None:
    """Before a run writes anything: Ray is there, and ``ray_address`` only with ``backend="ray"``."""
    if address is not None and backend != "ray":
        raise ValueError(f"ray_address={address!r} is used only with backend='ray' (sat-fast run --backend ray)")
    require_ray()


@dataclass(frozen=True)
class RayJob:
    """What the Ray job needs from :func:`sat_fast.run`: the shards to do and the settings of each stage."""

    out: Path
    items: Sequence[Item]
    todo: Sequence[int]
    shard_size: int
    batch_size: int
    skip_bad: bool
    masks: MaskSource
    parquet_metadata: Mapping[str, str]
    metadata: dict[str, Any]
    class_names: Sequence[str] | None
    model: Any = None
    checkpoint: Any = None
    bundle: ModelBundle | None = None
    maps: MapShards | None = None
    targets: str = "label"
    options: dict[str, Any] = field(default_factory=dict)
    device: str | None = None
    dataset: ParquetImages | None = None


# --------------------------------------------------------------------------- on the workers

# One model (or maps source) per worker process: tasks of one worker reuse it.
_CACHE: dict[Any, Any] = {}


def _factory_spec(model: str) -> str:
    """A factory spec with an absolute file path, importable from any worker's folder."""
    where, _, attr = model.rpartition(":")
    return f"{Path(where).resolve()}:{attr}" if where.endswith(".py") else model


def _worker_bundle(model_ref: tuple[str, Any, Any]) -> ModelBundle:
    """The model in a worker: the factory is called there (its file may not be importable from the pickle)."""
    kind, value, checkpoint = model_ref
    if kind == "bundle":
        return as_bundle(value)
    key = ("model", value, checkpoint)
    if key not in _CACHE:
        _CACHE[key] = as_bundle(load_factory(value)(checkpoint))
    return _CACHE[key]  # type: ignore[no-any-return]


def _worker_maps(source: str) -> MapShards:
    key = ("maps", source)
    if key not in _CACHE:
        _CACHE[key] = MapShards(source)
    return _CACHE[key]  # type: ignore[no-any-return]


@dataclass(frozen=True)
class _FactoryTransform:
    """The transform of a factory's model, made in the worker (its class may live in the factory's file)."""

    model_ref: tuple[str, Any, Any]


def _rows(kind: str, shard: int, payload: Any) -> dict[str, np.ndarray]:
    """One Ray Data row: the payload travels pickled (numpy arrays inside, no Arrow conversion)."""
    blob = np.empty(1, dtype=object)
    blob[0] = pickle.dumps(payload, protocol=pickle.HIGHEST_PROTOCOL)
    return {"kind": np.array([kind]), "shard": np.array([shard], np.int64), "payload": blob}


def _error_row(shard: int, exc: BaseException) -> dict[str, np.ndarray]:
    """The error as a row, raised again by the driver: one line naming the file or setting, not Ray's wrapper."""
    try:
        error = pickle.loads(pickle.dumps(exc))
    except Exception:  # an exception whose constructor takes other arguments than its args: its message
        error = ValueError(str(exc))
    return _rows(_ERROR, shard, error)


def _each(batch: Mapping[str, np.ndarray]) -> Iterator[tuple[str, int, Any]]:
    for kind, shard, blob in zip(batch["kind"], batch["shard"], batch["payload"], strict=True):
        yield str(kind), int(shard), pickle.loads(blob)


def _loader(job: dict[str, Any]) -> Callable[[Item], Loaded]:
    """The load step of one item, with the maps source or the model's transform made in this worker."""
    masks = job["masks"]
    if job["maps"] is not None:
        maps = _worker_maps(job["maps"]) if isinstance(job["maps"], str) else job["maps"]
        return lambda item: load_map_item(item, maps, masks)
    transform = job["transform"]
    if isinstance(transform, _FactoryTransform):
        transform = _worker_bundle(transform.model_ref).transform
    read = read_image if job["dataset"] is None else job["dataset"].read
    return lambda item: load_image_item(item, masks, transform, read)


def _load_shard(batch: Mapping[str, np.ndarray], job: dict[str, Any]) -> Iterator[dict[str, np.ndarray]]:
    """Load stage (Ray tasks): one shard's items, loaded and batched as the streaming path batches them.

    Precomputed maps are reduced here too (their explain step is the maps themselves), so that only table rows,
    not maps, leave the task.
    """

    def emit(shard: int, loaded: list[Loaded]) -> dict[str, np.ndarray]:
        if job["maps"] is None:
            return _rows(_BATCH, shard, loaded)
        frames = reduce_rows(loaded, maps_of(loaded), metadata=job["metadata"], class_names=job["names"])
        return _rows(_ROWS, shard, (len(loaded), frames))

    for _, shard, items in _each(batch):
        try:
            load = _loader(job)
            batcher, skipped, batches = ShapeBatcher(job["batch_size"]), [], 0
            for item in items:
                try:
                    loaded = load(item)
                except BadItemError as exc:
                    if not job["skip_bad"]:
                        yield _rows(_BAD, shard, (exc.item, exc.reason))
                        return
                    skipped.append({"image_id": item.image_id, "reason": str(exc)})
                    continue
                full = batcher.add(loaded)
                if full is not None:
                    batches += 1
                    yield emit(shard, full)
            for rest in batcher.flush():
                batches += 1
                yield emit(shard, rest)
        except _USER_ERRORS as exc:
            yield _error_row(shard, exc)
            return
        yield _rows(_END, shard, (batches, skipped))


class _Explain:
    """Explain stage, in a Ray actor: the model is built (and jitted on first use) once per actor."""

    def __init__(self, model_ref: tuple[str, Any, Any], targets: str, options: dict[str, Any], device: Any) -> None:
        self.targets, self.options, self.checked = targets, options, False
        self.error: BaseException | None = None
        try:
            if device is not None:
                select_device(device)
            self.bundle = _worker_bundle(model_ref)
        except _USER_ERRORS as exc:  # reported with the first batch, by the driver
            self.error = exc

    def __call__(self, batch: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        out = []
        for kind, shard, payload in _each(batch):
            if kind != _BATCH:
                out.append(_rows(kind, shard, payload))
                continue
            try:
                if self.error is not None:
                    raise self.error
                labels = np.array([x.item.label for x in payload])
                explained = explain_batch(
                    self.bundle, np.stack([x.array for x in payload]), labels, targets=self.targets,
                    options=self.options, check_outputs=not self.checked,
                )  # fmt: skip
            except _USER_ERRORS as exc:
                out.append(_error_row(shard, exc))
                continue
            self.checked = True
            # The model inputs are not needed downstream: only the items, their segments and the maps travel on.
            light = [replace(x, array=np.empty(0, np.float32)) for x in payload]
            out.append(_rows(_EXPLAINED, shard, (light, explained)))
        return _concat(out)


def _concat(rows: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    return {k: np.concatenate([row[k] for row in rows]) for k in ("kind", "shard", "payload")}


def _reduce(batch: Mapping[str, np.ndarray], job: dict[str, Any]) -> dict[str, np.ndarray]:
    """Reduce stage (CPU tasks): a batch and its explanation to table rows."""
    out = []
    for kind, shard, payload in _each(batch):
        if kind != _EXPLAINED:
            out.append(_rows(kind, shard, payload))
            continue
        loaded, explained = payload
        try:
            frames = reduce_rows(loaded, explained, metadata=job["metadata"], class_names=job["names"])
        except _USER_ERRORS as exc:
            out.append(_error_row(shard, exc))
            continue
        out.append(_rows(_ROWS, shard, (len(loaded), frames)))
    return _concat(out)


# --------------------------------------------------------------------------- on the driver


def _absolute_item(item: Item) -> Item:
    return item if item.path is None else replace(item, path=os.path.abspath(item.path))


def _absolute_masks(masks: MaskSource) -> MaskSource:
    """The mask source with an absolute folder/file path, for workers in other folders or on other nodes."""
    if not isinstance(getattr(masks, "path", None), Path):  # a source of the caller's own, not files
        return masks
    moved = copy.copy(masks)
    moved.path = masks.path.resolve()
    return moved


def _connect(address: str | None) -> bool:
    """Connect to Ray (``address``, else ``RAY_ADDRESS``, else a new local instance); whether we started it."""
    ray = require_ray()
    if ray.is_initialized():
        return False
    quiet = {"logging_level": logging.WARNING, "log_to_driver": False}
    with warnings.catch_warnings():
        # Ray starts its processes with fork + exec (subprocess), which JAX's fork warning does not concern.
        warnings.filterwarnings("ignore", message=r"os\.fork\(\) was called", category=RuntimeWarning)
        if address is None and not os.environ.get("RAY_ADDRESS"):
            ray.init(include_dashboard=False, **quiet)
        else:
            ray.init(address=address, **quiet)
    return True


def _explain_pool(ray: Any, device: str | None) -> tuple[int, float]:
    """Actors and GPUs per actor: one actor per GPU, else one per 4 CPUs (XLA uses several threads each)."""
    resources = ray.cluster_resources()
    gpus = int(resources.get("GPU", 0))
    if gpus and not (device or "").startswith("cpu"):
        return gpus, 1.0
    return max(1, int(resources.get("CPU", 1)) // 4), 0.0


def run_on_ray(
    job: RayJob, finished: dict[int, ShardRecord], *, address: str | None, progress: bool
) -> dict[str, float]:
    """Run the shards ``job.todo`` as a Ray Data job, writing each finished shard into ``finished``; timings."""
    ray = require_ray()
    with warnings.catch_warnings():
        # Ray's own deprecated settings warn from inside Ray (its DataContext sets them itself): not the user's.
        warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"ray\.")
        started_here = _connect(address)
        try:
            return _execute(ray, job, finished, progress=progress)
        finally:
            if started_here:
                ray.shutdown()


def _execute(ray: Any, job: RayJob, finished: dict[int, ShardRecord], *, progress: bool) -> dict[str, float]:
    from sat_fast._progress import Progress

    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False  # the run's own bar counts images
    # Ray Data logs its plan and progress at INFO and WARNING; the run reports its own progress and errors.
    logging.getLogger("ray.data").setLevel(logging.ERROR)
    t0 = time.perf_counter()
    size = job.shard_size
    shards = {n: [_absolute_item(i) for i in job.items[n * size : (n + 1) * size]] for n in job.todo}
    if not shards:
        return {"ray": 0.0}
    rows = [_rows("items", n, items) for n, items in shards.items()]
    dataset = ray.data.from_items([{k: v[0] for k, v in row.items()} for row in rows], override_num_blocks=len(rows))
    stage: dict[str, Any] = {
        "masks": _absolute_masks(job.masks),
        "batch_size": job.batch_size,
        "skip_bad": job.skip_bad,
        # A MapShards is opened again in each worker from its absolute path (its file cache is per process); a
        # source of the caller's own travels pickled.
        "maps": os.path.abspath(job.maps.source) if type(job.maps) is MapShards else job.maps,
        "metadata": job.metadata,
        "names": None if job.class_names is None else list(job.class_names),
        "transform": None,
        # A Parquet image dataset travels pickled (absolute file paths, no lock, no cached rows); image files
        # are read by their items' absolute paths.
        "dataset": job.dataset,
    }
    model_ref: tuple[str, Any, Any] | None = None
    if job.bundle is not None:
        if isinstance(job.model, str):
            checkpoint = None if job.checkpoint is None else os.path.abspath(job.checkpoint)
            model_ref = ("spec", _factory_spec(job.model), checkpoint)
            stage["transform"] = _FactoryTransform(model_ref) if job.bundle.transform is not None else None
        else:
            model_ref = ("bundle", job.bundle, None)
            stage["transform"] = job.bundle.transform
    # With a model, loading gets half a CPU: it is mostly waiting on files, and resources other than the actors'
    # keep Ray from fusing it into the actors, so the model's inputs are read while the model runs.
    load_cpus = 0.5 if model_ref is not None else 1.0
    dataset = dataset.map_batches(_load_shard, fn_kwargs={"job": stage}, batch_size=1, num_cpus=load_cpus)
    if model_ref is not None:
        actors, gpus = _explain_pool(ray, job.device)
        dataset = dataset.map_batches(
            _Explain, fn_constructor_args=(model_ref, job.targets, job.options, job.device), batch_size=1,
            compute=ray.data.ActorPoolStrategy(size=actors), num_gpus=gpus,
        )  # fmt: skip
        dataset = dataset.map_batches(_reduce, fn_kwargs={"job": stage}, batch_size=1)

    total = sum(len(items) for items in shards.values())
    bar = Progress(total, "explaining (ray)", unit="img", enabled=progress)
    pending: dict[int, dict[str, Any]] = {n: {"frames": [], "batches": 0, "end": None} for n in shards}
    write_time = 0.0
    try:
        for block in dataset.iter_batches(batch_size=None, batch_format="numpy"):
            for kind, shard, payload in _each(block):
                state = pending[shard]
                if kind == _BAD:
                    raise BadItemError(*payload)
                if kind == _ERROR:
                    raise payload
                if kind == _ROWS:
                    count, frames = payload
                    state["frames"].extend(frames)
                    state["batches"] += 1
                    bar.update(count)
                else:
                    state["end"] = payload
                    bar.update(len(payload[1]))
                if state["end"] is not None and state["batches"] == state["end"][0]:
                    w0 = time.perf_counter()
                    start, stop = shard * size, min(len(job.items), (shard + 1) * size)
                    record = write_shard(
                        job.out, shard, start, stop, finish_shard(state["frames"]),
                        metadata=job.parquet_metadata, skipped=state["end"][1],
                    )  # fmt: skip
                    append_manifest(job.out, record)
                    finished[shard] = record
                    del pending[shard]
                    write_time += time.perf_counter() - w0
    except BaseException:
        if bar.bar is not None:  # the terminal's bar goes; a log gets no final count for a failed run
            bar.bar.close()
        raise
    bar.close()
    if pending:  # every shard ends with its end row: a missing one is a bug, never a silently short table
        raise RuntimeError(f"the Ray job ended without finishing shards {sorted(pending)}")
    return {"ray": time.perf_counter() - t0 - write_time, "write": write_time}
