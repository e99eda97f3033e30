"""Gradient health of layered models: per-layer statistics, Jacobian spectra, a verdict.

A *layered model* here is ``apply_fn(params, x) -> (output, activations)`` where ``params`` is a
list (or tuple) of per-layer pytrees and ``activations`` a list of per-layer outputs, e.g.
``lambda p, x: chainrule.nets.mlp_apply(p, x, "relu", return_activations=True)``.

:func:`layer_stats` runs one forward and one reverse pass and returns, per layer, the mean and
variance of the activations and the norm of the gradient of the layer's parameters, plus the
global gradient norm and its value after ``optax.clip_by_global_norm``.

:func:`verdict` reads those statistics with stated thresholds (``factor``, default 100, i.e.
two orders of magnitude):

1. **non-finite**: any NaN/inf activation variance or gradient norm -> ``"exploding"``, at the
   first such layer (forward order for activations, from the output for gradients).
2. **gradients** (backpropagation runs from the last layer to the first): with
   ``r_l = grad_norm[l] / grad_norm[L-1]``, walk ``l = L-2, ..., 0``; the first layer with
   ``r_l < 1/factor`` is where gradients *vanish*, ``r_l > factor`` where they *explode*.
3. **activations** (the forward pass runs from the first layer): with
   ``a_l = act_var[l] / act_var[0]``, the first ``l`` with ``a_l < 1/factor`` (*vanishing*) or
   ``a_l > factor`` (*exploding*).
4. otherwise ``"healthy"``.

A He-initialized ReLU MLP of width 64-128 and depth 50 stays within a factor ~10 of its last
layer's gradient norm (finite-width fluctuations); a sigmoid net with N(0, 1) weights loses 8
orders of magnitude over the same depth.

:func:`jacobian_spectrum` gives the singular values of the input-output Jacobian ``J`` at one
input: exactly (dense ``J`` by ``cr.jacobian`` and an SVD) for small models, or from JVP/VJP
matrix-vector products (randomized SVD on ``cr.linearize`` and ``cr.vjp``: never forms ``J``)
for larger ones. Dynamical isometry (Saxe et al. 2014; Pennington et al. 2017) means all singular
values near 1: the mean of ``s^2`` near 1 and its spread ``std(s^2) / mean(s^2)`` small.

:func:`layer_sharpness` and :func:`layer_trace` give the curvature of each layer's own block of
the loss's Hessian (the layer's parameters moved, the others fixed): its top eigenvalue by
Lanczos and its trace by Hutchinson, through ``chainrule.curvature`` restricted with ``wrt``.

Plot helpers import matplotlib inside the call and build a ``matplotlib.figure.Figure`` without
pyplot (no global backend state, PNG via the Agg canvas).
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from chainrule import _jit
from chainrule._tree import check_choice, check_differentiable, check_scalar_output, tree_norm

__all__ = [
    "DEFAULT_FACTOR",
    "SPECTRUM_METHODS",
    "LayerStats",
    "Verdict",
    "Spectrum",
    "layer_stats",
    "verdict",
    "diagnose",
    "jacobian_spectrum",
    "plot_grad_norms",
    "plot_activation_variance",
    "plot_singular_values",
    "layer_sharpness",
    "layer_trace",
]

#: Default verdict threshold: a drift of more than this factor (either way) is unhealthy.
DEFAULT_FACTOR = 100.0
SPECTRUM_METHODS = ("auto", "exact", "matvec")
#: ``"auto"`` forms the dense Jacobian up to this many entries (8 MB in float64).
_DENSE_MAX_ENTRIES = 1 << 20


@dataclasses.dataclass(frozen=True)
class LayerStats:
    """Per-layer statistics of one forward and backward pass (arrays of length L).

    Attributes:
      act_mean, act_var: mean and variance of each layer's activations (over all entries).
      grad_norm: Euclidean norm of the gradient of each layer's parameters.
      grad_ratio: ``grad_norm[l] / grad_norm[l + 1]`` (length L-1): the factor by which the
        gradient norm changes as backpropagation moves one layer towards the input (< 1 shrinks).
      loss: the loss value.
      global_norm: the global norm of all gradients (``optax.tree.norm``/``global_norm``).
      clipped_norm: the global norm after ``optax.clip_by_global_norm(max_norm)``.
      max_norm: the clipping threshold used.
    """

    act_mean: np.ndarray
    act_var: np.ndarray
    grad_norm: np.ndarray
    grad_ratio: np.ndarray
    loss: float
    global_norm: float
    clipped_norm: float
    max_norm: float

    @property
    def num_layers(self) -> int:
        return len(self.grad_norm)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (lists of floats)."""
        return {
            k: (v.tolist() if isinstance(v, np.ndarray) else v)
            for k, v in dataclasses.asdict(self).items()
        }

    def summary(self) -> str:
        """A per-layer table plus the global norms."""
        lines = [f"{'layer':>5} {'act mean':>11} {'act var':>11} {'grad norm':>11} {'ratio':>9}"]
        for i in range(self.num_layers):
            ratio = f"{self.grad_ratio[i]:9.3g}" if i < self.num_layers - 1 else " " * 9
            lines.append(
                f"{i:5d} {self.act_mean[i]:11.4g} {self.act_var[i]:11.4g} "
                f"{self.grad_norm[i]:11.4g} {ratio}"
            )
        lines.append(
            f"loss {self.loss:.6g}; global grad norm {self.global_norm:.6g}, clipped at "
            f"{self.max_norm:g}: {self.clipped_norm:.6g}"
        )
        return "\n".join(lines)


