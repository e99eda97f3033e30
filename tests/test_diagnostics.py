"""chainrule.diagnostics: per-layer statistics, verdicts, Jacobian spectra, plots."""

import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from chainrule import diagnostics as dg
from chainrule import nets


def _apply(activation):
    return lambda p, x: nets.mlp_apply(p, x, activation, return_activations=True)


APPLY = {name: _apply(name) for name in ("relu", "sigmoid", "tanh", "linear")}


# -- layer statistics -----------------------------------------------------------------------


def test_layer_stats_match_direct_computation(dtype):
    p = nets.mlp_init(jax.random.key(0), [4, 8, 8, 3], dtype=dtype)
    x = jax.random.normal(jax.random.key(1), (6, 4), dtype)
    y = jax.random.normal(jax.random.key(2), (6, 3), dtype)

    def loss_fn(out):
        return jnp.mean((out - y) ** 2)

    s = dg.layer_stats(APPLY["tanh"], p, x, loss_fn, max_norm=0.05)

    @jax.jit
    def reference(p):
        out, acts = APPLY["tanh"](p, x)
        grads = jax.grad(lambda p: loss_fn(APPLY["tanh"](p, x)[0]))(p)
        return out, acts, jnp.stack([optax.tree.norm(g) for g in grads])

    out, acts, norms = reference(p)
    norms = np.asarray(norms)
    # float32: the reductions differ from these in rounding only (~eps relative, a few terms)
    rtol = 50 * float(jnp.finfo(dtype).eps)
    np.testing.assert_allclose(s.grad_norm, norms, rtol=rtol)
    np.testing.assert_allclose(s.grad_ratio, norms[:-1] / norms[1:], rtol=2 * rtol)
    np.testing.assert_allclose(s.act_mean, [float(a.mean()) for a in acts], rtol=rtol, atol=rtol)
    np.testing.assert_allclose(s.act_var, [float(a.var()) for a in acts], rtol=rtol)
    np.testing.assert_allclose(s.loss, float(loss_fn(out)), rtol=rtol)
    np.testing.assert_allclose(s.global_norm, np.sqrt(np.sum(norms**2)), rtol=rtol)
    assert s.global_norm > 0.05  # so clipping is active
    np.testing.assert_allclose(s.clipped_norm, 0.05, rtol=rtol)
    assert s.num_layers == 3 and "global grad norm" in s.summary()
    assert set(s.to_dict()) >= {"grad_norm", "act_var", "clipped_norm"}


def test_layer_stats_errors():
    p = nets.mlp_init(jax.random.key(0), [2, 2])
    x = jnp.ones((1, 2))
    with pytest.raises(TypeError, match=r"params must be a non-empty list.*params\['layers'\]"):
        dg.layer_stats(APPLY["relu"], {"w": 1.0}, x)
    with pytest.raises(TypeError, match=r"apply_fn must return \(output, activations\)"):
        dg.layer_stats(lambda p, x: nets.mlp_apply(p, x), p, x)
    with pytest.raises(TypeError, match=r"params\[0\]\['b'\]: its dtype is int"):
        dg.layer_stats(APPLY["relu"], [{"w": p[0]["w"], "b": jnp.zeros(2, int)}], x)
    with pytest.raises(TypeError, match=r"layer_stats \(loss_fn\) needs a scalar-output"):
        dg.layer_stats(APPLY["relu"], p, x, loss_fn=lambda out: out)


# -- verdicts -------------------------------------------------------------------------------


def test_deep_sigmoid_normal_init_is_flagged_he_relu_is_healthy():
    depth, width = 50, 32
    x = jax.random.normal(jax.random.key(1), (16, width))
    bad = nets.mlp_init(
        jax.random.key(0), [width] * (depth + 1), init=jax.nn.initializers.normal(1.0)
    )
    s_bad, v_bad = dg.diagnose(APPLY["sigmoid"], bad, x)
    assert v_bad.status in ("vanishing", "exploding") and v_bad.signal == "gradient"
    assert 0 <= v_bad.layer < depth - 1
    assert s_bad.grad_norm[0] / s_bad.grad_norm[-1] < 1e-4  # far beyond the factor of 100
    good = nets.mlp_init(
        jax.random.key(0), [width * 2] * (depth + 1), init=jax.nn.initializers.he_normal()
    )
    x2 = jax.random.normal(jax.random.key(1), (16, width * 2))
    s_good, v_good = dg.diagnose(APPLY["relu"], good, x2)
    assert v_good.healthy, str(v_good)
    assert v_good.layer is None and "healthy" in str(v_good)


