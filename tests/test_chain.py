"""chain_jacobian: every plan against jax.jacfwd/jacrev of the composition; the DP's optimality
against brute force over all bracketings; the library's models; jax.jit; every error."""

from __future__ import annotations

import functools
import math
import re
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import chainrule as cr
from chainrule import nets
from chainrule.chain import LayerCosts, Segment, optimal_plan, plan_cost

DTYPES = ("float32", "float64")
TOL = {"float32": dict(rtol=2e-5, atol=2e-6), "float64": dict(rtol=1e-11, atol=1e-13)}


# --------------------------------------------------------------------------------------------
# Brute force: every bracketing of a chain of n layers, costed independently of chain.py
# --------------------------------------------------------------------------------------------


@functools.cache
def all_plans(i: int, j: int) -> tuple:
    """Every plan for layers [i, j): both leaves, and every split with every pair of sub-plans."""
    plans = [("fwd", i, j), ("rev", i, j)]
    for k in range(i + 1, j):
        plans += [(a, b) for a in all_plans(i, k) for b in all_plans(k, j)]
    return tuple(plans)


def brute_cost(plan, widths, primal, tangent, adjoint) -> float:
    def cost(p):
        if isinstance(p[0], str):
            mode, i, j = p
            per = tangent if mode == "fwd" else adjoint
            return (widths[i] if mode == "fwd" else widths[j]) * sum(per[i:j])
        (a, b) = p
        i, k, j = span(a)[0], span(a)[1], span(b)[1]
        return cost(a) + cost(b) + 2 * widths[i] * widths[k] * widths[j]

    return sum(primal) + cost(plan)


def span(p):
    if isinstance(p[0], str):
        return p[1], p[2]
    return span(p[0])[0], span(p[1])[1]


def test_brute_force_counts_catalan_bracketings_with_two_modes():
    # plans(L) = 2 + sum_k plans(k) plans(L - k): 2, 6, 26, 142, 882
    assert [len(all_plans(0, n)) for n in range(1, 6)] == [2, 6, 26, 142, 882]


@settings(max_examples=150)
@given(
    st.integers(1, 5).flatmap(
        lambda n: st.tuples(
            st.lists(st.integers(1, 300), min_size=n + 1, max_size=n + 1),
            st.lists(st.floats(1.0, 1e6), min_size=n, max_size=n),
            st.lists(st.floats(1.0, 1e6), min_size=n, max_size=n),
            st.lists(st.floats(1.0, 1e6), min_size=n, max_size=n),
        )
    )
)
def test_dp_is_optimal_against_brute_force(case):
    widths, primal, tangent, adjoint = case
    costs = LayerCosts(tuple(primal), tuple(tangent), tuple(adjoint), "given")
    tree, predicted = optimal_plan(widths, costs)
    n = len(widths) - 1
    brute = min(brute_cost(p, widths, primal, tangent, adjoint) for p in all_plans(0, n))
    assert predicted == pytest.approx(brute, rel=1e-12)
    # the returned tree is what it claims, and covers the chain
    assert plan_cost(tree, widths, costs) == pytest.approx(predicted, rel=1e-12)
    assert (tree.start, tree.stop) == (0, n)


def test_dp_splits_at_a_bottleneck_and_keeps_pure_modes_on_tall_and_wide():
    def dense(widths):  # a matvec per pass: 2 n_in n_out FLOPs
        per = tuple(2.0 * a * b for a, b in zip(widths[:-1], widths[1:], strict=True))
        return LayerCosts(per, per, per, "given")

    for widths, want in (
        ((1000, 1000, 10, 1000, 1000), "fwd[2:4] @ rev[0:2]"),
        ((10, 1000, 1000, 1000, 1000), "fwd[0:4]"),
        ((1000, 1000, 1000, 1000, 10), "rev[0:4]"),
    ):
        assert str(optimal_plan(widths, dense(widths))[0]) == want


# --------------------------------------------------------------------------------------------
# Random chains of pytree layers against jax.jacfwd / jax.jacrev
# --------------------------------------------------------------------------------------------

REPRS = ("vec", "mat", "dict")


def from_repr(r: str, h):
    if r == "vec":
        return h
    if r == "mat":
        return h.reshape(-1)
    return jnp.concatenate([h["a"], h["b"].reshape(-1)])


