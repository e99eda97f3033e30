"""The computational graph of a function, of its derivatives, and what they cost.

:func:`of` traces ``f(*args)`` to a jaxpr (``jax.make_jaxpr``: shapes only, nothing is computed)
and turns it into a bipartite :class:`Graph`: *variable* nodes (inputs, constants,
intermediate values, literals) and *operation* nodes (one per jaxpr equation, labelled by its
primitive); an edge is a data dependency (variable -> operation that reads it, operation ->
variable it writes). The jaxpr's equation order is a topological order: the forward execution
order; backpropagation visits the operations in the reverse order.

Nested programs (``jit``, ``custom_jvp_call``, ``custom_vjp_call``, ``remat``/``checkpoint``,
``scan``, ``cond``, ``while``) are kept as one operation node holding its body as a subgraph;
``inline=True`` splices the bodies of *call-like* primitives (jit, custom_jvp/vjp, checkpoint,
closed_call) into the outer graph. Loops and branches (scan, while, cond) always stay
subgraphs: their bodies run a data-dependent number of times, so splicing them would misstate
the program.

The derived programs have graphs too: :func:`jvp_graph` (forward mode), :func:`vjp_graph`
(the backward pass alone, its residuals as inputs, or forward+backward), :func:`hvp_graph`;
:func:`compare` tabulates their sizes and XLA costs side by side.

Memory: :func:`residuals` lists what reverse mode stores from the forward pass for the backward
pass (count and bytes; ``jax.checkpoint`` shrinks it), and :func:`peak_live_bytes` gives the
peak memory of intermediate values of a program executed in its jaxpr order. Reverse mode's
grows linearly with depth, forward mode's does not (a JVP keeps no residuals).
"""

from __future__ import annotations

import dataclasses
import shutil
import subprocess
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import jax.extend.core as jcore
import numpy as np

from chainrule._tree import check_differentiable

__all__ = [
    "INLINABLE",
    "Node",
    "Graph",
    "Residual",
    "ResidualReport",
    "Cost",
    "of",
    "from_jaxpr",
    "jvp_graph",
    "vjp_graph",
    "hvp_graph",
    "residuals",
    "peak_live_bytes",
    "cost",
    "compare",
    "to_dot",
    "render",
]

#: Primitives whose body is a plain call (outer inputs = body inputs): spliced by inline=True.
INLINABLE = frozenset(
    {
        "jit",
        "pjit",
        "closed_call",
        "core_call",
        "remat",
        "remat2",
        "checkpoint",
        "custom_jvp_call",
        "custom_vjp_call",
        "custom_vjp_call_jaxpr",
        "custom_lin",
    }
)

_BODY_PARAMS = ("jaxpr", "call_jaxpr", "fun_jaxpr")


@dataclasses.dataclass(frozen=True)
class Node:
    """One node of a :class:`Graph`.

    Attributes:
      id: index into ``Graph.nodes``.
      kind: ``"op"`` (an operation), ``"input"``, ``"const"`` (a closed-over constant),
        ``"var"`` (an intermediate or output value), ``"literal"`` (an inline constant) or
        ``"dropped"`` (an output nobody reads).
      label: the primitive's name for an op, else the variable's name (``v3``) or the literal.
      shape, dtype: of a variable; None for an op.
      subgraphs: the bodies of a nested program (jit, scan, cond branches ...), for an op.
    """

    id: int
    kind: str
    label: str
    shape: tuple[int, ...] | None = None
    dtype: str | None = None
    subgraphs: tuple[Graph, ...] = ()

    @property
    def is_op(self) -> bool:
        return self.kind == "op"

    @property
    def nbytes(self) -> int:
        """Bytes of a variable's value (0 for an op)."""
        if self.shape is None or self.dtype is None:
            return 0
        return int(np.prod(self.shape, dtype=np.int64)) * np.dtype(self.dtype).itemsize

    def type_str(self) -> str:
        """``f32[2,3]``-style type of a variable, ``""`` for an op."""
        if self.dtype is None:
            return ""
        short = self.dtype.replace("float", "f").replace("uint", "u").replace("int", "i")
        return f"{short}[{','.join(map(str, self.shape or ()))}]"


