"""Forward, reverse and mixed-mode differentiation: the AD core.

Every transform here is JAX's own (``jax.jvp``, ``jax.vjp``, ``jax.jacfwd`` ...) run under one
module-level ``jax.jit`` whose static argument is the user's function. Two consequences:

* A transform compiles once per (function, shape/dtype signature) and re-uses the executable on
  later calls: nothing re-traces, and there is no per-call cost beyond JAX's own dispatch.
* Input validation runs while tracing, i.e. once per signature. It names the pytree path of a
  bad leaf (``primals[0]['layers'][3]['w']``), what was expected and what was found.

Costs are stated in passes of ``f``: a forward-mode pass (JVP) or a reverse-mode pass (VJP) each
cost a small constant (~2-3x) times one evaluation of ``f``; a reverse pass also stores the
residuals of the forward pass. For ``f: R^N -> R^M`` a full Jacobian costs N forward passes or M
reverse passes; a Hessian-vector product costs one forward-over-reverse pass (~4-5x ``f``).

Functions given to these transforms must be hashable (plain functions, ``functools.partial``,
bound methods all are). An unhashable callable still works but is traced on every call.
Non-array leaves among non-differentiated arguments (Python numbers, strings, ``None``) are
treated as static, as ``equinox.filter_jit`` does: a new value means a new trace.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from chainrule._tree import (
    check_choice,
    check_differentiable,
    check_same_shapes_dtypes,
    check_same_structure,
    check_scalar_output,
    is_hashable,
    map_chunked,
)

PyTree = Any

__all__ = [
    "JACOBIAN_MODES",
    "HVP_MODES",
    "jvp",
    "vjp",
    "grad",
    "value_and_grad",
    "linearize",
    "jacobian",
    "hvp",
    "hvp_batched",
    "hessian",
]

JACOBIAN_MODES = ("auto", "fwd", "rev")
HVP_MODES = ("fwd-over-rev", "rev-over-rev", "rev-over-fwd")


# --------------------------------------------------------------------------------------------
# Dispatch: one jit per transform, the user's function a static argument.
# --------------------------------------------------------------------------------------------


def _compiled(impl: Callable, static_argnums: tuple[int, ...]) -> Callable:
    """``impl(fun, *args)`` under one cached ``jax.jit``; argument 0 (``fun``) is static.

    An unhashable ``fun`` cannot key the cache: it gets a fresh jit, traced on every call.
    """
    jitted = jax.jit(impl, static_argnums=(0, *static_argnums))
    tail = tuple(i - 1 for i in static_argnums)

    def call(fun: Callable, *args: Any) -> Any:
        if is_hashable(fun):
            return jitted(fun, *args)
        return jax.jit(functools.partial(impl, fun), static_argnums=tail)(*args)

    call.jitted = jitted  # type: ignore[attr-defined]
    return call


def _is_array(x: Any) -> bool:
    return isinstance(x, (jax.Array, np.ndarray, np.generic))


def _as_arrays(tree: PyTree) -> PyTree:
    """``jax.tree.map(jnp.asarray, tree)``, minus its cost where the leaves already are arrays.

    ``jnp.asarray`` returns a ``jax.Array`` (or tracer) unchanged, but costs ~8 us a leaf in
    Python; on a many-leaf parameter tree that was the wrappers' largest per-call overhead over
    raw JAX (``chainrule bench ad``). Leaves that are not ``jax.Array`` still go through it.
    """
    leaves, treedef = jax.tree_util.tree_flatten(tree)
    if all(isinstance(x, jax.Array) for x in leaves):
        return tree
    return treedef.unflatten([x if isinstance(x, jax.Array) else jnp.asarray(x) for x in leaves])


class _Static:
    """Hashable holder of the non-array leaves of a pytree (they become jit-static)."""

    __slots__ = ("treedef", "leaves", "mask", "_hash")

    def __init__(self, treedef: Any, leaves: tuple, mask: tuple[bool, ...]):
        self.treedef, self.leaves, self.mask = treedef, leaves, mask
        # jit hashes and compares its static arguments on every call: do the work once
        self._hash = hash(self._key())

    def _key(self) -> tuple:
        return (self.treedef, self.leaves, self.mask)

    def __hash__(self) -> int:
        return self._hash

    def __eq__(self, other: object) -> bool:
        if self is other:
            return True
        return (
            isinstance(other, _Static) and self._hash == other._hash and self._key() == other._key()
        )


def _partition(tree: PyTree) -> tuple[list, _Static]:
    leaves, treedef = jax.tree_util.tree_flatten(tree)
    mask = tuple(_is_array(leaf) for leaf in leaves)
    dynamic = [leaf if m else None for leaf, m in zip(leaves, mask, strict=True)]
    static = tuple(None if m else leaf for leaf, m in zip(leaves, mask, strict=True))
    return dynamic, _Static(treedef, static, mask)


def _combine(dynamic: list, static: _Static) -> PyTree:
    leaves = [d if m else s for d, s, m in zip(dynamic, static.leaves, static.mask, strict=True)]
    return static.treedef.unflatten(leaves)


def _canonical_argnums(argnums: Any, what: str) -> int | tuple[int, ...]:
    """``argnums`` as a Python int or a tuple of them, checked once when the transform is made.

    Integer-likes (``np.int64(1)``) are accepted, as JAX does; a single one stays an int, so
    the result is not wrapped in a tuple.
    """

    def as_int(i: Any) -> int:
        if isinstance(i, bool) or not isinstance(i, (int, np.integer)):
            raise TypeError(
                f"{what}: argnums must be an int or a non-empty tuple of ints, found {argnums!r}."
            )
        return int(i)

    if isinstance(argnums, (int, np.integer)) and not isinstance(argnums, bool):
        return int(argnums)
    if not isinstance(argnums, (tuple, list)) or not argnums:
        raise TypeError(
            f"{what}: argnums must be an int or a non-empty tuple of ints, found {argnums!r}."
        )
    return tuple(as_int(i) for i in argnums)


def _normalize_argnums(argnums: int | Sequence[int], nargs: int, what: str) -> tuple[int, ...]:
    if type(argnums) is int and 0 <= argnums < nargs:
        return (argnums,)  # the common case, on every call: skip the general checks
    nums = (argnums,) if isinstance(argnums, int) else tuple(argnums)
    if not nums or not all(isinstance(i, int) and not isinstance(i, bool) for i in nums):
        raise TypeError(
            f"{what}: argnums must be an int or a non-empty tuple of ints, found {argnums!r}."
        )
    for i in nums:
        if not -nargs <= i < nargs:
            raise ValueError(
                f"{what}: argnums={argnums!r} refers to argument {i}, but the function was "
                f"called with {nargs} positional argument(s)."
            )
    out = tuple(i % nargs for i in nums)
    if len(set(out)) != len(out):
        # _split_args would otherwise take the all-differentiated fast path and drop an argument
        raise ValueError(
            f"{what}: argnums={argnums!r} names the same argument twice (with {nargs} positional "
            f"argument(s)); list each argument once."
        )
    return out


@functools.lru_cache(maxsize=64)
def _all_differentiated_static(nargs: int) -> _Static:
    return _partition(((None,) * nargs, {}))[1]


def _split_args(args: tuple, kwargs: dict, argnums: tuple[int, ...]) -> tuple[tuple, tuple, Any]:
    """Differentiated args become arrays; the rest is partitioned into arrays and statics."""
    diff = tuple(_as_arrays(args[i]) for i in argnums)
    if not kwargs and len(argnums) == len(args):
        # Every argument differentiated (the common `grad(loss)(params)`): nothing to
        # partition, and a cached _Static keeps jit's static-argument comparison cheap.
        return diff, (), _all_differentiated_static(len(args))
    rest = tuple(None if i in argnums else a for i, a in enumerate(args))
    dynamic, static = _partition((rest, kwargs))
    return diff, tuple(dynamic), static


@functools.lru_cache(maxsize=256)
def _fast_jit(impl: Callable, fun: Callable, head: tuple, nargs: int) -> Callable:
    # Shared by every transform object made from the same (impl, fun, options): compiled once
    # per function and shape signature, however often grad(f) is rebuilt.
    static = _all_differentiated_static(nargs)
    return jax.jit(lambda *diff: impl(fun, *head, diff, (), static))


class _FastCalls:
    """The fast path of a transform built once (``grad(f)``, ``jacobian(f)``, ...).

    When every positional argument is differentiated, in order, no keyword is given and every
    leaf already is a ``jax.Array`` (or tracer) — ``grad(loss)(params)`` — there is nothing to
    partition: the call goes straight to one cached ``jax.jit`` with everything else bound, so
    jit's C++ dispatch is nearly the only per-call cost, as for the raw JAX composition.
    Anything else (and an unhashable ``fun``) takes the general path. Validation still
    happens, at trace time, inside ``impl``.
    """

    __slots__ = ("impl", "fun", "head", "argnums", "hashable", "last")

    def __init__(self, impl: Callable, fun: Callable, head: Callable, argnums: int | tuple):
        # head(key) -> the static arguments of impl between fun and diff, for argnums key
        self.impl, self.fun, self.argnums = impl, fun, argnums
        key = 0 if isinstance(argnums, int) else argnums
        self.head = head(key)
        self.hashable = is_hashable(fun)
        self.last: tuple[int, Callable] | None = None

    def applies(self, args: tuple, kwargs: dict) -> bool:
        if kwargs or not self.hashable:
            return False
        n = len(args)
        if isinstance(self.argnums, int):
            if n != 1 or self.argnums != 0:
                return False
        elif self.argnums != tuple(range(n)):
            return False
        return all(isinstance(x, jax.Array) for x in jax.tree_util.tree_leaves(args))

    def __call__(self, args: tuple) -> Any:
        n = len(args)
        last = self.last
        if last is None or last[0] != n:
            last = self.last = (n, _fast_jit(self.impl, self.fun, self.head, n))
        return last[1](*args)


@functools.lru_cache(maxsize=256)
def _bound_jit(impl: Callable, fun: Callable, statics: tuple) -> Callable:
    # jvp/vjp/linearize/hvp take fun per call: with fun and the options bound, jit's C++
    # dispatch hashes no static arguments, as for the raw composition jit(lambda: jvp(f, ...))
    return jax.jit(lambda *dyn: impl(fun, *dyn, *statics))


def _fast_call(fun: Callable, trees: tuple) -> bool:
    """The per-call fast path applies: a hashable ``fun`` and only ``jax.Array`` leaves (the
    general path converts other leaves and keys its jit on ``fun`` as a static argument)."""
    return is_hashable(fun) and all(
        isinstance(x, jax.Array) for x in jax.tree_util.tree_leaves(trees)
    )


def _rebuild(diff: tuple, dynamic: tuple, static: _Static, argnums: tuple[int, ...]):
    rest, kwargs = _combine(list(dynamic), static)
    args = list(rest)
    for i, d in zip(argnums, diff, strict=True):
        args[i] = d
    return tuple(args), kwargs


def _arg_names(fun: Callable, argnums: tuple[int, ...]) -> list[str]:
    """Names for error messages: the parameter's own name where the signature has one."""
    import inspect

    try:
        params = list(inspect.signature(fun).parameters.values())
    except (TypeError, ValueError):
        params = []
    positional = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    return [
        params[i].name if i < len(params) and params[i].kind in positional else f"args[{i}]"
        for i in argnums
    ]


