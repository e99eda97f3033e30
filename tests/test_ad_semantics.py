"""The AD core returns JAX's answer for the function as it is at each call (issue 15).

Every public transform is compared with the JAX composition it wraps, called right after it,
while the function's state changes between calls: a global dict, a rebound global, an object
attribute, a NumPy array mutated in place, and NumPy against jax inputs. Also: user functions
are collectable after every transform, the program cache stays bounded, traces and
compilations are counted for a reused function, a fresh closure and a changing Python scalar,
and the error messages.
"""

from __future__ import annotations

import gc
import weakref

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import chainrule as cr
from chainrule import _jit

# ---------------------------------------------------------------------------------------------
# Each transform next to its JAX reference. Each entry: (name, ours(f, x), theirs(f, x)) for a
# scalar function f of one array argument x.
# ---------------------------------------------------------------------------------------------


def _v(x):
    return jnp.linspace(0.5, 1.5, x.size, dtype=x.dtype).reshape(x.shape)


def _vs(x):
    return jnp.stack([_v(x), -2 * _v(x)])


def _raw_hvp(mode):
    from chainrule._rules import hvp_rule

    return lambda f, x: hvp_rule(mode)(f, x, _v(x))


TRANSFORMS = [
    ("grad", lambda f, x: cr.grad(f)(x), lambda f, x: jax.grad(f)(x)),
    ("value_and_grad", lambda f, x: cr.value_and_grad(f)(x), lambda f, x: jax.value_and_grad(f)(x)),
    ("jvp", lambda f, x: cr.jvp(f, (x,), (_v(x),)), lambda f, x: jax.jvp(f, (x,), (_v(x),))),
    (
        "vjp",
        lambda f, x: cr.vjp(f, x)[1](jnp.ones((), x.dtype)),
        lambda f, x: jax.vjp(f, x)[1](jnp.ones((), x.dtype)),
    ),
    (
        "linearize",
        lambda f, x: cr.linearize(f, x)[1](_v(x)),
        lambda f, x: jax.linearize(f, x)[1](_v(x)),
    ),
    ("jacobian-fwd", lambda f, x: cr.jacobian(f, "fwd")(x), lambda f, x: jax.jacfwd(f)(x)),
    ("jacobian-rev", lambda f, x: cr.jacobian(f, "rev")(x), lambda f, x: jax.jacrev(f)(x)),
    ("jacobian-auto", lambda f, x: cr.jacobian(f)(x), lambda f, x: jax.jacrev(f)(x)),
    (
        "jacobian-chunked",
        lambda f, x: cr.jacobian(f, "fwd", chunk_size=2)(x),
        lambda f, x: jax.jacfwd(f)(x),
    ),
    ("hessian", lambda f, x: cr.hessian(f)(x), lambda f, x: jax.hessian(f)(x)),
    (
        "hessian-chunked",
        lambda f, x: cr.hessian(f, chunk_size=2)(x),
        lambda f, x: jax.hessian(f)(x),
    ),
    *[
        (f"hvp-{m}", lambda f, x, m=m: cr.hvp(f, x, _v(x), mode=m), _raw_hvp(m))
        for m in cr.HVP_MODES
    ],
    (
        "hvp_batched",
        lambda f, x: cr.hvp_batched(f, x, _vs(x)),
        lambda f, x: jax.vmap(lambda t: jax.jvp(jax.grad(f), (x,), (t,))[1])(_vs(x)),
    ),
    (
        "hvp_batched-chunked",
        lambda f, x: cr.hvp_batched(f, x, _vs(x), chunk_size=1),
        lambda f, x: jax.vmap(lambda t: jax.jvp(jax.grad(f), (x,), (t,))[1])(_vs(x)),
    ),
]
IDS = [t[0] for t in TRANSFORMS]


def _assert_same(ours, theirs, dtype):
    tol = 1e-5 if dtype == jnp.float32 else 1e-12
    ol, tl = jax.tree.leaves(ours), jax.tree.leaves(theirs)
    assert jax.tree.structure(ours) == jax.tree.structure(theirs)
    for a, b in zip(ol, tl, strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=tol, atol=tol)