def _default_loss(out: jax.Array) -> jax.Array:
    """Half the mean (over the batch) squared norm of the output."""
    out = jnp.asarray(out)
    if out.ndim == 0:
        return 0.5 * out**2
    return 0.5 * jnp.mean(jnp.sum(jnp.square(out), axis=-1))


def _check_layered(params: Any) -> None:
    if not isinstance(params, (list, tuple)) or not params:
        raise TypeError(
            f"params must be a non-empty list (or tuple) of per-layer pytrees, found "
            f"{type(params).__name__}. For a model whose layers sit inside a dict, pass "
            f"params['layers'] and close over the rest in apply_fn."
        )


def layer_stats(
    apply_fn: Callable[[Any, Any], tuple[Any, Sequence[jax.Array]]],
    params: Sequence[Any],
    x: Any,
    loss_fn: Callable[[Any], jax.Array] | None = None,
    *,
    max_norm: float = 1.0,
) -> LayerStats:
    """Activation and gradient statistics per layer of a layered model.

    Cost: one forward pass storing residuals and one reverse pass, compiled together with the
    reductions into one program (cached per ``apply_fn``/``loss_fn`` and shapes).

    Args:
      apply_fn: ``apply_fn(params, x) -> (output, [activation of each layer])``.
      params: a list of L per-layer parameter pytrees.
      x: the input batch.
      loss_fn: ``loss_fn(output) -> scalar``; default ``0.5 * mean_batch(|output|^2)``.
        Close over targets for a supervised loss.
      max_norm: threshold for ``optax.clip_by_global_norm``.

    Returns:
      A :class:`LayerStats` (activation statistics are indexed like the activations list,
      gradient statistics like ``params``).

    Raises:
      TypeError: ``params`` is not a non-empty list/tuple, an integer parameter leaf (naming
        its path), ``apply_fn`` does not return ``(output, activations)``, or a non-scalar loss.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from chainrule import nets
      >>> p = nets.mlp_init(jax.random.key(0), [4, 8, 8, 2])
      >>> apply = lambda p, x: nets.mlp_apply(p, x, "relu", return_activations=True)
      >>> s = layer_stats(apply, p, jnp.ones((5, 4)))
      >>> s.grad_norm.shape, s.grad_ratio.shape
      ((3,), (2,))
    """
    _check_layered(params)
    check_differentiable(params, "params")
    loss_fn = _default_loss if loss_fn is None else loss_fn
    max_norm = float(max_norm)
    # The functions as they are now: traced at every call, compiled reuse keyed on the traced
    # program (chainrule._jit), never on the function objects.
    run = functools.partial(_stats_impl, apply_fn, loss_fn)
    loss, act_mean, act_var, grad_norm, global_norm, clipped_norm = jax.device_get(
        _jit.call(run, params, x, jnp.asarray(max_norm))  # weakly typed, as the float
    )
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = grad_norm[:-1] / grad_norm[1:]
    return LayerStats(
        act_mean=np.asarray(act_mean),
        act_var=np.asarray(act_var),
        grad_norm=np.asarray(grad_norm),
        grad_ratio=np.asarray(ratio),
        loss=float(loss),
        global_norm=float(global_norm),
        clipped_norm=float(clipped_norm),
        max_norm=max_norm,
    )


