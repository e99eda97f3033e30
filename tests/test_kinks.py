"""f's smooth piece at a point and the distance to its nearest switch (chainrule._kinks)."""

import hypothesis.strategies as st
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings

from chainrule._kinks import smooth_piece

DTYPES = ["float32", "float64"]
TOL = {"float32": 2e-4, "float64": 1e-10}


def _rng(seed=0):
    return np.random.default_rng(seed)


def _maxpool(x):
    return jnp.max(x.reshape(-1, 4), axis=1)


# every kind of switch, each in a function of one vector
KINKED = {
    "relu": lambda x: jnp.sum(jax.nn.relu(x) ** 2),
    "leaky relu": lambda x: jnp.sum(jnp.where(x > 0, x, 0.1 * x) ** 3),
    "abs": lambda x: jnp.sum(jnp.abs(x) * x),
    "hard tanh": lambda x: jnp.sum(jnp.clip(x, -0.5, 0.5) * jnp.sin(x)),
    "maximum of two": lambda x: jnp.sum(jnp.maximum(x, x[::-1]) ** 2),
    "max pooling": lambda x: jnp.sum(jnp.sin(_maxpool(x))),
    "min": lambda x: jnp.min(jnp.cos(x)),
    "top-k": lambda x: jnp.sum(jax.lax.top_k(x, 3)[0] ** 2),
    "sort": lambda x: jnp.sum(jnp.sort(x) * jnp.arange(x.size)),
    "argmax gather": lambda x: x[jnp.argmax(x)] ** 2,
    "round": lambda x: jnp.sum(jnp.round(2 * x) * x),
    "floor (int cast)": lambda x: jnp.sum(x.astype(jnp.int32) * x),
    "x == 0 guard": lambda x: jnp.sum(jnp.where(x == 0.0, 1.0, x) ** 2),
    "huber": lambda x: jnp.sum(jnp.where(jnp.abs(x) < 0.3, 0.5 * x**2, 0.3 * (jnp.abs(x) - 0.15))),
    "cond": lambda x: jax.lax.cond(x[0] > 0, lambda y: jnp.sum(jnp.abs(y)), jnp.sum, x),
    "relu in jit": lambda x: jax.jit(lambda y: jnp.sum(jax.nn.relu(y - 0.1) ** 2))(x),
    "scan relu": lambda x: jax.lax.scan(lambda c, a: (jax.nn.relu(c * 0.9 + a), None), 0.0, x)[0],
    "while abs": lambda x: jax.lax.while_loop(
        lambda c: c[0] < 3, lambda c: (c[0] + 1, jnp.abs(c[1] - 0.2) * 1.2), (0, x)
    )[1].sum(),
}


