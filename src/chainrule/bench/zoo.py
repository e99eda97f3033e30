"""A zoo of correct and deliberately wrong derivative rules, for gradient checkers.

Each :class:`Case` builds ``(f, args)`` for a dtype: ``f`` takes ``*args`` and has either a
correct derivative (a plain JAX function, or a correct ``jax.custom_jvp``/``custom_vjp`` rule)
or a planted bug in a custom rule. ``build`` creates *fresh* function objects on every call, so
benchmarks can measure cold (compile-included) checks without cache hits.

Part of the package (``from chainrule.bench.zoo import CASES``) so that the tests and the
``check`` benchmark suite share it without the benchmarks importing from ``tests/``.

Where a bug lives in one region of input space, the check point ``args`` is chosen to visit it
(a grid spanning both sides of the region boundary): checkers check where they are told to.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np


@dataclasses.dataclass(frozen=True)
class Case:
    """One zoo entry: ``build(dtype) -> (f, args)``; ``bug`` says whether a checker should fail."""

    name: str
    bug: bool
    order: int
    description: str
    build: Callable[[Any], tuple[Callable, tuple]]
    custom_vjp: bool = False  # forward mode does not exist for f
    smooth: bool = True  # False: FD has real errors at kinks, so margins are thinner


def _rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


# ----------------------------------------------------------------------------- bugs


def _sign_error(dt):
    @jax.custom_jvp
    def f(x):
        return jnp.sin(x)

    @f.defjvp
    def f_jvp(p, t):
        (x,), (tx,) = p, t
        return jnp.sin(x), -jnp.cos(x) * tx  # sign error

    return f, (jnp.linspace(-2.0, 2.0, 16, dtype=dt),)


def _missing_factor(dt):
    @jax.custom_jvp
    def f(x):
        return jnp.exp(2 * x)

    @f.defjvp
    def f_jvp(p, t):
        (x,), (tx,) = p, t
        y = jnp.exp(2 * x)
        return y, y * tx  # missing factor 2

    return f, (jnp.linspace(-1.0, 1.0, 16, dtype=dt),)


def _scale_1pct(dt):
    @jax.custom_jvp
    def f(x):
        return jnp.tanh(x)

    @f.defjvp
    def f_jvp(p, t):
        (x,), (tx,) = p, t
        y = jnp.tanh(x)
        return y, 1.01 * (1 - y**2) * tx  # 1% scale error

    return f, (jnp.linspace(-2.0, 2.0, 16, dtype=dt),)


def _additive_1e3(dt):
    @jax.custom_vjp
    def f(x):
        return jnp.sum(jnp.log1p(x**2))

    def fwd(x):
        return f(x), x

    def bwd(x, ct):
        return (ct * (2 * x / (1 + x**2) + 1e-3),)  # additive error 1e-3

    f.defvjp(fwd, bwd)
    return f, (jnp.asarray(_rng(1).normal(size=32), dt),)


_K = 12345


def _single_element_100k(dt):
    @jax.custom_vjp
    def f(x):
        return jnp.sum(jnp.sin(x))

    def fwd(x):
        return f(x), x

    def bwd(x, ct):
        g = jnp.cos(x)
        return (ct * g.at[_K].multiply(-1.0),)  # one wrong element (sign) out of 100k

    f.defvjp(fwd, bwd)
    x = _rng(2).normal(size=100_000)
    x[_K] = 0.3
    return f, (jnp.asarray(x, dt),)


def _swapped_leaves(dt):
    @jax.custom_vjp
    def f(p):
        return jnp.sum(p["a"] ** 2) + jnp.sum(jnp.sin(p["b"]))

    def fwd(p):
        return f(p), p

    def bwd(p, ct):
        return ({"a": ct * jnp.cos(p["b"]), "b": ct * 2 * p["a"]},)  # leaves swapped

    f.defvjp(fwd, bwd)
    r = _rng(3)
    return f, ({"a": jnp.asarray(r.normal(size=8), dt), "b": jnp.asarray(r.normal(size=8), dt)},)


def _batch_rows(dt):
    bad = jnp.zeros(16).at[jnp.array([3, 11])].set(1.0)

    @jax.custom_jvp
    def f(x):  # per-row softplus sums, (16, 8) -> (16,)
        return jnp.sum(jax.nn.softplus(x), axis=1)

    @f.defjvp
    def f_jvp(p, t):
        (x,), (tx,) = p, t
        d = jnp.sum(jax.nn.sigmoid(x) * tx, axis=1)
        return f(x), d * (1 + 0.05 * bad.astype(d.dtype))  # rows 3 and 11 5% off

    return f, (jnp.asarray(_rng(4).normal(size=(16, 8)), dt),)


def _region(dt):
    @jax.custom_jvp
    def f(x):
        return jnp.sum(jax.nn.softplus(x))

    @f.defjvp
    def f_jvp(p, t):
        (x,), (tx,) = p, t
        s = jax.nn.sigmoid(x)
        s = jnp.where(x > 2.0, 1.01 * s, s)  # 1% wrong, only where x > 2
        return f(x), jnp.sum(s * tx)

    # the check point spans the region boundary: 1/6 of the grid lies in x > 2
    return f, (jnp.linspace(-3.0, 3.0, 64, dtype=dt),)


def _wrong_primal(dt):
    @jax.custom_jvp
    def f(x):
        return jnp.sin(x)

    @f.defjvp
    def f_jvp(p, t):
        (x,), (tx,) = p, t
        return jnp.sin(x) * (1 + 1e-3), jnp.cos(x) * tx  # primal off by 0.1%

    return f, (jnp.linspace(-2.0, 2.0, 16, dtype=dt),)


def _second_order_only(dt):
    @jax.custom_jvp
    def cube(x):
        return x**3

    @cube.defjvp
    def cube_jvp(p, t):
        (x,), (tx,) = p, t
        # right first derivative, but stop_gradient kills the second: d2/dx2 = 0, not 6x
        return x**3, 3 * jax.lax.stop_gradient(x) ** 2 * tx

    def f(x):
        return jnp.sum(cube(x))

    return f, (jnp.linspace(-1.5, 1.5, 16, dtype=dt),)


def _wrong_jvp_rule(dt):
    @jax.custom_jvp
    def f(x):
        return x * jnp.exp(x)

    @f.defjvp
    def f_jvp(p, t):
        (x,), (tx,) = p, t
        return x * jnp.exp(x), jnp.exp(x) * tx  # product rule forgotten: (1 + x) e^x

    return f, (jnp.linspace(-1.0, 1.0, 16, dtype=dt),)


# ----------------------------------------------------------------------------- correct


def _large_inputs(dt):
    def f(x):
        return jnp.sum(x * jnp.log(x))

    return f, (jnp.asarray(1e3 * (1 + 0.1 * _rng(5).normal(size=16)), dt),)


def _stiff_exp(dt):
    def f(x):
        return jnp.sum(jnp.exp(20 * x))

    return f, (jnp.linspace(-1.0, 1.0, 16, dtype=dt),)


def _softmax_xent(dt):
    r = _rng(6)
    labels = jax.nn.one_hot(r.integers(0, 10, size=8), 10, dtype=dt)

    def f(z):
        return -jnp.mean(jnp.sum(labels * jax.nn.log_softmax(z), axis=-1))

    return f, (jnp.asarray(3 * r.normal(size=(8, 10)), dt),)


def _sum_100k(dt):
    def f(x):
        return jnp.sum(jnp.log1p(x**2))

    return f, (jnp.asarray(_rng(7).normal(size=100_000), dt),)


def _deep_mlp(dt):
    r = _rng(8)
    depth, width, batch = 8, 32, 16
    xb = jnp.asarray(r.normal(size=(batch, width)), dt)
    yb = jnp.asarray(r.normal(size=(batch, width)), dt)
    ws = [jnp.asarray(r.normal(size=(width, width)) / np.sqrt(width), dt) for _ in range(depth)]

    def f(params):
        h = xb
        for w in params[:-1]:
            h = jnp.tanh(h @ w)
        return jnp.mean((h @ params[-1] - yb) ** 2)

    return f, (ws,)


def _relu_mlp(dt):
    # with 6000 relu units, FD steps cross kinks: at the steps a smooth function wants, the
    # difference quotient of this (seed's) net is wrong by more than its error estimate
    r = _rng(1)
    xb = jnp.asarray(r.normal(size=(32, 64)), dt)
    ws = [jnp.asarray(r.normal(size=(64, 64)) * np.sqrt(2 / 64), dt) for _ in range(3)]

    def f(params):
        h = xb
        for w in params:
            h = jax.nn.relu(h @ w)
        return jnp.mean(h**2)

    return f, (ws,)


def _cancelling_sum(dt):
    # ~0 as a sum of 3e4 terms up to 1.1: it rounds at eps sum|w^3|, ~1e4 times eps |f|
    w = jnp.linspace(-1.5, 1.5, 30_000, dtype=dt)
    return (lambda w: jnp.sum(w**3 / 3)), (w,)


def _near_overflow(dt):
    # e^60 ~ 1e26 is fine in float32 (max 3e38), e^(60 + a step of 20% of 60) is not
    return (lambda x: jnp.sum(jnp.exp(x))), (jnp.asarray(_rng(9).normal(size=64) + 60, dt),)


def _correct_custom(dt):
    @jax.custom_jvp
    def f(x):
        return jax.nn.softplus(x)

    @f.defjvp
    def f_jvp(p, t):
        (x,), (tx,) = p, t
        return jax.nn.softplus(x), jax.nn.sigmoid(x) * tx

    return f, (jnp.linspace(-3.0, 3.0, 16, dtype=dt),)


CASES: tuple[Case, ...] = (
    Case("sign error", True, 1, "custom_jvp of sin with tangent -cos", _sign_error),
    Case("missing factor", True, 1, "custom_jvp of exp(2x) missing the 2", _missing_factor),
    Case("1% scale", True, 1, "custom_jvp of tanh scaled by 1.01", _scale_1pct),
    Case("additive 1e-3", True, 1, "custom_vjp gradient + 1e-3", _additive_1e3, True),
    Case(
        "1 of 100k elements",
        True,
        1,
        "custom_vjp, one element of 100k sign-flipped",
        _single_element_100k,
        True,
    ),
    Case(
        "swapped leaves",
        True,
        1,
        "custom_vjp returns two leaves' gradients swapped",
        _swapped_leaves,
        True,
    ),
    Case("some batch rows", True, 1, "custom_jvp, rows 3 and 11 of 16 5% off", _batch_rows),
    Case("one input region", True, 1, "custom_jvp 1% off only where x > 2", _region),
    Case("wrong primal", True, 1, "custom_jvp primal output 0.1% off", _wrong_primal),
    Case(
        "2nd order only",
        True,
        2,
        "custom_jvp with stop_gradient in the tangent",
        _second_order_only,
    ),
    Case(
        "wrong JVP rule", True, 1, "custom_jvp of x e^x missing the product rule", _wrong_jvp_rule
    ),
    Case("inputs ~1e3", False, 1, "sum(x log x), x ~ 1e3", _large_inputs),
    Case("stiff exp", False, 1, "sum(exp(20 x)), x in [-1, 1]", _stiff_exp),
    Case("softmax x-entropy", False, 1, "mean softmax cross-entropy, logits ~ 3", _softmax_xent),
    Case("sum over 100k", False, 1, "sum(log1p(x^2)) over 1e5 elements", _sum_100k),
    Case("deep tanh MLP (order 2)", False, 2, "8 layers of 32x32 tanh, batch 16", _deep_mlp),
    Case("correct custom_jvp", False, 1, "softplus with a correct custom_jvp", _correct_custom),
    Case(
        "relu MLP (order 2)", False, 2, "3 layers of 64x64 relu, batch 32", _relu_mlp, smooth=False
    ),
    Case("cancelling sum", False, 1, "sum(w^3) over a symmetric grid of 3e4", _cancelling_sum),
    Case("near overflow", False, 2, "sum(exp(x)), x ~ 60 (e^60 ~ 1e26)", _near_overflow),
)

BUGS = tuple(c for c in CASES if c.bug)
CORRECT = tuple(c for c in CASES if not c.bug)


def run_chainrule(case: Case, dtype: Any, **kw: Any):
    """chainrule's check_grads on a freshly built case (order from the case, fwd+rev)."""
    import chainrule as cr

    f, args = case.build(dtype)
    return cr.check_grads(f, args, order=case.order, modes=("fwd", "rev"), **kw)