def _stats_impl(apply_fn, loss_fn, params, x, max_norm):
    """Everything in one compiled program: the loss, its gradient and all the reductions."""
    import optax

    def objective(p, x):
        res = apply_fn(p, x)
        if not (isinstance(res, tuple) and len(res) == 2):
            raise TypeError(
                "apply_fn must return (output, activations), e.g. "
                "nets.mlp_apply(..., return_activations=True); it returned "
                f"{type(res).__name__}."
            )
        out, acts = res
        loss = loss_fn(out)
        check_scalar_output(loss, "layer_stats (loss_fn)", loss_fn)
        return loss, list(acts)

    (loss, acts), grads = jax.value_and_grad(objective, has_aux=True)(params, x)
    # optax.tree.norm replaced optax.global_norm (deprecated) in recent optax; same value.
    norm = getattr(getattr(optax, "tree", None), "norm", None) or optax.global_norm
    clip = optax.clip_by_global_norm(max_norm)
    clipped, _ = clip.update(grads, clip.init(grads))
    return (
        loss,
        jnp.stack([jnp.mean(a) for a in acts]),
        jnp.stack([jnp.var(a) for a in acts]),
        jnp.stack([tree_norm(g) for g in grads]),
        norm(grads),
        norm(clipped),
    )


@dataclasses.dataclass(frozen=True)
class Verdict:
    """The health of a model by :func:`verdict`'s rules.

    Attributes:
      status: ``"healthy"``, ``"vanishing"`` or ``"exploding"``.
      signal: what showed it: ``"gradient"``, ``"activation"``, ``"nonfinite"``; None if healthy.
      layer: the layer where it starts (index into the per-layer arrays), None if healthy.
      reason: one sentence with the numbers.
    """

    status: str
    signal: str | None
    layer: int | None
    reason: str

    @property
    def healthy(self) -> bool:
        return self.status == "healthy"

    def __str__(self) -> str:
        return f"{self.status}: {self.reason}"


def verdict(stats: LayerStats, factor: float = DEFAULT_FACTOR) -> Verdict:
    """Healthy, vanishing or exploding, with the layer where it starts.

    Rules (in this order; see the module docstring): non-finite values -> exploding; the
    gradient norm of layer ``l`` relative to the last layer outside ``[1/factor, factor]``
    (scanning from the output) -> vanishing/exploding gradients; the activation variance of
    layer ``l`` relative to the first layer outside the band (scanning from the input) ->
    vanishing/exploding activations; otherwise healthy.

    Args:
      stats: from :func:`layer_stats`.
      factor: the allowed drift, > 1 (default 100: two orders of magnitude).

    Returns:
      A :class:`Verdict`.

    Raises:
      ValueError: ``factor`` not greater than 1.

    Example:
      >>> import numpy as np
      >>> s = LayerStats(np.ones(3), np.ones(3), np.array([1e-5, 1e-2, 1.0]),
      ...                np.array([1e-3, 1e-2]), 1.0, 1.0, 1.0, 1.0)
      >>> v = verdict(s)
      >>> v.status, v.signal, v.layer
      ('vanishing', 'gradient', 0)
    """
    if not factor > 1:
        raise ValueError(f"factor must be > 1 (the allowed drift either way), found {factor!r}.")
    g, a = stats.grad_norm, stats.act_var
    bad_a = np.flatnonzero(~np.isfinite(a))
    if bad_a.size:
        i = int(bad_a[0])
        return Verdict("exploding", "nonfinite", i, f"activation variance of layer {i} is {a[i]}")
    bad_g = np.flatnonzero(~np.isfinite(g))
    if bad_g.size:
        i = int(bad_g[-1])
        return Verdict("exploding", "nonfinite", i, f"gradient norm of layer {i} is {g[i]}")
    last = len(g) - 1
    if g[last] == 0:
        return Verdict(
            "vanishing", "gradient", last, f"the last layer's gradient norm is 0 ({len(g)} layers)"
        )
    for i in range(last - 1, -1, -1):
        r = g[i] / g[last]
        if r < 1 / factor or r > factor:
            status = "vanishing" if r < 1 else "exploding"
            return Verdict(
                status,
                "gradient",
                i,
                f"gradient norm of layer {i} is {r:.3g}x that of the last layer {last} "
                f"(allowed: within a factor {factor:g}); layer {0}/{last} ratio "
                f"{g[0] / g[last]:.3g}",
            )
    if a[0] == 0:
        return Verdict("vanishing", "activation", 0, "the first layer's activations are constant")
    for i in range(1, len(a)):
        r = a[i] / a[0]
        if r < 1 / factor or r > factor:
            status = "vanishing" if r < 1 else "exploding"
            return Verdict(
                status,
                "activation",
                i,
                f"activation variance of layer {i} is {r:.3g}x that of layer 0 "
                f"(allowed: within a factor {factor:g})",
            )
    return Verdict(
        "healthy",
        None,
        None,
        f"gradient norms within {np.min(g / g[last]):.3g}..{np.max(g / g[last]):.3g}x of the "
        f"last layer and activation variances within {np.min(a / a[0]):.3g}.."
        f"{np.max(a / a[0]):.3g}x of the first (allowed factor {factor:g})",
    )


