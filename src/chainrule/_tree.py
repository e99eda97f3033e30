"""Pytree helpers shared by every module: path names, validation, flat vectors.

Errors name the pytree path of the offending leaf, say what was expected and what was found,
and say how to fix it. Validation runs while a jitted function is traced, so it costs nothing on
repeated calls with the same shapes (the jit cache key already contains structure, shape and
dtype).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax._src import traceback_util

# Validation errors point at the user's call, not at these frames.
traceback_util.register_exclusion(__file__)

PyTree = Any

__all__ = [
    "leaf_paths",
    "path_str",
    "check_same_structure",
    "check_same_shapes_dtypes",
    "check_differentiable",
    "check_scalar_output",
    "check_choice",
    "tree_size",
    "tree_vdot",
    "tree_add",
    "tree_sub",
    "tree_scale",
    "tree_norm",
    "map_chunked",
]


def path_str(name: str, path: Sequence[Any]) -> str:
    """``name`` followed by JAX's key path, e.g. ``params['layers'][3]['w']``."""
    return name + jax.tree_util.keystr(tuple(path))


def leaf_paths(tree: PyTree, name: str = "x") -> list[tuple[str, Any]]:
    """``[(path string, leaf), ...]`` in flattening order."""
    flat, _ = jax.tree_util.tree_flatten_with_path(tree)
    return [(path_str(name, p), leaf) for p, leaf in flat]


def check_same_structure(a: PyTree, b: PyTree, name_a: str, name_b: str) -> None:
    """Raise ``ValueError`` naming the first path where two pytrees differ."""
    ta, tb = jax.tree_util.tree_structure(a), jax.tree_util.tree_structure(b)
    if ta == tb:
        return
    pa = [jax.tree_util.keystr(p) for p, _ in jax.tree_util.tree_flatten_with_path(a)[0]]
    pb = [jax.tree_util.keystr(p) for p, _ in jax.tree_util.tree_flatten_with_path(b)[0]]
    for i, (x, y) in enumerate(zip(pa, pb, strict=False)):
        if x != y:
            raise ValueError(
                f"{name_a} and {name_b} have different pytree structures: leaf {i} is at "
                f"{name_a}{x} but at {name_b}{y}. Give {name_b} the same structure as {name_a} "
                f"(e.g. build it with jax.tree.map over {name_a})."
            )
    if len(pa) != len(pb):
        longer, extra = (name_a, pa[len(pb)]) if len(pa) > len(pb) else (name_b, pb[len(pa)])
        raise ValueError(
            f"{name_a} has {len(pa)} leaves and {name_b} has {len(pb)}: the first unmatched "
            f"leaf is {longer}{extra}. Give {name_b} the same structure as {name_a}."
        )
    raise ValueError(
        f"{name_a} and {name_b} have the same leaf paths but different container types:\n"
        f"  {name_a}: {ta}\n  {name_b}: {tb}\n"
        f"Use the same containers (e.g. tuple vs list, dict vs NamedTuple) in both."
    )


def check_same_shapes_dtypes(
    a: PyTree, b: PyTree, name_a: str, name_b: str, *, allow_float0: bool = True
) -> None:
    """Raise if any leaf of ``b`` differs in shape or dtype from the leaf of ``a`` at its path.

    Structure is checked first. Where ``allow_float0``, a float0 leaf of ``b`` is accepted for an
    integer or boolean leaf of ``a`` (JAX's convention for non-differentiable tangents).
    """
    check_same_structure(a, b, name_a, name_b)
    flat_a, _ = jax.tree_util.tree_flatten_with_path(a)
    flat_b = jax.tree_util.tree_leaves(b)
    for (path, la), lb in zip(flat_a, flat_b, strict=True):
        sa, sb = np.shape(la), np.shape(lb)
        da, db = jnp.result_type(la), jnp.result_type(lb)
        if sa != sb:
            raise ValueError(
                f"Shape mismatch at {path_str(name_b, path)}: expected {sa} (the shape of "
                f"{path_str(name_a, path)}), found {sb}."
            )
        if allow_float0 and db == jax.dtypes.float0:
            if jnp.issubdtype(da, jnp.inexact):
                raise TypeError(
                    f"{path_str(name_b, path)} has dtype float0 but {path_str(name_a, path)} is "
                    f"{da}; float0 tangents are only for integer or boolean primals."
                )
            continue
        if da != db:
            raise TypeError(
                f"Dtype mismatch at {path_str(name_b, path)}: expected {da} (the dtype of "
                f"{path_str(name_a, path)}), found {db}. Cast it, e.g. "
                f"jax.tree.map(lambda t, p: t.astype(p.dtype), {name_b}, {name_a})."
            )


def is_hashable(obj: Any) -> bool:
    """Whether ``obj`` can key a cache (e.g. be a static argument of ``jax.jit``)."""
    try:
        hash(obj)
    except TypeError:
        return False
    return True


def check_differentiable(
    tree: PyTree,
    name: str,
    *,
    allow_complex: bool = True,
    complex_fix: str = "Split it into real and imaginary parts, or use holomorphic=True where "
    "offered.",
) -> None:
    """Raise ``TypeError`` naming the first integer/boolean (or complex, if disallowed) leaf;
    ``complex_fix`` is the advice for a complex one."""
    for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
        dt = jnp.result_type(leaf)
        if not jnp.issubdtype(dt, jnp.inexact):
            raise TypeError(
                f"Cannot differentiate with respect to {path_str(name, path)}: its dtype is {dt}, "
                f"expected a floating (or complex) dtype. Cast it with .astype(jnp.float32), or "
                f"close over it / exclude it with argnums if it is not a differentiable input."
            )
        if not allow_complex and jnp.issubdtype(dt, jnp.complexfloating):
            raise TypeError(
                f"{path_str(name, path)} is complex ({dt}); this transform needs real inputs. "
                f"{complex_fix}"
            )