def run_jax(case: Case, dtype: Any) -> tuple[bool, str]:
    """``jax.test_util.check_grads`` on a freshly built case: (passed, message).

    Both modes; for custom_vjp functions, which it rejects in forward mode with a TypeError,
    reverse mode only (as a user would have to).
    """
    from jax.test_util import check_grads

    f, args = case.build(dtype)
    modes = ("rev",) if case.custom_vjp else ("fwd", "rev")
    try:
        check_grads(f, args, order=case.order, modes=modes)
    except AssertionError as e:
        return False, str(e).strip().splitlines()[0][:200]
    return True, ""


# ----------------------------------------------------------------------------- families
# Parametrised bugs for the detection-power table (``chainrule bench check --power``): each
# family builds ``(f, args)`` for a dtype, a seed (the point and the directions) and a relative
# bug ``mag`` (0: correct). ``mag`` enters the rule as a closed-over array, so every magnitude
# and seed of a family is one traced program (compiled once). Bugs are confined to a region of
# the input (a band of a kink's side, the windows whose max is large, ...), where a tool that
# looks only at the derivative's size cannot see them.


@dataclasses.dataclass(frozen=True)
class Family:
    """``build(dtype, seed, mag) -> (f, args)``; ``custom_vjp``: forward mode does not exist."""

    name: str
    kind: str  # smooth, kinked, high-frequency, large inputs, many terms, custom_vjp, custom_jvp
    description: str
    build: Callable[[Any, int, float], tuple[Callable, tuple]]
    custom_vjp: bool = False