@dataclasses.dataclass(frozen=True)
class Graph:
    """A computational graph: variable and operation nodes, data-dependency edges.

    ``nodes`` lists the operations in execution (topological) order, each followed by the
    variables it writes; ``edges`` are ``(source id, target id)`` pairs.
    """

    name: str
    nodes: tuple[Node, ...]
    edges: tuple[tuple[int, int], ...]
    inputs: tuple[int, ...]
    outputs: tuple[int, ...]
    consts: tuple[int, ...] = ()

    # -- sizes --------------------------------------------------------------------------------
    @property
    def ops(self) -> list[Node]:
        return [n for n in self.nodes if n.is_op]

    @property
    def variables(self) -> list[Node]:
        return [n for n in self.nodes if not n.is_op]

    @property
    def num_ops(self) -> int:
        return len(self.ops)

    @property
    def num_vars(self) -> int:
        return len(self.variables)

    @property
    def num_edges(self) -> int:
        return len(self.edges)

    def counts(self, recursive: bool = False) -> Counter:
        """Operations by primitive; ``recursive`` adds those inside subgraphs."""
        c = Counter(n.label for n in self.ops)
        if recursive:
            for n in self.ops:
                for g in n.subgraphs:
                    c.update(g.counts(recursive=True))
        return c

    def total_ops(self) -> int:
        """Operations including those inside subgraphs (each body counted once)."""
        return sum(self.counts(recursive=True).values())

    # -- order --------------------------------------------------------------------------------
    def predecessors(self, node_id: int) -> list[int]:
        return [s for s, t in self.edges if t == node_id]

    def successors(self, node_id: int) -> list[int]:
        return [t for s, t in self.edges if s == node_id]

    def topological_order(self) -> list[Node]:
        """Operations in forward execution order (every op after the ops it depends on)."""
        return self.ops

    def reverse_order(self) -> list[Node]:
        """Operations in the order backpropagation visits them (reverse topological)."""
        return self.ops[::-1]

    @property
    def depth(self) -> int:
        """Longest input-to-output path, counted in operations (the critical path)."""
        level = dict.fromkeys(range(len(self.nodes)), 0)
        preds: dict[int, list[int]] = {}
        for s, t in self.edges:
            preds.setdefault(t, []).append(s)
        for n in self.nodes:  # nodes are in topological order
            p = [level[s] for s in preds.get(n.id, ())]
            level[n.id] = (max(p) if p else 0) + (1 if n.is_op else 0)
        return max(level.values(), default=0)

    # -- export -------------------------------------------------------------------------------
    def to_dot(self) -> str:
        """Graphviz DOT text (see :func:`to_dot`)."""
        return to_dot(self)

    def render(self, path: str | Path, fmt: str = "png") -> Path | None:
        """Render with Graphviz (see :func:`render`); None when ``dot`` is not installed."""
        return render(self, path, fmt)

    def summary(self, top: int = 10) -> str:
        """A readable text summary: sizes, depth, inputs/outputs, counts by primitive."""

        def vs(ids):
            return ", ".join(self.nodes[i].type_str() for i in ids) or "-"

        lines = [
            f"Graph {self.name!r}: {self.num_ops} ops, {self.num_vars} variables, "
            f"{self.num_edges} edges, depth {self.depth}"
            + (
                f", {self.total_ops()} ops incl. subgraphs"
                if self.total_ops() != self.num_ops
                else ""
            ),
            f"  inputs : {vs(self.inputs)}",
        ]
        if self.consts:
            lines.append(f"  consts : {vs(self.consts)}")
        lines.append(f"  outputs: {vs(self.outputs)}")
        lines.append("  ops by primitive:")
        for prim, k in self.counts().most_common(top):
            lines.append(f"    {prim:<24s}{k:>6d}")
        rest = len(self.counts()) - top
        if rest > 0:
            lines.append(f"    ... and {rest} more primitives")
        for n in self.ops:
            for i, g in enumerate(n.subgraphs):
                lines.append(
                    f"  subgraph of op {n.id} ({n.label}) #{i}: {g.num_ops} ops, depth {g.depth}"
                )
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.summary()