def diagnose(
    apply_fn: Callable,
    params: Sequence[Any],
    x: Any,
    loss_fn: Callable | None = None,
    *,
    factor: float = DEFAULT_FACTOR,
    max_norm: float = 1.0,
) -> tuple[LayerStats, Verdict]:
    """:func:`layer_stats` followed by :func:`verdict`.

    Args:
      apply_fn, params, x, loss_fn, max_norm: as in :func:`layer_stats`.
      factor: as in :func:`verdict`.

    Returns:
      ``(stats, verdict)``.

    Raises:
      As :func:`layer_stats` and :func:`verdict`.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from chainrule import nets
      >>> p = nets.mlp_init(jax.random.key(0), [8] * 4, init=jax.nn.initializers.he_normal())
      >>> apply = lambda p, x: nets.mlp_apply(p, x, "relu", return_activations=True)
      >>> diagnose(apply, p, jnp.ones((4, 8)))[1].status
      'healthy'
    """
    stats = layer_stats(apply_fn, params, x, loss_fn, max_norm=max_norm)
    return stats, verdict(stats, factor)


# --------------------------------------------------------------------------------------------
# Jacobian spectrum
# --------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Spectrum:
    """Singular values of an input-output Jacobian (descending).

    Attributes:
      singular_values: the values found: all ``min(n, m)`` for ``"exact"``, the top ``k`` for
        ``"matvec"``.
      method: ``"exact"`` or ``"matvec"``.
      shape: ``(m, n)``, the Jacobian's shape (outputs x inputs).
    """

    singular_values: np.ndarray
    method: str
    shape: tuple[int, int]

    @property
    def mean_sq(self) -> float:
        """Mean squared singular value (``|J|_F^2 / min(n, m)`` when all are present)."""
        return float(np.mean(self.singular_values**2))

    @property
    def spread(self) -> float:
        """``std(s^2) / mean(s^2)``: 0 for an isometry up to scale."""
        s2 = self.singular_values**2
        m = np.mean(s2)
        return float(np.std(s2) / m) if m > 0 else float("inf")

    @property
    def condition(self) -> float:
        """``s_max / s_min`` over the values found."""
        s = self.singular_values
        return float(s[0] / s[-1]) if s[-1] > 0 else float("inf")

    def near_isometry(self, tol: float = 0.5) -> bool:
        """Whether ``|mean_sq - 1| <= tol`` and ``spread <= tol``."""
        return abs(self.mean_sq - 1) <= tol and self.spread <= tol

    def summary(self) -> str:
        s = self.singular_values
        return (
            f"Jacobian {self.shape[0]}x{self.shape[1]} ({self.method}, {s.size} singular values): "
            f"max {s[0]:.4g}, min {s[-1]:.4g}, mean s^2 {self.mean_sq:.4g}, spread "
            f"{self.spread:.4g}, near isometry: {self.near_isometry()}"
        )