def _elementwise(fn, dfn, region):
    """A custom_jvp of ``fn`` whose tangent is ``dfn(x) (1 + mag [x in region]) t``."""

    def make(mag):
        @jax.custom_jvp
        def g(x):
            return fn(x)

        def rule(p, t):
            (x,), (tx,) = p, t
            wrong = 1 + mag[0] * region(x).astype(x.dtype)
            return g(x), dfn(x) * wrong * tx

        g.defjvp(rule)
        return g

    return make


def _mag(dt, mag):
    return jnp.asarray([mag], dt)


_relu = _elementwise(jax.nn.relu, lambda h: (h > 0).astype(h.dtype), lambda h: (h > 0) & (h < 0.5))
_leaky = _elementwise(
    lambda h: jnp.where(h > 0, h, 0.1 * h),
    lambda h: jnp.where(h > 0, 1.0, 0.1).astype(h.dtype),
    lambda h: h < -0.5,
)
_hardtanh = _elementwise(
    lambda h: jnp.clip(h, -1.0, 1.0),
    lambda h: (jnp.abs(h) < 1).astype(h.dtype),
    lambda h: jnp.abs(h) > 0.7,
)
_huber = _elementwise(
    lambda r: jnp.where(jnp.abs(r) < 1, 0.5 * r**2, jnp.abs(r) - 0.5),
    lambda r: jnp.clip(r, -1.0, 1.0),
    lambda r: jnp.abs(r) < 0.5,
)
_sin50 = _elementwise(lambda x: jnp.sin(50 * x), lambda x: 50 * jnp.cos(50 * x), lambda x: x > 0)
_xlogx = _elementwise(lambda x: x * jnp.log(x), lambda x: jnp.log(x) + 1, lambda x: x > 1e3)
_log1p2 = _elementwise(lambda x: jnp.log1p(x**2), lambda x: 2 * x / (1 + x**2), lambda x: x > 1.0)
_tanh = _elementwise(jnp.tanh, lambda x: 1 - jnp.tanh(x) ** 2, lambda x: x > 0.5)


