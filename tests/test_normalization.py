"""Tests for chainrule.normalization: parity with flax and torch, stability, gradients, errors.

Error model for parity tolerances: chainrule and the reference evaluate the same formula
``(x - mean) * rsqrt(var + eps) * scale + bias`` in the same dtype, differing only in the order
of the n-term sums of the statistics (and chainrule's rounding correction of the mean). Each
statistic then carries a relative error of at most ~n * eps, which reaches y linearly, so
``|y - y_ref| <= C * n * eps * (1 + |y|)``; we use C = 8. Running statistics after k steps of
an exponential moving average inherit the same bound (the average is a contraction).
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from jax.test_util import check_grads

import chainrule as cr
from chainrule import normalization as crn


def _tol(dtype, n):
    return 8 * n * float(jnp.finfo(dtype).eps)


def _close(a, b, dtype, n):
    tol = _tol(dtype, n)
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=tol, atol=tol)


def _rand(key, shape, dtype, loc=0.0, scale=1.0):
    return (loc + scale * jax.random.normal(jax.random.PRNGKey(key), shape, jnp.float64)).astype(
        dtype
    )


def _grad_check(f, args):
    """First-order check (forward and reverse mode) with the project's float64 checker.

    Its tolerances come from a Richardson error estimate of the finite differences plus AD
    rounding (see ``CheckReport.summary()``); second order is checked in
    ``test_second_order_through_every_rule``.
    """
    report = cr.check_grads(f, args, order=1, modes=("fwd", "rev"))
    assert report.passed, report.summary()
    assert "SKIP" not in report.summary(), report.summary()


# ------------------------------------------------------------------------------------------
# Parity with flax.linen
# ------------------------------------------------------------------------------------------

LN_CASES = [
    ((4, 6), -1, None),
    ((2, 3, 5), (1, 2), None),
    ((2, 3, 5), (1, 2), -1),
]


@pytest.mark.parametrize("shape,axis,feature_axis", LN_CASES)
def test_layer_norm_matches_flax(dtype, shape, axis, feature_axis):
    nn = pytest.importorskip("flax.linen")
    x = _rand(0, shape, dtype, loc=2.0, scale=3.0)
    fax = axis if feature_axis is None else feature_axis
    fshape = tuple(shape[a] for a in np.atleast_1d(fax))
    params = {"scale": _rand(1, fshape, dtype, 1.0), "bias": _rand(2, fshape, dtype)}
    mod = nn.LayerNorm(
        epsilon=1e-5,
        reduction_axes=axis,
        feature_axes=fax,
        use_fast_variance=False,
        dtype=dtype,
        param_dtype=dtype,
    )
    ref = mod.apply({"params": params}, x)
    got = crn.layer_norm(x, params, axis=axis, feature_axis=feature_axis, eps=1e-5)
    assert got.dtype == x.dtype and got.shape == x.shape
    n = math.prod(shape[a] for a in np.atleast_1d(axis))
    _close(got, ref, dtype, n)


@pytest.mark.parametrize("shape,axis", [((4, 6), -1), ((2, 3, 5), (1, 2))])
def test_rms_norm_matches_flax(dtype, shape, axis):
    nn = pytest.importorskip("flax.linen")
    x = _rand(3, shape, dtype, loc=1.0, scale=2.0)
    fshape = tuple(shape[a] for a in np.atleast_1d(axis))
    params = {"scale": _rand(4, fshape, dtype, 1.0)}
    mod = nn.RMSNorm(
        epsilon=1e-6, reduction_axes=axis, feature_axes=axis, dtype=dtype, param_dtype=dtype
    )
    ref = mod.apply({"params": params}, x)
    got = crn.rms_norm(x, params, axis=axis)
    _close(got, ref, dtype, math.prod(fshape))


@pytest.mark.parametrize("shape,axis", [((16, 4), -1), ((4, 3, 3, 2), -1), ((6, 3, 5), 1)])
def test_batch_norm_matches_flax_over_steps(dtype, shape, axis):
    nn = pytest.importorskip("flax.linen")
    nfeat = shape[axis]
    params, state = crn.batch_norm_init(nfeat, dtype)
    params = {"scale": _rand(5, (nfeat,), dtype, 1.0), "bias": _rand(6, (nfeat,), dtype)}
    state = jax.tree.map(lambda v: v.astype(dtype), state)
    mod = nn.BatchNorm(
        momentum=0.9,
        epsilon=1e-5,
        axis=axis,
        use_fast_variance=False,
        dtype=dtype,
        param_dtype=dtype,
    )
    fstate = state
    n = math.prod(shape) // nfeat
    for step in range(4):
        x = _rand(10 + step, shape, dtype, loc=step - 1.0, scale=1.0 + step)
        y, state = crn.batch_norm(x, params, state, training=True, momentum=0.9, axis=axis)
        yf, upd = mod.apply(
            {"params": params, "batch_stats": fstate},
            x,
            use_running_average=False,
            mutable=["batch_stats"],
        )
        fstate = upd["batch_stats"]
        _close(y, yf, dtype, n)
        _close(state["mean"], fstate["mean"], dtype, n)
        _close(state["var"], fstate["var"], dtype, n)
    # Inference with the accumulated statistics.
    x = _rand(99, shape, dtype, loc=0.5)
    y, same = crn.batch_norm(x, params, state, training=False, axis=axis)
    yf = mod.apply({"params": params, "batch_stats": fstate}, x, use_running_average=True)
    _close(y, yf, dtype, n)
    assert same["mean"] is state["mean"] and same["var"] is state["var"]


# ------------------------------------------------------------------------------------------
# Parity with torch (running statistics under the momentum conversion)
# ------------------------------------------------------------------------------------------


def test_batch_norm_matches_torch_running_statistics():
    torch = pytest.importorskip("torch")
    m = 0.1
    tbn = torch.nn.BatchNorm1d(4, momentum=m, eps=1e-5, dtype=torch.float64)
    with torch.no_grad():
        tbn.weight.copy_(torch.tensor([1.0, 2.0, 0.5, -1.0], dtype=torch.float64))
        tbn.bias.copy_(torch.tensor([0.0, 1.0, -1.0, 0.5], dtype=torch.float64))
    params = {
        "scale": jnp.asarray(tbn.weight.detach().numpy()),
        "bias": jnp.asarray(tbn.bias.detach().numpy()),
    }
    _, state = crn.batch_norm_init(4, jnp.float64)
    tbn.train()
    for step in range(5):
        x = np.array(_rand(20 + step, (8, 4), jnp.float64, loc=step, scale=1 + step))
        yt = tbn(torch.from_numpy(x)).detach().numpy()
        y, state = crn.batch_norm(
            jnp.asarray(x),
            params,
            state,
            training=True,
            momentum=crn.torch_momentum(m),
            unbiased_running_var=True,
        )
        _close(y, yt, jnp.float64, 8)
        _close(state["mean"], tbn.running_mean.numpy(), jnp.float64, 8)
        _close(state["var"], tbn.running_var.numpy(), jnp.float64, 8)
    tbn.eval()
    x = np.array(_rand(40, (3, 4), jnp.float64))
    y, _ = crn.batch_norm(jnp.asarray(x), params, state, training=False)
    _close(y, tbn(torch.from_numpy(x)).detach().numpy(), jnp.float64, 8)


def test_batch_norm_torch_2d_channels_first():
    torch = pytest.importorskip("torch")
    tbn = torch.nn.BatchNorm2d(3, momentum=0.2, dtype=torch.float64)
    _, state = crn.batch_norm_init(3, jnp.float64)
    x = np.array(_rand(41, (2, 3, 4, 5), jnp.float64, loc=3.0))
    yt = tbn(torch.from_numpy(x)).detach().numpy()
    y, state = crn.batch_norm(
        jnp.asarray(x),
        None,
        state,
        training=True,
        axis=1,
        momentum=crn.torch_momentum(0.2),
        unbiased_running_var=True,
    )
    _close(y, yt, jnp.float64, 40)
    _close(state["var"], tbn.running_var.numpy(), jnp.float64, 40)


def test_torch_momentum_conversion():
    assert crn.torch_momentum(0.1) == pytest.approx(0.9)
    assert crn.torch_momentum(0.0) == 1.0
    with pytest.raises(ValueError, match=r"torch momentum must lie in \[0, 1\]"):
        crn.torch_momentum(1.5)


def test_running_average_formula():
    # new = momentum * old + (1 - momentum) * batch, with the biased batch variance.
    x = jnp.array([[0.0, 10.0], [2.0, 14.0], [4.0, 12.0]])
    state = {"mean": jnp.array([1.0, -1.0]), "var": jnp.array([2.0, 3.0])}
    _, new = crn.batch_norm(x, None, state, training=True, momentum=0.75)
    xb = np.asarray(x)
    np.testing.assert_allclose(new["mean"], 0.75 * state["mean"] + 0.25 * xb.mean(0), rtol=1e-6)
    np.testing.assert_allclose(new["var"], 0.75 * state["var"] + 0.25 * xb.var(0), rtol=1e-6)
    _, new_u = crn.batch_norm(
        x, None, state, training=True, momentum=0.75, unbiased_running_var=True
    )
    np.testing.assert_allclose(
        new_u["var"], 0.75 * state["var"] + 0.25 * xb.var(0, ddof=1), rtol=1e-6
    )


# ------------------------------------------------------------------------------------------
# Stability and precision
# ------------------------------------------------------------------------------------------


def test_two_pass_is_stable():
    """Mean 1e4, spread 1e-2, float32: unit variance within 1e-2; E[x^2]-E[x]^2 fails."""
    x = _rand(7, (8, 256), jnp.float32, loc=1e4, scale=1e-2)
    eps = 1e-10  # negligible against the variance 1e-4, so the target really is 1
    y = np.asarray(crn.layer_norm(x, eps=eps), np.float64)
    assert np.all(np.abs(y.var(-1) - 1) < 1e-2)
    # Against a float64 evaluation on the same float32 data: the error is ~eps_f32 * |y|.
    x64 = np.asarray(x, np.float64)
    ref = (x64 - x64.mean(-1, keepdims=True)) / np.sqrt(x64.var(-1, keepdims=True) + eps)
    np.testing.assert_allclose(y, ref, atol=_tol(jnp.float32, 64) * np.abs(ref).max())
    # Batch norm: the same data with samples along axis 0.
    _, state = crn.batch_norm_init(8)
    yb, _ = crn.batch_norm(x.T, None, state, training=True, eps=eps)
    assert np.all(np.abs(np.asarray(yb, np.float64).var(0) - 1) < 1e-2)
    # The one-pass formula in float32 on the same data: off by far more than 1e-2 (here the
    # rounding of E[x^2] ~ 1e8 alone is ~4, against a variance of 1e-4).
    m = jnp.mean(x, -1, keepdims=True)
    naive_var = jnp.maximum(jnp.mean(x * x, -1, keepdims=True) - m * m, 0.0)
    y_naive = np.asarray((x - m) * jax.lax.rsqrt(naive_var + eps), np.float64)
    assert np.all(np.abs(y_naive.var(-1) - 1) > 1e-2)
    # flax's default (fast variance) shows the same failure.
    nn = pytest.importorskip("flax.linen")
    y_flax = nn.LayerNorm(epsilon=eps, use_scale=False, use_bias=False).apply({}, x)
    assert np.any(np.abs(np.asarray(y_flax, np.float64).var(-1) - 1) > 1e-2)


@pytest.mark.parametrize("axis", [-1, 0, (0, 2)])
def test_stable_forward_and_backward_over_any_axes(axis):
    """Mean 1e4, spread 1e-2, float32: output and VJP against float64 on the same data, for
    trailing and leading reduced axes (two spellings of the kernel, see _centered)."""
    x = _rand(21, (16, 8, 32), jnp.float32, loc=1e4, scale=1e-2)
    g = _rand(22, (16, 8, 32), jnp.float32)
    eps = 1e-10
    y, pull = jax.vjp(lambda x: crn.layer_norm(x, axis=axis, eps=eps), x)
    (dx,) = pull(g)
    ax = (axis,) if isinstance(axis, int) else axis
    x64, g64 = np.asarray(x, np.float64), np.asarray(g, np.float64)
    d = x64 - x64.mean(ax, keepdims=True)
    r = 1 / np.sqrt((d * d).mean(ax, keepdims=True) + eps)
    ref_y = d * r
    ref_dx = r * (g64 - g64.mean(ax, keepdims=True)) - d * r**3 * (d * g64).mean(ax, keepdims=True)
    np.testing.assert_allclose(np.asarray(y), ref_y, atol=_tol(jnp.float32, 64) * 4)
    np.testing.assert_allclose(
        np.asarray(dx), ref_dx, atol=_tol(jnp.float32, 64) * np.abs(ref_dx).max()
    )
    # batch norm with the same axes as its batch axes: the same numbers
    feat = tuple(a for a in range(3) if a not in tuple(a % 3 for a in ax))
    _, state = crn.batch_norm_init(tuple(x.shape[a] for a in feat))
    yb, pull_b = jax.vjp(
        lambda x: crn.batch_norm(x, None, state, training=True, axis=feat, eps=eps)[0], x
    )
    np.testing.assert_allclose(np.asarray(yb), ref_y, atol=_tol(jnp.float32, 64) * 4)
    np.testing.assert_allclose(
        np.asarray(pull_b(g)[0]), ref_dx, atol=_tol(jnp.float32, 64) * np.abs(ref_dx).max()
    )


@pytest.mark.parametrize("half", ["bfloat16", "float16"])
def test_half_precision_reduces_in_float32(half):
    x = _rand(8, (4, 64), jnp.float32, loc=3.0).astype(half)
    params = crn.layer_norm_init(64, jnp.float32)
    y = crn.layer_norm(x, params)
    assert y.dtype == jnp.dtype(half)
    # Identical to computing in float32 from the same (half-precision) values, then rounding.
    expect = crn.layer_norm(x.astype(jnp.float32), params).astype(half)
    np.testing.assert_array_equal(np.asarray(y, np.float32), np.asarray(expect, np.float32))
    _, state = crn.batch_norm_init(64)
    yb, new = crn.batch_norm(x, None, state, training=True)
    assert yb.dtype == jnp.dtype(half) and new["mean"].dtype == jnp.float32
    yr = crn.rms_norm(x)
    assert yr.dtype == jnp.dtype(half)


@settings(max_examples=6)
@given(
    rows=st.integers(1, 4),
    cols=st.integers(2, 12),
    loc=st.floats(-100, 100),
    log_scale=st.floats(-2, 2),
    seed=st.integers(0, 2**16),
)
def test_layer_norm_properties(rows, cols, loc, log_scale, seed):
    """Zero mean and variance var/(var+eps) per row; invariant to shift and positive scale."""
    x = _rand(seed, (rows, cols), jnp.float64, loc=loc, scale=10.0**log_scale)
    eps = 1e-5
    ln = jax.jit(crn.layer_norm, static_argnames="eps")
    y = np.asarray(ln(x, eps=eps))
    v = np.asarray(x).var(-1)
    tol = _tol(jnp.float64, cols) * (1 + abs(loc) / 10.0**log_scale)
    np.testing.assert_allclose(y.mean(-1), 0, atol=tol)
    np.testing.assert_allclose(y.var(-1), v / (v + eps), atol=tol, rtol=tol)
    y2 = np.asarray(ln(2.0 * x + 7.0, eps=4 * eps))
    np.testing.assert_allclose(y2, y, atol=tol * 10, rtol=tol * 10)


# ------------------------------------------------------------------------------------------
# Gradients (float64)
# ------------------------------------------------------------------------------------------


def test_gradients_layer_and_rms_norm():
    x = _rand(11, (3, 2, 4), jnp.float64, loc=1.0, scale=2.0)
    p = {"scale": _rand(12, (2, 4), jnp.float64, 1.0), "bias": _rand(13, (2, 4), jnp.float64)}
    _grad_check(lambda x, p: crn.layer_norm(x, p, axis=(1, 2)), (x, p))
    _grad_check(lambda x, p: crn.layer_norm(x, p, axis=-1, feature_axis=(1, 2)), (x, p))
    _grad_check(lambda x, p: crn.rms_norm(x, p, axis=(-2, -1)), (x, p))
    _grad_check(lambda x: crn.layer_norm(x), (x,))


def test_gradients_batch_norm():
    x = _rand(14, (5, 3), jnp.float64, loc=-2.0, scale=0.5)
    params = {"scale": _rand(15, (3,), jnp.float64, 1.0), "bias": _rand(16, (3,), jnp.float64)}
    state = {"mean": jnp.full((3,), -1.5), "var": jnp.full((3,), 0.3)}
    _grad_check(lambda x, p: crn.batch_norm(x, p, state, training=True)[0], (x, params))
    _grad_check(lambda x, p: crn.batch_norm(x, p, state, training=False)[0], (x, params))
    x4 = _rand(17, (2, 3, 2, 2), jnp.float64, loc=3.0)
    _grad_check(lambda x: crn.batch_norm(x, None, state, training=True, axis=1)[0], (x4,))


def test_second_order_through_every_rule():
    """Forward-over-reverse and reverse-over-reverse through the custom tangent rule."""
    x = _rand(18, (4, 3), jnp.float64, loc=1.0, scale=2.0)
    p = {"scale": _rand(19, (3,), jnp.float64, 1.0), "bias": _rand(20, (3,), jnp.float64)}

    def f(x, p):
        # Layer norm (centered) and RMS norm (uncentered) cover both branches of the rule that
        # batch norm shares; the product makes the second derivative mix them.
        # Batch norm (statistics over the leading axis) takes the other spelling of the rule.
        bn = crn.batch_norm(x, p, {"mean": p["bias"], "var": p["scale"] ** 2}, training=True)[0]
        return jnp.sin(crn.layer_norm(x, p)) * crn.rms_norm(x, {"scale": p["scale"]}) + bn**3

    # jax's float64 tolerance (1e-5) bounds the truncation error of its central differences
    # (step 1e-4 at order 2: O(h^2) times the third derivative) plus roundoff.
    check_grads(jax.jit(f), (x, p), order=2, modes=("fwd", "rev"))
    report = cr.check_grads(f, (x, p), order=2, modes=("fwd", "rev"))
    assert report.passed and not report.skipped, report.summary()


def test_gradients_standardize_and_wiring():
    x = _rand(17, (6, 3), jnp.float64, loc=4.0)
    stats = crn.fit_standardization(x)
    _grad_check(lambda x: crn.standardize(x, stats), (x,))
    _grad_check(lambda x: crn.standardize(x, crn.fit_standardization(x)), (x,))
    w = _rand(18, (3, 3), jnp.float64)
    p = crn.layer_norm_init(3, jnp.float64)

    def sub(h):
        return jnp.tanh(h @ w)

    def norm(h):
        return crn.layer_norm(h, p)

    _grad_check(lambda x: crn.post_norm(x, sub, norm), (x,))
    _grad_check(lambda x: crn.pre_norm(x, sub, norm), (x,))
    _grad_check(lambda x: crn.deep_norm(x, sub, norm, 1.7), (x,))


# ------------------------------------------------------------------------------------------
# Batch norm: train vs eval, one sample at a time, cross-device statistics
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("unbiased", [False, True])
def test_batch_norm_eval_matches_train_after_training(unbiased):
    """After many steps on a fixed distribution the running statistics are the population's.

    Train mode normalizes with the batch's statistics, whose sampling error is ~1/sqrt(B) in
    units of the spread; the running statistics average ~(1+m)/(1-m) batches. So eval and
    train outputs on one batch differ by ~(1 + |y|)/sqrt(B): we allow 4x that.
    """
    b, f = 2048, 3
    loc = jnp.array([5.0, -3.0, 0.0])
    scale = jnp.array([2.0, 0.1, 10.0])
    params, state = crn.batch_norm_init(f)

    def step(state, key):
        x = loc + scale * jax.random.normal(key, (b, f))
        _, state = crn.batch_norm(
            x, params, state, training=True, momentum=0.9, unbiased_running_var=unbiased
        )
        return state, None

    state, _ = jax.lax.scan(step, state, jax.random.split(jax.random.PRNGKey(0), 100))
    x = loc + scale * jax.random.normal(jax.random.PRNGKey(1), (b, f))
    y_train, _ = crn.batch_norm(x, params, state, training=True)
    y_eval, _ = crn.batch_norm(x, params, state, training=False)
    err = np.abs(np.asarray(y_train - y_eval))
    assert np.all(err <= 4 * (1 + np.abs(np.asarray(y_train))) / math.sqrt(b))
    # And one sample at a time (no batch axis) equals the batched evaluation.
    y_one = jax.vmap(lambda r: crn.batch_norm(r, params, state, training=False)[0])(x[:5])
    np.testing.assert_allclose(y_one, y_eval[:5], rtol=1e-6, atol=1e-6)
    y0, _ = crn.batch_norm(x[0], params, state, training=False)
    np.testing.assert_allclose(y0, y_eval[0], rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("unbiased", [False, True])
def test_batch_norm_axis_name_under_vmap(unbiased):
    """Statistics over a vmapped 'device' axis equal those of the concatenated batch."""
    d, b, f = 4, 3, 2
    x = _rand(30, (d, b, f), jnp.float64, loc=1.0, scale=2.0)
    params, state = crn.batch_norm_init(f, jnp.float64)
    params = {"scale": jnp.array([1.5, -0.5]), "bias": jnp.array([0.1, 0.2])}
    kw = dict(training=True, momentum=0.8, unbiased_running_var=unbiased)

    def per_device(xd):
        return crn.batch_norm(xd, params, state, axis_name="dev", **kw)

    y, new = jax.vmap(per_device, axis_name="dev")(x)
    y_ref, new_ref = crn.batch_norm(x.reshape(d * b, f), params, state, **kw)
    _close(y.reshape(d * b, f), y_ref, jnp.float64, d * b)
    for k in ("mean", "var"):
        for i in range(d):
            _close(new[k][i], new_ref[k], jnp.float64, d * b)
    # The gradient sees the cross-device statistics too.
    gx = jax.grad(lambda x: jnp.sum(jnp.sin(jax.vmap(per_device, axis_name="dev")(x)[0])))(x)
    gx_ref = jax.grad(lambda x: jnp.sum(jnp.sin(crn.batch_norm(x, params, state, **kw)[0])))(
        x.reshape(d * b, f)
    )
    _close(gx.reshape(d * b, f), gx_ref, jnp.float64, d * b)
    # One sample per device: no local batch axis, statistics entirely across the axis.
    y1, _ = jax.vmap(lambda r: crn.batch_norm(r, None, state, axis_name="i", **kw), axis_name="i")(
        x[:, 0]
    )
    _close(y1, crn.batch_norm(x[:, 0], None, state, **kw)[0], jnp.float64, d)


def test_layer_norm_axis_name_features_split():
    x = _rand(31, (2, 12), jnp.float64, loc=3.0)
    chunks = x.reshape(2, 3, 4).transpose(1, 0, 2)  # 3 "devices" hold 4 features each

    def f(c):
        return crn.layer_norm(c, axis_name="model")

    y = jax.vmap(f, axis_name="model")(chunks).transpose(1, 0, 2).reshape(2, 12)
    _close(y, crn.layer_norm(x), jnp.float64, 12)
    t = _rand(32, chunks.shape, jnp.float64)
    _, ty = jax.jvp(jax.vmap(f, axis_name="model"), (chunks,), (t,))
    _, ty_ref = jax.jvp(crn.layer_norm, (x,), (t.transpose(1, 0, 2).reshape(2, 12),))
    _close(ty.transpose(1, 0, 2).reshape(2, 12), ty_ref, jnp.float64, 12)


SHARD_MAP_SCRIPT = textwrap.dedent(
    """
    import jax, jax.numpy as jnp, numpy as np
    from jax.sharding import Mesh, PartitionSpec as P
    from chainrule import normalization as crn
    assert jax.device_count() == 4, jax.devices()
    mesh = Mesh(np.array(jax.devices()), ("data",))
    x = jax.random.normal(jax.random.PRNGKey(0), (16, 3)) * 2 + 1
    params, state = crn.batch_norm_init(3)
    def local(x):
        return crn.batch_norm(x, params, state, training=True, axis_name="data")
    f = jax.jit(jax.shard_map(local, mesh=mesh, in_specs=P("data"), out_specs=(P("data"), P())))
    y, new = f(x)
    y_ref, new_ref = crn.batch_norm(x, params, state, training=True)
    np.testing.assert_allclose(y, y_ref, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(new["var"], new_ref["var"], rtol=1e-5, atol=1e-6)
    print("OK")
    """
)


def test_batch_norm_shard_map_subprocess():
    """Real SPMD across 4 CPU devices (a fresh process: the device count is fixed at start)."""
    env = dict(os.environ)
    env["XLA_FLAGS"] = env.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=4"
    env["JAX_PLATFORMS"] = "cpu"
    out = subprocess.run(
        [sys.executable, "-c", SHARD_MAP_SCRIPT],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0 and "OK" in out.stdout, out.stderr[-3000:]


def test_batch_norm_under_jit_and_grad_of_params():
    params, state = crn.batch_norm_init(3)
    x = _rand(33, (8, 3), jnp.float32, loc=1.0)

    @jax.jit
    def loss(params, state, x):
        y, new = crn.batch_norm(x, params, state, training=True)
        return jnp.sum(y**2 * jnp.arange(1.0, 4.0)), new

    (val, new), g = jax.value_and_grad(loss, has_aux=True)(params, state, x)
    assert set(g) == {"scale", "bias"} and set(new) == {"mean", "var"}
    # d/dscale sum(w * (s * xhat + b)^2) = sum(2 w xhat (s xhat + b)) = 2 w n at s=1, b=0.
    np.testing.assert_allclose(g["scale"], 2 * 8 * np.arange(1.0, 4.0), rtol=1e-4)


# ------------------------------------------------------------------------------------------
# Standardization
# ------------------------------------------------------------------------------------------


def test_standardization_fit_apply_invert(dtype):
    scipy_stats = pytest.importorskip("scipy.stats")
    x = _rand(50, (20, 4), dtype, loc=3.0, scale=2.0)
    x = x.at[:, 2].set(7.0)  # a constant feature
    st_ = crn.fit_standardization(x)
    z = crn.standardize(x, st_)
    assert z.dtype == x.dtype and bool(jnp.all(jnp.isfinite(z)))
    assert np.asarray(st_.constant).tolist() == [[False, False, True, False]]
    ref = scipy_stats.zscore(np.asarray(x, np.float64)[:, [0, 1, 3]], axis=0)
    _close(np.asarray(z)[:, [0, 1, 3]], ref, dtype, 20)
    np.testing.assert_array_equal(np.asarray(z)[:, 2], 0.0)
    _close(crn.unstandardize(z, st_), x, dtype, 20)
    # One sample at a time, and sample std (ddof=1) like scipy's.
    _close(crn.standardize(x[3], st_), z[3], dtype, 1)
    z1 = crn.standardize(x, crn.fit_standardization(x, ddof=1))
    _close(
        np.asarray(z1)[:, 0], scipy_stats.zscore(np.asarray(x[:, 0], np.float64), ddof=1), dtype, 20
    )


def test_standardization_near_constant_feature_and_axes():
    # A feature constant up to float32 roundoff of its mean is treated as constant (no 1e7x
    # amplification of roundoff); a genuinely tiny spread near zero is not.
    x = jnp.stack([jnp.full(8, 1e4, jnp.float32), 1e-12 * jnp.arange(8, dtype=jnp.float32)], 1)
    x = x.at[3, 0].set(jnp.nextafter(jnp.float32(1e4), jnp.float32(2e4)))
    st_ = crn.fit_standardization(x)
    assert np.asarray(st_.constant).tolist() == [[True, False]]
    z = np.asarray(crn.standardize(x, st_))
    assert np.all(np.abs(z[:, 0]) < 1e-2) and np.isclose(z[:, 1].std(), 1.0, rtol=1e-5)
    # Several sample axes: per-channel statistics of images (N, H, W, C).
    imgs = _rand(51, (3, 4, 4, 2), jnp.float64, loc=-1.0)
    s2 = crn.fit_standardization(imgs, axis=(0, 1, 2))
    assert s2.mean.shape == (1, 1, 1, 2)
    z2 = np.asarray(crn.standardize(imgs, s2))
    np.testing.assert_allclose(z2.mean((0, 1, 2)), 0, atol=1e-12)
    np.testing.assert_allclose(z2.std((0, 1, 2)), 1, rtol=1e-12)


def test_standardization_constant_feature_exact_and_differentiable():
    # A plain float32 mean of 1000 copies of 0.1 is 0.09999997; the fitted mean of a constant
    # feature must be its value, so that it standardizes to exactly 0.
    x = jnp.stack(
        [jnp.full(1000, 0.1, jnp.float32), jnp.linspace(0, 1, 1000, dtype=jnp.float32)], 1
    )
    st_ = crn.fit_standardization(x)
    assert np.asarray(st_.constant).tolist() == [[True, False]]
    assert float(st_.mean[0, 0]) == np.float32(0.1)
    np.testing.assert_array_equal(np.asarray(crn.standardize(x, st_))[:, 0], 0.0)
    # Differentiating through the fit: the constant feature's scale is the constant 1, so its
    # gradient is finite (sqrt'(0) = inf must not leak in as inf * 0 = NaN).
    xd = jnp.array([[1.0, 5.0], [3.0, 5.0], [2.0, 5.0]])

    def loss(x):
        return jnp.sum(jnp.sin(crn.standardize(x, crn.fit_standardization(x, ddof=np.int64(1)))))

    g = jax.grad(loss)(xd)
    assert bool(jnp.all(jnp.isfinite(g))), g
    np.testing.assert_array_equal(np.asarray(g)[:, 1], 0.0)  # z = x - mean: sums to 0


# ------------------------------------------------------------------------------------------
# Residual wiring and DeepNorm constants
# ------------------------------------------------------------------------------------------


def test_residual_wiring_formulas():
    x = _rand(60, (2, 5), jnp.float64)
    p = {"scale": _rand(61, (5,), jnp.float64, 1.0), "bias": _rand(62, (5,), jnp.float64)}

    def sub(h):
        return jnp.sin(3 * h)

    def norm(h):
        return crn.layer_norm(h, p)

    np.testing.assert_allclose(crn.post_norm(x, sub, norm), norm(x + sub(x)))
    np.testing.assert_allclose(crn.pre_norm(x, sub, norm), x + sub(norm(x)))
    c = crn.deepnorm_constants(12)
    np.testing.assert_allclose(crn.deep_norm(x, sub, norm, c), norm(c.alpha * x + sub(x)))
    np.testing.assert_allclose(crn.deep_norm(x, sub, norm, 2.5), norm(2.5 * x + sub(x)))


def test_deepnorm_constants_is_the_shared_table():
    from chainrule import _deepnorm

    assert crn.deepnorm_constants is _deepnorm.deepnorm_constants
    assert cr.norm is crn and cr.normalization is crn
    n = 18
    c = crn.deepnorm_constants(n)
    assert c.alpha == pytest.approx((2 * n) ** 0.25) and c.beta == pytest.approx((8 * n) ** -0.25)


def test_init_helpers():
    params, state = crn.batch_norm_init(5, jnp.bfloat16)
    assert params["scale"].dtype == jnp.bfloat16 and state["var"].dtype == jnp.float32
    np.testing.assert_array_equal(state["var"], 1.0)
    np.testing.assert_array_equal(state["mean"], 0.0)
    assert crn.layer_norm_init((2, 3))["bias"].shape == (2, 3)
    assert set(crn.rms_norm_init(4)) == {"scale"}
    assert set(crn.layer_norm_init(4, scale=False)) == {"bias"}
    # Parameters may leave out either key.
    x = _rand(63, (3, 4), jnp.float32)
    y = crn.layer_norm(x, {"bias": jnp.ones(4)})
    np.testing.assert_allclose(y, crn.layer_norm(x) + 1, rtol=1e-6)


# ------------------------------------------------------------------------------------------
# Errors
# ------------------------------------------------------------------------------------------


def test_errors_name_the_argument():
    x = jnp.ones((4, 3))
    params, state = crn.batch_norm_init(3)
    with pytest.raises(ValueError, match=r"needs state .* in training mode.*batch_norm_init"):
        crn.batch_norm(x, params, None, training=True)
    with pytest.raises(ValueError, match=r"state is missing key\(s\) \['var'\]"):
        crn.batch_norm(x, params, {"mean": state["mean"]}, training=True)
    with pytest.raises(ValueError, match=r"params\['scale'\] has shape \(4,\), expected \(3,\)"):
        crn.batch_norm(x, {"scale": jnp.ones(4)}, state, training=True)
    with pytest.raises(ValueError, match=r"state\['var'\] has shape \(2,\), expected \(3,\)"):
        crn.batch_norm(x, params, {"mean": state["mean"], "var": jnp.ones(2)}, training=False)
    with pytest.raises(ValueError, match=r"axis=2 is out of range for an input of rank 2"):
        crn.batch_norm(x, params, state, training=True, axis=2)
    with pytest.raises(ValueError, match=r"axis=-3 is out of range"):
        crn.layer_norm(x, axis=-3)
    with pytest.raises(ValueError, match=r"feature_axis=\(0, 5\) is out of range"):
        crn.layer_norm(x, feature_axis=(0, 5))
    with pytest.raises(ValueError, match=r"axis=\(1, -1\) names the same axis twice"):
        crn.rms_norm(x, axis=(1, -1))
    with pytest.raises(ValueError, match=r"params has unknown key\(s\) \['gamma'\]"):
        crn.layer_norm(x, {"gamma": jnp.ones(3)})
    with pytest.raises(ValueError, match=r"params\['scale'\] has shape \(4,\).*layer_norm_init"):
        crn.layer_norm(x, {"scale": jnp.ones(4)})
    with pytest.raises(TypeError, match=r"training must be True or False"):
        crn.batch_norm(x, params, state, training="yes")
    with pytest.raises(ValueError, match=r"momentum must lie in \[0, 1\].*torch_momentum"):
        crn.batch_norm(x, params, state, training=True, momentum=1.1)
    with pytest.raises(ValueError, match=r"momentum must lie in \[0, 1\].*found np.float32\(1.5\)"):
        crn.batch_norm(x, params, state, training=True, momentum=np.float32(1.5))
    with pytest.raises(ValueError, match=r"momentum must lie in \[0, 1\]"):
        crn.batch_norm(x, params, state, training=True, momentum=jnp.asarray(1.5))
    # a traced momentum cannot be checked, and is not refused
    jax.jit(lambda m: crn.batch_norm(x, params, state, training=True, momentum=m))(0.9)
    with pytest.raises(ValueError, match=r"needs at least one batch axis"):
        crn.batch_norm(jnp.ones(3), params, state, training=True)
    with pytest.raises(TypeError, match=r"x must have a real floating dtype, found int32"):
        crn.layer_norm(jnp.ones((2, 3), jnp.int32))
    with pytest.raises(TypeError, match=r"axis must be an int or a sequence of ints"):
        crn.layer_norm(x, axis="last")
    with pytest.raises(ValueError, match=r"sublayer output has shape \(4, 2\).*input's shape"):
        crn.pre_norm(x, lambda h: h[:, :2], crn.layer_norm)
    with pytest.raises(TypeError, match=r"norm must be a one-argument callable"):
        crn.post_norm(x, jnp.tanh, "layer_norm")
    with pytest.raises(ValueError, match=r"ddof must be an integer in \[0, 3\]"):
        crn.fit_standardization(x, ddof=4)
    with pytest.raises(ValueError, match=r"does not broadcast with the fitted statistics"):
        crn.standardize(jnp.ones((4, 5)), crn.fit_standardization(x))
    with pytest.raises(ValueError, match=r"num_features must be positive"):
        crn.batch_norm_init(0)