@functools.partial(jax.jit, static_argnums=(2, 3, 4, 5))
def _randomized_svd(
    f_jvp: Any, pullback: Any, k: int, oversample: int, power: int, shapes: tuple, key: jax.Array
) -> jax.Array:
    """Top-k singular values from products with J (``f_jvp``) and J^T (``pullback``).

    Halko, Martinsson & Tropp (2011), algorithm 4.4: a Gaussian range finder with
    re-orthonormalized power iterations, then the SVD of the small ``B = Q^T J``. Exact up to
    rounding when ``l = k + oversample`` reaches the rank of J. Cost: ``(power + 1)`` blocks of
    ``l`` JVPs and as many blocks of ``l`` VJPs, each block vmapped. Compiled once per shapes
    (the linear maps are pytrees, so they are ordinary jit arguments).
    """
    (x_shape, x_dtype), (y_shape, y_dtype) = shapes
    n, m = int(np.prod(x_shape)), int(np.prod(y_shape))
    l_ = min(k + oversample, n, m)
    # QR and SVD in at least float32: LAPACK has no bfloat16/float16 kernels.
    cdtype = jnp.promote_types(jnp.result_type(x_dtype, y_dtype), jnp.float32)

    def matvec(v):
        return jnp.ravel(f_jvp(v.reshape(x_shape).astype(x_dtype))).astype(cdtype)

    def rmatvec(u):
        return jnp.ravel(pullback(u.reshape(y_shape).astype(y_dtype))[0]).astype(cdtype)

    mv = jax.vmap(matvec, in_axes=1, out_axes=1)  # (n, l) -> (m, l)
    rmv = jax.vmap(rmatvec, in_axes=1, out_axes=1)  # (m, l) -> (n, l)
    omega = jax.random.normal(key, (n, l_), cdtype)
    q, _ = jnp.linalg.qr(mv(omega))
    for _ in range(power):
        z, _ = jnp.linalg.qr(rmv(q))
        q, _ = jnp.linalg.qr(mv(z))
    bt = rmv(q)  # J^T Q, (n, l): B = Q^T J has the same singular values
    return jnp.linalg.svd(bt, compute_uv=False)[:k]


def jacobian_spectrum(
    f: Callable[[jax.Array], jax.Array],
    x: jax.Array,
    method: str = "auto",
    k: int | None = None,
    *,
    key: jax.Array | None = None,
    oversample: int = 10,
    power_iters: int = 2,
) -> Spectrum:
    """Singular values of the Jacobian of ``f`` at ``x`` (one input, e.g. one example).

    * ``"exact"``: the dense ``J`` by ``cr.jacobian`` (min(N, M) passes), then an SVD.
    * ``"matvec"``: randomized SVD from ``J v`` (``cr.linearize``: one linearization, then one
      linear pass per vector) and ``J^T u`` (``cr.vjp``: one forward pass storing residuals, one
      reverse pass per vector); ``(2 power_iters + 2) (k + oversample)`` products in all. ``J``
      is never formed. Exact up to rounding when ``k + oversample >= rank J``; otherwise the top
      ``k`` values, accurate to roughly ``(s_{k+1}/s_k)^(2 power_iters + 1)``.
    * ``"auto"``: ``"exact"`` while ``J`` has at most 2^20 entries, else ``"matvec"``.

    Args:
      f: a function of one array returning an array.
      x: the point (floating).
      method: ``"auto"``, ``"exact"`` or ``"matvec"``.
      k: singular values to compute for ``"matvec"``; default ``min(N, M, 64)``.
      key: PRNG key for the random probes; default ``jax.random.key(0)``.
      oversample: extra probes beyond ``k``.
      power_iters: power iterations (sharpen a slowly decaying spectrum).

    Returns:
      A :class:`Spectrum`.

    Raises:
      ValueError: an unknown method, or ``k`` outside ``1..min(N, M)``.
      TypeError: an integer ``x``.

    Example:
      >>> import jax.numpy as jnp
      >>> s = jacobian_spectrum(lambda x: 2.0 * x, jnp.ones(3))
      >>> s.singular_values.tolist(), s.mean_sq
      ([2.0, 2.0, 2.0], 4.0)
    """
    from chainrule.ad import jacobian, linearize, vjp

    check_choice(method, SPECTRUM_METHODS, "spectrum method")
    x = jnp.asarray(x)
    check_differentiable(x, "x", allow_complex=False)
    out = jax.eval_shape(f, x)
    n, m = int(x.size), int(np.prod(out.shape))
    r = min(n, m)
    if k is not None and not (
        isinstance(k, (int, np.integer)) and not isinstance(k, bool) and 1 <= k <= r
    ):
        raise ValueError(f"k must be an int in 1..min(N, M) = 1..{r}, found {k!r}.")
    if method == "auto":
        method = "exact" if n * m <= _DENSE_MAX_ENTRIES else "matvec"
    if method == "exact":
        jac = jnp.reshape(jacobian(f)(x), (m, n))
        # SVD in at least float32: LAPACK has no bfloat16/float16 kernels.
        jac = jac.astype(jnp.promote_types(jac.dtype, jnp.float32))
        s = np.asarray(jnp.linalg.svd(jac, compute_uv=False))
        return Spectrum(s, "exact", (m, n))
    k = min(r, 64) if k is None else int(k)
    y, f_jvp = linearize(f, x)
    _, pullback = vjp(f, x)
    key = jax.random.key(0) if key is None else key
    shapes = ((x.shape, x.dtype), (y.shape, y.dtype))
    s = np.asarray(_randomized_svd(f_jvp, pullback, k, oversample, power_iters, shapes, key))
    return Spectrum(s, "matvec", (m, n))