# --------------------------------------------------------------------------------------------
# Building graphs from jaxprs
# --------------------------------------------------------------------------------------------


def _aval_info(aval: Any) -> tuple[tuple[int, ...] | None, str | None]:
    shape = getattr(aval, "shape", None)
    dtype = getattr(aval, "dtype", None)
    if shape is None or dtype is None:
        return None, None  # tokens and other non-array values
    try:
        return tuple(int(d) for d in shape), np.dtype(dtype).name
    except TypeError:  # e.g. float0 or extended dtypes
        return tuple(int(d) for d in shape), str(dtype)


def _bodies(value: Any) -> list[Any]:
    """Jaxprs found in one equation parameter (a jaxpr, or a tuple of them like cond branches)."""
    if isinstance(value, (jcore.ClosedJaxpr, jcore.Jaxpr)):
        return [value]
    if isinstance(value, (tuple, list)):
        return [v for v in value if isinstance(v, (jcore.ClosedJaxpr, jcore.Jaxpr))]
    return []


def _open(j: Any) -> tuple[Any, list[Any]]:
    if isinstance(j, jcore.ClosedJaxpr):
        return j.jaxpr, list(j.consts)
    return j, []


class _Builder:
    def __init__(self, inline: bool):
        self.inline = inline
        self.nodes: list[Node] = []
        self.edges: list[tuple[int, int]] = []
        self.consts: list[int] = []  # constants of the program and of inlined bodies
        self.counter = 0

    def add(self, kind: str, label: str | None = None, aval: Any = None, subgraphs=()) -> int:
        shape, dtype = _aval_info(aval) if aval is not None else (None, None)
        nid = len(self.nodes)
        if label is None:
            label = f"v{self.counter}"
            self.counter += 1
        self.nodes.append(Node(nid, kind, label, shape, dtype, tuple(subgraphs)))
        return nid

    def read(self, v: Any, env: dict) -> int:
        if isinstance(v, jcore.Literal):
            val = v.val
            text = str(val.item()) if np.ndim(val) == 0 and hasattr(val, "item") else "lit"
            return self.add("literal", text, v.aval)
        return env[v]

    def body(self, eqn: Any) -> Any | None:
        if eqn.primitive.name not in INLINABLE:
            return None
        for key in _BODY_PARAMS:
            for j in _bodies(eqn.params.get(key)):
                jaxpr, _ = _open(j)
                if len(jaxpr.invars) == len(eqn.invars) and len(jaxpr.outvars) == len(eqn.outvars):
                    return j
        return None

    def walk(self, jaxpr: Any, env: dict) -> None:
        for eqn in jaxpr.eqns:
            inner = self.body(eqn) if self.inline else None
            if inner is not None:
                ij, iconsts = _open(inner)
                ienv = {}
                for cv in ij.constvars:
                    ienv[cv] = self.add("const", None, cv.aval)
                    self.consts.append(ienv[cv])
                for iv, ov in zip(ij.invars, eqn.invars, strict=True):
                    ienv[iv] = self.read(ov, env)
                self.walk(ij, ienv)
                for iv, ov in zip(ij.outvars, eqn.outvars, strict=True):
                    if type(ov).__name__ != "DropVar":
                        env[ov] = self.read(iv, ienv)
                continue
            subs = [
                _build(b, f"{eqn.primitive.name}.{key}", self.inline)
                for key, val in eqn.params.items()
                for b in _bodies(val)
            ]
            reads = [self.read(v, env) for v in eqn.invars]  # literals get ids before the op
            op = self.add("op", eqn.primitive.name, subgraphs=subs)
            self.edges.extend((r, op) for r in reads)
            for v in eqn.outvars:
                dropped = type(v).__name__ == "DropVar"
                vid = self.add("dropped" if dropped else "var", None, v.aval)
                self.edges.append((op, vid))
                if not dropped:
                    env[v] = vid


