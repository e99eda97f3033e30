"""f's smooth piece at a point: f's program with every switch decision taken there.

Finite differences assume ``t -> f(x + t v)`` is smooth over the steps they take. A relu,
``abs``, ``max``, ``clip``, ``where(x > 0, ...)``, a max pool, a top-k, a sort or a rounding
makes it piecewise smooth, and a step that crosses a switch of one of them measures a blend of
two pieces: FD's error there is a kink's, its error estimate can be off either way, and a check
built on it is loose (a planted 1% bug passes) or wrong. Steps small enough to cross no switch
are rounding-bound in float32 (a relu MLP's nearest switch is typically 1e-3 of a default step).

JAX's program says where the switches are: comparisons, ``max``/``min``, ``abs``/``sign``,
``clamp``, roundings and float-to-int casts, ``rem``, ``reduce_max``/``argmax``, ``sort``,
``top_k``. :func:`smooth_piece` evaluates the program twice side by side, at the point and at
the perturbed input, and takes every switch decision from the point: the result is smooth along
any line, equals ``f`` wherever no switch has flipped, and has ``f``'s derivatives at the point.
It goes through ``jit``, ``custom_jvp`` / ``custom_vjp`` calls (their primal programs: where the
pieces meet does not depend on the rule under test), ``remat``, ``cond`` (the branch taken),
``scan`` and ``while`` (the point's iteration count). The gradient check evaluates its FD side
on the piece (:mod:`chainrule.check.program`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
from jax.extend import core as jcore

PyTree = Any

# comparisons whose sign change switches a select_n/where, a mask, a piece
_COMPARE = {"gt", "ge", "lt", "le"}
# exact comparisons: a switch of measure zero (no distance to it), frozen all the same: a
# `where(x == 0, 1, x)` at x = 0 must keep its branch
_EXACT = {"eq", "ne"}
# elementwise pieces: margin = first operand (abs, sign) or a - b (max, min)
_BINARY = {"max", "min"}
_UNARY = {"abs", "sign"}
# jumps: margin = distance to the next switch of the rounding
_ROUNDING = {"floor", "ceil", "round"}
_REDUCE = {"reduce_max", "reduce_min", "argmax", "argmin"}
_ORDER = {"sort", "top_k"}
_CALL_PARAMS = ("jaxpr", "call_jaxpr")


def _is_float(x: Any) -> bool:
    return jnp.issubdtype(jnp.result_type(x), jnp.inexact)


def _is_real(x: Any) -> bool:
    # a switch is a sign change of a real value (a complex abs is smooth away from 0)
    return jnp.issubdtype(jnp.result_type(x), jnp.floating)


def _sub_jaxprs(eqn: Any) -> list[Any]:
    out = []
    for p in eqn.params.values():
        for sub in p if isinstance(p, (tuple, list)) else (p,):
            if isinstance(sub, jcore.ClosedJaxpr):
                out.append(sub.jaxpr)
            elif isinstance(sub, jcore.Jaxpr):
                out.append(sub)
    return out


def _switch_prim(eqn: Any) -> bool:
    name = eqn.primitive.name
    if name in _COMPARE | _EXACT | _BINARY | _UNARY | _ROUNDING | _REDUCE | _ORDER | {
        "clamp",
        "rem",
    }:
        return any(_is_real(v.aval.dtype) for v in eqn.invars if hasattr(v, "aval"))
    if name == "convert_element_type":
        return _is_real(eqn.invars[0].aval.dtype) and not _is_float(eqn.params["new_dtype"])
    return False


def has_switches(jaxpr: Any) -> bool:
    """True if ``jaxpr`` (or a program it calls) has a kink or jump site on floating values."""
    return any(_switch_prim(e) or any(has_switches(s) for s in _sub_jaxprs(e)) for e in jaxpr.eqns)


def _call_jaxpr(eqn: Any) -> tuple[Any, list] | None:
    """The called program of a call-like equation (jit, custom_jvp/vjp call, remat)."""
    if eqn.primitive.name in ("cond", "scan", "while"):
        return None
    for k in _CALL_PARAMS:
        sub = eqn.params.get(k)
        if isinstance(sub, jcore.ClosedJaxpr):
            j, c = sub.jaxpr, list(sub.consts)
        elif isinstance(sub, jcore.Jaxpr):
            j, c = sub, []
        else:
            continue
        if len(j.invars) == len(eqn.invars) and len(j.outvars) == len(eqn.outvars):
            return j, c
    return None


# ----------------------------------------------------------------------------- the piece at x
# The smooth piece of f that contains x: f's program with every switch decision taken at x.
# Along x + t v it is smooth for every t (no kink to straddle, at any step), it equals f where
# no switch has flipped, and its derivative at x is f's, which is what AD computes (JAX's rules
# differentiate the piece chosen by the primal's decisions). Finite differences of it need no
# small steps, so float32 rounding does not limit them near kinks.


class Unfreezable(Exception):
    """A switch that cannot be frozen: a multi-key ``sort``, an effect, an unknown loop."""


def _frozen_site(eqn: Any, xb: list, ob: list, xp: list) -> list | None:
    """The perturbed outputs of a switch equation with its decision taken from the base
    values ``xb`` (inputs) and ``ob`` (outputs); None if ``eqn`` is not a switch."""
    name, p = eqn.primitive.name, eqn.params
    if not _switch_prim(eqn):
        return None
    if name in _COMPARE or name in _EXACT or name in ("sign", "argmax", "argmin"):
        return ob  # the decision itself (a bool, a sign, an index): as at x
    if name in _ROUNDING or name == "convert_element_type":
        return ob  # a jump: constant on the piece (JAX's derivative through it is zero)
    if name in _BINARY:
        (a, b), (pa, pb) = xb, xp
        first = a > b if name == "max" else a < b
        tie = a == b
        out = jnp.where(first, pa, pb)
        # at a tie JAX's max/min rule takes the mean of both tangents: the piece is the mean
        return [jnp.where(tie, (pa + pb) / 2, out).astype(ob[0].dtype)]
    if name == "abs":
        # JAX's abs rule takes the slope +1 at 0 (select(x >= 0, t, -t)): so does the piece
        return [jnp.where(xb[0] >= 0, xp[0], -xp[0]).astype(ob[0].dtype)]
    if name == "clamp":
        (lo, x, hi), (plo, px, phi) = xb, xp
        out = jnp.where(x < lo, plo, jnp.where(x > hi, phi, px))
        return [jnp.broadcast_to(out, ob[0].shape).astype(ob[0].dtype)]
    if name == "rem":
        (a, b), (pa, pb) = xb, xp
        return [(pa - pb * jnp.trunc(a / b)).astype(ob[0].dtype)]
    if name in ("reduce_max", "reduce_min"):
        axes = tuple(p["axes"])
        x, px = jnp.asarray(xb[0]), jnp.asarray(xp[0])
        best = jnp.expand_dims(ob[0], axes)
        mask = (x == best).astype(px.dtype)
        return [(jnp.sum(px * mask, axes) / jnp.sum(mask, axes)).astype(ob[0].dtype)]
    if name == "top_k":
        axis = p.get("axis", -1)
        vals, idx = ob
        return [jnp.take_along_axis(jnp.asarray(xp[0]), idx, axis=axis), idx]
    if name == "sort":
        if p.get("num_keys", 1) != 1:
            raise Unfreezable("sort with several keys")
        d = p["dimension"]
        perm = jnp.argsort(jnp.asarray(xb[0]), axis=d, stable=True)
        return [jnp.take_along_axis(jnp.asarray(x), perm, axis=d) for x in xp]
    return None


def _bind(eqn: Any, xs: list) -> list:
    out = eqn.primitive.bind(*xs, **eqn.primitive.get_bind_params(eqn.params))
    return list(out) if eqn.primitive.multiple_results else [out]


def _frozen_eval(jaxpr: Any, consts: list, xb: list, xp: list) -> tuple[list, list]:
    """``jaxpr`` at the base inputs ``xb`` and, with the base's decisions, at ``xp``."""
    env: dict[Any, tuple[Any, Any]] = {}

    def read(v):
        return (v.val, v.val) if isinstance(v, jcore.Literal) else env[v]

    for v, c in zip(jaxpr.constvars, consts, strict=True):
        env[v] = (c, c)
    for v, b, q in zip(jaxpr.invars, xb, xp, strict=True):
        env[v] = (b, q)
    for eqn in jaxpr.eqns:
        pairs = [read(v) for v in eqn.invars]
        ib, ip = [b for b, _ in pairs], [q for _, q in pairs]
        if eqn.effects:
            raise Unfreezable(f"an effect ({eqn.primitive.name})")
        call = _call_jaxpr(eqn)
        if call is not None:
            ob, op = _frozen_eval(call[0], call[1], ib, ip)
        elif eqn.primitive.name == "cond" and any(has_switches(s) for s in _sub_jaxprs(eqn)):
            ob = _bind(eqn, ib)
            branches = [
                (lambda ob_, op_, br=br: _frozen_eval(br.jaxpr, list(br.consts), ob_, op_)[1])
                for br in eqn.params["branches"]
            ]
            index = jnp.clip(jnp.asarray(ib[0], jnp.int32), 0, len(branches) - 1)
            op = list(jax.lax.switch(index, branches, ib[1:], ip[1:]))
        elif eqn.primitive.name in _LOOPS and any(has_switches(s) for s in _sub_jaxprs(eqn)):
            ob, op = _LOOPS[eqn.primitive.name](eqn, ib, ip)
        elif any(has_switches(s) for s in _sub_jaxprs(eqn)):
            raise Unfreezable(f"a switch inside {eqn.primitive.name}")
        else:
            ob = _bind(eqn, ib)
            op = _frozen_site(eqn, ib, ob, ip)
            if op is None:
                op = _bind(eqn, ip)
        for v, b, q in zip(eqn.outvars, ob, op, strict=True):
            env[v] = (b, q)
    outs = [read(v) for v in jaxpr.outvars]
    return [b for b, _ in outs], [q for _, q in outs]


