"""The Hessian-vector-product rules: one table, imported by every user of an HVP mode.

``ad``, ``check``, ``curvature``, ``graph``, the benchmarks and the ``ad_modes`` experiment take
their HVP compositions from here, so a mode means the same program everywhere and an unknown
mode raises instead of falling through to another one.

Cost of each rule, in passes of ``f`` (a real scalar function of one pytree):

* ``"fwd-over-rev"``: ``jvp(grad(f), (x,), (v,))`` -- one forward-over-reverse pass (~4-5 ``f``),
  the memory of one gradient.
* ``"rev-over-rev"``: ``vjp(grad(f), x)[1](v)`` -- the same FLOPs, and it stores the gradient
  computation's residuals as well.
* ``"rev-over-fwd"``: ``grad(x -> <grad-free jvp(f, x, v)>)`` -- similar cost; stores the JVP's
  residuals.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax

from chainrule._tree import check_choice

__all__ = ["HVP_MODES", "HVP_RULES", "hvp_rule"]

PyTree = Any
HvpRule = Callable[[Callable[[PyTree], Any], PyTree, PyTree], PyTree]


def _fwd_over_rev(f: Callable, x: PyTree, v: PyTree) -> PyTree:
    return jax.jvp(jax.grad(f), (x,), (v,))[1]


def _rev_over_rev(f: Callable, x: PyTree, v: PyTree) -> PyTree:
    return jax.vjp(jax.grad(f), x)[1](v)[0]


def _rev_over_fwd(f: Callable, x: PyTree, v: PyTree) -> PyTree:
    return jax.grad(lambda y: jax.jvp(f, (y,), (v,))[1])(x)


HVP_RULES: dict[str, HvpRule] = {
    "fwd-over-rev": _fwd_over_rev,
    "rev-over-rev": _rev_over_rev,
    "rev-over-fwd": _rev_over_fwd,
}
HVP_MODES = tuple(HVP_RULES)


def hvp_rule(mode: str) -> HvpRule:
    """The composition ``rule(f, x, v) -> H(x) v`` for ``mode``.

    Args:
      mode: one of :data:`HVP_MODES`.

    Returns:
      A function of ``(f, x, v)``; ``f`` a real scalar function of the pytree ``x``, ``v`` a
      pytree like ``x``. It costs one HVP (see the module docstring for each mode's cost).

    Raises:
      ValueError: ``mode`` is not one of :data:`HVP_MODES` (the message lists them).

    Example:
      >>> import jax.numpy as jnp
      >>> from chainrule._rules import hvp_rule
      >>> hvp_rule("rev-over-rev")(lambda x: jnp.sum(x ** 3), jnp.ones(2), jnp.ones(2)).tolist()
      [6.0, 6.0]
    """
    if isinstance(mode, str) and mode in HVP_RULES:
        return HVP_RULES[mode]
    check_choice(mode, HVP_MODES, "hvp mode")  # raises, with the valid modes and a guess
    raise AssertionError("unreachable")
