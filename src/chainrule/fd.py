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
``h = eps^(1/(p+1)) * max(1, log1p(rms(x))) / rms(v)`` balances the two errors for a
stencil of order ``p`` (numdifftools uses the same ``log1p`` scaling of ``x``).
``method="richardson"`` (the default) does not trust one step: it evaluates central
differences on a ladder of ``levels`` steps halving from ``2 * eps^(1/7) * scale``, builds the
Richardson table (orders 2, 4, 6) and picks, per output leaf, the entry with the smallest
estimated error in norm over the leaf, where each entry's error is its largest difference to its
neighbours in step size (plus the round-off model). (Per leaf rather than per element: among
thousands of elements, some neighbour differences cancel by chance and would hide an error.)

Costs, in evaluations of ``f`` (all evaluations of one call run as one vmapped batch):

* one directional derivative: O(1) evaluations, independent of the number of parameters W
  (``forward``/``backward`` 3, ``central`` 4, ``central4`` 8, ``central6`` 12 with the error
  estimate; ``richardson`` ``2 * levels + 1``; ``complex`` 2 complex evaluations);
* a full gradient or Jacobian (:func:`gradient`, :func:`jacobian`): O(W) evaluations, i.e.
  O(W^2) work against one reverse pass (~3 evaluations) for a gradient. Use them on small
  problems, or to locate the worst element of a small leaf.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from chainrule._tree import (
    check_choice,
    check_differentiable,
    check_same_shapes_dtypes,
    leaf_paths,
    map_chunked,
)

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
DEFAULT_LEVELS = 6


def dtype_eps(tree: PyTree) -> float:
    """Machine epsilon of the least precise floating leaf of ``tree`` (float32 if none)."""
    eps = [
        float(jnp.finfo(jnp.result_type(leaf)).eps)
        for leaf in jax.tree_util.tree_leaves(tree)
        if jnp.issubdtype(jnp.result_type(leaf), jnp.inexact)
    ]
    return max(eps) if eps else float(jnp.finfo(jnp.float32).eps)


def _step_dtype(tree: PyTree) -> np.dtype:
    """The real dtype steps are computed in: the widest floating leaf, at least float32.

    A float64 problem must not get a step rounded to float32: the displacement ``x + h v``
    and the divisor ``h`` would then differ by float32's relative error (~3e-8), a floor far
    above float64 finite-difference accuracy.
    """
    dts = [jnp.finfo(jnp.result_type(x)).dtype for x in jax.tree_util.tree_leaves(tree)]
    return np.dtype(jnp.result_type(jnp.float32, *dts))


def _rms(tree: PyTree) -> jax.Array:
    leaves = jax.tree_util.tree_leaves(tree)
    n = sum(int(np.size(x)) for x in leaves)
    dt = _step_dtype(tree)
    sq = sum(jnp.sum(jnp.abs(x).astype(dt) ** 2) for x in leaves)
    return jnp.sqrt(sq / max(n, 1))


def _scale(x: PyTree, v: PyTree) -> jax.Array:
    """``max(1, log1p(rms x)) / rms v``: the step unit along ``v`` (a traced scalar)."""
    rv = _rms(v)
    return jnp.maximum(1.0, jnp.log1p(_rms(x))) / jnp.where(rv > 0, rv, 1.0)


def default_step(x: PyTree, v: PyTree, method: str = "central") -> jax.Array:
    """The step :func:`directional` uses for ``method`` when ``step`` is None.

    ``eps^(1/(p+1)) * max(1, log1p(rms(x))) / rms(v)`` for a stencil of order ``p``; for
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


def _line(f: Callable, x: PyTree, v: PyTree, ts: jax.Array) -> PyTree:
    """``[f(x + t v) for t in ts]`` as one vmapped evaluation; leaves get a leading axis."""

    def at(t):
        return f(jax.tree.map(lambda a, b: a + t.astype(a.dtype) * b, x, v))

    return jax.vmap(at)(ts)


@functools.lru_cache(maxsize=32)
def _richardson_matrices(levels: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Constant maps from the ``2 * levels + 1`` line values to the Richardson table.

    Values are ordered ``f(x + h_k v)`` (k = 0..L-1), ``f(x - h_k v)``, ``f(x)`` with
    ``h_k = h_0 2^-k``. Returns ``(A, BL, BR, amp)`` in units of ``1/h_0``: candidates
    ``A @ F`` (central differences D_k, their order-4 and order-6 extrapolations), the
    differences of each candidate to its left/right neighbour in step size (``BL``, ``BR``;
    the one neighbour at the ends), and ``amp = sum |A|`` (round-off amplification).
    """
    L = levels
    T = 2 * L + 1
    D = np.zeros((L, T))
    for k in range(L):
        D[k, k] = 2.0**k / 2
        D[k, L + k] = -(2.0**k) / 2
    cols = [D]
    for j in (1, 2):
        prev = cols[-1]
        r = 4.0**j
        cols.append((r * prev[1:] - prev[:-1]) / (r - 1))
    A, BL, BR = [], [], []
    for c in cols:
        n = c.shape[0]
        if n < 2:
            continue
        for k in range(n):
            left = c[k] - c[k - 1] if k > 0 else c[k] - c[k + 1]
            right = c[k] - c[k + 1] if k < n - 1 else c[k] - c[k - 1]
            A.append(c[k])
            BL.append(left)
            BR.append(right)
    A, BL, BR = np.array(A), np.array(BL), np.array(BR)
    return A, BL, BR, np.abs(A).sum(1)


