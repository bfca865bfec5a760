"""SATs inside JAX code: saliency methods, segment statistics and attribution priors as pure JAX functions.

Functions of JAX arrays for one's own jitted evaluation or training steps on
CPU, GPU or TPU: no host synchronisation, no chunking and no state, so they
compose with ``jax.jit``, ``jax.vmap``, ``jax.grad`` and sharding. Importing
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
from sat_fast.functional._saliency import attribute as attribute
from sat_fast.functional._saliency import expected_gradients as expected_gradients
from sat_fast.functional._saliency import gradcam as gradcam
from sat_fast.functional._saliency import gradient as gradient
from sat_fast.functional._saliency import gradient_x_input as gradient_x_input
from sat_fast.functional._saliency import integrated_gradients as integrated_gradients
from sat_fast.functional._saliency import smoothgrad as smoothgrad
from sat_fast.functional._saliency import smoothgrad_squared as smoothgrad_squared
from sat_fast.functional._saliency import vargrad as vargrad
from sat_fast.functional._stats import JaxSegmentStats as JaxSegmentStats
from sat_fast.functional._stats import segment_stats as segment_stats

__all__ = [
    "JaxSegmentStats",
    "attribute",
    "expected_gradients",
    "explain",
    "gradcam",
    "gradient",
    "gradient_x_input",
    "integrated_gradients",
    "segment_share",
    "segment_share_penalty",
    "segment_stats",
    "smoothgrad",
    "smoothgrad_squared",
    "vargrad",
]
