"""Curvature of losses over pytrees: Hessian, Gauss-Newton and Fisher operators and their spectra.

**Operators** (:class:`CurvatureOperator`: ``matvec`` / ``matmat`` on pytrees, a pure flat
``apply_flat(state, x)`` for the algorithms):

* :func:`hessian` -- ``loss(params, batch)``, any HVP mode of the rule table
  ``chainrule._rules`` (the same programs as ``cr.hvp``);
* :func:`ggn` -- ``J^T H_loss J`` through ``jax.linearize`` / ``jax.linear_transpose`` with the
  output Hessians of :data:`LOSSES` in closed form (MSE, softmax and binary cross-entropy);
* :func:`empirical_fisher`, :func:`mc_fisher` (targets sampled from the model; equal to the GGN
  in expectation).

Each takes ``wrt=`` (a path prefix, a list of them, or ``filter(path, leaf)``) to restrict it to
a sub-tree (a layer, a block), and ``batches=`` (a list of batches: the matvec is the mean of
the per-batch products, summed in batch order by one ``lax.scan`` -- the same data gives the same
answer, the body compiles once whatever the number of batches -- optionally in a wider dtype,
``accumulate="float64"``). One matvec is one pass over the data.

**Algorithms** (each reports ``matvecs`` and ``data_passes``):

* :func:`eigsh` -- k largest / smallest / largest-magnitude eigenpairs by thick-restart Lanczos
  with full reorthogonalization, stopped on the residual ``||A y - theta y||``;
  :func:`power_iteration` (with deflation) as the baseline;
* :func:`trace` -- Hutchinson, Hutch++ or XTrace, with a standard error (the choice is
  explained in its docstring); :func:`diagonal` with per-entry standard errors;
* :func:`spectral_density` (stochastic Lanczos quadrature on a grid) and :func:`trace_function`
  (``tr f(A)``).

Every loop is a ``lax.fori_loop`` / ``while_loop`` / ``scan`` inside a ``jax.jit``, so compile
time does not grow with the number of steps; the operator's arrays (parameters, data) enter the
compiled programs as arguments. The compiled programs live on the operator (no module-level
cache): ``op.with_params(new_params)`` shares them, so an analysis repeated along a training run
compiles once -- like reusing one ``jax.jit(f)``; a new operator traces its function afresh.

**Where matfree (0.6.3) is used and where it falls short.** matfree provides the Rademacher /
Gaussian samplers, the trace-and-diagonal integrand, XTrace with its leave-one-out error
(``stochtrace.leave_one_out_xtrace``) and the Lanczos tridiagonalization with full
reorthogonalization behind SLQ (``decomp.tridiag_sym``); we use those. For eigenpairs it falls
short: ``tridiag_sym`` runs a fixed number of steps and allocates all of them (no restart, so
memory grows with the steps), stops on no residual, and reports no Ritz residuals; ``eig`` /
``eigh_partial`` are fixed-depth too. :func:`eigsh` is therefore our own thick-restart Lanczos
with residual-based stopping and breakdown handling. matfree has no Hutch++ (only XTrace /
XNysTrace), its Monte-Carlo estimators vmap every probe at once (we chunk them with
``probe_batch``), and it has no spectral-density grid or curvature operators.
"""

from chainrule.curvature._eigen import Eigenpairs as Eigenpairs
from chainrule.curvature._eigen import eigsh as eigsh
from chainrule.curvature._eigen import power_iteration as power_iteration
from chainrule.curvature._operators import LOSSES as LOSSES
from chainrule.curvature._operators import CurvatureOperator as CurvatureOperator
from chainrule.curvature._operators import empirical_fisher as empirical_fisher
from chainrule.curvature._operators import ggn as ggn
from chainrule.curvature._operators import hessian as hessian
from chainrule.curvature._operators import loss_value as loss_value
from chainrule.curvature._operators import mc_fisher as mc_fisher
from chainrule.curvature._stochastic import TRACE_METHODS as TRACE_METHODS
from chainrule.curvature._stochastic import Estimate as Estimate
from chainrule.curvature._stochastic import SpectralDensity as SpectralDensity
from chainrule.curvature._stochastic import diagonal as diagonal
from chainrule.curvature._stochastic import spectral_density as spectral_density
from chainrule.curvature._stochastic import trace as trace
from chainrule.curvature._stochastic import trace_function as trace_function

__all__ = [
    "LOSSES",
    "TRACE_METHODS",
    "CurvatureOperator",
    "Eigenpairs",
    "Estimate",
    "SpectralDensity",
    "diagonal",
    "eigsh",
    "empirical_fisher",
    "ggn",
    "hessian",
    "loss_value",
    "mc_fisher",
    "power_iteration",
    "spectral_density",
    "trace",
    "trace_function",
]