def _check_diff_args(
    fun: Callable, diff: tuple, argnums: tuple[int, ...], allow_complex: bool = True
) -> None:
    for name, d in zip(_arg_names(fun, argnums), diff, strict=True):
        check_differentiable(d, name, allow_complex=allow_complex)


def _shape_struct(tree: PyTree) -> tuple:
    """A hashable (treedef, avals) description of a pytree, used as a static jit argument."""
    leaves, treedef = jax.tree_util.tree_flatten(tree)
    return treedef, tuple(jax.ShapeDtypeStruct(np.shape(x), jnp.result_type(x)) for x in leaves)


def _unstruct(struct: tuple) -> PyTree:
    treedef, leaves = struct
    return treedef.unflatten(list(leaves))


@functools.partial(jax.jit, static_argnums=(2, 3))
def _apply_linear(fn: Any, args: tuple, expected: tuple, names: tuple[str, str]) -> Any:
    check_same_shapes_dtypes(_unstruct(expected), args, *names)
    return fn(*args)


@jax.tree_util.register_pytree_node_class
class LinearFunction:
    """The linear map returned by :func:`vjp` (the pullback) and :func:`linearize` (the JVP).

    A pytree (its leaves are the residuals kept from the forward pass), so it can be passed
    through ``jax.jit`` like JAX's own. Each call runs compiled and checks its argument against
    the expected structure, shapes and dtypes (once per signature).
    """

    def __init__(self, fn: Any, expected: tuple, names: tuple[str, str]):
        self.fn, self.expected, self.names = fn, expected, names

    def __call__(self, *args: Any) -> Any:
        if len(args) != len(_unstruct(self.expected)):
            raise TypeError(
                f"This linear map takes {len(_unstruct(self.expected))} argument(s) "
                f"({self.names[1]}), found {len(args)}."
            )
        return _apply_linear(self.fn, args, self.expected, self.names)

    def tree_flatten(self):
        return (self.fn,), (self.expected, self.names)

    @classmethod
    def tree_unflatten(cls, aux, children):
        return cls(children[0], *aux)

    def __repr__(self) -> str:
        return f"LinearFunction({self.names[1]} -> ...)"


