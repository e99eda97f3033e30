"""Compiled reuse that cannot go stale: the AD core's one jit helper.

``call(fn, *args)`` returns ``fn(*args)`` as JAX computes it at this call. It never stores
``fn``. Instead:

1. ``fn`` is traced to a jaxpr at **every** call, so whatever it reads -- globals, mutable
   containers, object attributes, closures, NumPy arrays changed in place -- is read now, as
   JAX's own eager transforms read it. Arrays ``fn`` closes over become the jaxpr's constants,
   which are passed to the program as arguments, never baked into it.
2. The traced program is fingerprinted: its equations, primitives, parameters, literal values
   (by their bytes) and input types. Two calls with the same fingerprint run the same XLA
   program on (possibly) different inputs, so reusing a compiled executable is sound.
3. A new program is compiled at its first sighting and reused from then on. A known program
   whose top-level literals changed value -- a closure over a Python scalar that changes every
   step -- is evaluated op by op (what JAX's eager transforms do; its primitives are compiled
   for those shapes already), and compiled only if the same values come back: a changing
   scalar never triggers a compilation per step.

The cache holds fingerprints and compiled executables, bounded (``CHAINRULE_JIT_CACHE_SIZE``,
256 programs by default, least recently used evicted), and no Python callable of the user's:
a program whose parameters hold a callable that its execution would use (a
``jax.pure_callback``, ``jax.debug.print``) is never cached, only evaluated. The callables of
``custom_jvp``/``custom_vjp`` primitives are rules for transforms already applied when the
program was traced; the compiled program evaluates their primal ``call_jaxpr``, which is part
of the fingerprint. ``clear_cache()`` empties it; ``cache_info()`` counts traces, evaluations,
compilations and hits.

Inside an outer trace (the user's ``jax.jit``, ``jax.vmap``, ``jax.grad`` ...) and under
``jax.disable_jit()`` ``call`` is just ``fn(*args)``: the outer transform owns compilation.
When ``fn`` cannot be traced abstractly -- Python control flow on an input's value, which JAX's
eager transforms allow -- it runs eagerly, as JAX would.
"""

from __future__ import annotations

import collections
import functools
import threading
import types
from collections.abc import Callable
from typing import Any

import jax
import numpy as np
from jax._src import core as _core  # eval_jaxpr, Literal, Var: stable for years, not public

# Errors raised while tracing the user's function point at the user's line, not at these frames.
from jax._src import traceback_util  # noqa: E402

from chainrule import _env

traceback_util.register_exclusion(__file__)
__all__ = ["call", "clear_cache", "cache_info"]

PyTree = Any

_lock = threading.Lock()
_compiled: collections.OrderedDict[tuple, Any] = collections.OrderedDict()
_seen: collections.OrderedDict[tuple, None] = collections.OrderedDict()
_structures: collections.OrderedDict[tuple, None] = collections.OrderedDict()


def _remember(table: collections.OrderedDict, key: Any, capacity: int) -> None:
    table[key] = None
    table.move_to_end(key)
    while len(table) > capacity:
        table.popitem(last=False)


_stats = collections.Counter()

# Errors that mean "this function needs concrete values", which JAX's eager transforms accept.
_NEEDS_EAGER = (
    jax.errors.ConcretizationTypeError,
    jax.errors.TracerArrayConversionError,
    jax.errors.TracerIntegerConversionError,
)


class _Uncacheable(Exception):
    """The program holds something whose identity its execution depends on."""


def clear_cache() -> None:
    """Drop every compiled program and fingerprint the AD core keeps.

    Example:
      >>> import chainrule as cr
      >>> cr.clear_caches()
      >>> cr.cache_info()["programs"]
      0
    """
    with _lock:
        _compiled.clear()
        _seen.clear()
        _structures.clear()
        _nested.clear()


def cache_info() -> dict[str, int]:
    """Counters of the compiled-program cache since the process started.

    Returns:
      A dict: ``traces`` (calls that traced their function), ``evaluated`` (programs run op by
      op: a known program with new literal values, an uncacheable one, or the cache off),
      ``compiled``, ``hits`` (calls served by a compiled program), ``eager`` (functions that
      needed concrete values and ran as plain JAX), ``direct`` (calls inside an outer trace),
      ``programs`` (compiled programs held now) and ``capacity``.

    Example:
      >>> import chainrule as cr
      >>> sorted(cr.cache_info())[:3]
      ['capacity', 'compiled', 'direct']
    """
    with _lock:
        info = dict(_stats)
        info["programs"] = len(_compiled)
    for k in ("traces", "evaluated", "compiled", "hits", "eager", "direct"):
        info.setdefault(k, 0)
    info["capacity"] = _env.jit_cache_size()
    return info


# --------------------------------------------------------------------------------------------
# Fingerprints
# --------------------------------------------------------------------------------------------

_SCALARS = (bool, int, float, complex, str, bytes, type(None))
_CALLABLE_TYPES = (
    types.FunctionType,
    types.MethodType,
    types.BuiltinFunctionType,
    functools.partial,
)


