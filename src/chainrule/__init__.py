"""chainrule: forward-, reverse- and mixed-mode differentiation for JAX, and the tools built on it.

The public API is re-exported here explicitly. Submodules: ``chainrule.ad`` (transforms),
``chainrule.fd`` (finite differences), ``chainrule.check`` (gradient checks),
``chainrule.initializers`` (also ``cr.init``), ``chainrule.normalization`` (also ``cr.norm``),
``chainrule.graph``, ``chainrule.diagnostics``, ``chainrule.nets``. Plotting, the experiment
runner and the CLI import their heavy dependencies only when used.
"""

from chainrule import ad as ad
from chainrule._deepnorm import DeepNormConstants as DeepNormConstants
from chainrule._deepnorm import deepnorm_constants as deepnorm_constants
from chainrule.ad import HVP_MODES as HVP_MODES
from chainrule.ad import JACOBIAN_MODES as JACOBIAN_MODES
from chainrule.ad import LinearFunction as LinearFunction
from chainrule.ad import grad as grad
from chainrule.ad import hessian as hessian
from chainrule.ad import hvp as hvp
from chainrule.ad import hvp_batched as hvp_batched
from chainrule.ad import jacobian as jacobian
from chainrule.ad import jvp as jvp
from chainrule.ad import linearize as linearize
from chainrule.ad import value_and_grad as value_and_grad
from chainrule.ad import vjp as vjp

# --- fd / check (issue 3) ---
# --- initializers (issue 4) ---
# --- normalization (issue 5) ---
# --- graph / diagnostics / nets (issue 6) ---

__version__ = "0.1.0"

__all__ = [
    "DeepNormConstants",
    "HVP_MODES",
    "JACOBIAN_MODES",
    "LinearFunction",
    "ad",
    "deepnorm_constants",
    "grad",
    "hessian",
    "hvp",
    "hvp_batched",
    "jacobian",
    "jvp",
    "linearize",
    "value_and_grad",
    "vjp",
]