def _build(closed: Any, name: str, inline: bool) -> Graph:
    jaxpr, _ = _open(closed)
    b = _Builder(inline)
    env: dict = {}
    b.consts = [b.add("const", None, v.aval) for v in jaxpr.constvars]
    env.update(zip(jaxpr.constvars, b.consts, strict=True))
    inputs = [b.add("input", None, v.aval) for v in jaxpr.invars]
    env.update(zip(jaxpr.invars, inputs, strict=True))
    b.walk(jaxpr, env)
    outputs = [b.read(v, env) for v in jaxpr.outvars]
    return Graph(
        name, tuple(b.nodes), tuple(b.edges), tuple(inputs), tuple(outputs), tuple(b.consts)
    )


def from_jaxpr(jaxpr: Any, name: str = "jaxpr", inline: bool = False) -> Graph:
    """The :class:`Graph` of a ``ClosedJaxpr`` or ``Jaxpr`` (e.g. from ``jax.make_jaxpr``).

    Args:
      jaxpr: the program.
      name: the graph's name (shown in summaries and DOT).
      inline: splice the bodies of call-like primitives (:data:`INLINABLE`) into the graph.

    Returns:
      The :class:`Graph`.

    Raises:
      TypeError: ``jaxpr`` is not a jaxpr.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from_jaxpr(jax.make_jaxpr(jnp.sin)(1.0)).num_ops
      1
    """
    if not isinstance(jaxpr, (jcore.ClosedJaxpr, jcore.Jaxpr)):
        raise TypeError(
            f"from_jaxpr needs a jaxpr (e.g. jax.make_jaxpr(f)(*args)), found "
            f"{type(jaxpr).__name__}. To trace a function use chainrule.graph.of(f, *args)."
        )
    return _build(jaxpr, name, inline)


def _name(f: Callable, what: str = "") -> str:
    base = getattr(f, "__name__", type(f).__name__)
    return f"{what}({base})" if what else base


def of(f: Callable, *args: Any, inline: bool = False, name: str | None = None) -> Graph:
    """The computational graph of ``f(*args)``, traced with ``jax.make_jaxpr``.

    Only shapes and dtypes of ``args`` matter (``jax.ShapeDtypeStruct`` works too); nothing
    is computed.

    Args:
      f: a JAX-traceable function.
      *args: example arguments (pytrees of arrays or ``ShapeDtypeStruct``).
      inline: splice the bodies of call-like primitives (jit, custom_jvp/vjp, checkpoint).
      name: the graph's name; default ``f.__name__``.

    Returns:
      The :class:`Graph`.

    Example:
      >>> import jax.numpy as jnp
      >>> g = of(lambda x, y: jnp.sin(x) * y + x, 1.0, 2.0)
      >>> [n.label for n in g.topological_order()], g.num_vars, g.num_edges, g.depth
      (['sin', 'mul', 'add'], 5, 8, 3)
    """
    return _build(jax.make_jaxpr(f)(*args), name or _name(f), inline)


def _check_args(args: tuple, what: str) -> None:
    for i, a in enumerate(args):
        check_differentiable(a, f"{what} args[{i}]")


def jvp_graph(f: Callable, *args: Any, inline: bool = False) -> Graph:
    """The graph of forward mode: ``(primals, tangents) -> jax.jvp(f, primals, tangents)``.

    Its inputs are the primals followed by the tangents; outputs the primal and tangent outputs.
    The JVP program interleaves each operation with its tangent rule, so values die as soon as
    the next operation has read them: nothing is stored for a later pass.

    Args:
      f: the function; ``args`` as in :func:`of` (floating leaves).
      *args: example arguments.
      inline: as in :func:`of`.

    Returns:
      The :class:`Graph`.

    Raises:
      TypeError: an integer or boolean argument leaf (naming its path).

    Example:
      >>> import jax.numpy as jnp
      >>> jvp_graph(jnp.sin, 1.0).counts()["cos"]
      1
    """
    _check_args(args, "jvp_graph")
    jaxpr = jax.make_jaxpr(lambda p, t: jax.jvp(f, p, t))(args, args)
    return _build(jaxpr, _name(f, "jvp"), inline)


