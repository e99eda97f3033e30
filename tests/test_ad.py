"""chainrule.ad against JAX's own transforms, on random pytrees, in float32 and float64."""

from __future__ import annotations

from typing import NamedTuple

import hypothesis.strategies as st
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings

import chainrule as cr

# Tolerances: both sides run the same primitives; differences come from XLA fusing and
# reassociating sums differently, a few ulps times the size of the terms summed.
TOL = {jnp.dtype("float32"): 2e-5, jnp.dtype("float64"): 1e-12}


def assert_trees_close(a, b, dtype, scale=1.0):
    assert jax.tree_util.tree_structure(a) == jax.tree_util.tree_structure(b)
    for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b), strict=True):
        assert np.shape(x) == np.shape(y)
        assert jnp.result_type(x) == jnp.result_type(y)
        tol = TOL[jnp.dtype(dtype)] * scale
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=tol, atol=tol)


class Pair(NamedTuple):
    a: jax.Array
    b: jax.Array


SHAPES = st.lists(st.integers(1, 3), min_size=0, max_size=2).map(tuple)


def _leaf():
    return SHAPES


def _tree(depth=2):
    leaf = _leaf()
    if depth == 0:
        return leaf
    sub = _tree(depth - 1)
    return st.one_of(
        leaf,
        st.dictionaries(st.sampled_from(["w", "b", "layers", "x"]), sub, min_size=1, max_size=3),
        st.lists(sub, min_size=1, max_size=3),
        st.lists(sub, min_size=1, max_size=3).map(tuple),
        st.tuples(sub, sub).map(lambda t: Pair(*t)),
    )


def materialize(shape_tree, seed, dtype):
    """Turn a pytree of shapes into a pytree of random arrays."""
    leaves, treedef = jax.tree_util.tree_flatten(
        shape_tree, is_leaf=lambda s: isinstance(s, tuple) and all(isinstance(i, int) for i in s)
    )
    keys = jax.random.split(jax.random.PRNGKey(seed), max(len(leaves), 1))
    arrays = [jax.random.normal(k, s, dtype) * 0.7 for k, s in zip(keys, leaves, strict=False)]
    return treedef.unflatten(arrays)


# Functions that couple all leaves, so a wrong path or a mixed-up leaf changes the answer.
def scalar_fn(tree):
    leaves = jax.tree_util.tree_leaves(tree)
    total = sum(jnp.sum(jnp.sin(x) * x**2) for x in leaves)
    coupling = sum(jnp.sum(x) for x in leaves)
    return total + 0.3 * coupling**2 + 0.1 * jnp.cos(coupling)


def vector_fn(tree):
    s = sum(jnp.sum(x) for x in jax.tree_util.tree_leaves(tree))
    return jax.tree.map(lambda x: jnp.tanh(x) * s + x**2, tree)


def _pytree_and_dtype():
    return st.tuples(_tree(), st.integers(0, 2**16), st.sampled_from(["float32", "float64"]))


def _nonempty(shape_tree):
    return len(jax.tree_util.tree_leaves(materialize(shape_tree, 0, jnp.float32))) > 0


tree_cases = _pytree_and_dtype().filter(lambda t: _nonempty(t[0]))


@settings(max_examples=8)
@given(tree_cases)
def test_jvp_vjp_linearize_match_jax(case):
    shapes, seed, dtype = case
    x = materialize(shapes, seed, dtype)
    t = materialize(shapes, seed + 1, dtype)
    out, tan = cr.jvp(vector_fn, (x,), (t,))
    ref_out, ref_tan = jax.jvp(vector_fn, (x,), (t,))
    assert_trees_close(out, ref_out, dtype)
    assert_trees_close(tan, ref_tan, dtype, scale=10)

    out, pullback = cr.vjp(vector_fn, x)
    _, ref_pullback = jax.vjp(vector_fn, x)
    ct = materialize(shapes, seed + 2, dtype)
    assert_trees_close(pullback(ct), ref_pullback(ct), dtype, scale=10)

    out, f_jvp = cr.linearize(vector_fn, x)
    assert_trees_close(f_jvp(t), ref_tan, dtype, scale=10)


