"""Weight initializers: the naive family, the variance-preserving family, orthogonal, identity.

Every factory returns an ``init(key, shape, dtype=jnp.float32, out_sharding=None) -> Array``
that follows the :class:`jax.nn.initializers.Initializer` protocol, so it plugs into flax
(``nn.Dense(kernel_init=cr.init.he_normal())``), equinox and plain JAX.

Why the scale matters: a plain network multiplies one Jacobian factor per layer, so a per-layer
gain of ``1 + eps`` becomes ``(1 + eps)**L`` after ``L`` layers. For ``z_l = h_{l-1} W_l`` with
i.i.d. zero-mean weights, ``Var[z_l] = fan_in * Var[W] * E[h_{l-1}^2]``; the variance-preserving
initializers choose ``Var[W]`` so that this factor is one for the activation at hand:

=============================  ========================  ======================================
initializer                    ``Var[W]``                normal std / uniform bound
=============================  ========================  ======================================
``lecun_*``                    ``1 / fan_in``            ``sqrt(1/fan_in)`` / ``sqrt(3/fan_in)``
``xavier_*`` (``glorot_*``)    ``2 / (fan_in+fan_out)``  ``sqrt(2/(fi+fo))`` / ``sqrt(6/(fi+fo))``
``he_*`` (``kaiming_*``)       ``2 / fan_in``            ``sqrt(2/fan_in)`` / ``sqrt(6/fan_in)``
``variance_scaling(s, mode)``  ``s / n_mode``            ``sqrt(s/n)`` / ``sqrt(3 s/n)``
=============================  ========================  ======================================

(He's variance is ``2 / fan_in``; its *standard deviation* is ``sqrt(2 / fan_in)``.)

Conventions, decided here and kept throughout:

* ``"normal"`` means the untruncated Gaussian (as in ``jax.nn.initializers.variance_scaling``,
  torch, and the He/Glorot papers). ``"truncated_normal"`` is cut at two standard deviations of
  the underlying Gaussian and rescaled so that the standard deviation is exactly the target.
  Note that jax's ``lecun_normal``/``glorot_normal``/``he_normal`` draw the *truncated* form; pass
  ``truncated=True`` to ours for the same distribution.
* ``uniform(scale)`` is symmetric on ``[-scale, scale)``; jax's ``uniform(scale)`` is
  ``[0, scale)``.
* Fans follow jax/flax layouts: ``in_axis=-2``, ``out_axis=-1``, every other axis (except
  ``batch_axis``) is the receptive field, so a ``(kh, kw, c_in, c_out)`` conv kernel has
  ``fan_in = kh * kw * c_in`` and ``fan_out = kh * kw * c_out``.
* The default output dtype is float32 whatever ``jax_enable_x64`` says (flax's ``param_dtype``
  default). Samples are drawn in float32, or in the requested dtype where it is wider, and then
  cast, so bfloat16 and float16 outputs carry the correctly rounded float32 sample.
* Factories validate their arguments (unknown mode or distribution, non-positive scale,
  non-float default dtype); the returned ``init`` validates ``shape`` and ``dtype`` (fewer than two
  dimensions for a fan-based initializer, a non-float dtype). Shapes are static under
  ``jax.jit``, so these checks run once per trace.

Cost: every initializer is one pass of the random number generator over ``prod(shape)``
elements; ``orthogonal`` adds one QR of an ``m x n`` matrix, ``O(m n min(m, n))`` flops.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from chainrule._deepnorm import ARCHS, deepnorm_constants
from chainrule._tree import check_choice

__all__ = [
    "MODES",
    "DISTRIBUTIONS",
    "ACTIVATIONS",
    "Initializer",
    "compute_fans",
    "gain",
    "uniform",
    "normal",
    "truncated_normal",
    "variance_scaling",
    "lecun_normal",
    "lecun_uniform",
    "xavier_normal",
    "xavier_uniform",
    "glorot_normal",
    "glorot_uniform",
    "he_normal",
    "he_uniform",
    "kaiming_normal",
    "kaiming_uniform",
    "orthogonal",
    "identity",
    "deepnorm",
]

Initializer = Callable[..., jax.Array]
"""``init(key, shape, dtype=jnp.float32, out_sharding=None) -> Array``."""

Axes = int | Sequence[int]

MODES = ("fan_in", "fan_out", "fan_avg", "fan_geo_avg")
DISTRIBUTIONS = ("normal", "truncated_normal", "uniform")
ACTIVATIONS = (
    "linear",
    "identity",
    "conv1d",
    "conv2d",
    "conv3d",
    "conv_transpose1d",
    "conv_transpose2d",
    "conv_transpose3d",
    "sigmoid",
    "tanh",
    "relu",
    "leaky_relu",
    "selu",
)


# --------------------------------------------------------------------------- validation helpers


def _check_positive(value: Any, name: str, who: str) -> float:
    """A finite real number > 0, as a Python float.

    Concrete 0-d arrays (``jnp.array(0.1)``) are accepted, as jax's initializers accept them.
    """
    if isinstance(value, np.ndarray | jax.Array) and value.ndim == 0:
        if jnp.issubdtype(value.dtype, jnp.integer) or jnp.issubdtype(value.dtype, jnp.floating):
            try:
                value = value.item()
            except jax.errors.ConcretizationTypeError:
                raise TypeError(
                    f"{who}: {name} must be a concrete number, found a traced value. Build the "
                    f"initializer outside jit, or pass a Python float."
                ) from None
    ok = isinstance(value, int | float | np.integer | np.floating) and not isinstance(value, bool)
    if not ok or not math.isfinite(float(value)) or float(value) <= 0:
        raise ValueError(
            f"{who}: {name} must be a finite number > 0, found {value!r}. "
            f"Pass a positive float, e.g. {name}=1.0."
        )
    return float(value)


def _check_float_dtype(dtype: Any, who: str) -> np.dtype:
    """The canonical numpy dtype of ``dtype``; ``TypeError`` unless it is a real floating type."""
    try:
        dt = jnp.dtype(dtype)
    except TypeError as e:
        raise TypeError(
            f"{who}: dtype must be a floating dtype (float32, bfloat16, float16, float64), "
            f"found {dtype!r}, which is not a dtype."
        ) from e
    if not jnp.issubdtype(dt, jnp.floating):
        raise TypeError(
            f"{who}: dtype must be a real floating dtype (float32, bfloat16, float16, float64), "
            f"found {dt}. Initialize in a float dtype and cast afterwards if you need another."
        )
    return dt


def _canonical_shape(shape: Any, who: str) -> tuple[int, ...]:
    if isinstance(shape, int | np.integer) and not isinstance(shape, bool):
        shape = (shape,)
    try:
        dims = tuple(shape)
    except TypeError as e:
        raise TypeError(
            f"{who}: shape must be a sequence of non-negative ints, found {shape!r}."
        ) from e
    for d in dims:
        if not isinstance(d, int | np.integer) or isinstance(d, bool) or d < 0:
            raise TypeError(
                f"{who}: shape must be a sequence of non-negative ints, found {shape!r} "
                f"(bad entry {d!r}). Shapes are static: pass Python ints, not traced values."
            )
    return tuple(int(d) for d in dims)


def _check_axes_arg(axes: Any, name: str, who: str) -> None:
    items = (axes,) if isinstance(axes, int | np.integer) else axes
    try:
        items = tuple(items)
    except TypeError:
        items = (axes,)
    if any(not isinstance(a, int | np.integer) or isinstance(a, bool) for a in items):
        raise TypeError(f"{who}: {name} must be an int or a sequence of ints, found {axes!r}.")


def _normalize_axes(axes: Axes, ndim: int, name: str, shape: tuple[int, ...]) -> tuple[int, ...]:
    items = (axes,) if isinstance(axes, int | np.integer) else tuple(axes)
    out = []
    for a in items:
        if not -ndim <= a < ndim:
            raise ValueError(
                f"{name}={axes!r} is out of range for shape {shape} ({ndim} dimensions): "
                f"axes must lie in [{-ndim}, {ndim - 1}]."
            )
        out.append(int(a) % ndim)
    if len(set(out)) != len(out):
        raise ValueError(f"{name}={axes!r} repeats an axis (normalized: {out}).")
    return tuple(out)


def compute_fans(
    shape: Sequence[int],
    in_axis: Axes = -2,
    out_axis: Axes = -1,
    batch_axis: Axes = (),
) -> tuple[int, int]:
    """Fan-in and fan-out of a dense or convolution kernel.

    ``fan_in = prod(shape[in_axis]) * r`` and ``fan_out = prod(shape[out_axis]) * r`` where the
    receptive field ``r`` is the product of every axis that is not an input, output or batch axis.
    Batch axes (e.g. stacked layers of a scanned model) count in neither fan.

    Args:
      shape: the kernel's shape, at least two dimensions.
      in_axis: the input-feature axis or axes (jax/flax layout: ``-2``).
      out_axis: the output-feature axis or axes (``-1``).
      batch_axis: axes to ignore (default none).

    Returns:
      ``(fan_in, fan_out)`` as Python ints.

    Raises:
      ValueError: a shape with fewer than two dimensions, an axis out of range, or an axis that is
        in more than one of ``in_axis``, ``out_axis``, ``batch_axis``.

    Example:
      >>> compute_fans((3, 3, 16, 32))  # a 3x3 conv from 16 to 32 channels
      (144, 288)
      >>> compute_fans((8, 64, 128), batch_axis=0)  # 8 stacked dense layers
      (64, 128)
    """
    shape = _canonical_shape(shape, "compute_fans")
    ndim = len(shape)
    if ndim < 2:
        raise ValueError(
            f"A fan-based initializer needs a shape with at least 2 dimensions (inputs and "
            f"outputs), found shape {shape} with {ndim}. For a bias or a scale vector use "
            f"zeros/ones or normal(stddev)/uniform(scale), which do not need fans."
        )
    ins = _normalize_axes(in_axis, ndim, "in_axis", shape)
    outs = _normalize_axes(out_axis, ndim, "out_axis", shape)
    batch = _normalize_axes(batch_axis, ndim, "batch_axis", shape)
    groups = {"in_axis": set(ins), "out_axis": set(outs), "batch_axis": set(batch)}
    names = list(groups)
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            common = groups[a] & groups[b]
            if common:
                raise ValueError(
                    f"Axis {sorted(common)} of shape {shape} is in both {a} and {b}; "
                    f"each axis is an input, an output, a batch or a receptive-field axis."
                )
    used = set(ins) | set(outs) | set(batch)
    receptive = math.prod(shape[i] for i in range(ndim) if i not in used)
    fan_in = math.prod(shape[i] for i in ins) * receptive
    fan_out = math.prod(shape[i] for i in outs) * receptive
    return int(fan_in), int(fan_out)


# --------------------------------------------------------------------------- the common wrapper


def _sample_dtype(dtype: np.dtype) -> np.dtype:
    # float32, or the requested dtype where it is wider (float64): bf16/f16 samples are drawn
    # in float32 and rounded once, which keeps their distribution and avoids RNG underflow.
    return jnp.promote_types(dtype, jnp.float32)


def _make(
    sample: Callable[[jax.Array, tuple[int, ...], np.dtype], jax.Array],
    who: str,
    default_dtype: Any,
    check_shape: Callable[[tuple[int, ...]], None] | None = None,
) -> Initializer:
    """Wrap ``sample(key, shape, sample_dtype)`` into an Initializer that validates and casts."""
    default = _check_float_dtype(jnp.float32 if default_dtype is None else default_dtype, who)

    def init(
        key: jax.Array, shape: Sequence[int], dtype: Any = default, out_sharding: Any = None
    ) -> jax.Array:
        shp = _canonical_shape(shape, who)
        dt = _check_float_dtype(default if dtype is None else dtype, who)
        if check_shape is not None:
            check_shape(shp)
        if math.prod(shp) == 0:
            out = jnp.zeros(shp, dt)
        else:
            out = sample(key, shp, _sample_dtype(dt)).astype(dt)
        if out_sharding is not None:
            out = jax.lax.with_sharding_constraint(out, out_sharding)
        return out

    init.__name__ = init.__qualname__ = who
    return init


def _fan_check(who: str, in_axis: Axes, out_axis: Axes, batch_axis: Axes) -> Callable:
    def check(shape: tuple[int, ...]) -> None:
        try:
            compute_fans(shape, in_axis, out_axis, batch_axis)
        except ValueError as e:
            raise ValueError(f"{who}: {e}") from None

    return check


# --------------------------------------------------------------------------- naive family


def uniform(scale: float = 1e-2, *, dtype: Any = None) -> Initializer:
    """Uniform on the symmetric interval ``[-scale, scale)``: ``Var[W] = scale^2 / 3``.

    Unlike ``jax.nn.initializers.uniform(scale)``, which samples ``[0, scale)``.

    Args:
      scale: the half-width of the interval, > 0.
      dtype: the default output dtype of the returned initializer (float32 if None).

    Returns:
      An Initializer.

    Raises:
      ValueError: ``scale`` is not a finite positive number.
      TypeError: ``dtype`` is not a floating dtype.

    Example:
      >>> import jax
      >>> w = uniform(0.5)(jax.random.key(0), (64, 64))
      >>> bool(w.min() >= -0.5) and bool(w.max() < 0.5)
      True
    """
    scale = _check_positive(scale, "scale", "uniform")

    def sample(key, shape, sdt):
        return jax.random.uniform(key, shape, sdt, -1.0, 1.0) * jnp.asarray(scale, sdt)

    return _make(sample, "uniform", dtype)


def normal(stddev: float = 1e-2, *, dtype: Any = None) -> Initializer:
    """Gaussian ``N(0, stddev^2)``: ``Var[W] = stddev^2``.

    Args:
      stddev: the standard deviation, > 0.
      dtype: the default output dtype of the returned initializer (float32 if None).

    Returns:
      An Initializer.

    Raises:
      ValueError: ``stddev`` is not a finite positive number.
      TypeError: ``dtype`` is not a floating dtype.

    Example:
      >>> import jax
      >>> normal(0.02)(jax.random.key(0), (4, 3)).shape
      (4, 3)
    """
    stddev = _check_positive(stddev, "stddev", "normal")

    def sample(key, shape, sdt):
        return jax.random.normal(key, shape, sdt) * jnp.asarray(stddev, sdt)

    return _make(sample, "normal", dtype)


def _std_normal_cdf(x: float) -> float:
    return 0.5 * math.erfc(-x / math.sqrt(2.0))


def _std_normal_pdf(x: float) -> float:
    return 0.0 if math.isinf(x) else math.exp(-0.5 * x * x) / math.sqrt(2.0 * math.pi)


def _truncated_std_normal_moments(lower: float, upper: float) -> tuple[float, float]:
    """Mean and standard deviation of N(0, 1) truncated to ``[lower, upper]``.

    ``Z = Phi(b) - Phi(a)``, ``m = (phi(a) - phi(b)) / Z``,
    ``v = 1 + (a phi(a) - b phi(b)) / Z - m^2``.
    """
    a, b = lower, upper
    # Use the upper tail when the interval lies right of zero, to keep Z accurate.
    if a > 0:
        z = _std_normal_cdf(-a) - _std_normal_cdf(-b)
    else:
        z = _std_normal_cdf(b) - _std_normal_cdf(a)
    pa, pb = _std_normal_pdf(a), _std_normal_pdf(b)
    apa = 0.0 if math.isinf(a) else a * pa
    bpb = 0.0 if math.isinf(b) else b * pb
    m = (pa - pb) / z
    v = 1.0 + (apa - bpb) / z - m * m
    return m, math.sqrt(v)


def truncated_normal(
    stddev: float = 1e-2, lower: float = -2.0, upper: float = 2.0, *, dtype: Any = None
) -> Initializer:
    """Truncated Gaussian, rescaled so that its standard deviation is exactly ``stddev``.

    A standard normal ``z`` is truncated to ``[lower, upper]`` (bounds in units of the
    *untruncated* standard deviation, as in jax) and returned as ``stddev * z / s`` where ``s`` is
    the standard deviation of the truncated standard normal (``s = 0.87962566`` for ``[-2, 2]``).
    So ``Var[W] = stddev^2`` and ``|W| <= 2 stddev / s ~= 2.27 stddev`` for the default bounds.
    jax's ``truncated_normal(stddev)`` omits the ``1 / s`` correction (its std is ``0.88
    stddev``). With asymmetric bounds the mean is ``stddev * m / s`` (``m`` the truncated mean),
    not zero.

    Args:
      stddev: the standard deviation after truncation, > 0.
      lower: lower truncation bound in standard deviations of the untruncated normal.
      upper: upper truncation bound, > ``lower``. Infinite bounds are allowed.
      dtype: the default output dtype of the returned initializer (float32 if None).

    Returns:
      An Initializer.

    Raises:
      ValueError: ``stddev`` is not positive, or ``lower >= upper``, or a bound is NaN.
      TypeError: ``dtype`` is not a floating dtype.

    Example:
      >>> import jax
      >>> w = truncated_normal(1.0)(jax.random.key(0), (256, 256))
      >>> bool(abs(w).max() <= 2 / 0.87962566 + 1e-5)
      True
    """
    stddev = _check_positive(stddev, "stddev", "truncated_normal")
    lo, hi = float(lower), float(upper)
    if math.isnan(lo) or math.isnan(hi) or not lo < hi:
        raise ValueError(
            f"truncated_normal: need lower < upper, found lower={lower!r}, upper={upper!r}."
        )
    _, s = _truncated_std_normal_moments(lo, hi)
    factor = stddev / s

    def sample(key, shape, sdt):
        z = jax.random.truncated_normal(key, lo, hi, shape, sdt)
        return z * jnp.asarray(factor, sdt)

    return _make(sample, "truncated_normal", dtype)


# --------------------------------------------------------------------------- variance scaling

_TRUNC2_STD = _truncated_std_normal_moments(-2.0, 2.0)[1]  # 0.8796256610342398


def _variance_scaling(
    scale: float,
    mode: str,
    distribution: str,
    in_axis: Axes,
    out_axis: Axes,
    batch_axis: Axes,
    dtype: Any,
    who: str,
) -> Initializer:
    check_choice(mode, MODES, "mode")
    check_choice(distribution, DISTRIBUTIONS, "distribution")
    scale = _check_positive(scale, "scale", who)
    for name, axes in (("in_axis", in_axis), ("out_axis", out_axis), ("batch_axis", batch_axis)):
        _check_axes_arg(axes, name, who)

    def sample(key, shape, sdt):
        fan_in, fan_out = compute_fans(shape, in_axis, out_axis, batch_axis)
        n = {
            "fan_in": fan_in,
            "fan_out": fan_out,
            "fan_avg": (fan_in + fan_out) / 2,
            "fan_geo_avg": math.sqrt(fan_in * fan_out),
        }[mode]
        std = math.sqrt(scale / n)
        if distribution == "normal":
            return jax.random.normal(key, shape, sdt) * jnp.asarray(std, sdt)
        if distribution == "truncated_normal":
            z = jax.random.truncated_normal(key, -2.0, 2.0, shape, sdt)
            return z * jnp.asarray(std / _TRUNC2_STD, sdt)
        # uniform on [-b, b) has variance b^2 / 3
        return jax.random.uniform(key, shape, sdt, -1.0, 1.0) * jnp.asarray(math.sqrt(3) * std, sdt)

    return _make(sample, who, dtype, _fan_check(who, in_axis, out_axis, batch_axis))


def variance_scaling(
    scale: float,
    mode: str = "fan_in",
    distribution: str = "normal",
    in_axis: Axes = -2,
    out_axis: Axes = -1,
    batch_axis: Axes = (),
    *,
    dtype: Any = None,
) -> Initializer:
    """Zero-mean weights with ``Var[W] = scale / n``, ``n`` the fan chosen by ``mode``.

    ``n`` is ``fan_in``, ``fan_out``, ``(fan_in + fan_out) / 2`` (``fan_avg``) or
    ``sqrt(fan_in * fan_out)`` (``fan_geo_avg``), from :func:`compute_fans`. Distributions:

    * ``"normal"``: the untruncated ``N(0, scale / n)`` (as jax's ``"normal"``; note Keras'
      ``"normal"`` means truncated).
    * ``"truncated_normal"``: a normal cut at +-2 of its standard deviations and rescaled by
      ``1 / 0.87962566`` so that ``Var[W] = scale / n`` exactly (as jax's).
    * ``"uniform"``: ``U[-b, b)`` with ``b = sqrt(3 scale / n)``.

    Args:
      scale: the variance multiplier, > 0 (e.g. ``gain(activation) ** 2``).
      mode: ``"fan_in"``, ``"fan_out"``, ``"fan_avg"`` or ``"fan_geo_avg"``.
      distribution: ``"normal"``, ``"truncated_normal"`` or ``"uniform"``.
      in_axis: input axis or axes of the kernel (``-2``).
      out_axis: output axis or axes (``-1``).
      batch_axis: axes counted in neither fan (``()``).
      dtype: the default output dtype of the returned initializer (float32 if None).

    Returns:
      An Initializer; calling it with a shape of fewer than two dimensions raises ValueError.

    Raises:
      ValueError: unknown ``mode`` or ``distribution`` (the message lists the valid ones), or a
        non-positive ``scale``.
      TypeError: ``dtype`` is not a floating dtype, or an axis argument is not an int/ints.

    Example:
      >>> import jax
      >>> init = variance_scaling(2.0, "fan_in", "uniform")  # He-uniform
      >>> w = init(jax.random.key(0), (3, 3, 16, 32))  # fan_in = 3 * 3 * 16 = 144
      >>> bool(abs(w).max() < (6 / 144) ** 0.5)
      True
    """
    return _variance_scaling(
        scale, mode, distribution, in_axis, out_axis, batch_axis, dtype, "variance_scaling"
    )


def _normal_dist(truncated: bool) -> str:
    return "truncated_normal" if truncated else "normal"


def lecun_normal(
    in_axis: Axes = -2,
    out_axis: Axes = -1,
    batch_axis: Axes = (),
    *,
    truncated: bool = False,
    dtype: Any = None,
) -> Initializer:
    """LeCun normal: ``Var[W] = 1 / fan_in`` (std ``sqrt(1 / fan_in)``).

    Preserves the pre-activation variance through linear layers (and tanh/SELU near zero).
    ``truncated=True`` gives jax/flax's ``lecun_normal`` (truncated at 2 std, variance kept).

    Args:
      in_axis, out_axis, batch_axis: the kernel layout, see :func:`compute_fans`.
      truncated: draw the truncated normal instead of the Gaussian.
      dtype: the default output dtype (float32 if None).

    Returns:
      An Initializer.

    Example:
      >>> import jax
      >>> w = lecun_normal()(jax.random.key(0), (1024, 512))
      >>> round(float(w.var() * 1024), 1)  # Var[W] * fan_in = 1
      1.0
    """
    return _variance_scaling(
        1.0, "fan_in", _normal_dist(truncated), in_axis, out_axis, batch_axis, dtype, "lecun_normal"
    )


def lecun_uniform(
    in_axis: Axes = -2, out_axis: Axes = -1, batch_axis: Axes = (), *, dtype: Any = None
) -> Initializer:
    """LeCun uniform: ``U[-b, b)`` with ``b = sqrt(3 / fan_in)``, so ``Var[W] = 1 / fan_in``.

    Args:
      in_axis, out_axis, batch_axis: the kernel layout, see :func:`compute_fans`.
      dtype: the default output dtype (float32 if None).

    Returns:
      An Initializer.

    Example:
      >>> import jax
      >>> w = lecun_uniform()(jax.random.key(0), (300, 10))
      >>> bool(abs(w).max() < 0.1)  # sqrt(3 / 300) = 0.1
      True
    """
    return _variance_scaling(
        1.0, "fan_in", "uniform", in_axis, out_axis, batch_axis, dtype, "lecun_uniform"
    )


def xavier_normal(
    in_axis: Axes = -2,
    out_axis: Axes = -1,
    batch_axis: Axes = (),
    *,
    gain: float = 1.0,
    truncated: bool = False,
    dtype: Any = None,
) -> Initializer:
    """Xavier/Glorot normal: ``Var[W] = gain^2 * 2 / (fan_in + fan_out)``.

    The compromise between preserving forward (``fan_in``) and backward (``fan_out``) variance.
    ``gain`` follows torch's ``xavier_normal_(gain=...)``, e.g. ``gain=gain("tanh")``.
    ``truncated=True`` gives jax/flax's ``glorot_normal`` distribution.

    Args:
      in_axis, out_axis, batch_axis: the kernel layout, see :func:`compute_fans`.
      gain: multiplies the standard deviation, > 0.
      truncated: draw the truncated normal instead of the Gaussian.
      dtype: the default output dtype (float32 if None).

    Returns:
      An Initializer.

    Example:
      >>> import jax
      >>> xavier_normal()(jax.random.key(0), (128, 64)).dtype
      dtype('float32')
    """
    g = _check_positive(gain, "gain", "xavier_normal")
    return _variance_scaling(
        g * g,
        "fan_avg",
        _normal_dist(truncated),
        in_axis,
        out_axis,
        batch_axis,
        dtype,
        "xavier_normal",
    )


def xavier_uniform(
    in_axis: Axes = -2,
    out_axis: Axes = -1,
    batch_axis: Axes = (),
    *,
    gain: float = 1.0,
    dtype: Any = None,
) -> Initializer:
    """Xavier/Glorot uniform: ``U[-b, b)``, ``b = gain * sqrt(6 / (fan_in + fan_out))``.

    So ``Var[W] = gain^2 * 2 / (fan_in + fan_out)``.

    Args:
      in_axis, out_axis, batch_axis: the kernel layout, see :func:`compute_fans`.
      gain: multiplies the bound, > 0.
      dtype: the default output dtype (float32 if None).

    Returns:
      An Initializer.

    Example:
      >>> import jax
      >>> w = xavier_uniform()(jax.random.key(0), (100, 50))
      >>> bool(abs(w).max() < 0.2)  # sqrt(6 / 150) = 0.2
      True
    """
    g = _check_positive(gain, "gain", "xavier_uniform")
    return _variance_scaling(
        g * g, "fan_avg", "uniform", in_axis, out_axis, batch_axis, dtype, "xavier_uniform"
    )


def he_normal(
    in_axis: Axes = -2,
    out_axis: Axes = -1,
    batch_axis: Axes = (),
    *,
    mode: str = "fan_in",
    truncated: bool = False,
    dtype: Any = None,
) -> Initializer:
    """He/Kaiming normal: ``Var[W] = 2 / fan_in``, i.e. std ``sqrt(2 / fan_in)``.

    For ReLU: half of a symmetric pre-activation is zeroed, ``E[relu(z)^2] = Var[z] / 2``, and the
    factor 2 restores ``Var[z_l] = Var[z_{l-1}]``. ``mode="fan_out"`` preserves the backward
    variance instead (torch's ``mode``). ``truncated=True`` gives jax/flax's ``he_normal``.

    Args:
      in_axis, out_axis, batch_axis: the kernel layout, see :func:`compute_fans`.
      mode: ``"fan_in"`` (default) or ``"fan_out"`` (any of :data:`MODES`).
      truncated: draw the truncated normal instead of the Gaussian.
      dtype: the default output dtype (float32 if None).

    Returns:
      An Initializer.

    Example:
      >>> import jax
      >>> w = he_normal()(jax.random.key(0), (512, 512))
      >>> round(float(w.std() ** 2 * 512), 1)  # Var[W] * fan_in = 2
      2.0
    """
    return _variance_scaling(
        2.0, mode, _normal_dist(truncated), in_axis, out_axis, batch_axis, dtype, "he_normal"
    )


def he_uniform(
    in_axis: Axes = -2,
    out_axis: Axes = -1,
    batch_axis: Axes = (),
    *,
    mode: str = "fan_in",
    dtype: Any = None,
) -> Initializer:
    """He/Kaiming uniform: ``U[-b, b)`` with ``b = sqrt(6 / fan_in)``, so ``Var[W] = 2 / fan_in``.

    Args:
      in_axis, out_axis, batch_axis: the kernel layout, see :func:`compute_fans`.
      mode: ``"fan_in"`` (default) or ``"fan_out"`` (any of :data:`MODES`).
      dtype: the default output dtype (float32 if None).

    Returns:
      An Initializer.

    Example:
      >>> import jax
      >>> w = he_uniform()(jax.random.key(0), (600, 10))
      >>> bool(abs(w).max() < 0.1)  # sqrt(6 / 600) = 0.1
      True
    """
    return _variance_scaling(
        2.0, mode, "uniform", in_axis, out_axis, batch_axis, dtype, "he_uniform"
    )


glorot_normal = xavier_normal
glorot_uniform = xavier_uniform
kaiming_normal = he_normal
kaiming_uniform = he_uniform


def gain(activation: str, param: float | None = None) -> float:
    """The recommended gain (std multiplier) for an activation, as torch's ``calculate_gain``.

    ======================================  ===========================
    activation                              gain
    ======================================  ===========================
    linear, identity, conv*, sigmoid        1
    tanh                                    5/3
    relu                                    sqrt(2)
    leaky_relu (negative slope ``a``)       sqrt(2 / (1 + a^2))
    selu                                    3/4
    ======================================  ===========================

    Use as ``variance_scaling(gain(act) ** 2, "fan_in")`` or ``xavier_normal(gain=gain(act))``.

    Args:
      activation: one of :data:`ACTIVATIONS`.
      param: ``leaky_relu``'s negative slope (default 0.01); not accepted for other activations.

    Returns:
      The gain, a Python float.

    Raises:
      ValueError: an unknown activation (the message lists the valid ones), or ``param`` given
        for an activation that has none.
      TypeError: a non-numeric ``param``.

    Example:
      >>> gain("relu") ** 2
      2.0000000000000004
      >>> round(gain("leaky_relu", 0.2), 4)
      1.3868
    """
    check_choice(activation, ACTIVATIONS, "activation")
    if activation != "leaky_relu" and param is not None:
        raise ValueError(
            f"gain: param is only used by 'leaky_relu' (its negative slope); found "
            f"param={param!r} for activation {activation!r}. Drop param."
        )
    if activation == "tanh":
        return 5.0 / 3.0
    if activation == "relu":
        return math.sqrt(2.0)
    if activation == "selu":
        return 0.75
    if activation == "leaky_relu":
        a = 0.01 if param is None else param
        if not isinstance(a, int | float | np.integer | np.floating) or isinstance(a, bool):
            raise TypeError(f"gain: leaky_relu's negative slope must be a number, found {a!r}.")
        return math.sqrt(2.0 / (1.0 + float(a) ** 2))
    return 1.0


# --------------------------------------------------------------------------- orthogonal, identity


def orthogonal(gain: float = 1.0, column_axis: int = -1, *, dtype: Any = None) -> Initializer:
    """Haar-distributed (uniformly random) orthogonal matrices, times ``gain``.

    The kernel is viewed as a matrix with ``n = shape[column_axis]`` columns and
    ``m = prod(shape) / n`` rows (a conv kernel is flattened over its receptive field and input
    channels). A Gaussian ``max(m, n) x min(m, n)`` matrix is factored ``A = QR``; multiplying
    ``Q``'s columns by ``sign(diag(R))`` makes the factorization unique and ``Q`` Haar-distributed
    (Mezzadri 2007; without it Householder QR biases the signs). The result has orthonormal
    columns (``W^T W = gain^2 I``) when ``m >= n`` and orthonormal rows (``W W^T = gain^2 I``)
    when ``m < n``. Every entry has variance ``gain^2 / max(m, n)``.

    Cost: one ``O(max(m, n) min(m, n)^2)`` QR on top of the Gaussian draw.

    Args:
      gain: multiplies the matrix, > 0 (``gain("relu")`` for ReLU networks).
      column_axis: the axis holding the columns (the output features, ``-1``).
      dtype: the default output dtype (float32 if None).

    Returns:
      An Initializer; it raises ValueError for a shape of fewer than two dimensions or a
      ``column_axis`` out of range.

    Raises:
      ValueError: ``gain`` is not a finite positive number.
      TypeError: ``column_axis`` is not an int, or ``dtype`` is not a floating dtype.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> w = orthogonal()(jax.random.key(0), (64, 32))
      >>> bool(jnp.allclose(w.T @ w, jnp.eye(32), atol=1e-5))
      True
    """
    g = _check_positive(gain, "gain", "orthogonal")
    if not isinstance(column_axis, int | np.integer) or isinstance(column_axis, bool):
        raise TypeError(f"orthogonal: column_axis must be an int, found {column_axis!r}.")

    def check(shape):
        if len(shape) < 2:
            raise ValueError(
                f"orthogonal: needs a shape with at least 2 dimensions, found shape {shape} "
                f"with {len(shape)}."
            )
        _normalize_axes(column_axis, len(shape), "column_axis", shape)

    def sample(key, shape, sdt):
        ax = int(column_axis) % len(shape)
        n_cols = shape[ax]
        n_rows = math.prod(shape) // n_cols
        big, small = max(n_rows, n_cols), min(n_rows, n_cols)
        a = jax.random.normal(key, (big, small), sdt)
        q, r = jnp.linalg.qr(a)  # reduced: q is (big, small) with orthonormal columns
        d = jnp.diagonal(r)
        q = q * jnp.where(d < 0, -1.0, 1.0).astype(sdt)[None, :]
        if n_rows < n_cols:
            q = q.T
        rest = tuple(s for i, s in enumerate(shape) if i != ax)
        q = jnp.moveaxis(q.reshape(rest + (n_cols,)), -1, ax)
        return q * jnp.asarray(g, sdt)

    return _make(sample, "orthogonal", dtype, check)


def identity(gain: float = 1.0, *, dtype: Any = None) -> Initializer:
    """The identity map, times ``gain``: ``eye`` for dense, a Dirac delta for conv kernels.

    A dense ``(n_in, n_out)`` kernel gets ``gain * eye(n_in, n_out)`` (rectangular: the first
    ``min(n_in, n_out)`` features pass through). A convolution kernel in the jax/flax layout
    ``(*spatial, c_in, c_out)`` is zero except at the spatial centre ``((k - 1) // 2, ...)``, where
    it is ``gain * eye(c_in, c_out)``, so a stride-1 ``"SAME"`` convolution returns its input (the
    torch ``dirac_`` convention). The key is ignored; the result is deterministic.

    Args:
      gain: multiplies the map, > 0.
      dtype: the default output dtype (float32 if None).

    Returns:
      An Initializer; it raises ValueError for a shape of fewer than two dimensions.

    Raises:
      ValueError: ``gain`` is not a finite positive number.

    Example:
      >>> import jax
      >>> identity()(jax.random.key(0), (2, 3))
      Array([[1., 0., 0.],
             [0., 1., 0.]], dtype=float32)
    """
    g = _check_positive(gain, "gain", "identity")

    def check(shape):
        if len(shape) < 2:
            raise ValueError(
                f"identity: needs a shape (..., c_in, c_out) with at least 2 dimensions, found "
                f"shape {shape} with {len(shape)}."
            )

    def sample(key, shape, sdt):
        del key
        eye = jnp.eye(shape[-2], shape[-1], dtype=sdt) * jnp.asarray(g, sdt)
        if len(shape) == 2:
            return eye
        centre = tuple((k - 1) // 2 for k in shape[:-2])
        return jnp.zeros(shape, sdt).at[centre].set(eye)

    return _make(sample, "identity", dtype, check)


# --------------------------------------------------------------------------- DeepNorm


def deepnorm(
    num_layers: int,
    arch: str = "encoder",
    num_decoder_layers: int | None = None,
    *,
    stack: str | None = None,
    in_axis: Axes = -2,
    out_axis: Axes = -1,
    batch_axis: Axes = (),
    dtype: Any = None,
) -> Initializer:
    """DeepNet's scaled initialization: Xavier-normal weights with gain ``beta``.

    ``Var[W] = beta^2 * 2 / (fan_in + fan_out)`` with ``beta`` from the DeepNet table
    (:func:`chainrule.deepnorm_constants`): ``(8N)^(-1/4)`` for an N-layer encoder or decoder;
    for encoder-decoder, ``0.87 (N^4 M)^(-1/16)`` (encoder) and ``(12M)^(-1/4)`` (decoder). The
    paper applies it to the feed-forward, value and output projections (query and key projections
    keep ``xavier_normal()``), i.e. ``torch.nn.init.xavier_normal_(w, gain=beta)``: the weights
    are *multiplied* by ``beta < 1``. Pair it with ``deep_norm``'s residual scale ``alpha``.

    Args:
      num_layers: N, the number of encoder (or decoder, for ``arch="decoder"``) layers, >= 1.
      arch: ``"encoder"``, ``"decoder"`` or ``"encoder-decoder"``.
      num_decoder_layers: M for ``"encoder-decoder"`` (defaults to ``num_layers``).
      stack: whose beta to use, ``"encoder"`` or ``"decoder"``; defaults to ``"decoder"`` for
        ``arch="decoder"`` and ``"encoder"`` otherwise.
      in_axis, out_axis, batch_axis: the kernel layout, see :func:`compute_fans`.
      dtype: the default output dtype (float32 if None).

    Returns:
      An Initializer.

    Raises:
      ValueError: an unknown ``arch`` or ``stack``, or a layer count below 1.

    Example:
      >>> import jax
      >>> w = deepnorm(18)(jax.random.key(0), (512, 512))  # beta = (8 * 18) ** -0.25 = 0.289
      >>> round(float(w.std() * 512 ** 0.5), 2)
      0.29
    """
    check_choice(arch, ARCHS, "arch")
    if stack is None:
        stack = "decoder" if arch == "decoder" else "encoder"
    check_choice(stack, ("encoder", "decoder"), "stack")
    c = deepnorm_constants(num_layers, arch, num_decoder_layers)
    beta = c.decoder_beta if stack == "decoder" else c.encoder_beta
    return _variance_scaling(
        beta * beta, "fan_avg", "normal", in_axis, out_axis, batch_axis, dtype, "deepnorm"
    )