# --------------------------------------------------------------------------------------------
# Plots (matplotlib imported lazily; no pyplot)
# --------------------------------------------------------------------------------------------


def _figure(figsize=(6.0, 3.5)):
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize, layout="constrained")
    return fig, fig.add_subplot()


def _finish(fig, path: str | Path | None):
    if path is not None:
        fig.savefig(Path(path), dpi=120)  # Figure.savefig uses the Agg canvas for PNG
    return fig


def _as_named(stats: LayerStats | Mapping[str, LayerStats]) -> Mapping[str, LayerStats]:
    return stats if isinstance(stats, Mapping) else {"": stats}


def plot_grad_norms(
    stats: LayerStats | Mapping[str, LayerStats], path: str | Path | None = None
) -> Any:
    """Per-layer gradient norms on a log scale (one line per model for a dict of stats).

    Args:
      stats: one :class:`LayerStats` or ``{label: LayerStats}``.
      path: also save a PNG here.

    Returns:
      The ``matplotlib.figure.Figure``.
    """
    fig, ax = _figure()
    for label, s in _as_named(stats).items():
        ax.semilogy(np.arange(s.num_layers), s.grad_norm, marker=".", label=label or None)
    ax.set_xlabel("layer")
    ax.set_ylabel("gradient norm of the layer's parameters")
    if isinstance(stats, Mapping):
        ax.legend()
    return _finish(fig, path)


def plot_activation_variance(
    stats: LayerStats | Mapping[str, LayerStats], path: str | Path | None = None
) -> Any:
    """Activation variance by depth on a log scale.

    Args:
      stats: one :class:`LayerStats` or ``{label: LayerStats}``.
      path: also save a PNG here.

    Returns:
      The ``matplotlib.figure.Figure``.
    """
    fig, ax = _figure()
    for label, s in _as_named(stats).items():
        ax.semilogy(np.arange(len(s.act_var)), s.act_var, marker=".", label=label or None)
    ax.set_xlabel("layer")
    ax.set_ylabel("activation variance")
    if isinstance(stats, Mapping):
        ax.legend()
    return _finish(fig, path)


def plot_singular_values(
    spectra: Spectrum | Mapping[str, Spectrum], path: str | Path | None = None, bins: int = 30
) -> Any:
    """Histogram of the Jacobian's singular values (overlaid for a dict of spectra).

    Args:
      spectra: one :class:`Spectrum` or ``{label: Spectrum}``.
      path: also save a PNG here.
      bins: histogram bins.

    Returns:
      The ``matplotlib.figure.Figure``.
    """
    named = spectra if isinstance(spectra, Mapping) else {"": spectra}
    fig, ax = _figure()
    for label, s in named.items():
        ax.hist(s.singular_values, bins=bins, alpha=0.6, label=label or None)
    ax.axvline(1.0, color="k", lw=0.8, ls="--")
    ax.set_xlabel("singular value of the input-output Jacobian")
    ax.set_ylabel("count")
    if isinstance(spectra, Mapping):
        ax.legend()
    return _finish(fig, path)


# ----------------------------------------------------------------------------- layer curvature


def _layer_prefixes(params: Any) -> list[tuple[str, Any]]:
    """``("[0]", layer)``, ... for a list/tuple of layers; ``("['name']", layer)`` for a dict."""
    if isinstance(params, Mapping):
        return [(jax.tree_util.keystr((jax.tree_util.DictKey(k),)), v) for k, v in params.items()]
    if isinstance(params, (list, tuple)):
        return [(f"[{i}]", v) for i, v in enumerate(params)]
    raise TypeError(
        f"layer curvature needs params as a list/tuple of per-layer pytrees or a dict of them; "
        f"found {type(params).__name__}."
    )