@settings(max_examples=8)
@given(tree_cases)
def test_grad_value_and_grad_hessian_match_jax(case):
    shapes, seed, dtype = case
    x = materialize(shapes, seed, dtype)
    assert_trees_close(cr.grad(scalar_fn)(x), jax.grad(scalar_fn)(x), dtype, scale=10)
    v, g = cr.value_and_grad(scalar_fn)(x)
    rv, rg = jax.value_and_grad(scalar_fn)(x)
    assert_trees_close(v, rv, dtype)
    assert_trees_close(g, rg, dtype, scale=10)
    ref_h = jax.hessian(scalar_fn)(x)
    assert_trees_close(cr.hessian(scalar_fn)(x), ref_h, dtype, scale=100)
    assert_trees_close(cr.hessian(scalar_fn, chunk_size=2)(x), ref_h, dtype, scale=100)


@settings(max_examples=10)
@given(tree_cases, st.sampled_from(["fwd", "rev", "auto"]), st.sampled_from([None, 1, 3]))
def test_jacobian_matches_jacfwd_jacrev(case, mode, chunk):
    shapes, seed, dtype = case
    x = materialize(shapes, seed, dtype)
    ref = jax.jacrev(vector_fn)(x)
    assert_trees_close(cr.jacobian(vector_fn, mode=mode, chunk_size=chunk)(x), ref, dtype, 10)


@settings(max_examples=6)
@given(tree_cases)
def test_three_hvp_modes_agree_with_dense_hessian(case):
    shapes, seed, dtype = case
    x = materialize(shapes, seed, dtype)
    v = materialize(shapes, seed + 7, dtype)
    flat_x, unravel = jax.flatten_util.ravel_pytree(x)
    flat_v, _ = jax.flatten_util.ravel_pytree(v)
    dense = jax.hessian(lambda z: scalar_fn(unravel(z)))(flat_x)
    expected = unravel(dense @ flat_v)
    results = {m: cr.hvp(scalar_fn, x, v, mode=m) for m in cr.HVP_MODES}
    # Error model: each entry of H v sums N products; rounding grows like N * eps * |H||v|.
    n = flat_x.size
    for m, r in results.items():
        assert_trees_close(r, expected, dtype, scale=20 * n)
        assert_trees_close(r, results["fwd-over-rev"], dtype, scale=20 * n), m


@pytest.mark.parametrize("chunk", [None, 1, 2])
@pytest.mark.parametrize("mode", cr.HVP_MODES)
def test_hvp_batched_is_stacked_hvps(dtype, mode, chunk):
    x = {"w": jnp.linspace(-1, 1, 6, dtype=dtype).reshape(2, 3), "b": jnp.ones(2, dtype)}
    vs = jax.tree.map(
        lambda leaf: jnp.stack([leaf, -2 * leaf, jnp.ones_like(leaf)]),
        {"w": jnp.arange(6, dtype=dtype).reshape(2, 3), "b": jnp.array([1.0, -1.0], dtype)},
    )
    got = cr.hvp_batched(scalar_fn, x, vs, mode=mode, chunk_size=chunk)
    for k in range(3):
        v = jax.tree.map(lambda leaf, k=k: leaf[k], vs)
        assert_trees_close(
            jax.tree.map(lambda leaf, k=k: leaf[k], got), cr.hvp(scalar_fn, x, v), dtype, 50
        )