def _mlp(act, dt, seed, mag, width=16, batch=8, spread=1.0):
    r = _rng(seed)
    X = jnp.asarray(r.normal(size=(batch, width)) * spread, dt)
    ws = [jnp.asarray(r.normal(size=(width, width)) / np.sqrt(width), dt) for _ in range(2)]
    a = act(_mag(dt, mag))

    def loss(ws):
        h = X
        for w in ws:
            h = a(h @ w)
        return jnp.sum(h**2) / batch

    return loss, (ws,)


def _maxpool(dt, seed, mag):
    m = _mag(dt, mag)

    @jax.custom_vjp
    def pool(x):
        return jnp.max(x.reshape(-1, 4), axis=1)

    def fwd(x):
        return pool(x), x

    def bwd(x, ct):
        w = x.reshape(-1, 4)
        hit = (w == jnp.max(w, axis=1, keepdims=True)).astype(x.dtype)
        big = (jnp.max(w, axis=1) > 0.5).astype(x.dtype)
        return ((((1 + m[0] * big) * ct)[:, None] * hit).reshape(x.shape) * 1.0,)

    pool.defvjp(fwd, bwd)
    x = jnp.asarray(_rng(seed).normal(size=64), dt)
    return (lambda x: jnp.sum(jnp.sin(pool(x)))), (x,)