def _literal_key(val: Any) -> tuple:
    arr = np.asarray(val)
    # bytes, not ==: 0.0 == -0.0 and nan != nan, but programs with either differ or are equal
    return (type(val).__name__, arr.dtype.str, arr.shape, arr.tobytes())


# Fingerprints of nested jaxprs by identity: jnp functions are jitted, and JAX reuses their
# traced ClosedJaxpr objects, so most sub-programs of a trace were fingerprinted before. The
# memo holds the jaxpr itself, so that its id cannot be reused while the entry lives.
_nested: collections.OrderedDict[int, tuple[Any, Any]] = collections.OrderedDict()
_NESTED_SIZE = 2048


def _nested_key(v: Any, custom: bool) -> Any:
    hit = _nested.get(id(v))
    if hit is not None and hit[0] is v:
        return hit[1]
    key = _closed_key(v, custom)
    with _lock:
        _nested[id(v)] = (v, key)
        while len(_nested) > _NESTED_SIZE:
            _nested.popitem(last=False)
    return key


def _closed_key(v: Any, custom: bool) -> Any:
    consts = tuple(_literal_key(np.asarray(c)) for c in v.consts if _small(c))
    if len(consts) != len(v.consts):
        raise _Uncacheable("a nested jaxpr closes over a large constant")
    return ("C", _jaxpr_key(v.jaxpr), consts)


def _param_key(v: Any, custom: bool) -> Any:
    if isinstance(v, _core.ClosedJaxpr):
        return _nested_key(v, custom)
    if isinstance(v, _core.Jaxpr):
        return ("J", _jaxpr_key(v))
    if isinstance(v, _SCALARS):
        return (type(v).__name__, repr(v) if isinstance(v, (float, complex)) else v)
    if isinstance(v, (tuple, list)):
        return (type(v).__name__, tuple(_param_key(x, custom) for x in v))
    if isinstance(v, (set, frozenset)):
        return ("s", frozenset(_param_key(x, custom) for x in v))
    if isinstance(v, dict):
        return ("d", tuple((k, _param_key(x, custom)) for k, x in sorted(v.items())))
    if isinstance(v, (np.ndarray, np.generic)):
        return ("A", _literal_key(v))
    if isinstance(v, jax.Array):
        if not _small(v):
            raise _Uncacheable("a parameter holds a large array")
        return ("A", _literal_key(np.asarray(v)))
    if (
        isinstance(v, _CALLABLE_TYPES)
        or type(v).__name__ == "WrappedFun"
        or (callable(v) and not _hashable(v))
    ):
        if custom:
            # A custom_jvp/custom_vjp rule: transforms applied at trace time used it; the
            # compiled program evaluates the primitive's call_jaxpr (keyed above).
            return ("rule",)
        raise _Uncacheable(f"a parameter holds the callable {v!r}")
    try:
        hash(v)
    except TypeError:
        raise _Uncacheable(f"an unhashable parameter {type(v).__name__}") from None
    return ("H", type(v), v)


def _hashable(v: Any) -> bool:
    try:
        hash(v)
    except TypeError:
        return False
    return True


def _small(x: Any) -> bool:
    return int(np.prod(np.shape(x))) <= 64


def _jaxpr_key(jaxpr: Any, lits: list | None = None) -> tuple:
    """The program's structure; with ``lits``, its top-level literal values go there instead
    (the structure keeps their types), so that programs differing only in a Python scalar's
    value share a structure."""
    ids: dict[Any, int] = {}
    parts: list = []

    def literal(v):
        if lits is None:
            return ("L", v.aval, _literal_key(v.val))
        lits.append(_literal_key(v.val))
        return ("L", v.aval)

    for v in (*jaxpr.constvars, *jaxpr.invars):
        ids[v] = len(ids)
        parts.append(v.aval)
    for eqn in jaxpr.eqns:
        ins = []
        for v in eqn.invars:
            ins.append(literal(v) if isinstance(v, _core.Literal) else ids[v])
        for v in eqn.outvars:
            ids[v] = len(ids)
        name = eqn.primitive.name
        if "callback" in name:
            # its callable runs when the program runs: a cached executable would keep it
            raise _Uncacheable(f"{name} calls back into Python")
        custom = name.startswith("custom_")
        params = tuple((k, _param_key(p, custom)) for k, p in sorted(eqn.params.items()))
        parts.append((eqn.primitive, tuple(ins), len(eqn.outvars), params, frozenset(eqn.effects)))
    outs = tuple(literal(v) if isinstance(v, _core.Literal) else ids[v] for v in jaxpr.outvars)
    parts.append(outs)
    return tuple(parts)


def _fingerprint(closed: Any, flat: list, options: Any) -> tuple | None:
    lits: list = []
    try:
        key = _jaxpr_key(closed.jaxpr, lits)
    except _Uncacheable:
        return None
    consts = tuple(jax.typeof(c) for c in closed.consts)
    # jaxpr avals carry no sharding: with several devices the placement selects the program
    shardings = ()
    if jax.device_count() > 1:
        shardings = tuple(getattr(x, "sharding", None) for x in (*closed.consts, *flat))
    # config read when the program is lowered (not visible in the jaxpr), as jax.jit keys on it
    config = (
        jax.config.jax_default_matmul_precision,
        str(jax.config.jax_default_device),
        jax.config.jax_enable_x64,
    )
    # (structure, literal values): the first part is the same for a program whose Python
    # scalars changed value
    return ((key, consts, shardings, options, config), tuple(lits))