def _floor_scale(absF, levels: int, xp=jnp):
    """Per candidate of :func:`_richardson_matrices`, the largest ``|f|`` among the points it
    uses (``f(x)`` included): the round-off floor must hold where ``f`` is summed from large,
    cancelling terms near ``x`` (e.g. ``sum(x^3)`` over a symmetric grid, ``f(x) = 0``)."""
    L = levels
    lev = xp.maximum(xp.maximum(absF[:L], absF[L : 2 * L]), absF[-1][None])
    r1 = xp.maximum(lev[:-1], lev[1:])
    r2 = xp.maximum(r1[:-1], r1[1:])
    # _richardson_matrices drops a column of the table with fewer than 2 entries (the order-6
    # column at levels=3): the rows here must match its candidates one for one
    return xp.concatenate([c for c in (lev, r1, r2) if c.shape[0] >= 2], 0)


def _noise_seen(F, levels: int, xp=jnp):
    """Per element, the noise of f's values that the ladder itself shows.

    The even part ``S_k = f(x + h_k v) + f(x - h_k v) - 2 f(x)`` is ``h_k^2 f''`` plus O(h^4);
    extrapolated twice (``R_k = S_(k+1) - S_k / 4``, then ``R_(k+1) - R_k / 16``) it is O(h^6)
    plus noise, and at the smallest steps only noise is left. That noise is what the round-off
    model ``eps |f|`` cannot see when f is a sum of many cancelling terms (``sum(w^3)`` over a
    symmetric grid rounds at ``eps sum|w^3|``, far above ``eps |f|``); the central differences
    never use the even part, so it is an independent witness. A candidate's share is
    ``sum|c| * seen / h``.
    """
    L = levels
    lo = max(L - 4, 0)  # the last two twice-extrapolated rows use the 4 smallest steps
    S = F[lo:L] + F[L + lo : 2 * L] - 2 * F[-1][None]
    R = S[1:] - S[:-1] / 4  # O(h^4) + noise
    R = R[1:] - R[:-1] / 16  # O(h^6) + noise: below float64's noise at these steps
    return xp.max(xp.abs(R), axis=0) / 2  # ~ the rms of one value's noise (|c| of a row: 2.0)


def _richardson_table(F: jax.Array, h0: jax.Array, eps: float, levels: int):
    """Per element, the Richardson-table entry with the smallest estimated error.

    ``F`` has shape ``(2L + 1,) + out_shape`` (see :func:`_richardson_matrices`). Each entry's
    error is the larger of its differences to its neighbours in step size (truncation and
    noise both show there), floored by the round-off model ``eps |f(x)| sum|c| / h`` and by
    the noise the ladder shows (:func:`_noise_seen`) times ``sum|c| / h``.
    Returns (estimate, error estimate) shaped like ``out_shape``.
    """
    rdt = jnp.finfo(F.dtype).dtype  # errors and steps are real, also for a complex f
    A, BL, BR = (jnp.asarray(m, F.dtype) for m in _richardson_matrices(levels)[:3])
    amp = jnp.asarray(_richardson_matrices(levels)[3], rdt)
    shape = F.shape[1:]
    Ff = F.reshape(F.shape[0], -1)
    hp = jax.lax.Precision.HIGHEST
    h = h0.astype(rdt)
    E = (
        jnp.maximum(
            jnp.abs(jnp.matmul(BL, Ff, precision=hp)), jnp.abs(jnp.matmul(BR, Ff, precision=hp))
        )
        / h
    )
    noise = eps * (_floor_scale(jnp.abs(Ff), levels) + jnp.finfo(F.dtype).tiny)
    E = jnp.maximum(E, amp[:, None] * noise / h)
    E = jnp.where(jnp.isnan(E), jnp.inf, E)
    # one entry for the whole leaf: the smallest error in norm (per element, a few elements
    # whose neighbour differences cancel by chance would get an underestimated error)
    # (the norm in at least float32: float16's max / 1e6 would clip every error to 0.07)
    wide = jnp.promote_types(E.dtype, jnp.float32)
    big = float(jnp.finfo(wide).max) / 1e6
    norm = lambda x, axis: jnp.sqrt(jnp.sum(jnp.minimum(x.astype(wide), big) ** 2, axis))
    # the witnessed noise enters per candidate through its norm, and elementwise only into the
    # chosen row: folded into the whole table it cost a large kernel 3x its time on the CPU
    seen = jnp.where(jnp.isnan(s := _noise_seen(Ff, levels)), jnp.inf, s).astype(rdt)
    i = jnp.argmin(jnp.maximum(norm(E, 1), amp * norm(seen, 0) / h))
    # only the chosen candidate is formed: a third of the work on large leaves
    est = jnp.matmul(jnp.take(A, i, axis=0), Ff, precision=hp) / h
    err = jnp.maximum(E[i], amp[i] * seen / h)
    return est.reshape(shape), err.reshape(shape)


