"""Forward, reverse and mixed-mode differentiation: the AD core.

Every transform here returns, at every call, what the JAX composition it wraps (``jax.jvp``,
``jax.vjp``, ``jax.grad``, ``jax.jacfwd`` ...) returns for the function **as it is at that
call**: a function that reads a global, a mutable container, an object attribute or a NumPy
array changed in place is read afresh every time, as by JAX's own eager transforms.

How it is fast without going stale (``chainrule._jit``): each call traces the composition to a
jaxpr (what JAX's eager transforms also do, op by op), fingerprints the traced program and runs
a compiled executable when that exact program was seen before. Arrays the function closes over
(the batch in ``lambda p: loss(p, x)``) are arguments of the program, not part of it, so a fresh
closure over a new batch reuses the executable, and nothing holds the closure afterwards. No
module-level structure holds a user's function; the bounded program cache is emptied by
:func:`chainrule.clear_caches`. Inside the user's ``jax.jit`` / ``jax.vmap`` a transform is the
plain JAX composition, traced once by the outer transform.

Input validation runs on every call, before or while tracing. It names the pytree path of a bad
leaf (``params['layers'][3]['w']``), what was expected and what was found, and how to fix it;
tracebacks skip chainrule's own frames (as JAX's and equinox's do), so they end at the user's
line.

Costs are stated in passes of ``f``: a forward-mode pass (JVP) or a reverse-mode pass (VJP) each
cost a small constant (~2-3x) times one evaluation of ``f``; a reverse pass also stores the
residuals of the forward pass. For ``f: R^N -> R^M`` a full Jacobian costs N forward passes or M
reverse passes; a Hessian-vector product costs one forward-over-reverse pass (~4-5x ``f``).

Non-differentiated arguments reach the function as given (a Python number stays a Python
number, a NumPy array a NumPy array), as with ``jax.grad``; differentiated ones become arrays.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax._src import traceback_util
from jax.flatten_util import ravel_pytree

from chainrule import _jit
from chainrule._rules import HVP_MODES, hvp_rule
from chainrule._tree import (
    check_choice,
    check_differentiable,
    check_same_shapes_dtypes,
    check_same_structure,
    check_scalar_output,
    map_chunked,
)

# Errors raised in here point at the user's call, not at chainrule's frames.
traceback_util.register_exclusion(__file__)
_api_boundary = traceback_util.api_boundary

PyTree = Any

__all__ = [
    "JACOBIAN_MODES",
    "HVP_MODES",
    "LinearFunction",
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


# --------------------------------------------------------------------------------------------
# Arguments: differentiated ones become arrays, the rest reach the function as given.
# --------------------------------------------------------------------------------------------

_ARRAY_TYPES = (jax.Array, np.ndarray, np.generic, int, float, complex)


def _check_bool(value: Any, name: str, what: str) -> None:
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{what}: {name} must be True or False, found {value!r}.")


def _as_arrays(tree: PyTree, name: str, what: str) -> PyTree:
    """The leaves of a differentiated argument as arrays; a leaf that is no array is an error.

    ``jnp.asarray`` returns a ``jax.Array`` unchanged but costs ~8 us a leaf in Python: leaves
    that already are arrays skip it.
    """
    leaves, treedef = jax.tree_util.tree_flatten(tree)
    if all(isinstance(x, jax.Array) for x in leaves):
        return tree
    for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
        if not isinstance(leaf, _ARRAY_TYPES) or isinstance(leaf, (str, bytes)):
            raise TypeError(
                f"{what}: {name}{jax.tree_util.keystr(path)} is a {type(leaf).__name__} "
                f"({_short_repr(leaf)}), not an array: only arrays can be differentiated. Split "
                f"the model into its arrays and the rest and differentiate the arrays only, "
                f"e.g. `params, static = equinox.partition(model, equinox.is_inexact_array)` "
                f"and `lambda p: loss(equinox.combine(p, static))`, or "
                f"`graphdef, params = flax.nnx.split(model)` and "
                f"`lambda p: loss(flax.nnx.merge(graphdef, p))`; or pass the value as a "
                f"non-differentiated argument (argnums)."
            )
    return treedef.unflatten([x if isinstance(x, jax.Array) else jnp.asarray(x) for x in leaves])


def _short_repr(x: Any) -> str:
    r = repr(x)
    return r if len(r) <= 60 else r[:57] + "..."


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


def _bind(fun: Callable, args: tuple, kwargs: dict, argnums: tuple[int, ...]) -> Callable:
    """``d -> fun(*args with args[argnums] = d, **kwargs)``: non-differentiated arguments are
    closed over, so they reach ``fun`` exactly as the caller gave them (as in ``jax.grad``);
    the arrays among them become arguments of the compiled program, not constants in it."""

    def bound(*diff):
        full = list(args)
        for i, d in zip(argnums, diff, strict=True):
            full[i] = d
        return fun(*full, **kwargs)

    bound.__name__ = getattr(fun, "__name__", type(fun).__name__)  # for error messages
    return bound


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


def _shape_struct(tree: PyTree) -> tuple:
    """A hashable (treedef, avals) description of a pytree, used as a static jit argument."""
    leaves, treedef = jax.tree_util.tree_flatten(tree)
    return treedef, tuple(jax.ShapeDtypeStruct(np.shape(x), jnp.result_type(x)) for x in leaves)


def _unstruct(struct: tuple) -> PyTree:
    treedef, leaves = struct
    return treedef.unflatten(list(leaves))


def _apply_linear(fn: Any, args: tuple, expected: tuple, names: tuple[str, str]) -> Any:
    check_same_shapes_dtypes(_unstruct(expected), args, *names)
    return fn(*args)


def _check_diff_args(
    names: Callable, diff: tuple, nums: tuple[int, ...], allow_complex: bool = True
) -> None:
    try:
        for i, d in zip(nums, diff, strict=True):
            check_differentiable(d, f"args[{i}]", allow_complex=allow_complex)
    except TypeError:
        # the same check again, naming the parameter as the function's signature does
        for name, d in zip(names(nums), diff, strict=True):
            check_differentiable(d, name, allow_complex=allow_complex)
        raise


@jax.tree_util.register_pytree_node_class
class LinearFunction:
    """The linear map returned by :func:`vjp` (the pullback) and :func:`linearize` (the JVP).

    A pytree (its leaves are the residuals kept from the forward pass), so it can be passed
    through ``jax.jit`` like JAX's own. Each call checks its argument against the expected
    structure, shapes and dtypes, then runs JAX's own linear function on it (eagerly, as
    ``jax.vjp``'s pullback runs; under a trace, traced).
    """

    def __init__(self, fn: Any, expected: tuple, names: tuple[str, str]):
        self.fn, self.expected, self.names = fn, expected, names

    @_api_boundary
    def __call__(self, *args: Any) -> Any:
        n = len(_unstruct(self.expected))
        if len(args) != n:
            raise TypeError(
                f"This linear map takes {n} argument(s) ({self.names[1]}), found {len(args)}."
            )
        args = tuple(
            _as_arrays(a, f"{self.names[1]}[{i}]", "linear map") for i, a in enumerate(args)
        )
        # JAX's own pullback / linear map, run as JAX runs it: a linear program evaluated op by
        # op costs less than tracing it again (the "eager" rows of `chainrule bench ad`)
        return _apply_linear(self.fn, args, self.expected, self.names)

    def tree_flatten(self):
        return (self.fn,), (self.expected, self.names)

    @classmethod
    def tree_unflatten(cls, aux, children):
        return cls(children[0], *aux)

    def __repr__(self) -> str:
        return f"LinearFunction({self.names[1]} -> ...)"


# --------------------------------------------------------------------------------------------
# Outputs
# --------------------------------------------------------------------------------------------


def _check_pair(out: Any, what: str, fun: Callable) -> None:
    if not (isinstance(out, (tuple, list)) and len(out) == 2):
        name = getattr(fun, "__name__", type(fun).__name__)
        if isinstance(out, (tuple, list)):
            found = f"a {type(out).__name__} of length {len(out)}"
        elif hasattr(out, "shape") and hasattr(out, "dtype"):
            found = f"a single array of shape {tuple(out.shape)}"  # not the tracer's type
        else:
            found = f"a {type(out).__name__}"

        raise TypeError(
            f"{what} with has_aux=True needs {name} to return a pair (output, aux); it returned "
            f"{found}. Return `out, aux` (a 2-tuple), or drop has_aux=True."
        )


def _aux_checked(fun: Callable, has_aux: bool, what: str) -> Callable:
    """``fun`` whose output is checked to be a pair (output, aux) when ``has_aux``."""
    if not has_aux:
        return fun

    def wrapped(*args, **kwargs):
        out = fun(*args, **kwargs)
        _check_pair(out, what, fun)
        return tuple(out)

    return wrapped


def _scalar_checked(fun: Callable, has_aux: bool, what: str, holomorphic: bool = False):
    def wrapped(*args, **kwargs):
        out = fun(*args, **kwargs)
        if has_aux:
            _check_pair(out, what, fun)
            out = tuple(out)
            value = out[0]
        else:
            value = out
        if not holomorphic:
            check_scalar_output(value, what, fun)
        return out

    return wrapped


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


def _jvp_impl(fun, has_aux, primals, tangents):
    _check_jvp_inputs(primals, tangents)
    return jax.jvp(_aux_checked(fun, has_aux, "jvp"), primals, tangents, has_aux=has_aux)


@_api_boundary
def jvp(fun: Callable, primals: Sequence[Any], tangents: Sequence[Any], has_aux: bool = False):
    """Forward mode: ``f(*primals)`` and its directional derivative ``J @ tangents``.

    Same signature and results as ``jax.jvp`` at every call: eagerly it is ``jax.jvp`` itself
    after the checks below (nothing is compiled or cached), under a trace the same composition.

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
      TypeError: ``primals``/``tangents`` are not tuples/lists, a non-array leaf, a dtype
        mismatch (naming the path), an integer primal without a float0 tangent, or
        ``has_aux=True`` and ``fun`` does not return a pair.
      ValueError: a pytree structure or shape mismatch, naming the first differing path.

    Example:
      >>> import chainrule as cr, jax.numpy as jnp
      >>> y, dy = cr.jvp(jnp.sin, (jnp.array(0.0),), (jnp.array(2.0),))
      >>> float(dy)
      2.0
    """
    _check_bool(has_aux, "has_aux", "jvp")
    primals = _as_tuple(primals, "primals", "jvp")
    tangents = _as_tuple(tangents, "tangents", "jvp")
    if len(primals) != len(tangents):
        raise ValueError(
            f"jvp: got {len(primals)} primals but {len(tangents)} tangents; give one tangent per "
            f"primal, with the same structure, shape and dtype."
        )
    primals = _as_arrays(primals, "primals", "jvp")
    tangents = _as_arrays(tangents, "tangents", "jvp")
    # Forward mode needs no stored program: JAX's eager jvp dispatches each primal and tangent
    # operation as it goes, which costs less than tracing the same operations into a jaxpr
    # (`chainrule bench ad`, "eager" rows), so jvp is JAX's own, after the checks.
    return _jvp_impl(fun, has_aux, primals, tangents)


def _vjp_impl(fun, has_aux, primals):
    for i, p in enumerate(primals):
        check_differentiable(p, f"primals[{i}]")
    res = jax.vjp(_aux_checked(fun, has_aux, "vjp"), *primals, has_aux=has_aux)
    out, pullback = res[0], res[1]
    wrapped = LinearFunction(pullback, _shape_struct((out,)), ("primals_out", "cotangent"))
    return (out, wrapped, res[2]) if has_aux else (out, wrapped)


@_api_boundary
def vjp(fun: Callable, *primals: Any, has_aux: bool = False):
    """Reverse mode: ``f(*primals)`` and its pullback ``ct -> ct @ J``.

    Same signature and results as ``jax.vjp`` at every call. The pullback is a
    :class:`LinearFunction` holding the residuals; each call of it runs the backward pass.

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
      TypeError: an integer, boolean or non-array leaf among the primals (naming its path), a
        cotangent with the wrong dtype, or ``has_aux=True`` and ``fun`` returns no pair.
      ValueError: a cotangent with the wrong structure or shape (naming the path).

    Example:
      >>> import chainrule as cr, jax.numpy as jnp
      >>> y, pullback = cr.vjp(lambda x: x ** 2, jnp.array(3.0))
      >>> float(pullback(jnp.array(1.0))[0])
      6.0
    """
    _check_bool(has_aux, "has_aux", "vjp")
    primals = _as_arrays(primals, "primals", "vjp")
    return _jit.call(functools.partial(_vjp_impl, fun, has_aux), primals)


def _linearize_impl(fun, has_aux, primals):
    for i, p in enumerate(primals):
        check_differentiable(p, f"primals[{i}]")
    res = jax.linearize(_aux_checked(fun, has_aux, "linearize"), *primals, has_aux=has_aux)
    wrapped = LinearFunction(res[1], _shape_struct(primals), ("primals", "tangents"))
    return (res[0], wrapped, res[2]) if has_aux else (res[0], wrapped)


@_api_boundary
def linearize(fun: Callable, *primals: Any, has_aux: bool = False):
    """``f(*primals)`` and the JVP as a linear function of the tangents, evaluated once.

    Same results as ``jax.linearize`` at every call. Use it when pushing many tangents through
    the same point: the nonlinear work is done once, each later JVP is only the linear part.

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
      TypeError: an integer, boolean or non-array primal leaf, tangents of the wrong dtype, or
        ``has_aux=True`` and ``fun`` returns no pair.
      ValueError: tangents of the wrong structure or shape.

    Example:
      >>> import chainrule as cr, jax.numpy as jnp
      >>> y, f_jvp = cr.linearize(jnp.sin, jnp.array(0.0))
      >>> float(f_jvp(jnp.array(3.0)))
      3.0
    """
    _check_bool(has_aux, "has_aux", "linearize")
    primals = _as_arrays(primals, "primals", "linearize")
    return _jit.call(functools.partial(_linearize_impl, fun, has_aux), primals)


# --------------------------------------------------------------------------------------------
# grad, value_and_grad
# --------------------------------------------------------------------------------------------


class _Names:
    """The differentiated arguments' names for messages, from ``fun``'s signature, computed
    on first use (``inspect.signature`` costs ~10 us, more than the rest of a call's checks)."""

    def __init__(self, fun: Callable):
        self.fun, self.cache = fun, {}

    def __call__(self, argnums: tuple[int, ...]) -> list[str]:
        if argnums not in self.cache:
            self.cache[argnums] = _arg_names(self.fun, argnums)
        return self.cache[argnums]


def _diff_args(args: tuple, nums: tuple[int, ...], names: _Names, what: str) -> tuple:
    try:
        return tuple(_as_arrays(args[i], f"args[{i}]", what) for i in nums)
    except TypeError:
        # the same check again with the parameters' own names in the message
        for i, name in zip(nums, names(nums), strict=True):
            _as_arrays(args[i], name, what)
        raise


def _vg_impl(fun, argnums, has_aux, holomorphic, names, args, kwargs, *diff):
    nums = (argnums,) if isinstance(argnums, int) else argnums
    _check_diff_args(names, diff, nums, allow_complex=True)
    checked = _scalar_checked(_bind(fun, args, kwargs, nums), has_aux, "grad", holomorphic)
    positions = tuple(range(len(nums))) if not isinstance(argnums, int) else 0
    return jax.value_and_grad(checked, positions, has_aux=has_aux, holomorphic=holomorphic)(*diff)


def _g_impl(fun, argnums, has_aux, holomorphic, names, args, kwargs, *diff):
    value, g = _vg_impl(fun, argnums, has_aux, holomorphic, names, args, kwargs, *diff)
    return (g, value[1]) if has_aux else g


def _grad_factory(impl: Callable, what: str, fun: Callable, argnums, has_aux, holomorphic):
    argnums = _canonical_argnums(argnums, what)
    _check_bool(has_aux, "has_aux", what)
    _check_bool(holomorphic, "holomorphic", what)
    names = _Names(fun)

    @functools.wraps(fun)
    @_api_boundary
    def transformed(*args: Any, **kwargs: Any):
        nums = _normalize_argnums(argnums, len(args), what)
        diff = _diff_args(args, nums, names, what)
        bound = functools.partial(impl, fun, argnums, has_aux, holomorphic, names, args, kwargs)
        return _jit.call(bound, *diff)

    return transformed


def value_and_grad(
    fun: Callable,
    argnums: int | Sequence[int] = 0,
    has_aux: bool = False,
    holomorphic: bool = False,
) -> Callable:
    """The value of a scalar function and its gradient; ``jax.value_and_grad``'s API and results.

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
      TypeError: a non-scalar or integer output, an integer/boolean or non-array leaf among the
        differentiated arguments (naming ``args[i]...``), a bad ``argnums``, ``has_aux=True``
        and ``fun`` returns no pair.
      ValueError: ``argnums`` out of range for the call.

    Example:
      >>> import chainrule as cr, jax.numpy as jnp
      >>> v, g = cr.value_and_grad(lambda w: jnp.sum(w ** 2))(jnp.array([1.0, 2.0]))
      >>> float(v), g.tolist()
      (5.0, [2.0, 4.0])
    """
    return _grad_factory(_vg_impl, "value_and_grad", fun, argnums, has_aux, holomorphic)


def grad(
    fun: Callable,
    argnums: int | Sequence[int] = 0,
    has_aux: bool = False,
    holomorphic: bool = False,
) -> Callable:
    """The gradient of a scalar function; ``jax.grad``'s API and results at every call.

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
      TypeError: a non-scalar output (a dict, a tuple, a vector), an integer/boolean or
        non-array differentiated leaf (naming its path), ``has_aux=True`` and ``fun``
        returns no pair.
      ValueError: ``argnums`` out of range.

    Example:
      >>> import chainrule as cr, jax.numpy as jnp
      >>> cr.grad(lambda p: jnp.sum(p["w"] ** 2))({"w": jnp.array([1.0, -1.0])})["w"].tolist()
      [2.0, -2.0]
    """
    return _grad_factory(_g_impl, "grad", fun, argnums, has_aux, holomorphic)


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


def _jacobian_impl(
    fun, mode, argnums, chunk_size, has_aux, holomorphic, names, args, kwargs, *diff
):
    nums = (argnums,) if isinstance(argnums, int) else argnums
    bound = _bind(fun, args, kwargs, nums)

    def g(d):
        return bound(*((d,) if isinstance(argnums, int) else d))

    g.__name__ = bound.__name__
    g = _aux_checked(g, has_aux, "jacobian")
    dyn = diff[0] if isinstance(argnums, int) else diff
    if not jax.tree_util.tree_leaves(dyn):
        # Nothing to differentiate (e.g. an empty dict): jax.jacfwd/jacrev fail to ravel no
        # leaves. The Jacobian is the output's pytree, each leaf replaced by the empty input.
        res = g(dyn)
        jac = jax.tree.map(lambda _: dyn, res[0] if has_aux else res)
        return (jac, res[1]) if has_aux else jac
    # the output's shapes only: aux may hold values (a string) that eval_shape cannot return
    out_shape = jax.eval_shape((lambda d: g(d)[0]) if has_aux else g, dyn)
    if mode == "auto":
        mode = _auto_mode(dyn, out_shape, holomorphic)
    _check_diff_args(names, diff, nums, allow_complex=holomorphic or mode == "rev")
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
    from shapes while tracing, so the compiled program is the one of the mode picked.

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
      TypeError: an integer/boolean or non-array input leaf (naming its path); as in
        ``jax.jacfwd`` / ``jax.jacrev``, without ``holomorphic`` a complex input in forward mode
        or a complex or integer output in reverse mode (``"auto"`` picks the mode that exists).

    Example:
      >>> import chainrule as cr, jax.numpy as jnp
      >>> J = cr.jacobian(lambda x: jnp.stack([x[0] * x[1], x[1]]))(jnp.array([2.0, 3.0]))
      >>> J.tolist()
      [[3.0, 2.0], [0.0, 1.0]]
    """
    check_choice(mode, JACOBIAN_MODES, "jacobian mode")
    chunk_size = _check_chunk_size(chunk_size)
    argnums = _canonical_argnums(argnums, "jacobian")
    _check_bool(has_aux, "has_aux", "jacobian")
    _check_bool(holomorphic, "holomorphic", "jacobian")
    names = _Names(fun)

    @functools.wraps(fun)
    @_api_boundary
    def jacobian_fn(*args: Any, **kwargs: Any):
        nums = _normalize_argnums(argnums, len(args), "jacobian")
        diff = _diff_args(args, nums, names, "jacobian")
        bound = functools.partial(
            _jacobian_impl,
            fun,
            mode,
            argnums,
            chunk_size,
            has_aux,
            holomorphic,
            names,
            args,
            kwargs,
        )
        return _jit.call(bound, *diff)

    return jacobian_fn


# --------------------------------------------------------------------------------------------
# Second order: HVPs and Hessians
# --------------------------------------------------------------------------------------------


def _check_hvp_inputs(x: PyTree, v: PyTree, name_v: str = "v") -> None:
    check_differentiable(x, "x", allow_complex=False)
    check_same_shapes_dtypes(x, v, "x", name_v, allow_float0=False)


def _hvp_impl(fun, rule, x, v):
    _check_hvp_inputs(x, v)
    return rule(_scalar_checked(fun, False, "hvp"), x, v)


@_api_boundary
def hvp(fun: Callable, x: PyTree, v: PyTree, mode: str = "fwd-over-rev") -> PyTree:
    """Hessian-vector product ``H(x) @ v`` of a scalar function of a pytree.

    The three compositions (one rule table, ``chainrule._rules``) give the same result up to
    rounding, at different cost:

    * ``"fwd-over-rev"`` (default): ``jvp(grad(f), x, v)``. One forward-over-reverse pass,
      ~4-5 evaluations of ``f`` (a dense layer costs ~9 matmuls against the forward's 1:
      1 forward, 2 backward, and their tangents); memory of one gradient.
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
      TypeError: a non-scalar ``fun`` (a dict or tuple output too), an integer, complex or
        non-array leaf in ``x``, a dtype mismatch.

    Example:
      >>> import chainrule as cr, jax.numpy as jnp
      >>> cr.hvp(lambda x: jnp.sum(x ** 3), jnp.array([1.0, 2.0]), jnp.array([1.0, 0.0])).tolist()
      [6.0, 0.0]
    """
    rule = hvp_rule(mode)
    x = _as_arrays(x, "x", "hvp")
    v = _as_arrays(v, "v", "hvp")
    return _jit.call(functools.partial(_hvp_impl, fun, rule), x, v)


def _hvp_batched_impl(fun, rule, chunk_size, x, vs):
    check_differentiable(x, "x", allow_complex=False)
    # one direction's shapes, without indexing (there may be K = 0 directions)
    v0 = jax.tree.map(lambda t: jnp.zeros(t.shape[1:], t.dtype), vs)
    check_same_shapes_dtypes(x, v0, "x", "vs[i]", allow_float0=False)
    f = _scalar_checked(fun, False, "hvp_batched")
    one = functools.partial(rule, f, x)
    leaves = jax.tree_util.tree_leaves(vs)
    if not leaves:  # nothing to differentiate: an empty pytree per direction, i.e. vs itself
        f(x)  # still check that fun is a scalar function
        return vs
    if chunk_size is None:
        return jax.vmap(one)(vs)
    return map_chunked(one, vs, leaves[0].shape[0], chunk_size)


@_api_boundary
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
    rule = hvp_rule(mode)
    chunk_size = _check_chunk_size(chunk_size)
    x = _as_arrays(x, "x", "hvp_batched")
    vs = _as_arrays(vs, "vs", "hvp_batched")
    leaves = jax.tree_util.tree_flatten_with_path(vs)[0]
    sizes = {np.shape(leaf)[0] if np.ndim(leaf) else None for _, leaf in leaves}
    if None in sizes or len(sizes) > 1:
        desc = ", ".join(f"vs{jax.tree_util.keystr(p)}: {np.shape(leaf)}" for p, leaf in leaves)
        raise ValueError(
            "hvp_batched: every leaf of vs needs the same leading (batch) axis on top of x's "
            f"leaf shape; found {desc}."
        )
    return _jit.call(functools.partial(_hvp_batched_impl, fun, rule, chunk_size), x, vs)


def _hessian_impl(fun, argnums, chunk_size, names, args, kwargs, *diff):
    nums = (argnums,) if isinstance(argnums, int) else argnums
    _check_diff_args(names, diff, nums, allow_complex=False)
    bound = _bind(fun, args, kwargs, nums)

    def f(d):
        return bound(*((d,) if isinstance(argnums, int) else d))

    f.__name__ = bound.__name__
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
      TypeError: a non-scalar ``fun``, an integer/complex or non-array differentiated leaf.
      ValueError: a bad ``chunk_size`` or ``argnums``.

    Example:
      >>> import chainrule as cr, jax.numpy as jnp
      >>> cr.hessian(lambda x: x[0] ** 2 * x[1])(jnp.array([1.0, 2.0])).tolist()
      [[4.0, 2.0], [2.0, 0.0]]
    """
    chunk_size = _check_chunk_size(chunk_size)
    argnums = _canonical_argnums(argnums, "hessian")
    names = _Names(fun)

    @functools.wraps(fun)
    @_api_boundary
    def hessian_fn(*args: Any, **kwargs: Any):
        nums = _normalize_argnums(argnums, len(args), "hessian")
        diff = _diff_args(args, nums, names, "hessian")
        bound = functools.partial(_hessian_impl, fun, argnums, chunk_size, names, args, kwargs)
        return _jit.call(bound, *diff)

    return hessian_fn