def _frozen_scan(eqn: Any, ib: list, ip: list) -> tuple[list, list]:
    # the loop carries the base and the perturbed state side by side; each iteration takes its
    # decisions from the base one
    p = eqn.params
    body, nc, nk = p["jaxpr"], p["num_consts"], p["num_carry"]

    def step(carry, xs):
        cb, cp = carry
        xb, xp = xs
        ob, op = _frozen_eval(
            body.jaxpr, list(body.consts), [*ib[:nc], *cb, *xb], [*ip[:nc], *cp, *xp]
        )
        return (ob[:nk], op[:nk]), (ob[nk:], op[nk:])

    (cb, cp), (yb, yp) = jax.lax.scan(
        step,
        (ib[nc : nc + nk], ip[nc : nc + nk]),
        (ib[nc + nk :], ip[nc + nk :]),
        length=p["length"],
        reverse=p["reverse"],
        unroll=p.get("unroll", 1),
    )
    return [*cb, *yb], [*cp, *yp]


def _frozen_while(eqn: Any, ib: list, ip: list) -> tuple[list, list]:
    # as many iterations as at the base point: the loop's condition is a decision too
    p = eqn.params
    cj, bj = p["cond_jaxpr"], p["body_jaxpr"]
    nc, nb = p["cond_nconsts"], p["body_nconsts"]

    def cond(carry):
        return jax.core.eval_jaxpr(cj.jaxpr, cj.consts, *ib[:nc], *carry[0])[0]

    def body(carry):
        cb, cp = carry
        ob, op = _frozen_eval(
            bj.jaxpr, list(bj.consts), [*ib[nc : nc + nb], *cb], [*ip[nc : nc + nb], *cp]
        )
        return ob, op

    cb, cp = jax.lax.while_loop(cond, body, (list(ib[nc + nb :]), list(ip[nc + nb :])))
    return list(cb), list(cp)


