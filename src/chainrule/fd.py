"""Finite differences: directional derivatives, step choice, Richardson extrapolation, complex step.

Every estimate comes with an error estimate, because a finite difference is only as useful as
the bound one can put on it. Two error sources are modelled:

* **truncation**, the Taylor terms the stencil drops: ``O(h^p)`` for a stencil of order ``p``.
  It is *measured*, not assumed: the same stencil is evaluated at ``h`` and ``2h`` and
  ``|D(h) - D(2h)| / (2^p - 1)`` estimates the error of ``D(h)`` (the Richardson error
  estimate).
* **round-off**: ``f`` is computed with a relative error of about ``eps`` (the machine epsilon
  of the input dtype), which the stencil divides by ``h``: ``eps * |f(x)| * sum|c_j| / h``. The
  measured difference above also contains this noise, so the estimate covers both.

Steps are chosen from the dtype and the scales of ``x`` and ``v``:
``h = eps^(1/(p+1)) * s(rms(x)) / rms(v)`` balances the two errors for a stencil of order
``p``, with ``s(r) = r`` below 1 (the step follows a small ``x`` down instead of crossing the
pole of ``1/x`` or leaving the domain of ``log``) and ``max(1, log1p(r))`` above (numdifftools'
``log1p`` scaling). Where the default steps meet NaN/Inf (``f``'s domain ends within them),
:func:`directional` tries steps 64x and 4096x lower.
``method="richardson"`` (the default) does not trust one step: it evaluates central
differences on a ladder of ``levels`` steps halving from ``2 * eps^(1/7) * scale``, builds the
Richardson table (orders 2, 4, 6) and picks, per output leaf, the entry with the smallest
estimated error in norm over the leaf, where each entry's error is its largest difference to its
neighbours in step size (plus the round-off model). (Per leaf rather than per element: among
thousands of elements, some neighbour differences cancel by chance and would hide an error.)

Costs, in evaluations of ``f`` (all evaluations of one call run as one vmapped batch):

* one directional derivative: O(1) evaluations, independent of the number of parameters W
  (``forward``/``backward`` 4, ``central`` 7, ``central4`` 9, ``central6`` 15 with the error
  estimate; ``richardson`` ``2 * levels + 1``; ``complex`` 2 complex evaluations);
* a full gradient or Jacobian (:func:`gradient`, :func:`jacobian`): O(W) evaluations (per
  column the stencil at h and 2h only: ``central`` 5 with ``f(x)``), i.e.
  O(W^2) work against one reverse pass (~3 evaluations) for a gradient. Use them on small
  problems, or to locate the worst element of a small leaf.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from chainrule._richardson import (
    DEFAULT_LEVELS,
    compiled_call,
    dtype_eps,
    line,
    richardson_table,
)
from chainrule._richardson import step_dtype as _step_dtype
from chainrule._tree import (
    check_choice,
    check_differentiable,
    check_same_shapes_dtypes,
    leaf_paths,
    map_chunked,
)
from chainrule._validate import check_levels, check_step

PyTree = Any

__all__ = ["METHODS", "directional", "gradient", "jacobian", "default_step", "dtype_eps"]

METHODS = ("richardson", "central", "central4", "central6", "forward", "backward", "complex")

# Stencils: derivative ~= sum_j c_j f(x + o_j h v) / h, and their order p.
_STENCILS: dict[str, tuple[tuple[float, ...], tuple[float, ...], int]] = {
    "forward": ((0.0, 1.0), (-1.0, 1.0), 1),
    "backward": ((-1.0, 0.0), (-1.0, 1.0), 1),
    "central": ((-1.0, 1.0), (-0.5, 0.5), 2),
    "central4": ((-2.0, -1.0, 1.0, 2.0), (1 / 12, -8 / 12, 8 / 12, -1 / 12), 4),
    "central6": (
        (-3.0, -2.0, -1.0, 1.0, 2.0, 3.0),
        (-1 / 60, 9 / 60, -45 / 60, 45 / 60, -9 / 60, 1 / 60),
        6,
    ),
}
_ORDER = {"richardson": 6, "complex": 2, **{k: s[2] for k, s in _STENCILS.items()}}
# The measured error (truncation and round-off) is tripled: over a sweep of 470 cases (x^3,
# log, 1/x, sin, sin(50 x), |x|, relu at x from 1e-4 to 1e5, float32 and float64, every
# method) the raw estimate bounded the actual error in 90% of them, doubled in 94.5%, tripled
# in 95% or more (tests/test_fd.py runs a part of the sweep).
ERR_SAFETY = 3.0


def _rms(tree: PyTree) -> jax.Array:
    leaves = jax.tree_util.tree_leaves(tree)
    n = sum(int(np.size(x)) for x in leaves)
    dt = _step_dtype(tree)
    sq = sum(jnp.sum(jnp.abs(x).astype(dt) ** 2) for x in leaves)
    return jnp.sqrt(sq / max(n, 1))


def _scale(x: PyTree, v: PyTree) -> jax.Array:
    """``s(rms x) / rms v``: the step unit along ``v`` (a traced scalar), with
    ``s(r) = r`` for ``0 < r < 1`` and ``max(1, log1p(r))`` otherwise.

    Below 1 the unit follows ``x`` down: a unit step of 1 at ``x = 0.01`` crosses the pole of
    ``1/x`` (an estimate of the wrong sign), leaves the domain of ``log`` (NaN) and straddles
    the kink of ``|x|``; functions change on the scale of ``x`` there far more often than on
    the scale of 1. ``x = 0`` keeps the unit 1.
    """
    rv = _rms(v)
    rx = _rms(x)
    s = jnp.where((rx > 0) & (rx < 1), rx, jnp.maximum(1.0, jnp.log1p(rx)))
    return s / jnp.where(rv > 0, rv, 1.0)


def default_step(x: PyTree, v: PyTree, method: str = "central") -> jax.Array:
    """The step :func:`directional` uses for ``method`` when ``step`` is None.

    ``eps^(1/(p+1)) * s(rms(x)) / rms(v)`` for a stencil of order ``p`` (``s(r) = r`` for
    ``0 < r < 1``, else ``max(1, log1p(r))``); for
    ``"richardson"`` the largest step of the ladder, ``2 * eps^(1/7) * ...``; for ``"complex"``
    ``eps * ...`` (no cancellation, so the step can be tiny).

    Example:
      >>> import chainrule as cr, jax.numpy as jnp
      >>> h = cr.fd.default_step(jnp.ones(3, jnp.float32), jnp.ones(3, jnp.float32))
      >>> 4e-3 < float(h) < 6e-3
      True
    """
    check_choice(method, METHODS, "finite-difference method")
    check_differentiable(x, "x")
    eps = dtype_eps(x)
    s = _scale(x, v)
    if method == "richardson":
        return 2.0 * eps ** (1 / 7) * s
    if method == "complex":
        return eps * s
    return eps ** (1 / (_ORDER[method] + 1)) * s


def _directional_impl(f, x, v, method, step, levels, at_4h=True):
    eps = dtype_eps(x)
    out_struct = jax.eval_shape(f, x)
    out_leaves, out_def = jax.tree_util.tree_flatten(out_struct)
    for leaf in out_leaves:
        if not jnp.issubdtype(leaf.dtype, jnp.inexact):
            raise TypeError(
                f"directional: f returned a {leaf.dtype} leaf; finite differences need floating "
                f"outputs. Cast the output, or drop integer outputs from f."
            )
    if method == "complex":
        # Im f(x + i h v) / h is the derivative only for real x and a real-valued f: for a
        # complex x or output it silently mixes real and imaginary parts (a wrong answer)
        for name, leaf in leaf_paths(x, "x") + leaf_paths(out_struct, "f(x)"):
            dt = jnp.result_type(leaf)
            if jnp.issubdtype(dt, jnp.complexfloating):
                raise TypeError(
                    f"directional: method='complex' needs real inputs and outputs, but {name} is "
                    f"{dt}. Use another method (e.g. 'richardson') for complex functions."
                )
    sdt = _step_dtype(x)
    h = (default_step(x, v, method) if step is None else jnp.asarray(step)).astype(sdt)
    if method == "complex":
        # the complex counterpart of each leaf's own dtype (a.dtype: a weakly typed float64
        # from a Python float would otherwise pair with complex64, i.e. float32 precision)
        cx = jax.tree.map(lambda a: a.astype(jnp.result_type(a.dtype, jnp.complex64)), x)
        ts = jnp.stack([h, 2 * h])

        def at(t):
            return f(jax.tree.map(lambda a, b: a + 1j * t.astype(a.real.dtype) * b, cx, v))

        Fs = jax.vmap(at)(ts)

        def one(F, o):
            D = jnp.imag(F) / ts.reshape((2,) + (1,) * (F.ndim - 1)).astype(jnp.imag(F).dtype)
            err = jnp.abs(D[0] - D[1]) / 3 + eps * jnp.abs(D[0])
            # in f's own output dtype, like the other methods (f ran on complex64 for float16)
            return D[0].astype(o.dtype), err.astype(o.dtype)

        pairs = [one(F, o) for F, o in zip(jax.tree_util.tree_leaves(Fs), out_leaves, strict=True)]
    elif method == "richardson":
        hs = h * 0.5 ** jnp.arange(levels, dtype=sdt)
        ts = jnp.concatenate([hs, -hs, jnp.zeros((1,), sdt)])
        Fs = line(f, x, v, ts)
        pairs = [richardson_table(F, h, eps, levels) for F in jax.tree_util.tree_leaves(Fs)]
        pairs = [(e, ERR_SAFETY * r) for e, r in pairs]
    else:
        offs, coefs, p = _STENCILS[method]
        # the stencil at h, 2h and 4h (the error estimate and whether it is asymptotic), plus
        # f(x) for the noise model; ``at_4h=False``: h and 2h only, for the W columns of a
        # Jacobian, where the 4h stencil would cost 1.4x for central differences
        far = {4 * o for o in offs} if at_4h else set()
        grid = sorted(set(offs) | {2 * o for o in offs} | far | {0.0})
        ts = h * jnp.asarray(grid, sdt)
        Fs = line(f, x, v, ts)
        pos = {o: i for i, o in enumerate(grid)}
        amp = sum(abs(c) for c in coefs)
        xv = _rms(x) / jnp.maximum(_rms(v), jnp.finfo(sdt).tiny)
        pairs = []
        for F in jax.tree_util.tree_leaves(Fs):
            hh = h.astype(jnp.finfo(F.dtype).dtype)  # real, also for a complex f
            d1 = sum(c * F[pos[o]] for o, c in zip(offs, coefs, strict=True)) / hh
            d2 = sum(c * F[pos[2 * o]] for o, c in zip(offs, coefs, strict=True)) / (2 * hh)
            # round-off: of f's values, and of the points x + t v themselves (eps |x| each: a
            # derivative error of eps |x| / |v| |Jv| amp / h; sin(50 x) at x = 70 in float64)
            noise = eps * (jnp.abs(F[pos[0.0]]) + xv * jnp.abs(d1)) * amp / hh
            e12 = jnp.abs(d1 - d2)
            trunc = e12 / (2.0**p - 1)
            if at_4h:
                # |d1 - d2| / (2^p - 1) is the error of d1 only where the differences shrink
                # like h^p; where they do not (50 h ~ 1 rad for sin(50 x), a pole within 4h,
                # rounding) it underestimated up to 4000x: then the larger difference is it
                d4 = sum(c * F[pos[4 * o]] for o, c in zip(offs, coefs, strict=True)) / (4 * hh)
                e24 = jnp.abs(d2 - d4)
                asymptotic = e24 >= 2.0 ** (p - 1) * e12
                trunc = jnp.where(asymptotic, trunc, jnp.maximum(e12, e24))
            pairs.append((d1, ERR_SAFETY * (trunc + noise)))
    est = out_def.unflatten([p[0] for p in pairs])
    err = out_def.unflatten([p[1] for p in pairs])
    return est, err


def _prepare(x: PyTree, v: PyTree) -> tuple[PyTree, PyTree]:
    x = jax.tree.map(jnp.asarray, x)
    v = jax.tree.map(jnp.asarray, v)
    check_differentiable(x, "x")
    check_same_shapes_dtypes(x, v, "x", "v", allow_float0=False)
    return x, v


def directional(
    f: Callable,
    x: PyTree,
    v: PyTree,
    method: str = "richardson",
    step: float | None = None,
    levels: int = DEFAULT_LEVELS,
) -> tuple[PyTree, PyTree]:
    """Finite-difference directional derivative ``J(x) v`` of ``f`` with an error estimate.

    Cost: O(1) evaluations of ``f`` whatever the number of parameters, run as one vmapped,
    jit-compiled batch: ``forward``/``backward`` 4, ``central`` 7, ``central4`` 9, ``central6``
    15 (each includes the stencil at 2h and 4h used for the error estimate and ``f(x)``),
    ``richardson`` ``2 * levels + 1``, ``complex`` 2 evaluations on complex input.

    Args:
      f: function of one pytree argument returning any pytree of floating arrays.
      x: the point (pytree of floating arrays).
      v: the direction, with ``x``'s structure, shapes and dtypes.
      method: ``"richardson"`` (default: a ladder of central differences, Richardson-
        extrapolated to orders 4 and 6, the entry with the smallest estimated error picked per
        output leaf), ``"central"`` (O(h^2)), ``"central4"``, ``"central6"`` (O(h^4), O(h^6)),
        ``"forward"``, ``"backward"`` (O(h)), or ``"complex"`` (complex step,
        ``Im f(x + i h v) / h``, O(h^2) with no cancellation; ``f`` must accept complex input
        and be holomorphic in it).
      step: the step ``h`` (for ``"richardson"`` the largest step of the ladder); default
        :func:`default_step`.
      levels: number of steps in the Richardson ladder (at least 3).

    Returns:
      ``(estimate, error_estimate)``, both pytrees like ``f``'s output; the error estimate is
      elementwise and non-negative (truncation measured from two steps, plus round-off; for
      ``"richardson"`` also the noise of ``f``'s values that the ladder's even part shows, which
      a sum of many cancelling terms has far above ``eps |f|``).

    Raises:
      ValueError: an unknown method, ``levels < 3``, or ``v`` not shaped like ``x``.
      TypeError: integer leaves in ``x`` or in ``f``'s output, a dtype mismatch, or complex
        leaves in ``x`` or the output with ``method="complex"``.

    Example:
      >>> import chainrule as cr, jax.numpy as jnp
      >>> d, err = cr.fd.directional(jnp.sin, jnp.array(0.0), jnp.array(1.0))
      >>> abs(float(d) - 1.0) < 1e-6, float(err) < 1e-5
      (True, True)
    """
    check_choice(method, METHODS, "finite-difference method")
    levels = check_levels(levels, "directional", DEFAULT_LEVELS)
    step = check_step(step, "directional")
    x, v = _prepare(x, v)

    # traced at every call (f as it is now); compiled reuse keyed on the traced program
    def fn(x, v, s):
        return _directional_impl(f, x, v, method, s, levels)

    est, err = compiled_call(fn, (x, v, step))
    if step is not None or method == "complex" or _traced(err) or _tight(est, err, x):
        return est, err
    # Loose at the default steps: f's domain ends within them (log, sqrt near 0: NaN), or f
    # changes on a smaller scale (sin(50 x) at x = 100, a pole nearby): smaller steps, the same
    # program, and the result with the smallest error estimate
    h = default_step(x, v, method)
    best = (est, err)
    # no step that x's own rounding swamps (x + h v == x in float32 at x ~ 1e5); above 16
    # ulps the error estimate's round-off term for the points x + t v says what is left
    floor = 16 * dtype_eps(x) * float(_rms(x)) / max(float(_rms(v)), 1e-300)
    for shrink in (s for s in (2.0**-6, 2.0**-12) if float(h) * s > floor):
        e2, r2 = compiled_call(fn, (x, v, h * shrink))
        if _size(r2) < _size(best[1]):
            best = (e2, r2)
        if _tight(*best, x):
            break
    return best


def _traced(tree: PyTree) -> bool:
    return any(isinstance(a, jax.core.Tracer) for a in jax.tree_util.tree_leaves(tree))


def _size(tree: PyTree) -> float:
    """The norm of all leaves (inf if any is NaN/Inf)."""
    leaves = [np.abs(np.asarray(a)).astype(np.float64) for a in jax.tree_util.tree_leaves(tree)]
    s = math.sqrt(sum(float(np.sum(a**2)) for a in leaves))
    return s if math.isfinite(s) else math.inf


def _tight(est: PyTree, err: PyTree, x: PyTree) -> bool:
    """Finite, and the error estimate within ``eps^0.4`` of the estimate (1.7e-3 in float32,
    5.5e-7 in float64: a smooth f's error is far below, a kink's or a pole's far above)."""
    e = _size(err)
    return math.isfinite(e) and e <= dtype_eps(x) ** 0.4 * _size(est)


def _basis_impl(f, x, method, step, levels, chunk_size):
    flat, unravel = ravel_pytree(x)
    n = flat.shape[0]
    if n == 0:
        # no input scalars: an (M, 0) Jacobian, without evaluating an empty basis
        out = jax.eval_shape(f, x)
        fo = ravel_pytree(jax.tree.map(lambda o: jnp.zeros(o.shape, o.dtype), out))[0]
        return (
            jnp.zeros((fo.size, 0), fo.dtype),
            jnp.zeros((fo.size, 0), jnp.finfo(fo.dtype).dtype),
        )

    def col(i):
        e = unravel(jnp.zeros_like(flat).at[i].set(1))
        est, err = _directional_impl(f, x, e, method, step, levels, at_4h=False)
        return ravel_pytree(est)[0], ravel_pytree(err)[0]

    est, err = map_chunked(col, jnp.arange(n), n, chunk_size)
    return est.T, err.T  # (out_size, in_size)


def jacobian(
    f: Callable,
    x: PyTree,
    method: str = "central",
    step: float | None = None,
    levels: int = DEFAULT_LEVELS,
    chunk_size: int | None = None,
) -> tuple[jax.Array, jax.Array]:
    """Full finite-difference Jacobian, one directional derivative per input coordinate.

    Cost: O(W) evaluations for W input scalars (4W for ``"central"``), i.e. O(W^2) work where
    reverse mode needs one pass per output; vmapped (all at once, or ``chunk_size`` columns at
    a time to bound memory) and jit-compiled. For small problems and for locating the worst
    element of a failed check.

    Args:
      f: function of one pytree argument, any pytree of floating outputs.
      x: the point.
      method, step, levels: as in :func:`directional` (the default here is ``"central"``).
      chunk_size: columns per batch, or None for all W at once.

    Returns:
      ``(J, err)``: arrays of shape ``(M, W)`` over the raveled output and input
      (``jax.flatten_util.ravel_pytree`` order).

    Raises:
      ValueError: unknown method or a bad ``chunk_size``.
      TypeError: integer leaves in ``x``.

    Example:
      >>> import chainrule as cr, jax.numpy as jnp
      >>> J, err = cr.fd.jacobian(lambda x: x ** 2, jnp.array([1.0, 2.0]))
      >>> [[round(float(a), 3) for a in row] for row in J]
      [[2.0, 0.0], [0.0, 4.0]]
    """
    check_choice(method, METHODS, "finite-difference method")
    if chunk_size is not None and (
        isinstance(chunk_size, bool)
        or not isinstance(chunk_size, (int, np.integer))
        or chunk_size < 1
    ):
        raise ValueError(
            f"jacobian: chunk_size must be a positive int or None, found {chunk_size!r}."
        )
    levels = check_levels(levels, "jacobian", DEFAULT_LEVELS)
    step = check_step(step, "jacobian")
    x = jax.tree.map(jnp.asarray, x)
    check_differentiable(x, "x")
    chunk = None if chunk_size is None else int(chunk_size)
    return compiled_call(lambda x, s: _basis_impl(f, x, method, s, levels, chunk), (x, step))


def gradient(
    f: Callable,
    x: PyTree,
    method: str = "central",
    step: float | None = None,
    levels: int = DEFAULT_LEVELS,
    chunk_size: int | None = None,
) -> tuple[PyTree, PyTree]:
    """Finite-difference gradient of a scalar function, as a pytree like ``x``.

    Cost: O(W) evaluations of ``f`` (4W for ``"central"``): O(W^2) work against one reverse
    pass. See :func:`jacobian`.

    Args:
      f: real scalar function of one pytree.
      x: the point.
      method, step, levels, chunk_size: as in :func:`jacobian`.

    Returns:
      ``(grad, err)``, pytrees like ``x``.

    Raises:
      TypeError: ``f`` does not return a scalar, or integer leaves in ``x``.

    Example:
      >>> import chainrule as cr, jax.numpy as jnp
      >>> g, err = cr.fd.gradient(lambda x: jnp.sum(x ** 3), jnp.array([1.0, 2.0]))
      >>> [round(float(a), 3) for a in g]
      [3.0, 12.0]
    """
    out = jax.eval_shape(f, jax.tree.map(jnp.asarray, x))
    from chainrule._tree import check_scalar_output

    check_scalar_output(out, "fd.gradient", f)
    J, err = jacobian(f, x, method, step, levels, chunk_size)
    unravel = ravel_pytree(jax.tree.map(jnp.asarray, x))[1]
    return unravel(J[0]), unravel(err[0])
