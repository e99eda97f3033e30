"""The public entry points: ``check_grads``, ``check_jvp``, ``check_vjp``, ``check_hvp``,
``taylor_test``. Each validates its own options, prepares ``args`` and hands a tuple of check
names to :func:`chainrule.check.driver.run_checks`."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp

from chainrule._richardson import DEFAULT_LEVELS
from chainrule._rules import HVP_MODES, hvp_rule
from chainrule._tree import check_choice, check_differentiable, leaf_paths
from chainrule._validate import check_has_aux, check_levels, check_order
from chainrule.check.driver import run_checks
from chainrule.check.results import CheckReport
from chainrule.check.tolerance import MODES

__all__ = ["check_grads", "check_jvp", "check_vjp", "check_hvp", "taylor_test"]

HVP_CHECK_MODES = HVP_MODES


def _without_aux(f: Callable, has_aux: Any, what: str) -> Callable:
    """``f`` itself, or for ``has_aux=True`` its first output (the auxiliary data unchecked)."""
    if not callable(f):
        raise TypeError(f"{what}: f must be callable, found {type(f).__name__}.")
    if not check_has_aux(has_aux, what):
        return f

    def main(*a):
        out = f(*a)
        if not (isinstance(out, (tuple, list)) and len(out) == 2):
            raise TypeError(
                f"{what}: has_aux=True needs f to return a pair (output, aux), found "
                f"{type(out).__name__}"
                + (f" of length {len(out)}" if isinstance(out, (tuple, list)) else "")
                + "."
            )
        return out[0]

    main.__name__ = getattr(f, "__name__", type(f).__name__)
    return main


def _prepare(args: Any, what: str) -> tuple:
    if not isinstance(args, (tuple, list)):
        raise TypeError(
            f"{what}: args must be a tuple or list of f's positional arguments, found "
            f"{type(args).__name__}. Wrap a single argument as (x,)."
        )
    args = tuple(jax.tree.map(jnp.asarray, tuple(args)))
    for path, leaf in leaf_paths(args, "args"):
        dt = jnp.result_type(leaf)
        if not jnp.issubdtype(dt, jnp.inexact):
            # as in jax.test_util.check_grads, every leaf of args is perturbed: an integer or
            # boolean one (indices, masks) has no derivative to check
            raise TypeError(
                f"{what}: Cannot differentiate with respect to {path}: its dtype is {dt}, "
                f"expected a floating dtype. {what} perturbs every leaf of args; hold this one "
                f"fixed by closing over it, e.g. {what}(lambda x: f(x, n), (x,))."
            )
    for i, a in enumerate(args):
        check_differentiable(
            a,
            f"args[{i}]",
            allow_complex=False,
            complex_fix=f"Pass its real and imaginary parts as two real arguments and rebuild "
            f"it inside f, e.g. {what}(lambda re, im: f(re + 1j * im), (x.real, x.imag)).",
        )
    if not jax.tree_util.tree_leaves(args):
        raise ValueError(
            f"{what}: args has no array leaves, so there is nothing to differentiate; pass "
            f"f's arguments as a tuple, e.g. {what}(f, (x,))."
        )
    return args


def check_grads(
    f: Callable,
    args: Sequence[Any],
    order: int = 1,
    modes: Sequence[str] = ("fwd", "rev"),
    *,
    num_directions: int = 2,
    seed: int = 0,
    key: jax.Array | None = None,
    safety: float = 10.0,
    levels: int = DEFAULT_LEVELS,
    step: float | None = None,
    taylor: bool = False,
    localize: bool = True,
    has_aux: bool = False,
) -> CheckReport:
    """Check ``f``'s derivatives (and custom rules' primal outputs) at ``args``.

    Runs :func:`check_jvp` (``"fwd"`` in modes) and :func:`check_vjp` (``"rev"``); with
    ``order=2`` also :func:`check_hvp` in ``fwd-over-rev`` (``"fwd"``) and ``rev-over-rev``
    (``"rev"``) modes, and :func:`taylor_test` if ``taylor``. Everything runs as one
    jit-compiled program per (f, shapes, options): repeated checks do not re-trace. A mode that
    does not exist for ``f`` (forward mode of a custom_vjp function) is reported as skipped.

    Cost per direction: 13 evaluations of ``f`` for the FD side (levels=6), a JVP and/or a VJP;
    with order 2, 13 gradient evaluations and one HVP per mode. Independent of the number of
    parameters W (beyond the cost of f itself). A failed check is re-run at 64x and 4096x
    smaller steps (at most two more runs of the same program) and passes if a re-run passes
    within the first run's tolerances: the FD of a relu network across its kinks, or a step that
    overflows, is wrong at large steps only.

    Args:
      f: function of ``len(args)`` positional pytree arguments, returning any pytree of
        floating arrays.
      args: tuple or list of the arguments (floating leaves only).
      order: 1 or 2.
      modes: a subset of ``("fwd", "rev")``.
      num_directions: random directions per check (seeded; default 2).
      seed: seed for the directions (ignored if ``key`` is given).
      key: a ``jax.random`` key for the directions.
      safety: multiple of the FD error estimate allowed (default 10).
      levels: steps in the Richardson ladder (default 6; >= 3).
      step: largest step of the ladder (default from dtype and scale, see ``chainrule.fd``).
      localize: on a first-order failure, re-check one input leaf at a time to name the
        worst leaf (O(#leaves) more runs of the compiled check, only when failed).
      taylor: also run the step-size-free :func:`taylor_test`.

      has_aux: ``f`` returns ``(output, aux)``; only ``output`` is checked.

    Returns:
      A :class:`CheckReport`: ``.passed``, ``.results``, ``.summary()``, ``.raise_if_failed()``.

    Raises:
      TypeError: ``args`` not a tuple/list, integer/complex leaves, ``f`` not callable.
      ValueError: bad ``order``, ``modes``, ``num_directions``, ``levels`` or ``safety``.

    Example:
      >>> import chainrule as cr, jax.numpy as jnp
      >>> report = cr.check_grads(jnp.sin, (jnp.linspace(0.0, 1.0, 5),), order=2)
      >>> report.passed
      True
    """
    order = check_order(order, "check_grads")
    if isinstance(modes, str):
        modes = (modes,)
    if not modes:
        raise ValueError('check_grads: modes is empty; give ("fwd",), ("rev",) or both.')
    for m in modes:
        check_choice(m, MODES, "check_grads mode")
    checks: list[str] = []
    if "fwd" in modes:
        checks.append("jvp")
    if "rev" in modes:
        checks.append("vjp")
    if order == 2:
        if "fwd" in modes:
            checks.append("hvp[fwd-over-rev]")
        if "rev" in modes:
            checks.append("hvp[rev-over-rev]")
    if taylor:
        checks.append("taylor")
    return run_checks(
        _without_aux(f, has_aux, "check_grads"),
        _prepare(args, "check_grads"),
        tuple(checks),
        num_directions=num_directions,
        seed=seed,
        key=key,
        safety=safety,
        levels=levels,
        step=step,
        localize=localize,
        what="check_grads",
    )


def check_jvp(
    f: Callable,
    args: Sequence[Any],
    *,
    num_directions: int = 2,
    seed: int = 0,
    key: jax.Array | None = None,
    safety: float = 10.0,
    levels: int = DEFAULT_LEVELS,
    step: float | None = None,
    localize: bool = True,
    has_aux: bool = False,
) -> CheckReport:
    """Forward mode: ``jax.jvp(f)`` against a finite-difference ``J v``, plus its primal output.

    Cost per direction: one JVP (~2-3 evaluations of ``f``) and 13 evaluations for the FD side.

    Args:
      f: function of ``len(args)`` positional arguments.
      args: tuple or list of the arguments.
      num_directions: random directions per check (seeded; default 2).
      seed: seed for the directions (ignored if ``key`` is given).
      key: a ``jax.random`` key for the directions.
      safety: multiple of the FD error estimate allowed (default 10).
      levels: steps in the Richardson ladder (default 6; >= 3).
      step: largest step of the ladder (default from dtype and scale, see ``chainrule.fd``).
      localize: on a first-order failure, re-check one input leaf at a time to name the
        worst leaf (O(#leaves) more runs of the compiled check, only when failed).

      has_aux: ``f`` returns ``(output, aux)``; only ``output`` is checked.

    Returns:
      A :class:`CheckReport` with checks ``jvp`` and ``jvp primal`` (skipped if forward mode
      does not exist for ``f``).

    Raises:
      TypeError, ValueError: as for :func:`check_grads`.

    Example:
      >>> import chainrule as cr, jax.numpy as jnp
      >>> cr.check_jvp(jnp.tanh, (jnp.ones(3),)).passed
      True
    """
    return run_checks(
        _without_aux(f, has_aux, "check_jvp"),
        _prepare(args, "check_jvp"),
        ("jvp",),
        num_directions=num_directions,
        seed=seed,
        key=key,
        safety=safety,
        levels=levels,
        step=step,
        localize=localize,
        what="check_jvp",
    )


def check_vjp(
    f: Callable,
    args: Sequence[Any],
    *,
    num_directions: int = 2,
    seed: int = 0,
    key: jax.Array | None = None,
    safety: float = 10.0,
    levels: int = DEFAULT_LEVELS,
    step: float | None = None,
    localize: bool = True,
    has_aux: bool = False,
) -> CheckReport:
    """Reverse mode by the dot-product test ``<u, J v> = <J^T u, v>``, plus its primal output.

    ``J v`` comes from finite differences, ``J^T u`` from ``jax.vjp``; ``u`` and ``v`` random.

    Cost per direction: one VJP pass (~3 evaluations of ``f``, the forward shared) and 17
    evaluations for the FD side.

    Args:
      f: function of ``len(args)`` positional arguments.
      args: tuple or list of the arguments.
      num_directions: random directions per check (seeded; default 2).
      seed: seed for the directions (ignored if ``key`` is given).
      key: a ``jax.random`` key for the directions.
      safety: multiple of the FD error estimate allowed (default 10).
      levels: steps in the Richardson ladder (default 6; >= 3).
      step: largest step of the ladder (default from dtype and scale, see ``chainrule.fd``).
      localize: on a first-order failure, re-check one input leaf at a time to name the
        worst leaf (O(#leaves) more runs of the compiled check, only when failed).

      has_aux: ``f`` returns ``(output, aux)``; only ``output`` is checked.

    Returns:
      A :class:`CheckReport` with checks ``vjp`` and ``vjp primal``.

    Raises:
      TypeError, ValueError: as for :func:`check_grads`.

    Example:
      >>> import chainrule as cr, jax.numpy as jnp
      >>> cr.check_vjp(lambda x: jnp.sum(x ** 2), (jnp.ones(3),)).passed
      True
    """
    return run_checks(
        _without_aux(f, has_aux, "check_vjp"),
        _prepare(args, "check_vjp"),
        ("vjp",),
        num_directions=num_directions,
        seed=seed,
        key=key,
        safety=safety,
        levels=levels,
        step=step,
        localize=localize,
        what="check_vjp",
    )


def check_hvp(
    f: Callable,
    args: Sequence[Any],
    mode: str = "fwd-over-rev",
    *,
    num_directions: int = 2,
    seed: int = 0,
    key: jax.Array | None = None,
    safety: float = 10.0,
    levels: int = DEFAULT_LEVELS,
    step: float | None = None,
    has_aux: bool = False,
) -> CheckReport:
    """Second order: finite differences of the AD gradient along ``v`` against the AD HVP.

    A non-scalar ``f`` is reduced to ``<u0, f(x)>`` for a fixed random ``u0``. The reference
    is FD of ``jax.grad`` (reverse mode), so check first order first.

    Cost per direction: 13 gradient evaluations (~3 evaluations of ``f`` each) and one HVP
    (~4-5 evaluations of ``f``).

    Args:
      f: function of ``len(args)`` positional arguments.
      args: tuple or list of the arguments.
      mode: ``"fwd-over-rev"``, ``"rev-over-rev"`` or ``"rev-over-fwd"`` (the composition
        whose second-order rules are exercised; rev-over-fwd needs forward mode of ``f``
        and is reported as skipped for a ``custom_vjp`` function).
      num_directions: random directions per check (seeded; default 2).
      seed: seed for the directions (ignored if ``key`` is given).
      key: a ``jax.random`` key for the directions.
      safety: multiple of the FD error estimate allowed (default 10).
      levels: steps in the Richardson ladder (default 6; >= 3).
      step: largest step of the ladder (default from dtype and scale, see ``chainrule.fd``).

      has_aux: ``f`` returns ``(output, aux)``; only ``output`` is checked.

    Returns:
      A :class:`CheckReport` with the check ``hvp[mode]``.

    Raises:
      ValueError: an unknown mode; otherwise as for :func:`check_grads`.

    Example:
      >>> import chainrule as cr, jax.numpy as jnp
      >>> cr.check_hvp(lambda x: jnp.sum(jnp.sin(x) ** 2), (jnp.ones(3),)).passed
      True
    """
    try:
        hvp_rule(mode)  # the one rule table: an unknown mode raises, naming the modes there are
    except ValueError as e:
        raise ValueError(f"check_hvp: {e}") from None
    return run_checks(
        _without_aux(f, has_aux, "check_hvp"),
        _prepare(args, "check_hvp"),
        (f"hvp[{mode}]",),
        num_directions=num_directions,
        seed=seed,
        key=key,
        safety=safety,
        levels=levels,
        step=step,
        localize=False,
        what="check_hvp",
    )


def taylor_test(
    f: Callable,
    args: Sequence[Any],
    *,
    num_directions: int = 2,
    seed: int = 0,
    key: jax.Array | None = None,
    levels: int = 14,
    has_aux: bool = False,
) -> CheckReport:
    """Step-size-free first-order check: the Taylor remainder must shrink as O(h^2).

    ``r(h) = |f(x + h v) - f(x) - h <grad f(x), v>|`` over ``levels`` halving steps: with the
    right gradient ``r`` falls by 4x per halving (order 2), with a wrong one only by 2x
    (order 1) once ``h`` is small. The observed order (median of the last 3 halvings whose
    remainders stand 10x above the round-off model) must be >= 1.5. No tolerance to tune; the
    price is less sensitivity than the FD checks to errors far below the curvature of ``f``.
    A non-scalar ``f`` is reduced to ``<u0, f(x)>`` with a fixed random ``u0``.

    Cost per direction: ``levels + 1`` evaluations of ``f`` and one gradient.

    Args:
      f: function of ``len(args)`` positional arguments.
      args: tuple or list of the arguments.
      num_directions: random directions (seeded).
      seed: seed for the directions; key: a ``jax.random`` key instead.
      levels: number of halving steps (>= 4).
      has_aux: ``f`` returns ``(output, aux)``; only ``output`` is checked.

    Returns:
      A :class:`CheckReport` with the check ``taylor`` (error = observed order).

    Raises:
      ValueError: ``levels < 4``; otherwise as for :func:`check_grads`.

    Example:
      >>> import chainrule as cr, jax.numpy as jnp
      >>> cr.taylor_test(lambda x: jnp.sum(jnp.exp(x)), (jnp.ones(4),)).passed
      True
    """
    levels = check_levels(levels, "taylor_test", default=14, minimum=4)
    return run_checks(
        _without_aux(f, has_aux, "taylor_test"),
        _prepare(args, "taylor_test"),
        ("taylor",),
        num_directions=num_directions,
        seed=seed,
        key=key,
        safety=10.0,
        levels=DEFAULT_LEVELS,
        step=None,
        localize=False,
        what="taylor_test",
        taylor_levels=levels,
    )