def _topk(dt, seed, mag):
    m = _mag(dt, mag)

    @jax.custom_vjp
    def topsum(x):
        return jnp.sum(jax.lax.top_k(x, 8)[0])

    def fwd(x):
        return topsum(x), x

    def bwd(x, ct):
        v, i = jax.lax.top_k(x, 8)
        g = jnp.zeros_like(x).at[i].set(1.0 + m[0] * (v > 1.0))
        return (ct * g,)

    topsum.defvjp(fwd, bwd)
    x = jnp.asarray(_rng(seed).normal(size=64), dt)
    return (lambda x: topsum(x) ** 2), (x,)


def _clip_loss(dt, seed, mag):
    # 64 rows, pre-activations ~ N(0, 0.9^2): some 10 of them lie in the bug's band
    # 0.7 < |h| < 1 at every seed (with 16 rows of N(0, 8) some seeds had none: no checker
    # can see a bug where f's input never goes)
    r = _rng(seed)
    X = jnp.asarray(r.normal(size=(64, 8)), dt)
    ht = _hardtanh(_mag(dt, mag))
    w = jnp.asarray(r.normal(size=8) * 0.32, dt)
    return (lambda w: jnp.mean((ht(X @ w) - 0.3) ** 2)), (w,)


def _huber_loss(dt, seed, mag):
    r = _rng(seed)
    X = jnp.asarray(r.normal(size=(32, 8)), dt)
    y = jnp.asarray(r.normal(size=32), dt)
    hb = _huber(_mag(dt, mag))
    w = jnp.asarray(r.normal(size=8) * 0.5, dt)
    return (lambda w: jnp.mean(hb(X @ w - y))), (w,)


