"""Quadrature rules for integrated gradients: nodes in [0, 1] and weights summing to 1."""

from __future__ import annotations

import numpy as np

from sat_fast._typing import QuadratureRule, check_choice
from sat_fast._validate import positive_int

__all__ = ["quadrature"]


def quadrature(rule: QuadratureRule, steps: int) -> tuple[np.ndarray, np.ndarray]:
    """Nodes and weights of an integrated-gradients quadrature rule on [0, 1], in float64.

    Parameters
    ----------
    rule
        ``"left"``, ``"right"``, ``"midpoint"`` (Riemann sums), ``"trapezoid"``
        (needs ``steps >= 2``) or ``"gauss_legendre"`` (exact for polynomials
        of degree ``2 * steps - 1``).
    steps
        Number of nodes, at least 1.

    Returns
    -------
    tuple of np.ndarray
        ``(alphas, weights)``, both (steps,): the path positions in [0, 1] and
        weights that sum to 1.

    Examples
    --------
    >>> alphas, weights = quadrature("trapezoid", 3)
    >>> alphas.tolist(), weights.tolist()
    ([0.0, 0.5, 1.0], [0.25, 0.5, 0.25])
    """
    check_choice(rule, "rule", QuadratureRule)
    steps = positive_int(steps, "steps")
    k = np.arange(steps, dtype=np.float64)
    if rule == "left":
        return k / steps, np.full(steps, 1.0 / steps)
    if rule == "right":
        return (k + 1) / steps, np.full(steps, 1.0 / steps)
    if rule == "midpoint":
        return (k + 0.5) / steps, np.full(steps, 1.0 / steps)
    if rule == "trapezoid":
        if steps < 2:
            raise ValueError(f"rule='trapezoid' needs steps >= 2, got {steps}")
        w = np.full(steps, 1.0 / (steps - 1))
        w[[0, -1]] /= 2
        return k / (steps - 1), w
    nodes, weights = np.polynomial.legendre.leggauss(steps)
    return (nodes + 1) / 2, weights / 2
