"""depth_signal: the quick config through the runner, and the measurement itself."""

import json
import math
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from chainrule.runner import load_experiment, run_config

REPO = Path(__file__).resolve().parents[1]
ds = load_experiment("depth_signal")


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs")
    run_dir = run_config(REPO / "configs" / "depth_signal_quick.yaml", out=out)
    results = json.loads((run_dir / "results.json").read_text())["points"][0]["results"]
    return run_dir, {(r["activation"], r["initializer"]): r for r in results["tables"]["pairs"]}


def test_he_relu_holds_and_sigmoid_normal_does_not(quick_run):
    run_dir, rows = quick_run
    lim = math.log10(2.0)
    he = rows[("relu", "he")]
    # He + ReLU: forward variance and backward gradient within a factor 2 over 50 layers.
    assert abs(he["log10_q_ratio"]) < lim and abs(he["log10_g_ratio"]) < lim
    assert he["outcome"] == "holds" and he["diagnostics_verdict"] == "healthy"
    sn = rows[("sigmoid", "normal")]
    # sigmoid + N(0, 1): saturated from layer 1 (q_1 ~ width * Var[x] = 256), and the
    # backward signal grows by orders of magnitude towards the input.
    assert sn["q_first"] > 50 and sn["log10_g_ratio"] > 2
    assert sn["outcome"] == "explodes"
    rn = rows[("relu", "normal")]
    assert rn["log10_q_ratio"] > 50  # Var x width/2 per layer
    for name in ("heatmaps", "variance_by_layer", "gradnorm_by_layer"):
        assert (run_dir / "plots" / f"{name}.png").exists()
    report = (run_dir / "report.md").read_text()
    assert "Agreement with the claim: **yes**" in report
    assert "![heatmaps](plots/heatmaps.png)" in report


def test_per_example_gradient_norms_match_vmap_grad():
    """The offsets trick gives the same per-example gradient norms as vmap(grad) per example."""
    p = ds.Params(depth=3, width=5, batch=4, n_nets=2, dtype="float64")
    key = jax.random.key(1)
    w = ds.sample_weights("lecun", p, key)
    m = ds.measure("tanh", w, p, jax.random.key(2))
    k_x, k_r = jax.random.split(jax.random.key(2))
    x = jax.random.normal(k_x, (p.n_nets, p.batch, p.width), jnp.float64)
    r = jax.random.normal(k_r, (p.width,), jnp.float64)

    def loss_one(ws, xb):
        h = xb
        for wl in ws:
            h = jnp.tanh(h @ wl)
        return h @ r

    per_example = jax.vmap(jax.grad(loss_one), in_axes=(None, 0))
    sq = np.zeros(p.depth)
    q = np.zeros(p.depth)
    for k in range(p.n_nets):
        ws = [w[i, k] for i in range(p.depth)]
        grads = per_example(ws, x[k])
        sq += np.array([float(jnp.sum(g**2)) for g in grads])
        h = x[k]
        for i in range(p.depth):
            z = h @ ws[i]
            q[i] += float(jnp.mean(z**2))
            h = jnp.tanh(z)
    np.testing.assert_allclose(m["g"], np.sqrt(sq / (p.n_nets * p.batch)), rtol=1e-12)
    np.testing.assert_allclose(m["q"], q / p.n_nets, rtol=1e-12)


def test_orthogonal_gain_rescaling_is_the_library_draw():
    """The shared gain-1 orthogonal draw, rescaled, equals cr.init.orthogonal(gain(act))."""
    import chainrule as cr

    p = ds.Params(depth=2, width=6, n_nets=3, dtype="float64")
    key = jax.random.key(4)
    base = ds.sample_weights("orthogonal", p, key)
    keys = jax.random.split(key, p.depth * p.n_nets).reshape(p.depth, p.n_nets)
    for act in ("tanh", "relu"):
        init = cr.init.orthogonal(cr.init.gain(act))
        direct = jax.vmap(jax.vmap(lambda k, init=init: init(k, (6, 6), jnp.float64)))(keys)
        np.testing.assert_allclose(
            ds.for_activation(base, "orthogonal", act, p), direct, rtol=1e-14, atol=1e-15
        )


@pytest.mark.parametrize(
    ("fwd", "bwd", "expected"),
    [
        (0.1, -0.2, "holds"),
        (0.5, 0.0, "explodes"),
        (-0.1, -3.0, "vanishes"),
        (math.inf, 0.0, "explodes"),
        (math.nan, 0.0, "undefined"),
    ],
)
def test_classify(fwd, bwd, expected):
    assert ds.classify(fwd, bwd, 2.0) == expected


def test_log_ratio_edge_cases():
    assert ds._log_ratio(100.0, 1.0) == pytest.approx(2.0)
    assert ds._log_ratio(0.0, 1.0) == -math.inf
    assert ds._log_ratio(math.inf, 1.0) == math.inf
    assert math.isnan(ds._log_ratio(0.0, 0.0))
