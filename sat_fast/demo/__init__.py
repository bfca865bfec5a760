"""The ``sat-fast demo``: a synthetic dataset with injected shortcuts, and models that use them.

- :mod:`sat_fast.demo.data`: the procedural dataset (drawn animals made of
  named parts, textured backgrounds, a text watermark), pixel-exact label maps.
- :mod:`sat_fast.demo.model`: the small Flax CNN.
- :mod:`sat_fast.demo.train`: cached optax training on CPU.
- :mod:`sat_fast.demo.experiment`: the shortcut model versus the control model.
"""

from sat_fast.demo.data import (
    BACKGROUND_KINDS,
    CLASS_NAMES,
    SEGMENT_NAMES,
    DataConfig,
    SyntheticImages,
    make_split,
    make_splits,
)
from sat_fast.demo.experiment import DemoConfig, DemoResult, run_demo
from sat_fast.demo.model import SmallCNN
from sat_fast.demo.train import TrainConfig

__all__ = [
    "BACKGROUND_KINDS",
    "CLASS_NAMES",
    "SEGMENT_NAMES",
    "DataConfig",
    "DemoConfig",
    "DemoResult",
    "SmallCNN",
    "SyntheticImages",
    "TrainConfig",
    "make_split",
    "make_splits",
    "run_demo",
]
