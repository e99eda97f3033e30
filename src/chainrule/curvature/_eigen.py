"""Extreme eigenpairs: thick-restart Lanczos with full reorthogonalization; power iteration."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from chainrule import _tree, sharding
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
    basis. The steps run in one jitted ``fori_loop`` (compiled once per operator and basis
    size, whatever the number of steps or restarts); the tiny ``m x m`` projected eigenproblem
    and the restart decision are on the host, between cycles.

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
    m = min(n, max(20, 2 * k + 10)) if num_vectors is None else min(int(num_vectors), n)
    if m < k + 1 and m != n:
        raise ValueError(f"num_vectors={m}: expected at least k + 1 = {k + 1} (or n = {n}).")
    p = min(k + (m - k) // 2, m - 1) if m > k else k
    key = jax.random.PRNGKey(0) if key is None else key
    dtype = op.dtype
    R = jax.random.normal(key, (n,), dtype)
    x0 = R if v0 is None else op.ravel(v0)
    expand = op.program(
        f"lanczos-expand/{m}", lambda: jax.jit(_expand_program(op._apply, n, m, dtype))
    )
    V = jnp.zeros((m + 1, n), dtype).at[0].set(x0 / jnp.linalg.norm(x0))
    basis = sharding.flat_sharding(op.like, leading=1)
    if basis is not None:  # sharded parameters: the basis is split along them, never gathered
        V = jax.device_put(V, basis)
    T = jnp.zeros((m + 1, m + 1), dtype)
    start, matvecs, restarts = 0, 0, 0
    can_restart = m < n and p < m
    while True:
        V, T, b_last = expand(op.state, V, T, R, start)
        matvecs += m - start
        # The m x m projected problem is solved on the host in float64 (it is tiny); the basis
        # stays on the device and only T and beta cross.
        Tm = np.asarray(T[:m, :m], np.float64)
        theta, S = np.linalg.eigh(0.5 * (Tm + Tm.T))
        order = np.asarray(_order(jnp.asarray(theta), which))
        res = np.abs(float(b_last) * S[m - 1])
        wanted = order[:k]
        ok = bool(np.all(res[wanted] <= tol * np.max(np.abs(theta))))
        if ok or not can_restart or restarts >= max_restarts:
            break
        keep = order[:p]
        Vk = jnp.asarray(S[:, keep].T, dtype) @ V[:m]
        V = jnp.zeros_like(V).at[:p].set(Vk).at[p].set(V[m])
        T = jnp.zeros_like(T).at[jnp.arange(p), jnp.arange(p)].set(jnp.asarray(theta[keep], dtype))
        start, restarts = p, restarts + 1
    Y = jnp.asarray(S[:, wanted].T, dtype) @ V[:m]
    return Eigenpairs(
        eigenvalues=jnp.asarray(theta[wanted], dtype),
        eigenvectors=jax.vmap(op.unravel)(Y),
        residuals=jnp.asarray(res[wanted], dtype),
        converged=ok,
        matvecs=matvecs,
        data_passes=matvecs,
        restarts=restarts,
    )


def _expand_program(apply, n, m, dtype):
    """``(state, V, T, R, start) -> (V, T, beta)``: Lanczos steps ``start .. m - 1`` with full
    reorthogonalization, in one ``fori_loop`` (compiled once, whatever the number of steps or
    restarts). No random numbers are drawn inside the loop (threefry in a loop body
    multiplies XLA's compile time on the CPU): a breakdown continues along a roll of the
    Gaussian vector ``R`` orthogonalized against the basis."""
    eps = float(jnp.finfo(dtype).eps)

    def orth(V, w):
        h = V @ w
        w = w - V.T @ h
        h2 = V @ w
        return w - V.T @ h2, h + h2

    def program(state, V, T, R, start):
        def step(j, carry):
            V, T, _, scale = carry
            w = apply(state, V[j])
            scale = jnp.maximum(scale, jnp.linalg.norm(w))
            w, h = orth(V, w)
            beta = jnp.linalg.norm(w)
            broke = beta <= 10 * n * eps * scale
            r, _ = orth(V, jnp.roll(R, j + 1))
            w = jnp.where(broke, r / jnp.linalg.norm(r), w / jnp.where(broke, 1.0, beta))
            beta = jnp.where(broke, 0.0, beta)
            T = T.at[:, j].set(h).at[j, :].set(h)
            T = T.at[j, j + 1].set(beta).at[j + 1, j].set(beta)
            return V.at[j + 1].set(w), T, beta, scale

        zero = jnp.zeros((), dtype)
        V, T, beta, _ = jax.lax.fori_loop(start, m, step, (V, T, zero, zero))
        return V, T, beta

    return program


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
    apply = op._apply

    def run(state, key):
        starts = jax.random.normal(key, (k, n), dtype)  # drawn outside the loops (compile time)

        def one(i, carry):
            Y, vals, res, iters_total, scale = carry
            mask = (jnp.arange(k) < i).astype(dtype)

            def deflated(v):
                w = apply(state, v)
                return w - Y.T @ (mask * vals * (Y @ v))

            v = starts[i] / jnp.linalg.norm(starts[i])
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

    prog = op.program(f"power/{k}/{tol}/{max_iters}", lambda: jax.jit(run))
    Y, vals, res, iters, scale = prog(op.state, key)
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
