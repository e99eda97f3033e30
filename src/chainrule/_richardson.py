"""The Richardson kernel and the line and step helpers that ``chainrule.fd`` and ``chainrule.check``
share (internal; both import these public names, neither reaches into the other's privates).

* :func:`line` / :func:`lines`: ``f`` along ``x + t v`` for a vector of ``t`` (one vmapped
  batch), for one direction or ``K`` at once.
* :func:`richardson_matrices`: the constant maps from the ``2 L + 1`` ladder values
  ``f(x + h_k v), f(x - h_k v), f(x)`` (``h_k = h_0 2^-k``) to the Richardson table (central
  differences and their order-4 and order-6 extrapolations) and to each entry's neighbour
  differences.
* :func:`richardson_table` (jax) and :func:`richardson_np` (NumPy, for the host): per output leaf,
  the table entry with the smallest estimated error in norm, and its elementwise error estimate:
  the larger neighbour difference, floored by the round-off model (:func:`floor_scale`) and by
  the noise that the ladder's even part shows (:func:`noise_seen`).

Cost: a table is ``O(L)`` matrix-vector products over the ladder values; no evaluation of ``f``.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from chainrule import _env, _jit

PyTree = Any

__all__ = [
    "DEFAULT_LEVELS",
    "compiled_call",
    "dtype_eps",
    "floor_scale",
    "line",
    "lines",
    "noise_seen",
    "norm_rows",
    "richardson_matrices",
    "richardson_np",
    "richardson_table",
    "step_dtype",
]

DEFAULT_LEVELS = 6


def dtype_eps(tree: PyTree) -> float:
    """Machine epsilon of the least precise floating leaf of ``tree`` (float32 if none)."""
    eps = [
        float(jnp.finfo(jnp.result_type(leaf)).eps)
        for leaf in jax.tree_util.tree_leaves(tree)
        if jnp.issubdtype(jnp.result_type(leaf), jnp.inexact)
    ]
    return max(eps) if eps else float(jnp.finfo(jnp.float32).eps)


def step_dtype(tree: PyTree) -> np.dtype:
    """The real dtype steps are computed in: the widest floating leaf, at least float32.

    A float64 problem must not get a step rounded to float32: the displacement ``x + h v``
    and the divisor ``h`` would then differ by float32's relative error (~3e-8), a floor far
    above float64 finite-difference accuracy.
    """
    dts = [jnp.finfo(jnp.result_type(x)).dtype for x in jax.tree_util.tree_leaves(tree)]
    return np.dtype(jnp.result_type(jnp.float32, *dts))


def line(f: Callable, x: PyTree, v: PyTree, ts: jax.Array) -> PyTree:
    """``[f(x + t v) for t in ts]`` as one vmapped evaluation; leaves get a leading axis."""

    def at(t):
        return f(jax.tree.map(lambda a, b: a + t.astype(a.dtype) * b, x, v))

    return jax.vmap(at)(ts)


def lines(fn: Callable, x: PyTree, vs: PyTree, ts: jax.Array) -> PyTree:
    """``fn(x + ts[k, j] vs[k])`` for every direction k and step j: leaves get (K, T) axes."""

    def at(v, t):
        return fn(jax.tree.map(lambda a, b: a + t.astype(a.dtype) * b, x, v))

    return jax.vmap(lambda v, tk: jax.vmap(lambda t: at(v, t))(tk))(vs, ts)


@functools.lru_cache(maxsize=32)
def richardson_matrices(levels: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
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


def floor_scale(absF, levels: int, xp=jnp):
    """Per candidate of :func:`richardson_matrices`, the largest ``|f|`` among the points it
    uses (``f(x)`` included): the round-off floor must hold where ``f`` is summed from large,
    cancelling terms near ``x`` (e.g. ``sum(x^3)`` over a symmetric grid, ``f(x) = 0``)."""
    L = levels
    lev = xp.maximum(xp.maximum(absF[:L], absF[L : 2 * L]), absF[-1][None])
    r1 = xp.maximum(lev[:-1], lev[1:])
    r2 = xp.maximum(r1[:-1], r1[1:])
    # richardson_matrices drops a column of the table with fewer than 2 entries (the order-6
    # column at levels=3): the rows here must match its candidates one for one
    return xp.concatenate([c for c in (lev, r1, r2) if c.shape[0] >= 2], 0)


def noise_seen(F, levels: int, xp=jnp):
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


def norm_rows(x, xp):
    """Per row of (K, n): the 2-norm, scaled by the row's largest |x| so that float32 squares
    cannot overflow (|x| > 1.8e19) or underflow; Inf and NaN rows stay Inf and NaN."""
    m = xp.max(xp.abs(x), axis=1) if x.shape[1] else xp.zeros(x.shape[0], x.dtype)
    ok = (m > 0) & xp.isfinite(m)
    ms = xp.where(ok, m, 1)
    return xp.where(ok, ms * xp.sqrt(xp.sum((x / ms[:, None]) ** 2, axis=1)), m)


def richardson_table(F: jax.Array, h0: jax.Array, eps: float, levels: int):
    """Per element, the Richardson-table entry with the smallest estimated error.

    ``F`` has shape ``(2L + 1,) + out_shape`` (see :func:`richardson_matrices`). Each entry's
    error is the larger of its differences to its neighbours in step size (truncation and
    noise both show there), floored by the round-off model ``eps |f(x)| sum|c| / h`` and by
    the noise the ladder shows (:func:`noise_seen`) times ``sum|c| / h``.
    Returns (estimate, error estimate) shaped like ``out_shape``.
    """
    rdt = jnp.finfo(F.dtype).dtype  # errors and steps are real, also for a complex f
    A, BL, BR = (jnp.asarray(m, F.dtype) for m in richardson_matrices(levels)[:3])
    amp = jnp.asarray(richardson_matrices(levels)[3], rdt)
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
    noise = eps * (floor_scale(jnp.abs(Ff), levels) + jnp.finfo(F.dtype).tiny)
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
    seen = jnp.where(jnp.isnan(s := noise_seen(Ff, levels)), jnp.inf, s).astype(rdt)
    i = jnp.argmin(jnp.maximum(norm(E, 1), amp * norm(seen, 0) / h))
    # only the chosen candidate is formed: a third of the work on large leaves
    est = jnp.matmul(jnp.take(A, i, axis=0), Ff, precision=hp) / h
    err = jnp.maximum(E[i], amp[i] * seen / h)
    return est.reshape(shape), err.reshape(shape)


def richardson_np(F: np.ndarray, h0: np.ndarray, eps: float, levels: int):
    """Host version of :func:`chainrule.fd.richardson_table` for (K, T, n) line values.

    The combinations run in F's own dtype (BLAS matmuls): their rounding, ``eps |F| sum|c|``,
    is what the round-off floor already allows for.
    """
    A, BL, BR, amp = (m.astype(F.dtype) for m in richardson_matrices(levels))
    K = F.shape[0]
    ests, errs = [], []
    tiny = np.finfo(F.dtype).tiny
    for k in range(K):
        Fk = F[k]
        h = F.dtype.type(h0[k])
        with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
            E = np.maximum(np.abs(BL @ Fk), np.abs(BR @ Fk)) / h
            model = eps * (floor_scale(np.abs(Fk), levels, np) + tiny)
            E = np.maximum(E, amp[:, None] * model / h)
            E[np.isnan(E)] = np.inf
            seen = noise_seen(Fk, levels, np)
            seen[np.isnan(seen)] = np.inf
            # One entry per (direction, leaf): the smallest error in norm over the leaf.
            # Picking per element would let a few elements whose neighbour differences cancel
            # by chance pass an underestimated error; a whole leaf cannot be that unlucky.
            score = np.maximum(norm_rows(E, np), amp * norm_rows(seen[None], np)[0] / h)
            i = int(np.argmin(score))
            est = (A[i] @ Fk) / h  # only the chosen candidate is formed
            err = np.maximum(E[i], amp[i] * seen / h)
        ests.append(est.astype(np.float64))
        errs.append(err.astype(np.float64))
    return np.stack(ests), np.stack(errs)


_JIT_PARTS = ("_trace", "_fingerprint", "_compile", "_unflatten", "_compiled", "_lock", "_stats")


def compiled_call(
    fn: Callable, args: tuple, opts: dict | None = None, session: dict | None = None
) -> Any:
    """``fn(*args)`` as :func:`chainrule._jit.call` computes it, but compiled at the program's
    first sighting rather than evaluated op by op: for the programs of fd and check, which are
    vmapped ladders of ``f`` (op by op they run 10-20x slower than compiled) and which a check
    re-runs at smaller steps, per leaf and at a second point.

    ``fn`` is traced at this call (nothing of it is stored); the compiled program goes into
    ``_jit``'s cache under ``_jit``'s fingerprint of the traced program (closed-over arrays are
    arguments), so reuse cannot go stale; a program ``_jit`` cannot fingerprint is compiled for
    this call only.
    ``session`` (a dict the caller keeps for the runs of one call, e.g. one
    check) maps the arguments' structure and types to the traced and compiled program, so that
    those runs neither re-trace nor look up. Inside an outer trace: ``fn(*args)``.
    """
    flat, in_tree = jax.tree_util.tree_flatten(args)
    if (
        not all(hasattr(_jit, n) for n in _JIT_PARTS)
        or any(isinstance(x, jax.core.Tracer) for x in flat)
        or jax.config.jax_disable_jit
    ):
        return _jit.call(fn, *args, compiler_options=opts)
    flat = [x if isinstance(x, jax.Array) else jnp.asarray(x) for x in flat]
    here = (in_tree, tuple(jax.typeof(x) for x in flat), str(opts))
    if session is not None and here in session:
        consts, static, exe = session[here]
        return _jit._unflatten(static, list(exe(consts, *flat)))
    closed, static = _jit._trace(fn, flat, in_tree)
    consts = list(closed.consts)
    options = tuple(sorted(opts.items())) if opts else None
    capacity = _env.jit_cache_size()
    key = _jit._fingerprint(closed, flat, options) if capacity else None
    try:
        hash(key)
    except TypeError:
        key = None
    # A program _jit cannot fingerprint (a callback's callable runs with it, a large constant in
    # a nested jaxpr, an unhashable parameter) is compiled for this call and not kept: keying it
    # on its printed jaxpr would keep the callable alive and cannot see a nested constant's
    # values.
    exe = None
    if key is not None:
        with _jit._lock:
            exe = _jit._compiled.get(key)
            if exe is not None:
                _jit._compiled.move_to_end(key)
                _jit._stats["hits"] += 1
    if exe is None:
        exe = _jit._compile(closed, consts, flat, opts)
        with _jit._lock:
            _jit._stats["compiled"] += 1
            if key is not None:
                _jit._compiled[key] = exe
                while len(_jit._compiled) > capacity:
                    _jit._compiled.popitem(last=False)
    if session is not None:
        session[here] = (consts, static, exe)
    return _jit._unflatten(static, list(exe(consts, *flat)))