def test_chunked_jacobian_wide_tall_and_argnums(dtype):
    a = jax.random.normal(jax.random.PRNGKey(0), (7, 5), dtype)

    def f(x, y, scale):
        return {"u": jnp.tanh(a @ x) * scale + y[0], "v": x[:2] * y}

    x = jnp.linspace(0.1, 1.0, 5, dtype=dtype)
    y = jnp.array([0.5, -0.5], dtype)
    # Chunks that divide N or M, that do not, and one larger than the basis.
    for argnums, chunks in [(0, [None, 2]), (1, [1, 100]), ((0, 1), [3])]:
        ref = jax.jacfwd(f, argnums=argnums)(x, y, 2.0)
        for mode in ["fwd", "rev"]:
            for chunk in chunks:
                got = cr.jacobian(f, mode=mode, argnums=argnums, chunk_size=chunk)(x, y, 2.0)
                assert_trees_close(got, ref, dtype, scale=10)


def test_jacobian_has_aux_and_auto_choice(dtype):
    def tall(x):  # N=2 < M=50: auto should pick forward mode
        return jnp.outer(jnp.arange(25, dtype=x.dtype), x).ravel(), {"n": jnp.sum(x)}

    x = jnp.array([1.0, 2.0], dtype)
    jac, aux = cr.jacobian(tall, has_aux=True)(x)
    ref, ref_aux = jax.jacfwd(tall, has_aux=True)(x)
    assert_trees_close(jac, ref, dtype)
    assert_trees_close(aux, ref_aux, dtype)
    assert cr.ad._choose_mode(2, 50) == "fwd"
    assert cr.ad._choose_mode(50, 2) == "rev"
    assert cr.ad._choose_mode(8, 8) == "rev"


def test_complex_inputs():
    z = jnp.array([1.0 + 2.0j, -0.5 + 0.1j], jnp.complex64)
    t = jnp.array([0.3 - 1.0j, 2.0 + 0.0j], jnp.complex64)
    holo = lambda z: jnp.sin(z) * z**2
    np.testing.assert_allclose(cr.jvp(holo, (z,), (t,))[1], jax.jvp(holo, (z,), (t,))[1], rtol=1e-5)
    ct = jnp.array([1.0 + 1.0j, 0.5j], jnp.complex64)
    np.testing.assert_allclose(cr.vjp(holo, z)[1](ct)[0], jax.vjp(holo, z)[1](ct)[0], rtol=1e-5)
    for mode in ["fwd", "rev"]:
        for chunk in [None, 1]:
            np.testing.assert_allclose(
                cr.jacobian(holo, mode=mode, chunk_size=chunk, holomorphic=True)(z),
                jax.jacfwd(holo, holomorphic=True)(z),
                rtol=1e-5,
            )
    hz = lambda z: jnp.sum(jnp.sin(z))
    np.testing.assert_allclose(
        cr.grad(hz, holomorphic=True)(z), jax.grad(hz, holomorphic=True)(z), rtol=1e-6
    )
    # A real function of complex input: reverse mode gives JAX's (conjugate) gradient.
    real = lambda z: jnp.sum(jnp.abs(z) ** 2)
    np.testing.assert_allclose(cr.grad(real)(z), jax.grad(real)(z), rtol=1e-6)