def _point(dtype):
    return jnp.asarray([0.3, -0.7, 1.1], dtype)


# Mutable state the functions below read at call time.
SCALE = 1.0
STATE = {"scale": 1.0}


class Model:
    def __init__(self):
        self.k = 1.0

    def loss(self, x):
        return self.k * jnp.sum(jnp.sin(x) * x**2)


def _run_sequence(transform, f, x, change, values):
    """Call ours and theirs after each state change; every pair must agree, and the answers
    must follow the state (the last differs from the first)."""
    name, ours, theirs = transform
    results = []
    for value in values:
        change(value)
        got, want = ours(f, x), theirs(f, x)
        _assert_same(got, want, x.dtype)
        results.append(got)
    first, last = jax.tree.leaves(results[0]), jax.tree.leaves(results[-1])
    assert any(not np.allclose(a, b) for a, b in zip(first, last, strict=True)), name


VALUES = (1.0, 3.0, 3.0, -2.0)  # a repeat: the second sighting is the compiled program


@pytest.mark.parametrize("transform", TRANSFORMS, ids=IDS)
def test_rebound_global_is_read_at_every_call(transform, dtype):
    def f(x):
        return SCALE * jnp.sum(jnp.sin(x) * x**2)

    def change(v):
        global SCALE
        SCALE = v

    try:
        _run_sequence(transform, f, _point(dtype), change, VALUES)
    finally:
        change(1.0)


@pytest.mark.parametrize("transform", TRANSFORMS, ids=IDS)
def test_global_dict_object_attribute_and_numpy_mutation(transform, dtype):
    x = _point(dtype)

    def f_dict(x):
        return STATE["scale"] * jnp.sum(jnp.sin(x) * x**2)

    _run_sequence(transform, f_dict, x, lambda v: STATE.__setitem__("scale", v), VALUES)
    STATE["scale"] = 1.0

    model = Model()
    _run_sequence(transform, model.loss, x, lambda v: setattr(model, "k", v), VALUES)

    weights = np.ones(3, dtype)

    def f_np(x):
        return jnp.sum(jnp.sin(x * weights) * x**2)

    def mutate(v):
        weights[:] = v  # in place: the same NumPy object, new values

    _run_sequence(transform, f_np, x, mutate, VALUES)


@pytest.mark.parametrize("transform", TRANSFORMS, ids=IDS)
def test_numpy_python_and_jax_inputs_give_the_same_answer(transform, dtype):
    def f(x):
        return jnp.sum(jnp.sin(x) * x**2)

    _, ours, _ = transform
    as_jax = ours(f, _point(dtype))
    as_numpy = ours(f, np.asarray(_point(dtype)))
    _assert_same(as_numpy, as_jax, dtype)
    # a jax input after a NumPy one (the old caches were separate per input type)
    _assert_same(ours(f, _point(dtype)), as_jax, dtype)


def test_python_scalar_input_matches_jax():
    f = lambda x: x**3 + jnp.sin(x)  # noqa: E731
    assert cr.grad(f)(2.0) == jax.grad(f)(2.0)
    assert cr.grad(f)(2.0).dtype == jax.grad(f)(2.0).dtype
    assert cr.hessian(f)(2.0) == jax.hessian(f)(2.0)


def test_custom_rule_changed_between_calls():
    """A custom_jvp rule that reads a global: the second call sees the new rule's output."""
    rule = {"factor": 1.0}

    @jax.custom_jvp
    def g(x):
        return jnp.sin(x)

    @g.defjvp
    def g_jvp(primals, tangents):
        (x,), (t,) = primals, tangents
        return g(x), rule["factor"] * jnp.cos(x) * t

    f = lambda x: jnp.sum(g(x))  # noqa: E731
    x = jnp.ones(3)
    for factor in (1.0, 1.5, 1.5, 2.0):
        rule["factor"] = factor
        np.testing.assert_allclose(cr.grad(f)(x), jax.grad(f)(x), rtol=1e-6)
        np.testing.assert_allclose(cr.grad(f)(x), factor * np.cos(1.0), rtol=1e-6)


