"""chainrule.nets: shapes, reference computations, initializer plumbing, errors."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from chainrule import nets
from chainrule._deepnorm import deepnorm_constants


def _tol(dtype):
    # A few roundings per layer of a 2-3 layer net with O(1) values: 100 eps is generous.
    return 100 * float(jnp.finfo(dtype).eps)


# -- MLP ------------------------------------------------------------------------------------


def test_mlp_init_shapes_dtype_and_initializers(dtype):
    p = nets.mlp_init(jax.random.key(0), [3, 5, 2], dtype=dtype)
    assert [(layer["w"].shape, layer["b"].shape) for layer in p] == [((3, 5), (5,)), ((5, 2), (2,))]
    assert all(leaf.dtype == dtype for leaf in jax.tree.leaves(p))
    np.testing.assert_array_equal(p[0]["b"], 0)
    q = nets.mlp_init(
        jax.random.key(0),
        [3, 5, 2],
        init=jax.nn.initializers.constant(0.5),
        bias=jax.nn.initializers.ones,
        dtype=dtype,
    )
    np.testing.assert_array_equal(q[1]["w"], 0.5)
    np.testing.assert_array_equal(q[1]["b"], 1.0)


def test_mlp_init_errors():
    with pytest.raises(ValueError, match=r"sizes needs at least 2 entries"):
        nets.mlp_init(jax.random.key(0), [3])
    with pytest.raises(ValueError, match=r"sizes\[1\] must be a positive int, found 0"):
        nets.mlp_init(jax.random.key(0), [3, 0])
    with pytest.raises(TypeError, match=r"sizes must be a sequence"):
        nets.mlp_init(jax.random.key(0), 3)


def _ref_mlp(params, x, act, final=False, residual=False):
    h = np.asarray(x, np.float64)
    for i, layer in enumerate(params):
        z = h @ np.asarray(layer["w"], np.float64) + np.asarray(layer["b"], np.float64)
        last = i == len(params) - 1
        out = act(z) if (not last or final) else z
        if residual and not last and out.shape == h.shape:
            out = h + out
        h = out
    return h


@pytest.mark.parametrize("name", sorted(nets.ACTIVATIONS))
def test_mlp_apply_matches_reference(name, dtype):
    ref_act = {
        "relu": lambda z: np.maximum(z, 0),
        "tanh": np.tanh,
        "sigmoid": lambda z: 1 / (1 + np.exp(-z)),
        "linear": lambda z: z,
        # jax.nn.gelu's default is the tanh approximation
        "gelu": lambda z: 0.5 * z * (1 + np.tanh(np.sqrt(2 / np.pi) * (z + 0.044715 * z**3))),
    }[name]
    p = nets.mlp_init(jax.random.key(1), [4, 6, 6, 3], dtype=dtype)
    x = jax.random.normal(jax.random.key(2), (5, 4), dtype)
    # final activation / residual wiring vary with the activation in float32 and float64
    final, residual = name in ("tanh", "relu"), name in ("sigmoid", "relu", "gelu")
    y, acts = jax.jit(
        lambda p, x: nets.mlp_apply(
            p, x, name, return_activations=True, final_activation=final, residual=residual
        )
    )(p, x)
    assert y.dtype == dtype and len(acts) == 3
    np.testing.assert_array_equal(acts[-1], y)
    np.testing.assert_allclose(
        y, _ref_mlp(p, x, ref_act, final, residual), rtol=_tol(dtype), atol=_tol(dtype)
    )


def test_mlp_norm_is_applied_to_hidden_layers():
    p = nets.mlp_init(jax.random.key(1), [4, 6, 6, 3])
    x = jax.random.normal(jax.random.key(2), (5, 4))
    _, acts = nets.mlp_apply(
        p, x, "tanh", return_activations=True, norm=lambda h: h - h.mean(-1, keepdims=True)
    )
    np.testing.assert_allclose(acts[0].mean(-1), 0, atol=1e-6)
    np.testing.assert_allclose(acts[1].mean(-1), 0, atol=1e-6)


def test_mlp_checkpoint_same_values_and_gradients():
    p = nets.mlp_init(jax.random.key(1), [4, 6, 6, 3], dtype=jnp.float64)
    x = jax.random.normal(jax.random.key(2), (5, 4), jnp.float64)

    def loss(p, ck):
        return jnp.sum(nets.mlp_apply(p, x, "tanh", checkpoint=ck) ** 2)

    g0 = jax.grad(loss)(p, False)
    for ck in (True, jax.checkpoint_policies.dots_saveable):
        g1 = jax.grad(loss)(p, ck)
        jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-12), g0, g1)


def test_activation_errors():
    p = nets.mlp_init(jax.random.key(0), [2, 2])
    with pytest.raises(ValueError, match=r"Unknown activation 'rlu'.*Did you mean 'relu'"):
        nets.mlp_apply(p, jnp.ones((1, 2)), "rlu")
    assert nets.get_activation(jnp.sin) is jnp.sin


# -- RNN ------------------------------------------------------------------------------------


def test_rnn_matches_loop_and_default_orthogonal(dtype):
    p = nets.rnn_init(jax.random.key(0), 3, 5, dtype=dtype)
    w = np.asarray(p["w_hh"], np.float64)
    np.testing.assert_allclose(w.T @ w, np.eye(5), atol=_tol(dtype))
    xs = jax.random.normal(jax.random.key(1), (7, 2, 3), dtype)
    hs = jax.jit(nets.rnn_apply)(p, xs)
    assert hs.shape == (7, 2, 5) and hs.dtype == dtype
    h = np.zeros((2, 5))
    for t in range(7):
        h = np.tanh(np.asarray(xs[t]) @ np.asarray(p["w_xh"]) + h @ w + np.asarray(p["b"]))
        np.testing.assert_allclose(hs[t], h, rtol=_tol(dtype), atol=_tol(dtype))
    # unbatched inputs, custom recurrent initializer
    q = nets.rnn_init(jax.random.key(0), 3, 5, w_hh_init=jax.nn.initializers.zeros)
    np.testing.assert_array_equal(q["w_hh"], 0)
    assert nets.rnn_apply(q, jnp.ones((4, 3)), activation="relu").shape == (4, 5)


def test_rnn_errors():
    p = nets.rnn_init(jax.random.key(0), 3, 5)
    with pytest.raises(ValueError, match=r"xs must have shape \(T, \[batch,\] 3\).*found \(7, 4\)"):
        nets.rnn_apply(p, jnp.ones((7, 4)))
    with pytest.raises(ValueError, match=r"hidden_size must be a positive int, found 0"):
        nets.rnn_init(jax.random.key(0), 3, 0)


# -- Transformer ----------------------------------------------------------------------------


def _ln(x):
    m = x.mean(-1, keepdims=True)
    return (x - m) / np.sqrt(((x - m) ** 2).mean(-1, keepdims=True) + 1e-5)


@pytest.mark.parametrize("wiring", nets.WIRINGS)
def test_transformer_wiring_matches_formula(wiring):
    depth, d = 2, 8
    p = nets.transformer_init(jax.random.key(0), depth, d, 2, 16, wiring, dtype=jnp.float64)
    x = jax.random.normal(jax.random.key(1), (3, 5, d), jnp.float64)
    y, acts = jax.jit(
        lambda p, x: nets.transformer_apply(p, x, wiring, 2, return_activations=True)
    )(p, x)
    assert y.shape == x.shape and len(acts) == depth
    alpha = deepnorm_constants(depth).alpha if wiring == "deep" else 1.0
    attn = jax.jit(nets._attention, static_argnums=(2, 3))
    ffn = jax.jit(nets._ffn)
    h = np.asarray(x)
    for layer in p["layers"]:
        for f in (
            lambda z, layer=layer: np.asarray(attn(layer["attn"], jnp.asarray(z), 2, False)),
            lambda z, layer=layer: np.asarray(ffn(layer["ffn"], jnp.asarray(z))),
        ):
            h = h + f(_ln(h)) if wiring == "pre" else _ln(alpha * h + f(h))
    if wiring == "pre":
        h = _ln(h)
    np.testing.assert_allclose(y, h, rtol=1e-9, atol=1e-9)


def test_transformer_deepnorm_beta_and_causal_mask():
    kw = dict(depth=2, d_model=8, n_heads=2, d_ff=16)
    deep = nets.transformer_init(jax.random.key(0), wiring="deep", **kw)
    post = nets.transformer_init(jax.random.key(0), wiring="post", **kw)
    beta = deepnorm_constants(2).beta
    a, b = deep["layers"][1], post["layers"][1]
    np.testing.assert_allclose(a["attn"]["wv"], beta * b["attn"]["wv"], rtol=1e-6)
    np.testing.assert_allclose(a["ffn"]["w2"], beta * b["ffn"]["w2"], rtol=1e-6)
    np.testing.assert_array_equal(a["attn"]["wq"], b["attn"]["wq"])
    # causal: the first position's output does not depend on later positions
    x = jax.random.normal(jax.random.key(1), (4, 8))
    jac = jax.jit(jax.jacrev(lambda x: nets.transformer_apply(post, x, "post", 2, causal=True)))(x)
    np.testing.assert_array_equal(jac[0, :, 1:, :], 0)
    assert np.abs(jac[3, :, 0, :]).max() > 0


def test_transformer_errors():
    with pytest.raises(ValueError, match=r"Unknown wiring 'preln'.*Did you mean 'pre'"):
        nets.transformer_init(jax.random.key(0), 2, 8, 2, 16, "preln")
    with pytest.raises(ValueError, match=r"d_model=8 must be divisible by n_heads=3"):
        nets.transformer_init(jax.random.key(0), 2, 8, 3, 16)
    p = nets.transformer_init(jax.random.key(0), 1, 8, 2, 16)
    with pytest.raises(ValueError, match=r"divisible by n_heads=3"):
        nets.transformer_apply(p, jnp.ones((2, 8)), "pre", 3)