def test_compiles_once_per_shape_signature():
    """Traced at every call (as JAX's eager transforms are: that is what keeps the answer
    fresh), compiled once per program and shape signature (the second call), reused after."""
    traces = {"n": 0}

    def f(p):
        traces["n"] += 1
        return jnp.sum(jnp.tanh(p["w"]) ** 2) + jnp.sum(p["b"] ** 3)

    p = {"w": jnp.ones((3, 4)), "b": jnp.ones(4)}
    v = jax.tree.map(jnp.ones_like, p)
    calls = [
        lambda p: cr.grad(f)(p),
        lambda p: cr.value_and_grad(f)(p),
        lambda p: cr.vjp(f, p)[1](jnp.ones(())),
        lambda p: cr.linearize(f, p)[1](v),
        lambda p: cr.hvp(f, p, v),
        lambda p: cr.hvp(f, p, v, mode="rev-over-rev"),
        lambda p: cr.hessian(f)(p),
        lambda p: cr.jacobian(f, mode="fwd", chunk_size=5)(p),
    ]
    cr.clear_caches()
    # jvp is JAX's eager jvp (cheaper than tracing it): it never compiles
    before = cr.cache_info()
    for _ in range(3):
        cr.jvp(f, (p,), (v,))
    assert cr.cache_info()["compiled"] == before["compiled"]
    for call in calls:
        call(p)
        call(p)  # the second sighting compiles
        before, n = cr.cache_info(), traces["n"]
        for scale in (2.0, 3.0, 4.0):
            jax.block_until_ready(call(jax.tree.map(lambda a, s=scale: a * s, p)))
        after = cr.cache_info()
        assert after["compiled"] == before["compiled"], "a repeated call compiled again"
        assert after["hits"] >= before["hits"] + 3
        assert traces["n"] >= n + 3  # f is read afresh at every call
    # New shapes: a new program, compiled once.
    q = {"w": jnp.ones((5, 4)), "b": jnp.ones(4)}
    before = cr.cache_info()["compiled"]
    for _ in range(4):
        cr.grad(f)(q)
    assert cr.cache_info()["compiled"] == before + 1


def test_fast_and_general_paths_agree():
    # jax.Array leaves in tuples take the per-call fast path; lists, NumPy leaves and an
    # unhashable callable take the general one: same results.
    f = lambda x: jnp.sin(x) * x
    g = lambda x: jnp.sum(f(x) ** 2)
    x = jnp.linspace(-1.0, 1.0, 5)
    v = jnp.cos(x)
    xn, vn = np.asarray(x), np.asarray(v)

    class Unhashable:
        __hash__ = None

        def __call__(self, y):
            return g(y)

    assert_trees_close(cr.jvp(f, (x,), (v,)), cr.jvp(f, [xn], [vn]), "float32")
    assert_trees_close(cr.vjp(f, x)[1](v), cr.vjp(f, xn)[1](vn), "float32")
    assert_trees_close(cr.linearize(f, x)[1](v), cr.linearize(f, xn)[1](vn), "float32")
    for mode in ("fwd-over-rev", "rev-over-fwd"):
        fast = cr.hvp(g, x, v, mode=mode)
        assert_trees_close(fast, cr.hvp(g, xn, vn, mode=mode), "float32")
        assert_trees_close(fast, cr.hvp(Unhashable(), x, v, mode=mode), "float32")
    # validation still runs on the fast path (at trace time)
    with pytest.raises(ValueError, match="shape"):
        cr.jvp(f, (x,), (jnp.ones(3),))


def test_works_under_outer_jit_and_vmap(dtype):
    f = lambda x: jnp.sum(jnp.sin(x) ** 2)
    xs = jnp.linspace(-1, 1, 12, dtype=dtype).reshape(4, 3)
    vs = jnp.ones_like(xs)
    batched = jax.jit(jax.vmap(lambda x, v: cr.hvp(f, x, v)))(xs, vs)
    ref = jax.vmap(lambda x, v: jax.jvp(jax.grad(f), (x,), (v,))[1])(xs, vs)
    assert_trees_close(batched, ref, dtype)
    g = jax.jit(jax.vmap(cr.grad(f)))(xs)
    assert_trees_close(g, jax.vmap(jax.grad(f))(xs), dtype)
    j = jax.vmap(cr.jacobian(jnp.sin, chunk_size=2))(xs)
    assert_trees_close(j, jax.vmap(jax.jacfwd(jnp.sin))(xs), dtype)
    # The pullback is a pytree: it crosses a jit boundary like JAX's.
    _, pullback = cr.vjp(jnp.sin, xs)
    assert_trees_close(jax.jit(lambda pb, c: pb(c))(pullback, vs)[0], jnp.cos(xs), dtype)