def test_bound_method_after_attribute_change():
    m = Model()
    x = jnp.ones(2)
    g = cr.grad(m.loss)
    before = g(x)
    m.k = 3.0
    np.testing.assert_allclose(g(x), 3.0 * before, rtol=1e-6)


def test_python_control_flow_on_values_runs_as_jax_eager():
    """JAX's eager transforms allow `if x > 0` on a differentiated value; so do ours."""
    f = lambda x: x**2 if x > 0 else -x  # noqa: E731
    assert cr.grad(f)(3.0) == jax.grad(f)(3.0) == 6.0
    assert cr.grad(f)(-3.0) == jax.grad(f)(-3.0) == -1.0

    def uses_numpy(x, n):  # a non-differentiated array read as a concrete value
        return jnp.sum(x) * int(np.asarray(n).sum())

    assert cr.grad(uses_numpy)(jnp.ones(2), jnp.arange(3)).tolist() == [3.0, 3.0]


def test_non_array_aux_and_arguments_reach_the_function_as_given():
    def f(x, label, scale):
        assert isinstance(label, str) and isinstance(scale, float)
        return jnp.sum(x**2) * scale, {"label": label, "n": 3}

    g, aux = cr.grad(f, has_aux=True)(jnp.ones(2), "run-1", 2.0)
    assert g.tolist() == [4.0, 4.0] and aux == {"label": "run-1", "n": 3}
    jg, jaux = jax.grad(f, has_aux=True)(jnp.ones(2), "run-1", 2.0)
    assert aux == jaux


def test_inside_user_jit_and_vmap_is_the_raw_composition(dtype):
    f = lambda x: jnp.sum(jnp.tanh(x) ** 3)  # noqa: E731
    x = _point(dtype)
    before = cr.cache_info()["direct"]
    got = jax.jit(lambda x: cr.hvp(f, x, _v(x)))(x)
    want = jax.jit(lambda x: jax.jvp(jax.grad(f), (x,), (_v(x),))[1])(x)
    _assert_same(got, want, dtype)
    batched = jax.vmap(cr.grad(f))(jnp.stack([x, 2 * x]))
    _assert_same(batched, jax.vmap(jax.grad(f))(jnp.stack([x, 2 * x])), dtype)
    assert cr.cache_info()["direct"] >= before + 2
    # the outer jit sees the plain composition: the same jaxpr as raw JAX
    ours = str(jax.make_jaxpr(lambda x: cr.grad(f)(x))(x))
    theirs = str(jax.make_jaxpr(lambda x: jax.grad(f)(x))(x))
    assert ours == theirs


# ---------------------------------------------------------------------------------------------
# Retention and memory
# ---------------------------------------------------------------------------------------------


def _calls(f, x):
    v = jnp.ones_like(x)
    cr.grad(f)(x)
    cr.value_and_grad(f)(x)
    cr.jvp(f, (x,), (v,))
    cr.vjp(f, x)[1](jnp.ones(()))
    cr.linearize(f, x)[1](v)
    cr.jacobian(f)(x)
    cr.jacobian(f, "fwd", chunk_size=2)(x)
    cr.hessian(f)(x)
    for m in cr.HVP_MODES:
        cr.hvp(f, x, v, mode=m)
    cr.hvp_batched(f, x, v[None])


def test_user_functions_and_their_closures_are_collectable():
    refs = []
    for i in range(6):
        big = jnp.full((256,), float(i))

        def f(x, big=big):
            return jnp.sum(jnp.sin(x) * big[:3])

        _calls(f, jnp.ones(3))
        _calls(f, jnp.ones(3))  # a second time: compiled programs are now cached
        refs.append((weakref.ref(f), weakref.ref(big)))
        del f, big
    gc.collect()
    alive = [i for i, (rf, rb) in enumerate(refs) if rf() is not None or rb() is not None]
    assert alive == [], f"closures {alive} still alive after del + gc.collect()"