def to_repr(r: str, v, n: int):
    if r == "vec":
        return v
    if r == "mat":
        return v.reshape(1, n)
    # a dict of two leaves, one of them 2-D (n = 1: an empty leaf "a")
    k = n // 2
    return {"a": v[:k], "b": v[k:].reshape(n - k, 1)}


def make_chain(widths, reprs, dtype, seed=0):
    keys = jax.random.split(jax.random.PRNGKey(seed), len(widths))
    fs = []
    for i in range(len(widths) - 1):
        w = jax.random.normal(keys[i], (widths[i + 1], widths[i]), dtype) / math.sqrt(widths[i])
        b = jnp.linspace(-0.5, 0.5, widths[i + 1], dtype=dtype)

        def f(h, w=w, b=b, r_in=reprs[i], r_out=reprs[i + 1], n=widths[i + 1]):
            return to_repr(r_out, jnp.tanh(w @ from_repr(r_in, h) + b), n)

        fs.append(f)
    x = to_repr(reprs[0], jax.random.normal(keys[-1], (widths[0],), dtype), widths[0])
    return fs, x


def compose(fs):
    def f(x):
        for g in fs:
            x = g(x)
        return x

    return f


def assert_tree_close(got, want, dtype):
    assert jax.tree_util.tree_structure(got) == jax.tree_util.tree_structure(want)
    for g, w in zip(jax.tree_util.tree_leaves(got), jax.tree_util.tree_leaves(want), strict=True):
        assert g.shape == w.shape and g.dtype == w.dtype, (g.shape, w.shape, g.dtype, w.dtype)
        np.testing.assert_allclose(np.asarray(g), np.asarray(w), **TOL[str(dtype)])


chains = st.integers(1, 3).flatmap(
    lambda n: st.tuples(
        st.lists(st.sampled_from([1, 2, 3, 5]), min_size=n + 1, max_size=n + 1),
        st.lists(st.sampled_from(REPRS), min_size=n + 1, max_size=n + 1),
        st.integers(0, 10**6),  # which explicit plan
        st.sampled_from([None, 1, 2]),  # chunk size
    )
)


def all_modes(fs, modes, ref=jax.jacfwd, **kw):
    """One jitted program: ``ref`` (jax.jacfwd or jax.jacrev) of the composition, then each
    mode's Jacobian (one compile per case keeps the suite fast; eagerly, every new shape
    compiles every op)."""

    @jax.jit
    def run(x):
        return ref(compose(fs))(x), [cr.chain_jacobian(fs, mode=m, **kw)(x) for m in modes]

    return run