def test_grad_argnums_kwargs_static_and_aux(dtype):
    def loss(w, x, *, power, name="l"):
        assert isinstance(power, int) and name == "l"  # static values stay Python values
        return jnp.sum((w * x) ** power), {"n": jnp.sum(x)}

    w = jnp.array([1.0, 2.0], dtype)
    x = jnp.array([3.0, -1.0], dtype)
    g, aux = cr.grad(loss, argnums=(0, 1), has_aux=True)(w, x, power=2)
    rg, raux = jax.grad(lambda w, x: loss(w, x, power=2), argnums=(0, 1), has_aux=True)(w, x)
    assert_trees_close(g, rg, dtype)
    assert_trees_close(aux, raux, dtype)
    (v, aux2), g2 = cr.value_and_grad(loss, argnums=1, has_aux=True)(w, x, power=3)
    np.testing.assert_allclose(g2, 3 * w**3 * x**2, rtol=TOL[jnp.dtype(dtype)])


def test_unhashable_function_still_works():
    class Unhashable:
        __hash__ = None

        def __call__(self, x):
            return jnp.sum(x**2)

    np.testing.assert_allclose(cr.grad(Unhashable())(jnp.ones(3)), 2 * jnp.ones(3))


# ----------------------------------------------------------------------------- bad input


def test_error_structure_mismatch_names_first_differing_path():
    p = {"layers": [{"w": jnp.ones(2)}, {"w": jnp.ones(2)}]}
    t = {"layers": [{"w": jnp.ones(2)}, {"v": jnp.ones(2)}]}
    with pytest.raises(ValueError, match=r"primals\[0\]\['layers'\]\[1\]\['w'\].*tangents"):
        cr.jvp(lambda q: q, (p,), (t,))
    with pytest.raises(ValueError, match=r"first unmatched leaf is .*\['layers'\]\[1\]"):
        cr.jvp(lambda q: q, (p,), ({"layers": [{"w": jnp.ones(2)}]},))
    with pytest.raises(ValueError, match="different container types"):
        cr.jvp(lambda q: q, ((jnp.ones(2), jnp.ones(2)),), ([jnp.ones(2), jnp.ones(2)],))


def test_error_shape_and_dtype_mismatch_name_leaf_and_both_values():
    p = {"w": jnp.ones((2, 3), jnp.float32)}
    with pytest.raises(
        ValueError, match=r"tangents\[0\]\['w'\].*expected \(2, 3\).*found \(3, 2\)"
    ):
        cr.jvp(lambda q: q, (p,), ({"w": jnp.ones((3, 2), jnp.float32)},))
    with pytest.raises(TypeError, match=r"tangents\[0\]\['w'\].*expected float32.*found float64"):
        cr.jvp(lambda q: q, (p,), ({"w": jnp.ones((2, 3), jnp.float64)},))
    with pytest.raises(ValueError, match=r"v\['w'\].*expected \(2, 3\)"):
        cr.hvp(lambda q: jnp.sum(q["w"] ** 2), p, {"w": jnp.ones(6, jnp.float32)})
    _, pullback = cr.vjp(lambda q: q["w"] * 2, p)
    with pytest.raises(ValueError, match=r"cotangent\[0\].*expected \(2, 3\).*found \(2,\)"):
        pullback(jnp.ones(2, jnp.float32))
    with pytest.raises(ValueError, match="got 1 primals but 2 tangents"):
        cr.jvp(lambda a: a, (jnp.ones(2),), (jnp.ones(2), jnp.ones(2)))
    with pytest.raises(TypeError, match="must be a tuple or list"):
        cr.jvp(jnp.sin, jnp.ones(2), jnp.ones(2))