def _directional_impl(f, x, v, method, step, levels):
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
        Fs = _line(f, x, v, ts)
        pairs = [_richardson_table(F, h, eps, levels) for F in jax.tree_util.tree_leaves(Fs)]
    else:
        offs, coefs, p = _STENCILS[method]
        # the stencil at h and at 2h (for the error estimate), plus f(x) for the noise model
        grid = sorted(set(offs) | {2 * o for o in offs} | {0.0})
        ts = h * jnp.asarray(grid, sdt)
        Fs = _line(f, x, v, ts)
        pos = {o: i for i, o in enumerate(grid)}
        amp = sum(abs(c) for c in coefs)
        pairs = []
        for F in jax.tree_util.tree_leaves(Fs):
            hh = h.astype(jnp.finfo(F.dtype).dtype)  # real, also for a complex f
            d1 = sum(c * F[pos[o]] for o, c in zip(offs, coefs, strict=True)) / hh
            d2 = sum(c * F[pos[2 * o]] for o, c in zip(offs, coefs, strict=True)) / (2 * hh)
            noise = eps * jnp.abs(F[pos[0.0]]) * amp / hh
            pairs.append((d1, jnp.abs(d1 - d2) / (2.0**p - 1) + noise))
    est = out_def.unflatten([p[0] for p in pairs])
    err = out_def.unflatten([p[1] for p in pairs])
    return est, err


_directional_jit = jax.jit(_directional_impl, static_argnums=(0, 3, 5))


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
    jit-compiled batch: ``forward``/``backward`` 3, ``central`` 4, ``central4`` 8, ``central6``
    12 (each includes the second step used for the error estimate and ``f(x)``),
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
      >>> abs(float(d) - 1.0) < 1e-6, float(err) < 1e-6
      (True, True)
    """
    check_choice(method, METHODS, "finite-difference method")
    levels = _check_levels(levels, "directional")
    _check_step(step, "directional")
    x, v = _prepare(x, v)
    return _directional_jit(f, x, v, method, step, levels)


def _check_levels(levels: Any, what: str) -> int:
    if isinstance(levels, bool) or not isinstance(levels, (int, np.integer)) or levels < 3:
        raise ValueError(
            f"{what}: levels must be >= 3 (an int), found {levels!r}; the default is "
            f"{DEFAULT_LEVELS}."
        )
    return int(levels)


def _check_step(step: Any, what: str) -> None:
    """A concrete step must be finite and non-zero (a traced one is the caller's business)."""
    if step is None or isinstance(step, jax.core.Tracer):
        return
    h = np.asarray(step)
    if h.ndim != 0 or not np.isfinite(h) or h == 0:
        raise ValueError(
            f"{what}: step must be a finite, non-zero scalar, found {step!r}; or None for "
            f"default_step."
        )


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
        est, err = _directional_impl(f, x, e, method, step, levels)
        return ravel_pytree(est)[0], ravel_pytree(err)[0]

    est, err = map_chunked(col, jnp.arange(n), n, chunk_size)
    return est.T, err.T  # (out_size, in_size)


_basis_jit = jax.jit(_basis_impl, static_argnums=(0, 2, 4, 5))


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
    levels = _check_levels(levels, "jacobian")
    _check_step(step, "jacobian")
    x = jax.tree.map(jnp.asarray, x)
    check_differentiable(x, "x")
    return _basis_jit(f, x, method, step, levels, None if chunk_size is None else int(chunk_size))


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
