"""Attribution: gradient-based saliency maps for any JAX image classifier.

The entry point is :func:`saliency`; :func:`quadrature` gives the nodes and
weights of the integrated-gradients rules, :func:`default_memory_budget` the
default working-memory budget. The option values are listed in
:data:`METHODS`, :data:`RULES`, :data:`REDUCTIONS` and :data:`OUTPUTS`
(from the Literal aliases of :mod:`sat_fast._typing`), and the per-method
``reduce="auto"`` choice in :data:`AUTO_REDUCE`.
"""

from sat_fast.attribution._options import AUTO_REDUCE as AUTO_REDUCE
from sat_fast.attribution._options import METHODS as METHODS
from sat_fast.attribution._options import OUTPUTS as OUTPUTS
from sat_fast.attribution._options import REDUCTIONS as REDUCTIONS
from sat_fast.attribution._options import RULES as RULES
from sat_fast.attribution._plan import default_memory_budget as default_memory_budget
from sat_fast.attribution._quadrature import quadrature as quadrature
from sat_fast.attribution.driver import Baseline as Baseline
from sat_fast.attribution.driver import Targets as Targets
from sat_fast.attribution.driver import saliency as saliency

__all__ = [
    "AUTO_REDUCE",
    "METHODS",
    "OUTPUTS",
    "REDUCTIONS",
    "RULES",
    "Baseline",
    "Targets",
    "default_memory_budget",
    "quadrature",
    "saliency",
]