# --------------------------------------------------------------------------------------------
# JVP, VJP, linearize
# --------------------------------------------------------------------------------------------


def _as_tuple(seq: Any, name: str, what: str) -> tuple:
    if not isinstance(seq, (tuple, list)):
        raise TypeError(
            f"{what}: {name} must be a tuple or list with one entry per positional argument of "
            f"the function, found {type(seq).__name__}. Wrap a single argument as ({name[:-1]},)."
        )
    return tuple(seq)


def _check_jvp_inputs(primals: tuple, tangents: tuple) -> None:
    check_same_structure(primals, tangents, "primals", "tangents")
    flat_t = jax.tree_util.tree_leaves(tangents)
    for (path, p), t in zip(jax.tree_util.tree_flatten_with_path(primals)[0], flat_t, strict=True):
        dt = jnp.result_type(p)
        if not jnp.issubdtype(dt, jnp.inexact) and jnp.result_type(t) != jax.dtypes.float0:
            raise TypeError(
                f"primals{jax.tree_util.keystr(path)} has dtype {dt}, which has no derivative: "
                f"cast it to a float dtype, or pass the tangent "
                f"np.zeros({np.shape(p)}, jax.dtypes.float0) to hold it constant."
            )
    check_same_shapes_dtypes(primals, tangents, "primals", "tangents")


def _jvp_impl(fun, primals, tangents, has_aux):
    _check_jvp_inputs(primals, tangents)
    return jax.jvp(_aux_checked(fun, has_aux, "jvp"), primals, tangents, has_aux=has_aux)


_jvp_compiled = _compiled(_jvp_impl, static_argnums=(3,))


def jvp(fun: Callable, primals: Sequence[Any], tangents: Sequence[Any], has_aux: bool = False):
    """Forward mode: ``f(*primals)`` and its directional derivative ``J @ tangents``.

    Same signature and results as ``jax.jvp``, compiled once per shape signature.

    Cost: one forward-mode pass (~2-3 evaluations of ``f``), memory like ``f`` itself:
    nothing is stored for later.

    Args:
      fun: function of ``len(primals)`` positional arguments (pytrees of arrays).
      primals: tuple or list of the arguments.
      tangents: tuple or list of the same structure, shapes and dtypes (float0 for integer
        primals, which are held constant).
      has_aux: ``fun`` returns ``(out, aux)``; aux is returned undifferentiated.

    Returns:
      ``(primals_out, tangents_out)``, or ``(primals_out, tangents_out, aux)``.

    Raises:
      TypeError: ``primals``/``tangents`` are not tuples/lists, a dtype mismatch (naming the
        path), or an integer primal without a float0 tangent.
      ValueError: a pytree structure or shape mismatch, naming the first differing path.

    Example:
      >>> import chainrule as cr, jax.numpy as jnp
      >>> y, dy = cr.jvp(jnp.sin, (jnp.array(0.0),), (jnp.array(2.0),))
      >>> float(dy)
      2.0
    """
    if (
        type(primals) is tuple
        and type(tangents) is tuple
        and len(primals) == len(tangents)
        and _fast_call(fun, (primals, tangents))
    ):
        return _bound_jit(_jvp_impl, fun, (has_aux,))(primals, tangents)
    primals = _as_tuple(primals, "primals", "jvp")
    tangents = _as_tuple(tangents, "tangents", "jvp")
    if len(primals) != len(tangents):
        raise ValueError(
            f"jvp: got {len(primals)} primals but {len(tangents)} tangents; give one tangent per "
            f"primal, with the same structure, shape and dtype."
        )
    primals = _as_arrays(primals)
    tangents = _as_arrays(tangents)
    return _jvp_compiled(fun, primals, tangents, has_aux)


def _vjp_impl(fun, primals, has_aux):
    for i, p in enumerate(primals):
        check_differentiable(p, f"primals[{i}]")
    res = jax.vjp(_aux_checked(fun, has_aux, "vjp"), *primals, has_aux=has_aux)
    out, pullback = res[0], res[1]
    wrapped = LinearFunction(pullback, _shape_struct((out,)), ("primals_out", "cotangent"))
    return (out, wrapped, res[2]) if has_aux else (out, wrapped)


_vjp_compiled = _compiled(_vjp_impl, static_argnums=(2,))


def vjp(fun: Callable, *primals: Any, has_aux: bool = False):
    """Reverse mode: ``f(*primals)`` and its pullback ``ct -> ct @ J``.

    Same signature and results as ``jax.vjp``. The forward pass runs compiled and returns the
    pullback as a :class:`LinearFunction` holding the residuals; calling it runs the compiled
    backward pass.

    Cost: one forward pass that stores its residuals (memory grows with the depth of ``f``),
    then one reverse pass (~2-3 evaluations of ``f``) per cotangent.

    Args:
      fun: function of ``len(primals)`` positional arguments.
      *primals: the arguments, pytrees of floating (or complex) arrays.
      has_aux: ``fun`` returns ``(out, aux)``.

    Returns:
      ``(primals_out, vjp_fn)`` or ``(primals_out, vjp_fn, aux)``; ``vjp_fn(ct)`` returns a tuple
      with one cotangent per primal.

    Raises:
      TypeError: an integer or boolean leaf among the primals (naming its path), or a cotangent
        with the wrong dtype.
      ValueError: a cotangent with the wrong structure or shape (naming the path).

    Example:
      >>> import chainrule as cr, jax.numpy as jnp
      >>> y, pullback = cr.vjp(lambda x: x ** 2, jnp.array(3.0))
      >>> float(pullback(jnp.array(1.0))[0])
      6.0
    """
    if _fast_call(fun, primals):
        return _bound_jit(_vjp_impl, fun, (has_aux,))(primals)
    primals = tuple(_as_arrays(p) for p in primals)
    return _vjp_compiled(fun, primals, has_aux)