def _point(dtype, n=16, seed=0):
    r = _rng(seed)
    return jnp.asarray(r.normal(size=n), dtype), jnp.asarray(r.normal(size=n), dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", list(KINKED))
def test_the_piece_is_f_at_args_and_has_its_derivative(name, dtype):
    f = KINKED[name]
    x, v = _point(dtype)
    piece, kind = smooth_piece(f, x)
    assert kind == "frozen"
    np.testing.assert_array_equal(np.asarray(piece(x)), np.asarray(f(x)))
    want = jax.jvp(f, (x,), (v,))[1]
    # AD of the piece (JAX's rules through the frozen program) and FD of it at a step that
    # crosses many switches of f: both are f's derivative at x
    np.testing.assert_allclose(jax.jvp(piece, (x,), (v,))[1], want, rtol=TOL[dtype], atol=0)
    h = 1e-2 if dtype == "float32" else 1e-4
    fd = (piece(x + h * v) - piece(x - h * v)) / (2 * h)
    np.testing.assert_allclose(fd, want, rtol=50 * TOL[dtype] + h**2 * 100, atol=1e-5)
    # f itself, where a small step flips no switch, is the piece there
    t = 1e-3 if dtype == "float32" else 1e-6
    close = np.isclose(np.asarray(piece(x + t * v)), np.asarray(f(x + t * v)), rtol=1e-3)
    assert np.all(close) or name in ("round", "floor (int cast)", "argmax gather", "sort")


def test_smooth_functions_are_their_own_piece():
    f = lambda x: jnp.sum(jnp.tanh(x) * jnp.exp(x))
    x, v = _point("float32")
    piece, kind = smooth_piece(f, x)
    assert kind == "smooth" and piece is f


def test_ties_take_jaxs_conventions():
    # max(a, a) and abs at 0: JAX's rules give the mean of the tangents and slope +1
    x = jnp.array([0.0, 1.0, 1.0])
    v = jnp.array([1.0, 2.0, -1.0])
    for f in (
        lambda x: jnp.sum(jnp.abs(x)),
        lambda x: jnp.max(x),
        lambda x: jnp.maximum(x[1], x[2]),
    ):
        piece, _ = smooth_piece(f, x)
        np.testing.assert_allclose(jax.jvp(piece, (x,), (v,))[1], jax.jvp(f, (x,), (v,))[1])
        np.testing.assert_allclose((piece(x + v) - piece(x - v)) / 2, jax.jvp(f, (x,), (v,))[1])


def test_a_multi_key_sort_is_not_frozen():
    f = lambda x: jnp.sum(jax.lax.sort((x, x[::-1]), num_keys=2)[1] * jnp.arange(4.0))
    piece, kind = smooth_piece(f, jnp.array([0.1, 0.4, 0.2, 0.3]))
    assert kind == "kinked" and piece is f


@settings(max_examples=20, deadline=None, derandomize=True)
@given(
    widths=st.lists(st.integers(1, 6), min_size=1, max_size=3),
    acts=st.lists(
        st.sampled_from(["relu", "leaky", "abs", "clip", "max2"]), min_size=3, max_size=3
    ),
    seed=st.integers(0, 2**16),
    dtype=st.sampled_from(DTYPES),
)
def test_pieces_of_piecewise_linear_nets_are_linear(widths, acts, seed, dtype):
    # a piecewise-linear network is linear on each piece: central differences of the piece are
    # exact (to rounding) at *any* step, however many switches of f the step crosses
    r = _rng(seed)
    act = {
        "relu": jax.nn.relu,
        "leaky": lambda h: jnp.where(h > 0, h, 0.1 * h),
        "abs": jnp.abs,
        "clip": lambda h: jnp.clip(h, -0.5, 0.5),
        "max2": lambda h: jnp.maximum(h, -h[..., ::-1] + 0.1),
    }
    dims = [4, *widths]
    ws = [
        jnp.asarray(r.normal(size=(a, b)), dtype) for a, b in zip(dims[:-1], dims[1:], strict=True)
    ]
    c = jnp.asarray(r.normal(size=dims[-1]), dtype)

    def f(x):
        h = x
        for i, w in enumerate(ws):
            h = act[acts[i]](h @ w)
        return jnp.sum(c * h)

    x = jnp.asarray(r.normal(size=(3, 4)), dtype)
    v = jnp.asarray(r.normal(size=(3, 4)), dtype)
    assert smooth_piece(f, x)[1] == "frozen"

    @jax.jit  # one compilation per example (eager, the interpreter dispatches op by op)
    def run(x, v):
        piece, _ = smooth_piece(f, x)
        hs = jnp.asarray([1.0, 1e-2], dtype)
        fd = jax.vmap(lambda h: (piece(x + h * v) - piece(x - h * v)) / (2 * h))(hs)
        return fd, jax.jvp(f, (x,), (v,))[1]

    fd, want = run(x, v)
    scale = float(jnp.sum(jnp.abs(c))) * max(1.0, abs(float(want)))
    for h, d in zip((1.0, 1e-2), np.asarray(fd), strict=True):
        assert abs(d - float(want)) <= 1e3 * jnp.finfo(dtype).eps * scale * (1 + 1 / h), (h, d)