_LOOPS = {"scan": _frozen_scan, "while": _frozen_while}


def smooth_piece(f: Callable, args: PyTree) -> tuple[Callable, str]:
    """``f``'s smooth piece at ``args``: ``f``'s program with every switch decision taken there.

    Along ``args + t v`` the piece is smooth for every ``t`` (a relu stays on the side it is on
    at ``args``, a max keeps its winner, a rounding its value, a ``where`` its branch), equals
    ``f`` wherever no switch has flipped, and has ``f``'s derivatives at ``args`` -- the ones
    JAX's rules compute. Ties at ``args`` (``max(a, b)`` with ``a == b``, several maxima of a
    ``reduce_max``) take the mean of the tied values, as JAX's rules share the tangent; ``abs``
    takes slope +1 at 0, as JAX's rule does.

    Args:
      f: a function of one pytree of arrays (``f(args)``).
      args: the point that fixes the decisions.

    Returns:
      ``(fn, kind)``: ``(f, "smooth")`` if ``f``'s program has no switch, ``(piece,
      "frozen")``, or ``(f, "kinked")`` if a switch cannot be frozen (a multi-key sort, a loop
      other than ``scan``/``while`` with a switch in its body, an effect such as
      ``io_callback``). Loops run the base and the perturbed state side by side (a ``while``
      as many iterations as at ``args``). ``piece`` is a function of a
      pytree shaped like ``args``.

    Example:
      >>> import jax.numpy as jnp
      >>> piece, kind = smooth_piece(lambda x: jnp.sum(jnp.abs(x)), jnp.array([0.5, -1.0]))
      >>> kind, float(piece(jnp.array([-2.0, 3.0])))  # the piece is y0 - y1
      ('frozen', -5.0)

    Cost: tracing ``f`` once; each call of the piece evaluates ``f``'s program at ``args``
    (shared by calls under ``vmap``) and at ``y``.
    """
    flat, tree = jax.tree_util.tree_flatten(args)
    closed, shape = jax.make_jaxpr(
        lambda *a: f(jax.tree_util.tree_unflatten(tree, a)), return_shape=True
    )(*flat)
    if not has_switches(closed.jaxpr):
        return f, "smooth"
    out_tree = jax.tree_util.tree_structure(shape)
    jaxpr, consts = closed.jaxpr, list(closed.consts)
    try:
        _freezable(jaxpr)
    except Unfreezable:
        return f, "kinked"

    def piece(y: PyTree) -> PyTree:
        _, out = _frozen_eval(jaxpr, consts, flat, jax.tree_util.tree_leaves(y))
        return jax.tree_util.tree_unflatten(out_tree, out)

    return piece, "frozen"


def _freezable(jaxpr: Any) -> None:
    """Raise :class:`Unfreezable` where :func:`_frozen_eval` would, before tracing it."""
    for e in jaxpr.eqns:
        if e.effects:
            raise Unfreezable(f"an effect ({e.primitive.name})")
        if e.primitive.name == "sort" and e.params.get("num_keys", 1) != 1:
            raise Unfreezable("sort with several keys")
        subs = _sub_jaxprs(e)
        if subs and _call_jaxpr(e) is None and e.primitive.name not in ("cond", *_LOOPS):
            if any(has_switches(s) for s in subs):
                raise Unfreezable(f"a switch inside {e.primitive.name}")
        for s in subs:
            _freezable(s)