def _linearize_impl(fun, primals, has_aux):
    for i, p in enumerate(primals):
        check_differentiable(p, f"primals[{i}]")
    res = jax.linearize(_aux_checked(fun, has_aux, "linearize"), *primals, has_aux=has_aux)
    wrapped = LinearFunction(res[1], _shape_struct(primals), ("primals", "tangents"))
    return (res[0], wrapped, res[2]) if has_aux else (res[0], wrapped)


_linearize_compiled = _compiled(_linearize_impl, static_argnums=(2,))


def linearize(fun: Callable, *primals: Any, has_aux: bool = False):
    """``f(*primals)`` and the JVP as a linear function of the tangents, evaluated once.

    Same results as ``jax.linearize``. Use it when pushing many tangents through the same point:
    the nonlinear work is done once, each later JVP is only the linear part.

    Cost: one forward-mode pass up front that stores the linearization's residuals (like a
    VJP's), then one linear pass (~1-2 evaluations of ``f``) per tangent.

    Args:
      fun: function of ``len(primals)`` positional arguments.
      *primals: the point, pytrees of floating arrays.
      has_aux: ``fun`` returns ``(out, aux)``.

    Returns:
      ``(primals_out, f_jvp)`` or ``(primals_out, f_jvp, aux)``; ``f_jvp(*tangents)`` returns the
      output tangent.

    Raises:
      TypeError: an integer or boolean primal leaf, or tangents of the wrong dtype.
      ValueError: tangents of the wrong structure or shape.

    Example:
      >>> import chainrule as cr, jax.numpy as jnp
      >>> y, f_jvp = cr.linearize(jnp.sin, jnp.array(0.0))
      >>> float(f_jvp(jnp.array(3.0)))
      3.0
    """
    if _fast_call(fun, primals):
        return _bound_jit(_linearize_impl, fun, (has_aux,))(primals)
    primals = tuple(_as_arrays(p) for p in primals)
    return _linearize_compiled(fun, primals, has_aux)


# --------------------------------------------------------------------------------------------
# grad, value_and_grad
# --------------------------------------------------------------------------------------------


def _scalar_checked(fun: Callable, has_aux: bool, what: str, holomorphic: bool = False):
    def wrapped(*args, **kwargs):
        out = fun(*args, **kwargs)
        if has_aux:
            if not (isinstance(out, tuple) and len(out) == 2):
                raise TypeError(
                    f"{what} with has_aux=True needs the function to return a pair "
                    f"(scalar, aux); it returned {type(out).__name__}."
                )
            value = out[0]
            _check_aux(out[1], what)
        else:
            value = out
        if not holomorphic:
            check_scalar_output(value, what, fun)
        return out

    return wrapped


def _aux_checked(fun: Callable, has_aux: bool, what: str) -> Callable:
    """``fun`` with its aux output checked by :func:`_check_aux` (``fun`` itself without aux)."""
    if not has_aux:
        return fun

    def wrapped(*args, **kwargs):
        out = fun(*args, **kwargs)
        if isinstance(out, tuple) and len(out) == 2:
            _check_aux(out[1], what)
        return out  # a malformed pair is left to JAX's own message

    return wrapped


def _check_aux(aux: PyTree, what: str) -> None:
    """Name a leaf of ``aux`` that a jit-compiled function cannot return (a string, an object):
    JAX's own message points into chainrule's internals."""
    for path, leaf in jax.tree_util.tree_flatten_with_path(aux)[0]:
        if not (isinstance(leaf, (jax.Array, np.ndarray, np.generic, bool, int, float, complex))):
            raise TypeError(
                f"{what} with has_aux=True: aux{jax.tree_util.keystr(path)} is a "
                f"{type(leaf).__name__}; chainrule's transforms are jit-compiled, so aux may "
                f"hold only arrays and numbers. Return other values outside the differentiated "
                f"function (or use jax.{what}, which is not compiled)."
            )


def _value_and_grad_call(fun, argnums, has_aux, holomorphic, args, kwargs):
    nums = _normalize_argnums(argnums, len(args), "grad")
    diff, dynamic, static = _split_args(args, kwargs, nums)
    key = nums if not isinstance(argnums, int) else nums[0]
    return _vg_compiled(fun, key, has_aux, holomorphic, diff, dynamic, static)


def _vg_impl(fun, argnums, has_aux, holomorphic, diff, dynamic, static):
    nums = (argnums,) if isinstance(argnums, int) else argnums
    _check_diff_args(fun, diff, nums, allow_complex=True)
    args, kwargs = _rebuild(diff, dynamic, static, nums)
    checked = _scalar_checked(fun, has_aux, "grad", holomorphic)
    return jax.value_and_grad(checked, argnums, has_aux=has_aux, holomorphic=holomorphic)(
        *args, **kwargs
    )


_vg_compiled = _compiled(_vg_impl, static_argnums=(1, 2, 3, 6))


def _g_impl(fun, argnums, has_aux, holomorphic, diff, dynamic, static):
    # Its own executable, so that grad does not return (and transfer) the value it drops.
    (value, g) = _vg_impl(fun, argnums, has_aux, holomorphic, diff, dynamic, static)
    return (g, value[1]) if has_aux else g


_g_compiled = _compiled(_g_impl, static_argnums=(1, 2, 3, 6))


