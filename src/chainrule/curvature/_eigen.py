"""Extreme eigenpairs: thick-restart Lanczos with full reorthogonalization; power iteration."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from chainrule import _tree
from chainrule.curvature._operators import CurvatureOperator

PyTree = Any

__all__ = ["Eigenpairs", "eigsh", "power_iteration"]

WHICH = ("largest", "smallest", "largest_magnitude")


class Eigenpairs(NamedTuple):
    """Eigenpairs and what they cost.

    Attributes:
      eigenvalues: ``(k,)``, ordered as asked (descending for ``"largest"``, ascending for
        ``"smallest"``, by descending magnitude for ``"largest_magnitude"``).
      eigenvectors: a pytree like the operator's vectors with a leading axis ``k`` (unit norm).
      residuals: ``(k,)`` the residual norms ``||A y - theta y||`` (Lanczos: the recurrence's
        estimate ``|beta_m s_mi|``, exact in exact arithmetic and accurate with full
        reorthogonalization; power iteration: measured).
      converged: whether every residual met ``tol * scale`` (``scale`` the largest Ritz value's
        magnitude, an estimate of ``||A||_2``).
      matvecs: operator applications spent.
      data_passes: passes over the data (``matvecs``: one matvec passes over all batches once).
      restarts: Lanczos restarts used (power iteration: iterations).
    """

    eigenvalues: jax.Array
    eigenvectors: PyTree
    residuals: jax.Array
    converged: bool
    matvecs: int
    data_passes: int
    restarts: int


def _default_tol(dtype: Any) -> float:
    return 1e-8 if jnp.dtype(dtype).itemsize >= 8 else 1e-4


def _check_k(k: Any, n: int) -> None:
    if not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"k: expected an int >= 1, found {k!r}.")
    if k > n:
        raise ValueError(
            f"k={k} is larger than the operator's dimension n={n} (the number of scalars in "
            f"the selected parameters): ask for k <= {n}."
        )


def _order(theta: jax.Array, which: str) -> jax.Array:
    key = {"largest": -theta, "smallest": theta, "largest_magnitude": -jnp.abs(theta)}[which]
    return jnp.argsort(key)


def _start_vector(op: CurvatureOperator, v0: PyTree | None, key: jax.Array | None) -> jax.Array:
    if v0 is not None:
        x = op.ravel(v0)
    else:
        key = jax.random.PRNGKey(0) if key is None else key
        x = jax.random.normal(key, (op.size,), op.dtype)
    return x


def eigsh(
    op: CurvatureOperator,
    k: int = 1,
    which: str = "largest",
    *,
    tol: float | None = None,
    num_vectors: int | None = None,
    max_restarts: int = 100,
    v0: PyTree | None = None,
    key: jax.Array | None = None,
) -> Eigenpairs:
    """``k`` extreme eigenpairs of a symmetric operator by thick-restart Lanczos.

    Lanczos with full reorthogonalization (classical Gram-Schmidt, twice, against every basis
    vector: no loss of orthogonality, hence no spurious "ghost" copies of converged
    eigenvalues), stopped on the residual: every wanted Ritz pair satisfies
    ``||A y - theta y|| <= tol * max|theta|``. The basis holds at most ``num_vectors`` vectors
    (the memory bound); when it is full and a pair has not converged, the basis is shrunk to
    the best ``k + (num_vectors - k) // 2`` Ritz vectors plus the residual direction (Wu &
    Simon's thick restart, equivalent to implicitly restarted Lanczos) and expanded again. An
    invariant subspace (breakdown) continues with a fresh random direction orthogonal to the
    basis. The whole iteration is one ``lax.while_loop`` over restarts around a ``fori_loop``
    over steps, compiled once per call whatever the number of steps.

    Args:
      op: the operator.
      k: number of eigenpairs (``1 <= k <= op.size``).
      which: ``"largest"`` (algebraic), ``"smallest"`` (algebraic: the most negative of an
        indefinite Hessian) or ``"largest_magnitude"``.
      tol: relative residual tolerance; default ``1e-8`` (64-bit) or ``1e-4`` (32-bit).
        An eigenvalue's error is at most its residual, and typically ``residual^2 / gap``.
      num_vectors: basis size ``m`` (memory: ``m + 1`` vectors of ``op.size``); default
        ``min(n, max(20, 2k + 10))``.
      max_restarts: restarts before giving up (``converged`` is then False).
      v0: a start vector like ``op.like`` (warm start, e.g. the previous step's top
        eigenvector); default a seeded Gaussian.
      key: PRNG key for the default start vector and breakdown directions.

    Returns:
      :class:`Eigenpairs`. Cost: ``m + restarts * (m - p)`` matvecs, ``p = k + (m - k) // 2``.

    Raises:
      ValueError: ``k`` out of range, unknown ``which``, ``num_vectors < k + 1`` (unless
        ``= n``), a bad tolerance.

    Example:
      >>> import jax.numpy as jnp
      >>> import chainrule as cr
      >>> f = lambda p: 0.5 * jnp.sum(jnp.arange(1.0, 6.0) * p["w"] ** 2)
      >>> op = cr.curvature.hessian(f, {"w": jnp.zeros(5)})
      >>> res = cr.curvature.eigsh(op, k=2)
      >>> [round(float(x), 4) for x in res.eigenvalues], bool(res.converged)
      ([5.0, 4.0], True)
    """
    n = op.size
    _check_k(k, n)
    _tree.check_choice(which, WHICH, "which")
    tol = _default_tol(op.dtype) if tol is None else float(tol)
    if not tol > 0:
        raise ValueError(f"tol: expected a positive number, found {tol!r}.")
    m = min(n, max(20, 2 * k + 10)) if num_vectors is None else int(num_vectors)
    if m > n:
        m = n
    if m < k + 1 and m != n:
        raise ValueError(f"num_vectors={m}: expected at least k + 1 = {k + 1} (or n = {n}).")
    p = min(k + (m - k) // 2, m - 1) if m > k else k
    dtype = op.dtype
    eps = float(jnp.finfo(dtype).eps)
    key = jax.random.PRNGKey(1) if key is None else key
    x0 = _start_vector(op, v0, key)
    apply = op.apply_flat

    def orth(V, w):
        h = V @ w
        w = w - V.T @ h
        h2 = V @ w
        return w - V.T @ h2, h + h2

    def step(j, carry):
        V, T, b_last, scale, kk = carry
        w = apply(state, V[j])
        scale = jnp.maximum(scale, jnp.linalg.norm(w))
        w, h = orth(V, w)
        beta = jnp.linalg.norm(w)
        broke = beta <= 10 * n * eps * scale
        kk, sub = jax.random.split(kk)
        r = jax.random.normal(sub, (n,), dtype)
        r, _ = orth(V, r)
        w = jnp.where(broke, r / jnp.linalg.norm(r), w / jnp.where(broke, 1.0, beta))
        beta = jnp.where(broke, 0.0, beta)
        T = T.at[:, j].set(h).at[j, :].set(h)
        T = T.at[j, j + 1].set(beta).at[j + 1, j].set(beta)
        V = V.at[j + 1].set(w)
        return V, T, beta, scale, kk

    def ritz(V, T, b_last):
        Tm = T[:m, :m]
        theta, S = jnp.linalg.eigh(0.5 * (Tm + Tm.T))
        order = _order(theta, which)
        res = jnp.abs(b_last * S[m - 1])
        return theta, S, order, res

    def done(theta, order, res):
        wanted = order[:k]
        scale = jnp.max(jnp.abs(theta))
        return jnp.all(res[wanted] <= tol * scale)

    def cycle(carry):
        V, T, b_last, scale, kk, restarts, _ = carry
        theta, S, order, res = ritz(V, T, b_last)
        keep = order[:p]
        Vk = S[:, keep].T @ V[:m]
        V2 = jnp.zeros_like(V).at[:p].set(Vk).at[p].set(V[m])
        T2 = jnp.zeros_like(T).at[jnp.arange(p), jnp.arange(p)].set(theta[keep])
        V2, T2, b_last, scale, kk = jax.lax.fori_loop(p, m, step, (V2, T2, b_last, scale, kk))
        theta, S, order, res = ritz(V2, T2, b_last)
        return V2, T2, b_last, scale, kk, restarts + 1, done(theta, order, res)

    def run(state_, x0):
        nonlocal state
        state = state_
        V = jnp.zeros((m + 1, n), dtype).at[0].set(x0 / jnp.linalg.norm(x0))
        T = jnp.zeros((m + 1, m + 1), dtype)
        zero = jnp.zeros((), dtype)
        V, T, b_last, scale, kk = jax.lax.fori_loop(0, m, step, (V, T, zero, zero, key))
        theta, S, order, res = ritz(V, T, b_last)
        carry = (V, T, b_last, scale, kk, jnp.int32(0), done(theta, order, res))
        if m < n and p < m:
            carry = jax.lax.while_loop(lambda c: (~c[6]) & (c[5] < max_restarts), cycle, carry)
        V, T, b_last, scale, kk, restarts, ok = carry
        theta, S, order, res = ritz(V, T, b_last)
        wanted = order[:k]
        Y = S[:, wanted].T @ V[:m]
        return theta[wanted], Y, res[wanted], ok, restarts

    state = None
    vals, Y, res, ok, restarts = jax.jit(run)(op.state, x0)
    restarts = int(restarts)
    matvecs = m + restarts * (m - p)
    return Eigenpairs(
        eigenvalues=vals,
        eigenvectors=jax.vmap(op.unravel)(Y),
        residuals=res,
        converged=bool(ok),
        matvecs=matvecs,
        data_passes=matvecs,
        restarts=restarts,
    )


def power_iteration(
    op: CurvatureOperator,
    k: int = 1,
    *,
    tol: float | None = None,
    max_iters: int = 1000,
    key: jax.Array | None = None,
) -> Eigenpairs:
    """The ``k`` largest-magnitude eigenpairs by power iteration with deflation (the baseline).

    Eigenpair ``i`` iterates ``v <- (A - sum_{j<i} theta_j y_j y_j^T) v / ||.||`` until the
    residual ``||A v - theta v|| <= tol * |theta_0|`` (not a change of the Rayleigh quotient,
    which stalls early when two eigenvalues are close). Convergence is geometric in
    ``|lambda_{i+1} / lambda_i|``: slow for clustered spectra, where :func:`eigsh` is far
    cheaper. Each iteration is one matvec (its residual comes from the same product).

    Args:
      op: the operator.
      k: number of eigenpairs.
      tol: relative residual tolerance (defaults as :func:`eigsh`).
      max_iters: iterations per eigenpair.
      key: PRNG key for the start vectors.

    Returns:
      :class:`Eigenpairs` (``restarts`` holds the total number of iterations).

    Raises:
      ValueError: ``k`` out of range.

    Example:
      >>> import jax.numpy as jnp
      >>> import chainrule as cr
      >>> f = lambda w: 0.5 * jnp.sum(jnp.array([1.0, 2.0, 8.0]) * w ** 2)
      >>> res = cr.curvature.power_iteration(cr.curvature.hessian(f, jnp.zeros(3)))
      >>> round(float(res.eigenvalues[0]), 4)
      8.0
    """
    n = op.size
    _check_k(k, n)
    tol = _default_tol(op.dtype) if tol is None else float(tol)
    key = jax.random.PRNGKey(0) if key is None else key
    dtype = op.dtype
    apply = op.apply_flat

    def run(state, keys):
        def one(i, carry):
            Y, vals, res, iters_total, scale = carry
            mask = (jnp.arange(k) < i).astype(dtype)

            def deflated(v):
                w = apply(state, v)
                return w - Y.T @ (mask * vals * (Y @ v))

            v = jax.random.normal(keys[i], (n,), dtype)
            v = v / jnp.linalg.norm(v)
            w = deflated(v)

            def cond(c):
                v, w, it, r = c
                th = jnp.vdot(v, w)
                ref = jnp.where(i == 0, jnp.abs(th), scale)
                return (it < max_iters) & (r > tol * ref)

            def body(c):
                v, w, it, _ = c
                v2 = w / jnp.linalg.norm(w)
                w2 = deflated(v2)
                th = jnp.vdot(v2, w2)
                return v2, w2, it + 1, jnp.linalg.norm(w2 - th * v2)

            r0 = jnp.linalg.norm(w - jnp.vdot(v, w) * v)
            v, w, it, r = jax.lax.while_loop(cond, body, (v, w, jnp.int32(1), r0))
            th = jnp.vdot(v, w)
            scale = jnp.where(i == 0, jnp.abs(th), scale)
            return (
                Y.at[i].set(v),
                vals.at[i].set(th),
                res.at[i].set(r),
                iters_total + it,
                scale,
            )

        init = (
            jnp.zeros((k, n), dtype),
            jnp.zeros((k,), dtype),
            jnp.zeros((k,), dtype),
            jnp.int32(0),
            jnp.zeros((), dtype),
        )
        Y, vals, res, iters, scale = jax.lax.fori_loop(0, k, one, init)
        return Y, vals, res, iters, scale

    Y, vals, res, iters, scale = jax.jit(run)(op.state, jax.random.split(key, k))
    iters = int(iters)
    return Eigenpairs(
        eigenvalues=vals,
        eigenvectors=jax.vmap(op.unravel)(Y),
        residuals=res,
        converged=bool(jnp.all(res <= tol * scale)),
        matvecs=iters,
        data_passes=iters,
        restarts=iters,
    )