def _stats(grad_norm, act_var):
    g, a = np.asarray(grad_norm, float), np.asarray(act_var, float)
    with np.errstate(divide="ignore", invalid="ignore"):  # ratios of zero norms are nan
        ratio = g[:-1] / g[1:]
    return dg.LayerStats(np.zeros_like(a), a, g, ratio, 0.0, 1.0, 1.0, 1.0)


@pytest.mark.parametrize(
    ("grad_norm", "act_var", "expected"),
    [
        ([1e-3, 0.5, 1.0], [1, 1, 1], ("vanishing", "gradient", 0)),
        ([1e-6, 1e-3, 1.0, 1.0], [1, 1, 1, 1], ("vanishing", "gradient", 1)),
        ([1e4, 2.0, 1.0], [1, 1, 1], ("exploding", "gradient", 0)),
        ([1, 1, 1], [1.0, 0.1, 1e-6], ("vanishing", "activation", 2)),
        ([1, 1, 1], [1.0, 5e2, 1.0], ("exploding", "activation", 1)),
        ([1, np.nan, 1], [1, 1, 1], ("exploding", "nonfinite", 1)),
        ([1, 1, 1], [1, np.inf, 1], ("exploding", "nonfinite", 1)),
        ([0.0, 0.0, 0.0], [1, 1, 1], ("vanishing", "gradient", 2)),
        ([0.02, 1.0], [1.0, 50.0], ("healthy", None, None)),
    ],
)
def test_verdict_rules(grad_norm, act_var, expected):
    v = dg.verdict(_stats(grad_norm, act_var))
    assert (v.status, v.signal, v.layer) == expected


def test_verdict_factor():
    s = _stats([0.05, 1.0], [1, 1])
    assert dg.verdict(s).healthy
    assert dg.verdict(s, factor=10).status == "vanishing"
    with pytest.raises(ValueError, match=r"factor must be > 1.*found 1"):
        dg.verdict(s, factor=1)


# -- Jacobian spectra -----------------------------------------------------------------------


def _small_net(dtype, sizes=(6, 10, 10, 5)):
    p = nets.mlp_init(jax.random.key(3), list(sizes), dtype=dtype)
    x = jnp.linspace(-1.0, 1.0, sizes[0], dtype=dtype)
    return jax.tree_util.Partial(nets.mlp_apply, p, activation="tanh"), x


def test_spectrum_matches_dense_svd(dtype):
    f, x = _small_net(dtype)
    ref = np.linalg.svd(np.asarray(jax.jacrev(f)(x), np.float64), compute_uv=False)
    # Error model: both paths are backward stable, so the computed values are the exact ones
    # of J + E with |E| <~ c eps |J| (c a small multiple of the dimensions); by Weyl's
    # inequality each singular value moves by at most |E|. c = 100 covers n, m <= 10.
    atol = 100 * float(jnp.finfo(dtype).eps) * ref[0]
    exact = dg.jacobian_spectrum(f, x, "exact")
    assert exact.method == "exact" and exact.shape == (5, 6)
    np.testing.assert_allclose(exact.singular_values, ref, atol=atol)
    full = dg.jacobian_spectrum(f, x, "matvec")  # k + oversample >= rank: exact to rounding
    np.testing.assert_allclose(full.singular_values, ref, atol=atol)
    top = dg.jacobian_spectrum(f, x, "matvec", k=2, key=jax.random.key(7))
    np.testing.assert_allclose(top.singular_values, ref[:2], atol=atol)
    np.testing.assert_allclose(exact.mean_sq, np.mean(ref**2), rtol=1e-5)


def test_spectrum_auto_switches_to_matvec(monkeypatch):
    f, x = _small_net(jnp.float64, (12, 16, 8))
    assert dg.jacobian_spectrum(f, x).method == "exact"
    monkeypatch.setattr(dg, "_DENSE_MAX_ENTRIES", 10)
    s = dg.jacobian_spectrum(f, x, k=3, oversample=2, power_iters=3)
    ref = np.linalg.svd(np.asarray(jax.jacrev(f)(x)), compute_uv=False)
    assert s.method == "matvec" and s.singular_values.shape == (3,)
    # l = 5 probes < rank 8: an approximation, accurate to ~(s_6/s_3)^(2q+1) relative
    np.testing.assert_allclose(s.singular_values, ref[:3], rtol=0.05)