def _crowded(dt, seed, mag):
    # inputs within 1e-2 of the kink: FD's steps straddle it unless they are tiny
    r = _rng(seed)
    relu = _elementwise(jax.nn.relu, lambda h: (h > 0).astype(h.dtype), lambda h: h > 5e-3)(
        _mag(dt, mag)
    )
    c = jnp.asarray(r.normal(size=64), dt)
    x = jnp.asarray(r.normal(size=64) * 1e-2, dt)
    return (lambda x: jnp.sum(c * relu(x))), (x,)


def _elementwise_sum(act, dt, seed, mag, x):
    a = act(_mag(dt, mag))
    return (lambda x: jnp.sum(a(x))), (x,)


def _custom_vjp_scale(dt, seed, mag):
    m = _mag(dt, mag)

    @jax.custom_vjp
    def f(x):
        return jnp.sum(jnp.sin(x) * x)

    def bwd(x, ct):
        g = jnp.sin(x) + x * jnp.cos(x)
        return (ct * g * (1 + m[0] * (x > 0.5)),)

    f.defvjp(lambda x: (f(x), x), bwd)
    return f, (jnp.asarray(_rng(seed).normal(size=32), dt),)


FAMILIES: tuple[Family, ...] = (
    Family(
        "smooth tanh",
        "smooth",
        "sum tanh, rule off where x > 0.5",
        lambda dt, s, m: _elementwise_sum(
            _tanh, dt, s, m, jnp.asarray(_rng(s).normal(size=32), dt)
        ),
    ),
    Family(
        "relu MLP",
        "kinked",
        "2 relu layers 16 wide, slope off on 0 < h < 0.5",
        lambda dt, s, m: _mlp(_relu, dt, s, m),
    ),
    Family(
        "leaky relu MLP",
        "kinked",
        "negative slope 0.1 off where h < -0.5",
        lambda dt, s, m: _mlp(_leaky, dt, s, m),
    ),
    Family("huber loss", "kinked", "linear model, huber's slope off where |r| < 0.5", _huber_loss),
    Family(
        "max pooling",
        "kinked",
        "custom_vjp max over windows of 4, off where max > 0.5",
        _maxpool,
        custom_vjp=True,
    ),
    Family(
        "top-k sum",
        "kinked",
        "custom_vjp (sum of top 8 of 64)^2, off where v > 1",
        _topk,
        custom_vjp=True,
    ),
    Family(
        "clip in a loss", "kinked", "hard tanh in an MSE, gradient off where |h| > 0.7", _clip_loss
    ),
    Family(
        "crowded at a kink",
        "kinked",
        "relu of inputs spread 1e-2 around 0, off at h > 5e-3",
        _crowded,
    ),
    Family(
        "sin(50x)",
        "high-frequency",
        "sum sin(50 x), rule off where x > 0",
        lambda dt, s, m: _elementwise_sum(
            _sin50, dt, s, m, jnp.asarray(_rng(s).uniform(-1, 1, size=32), dt)
        ),
    ),
    Family(
        "x log x at 1e3",
        "large inputs",
        "sum x log x, x ~ 1e3, off where x > 1e3",
        lambda dt, s, m: _elementwise_sum(
            _xlogx, dt, s, m, jnp.asarray(1e3 + 100 * _rng(s).normal(size=32), dt)
        ),
    ),
    Family(
        "sum over 1e4",
        "many terms",
        "sum log1p(x^2) over 1e4 terms, off where x > 1",
        lambda dt, s, m: _elementwise_sum(
            _log1p2, dt, s, m, jnp.asarray(_rng(s).normal(size=10_000), dt)
        ),
    ),
    Family(
        "custom_vjp",
        "custom_vjp",
        "sum x sin x, bwd off where x > 0.5",
        _custom_vjp_scale,
        custom_vjp=True,
    ),
    Family(
        "custom_jvp",
        "custom_jvp",
        "relu MLP custom_jvp, whole-domain slope error",
        lambda dt, s, m: _mlp(
            _elementwise(jax.nn.relu, lambda h: (h > 0).astype(h.dtype), lambda h: h > 0),
            dt,
            s,
            m,
        ),
    ),
)