# --------------------------------------------------------------------------------------------
# The call
# --------------------------------------------------------------------------------------------


def _is_tracer(x: Any) -> bool:
    return isinstance(x, _core.Tracer)


def _is_array_out(x: Any) -> bool:
    return isinstance(x, (jax.Array, _core.Tracer, np.ndarray, np.generic))


def _trace(fn: Callable, flat: list, in_tree: Any):
    """fn traced on abstract inputs; its non-array outputs are trace-time constants, kept."""
    static: dict[str, Any] = {}

    def flat_fn(*leaves):
        out = fn(*jax.tree_util.tree_unflatten(in_tree, leaves))
        out_leaves, out_tree = jax.tree_util.tree_flatten(out)
        mask = [_is_array_out(x) for x in out_leaves]
        static["tree"], static["mask"] = out_tree, mask
        static["consts"] = [None if m else x for x, m in zip(out_leaves, mask, strict=True)]
        return [x for x, m in zip(out_leaves, mask, strict=True) if m]

    closed = jax.make_jaxpr(flat_fn)(*flat)
    return closed, static


def _unflatten(static: dict, arrays: list) -> Any:
    it = iter(arrays)
    leaves = [next(it) if m else c for m, c in zip(static["mask"], static["consts"], strict=True)]
    return jax.tree_util.tree_unflatten(static["tree"], leaves)


def _compile(closed: Any, consts: list, flat: list, options: dict | None) -> Any:
    jaxpr = closed.jaxpr

    def run(consts, *args):
        return _core.eval_jaxpr(jaxpr, consts, *args)

    jitted = jax.jit(run, compiler_options=options) if options else jax.jit(run)
    return jitted.lower(consts, *flat).compile()


def call(fn: Callable, *args: PyTree, compiler_options: dict | None = None) -> Any:
    """``fn(*args)``, with compiled reuse keyed on the program ``fn`` traces to at this call.

    Args:
      fn: any function of pytrees of arrays; traced at every call, never stored.
      *args: pytrees whose leaves are arrays (``jax.Array``, NumPy arrays or scalars; NumPy
        leaves are converted as ``jnp.asarray`` would).
      compiler_options: XLA options for the compiled program (part of the cache key).

    Returns:
      What ``fn(*args)`` returns: its array leaves computed by the program, its other leaves
      (and its pytree structure) as this call's trace produced them.

    Cost: one trace of ``fn`` per call (as JAX's eager transforms); then one compilation (a
    new program), one compiled execution (a program seen before), or one op-by-op evaluation
    (a known program with new literal values, until those values are seen twice).
    """
    flat, in_tree = jax.tree_util.tree_flatten(args)
    if any(_is_tracer(x) for x in flat) or jax.config.jax_disable_jit:
        _stats["direct"] += 1
        return fn(*args)
    _stats["traces"] += 1
    try:
        closed, static = _trace(fn, flat, in_tree)
    except _NEEDS_EAGER:
        # Python control flow on a value: JAX's eager transforms handle it, so we do too.
        _stats["eager"] += 1
        return fn(*args)
    except TypeError as e:
        # A non-array value where tracing wants arrays (a string in jvp's aux): eager JAX
        # passes it through.
        if "not a valid JAX type" not in str(e):
            raise
        _stats["eager"] += 1
        return fn(*args)
    flat = [jax.numpy.asarray(x) if not isinstance(x, jax.Array) else x for x in flat]
    consts = list(closed.consts)
    options = tuple(sorted(compiler_options.items())) if compiler_options else None
    capacity = _env.jit_cache_size()
    key = _fingerprint(closed, flat, options) if capacity else None
    exe = None
    if key is not None:
        with _lock:
            exe = _compiled.get(key)
            if exe is not None:
                _compiled.move_to_end(key)
                _stats["hits"] += 1
            elif key[0] not in _structures:
                # a new program: compile it now (op by op, a new program's first run compiles
                # each primitive for its shapes anyway, which costs more than one compilation)
                _remember(_structures, key[0], capacity)
            elif key in _seen:
                del _seen[key]  # these literal values a second time: compile
            else:
                # a known program with new literal values (a Python scalar that changes every
                # step): evaluate op by op -- its primitives are compiled for these shapes
                # already -- and compile only if these values come back
                _remember(_seen, key, capacity)
                key = None
        if exe is None and key is not None:
            exe = _compile(closed, consts, flat, compiler_options)
            with _lock:
                _stats["compiled"] += 1
                _compiled[key] = exe
                while len(_compiled) > capacity:
                    _compiled.popitem(last=False)
    if exe is None:
        _stats["evaluated"] += 1
        out = _core.eval_jaxpr(closed.jaxpr, consts, *flat)
    else:
        out = exe(consts, *flat)
    return _unflatten(static, list(out))
