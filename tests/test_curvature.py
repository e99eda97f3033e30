"""chainrule.curvature against dense references (jax.hessian / jax.jacobian + eigh, float64).

Small models (tens of parameters) so the dense matrices are exact references; the estimators are
checked statistically (within 3 standard errors over seeds) and the Lanczos pairs by residuals.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from jax.flatten_util import ravel_pytree

import chainrule as cr

C = cr.curvature


def _params(dtype, d_in=3, width=6, d_out=2):
    k = jax.random.split(jax.random.PRNGKey(0), 3)
    p = {
        "w1": jax.random.normal(k[0], (d_in, width)),
        "b1": 0.1 * jax.random.normal(k[1], (width,)),
        "w2": jax.random.normal(k[2], (width, d_out)) / 2,
    }
    return jax.tree.map(lambda x: x.astype(dtype), p)


def model(p, x):
    return jnp.tanh(x @ p["w1"] + p["b1"]) @ p["w2"]


def _data(dtype, n=16, d_in=3, d_out=2, labels=False):
    kx, ky = jax.random.split(jax.random.PRNGKey(1))
    x = jax.random.normal(kx, (n, d_in))
    y = jax.random.randint(ky, (n,), 0, d_out) if labels else jnp.sin(x[:, :d_out])
    return x.astype(dtype), (y if labels else y.astype(dtype))


def mse_loss(p, batch):
    x, y = batch
    return jnp.mean((model(p, x) - y) ** 2)


def _batches(x, y, nb=2):
    s = x.shape[0] // nb
    return [(x[i * s : (i + 1) * s], y[i * s : (i + 1) * s]) for i in range(nb)]


def _dense_hessian(loss, params, batch):
    flat, unravel = ravel_pytree(jax.tree.map(lambda a: a.astype(jnp.float64), params))
    b64 = jax.tree.map(lambda a: a.astype(jnp.float64) if a.dtype.kind == "f" else a, batch)
    return np.asarray(jax.jit(jax.hessian(lambda f: loss(unravel(f), b64)))(flat))


@pytest.fixture(scope="module")
def hess64():
    """The MSE Hessian of the tanh MLP (38 parameters) in float64, and its spectrum."""
    x, y = _data(jnp.float64)
    H = _dense_hessian(mse_loss, _params(jnp.float64), (x, y))
    return H, np.linalg.eigh(H)


_OPS: dict = {}


def _hess_op(dtype):
    """One Hessian operator per dtype for the module: its compiled programs are reused."""
    key = jnp.dtype(dtype).name
    if key not in _OPS:
        x, y = _data(dtype)
        _OPS[key] = C.hessian(mse_loss, _params(dtype), _batches(x, y))
    return _OPS[key]


def _ref(ev, which, k):
    vals = ev[0]
    order = {
        "largest": np.argsort(-vals),
        "smallest": np.argsort(vals),
        "largest_magnitude": np.argsort(-np.abs(vals)),
    }[which]
    return vals[order[:k]]


# ----------------------------------------------------------------------------- eigenpairs


@pytest.mark.parametrize("which", ["largest", "smallest", "largest_magnitude"])
def test_eigsh_matches_dense_eigh(dtype, which, hess64):
    H, ev = hess64
    op = _hess_op(dtype)
    # a 12-vector basis on a 38-dim operator forces thick restarts
    res = C.eigsh(op, k=3, which=which, num_vectors=12)
    assert res.converged and res.restarts > 0
    ref = _ref(ev, which, 3)
    rel = 1e-8 if dtype == jnp.float64 else 1e-4
    np.testing.assert_allclose(np.asarray(res.eigenvalues, np.float64), ref, rtol=rel)
    # eigenvectors by their residuals against the dense float64 matrix
    Y = np.asarray(jax.vmap(lambda v: ravel_pytree(v)[0])(res.eigenvectors), np.float64)
    r = np.linalg.norm(Y @ H - res.eigenvalues[:, None] * Y, axis=1)
    tol = (1e-8 if dtype == jnp.float64 else 1e-4) * np.max(np.abs(ev[0]))
    assert np.all(r <= 10 * tol), r
    np.testing.assert_allclose(np.linalg.norm(Y, axis=1), 1.0, rtol=1e-5)
    assert res.matvecs == 12 + res.restarts * (12 - (3 + 9 // 2))
    assert res.data_passes == res.matvecs


def test_power_iteration_baseline(hess64):
    _, ev = hess64
    op = _hess_op(jnp.float64)
    res = C.power_iteration(op, k=2, tol=1e-9)
    assert res.converged
    np.testing.assert_allclose(res.eigenvalues, _ref(ev, "largest_magnitude", 2), rtol=1e-8)
    lz = C.eigsh(op, k=2, which="largest_magnitude")
    assert lz.matvecs < res.matvecs  # Lanczos is the cheaper one


def _quadratic(eigs, seed=0):
    n = eigs.shape[0]
    q, _ = np.linalg.qr(np.random.default_rng(seed).standard_normal((n, n)))
    A = (q * eigs) @ q.T
    return A, (lambda w: 0.5 * w @ (jnp.asarray(A, w.dtype) @ w))


def test_no_ghost_eigenvalues_float32_many_steps():
    # A few well-separated outliers above a bulk: the case where Lanczos without
    # reorthogonalization re-finds converged outliers (ghosts) after ~tens of steps.
    n = 300
    eigs = np.concatenate([[100.0, 60.0, 30.0, 15.0], np.linspace(0.0, 5.0, n - 4)])
    A, f = _quadratic(eigs)
    op = C.hessian(f, jnp.zeros(n, jnp.float32))
    res = C.eigsh(op, k=8, num_vectors=120, max_restarts=0)  # 120 steps, no restart
    vals = np.asarray(res.eigenvalues, np.float64)
    np.testing.assert_allclose(vals[:4], eigs[:4], rtol=1e-4)
    # no copy of an outlier: exactly one Ritz value near each
    for lam in eigs[:4]:
        assert np.sum(np.abs(vals - lam) < 1e-2 * lam) == 1
    assert np.all(vals[4:] <= 5.0 + 1e-3)
    # the same 120 steps without reorthogonalization (matfree's plain recurrence) do ghost
    from matfree import decomp

    tri = decomp.tridiag_sym(120, reortho="none", materialize=True, custom_vjp=False)
    Tm = tri(lambda v: jnp.asarray(A, jnp.float32) @ v, jnp.ones(n, jnp.float32)).J_small
    naive = np.linalg.eigvalsh(np.asarray(Tm, np.float64))
    assert np.sum(np.abs(naive - 100.0) < 1.0) > 1


_QUAD: dict = {}


@settings(max_examples=5)
@given(
    k=st.integers(1, 3),
    seed=st.integers(0, 1000),
    which=st.sampled_from(["largest", "smallest", "largest_magnitude"]),
)
def test_eigsh_property_random_symmetric(k, seed, which):
    n = 16
    rng = np.random.default_rng(seed)
    B = rng.standard_normal((n, n))
    A = (B + B.T) / 2
    params = {"A": jnp.asarray(A), "w": jnp.zeros(n)}
    if "op" not in _QUAD:  # one operator family: with_params reuses its compiled programs
        f = lambda p: 0.5 * p["w"] @ (p["A"] @ p["w"])
        _QUAD["op"] = C.hessian(f, params, wrt="['w']")
    op = _QUAD["op"].with_params(params)
    res = C.eigsh(op, k=k, which=which, num_vectors=7)
    ev = np.linalg.eigvalsh(A)
    ref = _ref((ev, None), which, k)
    assert res.converged
    np.testing.assert_allclose(res.eigenvalues, ref, rtol=1e-7, atol=1e-8 * np.abs(ev).max())


def test_warm_start_is_cheaper():
    op = _hess_op(jnp.float64)
    cold = C.eigsh(op, k=1, num_vectors=12)
    warm = C.eigsh(op, k=1, num_vectors=12, v0=jax.tree.map(lambda a: a[0], cold.eigenvectors))
    assert warm.matvecs <= cold.matvecs
    np.testing.assert_allclose(warm.eigenvalues, cold.eigenvalues, rtol=1e-10)


# ----------------------------------------------------------------------------- operators


@pytest.mark.parametrize(
    "dtype, mode",
    [(jnp.float32, "fwd-over-rev")] + [(jnp.float64, m) for m in cr.HVP_MODES],
)
def test_hessian_operator_matches_dense_all_modes(dtype, mode, hess64):
    H, _ = hess64
    x, y = _data(dtype)
    op = C.hessian(mse_loss, _params(dtype), _batches(x, y, 4), mode=mode)
    rtol = 1e-10 if dtype == jnp.float64 else 1e-4
    np.testing.assert_allclose(np.asarray(op.to_dense(), np.float64), H, rtol=rtol, atol=rtol)
    if mode != "fwd-over-rev":
        return
    v = jax.tree.map(jnp.ones_like, _params(dtype))
    mv = ravel_pytree(op.matvec(v))[0]
    np.testing.assert_allclose(mv, H @ np.ones(op.size), rtol=rtol * 10, atol=rtol * 10)
    vs = jax.tree.map(lambda a: jnp.stack([a, 2 * a]), v)
    mm = jax.vmap(lambda t: ravel_pytree(t)[0])(op.matmat(vs))
    np.testing.assert_allclose(mm[1], 2 * mm[0], rtol=1e-5)


def test_dataset_sum_is_deterministic_and_float64_accumulation():
    x, y = _data(jnp.float32, n=32)
    p = _params(jnp.float32)
    op = C.hessian(mse_loss, p, _batches(x, y, 8))
    op64 = C.hessian(mse_loss, p, _batches(x, y, 8), accumulate="float64")
    v = jax.tree.map(jnp.ones_like, p)
    a, b = ravel_pytree(op.matvec(v))[0], ravel_pytree(op.matvec(v))[0]
    np.testing.assert_array_equal(a, b)
    c = ravel_pytree(op64.matvec(v))[0]
    assert c.dtype == jnp.float32
    ref = _dense_hessian(mse_loss, p, (x, y)) @ np.ones(op.size)
    np.testing.assert_allclose(c, ref, rtol=1e-4, atol=1e-5)
    assert op.num_batches == 8


def test_operator_under_jit():
    x, y = _data(jnp.float64)
    p = _params(jnp.float64)
    f = jax.jit(lambda p, v: C.hessian(mse_loss, p, [(x, y)]).matvec(v))
    v = jax.tree.map(jnp.ones_like, p)
    ref = cr.hvp(lambda q: mse_loss(q, (x, y)), p, v)
    for a, b in zip(jax.tree.leaves(f(p, v)), jax.tree.leaves(ref), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-12)


def test_restricted_to_subtree_by_path_and_filter(hess64):
    H, _ = hess64
    x, y = _data(jnp.float64)
    p = _params(jnp.float64)
    flat_paths = [jax.tree_util.keystr(k) for k, _ in jax.tree_util.tree_flatten_with_path(p)[0]]
    sizes = [leaf.size for leaf in jax.tree.leaves(p)]
    offs = np.cumsum([0] + sizes)
    i = flat_paths.index("['w2']")
    block = H[offs[i] : offs[i + 1], offs[i] : offs[i + 1]]
    for wrt in ("params['w2']", lambda path, leaf: path == "['w2']", "['w2']"):
        op = C.hessian(mse_loss, p, [(x, y)], wrt=wrt)
        assert op.paths == ("params['w2']",) and op.size == block.shape[0]
    np.testing.assert_allclose(op.to_dense(), block, rtol=1e-10, atol=1e-12)
    res = C.eigsh(op, k=1)
    np.testing.assert_allclose(res.eigenvalues[0], np.linalg.eigvalsh(block)[-1], rtol=1e-8)
    full = op.embed(jax.tree.map(lambda a: a[0], res.eigenvectors))
    assert float(jnp.abs(full["w1"]).max()) == 0.0
    with pytest.raises(ValueError, match=r"selects no parameter.*params\['w1'\]"):
        C.hessian(mse_loss, p, [(x, y)], wrt="['w3']")


def _dense_ggn(loss_name, p, batch):
    x, y = batch
    flat, unravel = ravel_pytree(p)
    out = model(p, x)
    J = jax.jit(jax.jacobian(lambda f: model(unravel(f), x)))(flat).reshape(out.size, -1)
    Hout = jax.jit(jax.hessian(lambda o: C.loss_value(loss_name, o.reshape(out.shape), y)))(
        out.ravel()
    )
    return np.asarray(J.T @ Hout @ J)


@pytest.mark.parametrize(
    "dtype, loss",
    [(jnp.float32, "mse")] + [(jnp.float64, name) for name in C.LOSSES],
)
def test_ggn_equals_dense_jt_h_j(dtype, loss):
    labels = loss == "softmax_cross_entropy"
    x, y = _data(dtype, labels=labels)
    if loss == "binary_cross_entropy":
        y = (y > 0).astype(dtype)
    p = _params(dtype)
    op = C.ggn(model, p, _batches(x, y), loss)
    p64 = jax.tree.map(lambda a: a.astype(jnp.float64), p)
    y64 = y if labels else y.astype(jnp.float64)
    ref = _dense_ggn(loss, p64, (x.astype(jnp.float64), y64))
    rtol = 1e-10 if dtype == jnp.float64 else 1e-4
    scale = np.abs(ref).max()
    np.testing.assert_allclose(op.to_dense(), ref, rtol=rtol, atol=rtol * scale)
    # PSD, and the top eigenvalue by Lanczos
    ev = np.linalg.eigvalsh(ref)
    assert ev[0] > -1e-6 * ev[-1]
    np.testing.assert_allclose(C.eigsh(op).eigenvalues[0], ev[-1], rtol=rtol)


def test_ggn_equals_hessian_for_a_linear_model():
    x, y = _data(jnp.float64)
    w = jax.random.normal(jax.random.PRNGKey(3), (3, 2))
    lin = lambda w, x: x @ w
    g = C.ggn(lin, w, [(x, y)], "mse").to_dense()
    h = C.hessian(lambda w, b: C.loss_value("mse", lin(w, b[0]), b[1]), w, [(x, y)]).to_dense()
    np.testing.assert_allclose(g, h, rtol=1e-12)


def test_empirical_fisher_matches_per_sample_gradients():
    x, y = _data(jnp.float64, labels=True)
    p = _params(jnp.float64)
    flat, unravel = ravel_pytree(p)
    per = lambda f, xi, yi: C.loss_value(
        "softmax_cross_entropy", model(unravel(f), xi[None]), yi[None]
    )
    G = jax.vmap(jax.grad(per), in_axes=(None, 0, 0))(flat, x, y)
    op = C.empirical_fisher(model, p, _batches(x, y), "softmax_cross_entropy")
    np.testing.assert_allclose(op.to_dense(), G.T @ G / x.shape[0], rtol=1e-10, atol=1e-14)


@pytest.mark.parametrize("loss", ["mse", "softmax_cross_entropy"])
def test_mc_fisher_equals_ggn_in_expectation(loss):
    # Theory: for these losses (negative log-likelihoods up to scale) the Fisher of the model's
    # predictive distribution is the GGN; the MC Fisher samples targets from it.
    labels = loss == "softmax_cross_entropy"
    x, y = _data(jnp.float64, labels=labels)
    p = _params(jnp.float64)
    ref = C.ggn(model, p, [(x, y)], loss).to_dense()
    mc = C.mc_fisher(model, p, [(x, y)], loss, key=jax.random.PRNGKey(0), num_samples=4000)
    err = np.linalg.norm(mc.to_dense() - ref) / np.linalg.norm(ref)
    assert err < 0.08, err  # ~1/sqrt(4000) relative Monte-Carlo error
    if labels:
        # ... while the empirical Fisher at the data's labels is a different matrix
        ef = C.empirical_fisher(model, p, [(x, y)], loss).to_dense()
        assert np.linalg.norm(ef - ref) / np.linalg.norm(ref) > 5 * err


# ----------------------------------------------------------------------------- estimators


@pytest.fixture(scope="module")
def ggn_op():
    x, y = _data(jnp.float64)
    op = C.ggn(model, _params(jnp.float64), _batches(x, y), "mse")
    return op, np.asarray(op.to_dense())


@pytest.mark.parametrize("method", list(C.TRACE_METHODS))
@pytest.mark.parametrize("which_op", ["hessian", "ggn"])
def test_trace_within_three_standard_errors(method, which_op, ggn_op, hess64):
    if which_op == "ggn":
        op, A = ggn_op
    else:
        op, A = _hess_op(jnp.float64), hess64[0]
    exact = np.trace(A)
    z = []
    for seed in range(6):
        est = C.trace(op, jax.random.PRNGKey(seed), 30, method)
        assert est.matvecs <= 30 and est.data_passes == est.matvecs
        z.append((float(est.value) - exact) / max(float(est.stderr), 1e-12 * abs(exact)))
    # a 3-sigma band holds for ~99.7% of normal errors; allow one of six seeds outside it
    assert np.sum(np.abs(z) >= 3) <= 1 and np.all(np.abs(z) < 5), z


def test_hutchpp_beats_hutchinson_on_a_psd_operator_with_outliers():
    n = 200
    eigs = np.concatenate([np.geomspace(100, 1, 10), 0.01 * np.ones(n - 10)])
    A, f = _quadratic(eigs)
    op = C.hessian(f, jnp.zeros(n))
    err = {m: [] for m in ("hutchinson", "hutch++")}
    for seed in range(5):
        for m in err:
            err[m].append(
                abs(float(C.trace(op, jax.random.PRNGKey(seed), 60, m).value) - eigs.sum())
            )
    assert np.mean(err["hutch++"]) < 0.2 * np.mean(err["hutchinson"])


def test_diagonal_within_three_standard_errors(ggn_op):
    op, A = ggn_op
    est = C.diagonal(op, jax.random.PRNGKey(0), 50)
    val, se = ravel_pytree(est.value)[0], ravel_pytree(est.stderr)[0]
    z = (np.asarray(val) - np.diag(A)) / np.maximum(np.asarray(se), 1e-15)
    assert np.mean(np.abs(z) < 3) > 0.95
    assert set(est.value) == {"w1", "b1", "w2"} and est.matvecs == 50


def test_density_moments_equal_tr_powers(hess64):
    for op, A in ((_hess_op(jnp.float64), hess64[0]),):  # indefinite: both signs
        n = A.shape[0]
        d = C.spectral_density(op, jax.random.PRNGKey(0), num_probes=10, num_steps=12)
        assert d.matvecs == 10 * 12
        for p in (1, 2, 3, 4):
            m, se = d.moment(p)
            exact = np.trace(np.linalg.matrix_power(A, p)) / n
            assert abs(float(m) - exact) <= 3 * float(se) + 1e-10 * abs(exact), (p, m, se, exact)
        np.testing.assert_allclose(np.sum(d.weights, axis=1), 1.0, rtol=1e-10)
        assert np.all(np.isreal(d.density)) and np.all(d.density >= 0)
        mass = float(jnp.sum(d.density) * (d.grid[1] - d.grid[0]))
        assert abs(mass - 1) < 1e-3


def test_trace_function_log_det_and_frobenius(ggn_op):
    op, A = ggn_op
    n = A.shape[0]
    # num_steps = n: the quadrature is exact per probe, only the probe variance remains
    est = C.trace_function(op, lambda t: t**2, jax.random.PRNGKey(1), 10, n)
    exact = np.sum(A * A)
    assert abs(float(est.value) - exact) <= 3 * float(est.stderr) + 1e-8 * exact
    damped = C.hessian(lambda w: 0.5 * w @ (jnp.asarray(A) + jnp.eye(n)) @ w, jnp.zeros(n))
    ld = C.trace_function(damped, jnp.log, jax.random.PRNGKey(2), 10, 20)
    exact = np.linalg.slogdet(A + np.eye(n))[1]
    assert abs(float(ld.value) - exact) <= 3 * float(ld.stderr) + 1e-6 * abs(exact)


# ----------------------------------------------------------------------------- bad input


def test_errors_name_the_problem():
    x, y = _data(jnp.float64)
    p = _params(jnp.float64)
    with pytest.raises(TypeError, match=r"scalar-output function.*shape \(16, 2\)"):
        C.hessian(lambda p, b: model(p, b[0]), p, [(x, y)])
    op = C.hessian(mse_loss, p, [(x, y)])
    with pytest.raises(ValueError, match=r"k=37 is larger than the operator's dimension n=36"):
        C.eigsh(op, k=37)
    bad = dict(jax.tree.map(jnp.ones_like, p), w2=jnp.ones((6, 3)))
    with pytest.raises(ValueError, match=r"Shape mismatch at v\['w2'\]: expected \(6, 2\)"):
        op.matvec(bad)
    with pytest.raises(ValueError, match=r"structure"):
        op.matvec({"w1": p["w1"]})
    with pytest.raises(ValueError, match=r"batches\[1\]\[0\]"):
        C.hessian(mse_loss, p, [(x, y), (x[:4], y)])
    with pytest.raises(ValueError, match=r"Unknown which 'top'"):
        C.eigsh(op, which="top")
    with pytest.raises(ValueError, match=r"Unknown loss 'mae'"):
        C.ggn(model, p, [(x, y)], "mae")
    with pytest.raises(ValueError, match=r"(?i)unknown hvp mode 'fwd-over-fwd'"):
        C.hessian(mse_loss, p, [(x, y)], mode="fwd-over-fwd")
    with pytest.raises(ValueError, match=r"Unknown trace method 'hutch'"):
        C.trace(op, jax.random.PRNGKey(0), 10, "hutch")
    with pytest.raises(TypeError, match=r"params\['i'\] has dtype int32"):
        C.hessian(lambda q: jnp.sum(q["w"] ** 2), {"w": jnp.ones(2), "i": jnp.ones(2, jnp.int32)})
    with pytest.raises(TypeError, match=r"\(inputs, targets\)"):
        C.ggn(model, p, [x])
