"""Jacobians of a chain ``f = f_L o ... o f_1`` by the cheapest bracketing of its layer Jacobians.

The Jacobian of a chain is the product ``J_L ... J_1`` of its layers' Jacobians. Forward mode
brackets it from the right (``n_0`` passes through the whole chain, one per input), reverse mode
from the left (``n_L`` passes, one per output). When the chain narrows inside (1000 -> 10 ->
1000), a mixed plan is far cheaper: reverse through the layers up to the narrow one (10 passes),
forward through the rest (10 passes), and one 1000x10 by 10x1000 product. Choosing such a plan
is the matrix-chain problem with, for each sub-chain, two extra ways to form its Jacobian
directly (its tangent or its adjoint passes); dynamic programming over the layer widths solves
it exactly in ``O(L^3)`` (the Jacobian chain bracketing problem of Naumann, "Optimal Jacobian
accumulation", and Griewank & Walther 2008, "Evaluating Derivatives", ch. 9-10).

**Plans.** A plan is a binary tree. A leaf ``("fwd", i, j)`` / ``("rev", i, j)`` forms the
Jacobian of the segment ``fs[i:j]`` (an ``n_j x n_i`` matrix, ``n_k`` the number of scalars
entering layer ``k``) by ``n_i`` forward passes (a ``vmap`` of JVPs over the input basis) or
``n_j`` reverse passes (a ``vmap`` of VJPs over the output basis). A node ``(first, second)``
covers two adjacent segments, ``first`` the earlier layers, and multiplies their Jacobians,
``J_second @ J_first`` (a ``jnp`` matmul). ``"fwd"`` is the one leaf ``("fwd", 0, L)``,
``"rev"`` the leaf ``("rev", 0, L)``.

**Cost model** (FLOPs, what ``ChainPlan`` prints). Per layer ``k``: ``p_k``, the FLOPs of one
evaluation; ``t_k`` of one tangent (a JVP's FLOPs less ``p_k``); ``a_k`` of one cotangent (a
VJP's less ``p_k``), each from XLA's cost analysis of the layer's lowered program
(``cost="xla"``: ``flops + transcendentals``) or from counting the jaxpr (``cost="jaxpr"``:
``2 m n k`` per matmul or convolution, one per output element of any other primitive). A
forward leaf costs ``n_i * sum(t_k)``, a reverse leaf ``n_j * sum(a_k)`` over its layers, a
product ``2 n_i n_k n_j``; every plan also runs each layer's primal once (``sum(p_k)``).
What the model leaves out (why measured time can disagree) is listed in
``docs/chain_jacobians.md``.

Nothing is cached across calls: each call traces the layers as they are at that call (as
``jax.jacfwd`` does). The plan is chosen from shapes only, so under ``jax.jit`` it costs nothing
per call; eagerly, ``mode="optimal"`` lowers each layer three times per call to price it: pass
``mode=chain_jacobian_plan(fs, x)`` to choose once.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from chainrule._tree import map_chunked

PyTree = Any

__all__ = [
    "CHAIN_MODES",
    "COST_SOURCES",
    "ChainPlan",
    "LayerCosts",
    "Segment",
    "Product",
    "chain_jacobian",
    "chain_jacobian_plan",
    "optimal_plan",
    "plan_cost",
]

CHAIN_MODES = ("optimal", "fwd", "rev")
COST_SOURCES = ("xla", "jaxpr")


# --------------------------------------------------------------------------------------------
# Plans: binary trees of segments
# --------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Segment:
    """The Jacobian of ``fs[start:stop]`` by ``mode`` passes (``"fwd"``: one per input
    scalar of the segment; ``"rev"``: one per output scalar)."""

    mode: str
    start: int
    stop: int

    def __str__(self) -> str:
        return f"{self.mode}[{self.start}:{self.stop}]"


@dataclasses.dataclass(frozen=True)
class Product:
    """``J_second @ J_first``: ``first`` covers the earlier layers, ``second`` the later ones."""

    first: Node
    second: Node

    @property
    def start(self) -> int:
        return self.first.start

    @property
    def stop(self) -> int:
        return self.second.stop

    def __str__(self) -> str:
        def side(n):
            return f"({n})" if isinstance(n, Product) else str(n)

        return f"{side(self.second)} @ {side(self.first)}"


Node = Segment | Product


def _segments(node: Node) -> list[Segment]:
    """The leaves in application order (earliest layers first)."""
    if isinstance(node, Segment):
        return [node]
    return _segments(node.first) + _segments(node.second)


def _as_tuple(node: Node) -> tuple:
    if isinstance(node, Segment):
        return (node.mode, node.start, node.stop)
    return (_as_tuple(node.first), _as_tuple(node.second))


@dataclasses.dataclass(frozen=True)
class LayerCosts:
    """Per-layer FLOPs: one primal evaluation, one tangent, one cotangent (see module doc)."""

    primal: tuple[float, ...]
    tangent: tuple[float, ...]
    adjoint: tuple[float, ...]
    source: str


def plan_cost(node: Node, widths: Sequence[int], costs: LayerCosts) -> float:
    """Predicted FLOPs of a plan under the cost model (the primal passes included).

    Args:
      node: a plan tree (:class:`Segment` / :class:`Product`).
      widths: ``n_0 ... n_L``, the scalars entering each layer and leaving the last.
      costs: the per-layer costs.

    Returns:
      ``sum(p_k)`` plus each leaf's passes times its per-pass FLOPs plus ``2 a b c`` per product.

    Example:
      >>> c = LayerCosts((1.0, 1.0), (20.0, 20.0), (20.0, 20.0), "given")
      >>> plan_cost(Segment("fwd", 0, 2), (10, 1, 10), c)
      402.0
      >>> plan_cost(Product(Segment("rev", 0, 1), Segment("fwd", 1, 2)), (10, 1, 10), c)
      242.0
    """
    return float(sum(costs.primal)) + _tree_cost(node, widths, costs)


def _leaf_cost(mode: str, i: int, j: int, widths, costs: LayerCosts) -> float:
    if mode == "fwd":
        return float(widths[i]) * float(sum(costs.tangent[i:j]))
    return float(widths[j]) * float(sum(costs.adjoint[i:j]))


def _product_cost(i: int, k: int, j: int, widths) -> float:
    return 2.0 * widths[i] * widths[k] * widths[j]


def _tree_cost(node: Node, widths, costs: LayerCosts) -> float:
    if isinstance(node, Segment):
        return _leaf_cost(node.mode, node.start, node.stop, widths, costs)
    return (
        _tree_cost(node.first, widths, costs)
        + _tree_cost(node.second, widths, costs)
        + _product_cost(node.start, node.first.stop, node.stop, widths)
    )


def optimal_plan(widths: Sequence[int], costs: LayerCosts) -> tuple[Node, float]:
    """The cheapest plan under the cost model, by dynamic programming over sub-chains.

    For every sub-chain ``fs[i:j]`` (shortest first) the best of: its forward leaf, its reverse
    leaf, and for each split ``i < k < j`` the best plans of both halves plus their product.
    ``O(L^3)`` time, no passes of any layer. Ties go to fewer segments, then to forward mode:
    at equal FLOPs a reverse pass measured up to 1.6x slower (it reads the stored residuals and
    multiplies by transposed weights; ``docs/chain_jacobians.md``), which the model does not
    see. (``jacobian(mode="auto")`` breaks ``N == M`` the other way.)

    Args:
      widths: ``n_0 ... n_L``.
      costs: per-layer costs (``len(widths) - 1`` layers).

    Returns:
      ``(plan, predicted FLOPs)``.

    Example:
      >>> c = LayerCosts((1.0, 1.0), (20.0, 20.0), (20.0, 20.0), "given")
      >>> plan, flops = optimal_plan((10, 1, 10), c)
      >>> str(plan), flops
      ('fwd[1:2] @ rev[0:1]', 242.0)
    """
    n_layers = len(widths) - 1
    best: dict[tuple[int, int], tuple[float, int, Node]] = {}
    for length in range(1, n_layers + 1):
        for i in range(n_layers - length + 1):
            j = i + length
            cands = [
                (_leaf_cost(m, i, j, widths, costs), 1, Segment(m, i, j)) for m in ("fwd", "rev")
            ]
            for k in range(i + 1, j):
                (c1, s1, t1), (c2, s2, t2) = best[i, k], best[k, j]
                cands.append((c1 + c2 + _product_cost(i, k, j, widths), s1 + s2, Product(t1, t2)))
            best[i, j] = _pick(cands)
    cost, _, tree = best[0, n_layers]
    return tree, float(sum(costs.primal)) + cost


def _pick(cands: list) -> tuple[float, int, Node]:
    low = min(c for c, _, _ in cands)
    # equal up to rounding: the simpler plan (fewer segments; the earlier candidate)
    near = [c for c in cands if c[0] <= low * (1 + 1e-12) + 1e-12]
    return min(near, key=lambda c: c[1])


# --------------------------------------------------------------------------------------------
# Explicit plans given by the user
# --------------------------------------------------------------------------------------------


def _parse_plan(spec: Any, n_layers: int) -> Node:
    """A user's bracketing (nested tuples, Segment/Product trees, a ChainPlan) as a tree
    covering ``fs[0:n_layers]``; ``ValueError`` naming the bad node otherwise."""
    if isinstance(spec, ChainPlan):
        spec = spec.tree
    node = _parse_node(spec, "plan")
    _check_cover(node, 0, n_layers, "plan")
    return node


def _malformed(where: str, what: str, spec: Any) -> ValueError:
    return ValueError(
        f"Malformed chain_jacobian bracketing at {where}: {what}; found {spec!r}. A plan is a "
        f"leaf ('fwd', i, j) or ('rev', i, j) for the layers fs[i:j], or a pair (first, second) "
        f"of adjacent plans, first covering the earlier layers; e.g. (('rev', 0, 2), "
        f"('fwd', 2, 4))."
    )


def _parse_node(spec: Any, where: str) -> Node:
    if isinstance(spec, (Segment, Product)):
        spec = _as_tuple(spec)
    if not isinstance(spec, (tuple, list)):
        raise _malformed(where, "expected a tuple", spec)
    if spec and isinstance(spec[0], str):
        if len(spec) != 3:
            raise _malformed(where, "a leaf has three entries (mode, start, stop)", spec)
        mode, i, j = spec
        if mode not in ("fwd", "rev"):
            raise _malformed(where, f"a leaf's mode is 'fwd' or 'rev', not {mode!r}", spec)
        for v in (i, j):
            if not isinstance(v, (int, np.integer)) or isinstance(v, bool):
                raise _malformed(where, "a leaf's start and stop are integers", spec)
        if not i < j:
            raise _malformed(where, "a leaf covers at least one layer (start < stop)", spec)
        return Segment(mode, int(i), int(j))
    if len(spec) != 2:
        raise _malformed(where, f"a product has exactly two parts, not {len(spec)}", spec)
    first = _parse_node(spec[0], f"{where}[0]")
    second = _parse_node(spec[1], f"{where}[1]")
    if first.stop != second.start:
        raise _malformed(
            where,
            f"its parts are not adjacent (the first ends at layer {first.stop}, the second "
            f"starts at layer {second.start})",
            spec,
        )
    return Product(first, second)


def _check_cover(node: Node, start: int, stop: int, where: str) -> None:
    if (node.start, node.stop) != (start, stop):
        raise _malformed(
            where,
            f"the plan covers layers [{node.start}:{node.stop}], the chain has layers "
            f"[{start}:{stop}]",
            _as_tuple(node),
        )


def _plan_from_mode(mode: Any, n_layers: int) -> Node | None:
    """The tree for ``"fwd"``/``"rev"``/an explicit plan; None for ``"optimal"``."""
    if isinstance(mode, str):
        if mode not in CHAIN_MODES:
            import difflib

            close = difflib.get_close_matches(mode, CHAIN_MODES, n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise ValueError(
                f"Unknown chain_jacobian mode {mode!r}; expected one of "
                f"{', '.join(map(repr, CHAIN_MODES))} or an explicit bracketing such as "
                f"(('rev', 0, 2), ('fwd', 2, 4)).{hint}"
            )
        if mode == "optimal":
            return None
        return Segment(mode, 0, n_layers)
    return _parse_plan(mode, n_layers)


# --------------------------------------------------------------------------------------------
# The chain: shapes between layers, validation
# --------------------------------------------------------------------------------------------


def _check_layers(fs: Any) -> tuple[Callable, ...]:
    if callable(fs) or not isinstance(fs, Sequence) or isinstance(fs, (str, bytes)):
        raise TypeError(
            f"chain_jacobian takes a sequence of functions (the layers, first applied first); "
            f"found {type(fs).__name__}. Wrap a single function as [f]."
        )
    fs = tuple(fs)
    if not fs:
        raise ValueError(
            "chain_jacobian needs at least one layer; found an empty sequence of functions."
        )
    for k, f in enumerate(fs):
        if not callable(f):
            raise TypeError(f"chain_jacobian: layer {k} is not callable; found {f!r}.")
    return fs


def _struct(tree: PyTree) -> PyTree:
    return jax.tree.map(lambda a: jax.ShapeDtypeStruct(np.shape(a), jnp.result_type(a)), tree)


def _describe(tree: PyTree) -> str:
    """``float32[10]`` for an array, the pytree of such strings otherwise."""
    leaves, treedef = jax.tree_util.tree_flatten(tree)
    strs = [f"{jnp.dtype(x.dtype).name}{list(x.shape)}" for x in leaves]
    if treedef.num_leaves == 1 and treedef.num_nodes == 1:
        return strs[0]
    return str(treedef.unflatten(strs)).replace("'", "") if leaves else str(tree)


def _check_float(tree: PyTree, where: str) -> None:
    leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
    if not leaves:
        raise ValueError(f"chain_jacobian: {where} has no array leaves; nothing to differentiate.")
    for path, leaf in leaves:
        dt = jnp.dtype(leaf.dtype)
        if not jnp.issubdtype(dt, jnp.floating):
            raise TypeError(
                f"chain_jacobian: {where}{jax.tree_util.keystr(path)} has dtype {dt.name}, "
                f"expected a real floating dtype (the chain's Jacobian is real). Cast it with "
                f".astype(jnp.float32), or keep it out of the chain (close over it)."
            )


def _chain_structs(fs: tuple[Callable, ...], x: PyTree) -> list[PyTree]:
    """The shapes/dtypes entering each layer and leaving the last: ``[x_0, ..., x_L]``.

    Raises naming the layer that cannot take its predecessor's output and both shapes.
    """
    s = _struct(x)
    _check_float(s, "x")
    structs = [s]
    for k, f in enumerate(fs):
        try:
            out = jax.eval_shape(f, s)
        except Exception as e:  # noqa: BLE001 - re-raised with the chain's context
            given = (
                f"the chain's input x, {_describe(s)}"
                if k == 0
                else f"the output of layer {k - 1}, {_describe(s)} (layer {k - 1} maps "
                f"{_describe(structs[-2])} -> {_describe(s)})"
            )
            raise ValueError(
                f"chain_jacobian: layer {k} does not accept {given}; layer {k} raised "
                f"{type(e).__name__}: {e}"
            ) from e
        _check_float(out, f"the output of layer {k}, out")
        s = _struct(out)
        structs.append(s)
    return structs


def _width(struct: PyTree) -> int:
    return int(sum(math.prod(x.shape) for x in jax.tree_util.tree_leaves(struct)))


# --------------------------------------------------------------------------------------------
# Costs of one layer
# --------------------------------------------------------------------------------------------


def _xla_flops(fn: Callable, *structs: PyTree) -> float | None:
    try:
        analysis = jax.jit(fn).lower(*structs).cost_analysis()
    except Exception:  # noqa: BLE001 - a backend without cost analysis: fall back
        return None
    if isinstance(analysis, (list, tuple)):
        analysis = analysis[0] if analysis else None
    if not analysis or "flops" not in analysis and "transcendentals" not in analysis:
        return None
    return float(analysis.get("flops", 0.0)) + float(analysis.get("transcendentals", 0.0))


def _count_jaxpr(jaxpr: Any) -> float:
    """FLOPs of a jaxpr: ``2 * out * contracted`` per ``dot_general``, one per output element
    of any other primitive; sub-jaxprs counted (``scan`` times its length, ``cond``'s most
    expensive branch, a ``while`` body once)."""
    total = 0.0
    for eqn in jaxpr.eqns:
        subs = []
        for v in eqn.params.values():
            for item in v if isinstance(v, (tuple, list)) else (v,):
                inner = getattr(item, "jaxpr", item)
                if hasattr(inner, "eqns"):
                    subs.append(inner)
        name = eqn.primitive.name
        if subs:
            costs = [_count_jaxpr(j) for j in subs]
            if name == "cond":
                total += max(costs)
            elif name == "scan":
                total += eqn.params.get("length", 1) * sum(costs)
            else:
                total += sum(costs)
            continue
        out = sum(math.prod(getattr(o.aval, "shape", ())) for o in eqn.outvars)
        if name == "dot_general":
            (contract, _), _ = eqn.params["dimension_numbers"]
            lhs = eqn.invars[0].aval.shape
            total += 2.0 * out * math.prod(lhs[d] for d in contract)
        elif name == "conv_general_dilated":
            # each output element: a dot over one kernel window of one feature group
            rhs = eqn.invars[1].aval.shape
            o = rhs[eqn.params["dimension_numbers"].rhs_spec[0]]
            total += 2.0 * out * math.prod(rhs) / max(o, 1)
        else:
            total += float(out)
    return total


def _jaxpr_flops(fn: Callable, *structs: PyTree) -> float:
    return _count_jaxpr(jax.make_jaxpr(fn)(*structs).jaxpr)


def _layer_costs(f: Callable, s_in: PyTree, s_out: PyTree, source: str) -> tuple[float, ...]:
    """(primal, tangent, adjoint) FLOPs of one layer at these shapes, and the source used."""

    def primal(x):
        return f(x)

    def jvp(x, t):
        return jax.jvp(f, (x,), (t,))

    def vjp(x, ct):
        return jax.vjp(f, x)[1](ct)

    progs = ((primal, (s_in,)), (jvp, (s_in, s_in)), (vjp, (s_in, s_out)))
    got = [_xla_flops(fn, *args) for fn, args in progs] if source == "xla" else [None]
    if any(g is None for g in got):
        source = "jaxpr"
        got = [_jaxpr_flops(fn, *args) for fn, args in progs]
    p, j, v = got
    # a pass costs at least one FLOP: a layer of reshapes would otherwise price its passes at 0
    return p, max(j - p, 1.0), max(v - p, 1.0), source


def _chain_costs(fs, structs, source: str) -> LayerCosts:
    rows = [_layer_costs(f, structs[k], structs[k + 1], source) for k, f in enumerate(fs)]
    sources = sorted({r[3] for r in rows})
    return LayerCosts(
        tuple(r[0] for r in rows),
        tuple(r[1] for r in rows),
        tuple(r[2] for r in rows),
        "+".join(sources),
    )


# --------------------------------------------------------------------------------------------
# The plan object
# --------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class ChainPlan:
    """A chosen bracketing with its predicted cost and the alternatives it beat.

    Attributes:
      tree: the plan (:class:`Segment`/:class:`Product`); pass the plan itself as ``mode``.
      widths: ``n_0 ... n_L``.
      costs: per-layer FLOPs (:class:`LayerCosts`).
      mode: the mode it was made for (``"optimal"``, ``"fwd"``, ``"rev"`` or ``"explicit"``).
      predicted_flops: the tree's cost under the model.
      candidates: ``(name, bracketing, predicted FLOPs)`` for fwd, rev, auto, optimal and the
        best plan with each top-level split.
    """

    tree: Node
    widths: tuple[int, ...]
    costs: LayerCosts
    mode: str
    predicted_flops: float
    candidates: tuple[tuple[str, str, float], ...]

    @property
    def bracketing(self) -> str:
        """The plan in matrix order, e.g. ``fwd[2:4] @ rev[0:2]``."""
        return str(self.tree)

    def as_tuple(self) -> tuple:
        """The plan as nested tuples, the form ``chain_jacobian(mode=...)`` accepts."""
        return _as_tuple(self.tree)

    def predicted(self, name: str) -> float:
        """The predicted FLOPs of the candidate ``name`` (``"fwd"``, ``"rev"``, ...)."""
        for n, _, c in self.candidates:
            if n == name:
                return c
        raise KeyError(f"no candidate {name!r}; have {[n for n, _, _ in self.candidates]}")

    def why(self) -> list[str]:
        """One line per segment and product of the plan: passes, FLOPs per pass, total."""
        lines = []
        w = self.widths
        for seg in _segments(self.tree):
            i, j = seg.start, seg.stop
            per = self.costs.tangent if seg.mode == "fwd" else self.costs.adjoint
            passes = w[i] if seg.mode == "fwd" else w[j]
            kind = "input" if seg.mode == "fwd" else "output"
            lines.append(
                f"{seg}: layers {i}..{j - 1} ({w[i]} -> {w[j]}), {passes} {seg.mode} passes "
                f"(one per {kind}) x {sum(per[i:j]):.3g} FLOPs = {passes * sum(per[i:j]):.3g}"
            )

        def prods(node):
            if isinstance(node, Segment):
                return
            prods(node.first)
            prods(node.second)
            i, k, j = node.start, node.first.stop, node.stop
            lines.append(
                f"product at layer {k}: ({w[j]}x{w[k]}) @ ({w[k]}x{w[i]}) = "
                f"{_product_cost(i, k, j, w):.3g} FLOPs"
            )

        prods(self.tree)
        lines.append(f"primal passes (every plan): {sum(self.costs.primal):.3g} FLOPs")
        return lines

    def __str__(self) -> str:
        best = min(c for _, _, c in self.candidates)
        head = [
            f"chain of {len(self.widths) - 1} layers, widths {' -> '.join(map(str, self.widths))}"
            f" (costs: {self.costs.source})",
            f"plan ({self.mode}): {self.bracketing}   predicted {self.predicted_flops:.4g} FLOPs",
            "",
            f"{'candidate':<22} {'predicted FLOPs':>15} {'x best':>8}  bracketing",
        ]
        rows = [
            f"{name:<22} {cost:>15.4g} {cost / best:>8.2f}  {br}"
            for name, br, cost in self.candidates
        ]
        return "\n".join(head + rows + ["", "why:"] + ["  " + s for s in self.why()])


def _candidates(widths, costs: LayerCosts) -> tuple[tuple[str, str, float], ...]:
    n = len(widths) - 1
    fwd, rev = Segment("fwd", 0, n), Segment("rev", 0, n)
    auto = fwd if widths[0] < widths[-1] else rev
    opt, opt_cost = optimal_plan(widths, costs)
    out = [
        ("fwd", str(fwd), plan_cost(fwd, widths, costs)),
        ("rev", str(rev), plan_cost(rev, widths, costs)),
        (f"auto (= {auto.mode})", str(auto), plan_cost(auto, widths, costs)),
        ("optimal", str(opt), opt_cost),
    ]
    # the best plan for each top-level split: what the split at the chosen layer beat
    for k in range(1, n):
        left, _ = optimal_plan(widths[: k + 1], _slice_costs(costs, 0, k))
        right, _ = optimal_plan(widths[k:], _slice_costs(costs, k, n))
        tree = Product(left, _shift(right, k))
        out.append((f"split at layer {k}", str(tree), plan_cost(tree, widths, costs)))
    return tuple(out)


def _slice_costs(costs: LayerCosts, i: int, j: int) -> LayerCosts:
    return LayerCosts(costs.primal[i:j], costs.tangent[i:j], costs.adjoint[i:j], costs.source)


def _shift(node: Node, k: int) -> Node:
    if isinstance(node, Segment):
        return Segment(node.mode, node.start + k, node.stop + k)
    return Product(_shift(node.first, k), _shift(node.second, k))


def _check_cost_source(cost: str) -> None:
    if cost not in COST_SOURCES:
        raise ValueError(
            f"Unknown chain_jacobian cost source {cost!r}; expected one of "
            f"{', '.join(map(repr, COST_SOURCES))}."
        )


def chain_jacobian_plan(
    fs: Sequence[Callable], x: PyTree, mode: Any = "optimal", cost: str = "xla"
) -> ChainPlan:
    """The plan ``chain_jacobian(fs, mode)`` runs at ``x``, with every candidate's cost.

    Prices each layer (three lowerings: primal, one JVP, one VJP; no layer is run), then solves
    the bracketing by dynamic programming (:func:`optimal_plan`). ``print(plan)`` shows the
    widths, the chosen bracketing, a table of candidates (pure forward, pure reverse, what
    ``jacobian(mode="auto")`` would do, the optimum, and the best plan splitting at each layer)
    with their predicted FLOPs, and why: each segment's passes and the products' FLOPs.

    Args:
      fs: the layers, first applied first; each takes one pytree and returns one pytree.
      x: the chain's input (arrays, or ``jax.ShapeDtypeStruct`` leaves).
      mode: ``"optimal"``, ``"fwd"``, ``"rev"`` or an explicit bracketing (see
        :func:`chain_jacobian`).
      cost: ``"xla"`` (XLA's cost analysis of each layer's lowered programs; falls back to
        ``"jaxpr"`` where the backend has none) or ``"jaxpr"`` (FLOPs counted in the jaxpr).

    Returns:
      A :class:`ChainPlan`; pass it as ``mode=`` to run it without pricing again.

    Raises:
      ValueError: an empty chain, a layer that does not accept its predecessor's output (naming
        the layer and both shapes), an unknown mode or cost source, a malformed bracketing.
      TypeError: a non-callable layer, a non-floating input or intermediate leaf.

    Example:
      >>> import jax, jax.numpy as jnp, chainrule as cr
      >>> a, b = jnp.ones((2, 64)) / 8, jnp.ones((64, 2)) / 8
      >>> fs = [lambda x: jnp.tanh(a @ x), lambda h: jnp.tanh(b @ h)]   # 64 -> 2 -> 64
      >>> plan = cr.chain_jacobian_plan(fs, jnp.ones(64))
      >>> plan.bracketing
      'fwd[1:2] @ rev[0:1]'
      >>> plan.predicted("optimal") < plan.predicted("fwd") / 1.5
      True
    """
    fs = _check_layers(fs)
    _check_cost_source(cost)
    tree = _plan_from_mode(mode, len(fs))
    structs = _chain_structs(fs, x)
    return _make_plan(fs, structs, tree, mode, cost)


def _make_plan(fs, structs, tree, mode, cost) -> ChainPlan:
    widths = tuple(_width(s) for s in structs)
    costs = _chain_costs(fs, structs, cost)
    if tree is None:
        tree, predicted = optimal_plan(widths, costs)
    else:
        predicted = plan_cost(tree, widths, costs)
    name = mode if isinstance(mode, str) else "explicit"
    return ChainPlan(tree, widths, costs, name, predicted, _candidates(widths, costs))


# --------------------------------------------------------------------------------------------
# Running a plan
# --------------------------------------------------------------------------------------------


def _one_hot(i: jax.Array, n: int, dtype: Any) -> jax.Array:
    return (jnp.arange(n) == i).astype(dtype)


def _segment_jacobian(fs, seg: Segment, x: PyTree, chunk_size: int | None):
    """(the ``n_j x n_i`` Jacobian of ``fs[i:j]`` at ``x``, the segment's output pytree)."""
    flat, unravel = ravel_pytree(x)

    def g(z):
        h = unravel(z)
        for f in fs[seg.start : seg.stop]:
            h = f(h)
        return ravel_pytree(h)[0], h

    if seg.mode == "fwd":
        _, f_lin, out = jax.linearize(g, flat, has_aux=True)
        n = flat.size
        cols = map_chunked(
            lambda i: f_lin(_one_hot(i, n, flat.dtype)), jnp.arange(n), n, chunk_size
        )
        return cols.T, out
    y, pullback, out = jax.vjp(g, flat, has_aux=True)
    m = y.size
    rows = map_chunked(lambda k: pullback(_one_hot(k, m, y.dtype))[0], jnp.arange(m), m, chunk_size)
    return rows, out


def _run_plan(fs, tree: Node, x: PyTree, chunk_size: int | None) -> tuple[jax.Array, PyTree]:
    jacs = {}
    h = x
    for seg in _segments(tree):
        jacs[seg], h = _segment_jacobian(fs, seg, h, chunk_size)

    def multiply(node):
        if isinstance(node, Segment):
            return jacs[node]
        return jnp.matmul(multiply(node.second), multiply(node.first))

    return multiply(tree), h


def _layout(jac: jax.Array, x_in: PyTree, x_out: PyTree) -> PyTree:
    """``jax.jacfwd``'s layout: the output pytree, each leaf the input pytree of blocks of
    shape ``out_shape + in_shape`` in the output leaf's dtype."""
    in_leaves, in_def = jax.tree_util.tree_flatten(x_in)
    out_leaves, out_def = jax.tree_util.tree_flatten(x_out)
    in_off = np.concatenate([[0], np.cumsum([np.size(a) for a in in_leaves])]).astype(int)
    out_off = np.concatenate([[0], np.cumsum([np.size(a) for a in out_leaves])]).astype(int)
    rows = []
    for o, leaf_o in enumerate(out_leaves):
        blocks = [
            jac[out_off[o] : out_off[o + 1], in_off[i] : in_off[i + 1]]
            .reshape(np.shape(leaf_o) + np.shape(leaf_i))
            .astype(jnp.result_type(leaf_o))
            for i, leaf_i in enumerate(in_leaves)
        ]
        rows.append(in_def.unflatten(blocks))
    return out_def.unflatten(rows)


def _check_chunk_size(chunk_size: Any) -> int | None:
    if chunk_size is not None and (
        not isinstance(chunk_size, (int, np.integer))
        or isinstance(chunk_size, bool)
        or chunk_size < 1
    ):
        raise ValueError(
            f"chain_jacobian: chunk_size must be None or a positive integer, found {chunk_size!r}."
        )
    return None if chunk_size is None else int(chunk_size)


def chain_jacobian(
    fs: Sequence[Callable],
    mode: Any = "optimal",
    chunk_size: int | None = None,
    cost: str = "xla",
) -> Callable[[PyTree], PyTree]:
    """The Jacobian of ``fs[-1] o ... o fs[0]`` by the cheapest bracketing of its layers'.

    Each segment of the plan forms its Jacobian by a ``vmap`` of JVPs over its input basis
    (forward: ``n_in`` passes through the segment) or of VJPs over its output basis (reverse:
    ``n_out`` passes); the segments' Jacobians are then multiplied (``jnp.matmul``) in the
    plan's bracketing. Between layers the pytrees are raveled, so a layer may take and return
    any pytree. Costs, in passes: ``"fwd"`` is ``n_0`` forward passes through the whole chain,
    ``"rev"`` ``n_L`` reverse passes; ``"optimal"`` the plan minimizing the cost model of
    :mod:`chainrule.chain` (see :func:`chain_jacobian_plan` for what it chose and why). The
    chain has one argument, so ``jacobian``'s ``argnums`` has no counterpart: close over what
    is not differentiated.

    Args:
      fs: the layers, first applied first; each takes one pytree and returns one pytree.
      mode: ``"optimal"`` (default), ``"fwd"``, ``"rev"``, a :class:`ChainPlan`, or an explicit
        bracketing: a leaf ``("fwd", i, j)``/``("rev", i, j)`` for the layers ``fs[i:j]``, or
        a pair ``(first, second)`` of adjacent plans (``first`` the earlier layers), e.g.
        ``(("rev", 0, 2), ("fwd", 2, 4))``.
      chunk_size: basis vectors per chunk (``lax.map`` over chunks, ``vmap`` within one), or
        None for all at once; bounds each segment's working set, not the dense segment
        Jacobians themselves.
      cost: where the cost model's FLOPs come from, ``"xla"`` or ``"jaxpr"`` (only used by
        ``"optimal"``).

    Returns:
      ``jac_fn(x)`` returning the Jacobian in ``jax.jacfwd``'s layout: the last layer's output
      pytree, each leaf replaced by ``x``'s pytree, leaf shapes ``out_shape + in_shape``.

    Raises:
      ValueError: an empty chain, an unknown mode, a malformed bracketing, a bad chunk size
        (when called: a layer that does not accept its predecessor's output, naming the
        layer and both shapes; a plan for a chain of another length).
      TypeError: a non-callable layer; when called, a non-floating input or intermediate leaf.

    Example:
      >>> import chainrule as cr, jax.numpy as jnp
      >>> fs = [lambda x: x[:1] * x[1:], lambda h: jnp.concatenate([h, 2 * h])]  # 2 -> 1 -> 2
      >>> cr.chain_jacobian(fs)(jnp.array([2.0, 3.0])).tolist()
      [[3.0, 2.0], [6.0, 4.0]]
      >>> cr.chain_jacobian(fs, mode=(("rev", 0, 1), ("fwd", 1, 2)))(jnp.array([2.0, 3.0])).shape
      (2, 2)
    """
    fs = _check_layers(fs)
    tree = _plan_from_mode(mode, len(fs))
    chunk_size = _check_chunk_size(chunk_size)
    _check_cost_source(cost)
    if isinstance(mode, ChainPlan):
        planned_widths = mode.widths
    else:
        planned_widths = None

    def jac_fn(x: PyTree) -> PyTree:
        structs = _chain_structs(fs, x)
        plan = tree
        if plan is None:
            widths = tuple(_width(s) for s in structs)
            plan, _ = optimal_plan(widths, _chain_costs(fs, structs, cost))
        elif planned_widths is not None:
            widths = tuple(_width(s) for s in structs)
            if widths != planned_widths:
                raise ValueError(
                    f"chain_jacobian: the plan was made for widths {planned_widths}, this call's "
                    f"chain has widths {widths}; make a new plan with chain_jacobian_plan(fs, x)."
                )
        jac, out = _run_plan(fs, plan, x, chunk_size)
        return _layout(jac, x, out)

    return jac_fn