def vjp_graph(
    f: Callable, *args: Any, include_forward: bool = False, inline: bool = False
) -> Graph:
    """The graph of reverse mode: the backward pass, or forward and backward together.

    With ``include_forward=False`` (default) it is the pullback alone: its inputs are the
    residuals stored by the forward pass followed by the output cotangent (so
    ``len(g.inputs) - n_outputs`` = :func:`residuals` count), its outputs the input cotangents.
    With ``include_forward=True`` it is ``(args, ct) -> vjp(f, *args)[1](ct)``.

    Args:
      f: the function.
      *args: example arguments (floating leaves).
      include_forward: include the forward pass that produces the residuals.
      inline: as in :func:`of`.

    Returns:
      The :class:`Graph`.

    Raises:
      TypeError: an integer or boolean argument leaf (naming its path).

    Example:
      >>> import jax.numpy as jnp
      >>> g = vjp_graph(lambda x, y: jnp.sin(x) * y + x, 1.0, 2.0)
      >>> len(g.inputs)  # residuals y, sin(x), cos(x), then the cotangent
      4
    """
    _check_args(args, "vjp_graph")
    out = jax.eval_shape(f, *args)
    if include_forward:
        jaxpr = jax.make_jaxpr(lambda a, ct: jax.vjp(f, *a)[1](ct))(args, out)
        return _build(jaxpr, _name(f, "vjp"), inline)
    pullback = jax.eval_shape(lambda *a: jax.vjp(f, *a)[1], *args)
    jaxpr = jax.make_jaxpr(lambda pb, ct: pb(ct))(pullback, out)
    return _build(jaxpr, _name(f, "backward"), inline)


def hvp_graph(f: Callable, x: Any, mode: str = "fwd-over-rev", inline: bool = False) -> Graph:
    """The graph of a Hessian-vector product ``(x, v) -> H(x) v`` of a scalar ``f``.

    Args:
      f: a scalar function of one pytree.
      x: example point (floating leaves); ``v`` has its shapes.
      mode: ``"fwd-over-rev"``, ``"rev-over-rev"`` or ``"rev-over-fwd"`` (see ``cr.hvp``).
      inline: as in :func:`of`.

    Returns:
      The :class:`Graph`.

    Raises:
      ValueError: an unknown mode.
      TypeError: an integer or boolean leaf in ``x``.

    Example:
      >>> import jax.numpy as jnp
      >>> hvp_graph(lambda x: jnp.sum(jnp.sin(x)), jnp.ones(3)).num_ops > 0
      True
    """
    from chainrule._rules import hvp_rule

    rule = hvp_rule(mode)  # the one rule table: an unknown mode raises, listing the valid ones
    _check_args((x,), "hvp_graph")
    jaxpr = jax.make_jaxpr(lambda x, v: rule(f, x, v))(x, x)
    return _build(jaxpr, _name(f, f"hvp[{mode}]"), inline)


# --------------------------------------------------------------------------------------------
# Memory: residuals and liveness
# --------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Residual:
    """One value reverse mode keeps from the forward pass for the backward pass."""

    shape: tuple[int, ...]
    dtype: str
    nbytes: int
    source: str
    is_argument: bool