def value_and_grad(
    fun: Callable,
    argnums: int | Sequence[int] = 0,
    has_aux: bool = False,
    holomorphic: bool = False,
) -> Callable:
    """The value of a scalar function and its gradient, compiled; ``jax.value_and_grad``'s API.

    Cost: one forward pass storing residuals, then one reverse pass: ~3-4 evaluations of
    ``fun`` in all, independent of the number of parameters.

    Args:
      fun: scalar-valued function (real scalar output; complex with ``holomorphic=True``).
      argnums: which positional argument(s) to differentiate.
      has_aux: ``fun`` returns ``(value, aux)``.
      holomorphic: ``fun`` is holomorphic in complex inputs.

    Returns:
      A function with ``fun``'s signature returning ``(value, grad)`` or
      ``((value, aux), grad)``; ``grad`` has the structure of ``args[argnums]`` (a tuple of them
      for a tuple ``argnums``).

    Raises:
      TypeError: a non-scalar or integer output, an integer/boolean leaf among the
        differentiated arguments (naming ``args[i]...``), a bad ``argnums``.
      ValueError: ``argnums`` out of range for the call.

    Example:
      >>> import chainrule as cr, jax.numpy as jnp
      >>> v, g = cr.value_and_grad(lambda w: jnp.sum(w ** 2))(jnp.array([1.0, 2.0]))
      >>> float(v), g.tolist()
      (5.0, [2.0, 4.0])
    """
    argnums = _canonical_argnums(argnums, "value_and_grad")

    fast = _FastCalls(_vg_impl, fun, lambda key: (key, has_aux, holomorphic), argnums)

    @functools.wraps(fun)
    def value_and_grad_fn(*args: Any, **kwargs: Any):
        if fast.applies(args, kwargs):
            return fast(args)
        return _value_and_grad_call(fun, argnums, has_aux, holomorphic, args, kwargs)

    return value_and_grad_fn


def grad(
    fun: Callable,
    argnums: int | Sequence[int] = 0,
    has_aux: bool = False,
    holomorphic: bool = False,
) -> Callable:
    """The gradient of a scalar function, compiled; ``jax.grad``'s API.

    Cost: one forward pass storing residuals plus one reverse pass (~3-4 evaluations of
    ``fun``), whatever the number of parameters.

    Args:
      fun: scalar-valued function.
      argnums: which positional argument(s) to differentiate.
      has_aux: ``fun`` returns ``(value, aux)``; the result is then ``(grad, aux)``.
      holomorphic: ``fun`` is holomorphic in complex inputs.

    Returns:
      A function with ``fun``'s signature returning the gradient (or ``(grad, aux)``).

    Raises:
      TypeError: a non-scalar output, an integer/boolean differentiated leaf (naming its path).
      ValueError: ``argnums`` out of range.

    Example:
      >>> import chainrule as cr, jax.numpy as jnp
      >>> cr.grad(lambda p: jnp.sum(p["w"] ** 2))({"w": jnp.array([1.0, -1.0])})["w"].tolist()
      [2.0, -2.0]
    """
    argnums = _canonical_argnums(argnums, "grad")
    fast = _FastCalls(_g_impl, fun, lambda key: (key, has_aux, holomorphic), argnums)

    @functools.wraps(fun)
    def grad_fn(*args: Any, **kwargs: Any):
        if fast.applies(args, kwargs):
            return fast(args)
        nums = _normalize_argnums(argnums, len(args), "grad")
        diff, dynamic, static = _split_args(args, kwargs, nums)
        key = nums if not isinstance(argnums, int) else nums[0]
        return _g_compiled(fun, key, has_aux, holomorphic, diff, dynamic, static)

    return grad_fn


# --------------------------------------------------------------------------------------------
# Jacobians
# --------------------------------------------------------------------------------------------


def _choose_mode(n_in: int, n_out: int) -> str:
    """Forward mode when the input is smaller than the output (N < M): N passes beat M."""
    return "fwd" if n_in < n_out else "rev"


def _size(tree: PyTree) -> int:
    return int(
        sum(
            np.size(x) if not hasattr(x, "shape") else int(np.prod(x.shape))
            for x in jax.tree_util.tree_leaves(tree)
        )
    )


def _assemble_fwd(cols: PyTree, dyn: PyTree) -> PyTree:
    """cols: output pytree whose leaves carry a leading axis over the N input scalars."""
    in_leaves, in_def = jax.tree_util.tree_flatten(dyn)
    sizes = [int(np.prod(np.shape(x))) for x in in_leaves]
    splits = np.cumsum(sizes)[:-1].tolist()

    def per_out(col):
        oshape = col.shape[1:]
        pieces = jnp.split(col, splits, axis=0) if splits else [col]
        out = []
        for piece, leaf in zip(pieces, in_leaves, strict=True):
            ishape = np.shape(leaf)
            piece = piece.reshape(ishape + oshape)
            out.append(
                jnp.moveaxis(
                    piece,
                    tuple(range(len(ishape))),
                    tuple(range(len(oshape), len(oshape) + len(ishape))),
                )
            )
        return in_def.unflatten(out)

    return jax.tree.map(per_out, cols)


def _assemble_rev(rows: PyTree, out_example: PyTree) -> PyTree:
    """rows: input pytree whose leaves carry a leading axis over the M output scalars."""
    out_leaves, out_def = jax.tree_util.tree_flatten(out_example)
    sizes = [int(np.prod(np.shape(x))) for x in out_leaves]
    splits = np.cumsum(sizes)[:-1].tolist()
    in_leaves, in_def = jax.tree_util.tree_flatten(rows)
    per_in = []
    for row in in_leaves:
        ishape = row.shape[1:]
        pieces = jnp.split(row, splits, axis=0) if splits else [row]
        per_in.append(
            [p.reshape(np.shape(o) + ishape) for p, o in zip(pieces, out_leaves, strict=True)]
        )
    return out_def.unflatten(
        [
            in_def.unflatten([per_in[i][j] for i in range(len(in_leaves))])
            for j in range(len(out_leaves))
        ]
    )


def _one_hot(i: jax.Array, n: int, dtype: Any) -> jax.Array:
    return (jnp.arange(n) == i).astype(dtype)


def _is_real(dt: Any) -> bool:
    return jnp.issubdtype(dt, jnp.floating)


def _auto_mode(dyn: PyTree, out: PyTree, holomorphic: bool) -> str:
    """:func:`_choose_mode` by sizes, unless only one mode exists for these dtypes.

    As in ``jax.jacfwd``/``jax.jacrev``, without ``holomorphic`` forward mode needs real
    inputs and reverse mode real floating outputs: a real-to-complex (or integer-output)
    function has only a forward Jacobian, a complex-to-real one only a reverse Jacobian.
    """
    if not holomorphic:
        complex_in = any(not _is_real(jnp.result_type(x)) for x in jax.tree_util.tree_leaves(dyn))
        nonreal_out = any(not _is_real(x.dtype) for x in jax.tree_util.tree_leaves(out))
        if complex_in and not nonreal_out:
            return "rev"
        if nonreal_out and not complex_in:
            return "fwd"
    return _choose_mode(_size(dyn), _size(out))


