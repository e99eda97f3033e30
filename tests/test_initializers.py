"""Tests for chainrule.initializers: exact variances, target distributions, parity with
jax.nn.initializers, orthogonality, identity maps, variance propagation, dtypes, errors.

Statistical error model (used by every moment test). For n i.i.d. zero-mean samples with
variance sigma^2 and fourth moment mu4, the estimator s2 = mean(x^2) is unbiased with
Var[s2] = (mu4 - sigma^4) / n. We accept |s2 - sigma^2| <= 5.5 * sqrt(Var[s2]) (a false alarm has
probability ~4e-8 per check; seeds are fixed anyway) and assert that this bound is below 5% of
sigma^2 for the sample size used, so a 10% variance error always fails. Distribution tests use
Kolmogorov-Smirnov with p > 1e-4 (scipy.stats.kstest / ks_2samp); at n ~ 7e4 a KS test detects
CDF differences of ~0.01.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.stats as st
from hypothesis import given
from hypothesis import strategies as hs

import chainrule as cr
from chainrule import initializers as ini

JI = jax.nn.initializers
F32 = jnp.float32
SIGMAS = 5.5
KS_P = 1e-4
TRUNC_STD = 0.87962566103423978  # std of N(0, 1) truncated to [-2, 2]

DENSE = [(256, 256), (512, 160)]
CONV = [(3, 3, 64, 128), (5, 96, 160)]  # 2-D (HWIO) and 1-D (WIO) convolution kernels
SHAPES = DENSE + CONV


def _key(seed: int) -> jax.Array:
    return jax.random.key(seed)


# --------------------------------------------------------------------------- the case table
# name -> (our factory, kind of distribution, Var[W](fan_in, fan_out), jax counterpart or None)
# kind: "normal" (Gaussian), "tnormal" (truncated at +-2 of the underlying Gaussian), "uniform".

_BETA6 = cr.deepnorm_constants(6).beta
CASES = {
    "uniform": (lambda: ini.uniform(0.3), "uniform", lambda fi, fo: 0.3**2 / 3, None),
    "normal": (lambda: ini.normal(0.05), "normal", lambda fi, fo: 0.05**2, lambda: JI.normal(0.05)),
    "truncated_normal": (
        lambda: ini.truncated_normal(0.7),
        "tnormal",
        lambda fi, fo: 0.49,
        lambda: JI.truncated_normal(0.7 / TRUNC_STD),  # jax does not correct the std
    ),
    "lecun_normal": (
        ini.lecun_normal,
        "normal",
        lambda fi, fo: 1 / fi,
        lambda: JI.variance_scaling(1.0, "fan_in", "normal"),
    ),
    "lecun_normal_trunc": (
        lambda: ini.lecun_normal(truncated=True),
        "tnormal",
        lambda fi, fo: 1 / fi,
        JI.lecun_normal,
    ),
    "lecun_uniform": (ini.lecun_uniform, "uniform", lambda fi, fo: 1 / fi, JI.lecun_uniform),
    "xavier_normal": (
        ini.xavier_normal,
        "normal",
        lambda fi, fo: 2 / (fi + fo),
        lambda: JI.variance_scaling(1.0, "fan_avg", "normal"),
    ),
    "glorot_normal_trunc": (
        lambda: ini.glorot_normal(truncated=True),
        "tnormal",
        lambda fi, fo: 2 / (fi + fo),
        JI.glorot_normal,
    ),
    "xavier_uniform": (
        ini.xavier_uniform,
        "uniform",
        lambda fi, fo: 2 / (fi + fo),
        JI.glorot_uniform,
    ),
    "xavier_normal_tanh_gain": (
        lambda: ini.xavier_normal(gain=ini.gain("tanh")),
        "normal",
        lambda fi, fo: (5 / 3) ** 2 * 2 / (fi + fo),
        lambda: JI.variance_scaling(25 / 9, "fan_avg", "normal"),
    ),
    "he_normal": (
        ini.he_normal,
        "normal",
        lambda fi, fo: 2 / fi,
        lambda: JI.variance_scaling(2.0, "fan_in", "normal"),
    ),
    "kaiming_normal_trunc": (
        lambda: ini.kaiming_normal(truncated=True),
        "tnormal",
        lambda fi, fo: 2 / fi,
        JI.he_normal,
    ),
    "he_uniform": (ini.he_uniform, "uniform", lambda fi, fo: 2 / fi, JI.he_uniform),
    "he_normal_fan_out": (
        lambda: ini.he_normal(mode="fan_out"),
        "normal",
        lambda fi, fo: 2 / fo,
        lambda: JI.variance_scaling(2.0, "fan_out", "normal"),
    ),
    "vs_fan_out_uniform": (
        lambda: ini.variance_scaling(0.5, "fan_out", "uniform"),
        "uniform",
        lambda fi, fo: 0.5 / fo,
        lambda: JI.variance_scaling(0.5, "fan_out", "uniform"),
    ),
    "vs_geo_truncated": (
        lambda: ini.variance_scaling(3.0, "fan_geo_avg", "truncated_normal"),
        "tnormal",
        lambda fi, fo: 3.0 / math.sqrt(fi * fo),
        lambda: JI.variance_scaling(3.0, "fan_geo_avg", "truncated_normal"),
    ),
    "deepnorm": (
        lambda: ini.deepnorm(6),
        "normal",
        lambda fi, fo: _BETA6**2 * 2 / (fi + fo),
        lambda: JI.variance_scaling(_BETA6**2, "fan_avg", "normal"),
    ),
}


def _target(kind: str, var: float):
    """The scipy distribution with this kind and variance."""
    s = math.sqrt(var)
    if kind == "normal":
        return st.norm(scale=s)
    if kind == "uniform":
        b = math.sqrt(3 * var)
        return st.uniform(loc=-b, scale=2 * b)
    return st.truncnorm(-2, 2, scale=s / TRUNC_STD)


@functools.cache
def _sample(name: str, shape: tuple, seed: int = 0, dtype=F32) -> np.ndarray:
    return np.asarray(CASES[name][0]()(_key(seed), shape, dtype), np.float64).ravel()


def _setup(name, shape):
    _, kind, var_fn, _ = CASES[name]
    fi, fo = ini.compute_fans(shape)
    return kind, var_fn(fi, fo)


def _assert_variance(x: np.ndarray, dist, what: str) -> None:
    """|mean(x^2) - sigma^2| within SIGMAS standard errors; the test must resolve 10% errors."""
    var = dist.var()
    mu4 = dist.expect(lambda t: t**4)
    se = math.sqrt((mu4 - var**2) / x.size)
    assert SIGMAS * se < 0.05 * var, f"sample too small to resolve a 10% error for {what}"
    s2 = float(np.mean(x**2))
    assert abs(s2 - var) <= SIGMAS * se, (
        f"{what}: sample variance {s2:.6g}, formula {var:.6g}, bound {SIGMAS * se:.3g}"
    )


# --------------------------------------------------------------------------- statistics


@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("name", list(CASES))
def test_variance_matches_formula(name, shape):
    kind, var = _setup(name, shape)
    _assert_variance(_sample(name, shape), _target(kind, var), f"{name}{shape}")


@pytest.mark.parametrize("shape", [DENSE[1], CONV[0]], ids=str)
@pytest.mark.parametrize("name", list(CASES))
def test_ks_against_target(name, shape):
    kind, var = _setup(name, shape)
    x = _sample(name, shape)
    assert abs(x.mean()) < SIGMAS * math.sqrt(var / x.size)
    p = st.kstest(x, _target(kind, var).cdf).pvalue
    assert p > KS_P, f"{name}{shape}: KS p-value {p:.3g} against the {kind} target"


@pytest.mark.parametrize("shape", [DENSE[1], CONV[1]], ids=str)
@pytest.mark.parametrize("name", list(CASES))
def test_matches_jax_counterpart(name, shape):
    ours = _sample(name, shape, seed=1)
    jax_factory = CASES[name][3]
    if name == "uniform":
        # jax's uniform(s) is U[0, s): shift U[0, 0.6) to compare like with like
        theirs = np.asarray(JI.uniform(0.6)(_key(2), shape, F32), np.float64).ravel() - 0.3
    else:
        theirs = np.asarray(jax_factory()(_key(2), shape, F32), np.float64).ravel()
    p = st.ks_2samp(ours, theirs).pvalue
    assert p > KS_P, f"{name}{shape}: two-sample KS p-value {p:.3g} against jax"


def test_ks_detects_a_ten_percent_scale_error():
    # The power check behind the KS tests: a 10% std error (21% variance) is rejected.
    x = _sample("he_normal", DENSE[0])
    wrong = st.norm(scale=1.1 * math.sqrt(2 / 256))
    assert st.kstest(x, wrong.cdf).pvalue < 1e-10


def test_truncated_normal_asymmetric_bounds():
    init = ini.truncated_normal(2.0, lower=-1.0, upper=3.0)
    x = np.asarray(init(_key(3), (300, 250), F32), np.float64).ravel()
    base = st.truncnorm(-1.0, 3.0)
    dist = st.truncnorm(-1.0, 3.0, scale=2.0 / base.std())
    assert dist.std() == pytest.approx(2.0, rel=1e-12)
    assert st.kstest(x, dist.cdf).pvalue > KS_P
    se = math.sqrt((dist.moment(4) - dist.moment(2) ** 2) / x.size)
    assert abs(np.mean(x**2) - dist.moment(2)) < SIGMAS * se


@pytest.mark.parametrize(("lo", "hi"), [(-2.0, 2.0), (-1.0, 3.0), (0.5, 4.0), (-np.inf, 1.0)])
def test_truncated_moments_match_scipy(lo, hi):
    m, s = ini._truncated_std_normal_moments(lo, hi)
    ref = st.truncnorm(lo, hi)
    assert m == pytest.approx(ref.mean(), rel=1e-10, abs=1e-12)
    assert s == pytest.approx(ref.std(), rel=1e-10)


def test_float64_output_is_sampled_in_float64(dtype):
    x = ini.he_normal()(_key(4), (256, 256), dtype)
    assert x.dtype == dtype
    _assert_variance(np.asarray(x, np.float64).ravel(), st.norm(scale=math.sqrt(2 / 256)), "he")


# --------------------------------------------------------------------------- fans


def test_compute_fans_layouts():
    assert ini.compute_fans((64, 32)) == (64, 32)
    assert ini.compute_fans((3, 3, 16, 32)) == (144, 288)
    assert ini.compute_fans((5, 8, 4)) == (40, 20)
    assert ini.compute_fans((7, 64, 32), batch_axis=0) == (64, 32)
    # torch layout (out, in, kh, kw)
    assert ini.compute_fans((32, 16, 3, 3), in_axis=1, out_axis=0) == (144, 288)
    # multi-axis inputs (e.g. attention heads folded into the output)
    assert ini.compute_fans((64, 8, 16), in_axis=0, out_axis=(1, 2)) == (64, 128)


@given(
    shape=hs.lists(hs.integers(1, 6), min_size=2, max_size=5),
    data=hs.data(),
)
def test_compute_fans_matches_jax(shape, data):
    from jax._src.nn.initializers import _compute_fans

    nd = len(shape)
    perm = data.draw(hs.permutations(range(nd)))
    n_batch = data.draw(hs.integers(0, nd - 2))
    in_ax, out_ax, batch = perm[0], perm[1], tuple(perm[2 : 2 + n_batch])
    ours = ini.compute_fans(shape, in_ax - nd, out_ax, batch)
    ref = _compute_fans(tuple(shape), in_ax - nd, out_ax, batch)
    assert ours == pytest.approx(ref, rel=1e-12)


def test_fans_drive_conv_variance():
    # the conv kernel's receptive field enters both fans: Var = 2 / (3*3*64) for He
    x = _sample("he_normal", CONV[0])
    assert np.var(x) == pytest.approx(2 / (9 * 64), rel=0.03)


def test_batch_axis_excluded_from_fans():
    init = ini.lecun_normal(batch_axis=0)
    x = np.asarray(init(_key(5), (16, 128, 64), F32), np.float64).ravel()
    _assert_variance(x, st.norm(scale=math.sqrt(1 / 128)), "lecun batch_axis")


# --------------------------------------------------------------------------- gain


def test_gain_values():
    assert ini.gain("linear") == 1.0
    assert ini.gain("sigmoid") == 1.0
    assert ini.gain("tanh") == pytest.approx(5 / 3)
    assert ini.gain("relu") == pytest.approx(math.sqrt(2))
    assert ini.gain("leaky_relu") == pytest.approx(math.sqrt(2 / (1 + 0.01**2)))
    assert ini.gain("leaky_relu", 0.3) == pytest.approx(math.sqrt(2 / 1.09))
    assert ini.gain("selu") == 0.75


def test_gain_matches_torch():
    torch = pytest.importorskip("torch")
    for act in ini.ACTIVATIONS:
        if act == "identity":
            continue
        assert ini.gain(act) == pytest.approx(torch.nn.init.calculate_gain(act)), act
    assert ini.gain("leaky_relu", 0.2) == pytest.approx(
        torch.nn.init.calculate_gain("leaky_relu", 0.2)
    )


# --------------------------------------------------------------------------- orthogonal


def _as_matrix(w, column_axis=-1):
    w = np.asarray(w, np.float64)
    w = np.moveaxis(w, column_axis, -1)
    return w.reshape(-1, w.shape[-1])


@pytest.mark.parametrize(
    ("shape", "column_axis"),
    [
        ((64, 64), -1),
        ((128, 32), -1),
        ((32, 128), -1),
        ((3, 3, 16, 32), -1),
        ((32, 64), 0),
        ((5, 4, 12), 1),
    ],
    ids=str,
)
def test_orthogonal_is_orthogonal(shape, column_axis, dtype):
    g = 1.0 if dtype == jnp.float32 else 2.0  # both gains, without doubling the QR compiles
    w = ini.orthogonal(g, column_axis)(_key(6), shape, dtype)
    assert w.shape == shape and w.dtype == dtype
    m = _as_matrix(w, column_axis)
    rows, cols = m.shape
    gram = m.T @ m if rows >= cols else m @ m.T
    # Householder QR loses orthogonality by at most O(rows * cols * eps) (Higham, Thm 19.4);
    # in practice ~sqrt(rows) * eps. We allow max(rows, cols) * eps, scaled by gain^2.
    tol = g**2 * max(rows, cols) * float(jnp.finfo(dtype).eps)
    err = np.abs(gram - g**2 * np.eye(gram.shape[0])).max()
    assert err < tol, f"orthogonality error {err:.3g} > {tol:.3g}"


def test_orthogonal_deterministic_for_a_key():
    init = ini.orthogonal()
    a, b = init(_key(7), (48, 24)), init(_key(7), (48, 24))
    c = init(_key(8), (48, 24))
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert not np.allclose(np.asarray(a), np.asarray(c))


def _haar_entry_cdf(d: int):
    """CDF of one entry of a uniformly random unit vector in R^d: x^2 ~ Beta(1/2, (d-1)/2)."""
    beta = st.beta(0.5, (d - 1) / 2)
    return lambda x: 0.5 + 0.5 * np.sign(x) * beta.cdf(np.asarray(x) ** 2)


@pytest.mark.parametrize("shape", [(16, 16), (24, 8), (8, 24)], ids=str)
def test_orthogonal_is_haar(shape):
    # Under the Haar measure every entry is a coordinate of a uniform unit vector in R^max(m, n).
    # One entry per matrix keeps the samples independent; (0, 0) and (-1, -1) both checked.
    init = ini.orthogonal(1.5)
    keys = jax.random.split(_key(9), 4000)
    ws = np.asarray(jax.jit(jax.vmap(lambda k: init(k, shape, F32)))(keys), np.float64) / 1.5
    cdf = _haar_entry_cdf(max(shape))
    for entry in (ws[:2000, 0, 0], ws[2000:, -1, -1]):
        assert st.kstest(entry, cdf).pvalue > KS_P
    # Power: QR without the sign(diag R) correction is not Haar, and this test sees it.
    a = jax.random.normal(_key(10), (2000, max(shape), min(shape)))
    q_raw = np.asarray(jnp.linalg.qr(a)[0][:, 0, 0], np.float64)
    assert st.kstest(q_raw, cdf).pvalue < 1e-10
    if shape == (8, 24):  # parity with jax's orthogonal, like for like (same gain)
        theirs = jax.jit(jax.vmap(lambda k: JI.orthogonal(1.5)(k, shape, F32)))(keys[:2000])
        theirs = np.asarray(theirs, np.float64) / 1.5
        for idx in ((0, 0), (5, 17)):
            p = st.ks_2samp(ws[2000:, idx[0], idx[1]], theirs[:, idx[0], idx[1]]).pvalue
            assert p > KS_P, idx


# --------------------------------------------------------------------------- identity


def test_identity_dense():
    np.testing.assert_array_equal(ini.identity()(_key(0), (3, 5), F32), np.eye(3, 5))
    np.testing.assert_array_equal(ini.identity(2.0)(_key(0), (4, 2), F32), 2 * np.eye(4, 2))


@pytest.mark.parametrize("kernel", [(3, 3), (4,), (5,)], ids=str)
def test_identity_conv_is_dirac(kernel):
    c = 6
    nd = len(kernel)
    w = ini.identity(1.5)(_key(0), (*kernel, c, c), F32)
    x = jax.random.normal(_key(12), (2, *([7] * nd), c), F32)
    spatial = "DHW"[-nd:] if nd > 1 else "W"
    dn = jax.lax.conv_dimension_numbers(
        x.shape, w.shape, (f"N{spatial}C", f"{spatial}IO", f"N{spatial}C")
    )
    y = jax.lax.conv_general_dilated(x, w, (1,) * nd, "SAME", dimension_numbers=dn)
    np.testing.assert_allclose(np.asarray(y), 1.5 * np.asarray(x), rtol=1e-6, atol=1e-6)


# --------------------------------------------------------------------------- deepnorm


def test_deepnorm_beta_and_stacks():
    c = cr.deepnorm_constants(12, "encoder-decoder", 6)
    for stack, beta in (("encoder", c.encoder_beta), ("decoder", c.decoder_beta)):
        init = ini.deepnorm(12, "encoder-decoder", 6, stack=stack)
        x = np.asarray(init(_key(13), (256, 256), F32), np.float64).ravel()
        _assert_variance(x, st.norm(scale=beta * math.sqrt(2 / 512)), f"deepnorm {stack}")
    # beta < 1 scales the weights down (multiplied, as xavier_normal_(gain=beta) in the paper)
    assert c.encoder_beta < 1 and c.decoder_beta < 1


def test_numpy_and_array_scalar_arguments():
    # jax.nn.initializers accept concrete 0-d arrays as hyperparameters; so do ours, and the
    # DeepNet table takes numpy integer layer counts.
    key = _key(3)
    np.testing.assert_array_equal(
        ini.normal(jnp.array(0.1))(key, (8, 8)), ini.normal(0.1)(key, (8, 8))
    )
    np.testing.assert_array_equal(
        ini.variance_scaling(np.float32(2.0))(key, (8, 8)), ini.variance_scaling(2.0)(key, (8, 8))
    )
    with pytest.raises(ValueError, match=r"normal: stddev must be a finite number > 0, found -1"):
        ini.normal(jnp.array(-1.0))
    with pytest.raises(TypeError, match=r"normal: stddev must be a concrete number"):
        jax.jit(lambda s: ini.normal(s)(key, (2,)))(0.1)
    c = cr.deepnorm_constants(np.int64(12), "encoder-decoder", np.int32(6))
    assert c == cr.deepnorm_constants(12, "encoder-decoder", 6)
    assert type(c.alpha) is float


# --------------------------------------------------------------------------- the central claim
# A plain network: h_0 = x ~ N(0, 1) (batch 256, width 256), z_l = h_{l-1} W_l (no bias),
# h_l = phi(z_l), L = 50. We measure q_l = mean(z_l^2), the pre-activation second moment (z is
# zero-mean by the symmetry of W). Mean-field theory: q_{l+1} = n Var[W] E[phi(z)^2], z ~ N(0, q_l).

L_LAYERS, WIDTH, BATCH = 50, 256, 256


@functools.partial(jax.jit, static_argnums=(2,))
def _forward_q(x, ws, act):
    def layer(h, w):
        z = h @ w
        return act(z), jnp.mean(z**2)

    h, q = jax.lax.scan(layer, x, ws)
    return q, h


def _network(init, act, seed, n_nets=1):
    keys = jax.random.split(_key(100 + seed), (n_nets, L_LAYERS))
    ws = jax.vmap(jax.vmap(lambda k: init(k, (WIDTH, WIDTH), F32)))(keys)
    x = jax.random.normal(_key(200 + seed), (BATCH, WIDTH), F32)
    q, h = jax.vmap(lambda w: _forward_q(x, w, act))(ws)
    return np.asarray(q, np.float64), np.asarray(h, np.float64), float(jnp.mean(x**2))


def _mean_field(q1, var_n, phi, layers=L_LAYERS):
    """q_l by Gauss-Hermite quadrature of q_{l+1} = var_n * E[phi(sqrt(q_l) Z)^2]."""
    z, w = np.polynomial.hermite_e.hermegauss(80)
    w = w / w.sum()
    qs = [q1]
    for _ in range(layers - 1):
        qs.append(var_n * float(np.sum(w * phi(math.sqrt(qs[-1]) * z) ** 2)))
    return np.array(qs)


def test_he_relu_preserves_variance():
    # E[q_L] = q_1 exactly (He's derivation). A single width-256 network fluctuates around it
    # log-normally (Var[log q_L] ~ 5 L / n ~ 1, Hanin & Rolnick 2018), so we average 8 networks.
    q, _, _ = _network(ini.he_normal(), jax.nn.relu, 0, n_nets=8)
    ratio = q[:, -1] / q[:, 0]
    assert 0.5 < ratio.mean() < 2.0, ratio
    assert np.all(ratio > 1e-2) and np.all(ratio < 1e2)


@pytest.mark.parametrize(
    ("init", "act", "name", "preserved"),
    [
        (ini.xavier_normal(gain=ini.gain("tanh")), jnp.tanh, "xavier(gain 5/3)+tanh", True),
        (ini.variance_scaling(ini.gain("tanh") ** 2), jnp.tanh, "lecun(gain 5/3)+tanh", True),
        (ini.lecun_normal(), lambda z: 1.7159 * jnp.tanh(2 * z / 3), "lecun+scaled_tanh", False),
    ],
    ids=lambda v: v if isinstance(v, str) else "",
)
def test_tanh_matched_pairs_reach_fixed_point(init, act, name, preserved):
    # tanh needs gain 5/3 (or LeCun's scaled tanh 1.7159 tanh(2z/3), slope 1.14 at 0) for a
    # non-zero fixed point q* of the mean-field map; q_l settles there (checked against q*). With
    # gain 5/3, q* = 1.15 is within a factor 2 of the input's E[x^2] = 1; LeCun's scaled tanh
    # settles lower, q* = 0.38 (stable, no decay, but not within 2x of the input).
    q, _, x2 = _network(init, act, 1)
    q = q[0]
    var_n = WIDTH * float(np.var(np.asarray(init(_key(0), (WIDTH, WIDTH), F32))))
    q_star = _mean_field(q[0], var_n, lambda t: np.asarray(act(t)))[-1]
    assert q[-1] == pytest.approx(q_star, rel=0.1), name
    assert abs(q[-1] - q[-10]) < 0.1 * q[-1], name  # settled: the last 10 layers are flat
    if preserved:
        assert 0.5 < q[-1] / x2 < 2.0, name


def test_plain_lecun_tanh_decays_algebraically():
    # With gain 1 the only fixed point is 0: q_{l+1} ~ q_l - 2 q_l^2, so q_l ~ 1 / (2 l). After 50
    # layers q has fallen ~100x: slow (not the 2^-50 of a wrong ReLU init), but not preserved.
    q, _, _ = _network(ini.lecun_normal(), jnp.tanh, 2)
    q = q[0]
    mf = _mean_field(q[0], 1.0, np.tanh)
    assert q[-1] == pytest.approx(mf[-1], rel=0.15)
    assert 1e-3 < q[-1] / q[0] < 0.05


def test_relu_with_lecun_collapses():
    # ReLU halves the second moment per layer and LeCun does not compensate: q_L = q_1 2^-(L-1).
    q, _, _ = _network(ini.lecun_normal(), jax.nn.relu, 3)
    log2_ratio = math.log2(q[0, -1] / q[0, 0])
    assert -(L_LAYERS - 1) - 6 < log2_ratio < -(L_LAYERS - 1) + 6


def test_standard_normal_tanh_saturates():
    # Var[W] = 1 makes q_l ~ n E[tanh^2] ~ 250: z ~ N(0, 250), so a unit is saturated
    # (|tanh z| > 0.99, tanh' < 0.02) unless |z| < atanh(0.99) = 2.65, i.e. with probability
    # P(|N(0, 1)| > 2.65 / sqrt(250)) = 0.87. We check q and that over 80% of units saturate.
    q, h, _ = _network(ini.normal(1.0), jnp.tanh, 4)
    assert q[0, -1] > 100
    expected = 2 * st.norm.sf(math.atanh(0.99) / math.sqrt(q[0, -1]))
    frac = np.mean(np.abs(h[0]) > 0.99)
    assert frac > 0.8
    assert frac == pytest.approx(expected, abs=0.05)


def test_large_normal_relu_explodes():
    # std 0.1: n Var[W] / 2 = 1.28 per layer, 1.28^49 ~ 2e5 after 50 layers
    q, _, _ = _network(ini.normal(0.1), jax.nn.relu, 5)
    ratio = q[0, -1] / q[0, 0]
    assert ratio > 1e3
    assert abs(math.log(ratio) - 49 * math.log(1.28)) < 4


# --------------------------------------------------------------------------- jit, dtypes, flax

# One factory per distinct sampling path (the others differ from these only in constants), to
# keep the number of compilations small.
ALL_FACTORIES = {
    **{
        name: CASES[name][0]
        for name in ("uniform", "normal", "truncated_normal", "he_normal", "lecun_normal_trunc")
        + ("xavier_uniform", "deepnorm")
    },
    "orthogonal": lambda: ini.orthogonal(1.3),
    "identity": lambda: ini.identity(0.5),
}


def test_jit_matches_eager():
    # One jit over every initializer (one compile); shapes are static, keys are traced.
    shape = (64, 48)  # the shape of the half-precision test: eager compiles are shared
    # one per random primitive path: uniform, normal, truncated normal, QR, none
    names = ("uniform", "he_normal", "truncated_normal", "orthogonal", "identity")
    inits = {name: ALL_FACTORIES[name]() for name in names}
    jitted = jax.jit(lambda k: {name: init(k, shape) for name, init in inits.items()})(_key(14))
    for name, init in inits.items():
        eager = init(_key(14), shape, F32)
        assert jitted[name].dtype == F32, name
        np.testing.assert_allclose(
            np.asarray(jitted[name]), np.asarray(eager), rtol=2e-6, atol=1e-7, err_msg=name
        )
    # the Initializer itself jitted, with shape and dtype static
    he = inits["he_normal"]
    out = jax.jit(he, static_argnums=(1, 2))(_key(14), shape, jnp.bfloat16)
    np.testing.assert_array_equal(np.asarray(out), np.asarray(he(_key(14), shape, jnp.bfloat16)))


@pytest.mark.parametrize("low", [jnp.bfloat16, jnp.float16], ids=["bfloat16", "float16"])
@pytest.mark.parametrize("name", list(ALL_FACTORIES))
def test_half_precision_is_rounded_float32_sample(name, low):
    init = ALL_FACTORIES[name]()
    shape = (64, 48)
    out = init(_key(15), shape, low)
    assert out.dtype == low and out.shape == shape
    ref = init(_key(15), shape, F32).astype(low)
    np.testing.assert_array_equal(np.asarray(out, np.float32), np.asarray(ref, np.float32))
    assert bool(jnp.all(jnp.isfinite(out)))


def test_half_precision_variance():
    x = ini.he_normal()(_key(16), (256, 256), jnp.bfloat16)
    # bf16 rounding adds relative variance ~2^-16/3; negligible against the bound
    _assert_variance(np.asarray(x, np.float64).ravel(), st.norm(scale=math.sqrt(2 / 256)), "bf16")


def test_default_dtype_and_factory_dtype():
    assert ini.he_normal()(_key(0), (4, 4)).dtype == jnp.float32  # even with x64 enabled
    assert ini.he_normal(dtype=jnp.bfloat16)(_key(0), (4, 4)).dtype == jnp.bfloat16
    assert ini.normal(dtype="float16")(_key(0), (4, 4), None).dtype == jnp.float16


def test_zero_size_and_raw_keys():
    assert ini.he_normal()(_key(0), (0, 4)).shape == (0, 4)
    raw = jax.random.PRNGKey(0)
    assert ini.orthogonal()(raw, (8, 4)).shape == (8, 4)
    assert ini.uniform()(raw, 5).shape == (5,)


def test_out_sharding_and_flax():
    dev = jax.devices()[0]
    w = ini.he_normal()(_key(0), (8, 4), F32, out_sharding=jax.sharding.SingleDeviceSharding(dev))
    assert w.shape == (8, 4)
    nn = pytest.importorskip("flax.linen")
    layer = nn.Dense(16, kernel_init=cr.init.he_normal(), param_dtype=jnp.bfloat16)
    params = layer.init(_key(1), jnp.ones((2, 32), F32))
    assert params["params"]["kernel"].shape == (32, 16)
    assert params["params"]["kernel"].dtype == jnp.bfloat16
    conv = nn.Conv(8, (3, 3), kernel_init=cr.init.orthogonal())
    k = conv.init(_key(2), jnp.ones((1, 5, 5, 4), F32))["params"]["kernel"]
    m = np.asarray(k, np.float64).reshape(-1, 8)
    np.testing.assert_allclose(m.T @ m, np.eye(8), atol=1e-5)


def test_reexports():
    assert cr.init is ini and cr.initializers is ini
    assert ini.glorot_normal is ini.xavier_normal and ini.kaiming_uniform is ini.he_uniform


# --------------------------------------------------------------------------- errors


def test_factory_errors():
    with pytest.raises(
        ValueError, match=r"Unknown mode 'fan_inn'.*'fan_in'.*Did you mean 'fan_in'"
    ):
        ini.variance_scaling(1.0, "fan_inn")
    with pytest.raises(ValueError, match=r"Unknown distribution 'gaussian'.*'normal'"):
        ini.variance_scaling(1.0, "fan_in", "gaussian")
    with pytest.raises(ValueError, match=r"Unknown mode 'avg'"):
        ini.he_normal(mode="avg")
    for bad in (0, -1.0, float("nan"), float("inf"), "1"):
        with pytest.raises(
            ValueError, match=r"variance_scaling: scale must be a finite number > 0"
        ):
            ini.variance_scaling(bad)
    with pytest.raises(ValueError, match=r"normal: stddev must be a finite number > 0, found -0.1"):
        ini.normal(-0.1)
    with pytest.raises(ValueError, match=r"uniform: scale must be .* found 0"):
        ini.uniform(0)
    with pytest.raises(ValueError, match=r"orthogonal: gain must be .* found -1"):
        ini.orthogonal(-1)
    with pytest.raises(ValueError, match=r"xavier_normal: gain must be"):
        ini.xavier_normal(gain=0.0)
    with pytest.raises(ValueError, match=r"need lower < upper, found lower=2, upper=1"):
        ini.truncated_normal(1.0, lower=2, upper=1)
    with pytest.raises(
        TypeError, match=r"lecun_normal: dtype must be a real floating dtype.*int32"
    ):
        ini.lecun_normal(dtype=jnp.int32)
    with pytest.raises(TypeError, match=r"in_axis must be an int or a sequence of ints, found 'a'"):
        ini.he_normal(in_axis="a")
    with pytest.raises(TypeError, match=r"column_axis must be an int, found 1.5"):
        ini.orthogonal(column_axis=1.5)
    with pytest.raises(ValueError, match=r"Unknown stack 'middle'"):
        ini.deepnorm(6, stack="middle")
    with pytest.raises(ValueError, match=r"num_layers must be an integer >= 1, found 0"):
        ini.deepnorm(0)


def test_call_errors():
    key = _key(0)
    with pytest.raises(ValueError, match=r"he_normal: .*at least 2 dimensions.*\(5,\) with 1"):
        ini.he_normal()(key, (5,))
    with pytest.raises(ValueError, match=r"variance_scaling: .*at least 2 dimensions.*\(\) with 0"):
        ini.variance_scaling(1.0)(key, ())
    with pytest.raises(TypeError, match=r"xavier_uniform: dtype must be a real floating.*int32"):
        ini.xavier_uniform()(key, (4, 4), jnp.int32)
    with pytest.raises(TypeError, match=r"normal: dtype must be a real floating.*complex64"):
        ini.normal()(key, (4, 4), jnp.complex64)
    with pytest.raises(TypeError, match=r"orthogonal: dtype must be a real floating.*bool"):
        ini.orthogonal()(key, (4, 4), jnp.bool_)
    with pytest.raises(ValueError, match=r"orthogonal: needs a shape with at least 2 dim"):
        ini.orthogonal()(key, (4,))
    with pytest.raises(ValueError, match=r"column_axis=3 is out of range for shape \(4, 4\)"):
        ini.orthogonal(column_axis=3)(key, (4, 4))
    with pytest.raises(ValueError, match=r"identity: needs a shape"):
        ini.identity()(key, (4,))
    with pytest.raises(ValueError, match=r"lecun_normal: in_axis=5 is out of range"):
        ini.lecun_normal(in_axis=5)(key, (4, 4))
    with pytest.raises(TypeError, match=r"shape must be a sequence of non-negative ints"):
        ini.normal()(key, (4, -1))


def test_compute_fans_errors():
    with pytest.raises(ValueError, match=r"in both in_axis and out_axis"):
        ini.compute_fans((4, 4), in_axis=0, out_axis=0)
    with pytest.raises(ValueError, match=r"in both out_axis and batch_axis"):
        ini.compute_fans((2, 4, 4), batch_axis=-1)
    with pytest.raises(ValueError, match=r"batch_axis=\(0, 0\) repeats an axis"):
        ini.compute_fans((2, 4, 4), batch_axis=(0, 0))
    with pytest.raises(ValueError, match=r"at least 2 dimensions"):
        ini.compute_fans((3,))


def test_gain_errors():
    with pytest.raises(
        ValueError, match=r"Unknown activation 'relux'.*'tanh'.*Did you mean 'relu'"
    ):
        ini.gain("relux")
    with pytest.raises(ValueError, match=r"param is only used by 'leaky_relu'.*'tanh'"):
        ini.gain("tanh", 0.1)
    with pytest.raises(TypeError, match=r"negative slope must be a number, found 'x'"):
        ini.gain("leaky_relu", "x")