@dataclasses.dataclass(frozen=True)
class ResidualReport:
    """What a VJP of ``f`` stores: the residuals, their count and bytes.

    ``argument_bytes`` are residuals that are ``f``'s own inputs (live anyway, e.g. weights);
    ``activation_bytes`` are the intermediates kept alive only for the backward pass, the
    memory that ``jax.checkpoint`` trades for recomputation.
    """

    entries: tuple[Residual, ...]

    @property
    def count(self) -> int:
        return len(self.entries)

    @property
    def nbytes(self) -> int:
        return sum(r.nbytes for r in self.entries)

    @property
    def argument_bytes(self) -> int:
        return sum(r.nbytes for r in self.entries if r.is_argument)

    @property
    def activation_bytes(self) -> int:
        return self.nbytes - self.argument_bytes

    def summary(self) -> str:
        lines = [
            f"{self.count} residuals, {self.nbytes} bytes ({self.activation_bytes} in "
            f"intermediates, {self.argument_bytes} in arguments)"
        ]
        for r in self.entries:
            t = f"{r.dtype}{list(r.shape)}"
            lines.append(f"  {t:<24s}{r.nbytes:>12d}  {r.source}")
        return "\n".join(lines)


def _nbytes(shape: tuple[int, ...], dtype: Any) -> int:
    return int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize


def residuals(f: Callable, *args: Any) -> ResidualReport:
    """The residuals ``jax.vjp(f, *args)`` keeps from the forward pass: count, bytes, origin.

    Uses JAX's ``saved_residuals`` (the analysis behind ``jax.ad_checkpoint.
    print_saved_residuals``), which also says where each residual comes from; if that private
    helper is missing in a JAX version, falls back to the leaves of the pullback returned by
    ``jax.vjp`` (traced abstractly) without origins. Nothing is computed either way.

    Wrap layers of ``f`` in ``jax.checkpoint`` (optionally with a policy from
    ``jax.checkpoint_policies``) to see the residuals shrink: a checkpointed block keeps only
    its inputs and recomputes the rest during the backward pass.

    Args:
      f: the function.
      *args: example arguments (floating leaves).

    Returns:
      A :class:`ResidualReport`.

    Raises:
      TypeError: an integer or boolean argument leaf.

    Example:
      >>> import jax.numpy as jnp
      >>> r = residuals(lambda x, y: jnp.sin(x) * y + x, 1.0, 2.0)
      >>> r.count, r.argument_bytes
      (3, 4)
    """
    _check_args(args, "residuals")
    try:
        from jax._src.ad_checkpoint import saved_residuals
    except ImportError:  # pragma: no cover - depends on the JAX version
        saved_residuals = None
    if saved_residuals is not None:
        entries = tuple(
            Residual(
                tuple(aval.shape),
                np.dtype(aval.dtype).name,
                _nbytes(aval.shape, aval.dtype),
                src,
                src.startswith("from the argument"),
            )
            for aval, src in saved_residuals(f, *args)
        )
        return ResidualReport(entries)
    return _residuals_from_pullback(f, *args)


def _residuals_from_pullback(f: Callable, *args: Any) -> ResidualReport:
    leaves = jax.tree_util.tree_leaves(jax.eval_shape(lambda *a: jax.vjp(f, *a)[1], *args))
    return ResidualReport(
        tuple(
            Residual(
                tuple(x.shape), np.dtype(x.dtype).name, _nbytes(x.shape, x.dtype), "pullback", False
            )
            for x in leaves
        )
    )


