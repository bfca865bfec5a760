"""The streaming pipeline behind ``sat-fast run`` and :func:`sat_fast.run`.

A run goes from a *source* of items (an image folder with class labels, or
precomputed saliency maps) and a *mask source* to SAT shards on disk, then to
the aggregate, flags and report, computed by streaming over the shards.

Stages
------
Each stage is a plain function of one unit of work, with no state between
calls, so that another executor (a Ray Data job, say) can run the same
stages and write the same output:

1. **list** (once): ``image_folder_items(root, labels_csv, class_names)``,
   ``ParquetImages(path, class_names).items()`` or ``MapShards(path).items()``
   give the :class:`Item` s in canonical order;
   shard ``n`` covers the items ``[n * shard_size, (n + 1) * shard_size)``.
2. **load** (per item, on a thread pool): ``load_image_item(item, masks,
   transform)`` reads and decodes the image, loads its mask
   (:class:`MaskSource`), checks their sizes agree before any transform, and
   transforms both; ``load_map_item(item, maps, masks)`` for precomputed maps.
   A bad item raises :class:`BadItemError` (skipped with ``skip_bad``).
3. **batch** (per shard): ``ShapeBatcher(batch_size)`` groups loaded items
   into batches of one shape.
4. **explain** (per batch, on the device): ``explain_batch(bundle, inputs,
   labels, targets=..., options=...)`` runs :func:`sat_fast.saliency` once and
   takes the predictions from the same forward pass; ``maps_of(batch)`` for
   precomputed maps.
5. **reduce** (per batch, C++ kernels): ``reduce_batch(batch, explained,
   metadata=..., class_names=...)`` gives the rows, with each row's source
   position.
6. **write** (per shard): ``finish_shard(frames)`` puts the rows in canonical
   order (source position, explained class, segment); ``write_shard(out, n,
   start, stop, frame, ...)`` writes ``sat/part-NNNNNN.parquet`` atomically
   and returns a :class:`ShardRecord` that ``append_manifest`` records.
   ``finished_shards(out)`` lists the intact shards on resume.

Output folder
-------------
``run.json`` (provenance: model and checkpoint hash, method and parameters,
seed, segment source, versions, device, table schema version, skipped items),
``manifest.jsonl`` (finished shards: input range, rows, bytes, SHA-256),
``sat/part-*.parquet`` (the per-image SAT: ``pl.scan_parquet("out/sat/*.parquet")``;
each file carries the provenance as Parquet key-value metadata under
``sat_fast.run``, each row the short ``run`` id), ``aggregate.parquet``,
``flags.parquet`` and ``report.html``.
"""

from sat_fast.pipeline._model import Explained as Explained
from sat_fast.pipeline._model import ModelBundle as ModelBundle
from sat_fast.pipeline._model import explain_batch as explain_batch
from sat_fast.pipeline._model import load_factory as load_factory
from sat_fast.pipeline._parquet_source import ParquetImages as ParquetImages
from sat_fast.pipeline._parquet_source import ParquetMasks as ParquetMasks
from sat_fast.pipeline._provenance import PROVENANCE_KEY as PROVENANCE_KEY
from sat_fast.pipeline._provenance import SCHEMA_VERSION as SCHEMA_VERSION
from sat_fast.pipeline._runner import RunSummary as RunSummary
from sat_fast.pipeline._runner import run as run
from sat_fast.pipeline._shards import ShardRecord as ShardRecord
from sat_fast.pipeline._shards import append_manifest as append_manifest
from sat_fast.pipeline._shards import finished_shards as finished_shards
from sat_fast.pipeline._shards import write_shard as write_shard
from sat_fast.pipeline._sources import IMAGE_SUFFIXES as IMAGE_SUFFIXES
from sat_fast.pipeline._sources import BadItemError as BadItemError
from sat_fast.pipeline._sources import Item as Item
from sat_fast.pipeline._sources import MapShards as MapShards
from sat_fast.pipeline._sources import MaskSource as MaskSource
from sat_fast.pipeline._sources import image_folder_items as image_folder_items
from sat_fast.pipeline._stages import Loaded as Loaded
from sat_fast.pipeline._stages import ShapeBatcher as ShapeBatcher
from sat_fast.pipeline._stages import Skipped as Skipped
from sat_fast.pipeline._stages import finish_shard as finish_shard
from sat_fast.pipeline._stages import load_image_item as load_image_item
from sat_fast.pipeline._stages import load_map_item as load_map_item
from sat_fast.pipeline._stages import maps_of as maps_of
from sat_fast.pipeline._stages import reduce_batch as reduce_batch
from sat_fast.pipeline._stages import stack_rows as stack_rows

__all__ = [
    "IMAGE_SUFFIXES",
    "PROVENANCE_KEY",
    "SCHEMA_VERSION",
    "BadItemError",
    "Explained",
    "Item",
    "Loaded",
    "MapShards",
    "MaskSource",
    "ModelBundle",
    "ParquetImages",
    "ParquetMasks",
    "RunSummary",
    "ShapeBatcher",
    "ShardRecord",
    "Skipped",
    "append_manifest",
    "explain_batch",
    "finish_shard",
    "finished_shards",
    "image_folder_items",
    "load_factory",
    "load_image_item",
    "load_map_item",
    "maps_of",
    "reduce_batch",
    "run",
    "stack_rows",
    "write_shard",
]