def _check_jac_dtypes(dyn: PyTree, out: PyTree, mode: str, holomorphic: bool) -> None:
    """The dtype rules of ``jax.jacfwd``/``jax.jacrev`` for the chunked path, which calls
    ``jax.linearize``/``jax.vjp`` directly: they accept what the Jacobian transforms reject and
    would return a wrong Jacobian (e.g. only the real part for a complex output)."""
    if holomorphic:
        for name, tree in (("input", dyn), ("output", out)):
            for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
                dt = jnp.result_type(leaf)
                if not jnp.issubdtype(dt, jnp.complexfloating):
                    raise TypeError(
                        f"jacobian with holomorphic=True needs complex inputs and outputs; "
                        f"{name}{jax.tree_util.keystr(path)} has dtype {dt}. Cast it to a "
                        f"complex dtype, or drop holomorphic=True."
                    )
    elif mode == "rev":
        for path, leaf in jax.tree_util.tree_flatten_with_path(out)[0]:
            dt = jnp.result_type(leaf)
            if not _is_real(dt):
                raise TypeError(
                    f"jacobian mode 'rev' needs real floating outputs; "
                    f"output{jax.tree_util.keystr(path)} has dtype {dt}. Use mode='fwd' (or "
                    f"'auto'), or holomorphic=True for a holomorphic complex function."
                )


def _jac_chunked(g, dyn, mode, chunk_size, has_aux, holomorphic=False):
    """Jacobian of ``g(dyn)`` pushing the standard basis through in chunks of ``chunk_size``.

    Forward: linearize once (one primal pass), then map the linear map over the N basis
    vectors, ``chunk_size`` at a time (vmapped within a chunk). Reverse: one VJP, then the
    pullback over the M output basis vectors in chunks. Peak extra memory is one chunk of the
    Jacobian plus the residuals, instead of the whole basis at once.
    """
    if mode == "fwd":
        res = jax.linearize(g, dyn, has_aux=has_aux)
        out, f_lin = res[0], res[1]
        _check_jac_dtypes(dyn, out, mode, holomorphic)
        flat, unravel = ravel_pytree(dyn)
        n = flat.size
        cols = map_chunked(
            lambda i: f_lin(unravel(_one_hot(i, n, flat.dtype))), jnp.arange(n), n, chunk_size
        )
        # integer/boolean outputs have float0 tangents: their Jacobian is zero, in the output's
        # dtype, as jax.jacfwd returns it
        cols = jax.tree.map(
            lambda c, o: jnp.zeros(c.shape, o.dtype) if c.dtype == jax.dtypes.float0 else c,
            cols,
            out,
        )
        jac = _assemble_fwd(cols, dyn)
    else:
        res = jax.vjp(g, dyn, has_aux=has_aux)
        out, pullback = res[0], res[1]
        _check_jac_dtypes(dyn, out, mode, holomorphic)
        if not jax.tree_util.tree_leaves(out):  # no output: nothing to pull back
            return (out, res[2]) if has_aux else out
        flat, unravel = ravel_pytree(out)
        m = flat.size
        rows = map_chunked(
            lambda k: pullback(unravel(_one_hot(k, m, flat.dtype)))[0],
            jnp.arange(m),
            m,
            chunk_size,
        )
        jac = _assemble_rev(rows, out)
    return (jac, res[2]) if has_aux else jac


def _jacobian_impl(fun, mode, argnums, chunk_size, has_aux, holomorphic, diff, dynamic, static):
    nums = (argnums,) if isinstance(argnums, int) else argnums

    def g(d):
        d = (d,) if isinstance(argnums, int) else d
        args, kwargs = _rebuild(d, dynamic, static, nums)
        return fun(*args, **kwargs)

    g = _aux_checked(g, has_aux, "jacobian")
    dyn = diff[0] if isinstance(argnums, int) else diff
    if not jax.tree_util.tree_leaves(dyn):
        # Nothing to differentiate (e.g. an empty dict): jax.jacfwd/jacrev fail to ravel no
        # leaves. The Jacobian is the output's pytree, each leaf replaced by the empty input.
        res = g(dyn)
        jac = jax.tree.map(lambda _: dyn, res[0] if has_aux else res)
        return (jac, res[1]) if has_aux else jac
    out_shape = jax.eval_shape(g, dyn)  # at trace time only: the program is cached
    out_shape = out_shape[0] if has_aux else out_shape
    if mode == "auto":
        mode = _auto_mode(dyn, out_shape, holomorphic)
    _check_diff_args(fun, diff, nums, allow_complex=holomorphic or mode == "rev")
    out_leaves = jax.tree_util.tree_leaves(out_shape)
    if (
        chunk_size is None
        and out_leaves
        and all(jnp.issubdtype(leaf.dtype, jnp.inexact) for leaf in out_leaves)
    ):
        transform = jax.jacfwd if mode == "fwd" else jax.jacrev
        return transform(g, has_aux=has_aux, holomorphic=holomorphic)(dyn)
    # Integer/boolean outputs: jax.jacfwd crashes on them inside JAX (jax 0.10), jax.jacrev
    # names no output; an output without leaves ({} or ()): jax.jacrev fails to ravel it. The
    # chunked path gives zeros (forward, as jacfwd means to), an error naming the output leaf
    # (reverse), or the empty output. chunk_size=None is one chunk.
    return _jac_chunked(g, dyn, mode, chunk_size, has_aux, holomorphic)


_jacobian_compiled = _compiled(_jacobian_impl, static_argnums=(1, 2, 3, 4, 5, 8))


def _check_chunk_size(chunk_size: int | None) -> int | None:
    """``chunk_size`` as None or a positive Python int (``np.int64`` accepted)."""
    if chunk_size is not None and (
        not isinstance(chunk_size, (int, np.integer))
        or isinstance(chunk_size, bool)
        or chunk_size < 1
    ):
        raise ValueError(f"chunk_size must be None or a positive integer, found {chunk_size!r}.")
    return None if chunk_size is None else int(chunk_size)