def test_isometry():
    d = 8
    ortho = nets.mlp_init(jax.random.key(0), [d] * 4, init=jax.nn.initializers.orthogonal())
    x = jnp.ones(d, jnp.float64)
    s = dg.jacobian_spectrum(lambda x: nets.mlp_apply(ortho, x, "linear"), x)
    np.testing.assert_allclose(s.singular_values, 1.0, atol=1e-5)
    assert s.near_isometry() and s.spread < 1e-4 and s.condition == pytest.approx(1, abs=1e-4)
    scaled = dg.jacobian_spectrum(lambda x: 3 * nets.mlp_apply(ortho, x, "linear"), x)
    assert not scaled.near_isometry() and scaled.mean_sq == pytest.approx(9, rel=1e-4)
    assert "near isometry: True" in s.summary()


@pytest.mark.parametrize("half", [jnp.bfloat16, jnp.float16])
def test_spectrum_half_precision_input(half):
    # LAPACK has no half-precision SVD/QR: both methods must factor in float32. J = diag(d) in
    # half precision has exactly representable singular values, so only the matvec path's
    # half-precision products (one rounding of eps_half per entry) perturb them.
    d = jnp.array([3.0, 2.0, 1.0, 0.5], half)
    x = jnp.ones(4, half)
    exact = dg.jacobian_spectrum(lambda x: d * x, x, "exact")
    np.testing.assert_array_equal(exact.singular_values, [3.0, 2.0, 1.0, 0.5])
    mv = dg.jacobian_spectrum(lambda x: d * x, x, "matvec", k=np.int64(2))
    eps = float(jnp.finfo(half).eps)
    np.testing.assert_allclose(mv.singular_values, [3.0, 2.0], rtol=20 * eps)


def test_spectrum_errors():
    f, x = _small_net(jnp.float32)
    with pytest.raises(ValueError, match=r"Unknown spectrum method 'dense'"):
        dg.jacobian_spectrum(f, x, "dense")
    with pytest.raises(ValueError, match=r"k must be an int in 1..min\(N, M\) = 1..5, found 6"):
        dg.jacobian_spectrum(f, x, "matvec", k=6)
    with pytest.raises(TypeError, match=r"Cannot differentiate with respect to x"):
        dg.jacobian_spectrum(f, jnp.arange(6))


# -- plots ----------------------------------------------------------------------------------


def test_plots_return_figures_and_save_png(tmp_path):
    from matplotlib.figure import Figure

    s = _stats([0.1, 0.5, 1.0], [1.0, 0.8, 0.9])
    f, x = _small_net(jnp.float32)
    spec = dg.jacobian_spectrum(f, x)
    figs = {
        "g.png": dg.plot_grad_norms({"a": s, "b": s}, tmp_path / "g.png"),
        "a.png": dg.plot_activation_variance(s, tmp_path / "a.png"),
        "s.png": dg.plot_singular_values({"net": spec}, tmp_path / "s.png", bins=5),
    }
    for name, fig in figs.items():
        assert isinstance(fig, Figure)
        assert (tmp_path / name).read_bytes()[:4] == b"\x89PNG"
    assert isinstance(dg.plot_singular_values(spec), Figure)


def test_import_is_light():
    code = "import sys, chainrule; print('matplotlib' in sys.modules, 'optax' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split()[0] == "False"


# ----------------------------------------------------------------------------- layer curvature


def _layer_problem():
    import chainrule as cr

    key = jax.random.PRNGKey(0)
    params = cr.nets.mlp_init(key, [3, 5, 2], dtype=jnp.float64)
    x = jax.random.normal(jax.random.PRNGKey(1), (12, 3), jnp.float64)
    y = jnp.sin(x[:, :2])

    def loss(p, batch):
        return jnp.mean((cr.nets.mlp_apply(p, batch[0], "tanh") - batch[1]) ** 2)

    return params, [(x, y)], loss


def test_layer_sharpness_and_trace_match_dense_blocks():
    from jax.flatten_util import ravel_pytree

    import chainrule as cr

    params, batches, loss = _layer_problem()
    sharp = cr.diagnostics.layer_sharpness(loss, params, batches)
    traces = cr.diagnostics.layer_trace(
        loss, params, batches, key=jax.random.PRNGKey(2), num_matvecs=60
    )
    assert list(sharp) == list(traces) == ["params[0]", "params[1]"]
    for i, path in enumerate(sharp):
        flat, unravel = ravel_pytree(params[i])

        def block(f, i=i, unravel=unravel):
            p = list(params)
            p[i] = unravel(f)
            return loss(p, batches[0])

        H = np.asarray(jax.hessian(block)(flat))
        np.testing.assert_allclose(sharp[path], np.linalg.eigvalsh(H)[-1], rtol=1e-8)
        value, se = traces[path]
        assert abs(value - np.trace(H)) <= 3 * se + 1e-12
    with pytest.raises(TypeError, match="list/tuple of per-layer pytrees"):
        cr.diagnostics.layer_sharpness(lambda w: jnp.sum(w**2), jnp.ones(3))