def check_scalar_output(out: Any, what: str, fun: Any) -> None:
    """Raise ``TypeError`` unless ``out`` is a real scalar (a shape-() array)."""
    name = getattr(fun, "__name__", repr(fun))
    if isinstance(out, (dict, list, tuple)) or (
        not hasattr(out, "shape") and not isinstance(out, (int, float, complex))
    ):
        n = len(jax.tree_util.tree_leaves(out))
        raise TypeError(
            f"{what} needs a function with one scalar output; {name} returned a "
            f"{type(out).__name__} ({jax.tree_util.tree_structure(out)}, {n} leaves). Return "
            f"the scalar itself (e.g. a sum, or out['loss']), or use has_aux=True to return "
            f"(scalar, aux)."
        )
    leaves = jax.tree_util.tree_leaves(out)
    # a Python number is a scalar too (e.g. a constant loss `lambda p: 0.0`), as for jax.grad
    if len(leaves) != 1 or not (
        hasattr(leaves[0], "shape") or isinstance(leaves[0], (int, float, complex))
    ):
        raise TypeError(
            f"{what} needs a function with one scalar output; {name} returned "
            f"{jax.tree_util.tree_structure(out)} with {len(leaves)} leaves. Return a scalar "
            f"(e.g. a sum or mean), or use has_aux=True to return (scalar, aux)."
        )
    (leaf,) = leaves
    if np.shape(leaf) != ():
        raise TypeError(
            f"{what} needs a scalar-output function; {name} returned shape "
            f"{np.shape(leaf)}. Reduce it to a scalar (e.g. jnp.sum), or use cr.jacobian / "
            f"cr.vjp for non-scalar outputs."
        )
    dt = jnp.result_type(leaf)
    if not jnp.issubdtype(dt, jnp.floating):
        raise TypeError(
            f"{what} needs a real floating-point scalar output; {name} returned dtype {dt}."
        )


def check_choice(value: Any, valid: Sequence[Any], name: str) -> None:
    """Raise ``ValueError`` listing the valid values when ``value`` is not one of them."""
    if value not in valid:
        import difflib

        close = difflib.get_close_matches(str(value), [str(v) for v in valid], n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise ValueError(
            f"Unknown {name} {value!r}; expected one of {', '.join(map(repr, valid))}.{hint}"
        )


def tree_size(tree: PyTree) -> int:
    """Total number of scalars in a pytree."""
    return int(sum(np.size(x) for x in jax.tree_util.tree_leaves(tree)))


def tree_vdot(a: PyTree, b: PyTree) -> jax.Array:
    """``sum_i <a_i, b_i>`` over matching leaves (no conjugation, like ``jnp.vdot`` on reals)."""
    parts = jax.tree_util.tree_leaves(
        jax.tree.map(lambda x, y: jnp.sum(jnp.asarray(x) * jnp.asarray(y)), a, b)
    )
    return sum(parts[1:], parts[0]) if parts else jnp.zeros(())


def tree_add(a: PyTree, b: PyTree) -> PyTree:
    return jax.tree.map(jnp.add, a, b)


def tree_sub(a: PyTree, b: PyTree) -> PyTree:
    return jax.tree.map(jnp.subtract, a, b)


def tree_scale(s: Any, a: PyTree) -> PyTree:
    return jax.tree.map(lambda x: jnp.asarray(s, x.dtype) * x, a)


def tree_norm(a: PyTree) -> jax.Array:
    """Euclidean norm of all leaves together (``optax.global_norm`` for any pytree)."""
    sq = [jnp.sum(jnp.abs(x) ** 2) for x in jax.tree_util.tree_leaves(a)]
    return jnp.sqrt(sum(sq[1:], sq[0])) if sq else jnp.zeros(())


def map_chunked(fn: Any, xs: PyTree, n: int, chunk_size: int | None) -> PyTree:
    """``jax.lax.map(fn, xs, batch_size=chunk_size)`` over the ``n`` leading rows of ``xs``.

    ``chunk_size`` rows at a time (vmapped within a chunk, the chunks in a ``lax.map``), or all
    at once for None. Written out because ``lax.map`` flattens its chunks with
    ``reshape(-1, ...)``, which fails (ZeroDivisionError) when an output leaf has zero size,
    e.g. a Jacobian block of a zero-size input; here the shapes are explicit.
    """
    if chunk_size is None or chunk_size >= n:
        return jax.vmap(fn)(xs)
    nb, rem = divmod(n, chunk_size)
    cut = nb * chunk_size
    main = jax.tree.map(lambda x: x[:cut].reshape((nb, chunk_size) + x.shape[1:]), xs)
    ys = jax.lax.map(jax.vmap(fn), main)
    ys = jax.tree.map(lambda y: y.reshape((cut,) + y.shape[2:]), ys)
    if rem:
        tail = jax.vmap(fn)(jax.tree.map(lambda x: x[cut:], xs))
        ys = jax.tree.map(lambda a, b: jnp.concatenate([a, b], axis=0), ys, tail)
    return ys
