"""Gradient checks: automatic derivatives against finite differences, with an error model.

A check compares what AD computes (JAX's transforms, including any ``jax.custom_jvp`` /
``jax.custom_vjp`` rule on the way) with a finite-difference estimate along random directions,
and accepts the difference only if it is within a tolerance *derived* from the two sides'
errors rather than a fixed ``atol``/``rtol``:

``tolerance = safety * |FD error estimate| + C_AD * eps * sqrt(W) * |AD| * (1 + 1/h_rel)``

* The FD error estimate comes from the Richardson ladder shared with :mod:`chainrule.fd`
  (:mod:`chainrule._richardson`): central differences at ``levels`` halving steps, extrapolated
  to orders 4 and 6, the best entry picked per output leaf with its error taken as the largest
  difference to its neighbours in step size, floored by the round-off model and by the noise
  the ladder's even part shows. ``safety`` (default 10) covers the chance that the measured
  difference underestimates the error.
* The AD side rounds too: about ``sqrt(W) * eps * |result|`` for W inputs (``C_AD = 4``); for
  the dot-product test ``8 * eps * sum |terms|``.
* Norms are taken per output leaf and per direction (Gaussian directions, scaled to each input
  leaf's magnitude: a bug confined to a few elements cannot cancel exactly, as it can with
  random signs).

Every result states its **detection floor**: the smallest relative error of the checked
quantity it could have caught (its tolerance over the size of what it compared), and
``summary()`` says "this check would catch errors above X%", flagging as WEAK any check whose
floor is above :data:`~chainrule.check.results.WEAK_FLOOR` (3%), whatever its verdict.

**Kinked functions.** Across a relu/abs/max kink (or a high frequency) within the ladder's steps
FD's error is far above rounding. A check that fails there, or that *passes loosely* (floor above
``eps^0.4``: 1.7e-3 in float32), is re-run with the ladder 64x, 4096x and 2^18x lower (the same
compiled program) with tolerances no looser than the first run's: a failure undone at smaller
steps was FD's, a loose pass that a tighter re-check fails was hiding a bug, and a check that
stays loose at every step says so in its note.

Checks (each along ``num_directions`` random directions drawn from ``seed``/``key``):

* ``jvp``: forward mode ``J v`` against FD ``J v``; and its primal output against ``f(x)``.
* ``vjp``: the dot-product test ``<u, J v> = <J^T u, v>``; and the VJP's primal output.
* ``hvp[mode]``: FD of the AD gradient along ``v`` against the AD HVP, with the rules of
  :mod:`chainrule._rules` (``fwd-over-rev`` for ``"fwd"``, ``rev-over-rev`` for ``"rev"``). A
  non-scalar ``f`` is reduced to ``<u0, f(x)>`` with a random ``u0``.
* ``taylor``: the Taylor remainder must shrink as O(h^2) (see :func:`taylor_test`).
* ``determinism`` (only when it fails): two evaluations of ``f`` at ``args`` differ.

The checks run at ``args``: an error confined to a region of the input space is caught when
``args`` visits that region; nothing invents other points.

**Semantics.** A check checks ``f`` as it is at the call: ``f`` is traced at every check (a
global changed, a custom rule redefined, a NumPy array mutated in place are seen). A function
without custom rules or callbacks is traced alone and its check program compiled from that
jaxpr (JAX's own derivative rules make the program a function of the jaxpr); otherwise the whole
program is traced. Either way compiled programs live in the AD core's bounded cache
(:mod:`chainrule._jit`), keyed on the traced program with closed-over arrays as arguments: a
second check of the same program at the same shapes does not compile again, and nothing holds
``f``.

Layering (each module imports only the ones above it):

1. :mod:`~chainrule.check.results`: ``CheckResult``, ``CheckReport``, ``GradientCheckError``.
2. :mod:`~chainrule.check.tolerance`: the error model's constants, options, directions, steps,
   detection floors (NumPy).
3. :mod:`~chainrule.check.compare`: host-side comparisons (NumPy; statistics generic in ``xp``).
4. :mod:`~chainrule.check.program`: the compiled check program and the array-only device
   kernels (Richardson tables and statistics of large leaves), compile options.
5. :mod:`~chainrule.check.driver`: a check as steps: options, plan, first run, judge, re-check,
   diagnose, Taylor, localise, report.
6. :mod:`~chainrule.check.api`: the public functions.

Costs, in evaluations of ``f`` per direction: FD ``2 * levels + 1`` (13 by default); a JVP ~2-3;
a VJP ~3; an HVP check ``2 * levels + 1`` gradient evaluations (~3 each) plus one HVP (~4-5).
A failed or loose check runs the program again, at most three more times; a localisation pass
repeats the first-order FD once per input leaf.
"""

from chainrule._richardson import DEFAULT_LEVELS as DEFAULT_LEVELS
from chainrule.check.api import HVP_CHECK_MODES as HVP_CHECK_MODES
from chainrule.check.api import check_grads as check_grads
from chainrule.check.api import check_hvp as check_hvp
from chainrule.check.api import check_jvp as check_jvp
from chainrule.check.api import check_vjp as check_vjp
from chainrule.check.api import taylor_test as taylor_test
from chainrule.check.results import WEAK_FLOOR as WEAK_FLOOR
from chainrule.check.results import CheckReport as CheckReport
from chainrule.check.results import CheckResult as CheckResult
from chainrule.check.results import GradientCheckError as GradientCheckError
from chainrule.check.tolerance import MODES as MODES

__all__ = [
    "CheckResult",
    "CheckReport",
    "GradientCheckError",
    "check_grads",
    "check_jvp",
    "check_vjp",
    "check_hvp",
    "taylor_test",
]