@pytest.mark.parametrize("dtype", DTYPES)
@settings(max_examples=4)
@given(case=chains)
def test_every_plan_matches_jacfwd_and_jacrev(dtype, case):
    widths, reprs, pick, chunk = case
    fs, x = make_chain(widths, reprs, jnp.dtype(dtype))
    plans = all_plans(0, len(fs))
    # the pure modes and the references alternate between cases (one compile per case)
    modes = ("optimal", ("fwd", "rev")[pick // 2 % 2], plans[pick % len(plans)])
    ref = (jax.jacfwd, jax.jacrev)[pick % 2]
    want, jacs = all_modes(fs, modes, ref=ref, chunk_size=chunk)(x)
    for jac in jacs:
        assert_tree_close(jac, want, dtype)


def test_all_26_plans_of_a_three_layer_pytree_chain():
    fs, x = make_chain([3, 2, 5, 2], ["dict", "mat", "dict", "vec"], jnp.float64, seed=3)
    ref, jacs = all_modes(fs, all_plans(0, 3), ref=jax.jacrev)(x)
    for jac in jacs:
        assert_tree_close(jac, ref, "float64")


# --------------------------------------------------------------------------------------------
# The library's models
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", ["float32"])
def test_mlp_layers_of_nets(dtype):
    sizes = [6, 12, 2, 12, 6]
    params = nets.mlp_init(jax.random.PRNGKey(1), sizes, dtype=jnp.dtype(dtype))
    x = jax.random.normal(jax.random.PRNGKey(2), (3, 6), jnp.dtype(dtype))
    last = len(params) - 1
    fs = [
        functools.partial(
            lambda h, layer, act: nets.mlp_apply([layer], h, "tanh", final_activation=act),
            layer=layer,
            act=i < last,
        )
        for i, layer in enumerate(params)
    ]
    ref = jax.jacfwd(functools.partial(nets.mlp_apply, params, activation="tanh"))(x)
    plan = cr.chain_jacobian_plan(fs, x)
    assert plan.widths == (18, 36, 6, 36, 18)
    assert plan.bracketing == "fwd[2:4] @ rev[0:2]"  # split at the batch x 2 bottleneck
    assert plan.predicted_flops < min(plan.predicted("fwd"), plan.predicted("rev"))
    chain_ref, jacs = all_modes(fs, ("rev", plan))(x)  # plan: what "optimal" runs
    for jac in [chain_ref, *jacs]:
        assert_tree_close(jac, ref, dtype)


@pytest.mark.parametrize("dtype", ["float64"])
def test_transformer_blocks_as_layers(dtype):
    dt = jnp.dtype(dtype)
    params = nets.transformer_init(jax.random.PRNGKey(0), 2, 4, 2, 8, "post", dtype=dt)
    x = jax.random.normal(jax.random.PRNGKey(1), (3, 4), dt)

    def block(layer, h):
        return nets.transformer_apply({"layers": [layer]}, h, "post", n_heads=2)

    # a pytree layer between the blocks: the residual stream as a dict of rows
    fs = [
        functools.partial(block, params["layers"][0]),
        lambda h: {"first": h[0], "rest": h[1:]},
        lambda d: block(params["layers"][1], jnp.concatenate([d["first"][None], d["rest"]])),
    ]
    # jax.nn.dot_product_attention's own jacfwd and jacrev differ by ~2e-7 in float64 (jax
    # 0.10.2, CPU; jit and eager by ~1e-8): the plans are held to what JAX's modes agree to
    tol = dict(rtol=1e-5, atol=1e-6)
    whole = nets.transformer_apply(params, x, "post", n_heads=2)
    np.testing.assert_allclose(compose(fs)(x), whole, rtol=1e-12)
    modes = ("optimal", (("rev", 0, 2), ("fwd", 2, 3)))
    ref, jacs = all_modes(fs, modes, ref=jax.jacrev, cost="jaxpr")(x)
    for jac in jacs:
        assert jac.shape == ref.shape == (3, 4, 3, 4) and jac.dtype == dt
        np.testing.assert_allclose(jac, ref, **tol)


# --------------------------------------------------------------------------------------------
# jax.jit, chunking, plans, the cost sources
# --------------------------------------------------------------------------------------------


def bottleneck(dtype=jnp.float32):
    return make_chain([8, 8, 2, 8, 8], ["vec"] * 5, jnp.dtype(dtype), seed=5)


@pytest.mark.parametrize("dtype", ["float32"])
def test_under_jit_with_layers_closing_over_traced_parameters(dtype):
    dt = jnp.dtype(dtype)
    ws = [
        jax.random.normal(k, (m, n), dt)
        for k, (m, n) in zip(
            jax.random.split(jax.random.PRNGKey(0), 3), [(6, 7), (2, 6), (7, 2)], strict=True
        )
    ]
    x = jnp.linspace(-1.0, 1.0, 7, dtype=dt)

    def layers(ws):
        return [lambda h, w=w: jnp.sin(w @ h) for w in ws]

    @jax.jit
    def jac(ws, x):  # the weights are tracers the layers close over; the XLA costs still price
        return cr.chain_jacobian(layers(ws))(x)

    ref = jax.jacfwd(compose(layers(ws)))(x)
    assert_tree_close(jac(ws, x), ref, dtype)
    assert_tree_close(jax.jit(cr.chain_jacobian(layers(ws), mode="fwd"))(x), ref, dtype)


def test_results_follow_the_layers_as_they_are_at_each_call():
    scale = {"s": 1.0}
    fs = [lambda h: scale["s"] * jnp.tanh(h), lambda h: h**2]
    jac_fn = cr.chain_jacobian(fs)
    x = jnp.array([0.5, -1.0])
    first = jac_fn(x)
    scale["s"] = 3.0
    np.testing.assert_allclose(jac_fn(x), jax.jacfwd(compose(fs))(x), rtol=1e-6)
    np.testing.assert_allclose(jac_fn(x), 9.0 * first, rtol=1e-6)


def test_chunked_plans_agree():
    # 3 does not divide the widths 8: full chunks and a remainder (hypothesis draws 1 and 2)
    fs, x = bottleneck()
    ref, jacs = all_modes(fs, ("optimal",), chunk_size=3)(x)  # a fwd and a rev segment
    for jac in jacs:
        assert_tree_close(jac, ref, "float32")


def test_plan_prints_bracketing_candidates_and_why():
    fs, x = bottleneck()
    plan = cr.chain_jacobian_plan(fs, x)
    text = str(plan)
    assert plan.bracketing == "fwd[2:4] @ rev[0:2]" and plan.mode == "optimal"
    assert plan.as_tuple() == (("rev", 0, 2), ("fwd", 2, 4))
    assert "8 -> 8 -> 2 -> 8 -> 8" in text and "(costs: xla)" in text
    for name in ("fwd", "rev", "auto (= rev)", "optimal", "split at layer 1", "split at layer 3"):
        assert re.search(rf"^{re.escape(name)}\s+\d", text, re.M), name
    assert "2 rev passes (one per output)" in text and "2 fwd passes (one per input)" in text
    assert "product at layer 2: (8x2) @ (2x8)" in text
    # printed costs are the model's
    assert plan.predicted("optimal") == pytest.approx(plan.predicted_flops)
    assert plan.predicted("fwd") == pytest.approx(
        plan_cost(Segment("fwd", 0, 4), plan.widths, plan.costs)
    )
    # a plan for another mode prices that mode
    fwd_plan = cr.chain_jacobian_plan(fs, x, mode="fwd")
    assert fwd_plan.bracketing == "fwd[0:4]"
    assert fwd_plan.predicted_flops == pytest.approx(plan.predicted("fwd"))
    explicit = cr.chain_jacobian_plan(fs, x, mode=(("fwd", 0, 1), ("rev", 1, 4)))
    assert explicit.mode == "explicit" and explicit.bracketing == "rev[1:4] @ fwd[0:1]"


def test_a_plan_runs_as_a_mode_and_checks_its_widths():
    fs, x = bottleneck()
    plan = cr.chain_jacobian_plan(fs, x)
    ref, (jac,) = all_modes(fs, (plan,))(x)
    assert_tree_close(jac, ref, "float32")
    with pytest.raises(ValueError, match=r"widths \(8, 8, 2, 8, 8\).*widths \(9, 8, 2, 8, 8\)"):
        cr.chain_jacobian([lambda h: h[:8]] + fs[1:], plan)(jnp.ones(9))


def test_xla_and_jaxpr_costs_agree_on_dense_layers():
    fs, x = make_chain([16, 32, 4], ["vec"] * 3, jnp.float32)
    a = cr.chain_jacobian_plan(fs, x, cost="xla")
    b = cr.chain_jacobian_plan(fs, x, cost="jaxpr")
    assert a.costs.source == "xla" and b.costs.source == "jaxpr"
    assert a.bracketing == b.bracketing
    for name, _, c in a.candidates:
        assert b.predicted(name) == pytest.approx(c, rel=0.15), name
    # a dense layer's tangent costs what its primal does (one matvec, one elementwise op)
    for p, t in zip(a.costs.primal, a.costs.tangent, strict=True):
        assert t == pytest.approx(p, rel=0.5)


def test_jaxpr_counts_matmuls_and_convolutions():
    from chainrule.chain import _jaxpr_flops

    s = jax.ShapeDtypeStruct((5, 7), jnp.float32)
    b = np.ones((7, 3), np.float32)  # a constant, not an op of the program
    assert _jaxpr_flops(lambda a: a @ b, s) == 2 * 5 * 7 * 3
    k = np.ones((3, 3, 4, 8), np.float32)
    img = jax.ShapeDtypeStruct((1, 6, 6, 4), jnp.float32)
    conv = functools.partial(
        jax.lax.conv_general_dilated,
        rhs=k,
        window_strides=(1, 1),
        padding="VALID",
        dimension_numbers=("NHWC", "HWIO", "NHWC"),
    )
    assert _jaxpr_flops(lambda x: conv(x), img) == 2 * (4 * 4 * 8) * (3 * 3 * 4)


# --------------------------------------------------------------------------------------------
# Errors
# --------------------------------------------------------------------------------------------


def test_empty_chain():
    with pytest.raises(ValueError, match="at least one layer"):
        cr.chain_jacobian([])
    with pytest.raises(ValueError, match="at least one layer"):
        cr.chain_jacobian_plan((), jnp.ones(2))


def test_not_a_sequence_of_functions():
    with pytest.raises(TypeError, match=r"sequence of functions.*\[f\]"):
        cr.chain_jacobian(jnp.tanh)
    with pytest.raises(TypeError, match="layer 1 is not callable"):
        cr.chain_jacobian([jnp.tanh, 3.0])


def test_mismatched_layers_name_the_index_and_both_shapes():
    w = jnp.ones((5, 7), jnp.float32)
    fs = [lambda h: jnp.tanh(h), lambda h: jnp.sin(h) * 2, lambda h: w @ h]
    with pytest.raises(ValueError) as e:
        cr.chain_jacobian(fs)(jnp.ones(3, jnp.float32))
    msg = str(e.value)
    assert "layer 2 does not accept the output of layer 1, float32[3]" in msg
    assert "(7,) and (3,)" in msg  # what layer 2 expects, as JAX states it
    with pytest.raises(
        ValueError,
        match=r"layer 0 does not accept the chain's input x, "
        r"\{a: float32\[2\]\}",
    ):
        cr.chain_jacobian([lambda h: h["b"]])({"a": jnp.ones(2, jnp.float32)})


@pytest.mark.parametrize("mode", ["optimum", "auto", "FWD"])
def test_unknown_mode(mode):
    with pytest.raises(ValueError, match=r"Unknown chain_jacobian mode.*'optimal', 'fwd', 'rev'"):
        cr.chain_jacobian([jnp.tanh], mode=mode)


@pytest.mark.parametrize(
    ("plan", "why"),
    [
        (("fwd", 0, 1), r"covers layers \[0:1\], the chain has layers \[0:2\]"),
        (("bwd", 0, 2), "mode is 'fwd' or 'rev', not 'bwd'"),
        (("fwd", 0), "three entries"),
        (("fwd", 1, 1), "at least one layer"),
        (("fwd", 0, 2.0), "integers"),
        ((("fwd", 0, 1), ("rev", 0, 2)), "not adjacent"),
        ((("fwd", 0, 1), ("rev", 1, 2), ("rev", 1, 2)), "exactly two parts, not 3"),
        (((("fwd", 0, 1), "rev"), ("rev", 1, 2)), r"at plan\[0\]\[1\]: expected a tuple"),
        (7, "expected a tuple"),
    ],
)
def test_malformed_bracketing(plan, why):
    with pytest.raises(ValueError, match=r"Malformed chain_jacobian bracketing.*" + why):
        cr.chain_jacobian([jnp.tanh, jnp.sin], mode=plan)


def test_non_floating_leaves_are_named():
    n = jnp.arange(2, dtype=jnp.int32)
    with pytest.raises(TypeError, match=r"x\['n'\] has dtype int32"):
        cr.chain_jacobian([lambda d: d["x"] * d["n"]])({"x": jnp.ones(2), "n": n})
    with pytest.raises(TypeError, match=r"output of layer 0, out\[1\] has dtype int32"):
        cr.chain_jacobian([lambda h: (h, n), lambda t: t[0]])(jnp.ones(2))


@pytest.mark.parametrize("chunk", [0, -1, 2.5, True])
def test_bad_chunk_size(chunk):
    with pytest.raises(ValueError, match="chunk_size must be None or a positive integer"):
        cr.chain_jacobian([jnp.tanh], chunk_size=chunk)


def test_bad_cost_source():
    with pytest.raises(ValueError, match=r"cost source 'flops'.*'xla', 'jaxpr'"):
        cr.chain_jacobian([jnp.tanh], cost="flops")


# --------------------------------------------------------------------------------------------
# The docs' code blocks run
# --------------------------------------------------------------------------------------------


def test_docs_code_blocks_run():
    doc = Path(__file__).resolve().parents[1] / "docs" / "chain_jacobians.md"
    blocks = re.findall(r"```python\n(.*?)```", doc.read_text(), re.S)
    assert blocks
    for block in blocks:
        exec(compile(block, str(doc), "exec"), {"__name__": "__docs__"})
