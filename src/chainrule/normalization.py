"""Normalizations and residual wiring as pure functions with explicit parameters and state.

Everything here is a plain function of arrays and pytrees: no module objects, no hidden mutation.
A normalization that keeps running statistics (:func:`batch_norm`) takes the state and returns
the new one; learnable scale and offset are an ordinary parameter dict ``{"scale", "bias"}``
(either key may be left out) that you differentiate like any other parameter.

Conventions shared by every function:

* **Stable statistics.** The variance is computed in two passes, ``mean((x - mean(x))**2)``,
  never as ``E[x^2] - E[x]^2``: the one-pass formula loses all significant digits when the mean is
  large against the spread (mean 1e4, spread 1e-2 in float32 gives a variance of pure roundoff;
  see ``tests/test_normalization.py::test_two_pass_is_stable``).
* **Precision.** Reductions and the normalization itself run in at least float32
  (``jnp.promote_types(x.dtype, float32)``: float16/bfloat16 are promoted, float64 is kept); the
  output has the input's dtype.
* **Derivatives.** Layer norm, RMS norm and batch norm carry a closed-form linear tangent rule
  (a ``jax.custom_jvp``), so forward mode, reverse mode (JAX transposes the rule) and higher
  orders all work, and the backward pass reads only ``x``, ``dy`` and per-row statistics.
* **Errors.** Bad axes, parameter shapes or missing state raise ``ValueError``/``TypeError``
  naming the argument (``params['scale']``, ``state['var']``, ``axis``), the expected and the
  found value, and how to fix it. Validation runs while tracing, so it is free under ``jit``.

Residual wiring (:func:`post_norm`, :func:`pre_norm`, :func:`deep_norm`) takes the sublayer and
the norm as one-argument callables; close over their parameters with a ``lambda`` or
``functools.partial``. :func:`deepnorm_constants` (the DeepNet table) is shared with
``chainrule.initializers``.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from chainrule._deepnorm import DeepNormConstants as DeepNormConstants
from chainrule._deepnorm import deepnorm_constants as deepnorm_constants

__all__ = [
    "Standardization",
    "fit_standardization",
    "standardize",
    "unstandardize",
    "batch_norm",
    "batch_norm_init",
    "torch_momentum",
    "layer_norm",
    "layer_norm_init",
    "rms_norm",
    "rms_norm_init",
    "post_norm",
    "pre_norm",
    "deep_norm",
    "deepnorm_constants",
    "DeepNormConstants",
]

Axes = int | Sequence[int]
Params = Mapping[str, jax.Array]
State = Mapping[str, jax.Array]


# ----------------------------------------------------------------------------------------------
# Validation helpers
# ----------------------------------------------------------------------------------------------


def _canon_axes(axes: Axes, ndim: int, name: str, shape: tuple[int, ...]) -> tuple[int, ...]:
    """Sorted, non-negative axes; errors name the argument and the valid range."""
    if isinstance(axes, (int, np.integer)) and not isinstance(axes, bool):
        seq = (int(axes),)
    elif isinstance(axes, Sequence) and not isinstance(axes, str):
        seq = tuple(axes)
        if not all(isinstance(a, (int, np.integer)) and not isinstance(a, bool) for a in seq):
            raise TypeError(f"{name} must be an int or a sequence of ints, found {axes!r}.")
    else:
        raise TypeError(f"{name} must be an int or a sequence of ints, found {axes!r}.")
    out = []
    for a in seq:
        if not -ndim <= a < ndim:
            raise ValueError(
                f"{name}={axes!r} is out of range for an input of rank {ndim} (shape {shape}): "
                f"each axis must lie in [{-ndim}, {ndim - 1}]. Pass an axis that x has."
            )
        out.append(a % ndim)
    if len(set(out)) != len(out):
        raise ValueError(f"{name}={axes!r} names the same axis twice (shape {shape}).")
    return tuple(sorted(out))


def _check_input(x: Any, name: str = "x") -> jax.Array:
    x = jnp.asarray(x)
    if not jnp.issubdtype(x.dtype, jnp.floating):
        raise TypeError(
            f"{name} must have a real floating dtype, found {x.dtype}. Cast it first, e.g. "
            f"{name}.astype(jnp.float32)."
        )
    return x


def _compute_dtype(dtype: Any) -> Any:
    """At least float32: half-precision inputs are reduced in float32, float64 stays float64."""
    return jnp.promote_types(dtype, jnp.float32)


def _check_tree(
    tree: Any,
    name: str,
    allowed: tuple[str, ...],
    required: tuple[str, ...],
    shape: tuple[int, ...],
    what: str,
    fix: str,
) -> dict[str, jax.Array]:
    """Validate a ``{"scale", "bias"}``-like dict: known keys, float leaves of ``shape``."""
    if not isinstance(tree, Mapping):
        raise TypeError(
            f"{name} must be a dict with keys among {allowed}, found {type(tree).__name__}. {fix}"
        )
    unknown = [k for k in tree if k not in allowed]
    if unknown:
        raise ValueError(
            f"{name} has unknown key(s) {unknown}; expected keys among {allowed}. {fix}"
        )
    missing = [k for k in required if k not in tree]
    if missing:
        raise ValueError(f"{name} is missing key(s) {missing} (needs {required}). {fix}")
    out = {}
    for k, v in tree.items():
        if v is None:
            continue
        v = jnp.asarray(v)
        if not jnp.issubdtype(v.dtype, jnp.floating):
            raise TypeError(f"{name}[{k!r}] must be floating, found dtype {v.dtype}.")
        if tuple(v.shape) != tuple(shape):
            raise ValueError(
                f"{name}[{k!r}] has shape {tuple(v.shape)}, expected {tuple(shape)} ({what}). {fix}"
            )
        out[k] = v
    return out


def _expand(v: jax.Array, ndim: int, feature_axes: tuple[int, ...], dtype: Any) -> jax.Array:
    """Reshape a feature-shaped array so that it broadcasts against an array of rank ``ndim``."""
    shape = [1] * ndim
    for a, n in zip(feature_axes, v.shape, strict=True):
        shape[a] = n
    return v.astype(dtype).reshape(shape)


def _groups(groups: Any) -> Any:
    """``axis_index_groups`` as nested tuples (hashable: it is a static argument)."""
    return None if groups is None else tuple(tuple(int(i) for i in g) for g in groups)


def _pmean(v: jax.Array, axis_name: Any, groups: Any) -> jax.Array:
    if axis_name is None:
        return v
    return lax.pmean(v, axis_name, axis_index_groups=groups)


# ----------------------------------------------------------------------------------------------
# The normalization kernel: y = (x - mu) * rsqrt(var + eps), with a closed-form tangent rule.
# ----------------------------------------------------------------------------------------------


@functools.partial(jax.custom_jvp, nondiff_argnums=(1, 2, 3, 4, 5))
def _normalize(x, axes, eps, center, axis_name, groups):
    """Normalize ``x`` (already in the compute dtype) over ``axes``; statistics two-pass.

    Returns ``(y, mean, var)`` with ``mean``/``var`` keeping dims. ``center=False`` is RMS
    normalization (mean fixed at 0). ``axis_name`` averages the statistics across devices.
    """
    return _normalize_impl(x, axes, eps, center, axis_name, groups)


def _centered(x, axes, center, axis_name, groups):
    """Stable statistics: ``(e, e2, c, mean, var)``; ``e`` and ``e2`` are both ``x - m`` and
    the centered input is ``d = e - c``.

    The mean is carried in two parts so that ``d`` is accurate even when the float32 mean
    itself cannot be (a mean of 1e4 is only known to ulp(1e4) ~ 1e-3, a tenth of a spread of
    1e-2):

    * pass 1 averages ``x - k`` with a shift ``k`` taken from the data (the first element along
      the normalized axes; averaged over devices under ``axis_name``). ``x - k`` is exact for
      ``x`` near ``k`` (Sterbenz) and small, so ``a = <x - k>`` carries no cancellation.
      ``m = k + a`` is rounded; ``c = a - (m - k)`` is that rounding error, exactly.
    * pass 2 averages ``(x - m)^2``; then ``var = <(x - m)^2> - c^2`` (the corrected two-pass
      formula of Chan, Golub & LeVeque, 1983; ``c`` is below half an ulp of the mean, so the
      subtraction loses nothing).

    Never ``E[x^2] - E[x]^2``. ``center=False`` (RMS norm): ``e = x``, ``c = 0``,
    ``var = <x^2>``.

    Why two spellings of ``x - m``: every reduction over ``x`` should read ``x`` itself, not a
    full-size ``x - m`` written to memory first. When the last axis is reduced (layer norm),
    XLA:CPU fuses the statistics, the normalization and its backward into one YNNPACK kernel
    per row block with one shared ``e``. When only leading axes are (batch norm), it fuses an
    elementwise producer into a reduction only if nothing else uses it, and CSE merges equal
    expressions: pass 2 reads ``x + (-m)``, and the tangent rule reduces one spelling
    (``e2 = x - (m + 0 c)``, equal to ``x - m``) while its elementwise terms use the other, so
    no ``x - m`` is shared (forward+backward 128 MB of traffic at 4096x1024 float32 instead
    of 176 MB; bench/norm.py).
    """
    if not center:
        ms = _pmean(jnp.mean(x * x, axes, keepdims=True), axis_name, groups)
        zero = jnp.zeros((1,) * x.ndim, x.dtype)
        return x, x, zero, zero, ms
    k = x[tuple(slice(0, 1) if i in axes else slice(None) for i in range(x.ndim))]
    k = _pmean(k, axis_name, groups)
    a = _pmean(jnp.mean(x - k, axes, keepdims=True), axis_name, groups)
    m = k + a
    c = a - (m - k)
    if x.ndim - 1 in axes:
        e = e2 = x - m
        q = jnp.mean(e * e, axes, keepdims=True)
    else:
        e = x - m
        e2 = x - (m + 0.0 * c)  # 0 * c is not folded (it would be NaN for an infinite c)
        q = jnp.mean(jnp.square(x + (-m)), axes, keepdims=True)
    q = _pmean(q, axis_name, groups)
    return e, e2, c, m + c, jnp.maximum(q - c * c, 0.0)


def _scaled(e, e2, c, r):
    # (x - mean) * r as (e - c) * r: one expression where e is shared (the one-kernel layer
    # norm), two products of e2 where it is not (see _centered)
    return (e2 - c) * r if e is e2 else e2 * r - c * r


def _normalize_impl(x, axes, eps, center, axis_name, groups):
    e, e2, c, mean, var = _centered(x, axes, center, axis_name, groups)
    return _scaled(e, e2, c, lax.rsqrt(var + eps)), mean, var


@_normalize.defjvp
def _normalize_jvp(axes, eps, center, axis_name, groups, primals, tangents):
    # With d = x - mu, r = (var + eps)^(-1/2) and <.> the average over the normalized axes (and
    # devices), y = d * r has the tangent
    #     dy = r * dx - r * <dx> - d * (r^3 * <d * dx>)        (layer/batch norm)
    #     dy = r * dx - x * (r^3 * <x * dx>)                   (RMS norm: d = x, no <dx> term)
    # and the statistics have dmu = <dx>, dvar = 2 <d * dx> (the <dx> term cancels: <d> = 0).
    # With d = e - c (see _centered): <d dx> = <e2 dx> - c <dx>, d * s = e * s - c * s.
    # The rule is linear in dx, so JAX transposes it for reverse mode into the closed-form
    # backward dx = r * (g - <g>) - d * (r^3 <d g>): two reductions that read only x and g
    # and one elementwise pass that writes dx. The per-feature factors r, r^3 are applied to
    # the reduced vectors, never to full-size arrays, so XLA fuses each reduction with its
    # producers. An earlier rule written in terms of y made XLA:CPU materialize three
    # full-size intermediates in batch norm's VJP (1.2-1.5x slower than flax).
    (x,) = primals
    (dx,) = tangents
    e, e2, c, mean, var = _centered(x, axes, center, axis_name, groups)
    r = lax.rsqrt(var + eps)
    r3 = r * r * r
    t = _pmean(jnp.mean(e2 * dx, axes, keepdims=True), axis_name, groups)
    if center:
        s1 = _pmean(jnp.mean(dx, axes, keepdims=True), axis_name, groups)
        s2 = t - c * s1
        if e is e2:
            dy = r * dx - r * s1 - (e - c) * (r3 * s2)
        else:
            dy = r * dx - (r * s1 - c * r3 * s2) - e * (r3 * s2)
        dmean = s1
    else:
        s2 = t
        dy = r * dx - e * (r3 * s2)
        dmean = jnp.zeros_like(mean)
    return (_scaled(e, e2, c, r), mean, var), (dy, dmean, 2.0 * s2)


def _affine(y, params, ndim, feature_axes, cdtype):
    if "scale" in params:
        y = y * _expand(params["scale"], ndim, feature_axes, cdtype)
    if "bias" in params:
        y = y + _expand(params["bias"], ndim, feature_axes, cdtype)
    return y


def _feature_shape(x, feature_axes):
    return tuple(x.shape[a] for a in feature_axes)


# ----------------------------------------------------------------------------------------------
# Layer norm and RMS norm
# ----------------------------------------------------------------------------------------------

_PARAM_KEYS = ("scale", "bias")


def _layerlike(x, params, axis, feature_axis, eps, axis_name, axis_index_groups, center, fname):
    x = _check_input(x)
    axes = _canon_axes(axis, x.ndim, "axis", x.shape)
    fax = (
        axes if feature_axis is None else _canon_axes(feature_axis, x.ndim, "feature_axis", x.shape)
    )
    cdtype = _compute_dtype(x.dtype)
    if params is not None:
        params = _check_tree(
            params,
            "params",
            _PARAM_KEYS,
            (),
            _feature_shape(x, fax),
            f"x.shape along feature axes {fax}",
            f"Build matching parameters with {fname}_init({_feature_shape(x, fax)}).",
        )
    y, _, _ = _normalize(
        x.astype(cdtype), axes, float(eps), center, axis_name, _groups(axis_index_groups)
    )
    if params:
        y = _affine(y, params, x.ndim, fax, cdtype)
    return y.astype(x.dtype)


def layer_norm(
    x: jax.Array,
    params: Params | None = None,
    *,
    axis: Axes = -1,
    eps: float = 1e-5,
    feature_axis: Axes | None = None,
    axis_name: Any = None,
    axis_index_groups: Any = None,
) -> jax.Array:
    """Layer normalization: ``(x - mean) / sqrt(var + eps) * scale + bias`` over ``axis``.

    The mean and the (biased) variance are taken over ``axis`` in two passes, in at least
    float32. This equals ``flax.linen.LayerNorm(epsilon=eps, reduction_axes=axis,
    feature_axes=feature_axis, use_fast_variance=False)`` up to roundoff.

    Args:
      x: input array (floating).
      params: ``None`` (no affine part) or a dict with optional ``"scale"`` and ``"bias"``,
        each of the shape of ``x`` along ``feature_axis`` (see :func:`layer_norm_init`).
      axis: the axis or axes to normalize over (default: the last).
      eps: added to the variance before the square root.
      feature_axis: the axes the scale and bias run along; defaults to ``axis``.
      axis_name: a named (vmap/shard_map/pmap) axis to average the statistics over, for inputs
        whose normalized axes are split across devices.
      axis_index_groups: groups of indices within ``axis_name`` (see ``jax.lax.pmean``).

    Returns:
      An array of ``x``'s shape and dtype.

    Raises:
      ValueError: an axis out of range, or ``params`` with unknown keys or wrong shapes.
      TypeError: a non-floating ``x`` or parameter.

    Cost: one pass over ``x`` for the mean, one for the variance and normalization; the
    backward (VJP) reads ``x`` and ``dy`` once for two averages and writes ``dx``.

    Example:
      >>> import jax.numpy as jnp
      >>> y = layer_norm(jnp.array([[1.0, 2.0, 3.0]]))
      >>> [round(float(v), 3) for v in y[0]]
      [-1.225, 0.0, 1.225]
    """
    return _layerlike(
        x, params, axis, feature_axis, eps, axis_name, axis_index_groups, True, "layer_norm"
    )


def rms_norm(
    x: jax.Array,
    params: Params | None = None,
    *,
    axis: Axes = -1,
    eps: float = 1e-6,
    feature_axis: Axes | None = None,
    axis_name: Any = None,
    axis_index_groups: Any = None,
) -> jax.Array:
    """RMS normalization: ``x / sqrt(mean(x**2) + eps) * scale (+ bias)`` over ``axis``.

    No re-centering. Equals ``flax.linen.RMSNorm(epsilon=eps, reduction_axes=axis,
    feature_axes=feature_axis)`` up to roundoff. The default ``eps=1e-6`` is flax's (and T5's).

    Args:
      x: input array (floating).
      params: ``None`` or a dict with optional ``"scale"`` (and, rarely used, ``"bias"``), each
        of the shape of ``x`` along ``feature_axis`` (see :func:`rms_norm_init`).
      axis: the axis or axes to normalize over (default: the last).
      eps: added to the mean square before the square root.
      feature_axis: the axes the scale runs along; defaults to ``axis``.
      axis_name: a named axis to average the mean square over (inputs split across devices).
      axis_index_groups: groups of indices within ``axis_name``.

    Returns:
      An array of ``x``'s shape and dtype.

    Raises:
      ValueError: an axis out of range, or ``params`` with unknown keys or wrong shapes.
      TypeError: a non-floating ``x`` or parameter.

    Example:
      >>> import jax.numpy as jnp
      >>> y = rms_norm(jnp.array([3.0, 4.0]), eps=0.0)
      >>> [round(float(v), 4) for v in y]
      [0.8485, 1.1314]
    """
    return _layerlike(
        x, params, axis, feature_axis, eps, axis_name, axis_index_groups, False, "rms_norm"
    )


def layer_norm_init(
    feature_shape: int | Sequence[int],
    dtype: Any = jnp.float32,
    *,
    scale: bool = True,
    bias: bool = True,
) -> dict[str, jax.Array]:
    """Parameters for :func:`layer_norm`: ``{"scale": ones, "bias": zeros}`` of ``feature_shape``.

    Args:
      feature_shape: the size (or shape) of ``x`` along the feature axes.
      dtype: parameter dtype.
      scale: include ``"scale"``.
      bias: include ``"bias"``.

    Returns:
      A dict of arrays (possibly empty).

    Example:
      >>> sorted(layer_norm_init(4))
      ['bias', 'scale']
    """
    shape = _shape_arg(feature_shape, "feature_shape")
    out = {}
    if scale:
        out["scale"] = jnp.ones(shape, dtype)
    if bias:
        out["bias"] = jnp.zeros(shape, dtype)
    return out


def rms_norm_init(
    feature_shape: int | Sequence[int], dtype: Any = jnp.float32, *, bias: bool = False
) -> dict[str, jax.Array]:
    """Parameters for :func:`rms_norm`: ``{"scale": ones}`` (plus ``"bias": zeros`` if asked).

    Example:
      >>> rms_norm_init(3)["scale"].shape
      (3,)
    """
    return layer_norm_init(feature_shape, dtype, scale=True, bias=bias)


def _shape_arg(shape: int | Sequence[int], name: str) -> tuple[int, ...]:
    if isinstance(shape, (int, np.integer)) and not isinstance(shape, bool):
        shape = (int(shape),)
    try:
        shape = tuple(int(s) for s in shape)
    except TypeError:
        raise TypeError(f"{name} must be an int or a sequence of ints, found {shape!r}.") from None
    if any(s < 1 for s in shape):
        raise ValueError(f"{name} must be positive, found {shape}.")
    return shape


# ----------------------------------------------------------------------------------------------
# Batch norm
# ----------------------------------------------------------------------------------------------

_STATE_KEYS = ("mean", "var")


def torch_momentum(m: float) -> float:
    """Convert PyTorch's BatchNorm ``momentum`` to this module's (and flax's) convention.

    PyTorch updates ``running = (1 - m) * running + m * batch`` (``m`` weighs the *new* batch,
    default 0.1); here ``new = momentum * old + (1 - momentum) * batch`` (``momentum`` weighs the
    *old* value, default 0.99). So ``momentum = 1 - m``. Use it together with
    ``unbiased_running_var=True`` to reproduce ``torch.nn.BatchNorm*d``'s running statistics.

    Example:
      >>> torch_momentum(0.1)
      0.9
    """
    if not 0.0 <= m <= 1.0:
        raise ValueError(f"torch momentum must lie in [0, 1], found {m!r}.")
    return 1.0 - m


def batch_norm_init(
    num_features: int | Sequence[int],
    dtype: Any = jnp.float32,
    *,
    scale: bool = True,
    bias: bool = True,
) -> tuple[dict[str, jax.Array], dict[str, jax.Array]]:
    """Parameters and state for :func:`batch_norm`.

    Args:
      num_features: the size (or shape) of ``x`` along the feature axis/axes.
      dtype: dtype of the parameters; the running statistics are kept in at least float32.
      scale: include ``"scale"`` (ones).
      bias: include ``"bias"`` (zeros).

    Returns:
      ``(params, state)``: ``params = {"scale", "bias"}``, ``state = {"mean": zeros,
      "var": ones}`` (flax's and torch's initial running statistics).

    Example:
      >>> params, state = batch_norm_init(3)
      >>> sorted(params), sorted(state)
      (['bias', 'scale'], ['mean', 'var'])
    """
    shape = _shape_arg(num_features, "num_features")
    sdtype = _compute_dtype(dtype)
    params = layer_norm_init(shape, dtype, scale=scale, bias=bias)
    state = {"mean": jnp.zeros(shape, sdtype), "var": jnp.ones(shape, sdtype)}
    return params, state


def batch_norm(
    x: jax.Array,
    params: Params | None,
    state: State | None,
    *,
    training: bool,
    momentum: float = 0.99,
    eps: float = 1e-5,
    axis: Axes = -1,
    axis_name: Any = None,
    axis_index_groups: Any = None,
    unbiased_running_var: bool = False,
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Batch normalization with explicit running statistics.

    ``axis`` names the *feature* axis or axes; statistics are taken over all the others (and
    over the devices of ``axis_name``). With ``training=True`` the batch is normalized with its
    own mean and biased variance, and the running statistics are updated as an exponential
    moving average::

        new_mean = momentum * state["mean"] + (1 - momentum) * batch_mean
        new_var  = momentum * state["var"]  + (1 - momentum) * batch_var

    (``momentum`` weighs the old value, as in flax; the ``(alpha - 1)`` factor in some notes is a
    sign slip: the weights must sum to 1.) ``batch_var`` is the biased variance (divided by
    ``n``, like flax) unless ``unbiased_running_var=True``, which stores ``n / (n - 1)`` times it
    like PyTorch; normalization itself always uses the biased variance, as both libraries do.
    PyTorch's ``momentum=m`` is ``momentum=1 - m`` here (:func:`torch_momentum`).

    With ``training=False`` the running statistics normalize ``x`` and the state is returned
    unchanged; no batch axis is needed, so one sample at a time works.

    Args:
      x: input, e.g. ``(batch, features)`` or ``(batch, h, w, channels)``.
      params: ``None`` or a dict with optional ``"scale"`` and ``"bias"`` of the feature shape.
      state: ``{"mean", "var"}`` of the feature shape (from :func:`batch_norm_init`); required.
      training: use batch statistics and update the state (``True``) or use the state.
      momentum: weight of the old running value, in [0, 1].
      eps: added to the variance before the square root.
      axis: the feature axis or axes (default: the last).
      axis_name: a named axis (``vmap``/``shard_map``/``pmap``) whose devices share one batch:
        statistics are averaged over it with ``jax.lax.pmean`` (equal per-device batch sizes).
      axis_index_groups: groups of indices within ``axis_name`` to average separately.
      unbiased_running_var: store the unbiased batch variance in the running statistic (PyTorch).

    Returns:
      ``(y, new_state)``: ``y`` with ``x``'s shape and dtype; ``new_state`` with the same
      structure and dtypes as ``state``.

    Raises:
      ValueError: a missing or malformed ``state``, wrong parameter shapes, an axis out of range,
        a momentum outside [0, 1], or training without any batch axis.
      TypeError: a non-boolean ``training`` or a non-floating input.

    Cost: training is two passes over ``x`` for the statistics plus one to normalize; the
    backward is two reductions (over ``dy``, and over ``x`` and ``dy`` together) and one pass
    that writes ``dx``, with no full-size intermediate. Inference is one pass.

    Example:
      >>> import jax.numpy as jnp
      >>> params, state = batch_norm_init(2)
      >>> x = jnp.array([[0.0, 1.0], [2.0, 3.0]])
      >>> y, state = batch_norm(x, params, state, training=True, momentum=0.9)
      >>> [round(float(v), 4) for v in state["mean"]]
      [0.1, 0.2]
    """
    if not isinstance(training, (bool, np.bool_)):
        raise TypeError(
            f"training must be True or False (a Python bool), found {training!r}. Batch norm's "
            f"mode changes the computation, so it must be static; pass it as a static argument "
            f"or close over it under jit."
        )
    # Concrete numbers only (numpy scalars and concrete jax scalars included); a traced
    # momentum cannot be checked.
    concrete = isinstance(momentum, (int, float, np.integer, np.floating)) or (
        isinstance(momentum, jax.Array)
        and not isinstance(momentum, jax.core.Tracer)
        and momentum.ndim == 0
    )
    if concrete and not 0.0 <= float(momentum) <= 1.0:
        raise ValueError(
            f"momentum must lie in [0, 1] (weight of the old running value), found {momentum!r}."
            f" For a PyTorch momentum m use torch_momentum(m) = 1 - m."
        )
    x = _check_input(x)
    fax = _canon_axes(axis, x.ndim, "axis", x.shape)
    red = tuple(a for a in range(x.ndim) if a not in fax)
    fshape = _feature_shape(x, fax)
    cdtype = _compute_dtype(x.dtype)
    if state is None:
        raise ValueError(
            f"batch_norm needs state (the running statistics {{'mean', 'var'}} of shape "
            f"{fshape}) in {'training' if training else 'inference'} mode, found None. Create "
            f"it with `params, state = batch_norm_init({fshape})`."
        )
    fix = f"Create matching ones with `params, state = batch_norm_init({fshape})`."
    what = f"x.shape along feature axis {fax}"
    state = _check_tree(state, "state", _STATE_KEYS, _STATE_KEYS, fshape, what, fix)
    if params is not None:
        params = _check_tree(params, "params", _PARAM_KEYS, (), fshape, what, fix)
    xc = x.astype(cdtype)
    if not training:
        mean = _expand(state["mean"], x.ndim, fax, cdtype)
        var = _expand(state["var"], x.ndim, fax, cdtype)
        # Fold (scale * rsqrt(var + eps)) into one per-feature multiplier: one pass over x.
        mul = lax.rsqrt(var + eps)
        if params and "scale" in params:
            mul = mul * _expand(params["scale"], x.ndim, fax, cdtype)
        y = (xc - mean) * mul
        if params and "bias" in params:
            y = y + _expand(params["bias"], x.ndim, fax, cdtype)
        return y.astype(x.dtype), dict(state)
    if not red and axis_name is None:
        raise ValueError(
            f"batch_norm(training=True) needs at least one batch axis to take statistics over, "
            f"but axis={axis!r} makes every axis of x (shape {x.shape}) a feature axis. Add a "
            f"batch axis, or pass axis_name to share statistics across a vmapped/sharded batch."
        )
    y, bmean, bvar = _normalize(xc, red, float(eps), True, axis_name, _groups(axis_index_groups))
    if params:
        y = _affine(y, params, x.ndim, fax, cdtype)
    bmean = bmean.reshape(fshape)
    bvar = bvar.reshape(fshape)
    if unbiased_running_var:
        n = math.prod(x.shape[a] for a in red)
        if axis_name is not None:
            n = n * lax.psum(1, axis_name, axis_index_groups=axis_index_groups)
        # n == 1 has no unbiased estimate; keep the biased one (0) rather than divide by zero.
        bvar = bvar * (n / jnp.maximum(n - 1, 1))
    # Running statistics are a side output: no gradient flows into them (flax and torch agree).
    bmean, bvar = lax.stop_gradient(bmean), lax.stop_gradient(bvar)
    new_state = {
        "mean": (momentum * state["mean"] + (1 - momentum) * bmean).astype(state["mean"].dtype),
        "var": (momentum * state["var"] + (1 - momentum) * bvar).astype(state["var"].dtype),
    }
    return y.astype(x.dtype), new_state


# ----------------------------------------------------------------------------------------------
# Data standardization
# ----------------------------------------------------------------------------------------------


class Standardization(NamedTuple):
    """Per-feature statistics for :func:`standardize` (a pytree; keeps reduced dims as size 1).

    ``scale`` is the standard deviation, except for constant features, where it is 1 (see
    :func:`fit_standardization`). ``constant`` marks those features.
    """

    mean: jax.Array
    scale: jax.Array
    constant: jax.Array


def fit_standardization(x: jax.Array, axis: Axes = 0, *, ddof: int = 0) -> Standardization:
    """Fit per-feature mean and standard deviation of data ``x`` over ``axis`` (the samples).

    Statistics are two-pass in at least float32. **Constant features** do not divide by zero: a
    feature whose standard deviation is 0, or at most ``10 * eps * |mean|`` (i.e. below the
    roundoff of its own mean, ``eps`` the machine epsilon of the compute dtype; the rule
    scikit-learn's ``StandardScaler`` uses), is marked constant and gets ``scale = 1``. It then
    standardizes to ``x - mean`` (exactly 0 on the fitted data) and inverts exactly, instead of
    blowing roundoff up to O(1) values or producing NaN.

    Args:
      x: data, e.g. ``(samples, features)``.
      axis: the sample axis or axes to reduce over (default 0); the rest are features.
      ddof: delta degrees of freedom of the standard deviation (0: biased, 1: sample std).

    Returns:
      A :class:`Standardization` whose arrays have ``x``'s rank with size-1 reduced axes.

    Raises:
      ValueError: an axis out of range, or ``ddof`` not below the number of samples.

    Example:
      >>> import jax.numpy as jnp
      >>> st = fit_standardization(jnp.array([[1.0, 5.0], [3.0, 5.0]]))
      >>> st.scale.tolist(), st.constant.tolist()
      ([[1.0, 1.0]], [[False, True]])
    """
    x = _check_input(x)
    axes = _canon_axes(axis, x.ndim, "axis", x.shape)
    n = math.prod(x.shape[a] for a in axes)
    if not isinstance(ddof, (int, np.integer)) or isinstance(ddof, bool) or not 0 <= ddof < n:
        raise ValueError(
            f"ddof must be an integer in [0, {n - 1}] for {n} samples along axis {axes}, found "
            f"{ddof!r}."
        )
    xc = x.astype(_compute_dtype(x.dtype))
    # Shift by the first sample before averaging: a constant feature then has the mean k + 0,
    # exactly its value (a plain float32 mean of 1000 copies of 0.1 is 0.09999997), so it
    # standardizes to exactly 0.
    k = xc[tuple(slice(0, 1) if i in axes else slice(None) for i in range(x.ndim))]
    mean = k + jnp.mean(xc - k, axes, keepdims=True)
    d = xc - mean
    var = jnp.sum(d * d, axes, keepdims=True) / (n - int(ddof))
    tiny = 10 * jnp.finfo(xc.dtype).eps
    constant = jnp.sqrt(var) <= tiny * jnp.abs(mean)
    # sqrt only of the non-constant variances: sqrt'(0) = inf would make the gradient of a
    # fit through a constant feature NaN (inf * 0), even though its scale is the constant 1.
    scale = jnp.sqrt(jnp.where(constant, jnp.ones_like(var), var))
    return Standardization(mean, scale, constant)


def _stats_for(x: jax.Array, stats: Standardization) -> tuple[jax.Array, jax.Array]:
    if not isinstance(stats, Standardization):
        raise TypeError(
            f"stats must be a Standardization from fit_standardization, found "
            f"{type(stats).__name__}."
        )
    mean, scale = stats.mean, stats.scale
    if x.ndim < mean.ndim:
        # Fitted on a batch, applied to fewer leading axes (e.g. one sample): drop leading 1s.
        lead = mean.shape[: mean.ndim - x.ndim]
        if any(s != 1 for s in lead):
            raise ValueError(
                f"x has shape {x.shape} but the statistics have shape {mean.shape}; x can drop "
                f"only leading reduced (size-1) axes of the statistics."
            )
        mean = mean.reshape(mean.shape[mean.ndim - x.ndim :])
        scale = scale.reshape(mean.shape)
    try:
        jnp.broadcast_shapes(x.shape, mean.shape)
    except ValueError:
        raise ValueError(
            f"x has shape {x.shape}, which does not broadcast with the fitted statistics' shape "
            f"{mean.shape}. Apply the statistics to data with the same feature axes."
        ) from None
    return mean, scale


def standardize(x: jax.Array, stats: Standardization) -> jax.Array:
    """``(x - mean) / scale`` with fitted statistics; output in ``x``'s dtype.

    Example:
      >>> import jax.numpy as jnp
      >>> x = jnp.array([[1.0, 5.0], [3.0, 5.0]])
      >>> standardize(x, fit_standardization(x)).tolist()
      [[-1.0, 0.0], [1.0, 0.0]]
    """
    x = _check_input(x)
    mean, scale = _stats_for(x, stats)
    cd = jnp.promote_types(_compute_dtype(x.dtype), mean.dtype)
    return ((x.astype(cd) - mean) / scale).astype(x.dtype)


def unstandardize(y: jax.Array, stats: Standardization) -> jax.Array:
    """The inverse of :func:`standardize`: ``y * scale + mean``.

    Example:
      >>> import jax.numpy as jnp
      >>> x = jnp.array([[1.0, 5.0], [3.0, 5.0]])
      >>> st = fit_standardization(x)
      >>> unstandardize(standardize(x, st), st).tolist()
      [[1.0, 5.0], [3.0, 5.0]]
    """
    y = _check_input(y, "y")
    mean, scale = _stats_for(y, stats)
    cd = jnp.promote_types(_compute_dtype(y.dtype), mean.dtype)
    return (y.astype(cd) * scale + mean).astype(y.dtype)


# ----------------------------------------------------------------------------------------------
# Residual wiring
# ----------------------------------------------------------------------------------------------


def _residual_args(x, sublayer, norm):
    for name, f in (("sublayer", sublayer), ("norm", norm)):
        if not callable(f):
            raise TypeError(
                f"{name} must be a one-argument callable, found {type(f).__name__}. Close over "
                f"its parameters, e.g. {name}=lambda h: layer_norm(h, params)."
            )


def _branch(sublayer, h, x):
    out = sublayer(h)
    if jnp.shape(out) != jnp.shape(x):
        raise ValueError(
            f"sublayer output has shape {jnp.shape(out)}, but a residual connection needs the "
            f"input's shape {jnp.shape(x)}. Project the sublayer's output back to it."
        )
    return out


def post_norm(x: jax.Array, sublayer: Callable, norm: Callable) -> jax.Array:
    """Post-LN residual block: ``norm(x + sublayer(x))`` (the original Transformer).

    Example:
      >>> import jax.numpy as jnp
      >>> y = post_norm(jnp.array([1.0, 2.0, 3.0]), lambda h: 2 * h, layer_norm)
      >>> [round(float(v), 3) for v in y]
      [-1.225, 0.0, 1.225]
    """
    _residual_args(x, sublayer, norm)
    return norm(x + _branch(sublayer, x, x))


def pre_norm(x: jax.Array, sublayer: Callable, norm: Callable) -> jax.Array:
    """Pre-LN residual block: ``x + sublayer(norm(x))`` (the identity path is never normalized).

    Example:
      >>> import jax.numpy as jnp
      >>> pre_norm(jnp.array([1.0, 3.0]), lambda h: h, lambda h: h - h.mean()).tolist()
      [0.0, 4.0]
    """
    _residual_args(x, sublayer, norm)
    return x + _branch(sublayer, norm(x), x)


def deep_norm(
    x: jax.Array, sublayer: Callable, norm: Callable, alpha: float | DeepNormConstants
) -> jax.Array:
    """DeepNorm residual block (DeepNet): ``norm(alpha * x + sublayer(x))``.

    ``alpha > 1`` up-weights the identity path so that updates of deep Post-LN stacks stay
    bounded; take it from :func:`deepnorm_constants` (``alpha = (2N)^(1/4)`` for an N-layer
    encoder) and initialize the sublayer's projections with its ``beta``.

    Args:
      x: the block's input.
      sublayer: ``F``, a one-argument callable returning an array of ``x``'s shape.
      norm: a one-argument normalization, e.g. ``lambda h: layer_norm(h, params)``.
      alpha: the residual scale, or a :class:`DeepNormConstants` (its encoder ``alpha``).

    Returns:
      ``norm(alpha * x + sublayer(x))``.

    Example:
      >>> import jax.numpy as jnp
      >>> a = deepnorm_constants(6).alpha
      >>> y = deep_norm(jnp.array([1.0, 2.0, 3.0]), lambda h: 0 * h, layer_norm, a)
      >>> [round(float(v), 3) for v in y]
      [-1.225, 0.0, 1.225]
    """
    _residual_args(x, sublayer, norm)
    if isinstance(alpha, DeepNormConstants):
        alpha = alpha.alpha
    return norm(alpha * x + _branch(sublayer, x, x))
