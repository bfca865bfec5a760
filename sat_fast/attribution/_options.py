"""The option values of :func:`sat_fast.attribution.saliency`, each written once (in :mod:`sat_fast._typing`)."""

from __future__ import annotations

from typing import Final, get_args

from sat_fast._typing import Method, Output, QuadratureRule, Reduction

__all__ = [
    "AUTO_REDUCE",
    "METHODS",
    "NOISE_METHODS",
    "OUTPUTS",
    "PATH_METHODS",
    "REDUCTIONS",
    "RULES",
    "SQUARE_METHODS",
]

#: Saliency methods, in the order of :data:`sat_fast._typing.Method`.
METHODS: Final[tuple[Method, ...]] = get_args(Method)
#: Quadrature rules of integrated gradients.
RULES: Final[tuple[QuadratureRule, ...]] = get_args(QuadratureRule)
#: Channel reductions (``reduce=``), besides ``"auto"`` and None.
REDUCTIONS: Final[tuple[Reduction, ...]] = get_args(Reduction)
#: Explained outputs.
OUTPUTS: Final[tuple[Output, ...]] = get_args(Output)

#: ``reduce="auto"`` per method. Sum keeps the completeness of path methods and
#: the sign of input-times-gradient; max-abs is the classic vanilla-gradient map
#: (Simonyan et al. 2013); SmoothGrad is shown as |gradient| summed over channels
#: (as in the SmoothGrad paper); the squared and variance maps are already >= 0;
#: Grad-CAM maps have no channel axis.
AUTO_REDUCE: Final[dict[Method, Reduction | None]] = {
    "gradient": "max_abs",
    "gradient_x_input": "sum",
    "integrated_gradients": "sum",
    "expected_gradients": "sum",
    "smoothgrad": "abs_sum",
    "smoothgrad_squared": "sum",
    "vargrad": "sum",
    "gradcam": None,
}

#: Methods that integrate gradients along paths from a baseline.
PATH_METHODS: Final[tuple[Method, ...]] = ("integrated_gradients", "expected_gradients")
#: Methods that average gradients at noisy copies of the image.
NOISE_METHODS: Final[tuple[Method, ...]] = ("smoothgrad", "smoothgrad_squared", "vargrad")
#: Methods that also accumulate squared gradients.
SQUARE_METHODS: Final[tuple[Method, ...]] = ("smoothgrad_squared", "vargrad")