def jacobian(
    fun: Callable,
    mode: str = "auto",
    argnums: int | Sequence[int] = 0,
    chunk_size: int | None = None,
    has_aux: bool = False,
    holomorphic: bool = False,
) -> Callable:
    """The Jacobian of ``fun`` by forward or reverse mode, optionally in bounded memory.

    For ``f: R^N -> R^M`` (N = scalars in the differentiated arguments, M = scalars in the
    output) the Jacobian costs N forward-mode passes (``"fwd"``, ``jax.jacfwd``) or M reverse-mode
    passes (``"rev"``, ``jax.jacrev``). ``"auto"`` picks forward mode when N < M and reverse mode
    otherwise (at N == M reverse wins on the tie: it shares one primal pass). The choice is made
    from shapes at trace time, so it costs nothing per call.

    ``chunk_size`` bounds memory: the N (or M) basis vectors go through ``chunk_size`` at a time
    (``lax.map`` over chunks, ``vmap`` within one), so the working set is one chunk rather than
    the whole basis; ``jax.jacfwd``/``jacrev`` push the whole basis at once. Forward chunks
    re-use one linearization, so the primal runs once either way.

    Args:
      fun: function of pytrees of arrays.
      mode: ``"auto"``, ``"fwd"`` or ``"rev"``.
      argnums: positional argument(s) to differentiate.
      chunk_size: basis vectors per chunk, or None for all at once.
      has_aux: ``fun`` returns ``(out, aux)``; the result is then ``(jac, aux)``.
      holomorphic: ``fun`` is holomorphic in complex inputs.

    Returns:
      A function with ``fun``'s signature returning the Jacobian with ``jax.jacfwd``'s layout:
      the output's pytree, each leaf replaced by the input's pytree, leaf shapes
      ``out_shape + in_shape``.

    Raises:
      ValueError: an unknown ``mode`` (listing the valid ones), a bad ``chunk_size``.
      TypeError: an integer/boolean input leaf (naming its path); as in ``jax.jacfwd`` /
        ``jax.jacrev``, without ``holomorphic`` a complex input in forward mode or a complex
        or integer output in reverse mode (``"auto"`` picks the mode that exists).

    Example:
      >>> import chainrule as cr, jax.numpy as jnp
      >>> J = cr.jacobian(lambda x: jnp.stack([x[0] * x[1], x[1]]))(jnp.array([2.0, 3.0]))
      >>> J.tolist()
      [[3.0, 2.0], [0.0, 1.0]]
    """
    check_choice(mode, JACOBIAN_MODES, "jacobian mode")
    chunk_size = _check_chunk_size(chunk_size)
    argnums = _canonical_argnums(argnums, "jacobian")

    fast = _FastCalls(
        _jacobian_impl, fun, lambda key: (mode, key, chunk_size, has_aux, holomorphic), argnums
    )

    @functools.wraps(fun)
    def jacobian_fn(*args: Any, **kwargs: Any):
        if fast.applies(args, kwargs):
            return fast(args)
        nums = _normalize_argnums(argnums, len(args), "jacobian")
        diff, dynamic, static = _split_args(args, kwargs, nums)
        key = nums[0] if isinstance(argnums, int) else nums
        return _jacobian_compiled(
            fun, mode, key, chunk_size, has_aux, holomorphic, diff, dynamic, static
        )

    return jacobian_fn


# --------------------------------------------------------------------------------------------
# Second order: HVPs and Hessians
# --------------------------------------------------------------------------------------------


def _hvp_raw(f: Callable, x: PyTree, v: PyTree, mode: str) -> PyTree:
    if mode == "fwd-over-rev":
        return jax.jvp(jax.grad(f), (x,), (v,))[1]
    if mode == "rev-over-rev":
        return jax.vjp(jax.grad(f), x)[1](v)[0]
    return jax.grad(lambda y: jax.jvp(f, (y,), (v,))[1])(x)


def _check_hvp_inputs(x: PyTree, v: PyTree, name_v: str = "v") -> None:
    check_differentiable(x, "x", allow_complex=False)
    check_same_shapes_dtypes(x, v, "x", name_v, allow_float0=False)


def _hvp_impl(fun, x, v, mode):
    _check_hvp_inputs(x, v)
    return _hvp_raw(_scalar_checked(fun, False, "hvp"), x, v, mode)


_hvp_compiled = _compiled(_hvp_impl, static_argnums=(3,))


def hvp(fun: Callable, x: PyTree, v: PyTree, mode: str = "fwd-over-rev") -> PyTree:
    """Hessian-vector product ``H(x) @ v`` of a scalar function of a pytree.

    The three compositions give the same result (up to rounding) at different cost:

    * ``"fwd-over-rev"`` (default): ``jvp(grad(f), x, v)``. One forward-over-reverse pass,
      ~4-5 evaluations of ``f`` (an MLP layer costs ~9 matmuls against the forward's 1... per
      layer: 1 forward, 2 backward, and their tangents); memory of one gradient.
    * ``"rev-over-rev"``: ``vjp(grad(f), x)(v)``. Reverse over reverse: stores the residuals of
      the gradient computation as well, so more memory for the same FLOPs.
    * ``"rev-over-fwd"``: ``grad(x -> jvp(f, x, v))``. Similar cost to fwd-over-rev; stores the
      residuals of the JVP.

    Args:
      fun: real scalar function of one pytree argument.
      x: the point (pytree of real floating arrays).
      v: the direction, with ``x``'s structure, shapes and dtypes.
      mode: one of ``"fwd-over-rev"``, ``"rev-over-rev"``, ``"rev-over-fwd"``.

    Returns:
      A pytree shaped like ``x``.

    Raises:
      ValueError: an unknown ``mode``; ``v``'s structure or shapes differ from ``x``'s.
      TypeError: a non-scalar ``fun``, an integer or complex leaf in ``x``, a dtype mismatch.

    Example:
      >>> import chainrule as cr, jax.numpy as jnp
      >>> cr.hvp(lambda x: jnp.sum(x ** 3), jnp.array([1.0, 2.0]), jnp.array([1.0, 0.0])).tolist()
      [6.0, 0.0]
    """
    if mode in HVP_MODES and _fast_call(fun, (x, v)):
        return _bound_jit(_hvp_impl, fun, (mode,))(x, v)
    check_choice(mode, HVP_MODES, "hvp mode")
    x = _as_arrays(x)
    v = _as_arrays(v)
    return _hvp_compiled(fun, x, v, mode)