def _layer_ops(loss: Callable, params: Any, batches: Sequence[Any] | None, mode: str):
    from chainrule import curvature

    for pre, layer in _layer_prefixes(params):
        if not jax.tree_util.tree_leaves(layer):
            continue  # a layer without parameters (e.g. an activation) has no block
        yield "params" + pre, curvature.hessian(loss, params, batches, wrt=pre, mode=mode)


def layer_sharpness(
    loss: Callable,
    params: Any,
    batches: Sequence[Any] | None = None,
    *,
    which: str = "largest",
    tol: float | None = None,
    mode: str = "fwd-over-rev",
) -> dict[str, float]:
    """Each layer's sharpness: the top eigenvalue of its diagonal block of the loss's Hessian.

    Args:
      loss: ``loss(params, batch) -> scalar`` (``loss(params)`` without ``batches``).
      params: a list/tuple of per-layer pytrees, or a dict of them (the top level are layers).
      batches: a list of batches (the full-dataset Hessian, see ``cr.curvature.hessian``).
      which: ``"largest"`` (sharpness), ``"smallest"`` (most negative curvature) or
        ``"largest_magnitude"``.
      tol: Lanczos residual tolerance (``cr.curvature.eigsh``'s default).
      mode: the HVP mode.

    Returns:
      ``{"params[0]": lambda, ...}`` per layer with parameters. Cost: one Lanczos run per
      layer, typically 20-40 HVPs of the whole loss each (an HVP restricted to a layer costs a
      full forward-over-reverse pass).

    Raises:
      TypeError: ``params`` is not a list/tuple/dict of layers; as ``cr.curvature.hessian``.

    Example:
      >>> import jax.numpy as jnp
      >>> import chainrule as cr
      >>> f = lambda p: jnp.sum(p[0]["w"] ** 2) + 3 * jnp.sum(p[1]["w"] ** 2)
      >>> s = cr.diagnostics.layer_sharpness(f, [{"w": jnp.ones(2)}, {"w": jnp.ones(3)}])
      >>> {k: round(v, 4) for k, v in s.items()}
      {'params[0]': 2.0, 'params[1]': 6.0}
    """
    from chainrule import curvature

    return {
        path: float(curvature.eigsh(op, k=1, which=which, tol=tol).eigenvalues[0])
        for path, op in _layer_ops(loss, params, batches, mode)
    }


def layer_trace(
    loss: Callable,
    params: Any,
    batches: Sequence[Any] | None = None,
    *,
    key: jax.Array,
    num_matvecs: int = 100,
    mode: str = "fwd-over-rev",
) -> dict[str, tuple[float, float]]:
    """Each layer's Hessian trace (the trace of its diagonal block), with a standard error.

    Hutchinson's estimator with Rademacher probes (``cr.curvature.trace``); the traces of the
    blocks sum to the trace of the whole Hessian.

    Args:
      loss: ``loss(params, batch) -> scalar`` (``loss(params)`` without ``batches``).
      params: a list/tuple of per-layer pytrees, or a dict of them.
      batches: a list of batches, or None.
      key: PRNG key (folded with the layer index).
      num_matvecs: probes per layer.
      mode: the HVP mode.

    Returns:
      ``{"params[0]": (trace, stderr), ...}``. Cost: ``num_matvecs`` HVPs per layer.

    Raises:
      TypeError: ``params`` is not a list/tuple/dict of layers; as ``cr.curvature.hessian``.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> import chainrule as cr
      >>> f = lambda p: jnp.sum(p["a"] ** 2) + 3 * jnp.sum(p["b"] ** 2)
      >>> t = cr.diagnostics.layer_trace(f, {"a": jnp.ones(2), "b": jnp.ones(3)},
      ...                                key=jax.random.PRNGKey(0), num_matvecs=4)
      >>> {k: float(v[0]) for k, v in t.items()}
      {"params['a']": 4.0, "params['b']": 18.0}
    """
    from chainrule import curvature

    out = {}
    for i, (path, op) in enumerate(_layer_ops(loss, params, batches, mode)):
        est = curvature.trace(op, jax.random.fold_in(key, i), num_matvecs)
        out[path] = (float(est.value), float(est.stderr))
    return out