def peak_live_bytes(graph: Graph, include_inputs: bool = False) -> int:
    """Peak bytes of values alive at once when the graph runs in its topological order.

    A value is alive from the op that writes it to the last op that reads it (outputs stay
    alive to the end). Inputs and constants count only with ``include_inputs``. An op holding
    subgraphs (not inlined) adds its bodies' own peak while it runs. This is the memory of the
    program *as written*: XLA may reorder, fuse and reuse buffers, but the growth with depth
    (linear for reverse mode, flat for forward mode) is a property of the program.

    Args:
      graph: e.g. from :func:`vjp_graph` (``include_forward=True``) or :func:`jvp_graph`,
        ideally built with ``inline=True``.
      include_inputs: also count inputs and constants (alive throughout).

    Returns:
      Peak live bytes.

    Example:
      >>> import jax.numpy as jnp
      >>> peak_live_bytes(of(lambda x: jnp.sin(jnp.sin(x)), jnp.ones(4, jnp.float32)))
      32

      (the second ``sin`` reads one 16-byte value while it writes another).
    """
    position = {op.id: k for k, op in enumerate(graph.ops)}
    last_use: dict[int, int] = {}
    for s, t in graph.edges:
        if t in position:
            last_use[s] = max(last_use.get(s, -1), position[t])
    for o in graph.outputs:
        last_use[o] = len(position)
    written: dict[int, list[int]] = {}
    for s, t in graph.edges:
        if s in position:
            written.setdefault(s, []).append(t)
    live = sum(graph.nodes[i].nbytes for i in (*graph.inputs, *graph.consts))
    live = live if include_inputs else 0
    peak = live
    dies_after: dict[int, list[int]] = {}
    for k, op in enumerate(graph.ops):
        for v in written.get(op.id, ()):
            live += graph.nodes[v].nbytes
            dies_after.setdefault(last_use.get(v, k), []).append(v)
        inner = max((peak_live_bytes(g) for g in op.subgraphs), default=0)
        peak = max(peak, live + inner)
        # Inputs never free (they belong to the caller); intermediates free after last read.
        for v in dies_after.pop(k, ()):
            live -= graph.nodes[v].nbytes
    return int(peak)


# --------------------------------------------------------------------------------------------
# XLA costs
# --------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Cost:
    """XLA's cost analysis of a compiled program; None where the backend does not say."""

    flops: float | None
    bytes_accessed: float | None
    transcendentals: float | None


def cost(f: Callable, *args: Any) -> Cost:
    """FLOPs, bytes accessed and transcendentals of ``jax.jit(f)`` compiled for ``args``.

    From ``jax.jit(f).lower(*args).compile().cost_analysis()``; each field is None where the
    backend reports no such figure (or no analysis at all). Compiles ``f`` once.

    Args:
      f: the function.
      *args: example arguments.

    Returns:
      A :class:`Cost`.

    Example:
      >>> import jax.numpy as jnp
      >>> c = cost(lambda a, b: a @ b, jnp.ones((4, 5)), jnp.ones((5, 6)))
      >>> c.flops in (None, 240.0)
      True
    """
    compiled = jax.jit(f).lower(*args).compile()  # errors in f itself propagate
    try:
        analysis = compiled.cost_analysis()
    except Exception:  # a backend without cost analysis may raise: that is "unknown"
        analysis = None
    if isinstance(analysis, (list, tuple)):  # older JAX: one dict per computation
        analysis = analysis[0] if analysis else None
    analysis = analysis or {}

    def get(key):
        v = analysis.get(key)
        return None if v is None or v < 0 else float(v)

    return Cost(get("flops"), get("bytes accessed"), get("transcendentals"))


def compare(f: Callable, *args: Any, costs: bool = True) -> dict[str, dict[str, Any]]:
    """Sizes (and XLA costs) of ``f``, its JVP, its VJP (forward+backward) and, for a scalar
    ``f`` of one argument, its HVP.

    Args:
      f: the function.
      *args: example arguments (floating leaves).
      costs: also compile each program for XLA's cost analysis (slower).

    Returns:
      ``{program: {"ops", "depth", "edges", "flops", "bytes_accessed"}}`` for ``"f"``,
      ``"jvp"``, ``"vjp"`` and possibly ``"hvp"`` (ops counted inside subgraphs too, graphs
      inlined).

    Example:
      >>> import jax.numpy as jnp
      >>> t = compare(lambda x: jnp.sum(jnp.tanh(x)), jnp.ones(3), costs=False)
      >>> t["jvp"]["ops"] > t["f"]["ops"]
      True
    """
    out = jax.eval_shape(f, *args)
    programs: dict[str, tuple[Graph, Callable, tuple]] = {
        "f": (of(f, *args, inline=True), f, args),
        "jvp": (
            jvp_graph(f, *args, inline=True),
            lambda p, t: jax.jvp(f, p, t),
            (args, args),
        ),
        "vjp": (
            vjp_graph(f, *args, include_forward=True, inline=True),
            lambda a, ct: jax.vjp(f, *a)[1](ct),
            (args, jax.tree.map(lambda s: np.ones(s.shape, s.dtype), out)),
        ),
    }
    if len(args) == 1 and np.shape(out) == () and not isinstance(out, (tuple, list, dict)):
        from chainrule._rules import hvp_rule

        programs["hvp"] = (
            hvp_graph(f, args[0], inline=True),
            lambda x, v: hvp_rule("fwd-over-rev")(f, x, v),
            (args[0], args[0]),
        )
    table = {}
    for name, (g, fn, a) in programs.items():
        c = cost(fn, *a) if costs else Cost(None, None, None)
        table[name] = {
            "ops": g.total_ops(),
            "depth": g.depth,
            "edges": g.num_edges,
            "flops": c.flops,
            "bytes_accessed": c.bytes_accessed,
        }
    return table


