"""chainrule: forward-, reverse- and mixed-mode differentiation for JAX, and the tools built on it.

The public API is re-exported here explicitly. Submodules: ``chainrule.ad`` (transforms),
``chainrule.fd`` (finite differences), ``chainrule.check`` (gradient checks),
``chainrule.initializers`` (also ``cr.init``), ``chainrule.normalization`` (also ``cr.norm``),
``chainrule.graph``, ``chainrule.diagnostics``, ``chainrule.nets``. Plotting, the experiment
runner and the CLI import their heavy dependencies only when used.
"""

from chainrule import ad as ad
from chainrule import curvature as curvature
from chainrule import diagnostics as diagnostics
from chainrule import fd as fd
from chainrule import graph as graph
from chainrule import initializers as init
from chainrule import initializers as initializers
from chainrule import nets as nets
from chainrule import normalization as norm
from chainrule import normalization as normalization
from chainrule import sharding as sharding
from chainrule._deepnorm import DeepNormConstants as DeepNormConstants
from chainrule._deepnorm import deepnorm_constants as deepnorm_constants
from chainrule._jit import cache_info as cache_info
from chainrule._jit import clear_cache as clear_caches
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
from chainrule.chain import ChainPlan as ChainPlan
from chainrule.chain import chain_jacobian as chain_jacobian
from chainrule.chain import chain_jacobian_plan as chain_jacobian_plan
from chainrule.check import CheckReport as CheckReport
from chainrule.check import check_grads as check_grads
from chainrule.check import check_hvp as check_hvp
from chainrule.check import check_jvp as check_jvp
from chainrule.check import check_vjp as check_vjp
from chainrule.check import taylor_test as taylor_test

__version__ = "0.1.0"

__all__ = [
    "DeepNormConstants",
    "HVP_MODES",
    "JACOBIAN_MODES",
    "LinearFunction",
    "ad",
    "curvature",
    "cache_info",
    "clear_caches",
    "diagnostics",
    "graph",
    "nets",
    "CheckReport",
    "ChainPlan",
    "chain_jacobian",
    "chain_jacobian_plan",
    "check_grads",
    "check_hvp",
    "check_jvp",
    "check_vjp",
    "fd",
    "taylor_test",
    "deepnorm_constants",
    "grad",
    "hessian",
    "hvp",
    "hvp_batched",
    "init",
    "initializers",
    "jacobian",
    "jvp",
    "norm",
    "sharding",
    "normalization",
    "linearize",
    "value_and_grad",
    "vjp",
]