def test_error_integer_and_boolean_inputs():
    params = {"w": jnp.ones(3), "steps": jnp.array(3)}
    f = lambda p: jnp.sum(p["w"]) * p["steps"]
    with pytest.raises(TypeError, match=r"p\['steps'\].*dtype is int"):
        cr.grad(f)(params)
    with pytest.raises(TypeError, match=r"primals\[0\]\['steps'\].*has no derivative"):
        cr.jvp(f, (params,), ({"w": jnp.ones(3), "steps": jnp.ones(())},))
    # float0 tangents hold integer primals constant, as in JAX.
    tangent = {"w": jnp.ones(3), "steps": np.zeros((), jax.dtypes.float0)}
    np.testing.assert_allclose(cr.jvp(f, (params,), (tangent,))[1], 9.0)
    with pytest.raises(TypeError, match=r"primals\[0\].*bool"):
        cr.vjp(lambda b: b, jnp.array([True, False]))
    with pytest.raises(TypeError, match=r"x\['n'\].*int"):
        cr.hvp(
            lambda p: jnp.sum(p["w"]),
            params | {"n": jnp.ones(2, jnp.int32)},
            params | {"n": jnp.ones(2, jnp.int32)},
        )
    with pytest.raises(TypeError, match=r"differentiate with respect to i: its dtype is int"):
        cr.jacobian(lambda i: i * 2)(jnp.arange(3))
    with pytest.raises(TypeError, match=r"respect to count: its dtype is int"):
        cr.hessian(lambda x, count: jnp.sum(x * count), argnums=1)(jnp.ones(2), jnp.arange(2))
    # Without a named parameter the message falls back to the position.
    with pytest.raises(TypeError, match=r"respect to args\[1\]\[0\]: its dtype is int"):
        cr.grad(lambda *a: jnp.sum(a[0]), argnums=1)(jnp.ones(2), [jnp.arange(2)])


def test_error_non_scalar_output():
    x = jnp.ones(3)
    with pytest.raises(TypeError, match=r"grad needs a scalar-output function.*shape \(3,\)"):
        cr.grad(jnp.sin)(x)
    with pytest.raises(TypeError, match="hvp needs a scalar-output function"):
        cr.hvp(jnp.sin, x, x)
    with pytest.raises(TypeError, match="hessian needs a scalar-output function"):
        cr.hessian(jnp.sin)(x)
    with pytest.raises(TypeError, match="one scalar output"):
        cr.grad(lambda x: (jnp.sum(x), jnp.sum(x)))(x)
    with pytest.raises(TypeError, match=r"has_aux=True needs <lambda> to return a pair"):
        cr.grad(lambda x: jnp.sum(x), has_aux=True)(x)


def test_error_unknown_mode_lists_valid_ones():
    with pytest.raises(ValueError, match=r"'fwd-over-rev', 'rev-over-rev', 'rev-over-fwd'"):
        cr.hvp(lambda x: jnp.sum(x), jnp.ones(2), jnp.ones(2), mode="forward")
    with pytest.raises(ValueError, match=r"Unknown jacobian mode 'reverse'.*'auto', 'fwd', 'rev'"):
        cr.jacobian(jnp.sin, mode="reverse")
    with pytest.raises(ValueError, match="Did you mean 'rev-over-fwd'"):
        cr.hvp_batched(jnp.sum, jnp.ones(2), jnp.ones((1, 2)), mode="rev-over-fw")


def test_error_bad_argnums_and_chunk_size():
    with pytest.raises(ValueError, match="argnums=2 refers to argument 2.*1 positional"):
        cr.grad(jnp.sum, argnums=2)(jnp.ones(2))
    with pytest.raises(TypeError, match="argnums must be an int"):
        cr.grad(jnp.sum, argnums="0")(jnp.ones(2))
    with pytest.raises(ValueError, match="chunk_size must be None or a positive integer.*0"):
        cr.jacobian(jnp.sin, chunk_size=0)
    with pytest.raises(ValueError, match=r"same leading \(batch\) axis.*vs\['b'\]: \(3, 2\)"):
        cr.hvp_batched(
            lambda p: jnp.sum(p["a"] ** 2) + jnp.sum(p["b"] ** 2),
            {"a": jnp.ones(2), "b": jnp.ones(2)},
            {"a": jnp.ones((2, 2)), "b": jnp.ones((3, 2))},
        )


