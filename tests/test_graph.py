"""chainrule.graph: structure of known graphs, nesting, exports, residual memory, costs."""

import re
import shutil
from collections import Counter

import jax
import jax.numpy as jnp
import numpy as np
import pydot
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chainrule import graph, nets


def f_known(x, y):
    return jnp.sin(x) * y + x


def _is_topological(g):
    pos = {n.id: k for k, n in enumerate(g.nodes)}
    return all(pos[s] < pos[t] for s, t in g.edges)


# -- structure ------------------------------------------------------------------------------


def test_known_function_nodes_edges_order():
    g = graph.of(f_known, jnp.float32(1.0), jnp.float32(2.0))
    assert [n.label for n in g.topological_order()] == ["sin", "mul", "add"]
    assert [n.label for n in g.reverse_order()] == ["add", "mul", "sin"]
    # variables: x, y, sin(x), sin(x)*y, result
    assert (g.num_ops, g.num_vars, g.num_edges, g.depth) == (3, 5, 8, 3)
    x, y = g.inputs
    sin, mul, add = (n.id for n in g.ops)
    (s,) = g.successors(sin)
    (m,) = g.successors(mul)
    (out,) = g.outputs
    assert set(g.edges) == {
        (x, sin),
        (sin, s),
        (s, mul),
        (y, mul),
        (mul, m),
        (m, add),
        (x, add),
        (add, out),
    }
    assert sorted(g.predecessors(add)) == sorted([m, x])
    assert _is_topological(g)
    assert g.counts() == Counter({"sin": 1, "mul": 1, "add": 1})
    assert g.nodes[x].type_str() == "f32[]"


UNARY = {"sin": jnp.sin, "cos": jnp.cos, "exp": jnp.exp, "tanh": jnp.tanh, "neg": jnp.negative}


@settings(max_examples=10)
@given(st.lists(st.sampled_from(sorted(UNARY)), min_size=1, max_size=8))
def test_chain_counts_and_depth(names):
    def f(x):
        for n in names:
            x = UNARY[n](x)
        return x

    g = graph.of(f, jnp.ones(3))
    assert [n.label for n in g.topological_order()] == names
    assert g.counts() == Counter(names)
    assert (g.num_ops, g.num_vars, g.num_edges, g.depth) == (
        len(names),
        len(names) + 1,
        2 * len(names),
        len(names),
    )
    assert _is_topological(g)


def test_parallel_branches_depth_is_longest_path():
    # two branches of lengths 3 and 1 joined by an add: depth 4, six ops
    g = graph.of(lambda x: jnp.exp(jnp.cos(jnp.sin(x))) + jnp.tanh(x), 1.0)
    assert (g.num_ops, g.depth) == (5, 4)


def test_literals_and_dropped_outputs():
    g = graph.of(lambda x: x + 1.0, jnp.ones(2))
    assert [n.kind for n in g.nodes].count("literal") == 1
    assert g.num_edges == 3


def test_nested_subgraphs_and_inline():
    inner = jax.jit(lambda x: jnp.tanh(x) * x)

    def f(x):
        return inner(x) + jax.nn.relu(x)

    g = graph.of(f, jnp.ones(3))
    assert g.counts() == Counter({"jit": 1, "custom_jvp_call": 1, "add": 1})
    (jit_op,) = [n for n in g.ops if n.label == "jit"]
    assert jit_op.subgraphs[0].counts() == Counter({"tanh": 1, "mul": 1})
    gi = graph.of(f, jnp.ones(3), inline=True)
    assert "jit" not in gi.counts() and "custom_jvp_call" not in gi.counts()
    assert gi.counts() == Counter({"tanh": 1, "mul": 1, "max": 1, "add": 1})
    assert gi.counts() == g.counts(recursive=True) - Counter(
        {"jit": 2, "custom_jvp_call": 1}
    )  # relu is a jit inside a custom_jvp_call
    assert _is_topological(gi) and gi.depth == 3


def test_inlined_body_constants_are_graph_consts():
    w = np.arange(12.0, dtype=np.float32).reshape(3, 4)  # closed over by the inner jit

    def f(x):
        return jax.jit(lambda y: jnp.tanh(y @ w))(x)

    g = graph.of(f, jnp.ones(3, jnp.float32), inline=True)
    const_ids = tuple(n.id for n in g.nodes if n.kind == "const")
    assert g.consts == const_ids and [g.nodes[i].shape for i in const_ids] == [(3, 4)]
    assert "consts : f32[3,4]" in g.summary()
    # The constant is alive throughout, like an input: peak = inputs + consts + intermediates.
    assert graph.peak_live_bytes(g, include_inputs=True) == 12 + 48 + 2 * 16