def test_fresh_closure_loop_memory_is_bounded():
    """A fresh closure over a new 4 MB batch per step: nothing is kept per step."""
    w = jnp.ones((1024,)) / 32

    def loss(w, x):
        return jnp.mean(jnp.tanh(x @ w) ** 2)

    def step(i):
        x = jnp.full((1024, 1024), 1.0 + i / 20, jnp.float32)  # 4 MB
        jax.block_until_ready(cr.grad(lambda w: loss(w, x))(w))
        return weakref.ref(x)

    refs = [step(i) for i in range(20)]
    gc.collect()
    assert sum(r() is not None for r in refs) == 0
    assert cr.cache_info()["programs"] <= cr.cache_info()["capacity"]


def test_cache_is_bounded_and_clearable(monkeypatch):
    monkeypatch.setenv("CHAINRULE_JIT_CACHE_SIZE", "3")
    cr.clear_caches()
    for n in range(1, 9):  # 8 shapes, each seen twice: 8 programs compiled, 3 kept
        x = jnp.ones(n)
        cr.grad(lambda x: jnp.sum(x**2))(x)
        cr.grad(lambda x: jnp.sum(x**2))(x)
    assert cr.cache_info()["programs"] == 3
    cr.clear_caches()
    assert cr.cache_info()["programs"] == 0
    monkeypatch.setenv("CHAINRULE_JIT_CACHE_SIZE", "0")  # reuse off: still correct
    assert cr.grad(lambda x: jnp.sum(x**2))(jnp.ones(2)).tolist() == [2.0, 2.0]
    monkeypatch.setenv("CHAINRULE_JIT_CACHE_SIZE", "-1")
    with pytest.raises(ValueError, match="CHAINRULE_JIT_CACHE_SIZE"):
        cr.grad(lambda x: jnp.sum(x**2))(jnp.ones(2))


# ---------------------------------------------------------------------------------------------
# Trace and compile counts
# ---------------------------------------------------------------------------------------------


class _Counts:
    def __enter__(self):
        self.before = dict(cr.cache_info())
        return self

    def __exit__(self, *exc):
        after = cr.cache_info()
        self.delta = {k: after[k] - self.before[k] for k in ("compiled", "hits", "evaluated")}


def test_reused_function_compiles_once():
    traces = []

    def f(x):
        traces.append(1)
        return jnp.sum(jnp.cos(x) * x)

    g = cr.grad(f)
    x = jnp.arange(4.0)
    with _Counts() as c:
        for _ in range(10):
            g(x)
    # JAX's eager grad traces f at every call; so do we (that is what keeps it fresh), but the
    # program is compiled once (first call) and reused for the other nine.
    assert len(traces) == 10
    assert c.delta == {"compiled": 1, "hits": 9, "evaluated": 0}
    with _Counts() as c:
        g(jnp.arange(5.0))  # a new shape is a new program
        g(jnp.arange(5.0))
    assert c.delta["compiled"] == 1


def test_fresh_closure_per_batch_compiles_once():
    w = jnp.ones(4)
    with _Counts() as c:
        for i in range(10):
            x = jnp.full((3, 4), float(i))
            cr.hvp(lambda w: jnp.sum(jnp.tanh(x @ w) ** 2), w, w)  # noqa: B023
    assert c.delta == {"compiled": 1, "hits": 9, "evaluated": 0}


def test_changing_python_scalar_compiles_once():
    """A Python scalar is a literal of the program. Compiling each new value (the old
    behaviour: 55 ms a step) is what JAX's eager avoids: the program is compiled once, and a
    known program with new literal values is evaluated op by op (its primitives are compiled
    for these shapes already); a value seen twice is compiled and then reused."""
    g = cr.grad(lambda x, lr: lr * jnp.sum(x**2))
    with _Counts() as c:
        for i in range(6):
            out = g(jnp.ones(2), 0.1 * (i + 1))
            np.testing.assert_allclose(out, 0.2 * (i + 1), rtol=1e-6)
    assert c.delta == {"compiled": 1, "hits": 0, "evaluated": 5}
    with _Counts() as c:
        for _ in range(3):
            np.testing.assert_allclose(g(jnp.ones(2), 0.1 * 3), 0.6, rtol=1e-6)  # seen before
    assert c.delta == {"compiled": 1, "hits": 2, "evaluated": 0}