# --------------------------------------------------------------------------------------------
# Export
# --------------------------------------------------------------------------------------------


def _q(text: str) -> str:
    """A DOT string literal; newlines become DOT's ``\\n`` line breaks."""
    escaped = text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'"{escaped}"'


_STYLE = {
    "op": 'shape=box style="rounded,filled" fillcolor="#dbe8f7"',
    "input": 'shape=ellipse style=filled fillcolor="#d9f2d9"',
    "const": 'shape=ellipse style=filled fillcolor="#eeeeee"',
    "literal": "shape=plaintext",
    "var": "shape=ellipse",
    "dropped": "shape=ellipse style=dashed",
}


def _dot_body(g: Graph, prefix: str, lines: list[str], indent: str) -> None:
    outputs = set(g.outputs)
    for n in g.nodes:
        label = n.label if n.is_op else f"{n.label}\n{n.type_str()}"
        style = _STYLE[n.kind] + (" peripheries=2" if n.id in outputs else "")
        lines.append(f"{indent}{prefix}{n.id} [label={_q(label)} {style}];")
    for s, t in g.edges:
        lines.append(f"{indent}{prefix}{s} -> {prefix}{t};")
    for n in g.ops:
        for i, sub in enumerate(n.subgraphs):
            sp = f"{prefix}{n.id}_{i}_"
            lines.append(f"{indent}subgraph {_q('cluster_' + sp)} {{")
            lines.append(f"{indent}  label={_q(sub.name)}; style=dashed;")
            _dot_body(sub, sp, lines, indent + "  ")
            lines.append(f"{indent}}}")
            if sub.nodes:
                lines.append(f"{indent}{prefix}{n.id} -> {sp}0 [style=dotted arrowhead=none];")


def to_dot(graph: Graph) -> str:
    """Graphviz DOT text of the graph: boxes for operations, ellipses for values (inputs green,
    outputs double-circled), nested programs as dashed clusters.

    Args:
      graph: a :class:`Graph`.

    Returns:
      The DOT source (parseable by Graphviz and ``pydot``).

    Example:
      >>> import jax.numpy as jnp
      >>> to_dot(of(jnp.sin, 1.0)).splitlines()[0]
      'digraph "sin" {'
    """
    lines = [f"digraph {_q(graph.name)} {{", '  rankdir=TB; node [fontname="Helvetica"];']
    _dot_body(graph, "n", lines, "  ")
    lines.append("}")
    return "\n".join(lines) + "\n"


def render(graph: Graph, path: str | Path, fmt: str = "png") -> Path | None:
    """Render the graph with Graphviz's ``dot`` to ``path``.

    Args:
      graph: a :class:`Graph`.
      path: output file.
      fmt: a Graphviz output format (``"png"``, ``"svg"``, ``"pdf"``).

    Returns:
      The path written, or None when the ``dot`` binary is not installed (nothing is written;
      use :func:`to_dot` and render elsewhere).

    Raises:
      subprocess.CalledProcessError: ``dot`` failed.
    """
    exe = shutil.which("dot")
    if exe is None:
        return None
    path = Path(path)
    subprocess.run([exe, f"-T{fmt}", "-o", str(path)], input=to_dot(graph).encode(), check=True)
    return path