def test_loops_and_branches_stay_subgraphs():
    def f(x):
        c, ys = jax.lax.scan(lambda c, _: (jnp.sin(c), c), x, None, length=4)
        return jax.lax.cond(c.sum() > 0, jnp.cos, jnp.exp, c) + ys.sum()

    for inline in (False, True):
        g = graph.of(f, jnp.ones(2), inline=inline)
        (scan,) = [n for n in g.ops if n.label == "scan"]
        (cond,) = [n for n in g.ops if n.label == "cond"]
        assert scan.subgraphs[0].counts() == Counter({"sin": 1})
        assert len(cond.subgraphs) == 2


def test_from_jaxpr_error():
    with pytest.raises(TypeError, match=r"from_jaxpr needs a jaxpr.*graph.of\(f, \*args\)"):
        graph.from_jaxpr(lambda x: x)


# -- derived programs -----------------------------------------------------------------------


def test_derived_graphs():
    gj = graph.jvp_graph(f_known, 1.0, 2.0)
    assert len(gj.inputs) == 4 and len(gj.outputs) == 2
    assert gj.counts()["cos"] == 1
    gb = graph.vjp_graph(f_known, 1.0, 2.0)
    r = graph.residuals(f_known, 1.0, 2.0)
    assert len(gb.inputs) == r.count + 1  # residuals, then the output cotangent
    assert len(gb.outputs) == 2 and "sin" not in gb.counts()  # nothing recomputed
    gf = graph.vjp_graph(f_known, 1.0, 2.0, include_forward=True)
    assert len(gf.inputs) == 3 and gf.counts()["sin"] == 1
    gh = graph.hvp_graph(lambda x: jnp.sum(jnp.sin(x)), jnp.ones(3))
    assert len(gh.inputs) == 2 and gh.num_ops > gf.num_ops
    with pytest.raises(ValueError, match=r"Unknown hvp mode 'fwd'"):
        graph.hvp_graph(jnp.sin, 1.0, mode="fwd")
    with pytest.raises(TypeError, match=r"jvp_graph args\[0\]: its dtype is int"):
        graph.jvp_graph(jnp.sin, jnp.array(1))


def test_compare_sizes():
    t = graph.compare(lambda x: jnp.sum(jnp.tanh(x)), jnp.ones(3), costs=False)
    assert set(t) == {"f", "jvp", "vjp", "hvp"}
    assert t["f"]["ops"] < t["jvp"]["ops"] and t["vjp"]["ops"] < t["hvp"]["ops"]
    assert t["hvp"]["flops"] is None


# -- export ---------------------------------------------------------------------------------


def _dot_nodes(d):
    return [n for n in d.get_nodes() if re.fullmatch(r"n[0-9_]+", n.get_name())]


@pytest.mark.filterwarnings("ignore:'setParseAction' deprecated")  # pydot's own parser
def test_dot_parses_and_matches_graph():
    g = graph.of(f_known, 1.0, 2.0)
    (d,) = pydot.graph_from_dot_data(g.to_dot())
    assert len(_dot_nodes(d)) == len(g.nodes)
    assert len(d.get_edges()) == g.num_edges
    # nested: clusters are parsed as subgraphs
    gn = graph.of(lambda x: jax.jit(jnp.sin)(x) + 1, 1.0)
    (dn,) = pydot.graph_from_dot_data(gn.to_dot())
    assert len(dn.get_subgraphs()) == 1
    assert len(_dot_nodes(dn.get_subgraphs()[0])) == len(gn.ops[0].subgraphs[0].nodes)


def test_render_skips_without_dot(tmp_path, monkeypatch):
    g = graph.of(f_known, 1.0, 2.0)
    if shutil.which("dot"):
        out = g.render(tmp_path / "g.png")
        assert out.read_bytes()[:4] == b"\x89PNG"
    monkeypatch.setattr(graph.shutil, "which", lambda name: None)
    assert g.render(tmp_path / "h.png") is None
    assert not (tmp_path / "h.png").exists()


def test_summary_text():
    text = graph.of(lambda x: jax.jit(jnp.sin)(x) * x, 1.0).summary()
    assert "2 ops, " in text and "depth 2" in text and "3 ops incl. subgraphs" in text
    assert "subgraph of op" in text and "mul" in text


# -- memory ---------------------------------------------------------------------------------


