"""Literal aliases for every option value of the public API.

Each alias serves both the annotation and the run-time check
(:func:`check_choice`), so the accepted values are written once.
"""

from __future__ import annotations

from typing import Any, Literal, TypeAlias, get_args

__all__ = [
    "AggregateEngine",
    "Backend",
    "Correction",
    "DeletionFill",
    "Interpolation",
    "IntervalKind",
    "Method",
    "Nonfinite",
    "Output",
    "QuadratureRule",
    "Reduction",
    "RunTargets",
    "SegmentsKind",
    "SortKey",
    "SummaryFormat",
    "TestKind",
    "check_choice",
]

#: What happens to NaN or infinite saliency: raise naming the pixel, or leave it out.
Nonfinite: TypeAlias = Literal["raise", "skip"]
#: How a segment is stored: dense label map, packed overlapping masks, COCO run lengths.
SegmentsKind: TypeAlias = Literal["labels", "masks", "rle"]
#: Resampling of images (saliency maps and masks have their own fixed rules).
Interpolation: TypeAlias = Literal["bilinear", "nearest"]
#: Saliency methods.
Method: TypeAlias = Literal[
    "integrated_gradients",
    "gradient",
    "gradient_x_input",
    "expected_gradients",
    "smoothgrad",
    "smoothgrad_squared",
    "vargrad",
    "gradcam",
]
#: Quadrature rules for integrated gradients.
QuadratureRule: TypeAlias = Literal["left", "right", "midpoint", "trapezoid", "gauss_legendre"]
#: How a per-channel map is reduced to one value per pixel.
Reduction: TypeAlias = Literal["sum", "abs_sum", "max_abs", "l2"]
#: Which model output is explained.
Output: TypeAlias = Literal["logit", "probability", "log_probability"]
#: What replaces a deleted segment.
DeletionFill: TypeAlias = Literal["blur", "mean", "zeros"]
#: Confidence intervals of :func:`sat_fast.aggregate`.
IntervalKind: TypeAlias = Literal["t", "bootstrap"]
#: Polars engine of :func:`sat_fast.aggregate`.
AggregateEngine: TypeAlias = Literal["streaming", "in-memory"]
#: Significance test of :func:`sat_fast.compare`.
TestKind: TypeAlias = Literal["welch", "permutation"]
#: Multiple-testing correction of :func:`sat_fast.compare` (or None).
Correction: TypeAlias = Literal["bh", "bonferroni"]
#: Row order of :func:`sat_fast.compare`.
SortKey: TypeAlias = Literal["effect", "diff", "p"]
#: Where :func:`sat_fast.run` runs its stages (``"stream"``: threads and one device on this machine; ``"ray"``: a
#: Ray Data job).
Backend: TypeAlias = Literal["stream", "ray"]
#: The class :func:`sat_fast.run` explains per image: its label, the model's prediction, or every class.
RunTargets: TypeAlias = Literal["label", "predicted", "all"]
#: Text format of :func:`sat_fast.summary`.
SummaryFormat: TypeAlias = Literal["markdown", "text"]


def check_choice(value: Any, name: str, alias: Any, *, allow_none: bool = False) -> Any:
    """Return ``value`` if it is one of ``alias``'s literals, else raise ``ValueError``.

    Examples
    --------
    >>> check_choice("skip", "nonfinite", Nonfinite)
    'skip'
    >>> check_choice("drop", "nonfinite", Nonfinite)
    Traceback (most recent call last):
    ...
    ValueError: nonfinite must be one of 'raise', 'skip'; got 'drop'
    """
    if value is None and allow_none:
        return None
    choices = get_args(alias)
    if not isinstance(value, str) or value not in choices:
        listed = ", ".join(repr(c) for c in choices) + (", None" if allow_none else "")
        raise ValueError(f"{name} must be one of {listed}; got {value!r}")
    return value