# --- regressions found by throwing unusual inputs at the API -------------------------------


@pytest.mark.parametrize("mode", ["fwd", "rev"])
def test_chunked_transforms_with_zero_size_leaves(dtype, mode):
    # lax.map(batch_size=...) cannot flatten chunks of a zero-size output leaf; the chunked
    # Jacobian, Hessian and hvp_batched must still match JAX's layout (empty blocks included)
    r = np.random.default_rng(0)
    x = {"a": jnp.asarray(r.normal(size=3), dtype), "z": jnp.zeros((2, 0), dtype)}
    f = lambda p: {"y": jnp.sin(p["a"]) * jnp.sum(p["z"]), "e": p["z"] * 2, "s": p["a"] ** 2}
    ref = (jax.jacfwd if mode == "fwd" else jax.jacrev)(f)(x)
    for chunk in (1, 2):
        assert_trees_close(cr.jacobian(f, mode, chunk_size=chunk)(x), ref, dtype)
    loss = lambda p: jnp.sum(jnp.sin(p["a"]) ** 2) + jnp.sum(p["z"] ** 2)
    assert_trees_close(cr.hessian(loss, chunk_size=2)(x), jax.hessian(loss)(x), dtype)
    vs = jax.tree.map(lambda a: jnp.stack([a, 2 * a, -a]), x)
    expect = jax.vmap(lambda v: jax.jvp(jax.grad(loss), (x,), (v,))[1])(vs)
    assert_trees_close(cr.hvp_batched(loss, x, vs, chunk_size=2), expect, dtype)
    # no directions at all: an empty batch, chunked or not
    none = jax.tree.map(lambda a: a[:0], vs)
    for chunk in (None, 2):
        out = cr.hvp_batched(loss, x, none, chunk_size=chunk)
        assert jax.tree.map(jnp.shape, out) == jax.tree.map(jnp.shape, none)


def test_jacobian_follows_jax_dtype_rules_in_every_mode():
    x = jnp.asarray([0.3, -1.2, 2.0])
    z = x + 1j * x[::-1]
    to_complex = lambda a: jnp.exp(1j * a)  # real -> complex: only forward mode exists
    to_real = lambda c: jnp.abs(c) ** 2  # complex -> real: only reverse mode exists
    for chunk in (None, 2):
        # auto picks the one mode that exists (sizes alone would pick rev, resp. fwd)
        assert_trees_close(
            cr.jacobian(to_complex, chunk_size=chunk)(x), jax.jacfwd(to_complex)(x), "float64"
        )
        assert_trees_close(
            cr.jacobian(to_real, chunk_size=chunk)(z), jax.jacrev(to_real)(z), "float64"
        )
        # integer outputs have a zero Jacobian in forward mode, as in jax.jacfwd
        to_int = lambda a: jnp.round(a).astype(jnp.int32)
        assert_trees_close(
            cr.jacobian(to_int, "fwd", chunk_size=chunk)(x), jax.jacfwd(to_int)(x), "float64"
        )
        # boolean outputs too (jax.jacfwd itself crashes on them in jax 0.10)
        jb = cr.jacobian(lambda a: (a > 0, jnp.sin(a)), "fwd", chunk_size=chunk)(x)
        assert jb[0].shape == (3, 3) and jb[0].dtype == jnp.bool_ and not jb[0].any()
        assert_trees_close(jb[1], jax.jacfwd(jnp.sin)(x), "float64")
        # an output without leaves has an empty Jacobian in both modes
        for mode in ("fwd", "rev"):
            assert cr.jacobian(lambda a: {}, mode, chunk_size=chunk)(x) == {}
        # reverse mode has no Jacobian of a boolean output: the error names the leaf
        with pytest.raises(TypeError, match=r"output\['b'\] has dtype bool"):
            cr.jacobian(lambda a: {"b": a > 0}, "rev", chunk_size=chunk)(x)
    # the chunked reverse path used to return only the real part of a complex Jacobian
    with pytest.raises(TypeError, match=r"mode 'rev' needs real floating outputs; output has"):
        cr.jacobian(to_complex, "rev", chunk_size=2)(x)
    with pytest.raises(TypeError, match="holomorphic=True needs complex inputs and outputs"):
        cr.jacobian(jnp.sin, "fwd", chunk_size=2, holomorphic=True)(x)