def test_residuals_known_function(dtype):
    x, y = jnp.array(1.0, dtype), jnp.array(2.0, dtype)
    r = graph.residuals(f_known, x, y)
    # reverse mode keeps y (for d/dx of sin(x)*y), sin(x) (for d/dy) and cos(x)
    assert r.count == 3 and r.nbytes == 3 * dtype.itemsize
    assert r.argument_bytes == dtype.itemsize and r.activation_bytes == 2 * dtype.itemsize
    fallback = graph._residuals_from_pullback(f_known, x, y)
    assert (fallback.count, fallback.nbytes) == (r.count, r.nbytes)
    assert "3 residuals" in r.summary()


B, W = 8, 16
ACT = B * W * 4  # bytes of one float32 activation


def _mlp_loss(depth, checkpoint=False):
    p = nets.mlp_init(jax.random.key(0), [W] * (depth + 1))
    x = jnp.ones((B, W), jnp.float32)

    def loss(p, x):
        return jnp.sum(nets.mlp_apply(p, x, "tanh", checkpoint=checkpoint) ** 2)

    return loss, p, x


def test_reverse_mode_residuals_grow_linearly_and_checkpoint_cuts_them():
    depths = (2, 4, 8)
    plain = [graph.residuals(*_mlp_loss(d)).activation_bytes for d in depths]
    ckpt = [graph.residuals(*_mlp_loss(d, True)).activation_bytes for d in depths]
    for b in (plain, ckpt):
        slope, intercept = np.polyfit(depths, b, 1)
        np.testing.assert_allclose(np.polyval([slope, intercept], depths), b, rtol=1e-12)
        assert slope > 0
    # A checkpointed layer keeps only its input: one activation per layer (the last layer's
    # output is kept by the loss), everything else is recomputed.
    assert ckpt == [d * ACT for d in depths]
    assert all(p > c for p, c in zip(plain, ckpt, strict=True))
    assert (plain[2] - plain[1]) / 4 > ACT  # without checkpointing, more than one per layer
    # checkpointing the whole function keeps nothing but its arguments
    loss, p, x = _mlp_loss(8)
    assert graph.residuals(jax.checkpoint(loss), p, x).activation_bytes == 0
    # the policy form is the same as checkpoint=True for nothing_saveable
    nothing = jax.checkpoint_policies.nothing_saveable
    assert graph.residuals(*_mlp_loss(8, nothing)).activation_bytes == ckpt[2]


def test_forward_mode_memory_flat_reverse_mode_linear():
    depths = (2, 4, 8)
    fwd = [graph.peak_live_bytes(graph.jvp_graph(*_mlp_loss(d), inline=True)) for d in depths]
    rev = [
        graph.peak_live_bytes(graph.vjp_graph(*_mlp_loss(d), include_forward=True, inline=True))
        for d in depths
    ]
    assert fwd[0] == fwd[1] == fwd[2]  # a JVP keeps nothing for later
    assert rev[0] < rev[1] < rev[2]
    assert (rev[2] - rev[1]) == 2 * (rev[1] - rev[0])  # linear in depth
    assert rev[2] - rev[1] >= 4 * ACT  # at least one activation per extra layer


def test_peak_live_bytes_simple_chain(dtype):
    x = jnp.ones(4, dtype)
    g = graph.of(lambda x: jnp.sin(jnp.sin(jnp.sin(x))), x)
    item = 4 * dtype.itemsize
    assert graph.peak_live_bytes(g) == 2 * item  # one read, one written at a time
    assert graph.peak_live_bytes(g, include_inputs=True) == 3 * item


# -- costs ----------------------------------------------------------------------------------


def test_cost_matmul_and_missing(monkeypatch):
    a, b = jnp.ones((4, 5), jnp.float32), jnp.ones((5, 6), jnp.float32)
    c = graph.cost(lambda a, b: a @ b, a, b)
    # CPU XLA reports 2 m n k FLOPs for a matmul; other backends may report nothing
    assert c.flops is None or c.flops == 2 * 4 * 5 * 6
    compiled_type = type(jax.jit(jnp.sin).lower(1.0).compile())
    monkeypatch.setattr(compiled_type, "cost_analysis", lambda self: None)
    assert graph.cost(jnp.sin, 1.0) == graph.Cost(None, None, None)

    def boom(self):
        raise NotImplementedError

    monkeypatch.setattr(compiled_type, "cost_analysis", boom)
    assert graph.cost(jnp.sin, 1.0).flops is None