def test_fingerprint_distinguishes_literals_bitwise():
    f0 = lambda x: jnp.sum(x / 0.0)  # noqa: E731
    f1 = lambda x: jnp.sum(x / -0.0)  # noqa: E731
    x = jnp.ones(2)
    for _ in range(2):
        assert np.all(cr.grad(f0)(x) == jax.grad(f0)(x))
        assert np.all(cr.grad(f1)(x) == jax.grad(f1)(x))


def test_callbacks_are_evaluated_never_cached():
    seen = []

    def cb(x):
        seen.append(np.asarray(x).copy())

    def f(x):
        jax.debug.callback(cb, x)  # its callable is used at run time: never cached
        return jnp.sum(jnp.sin(x))

    for _ in range(3):
        cr.grad(f)(jnp.ones(2))
    assert len(seen) >= 3


# ---------------------------------------------------------------------------------------------
# Errors
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "call",
    [
        lambda f: cr.grad(f, has_aux=True)(jnp.ones(2)),
        lambda f: cr.value_and_grad(f, has_aux=True)(jnp.ones(2)),
        lambda f: cr.jvp(f, (jnp.ones(2),), (jnp.ones(2),), has_aux=True),
        lambda f: cr.vjp(f, jnp.ones(2), has_aux=True),
        lambda f: cr.linearize(f, jnp.ones(2), has_aux=True),
        lambda f: cr.jacobian(f, has_aux=True)(jnp.ones(2)),
    ],
    ids=["grad", "value_and_grad", "jvp", "vjp", "linearize", "jacobian"],
)
@pytest.mark.parametrize(
    "out",
    [lambda x: jnp.sum(x), lambda x: (jnp.sum(x), 1, 2), lambda x: [jnp.sum(x)]],
    ids=["scalar", "triple", "list1"],
)
def test_has_aux_without_a_pair_is_named(call, out):
    def my_loss(x):
        return out(x)

    with pytest.raises(TypeError, match=r"has_aux=True needs my_loss to return a pair") as e:
        call(my_loss)
    assert "Tracer" not in str(e.value)


@pytest.mark.parametrize("leaf", [lambda x: x, "relu", object()], ids=["function", "str", "obj"])
def test_non_array_leaf_in_a_differentiated_argument(leaf):
    params = {"w": jnp.ones(2), "act": leaf}
    loss = lambda p: jnp.sum(p["w"] ** 2)  # noqa: E731
    for call in (
        lambda: cr.grad(loss)(params),
        lambda: cr.hvp(loss, params, params),
        lambda: cr.jacobian(loss)(params),
        lambda: cr.value_and_grad(loss)(params),
    ):
        with pytest.raises(TypeError) as e:
            call()
        msg = str(e.value)
        assert "['act']" in msg and "not an array" in msg
        assert "equinox.partition" in msg and "flax.nnx.split" in msg


@pytest.mark.parametrize(
    "out", [lambda x: {"a": jnp.sum(x)}, lambda x: (jnp.sum(x), jnp.sum(x))], ids=["dict", "tuple"]
)
def test_dict_or_tuple_output_to_grad_and_hvp(out):
    for call in (lambda: cr.grad(out)(jnp.ones(2)), lambda: cr.hvp(out, jnp.ones(2), jnp.ones(2))):
        with pytest.raises(TypeError, match="one scalar output"):
            call()


def test_unhashable_and_string_non_differentiated_arguments_work():
    def f(x, cfg, name):
        return jnp.sum(x**2) * cfg["scale"][0] * len(name)

    cfg = {"scale": [2.0]}  # a dict of lists: unhashable
    got = cr.grad(f)(jnp.ones(2), cfg, "ab")
    assert got.tolist() == jax.grad(f)(jnp.ones(2), cfg, "ab").tolist() == [8.0, 8.0]


def test_bad_options_are_named():
    with pytest.raises(TypeError, match="has_aux must be True or False"):
        cr.grad(lambda x: x, has_aux="yes")
    with pytest.raises(ValueError, match="Unknown hvp mode 'fwd'"):
        cr.hvp(lambda x: jnp.sum(x), jnp.ones(2), jnp.ones(2), mode="fwd")
    with pytest.raises(ValueError, match="Unknown hvp mode"):
        cr.hvp_batched(lambda x: jnp.sum(x), jnp.ones(2), jnp.ones((1, 2)), mode=None)