def _hvp_batched_impl(fun, x, vs, mode, chunk_size):
    check_differentiable(x, "x", allow_complex=False)
    # one direction's shapes, without indexing (there may be K = 0 directions)
    v0 = jax.tree.map(lambda t: jnp.zeros(t.shape[1:], t.dtype), vs)
    check_same_shapes_dtypes(x, v0, "x", "vs[i]", allow_float0=False)
    f = _scalar_checked(fun, False, "hvp_batched")
    one = functools.partial(_hvp_raw, f, x, mode=mode)
    leaves = jax.tree_util.tree_leaves(vs)
    if not leaves:  # nothing to differentiate: an empty pytree per direction, i.e. vs itself
        f(x)  # still check that fun is a scalar function
        return vs
    if chunk_size is None:
        return jax.vmap(one)(vs)
    return map_chunked(one, vs, leaves[0].shape[0], chunk_size)


_hvp_batched_compiled = _compiled(_hvp_batched_impl, static_argnums=(3, 4))


def hvp_batched(
    fun: Callable,
    x: PyTree,
    vs: PyTree,
    mode: str = "fwd-over-rev",
    chunk_size: int | None = None,
) -> PyTree:
    """Hessian times many vectors (a Hessian-matrix product), ``[H(x) @ v_k for k]``.

    ``vs`` holds K directions stacked on a leading axis of every leaf. With ``chunk_size=None``
    the K HVPs are vmapped (the gradient's primal work is shared across them); otherwise they
    run ``chunk_size`` at a time to bound memory.

    Cost: K HVPs, i.e. K forward-over-reverse passes (~4-5 evaluations of ``f`` each, fewer in
    practice since the primal is shared under vmap).

    Args:
      fun: real scalar function of one pytree argument.
      x: the point.
      vs: directions: ``x``'s structure with an extra leading axis of size K on every leaf.
      mode: the HVP composition, as in :func:`hvp`.
      chunk_size: directions per chunk, or None for all K at once.

    Returns:
      A pytree like ``vs`` (leading axis K).

    Raises:
      ValueError: unknown mode, bad chunk size, mismatched structure/shapes, or leaves of ``vs``
        with different leading sizes.
      TypeError: as for :func:`hvp`.

    Example:
      >>> import chainrule as cr, jax.numpy as jnp
      >>> cr.hvp_batched(lambda x: jnp.sum(x ** 2), jnp.ones(2), jnp.eye(2)).tolist()
      [[2.0, 0.0], [0.0, 2.0]]
    """
    check_choice(mode, HVP_MODES, "hvp mode")
    chunk_size = _check_chunk_size(chunk_size)
    x = _as_arrays(x)
    vs = _as_arrays(vs)
    leaves = jax.tree_util.tree_flatten_with_path(vs)[0]
    sizes = {np.shape(leaf)[0] if np.ndim(leaf) else None for _, leaf in leaves}
    if None in sizes or len(sizes) > 1:
        desc = ", ".join(f"vs{jax.tree_util.keystr(p)}: {np.shape(leaf)}" for p, leaf in leaves)
        raise ValueError(
            "hvp_batched: every leaf of vs needs the same leading (batch) axis on top of x's "
            f"leaf shape; found {desc}."
        )
    return _hvp_batched_compiled(fun, x, vs, mode, chunk_size)


def _hessian_impl(fun, argnums, chunk_size, diff, dynamic, static):
    nums = (argnums,) if isinstance(argnums, int) else argnums
    _check_diff_args(fun, diff, nums, allow_complex=False)

    def f(d):
        d = (d,) if isinstance(argnums, int) else d
        args, kwargs = _rebuild(d, dynamic, static, nums)
        return fun(*args, **kwargs)

    f = _scalar_checked(f, False, "hessian")
    dyn = diff[0] if isinstance(argnums, int) else diff
    if not jax.tree_util.tree_leaves(dyn):
        # nothing to differentiate: jax.hessian fails to ravel no leaves; H is as empty as dyn
        f(dyn)
        return dyn
    if chunk_size is None:
        return jax.jacfwd(jax.grad(f))(dyn)
    # H's columns are HVPs with the basis vectors: linearize grad(f) once (fwd-over-rev) and
    # push the basis through it chunk by chunk.
    return _jac_chunked(jax.grad(f), dyn, "fwd", chunk_size, False)


_hessian_compiled = _compiled(_hessian_impl, static_argnums=(1, 2, 5))


def hessian(
    fun: Callable, argnums: int | Sequence[int] = 0, chunk_size: int | None = None
) -> Callable:
    """The dense Hessian of a scalar function, built from forward-over-reverse HVPs.

    Column j of H is the HVP with the j-th basis vector: the whole basis at once
    (``chunk_size=None``, what ``jax.hessian`` does) or ``chunk_size`` columns at a time from a
    single linearization of the gradient (bounded memory, the same FLOPs).

    Cost: N forward-over-reverse passes for N differentiated scalars (~4-5 N evaluations of
    ``f``); memory N^2 for the result.

    Args:
      fun: real scalar function.
      argnums: positional argument(s) to differentiate.
      chunk_size: basis vectors per chunk, or None for all at once.

    Returns:
      A function with ``fun``'s signature returning H in ``jax.hessian``'s layout (input pytree
      of input pytrees, leaf shapes ``shape_i + shape_j``).

    Raises:
      TypeError: a non-scalar ``fun``, an integer/complex differentiated leaf.
      ValueError: a bad ``chunk_size`` or ``argnums``.

    Example:
      >>> import chainrule as cr, jax.numpy as jnp
      >>> cr.hessian(lambda x: x[0] ** 2 * x[1])(jnp.array([1.0, 2.0])).tolist()
      [[4.0, 2.0], [2.0, 0.0]]
    """
    chunk_size = _check_chunk_size(chunk_size)
    argnums = _canonical_argnums(argnums, "hessian")
    fast = _FastCalls(_hessian_impl, fun, lambda key: (key, chunk_size), argnums)

    @functools.wraps(fun)
    def hessian_fn(*args: Any, **kwargs: Any):
        if fast.applies(args, kwargs):
            return fast(args)
        nums = _normalize_argnums(argnums, len(args), "hessian")
        diff, dynamic, static = _split_args(args, kwargs, nums)
        key = nums[0] if isinstance(argnums, int) else nums
        return _hessian_compiled(fun, key, chunk_size, diff, dynamic, static)

    return hessian_fn
