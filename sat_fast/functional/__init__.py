"""SATs inside JAX code: pure functions for ``jax.jit``, ``jax.vmap`` and ``jax.grad``.

Statistics, explanations and the attribution prior as functions of JAX
arrays, with no host synchronisation, no chunking and no state, for use in
one's own jitted evaluation or training steps on CPU, GPU or TPU. Importing
this module imports JAX (``import sat_fast`` does not).

Examples
--------
>>> import jax.numpy as jnp
>>> from sat_fast import functional as F
>>> F.segment_stats(jnp.ones((2, 4, 4)), jnp.zeros((2, 4, 4), jnp.int32), num_segments=1).count.tolist()
[[16], [16]]
"""

from sat_fast.functional._explain import explain as explain
from sat_fast.functional._prior import segment_share as segment_share
from sat_fast.functional._prior import segment_share_penalty as segment_share_penalty
from sat_fast.functional._stats import JaxSegmentStats as JaxSegmentStats
from sat_fast.functional._stats import segment_stats as segment_stats

__all__ = [
    "JaxSegmentStats",
    "explain",
    "segment_share",
    "segment_share_penalty",
    "segment_stats",
]