def test_tracebacks_end_at_the_users_line():
    import traceback

    def my_loss(x):
        return x  # not a scalar

    try:
        cr.grad(my_loss)(jnp.ones(3))
    except TypeError as e:
        frames = [f.filename for f in traceback.extract_tb(e.__traceback__)]
    else:  # pragma: no cover
        raise AssertionError("no error")
    internal = [f for f in frames if f.endswith(("chainrule/ad.py", "chainrule/_jit.py"))]
    assert internal == [], frames


# ---------------------------------------------------------------------------------------------
# Real models: equinox and flax.nnx
# ---------------------------------------------------------------------------------------------


def test_equinox_mlp_through_grad_hvp_jacobian_and_check():
    eqx = pytest.importorskip("equinox")
    model = eqx.nn.MLP(3, 2, 8, 2, key=jax.random.PRNGKey(0))
    params, static = eqx.partition(model, eqx.is_inexact_array)
    x = jnp.linspace(-1.0, 1.0, 3)

    def loss(p):
        return jnp.sum(eqx.combine(p, static)(x) ** 2)

    g = cr.grad(loss)(params)
    _assert_same(g, jax.grad(loss)(params), jnp.float32)
    v = jax.tree.map(jnp.ones_like, params)
    _assert_same(cr.hvp(loss, params, v), jax.jvp(jax.grad(loss), (params,), (v,))[1], jnp.float32)
    J = cr.jacobian(lambda p: eqx.combine(p, static)(x))(params)
    _assert_same(J, jax.jacrev(lambda p: eqx.combine(p, static)(x))(params), jnp.float32)
    assert cr.check_grads(loss, (params,), order=2).passed
    with pytest.raises(TypeError, match="equinox.partition"):
        cr.grad(lambda m: jnp.sum(m(x)))(model)  # the whole module: its activation is a function


def test_flax_nnx_module_through_grad_hvp_jacobian_and_check():
    nnx = pytest.importorskip("flax.nnx")
    model = nnx.Linear(3, 2, rngs=nnx.Rngs(0))
    graphdef, params = nnx.split(model)
    x = jnp.linspace(-1.0, 1.0, 3)

    def loss(p):
        return jnp.sum(jnp.tanh(nnx.merge(graphdef, p)(x)) ** 2)

    _assert_same(cr.grad(loss)(params), jax.grad(loss)(params), jnp.float32)
    v = jax.tree.map(jnp.ones_like, params)
    _assert_same(cr.hvp(loss, params, v), jax.jvp(jax.grad(loss), (params,), (v,))[1], jnp.float32)
    J = cr.jacobian(lambda p: nnx.merge(graphdef, p)(x))(params)
    _assert_same(J, jax.jacrev(lambda p: nnx.merge(graphdef, p)(x))(params), jnp.float32)
    assert cr.check_grads(loss, (params,), order=2).passed


def test_internal_cache_holds_no_user_callable():
    """White-box: the cached keys and executables reference no function defined here."""
    cr.clear_caches()

    def f(x):
        return jnp.sum(jnp.sin(x))

    cr.grad(f)(jnp.ones(2))
    cr.grad(f)(jnp.ones(2))
    assert cr.cache_info()["programs"] == 1
    ref = weakref.ref(f)
    del f
    gc.collect()
    assert ref() is None
    assert all(not callable(k) for k in _jit._compiled)


def test_matmul_precision_change_is_a_new_program():
    """A config read at lowering time (not in the jaxpr) is part of the key, as in jax.jit."""
    a = jnp.asarray(np.random.default_rng(0).normal(size=(64, 64)), jnp.float32)
    f = lambda w: jnp.sum(jnp.tanh(a @ w))  # noqa: E731
    w = jnp.ones((64, 4), jnp.float32) / 8
    before = cr.cache_info()["compiled"]
    with jax.default_matmul_precision("highest"):
        cr.grad(f)(w)
        cr.grad(f)(w)
    with jax.default_matmul_precision("bfloat16"):
        cr.grad(f)(w)
        cr.grad(f)(w)
    assert cr.cache_info()["compiled"] == before + 2