def test_integer_like_argnums_duplicates_and_chunk_size():
    f = lambda a, b: jnp.sum(jnp.sin(a) * b**2)
    a, b = jnp.asarray([0.5, 1.0]), jnp.asarray([2.0, -1.0])
    # numpy integers are ints (as for jax.grad): one array back, not a 1-tuple
    assert_trees_close(cr.grad(f, argnums=np.int64(1))(a, b), jax.grad(f, 1)(a, b), "float64")
    assert_trees_close(
        cr.value_and_grad(f, argnums=np.int32(0))(a, b), jax.value_and_grad(f)(a, b), "float64"
    )
    assert_trees_close(
        cr.hessian(f, argnums=(np.int64(0), -1))(a, b), jax.hessian(f, (0, 1))(a, b), "float64"
    )
    assert_trees_close(
        cr.jacobian(jnp.sin, chunk_size=np.int64(1))(a), jax.jacfwd(jnp.sin)(a), "float64"
    )
    with pytest.raises(ValueError, match=r"argnums=\(0, -2\) names the same argument twice"):
        cr.grad(f, argnums=(0, -2))(a, b)
    with pytest.raises(TypeError, match="argnums must be an int or a non-empty tuple"):
        cr.jacobian(f, argnums=0.0)


def test_empty_inputs_and_python_number_outputs():
    x = jnp.ones(2)
    # a constant Python-float loss is a scalar (jax.grad gives zeros)
    assert_trees_close(cr.grad(lambda a: 1.0)(x), jax.grad(lambda a: 1.0)(x), "float64")
    # nothing to differentiate: empty results in JAX's layout instead of a ravel error
    f = lambda p: {"y": jnp.ones(2), "s": jnp.zeros(())}
    for chunk in (None, 1):
        assert cr.jacobian(f, chunk_size=chunk)({}) == {"y": {}, "s": {}}
        assert cr.hessian(lambda p: jnp.zeros(()), chunk_size=chunk)({"n": None}) == {"n": None}
    assert cr.hvp_batched(lambda p: jnp.zeros(()), {}, {}) == {}


def test_aux_of_any_python_value_comes_back_as_in_jax():
    # A string (or any object) in aux is a value of this call's trace: it comes back as it
    # does from JAX's eager transforms, not as a "cannot return a str" error.
    x = jnp.ones(3)
    bad = {"loss": 1.0, "note": "hi"}
    cases = {
        "grad": lambda: cr.grad(lambda a: (jnp.sum(a), bad), has_aux=True)(x)[1],
        "value_and_grad": lambda: cr.value_and_grad(lambda a: (jnp.sum(a), bad), has_aux=True)(x)[
            0
        ][1],
        "jvp": lambda: cr.jvp(lambda a: (a, bad), (x,), (x,), has_aux=True)[2],
        "vjp": lambda: cr.vjp(lambda a: (a, bad), x, has_aux=True)[2],
        "linearize": lambda: cr.linearize(lambda a: (a, bad), x, has_aux=True)[2],
        "jacobian": lambda: cr.jacobian(lambda a: (a, bad), has_aux=True)(x)[1],
    }
    for name, call in cases.items():
        aux = call()
        assert aux["note"] == "hi", name
    # numbers and arrays are fine, as in JAX
    g, aux = cr.grad(lambda a: (jnp.sum(a), {"n": 3, "a": a}), has_aux=True)(x)
    assert_trees_close(g, jnp.ones(3), "float32")
    assert int(aux["n"]) == 3
