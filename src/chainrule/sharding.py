"""Placing batches and parameters on a device mesh, checked at the edge.

chainrule does not schedule work across devices: JAX's sharding does. A batch placed with a
``NamedSharding`` along a mesh axis (data parallelism) or parameters placed along a model axis
(FSDP-style) enter chainrule's transforms as they are; each eager transform compiles its program
for the inputs' shardings (``chainrule._jit`` keys compiled programs on them) and XLA's SPMD
partitioner inserts the reductions across the axis. Under your own ``jax.jit`` a transform is
the raw JAX composition, partitioned the same way.

This module holds the checks that turn JAX's errors at the bottom of a trace into errors that
name the mesh axis or the pytree path: :func:`check_mesh` (the axis exists),
:func:`shard_batch` (every leaf's batch dimension divides the axis), :func:`tree_mesh` (all
committed leaves of a tree share one mesh) and :func:`reshard_like` (put results back on the
parameters' shardings). The curvature operators use them when given ``mesh=``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import jax
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

PyTree = Any

__all__ = ["check_batch", "check_mesh", "flat_sharding", "reshard_like", "shard_batch", "tree_mesh"]


def _axes(axis: str | Sequence[str]) -> tuple[str, ...]:
    return (axis,) if isinstance(axis, str) else tuple(axis)


def check_mesh(mesh: Mesh, axis: str | Sequence[str]) -> int:
    """Check that ``mesh`` has the named axis (or axes) and return its size (their product).

    Args:
      mesh: a ``jax.sharding.Mesh``.
      axis: a mesh axis name, or a sequence of them.

    Returns:
      The number of devices along ``axis`` (the product over several axes).

    Raises:
      TypeError: ``mesh`` is not a ``Mesh``, or an axis name is not a string.
      ValueError: an axis is not one of the mesh's axis names (the message lists them).

    Example:
      >>> import jax, numpy as np
      >>> from jax.sharding import Mesh
      >>> import chainrule as cr
      >>> mesh = Mesh(np.array(jax.devices()[:1]), ("data",))
      >>> cr.sharding.check_mesh(mesh, "data")
      1
    """
    if not isinstance(mesh, Mesh):
        raise TypeError(f"mesh: expected a jax.sharding.Mesh, found {type(mesh).__name__}.")
    axes = _axes(axis)
    for a in axes:
        if not isinstance(a, str):
            raise TypeError(f"axis: expected a mesh axis name (str), found {a!r}.")
        if a not in mesh.axis_names:
            raise ValueError(
                f"axis {a!r} is not an axis of the mesh: its axes are "
                f"{', '.join(repr(n) for n in mesh.axis_names)} (shape {dict(mesh.shape)})."
            )
    return math.prod(mesh.shape[a] for a in axes)


def shard_batch(
    batch: PyTree, mesh: Mesh, axis: str | Sequence[str] = "data", *, batch_dim: int = 0
) -> PyTree:
    """Place every leaf of ``batch`` on ``mesh``, split along ``axis`` at dimension ``batch_dim``.

    The other dimensions are replicated. No data is reduced or copied beyond the transfer:
    each device receives its slice.

    Args:
      batch: a pytree of arrays sharing the batch dimension (inputs, targets ...).
      mesh: the device mesh.
      axis: the mesh axis (or axes) to split the batch over.
      batch_dim: which dimension of each leaf is the batch (1 for stacked batches).

    Returns:
      The batch as committed ``jax.Array`` leaves with ``NamedSharding(mesh, P(..., axis))``.

    Raises:
      ValueError: the axis is not in the mesh; a leaf has no dimension ``batch_dim``, or its
        size there is not a multiple of the axis size (the message names the leaf's path, its
        size and the axis).

    Example:
      >>> import jax, jax.numpy as jnp, numpy as np
      >>> from jax.sharding import Mesh
      >>> import chainrule as cr
      >>> mesh = Mesh(np.array(jax.devices()), ("data",))
      >>> n = len(jax.devices())
      >>> xb = cr.sharding.shard_batch({"x": jnp.ones((2 * n, 3))}, mesh, "data")
      >>> tuple(xb["x"].sharding.spec)
      ('data',)
    """
    spec_axis = check_batch(batch, mesh, axis, batch_dim=batch_dim)
    spec = P(*([None] * batch_dim), spec_axis)
    return jax.tree.map(lambda x: jax.device_put(x, NamedSharding(mesh, spec)), batch)


def check_batch(
    batch: PyTree,
    mesh: Mesh,
    axis: str | Sequence[str] = "data",
    *,
    batch_dim: int = 0,
    name: str = "batch",
) -> str | tuple[str, ...]:
    """Check that every leaf of ``batch`` can be split along mesh ``axis`` at ``batch_dim``.

    Args:
      batch: a pytree of arrays (or shape-dtype structs).
      mesh: the device mesh.
      axis: the mesh axis (or axes).
      batch_dim: the batch dimension of each leaf.
      name: what to call the tree in messages.

    Returns:
      The partition-spec entry for the batch dimension (``axis``, or a tuple of axes).

    Raises:
      ValueError: as :func:`shard_batch`.

    Example:
      >>> import jax, jax.numpy as jnp, numpy as np
      >>> from jax.sharding import Mesh
      >>> import chainrule as cr
      >>> mesh = Mesh(np.array(jax.devices()[:1]), ("data",))
      >>> cr.sharding.check_batch(jnp.ones((3, 2)), mesh, "data")
      'data'
    """
    size = check_mesh(mesh, axis)
    axes = _axes(axis)
    spec_axis = axes[0] if len(axes) == 1 else axes
    for path, x in jax.tree_util.tree_flatten_with_path(batch)[0]:
        where = name + jax.tree_util.keystr(path)
        shape = jax.numpy.shape(x)
        if len(shape) <= batch_dim:
            raise ValueError(
                f"{where} has shape {shape}: expected a batch dimension at {batch_dim} to split "
                f"over mesh axis {spec_axis!r}."
            )
        if shape[batch_dim] % size:
            raise ValueError(
                f"{where} has {shape[batch_dim]} rows along dimension {batch_dim}, which mesh "
                f"axis {spec_axis!r} (size {size}) does not divide: use a batch size that is a "
                f"multiple of {size} (e.g. {shape[batch_dim] // size * size or size})."
            )
    return spec_axis


def _leaf_mesh(x: Any) -> Any:
    s = getattr(x, "sharding", None)
    if isinstance(s, NamedSharding):
        return s.mesh
    return None


def tree_mesh(tree: PyTree, name: str = "params") -> Mesh | None:
    """The one mesh the ``NamedSharding`` leaves of ``tree`` are placed on (None if none is).

    Leaves without a ``NamedSharding`` (NumPy arrays, arrays on one device) are ignored: JAX
    places them. Two leaves on different meshes (other devices or other axis names) cannot
    enter one program; this names both paths instead of JAX's error from inside the trace.

    Args:
      tree: a pytree (parameters, a batch).
      name: what to call the tree in messages.

    Returns:
      The common ``Mesh``, or None.

    Raises:
      ValueError: two leaves are committed to different meshes (both paths and meshes named).

    Example:
      >>> import jax.numpy as jnp
      >>> import chainrule as cr
      >>> cr.sharding.tree_mesh({"w": jnp.ones(2)}) is None
      True
    """
    first = None
    for path, x in jax.tree_util.tree_flatten_with_path(tree)[0]:
        m = _leaf_mesh(x)
        if m is None:
            continue
        p = name + jax.tree_util.keystr(path)
        if first is None:
            first = (p, m)
        elif m != first[1]:
            raise ValueError(
                f"{p} is placed on {_describe(m)} but {first[0]} on {_describe(first[1])}: "
                f"the leaves of one computation must share a mesh (device_put them with "
                f"NamedShardings of the same Mesh)."
            )
    return None if first is None else first[1]


def _describe(m: Mesh) -> str:
    ids = [d.id for d in m.devices.flat]
    return f"Mesh({dict(m.shape)}, devices {ids})"


def reshard_like(tree: PyTree, like: PyTree, leading: int = 0) -> PyTree:
    """``tree`` with each leaf placed like the matching leaf of ``like`` (where that one is a
    ``NamedSharding``-placed array; other leaves are returned as they are).

    A reshard, not a gather: XLA moves only the slices whose owner changes.

    Args:
      tree: arrays with the shapes of ``like``'s leaves.
      like: the reference placement (e.g. the parameters).
      leading: replicated leading dimensions of ``tree``'s leaves before ``like``'s shape (1
        for a stack of directions).

    Returns:
      The re-placed tree.

    Example:
      >>> import jax.numpy as jnp
      >>> import chainrule as cr
      >>> cr.sharding.reshard_like({"w": jnp.ones(2)}, {"w": jnp.zeros(2)})["w"].tolist()
      [1.0, 1.0]
    """

    def one(x, ref):
        s = getattr(ref, "sharding", None)
        if not isinstance(s, NamedSharding):
            return x
        if leading:
            s = NamedSharding(s.mesh, P(*([None] * leading), *s.spec))
        return x if getattr(x, "sharding", None) == s else jax.device_put(x, s)

    return jax.tree.map(one, tree, like)


def flat_sharding(tree: PyTree, leading: int = 0) -> NamedSharding | None:
    """A sharding for the raveled vector of ``tree`` (``ravel_pytree``, length ``n``) that splits
    it over the mesh axes the leaves are split over, so a basis of such vectors (Lanczos) stays
    spread like the parameters; None if the tree is not sharded or ``n`` does not divide.

    Args:
      tree: a pytree whose leaves may carry ``NamedSharding``s of one mesh.
      leading: number of replicated leading dimensions (1 for an ``(m, n)`` basis).

    Returns:
      ``NamedSharding(mesh, P(None * leading, axes))`` or None.

    Raises:
      ValueError: leaves on different meshes (as :func:`tree_mesh`).

    Example:
      >>> import jax.numpy as jnp
      >>> import chainrule as cr
      >>> cr.sharding.flat_sharding({"w": jnp.ones(4)}) is None
      True
    """
    mesh = tree_mesh(tree)
    if mesh is None:
        return None
    axes: list[str] = []
    for x in jax.tree_util.tree_leaves(tree):
        s = getattr(x, "sharding", None)
        if not isinstance(s, NamedSharding):
            continue
        for entry in s.spec:
            for a in _axes(entry) if entry is not None else ():
                if a not in axes:
                    axes.append(a)
    if not axes:
        return None
    n = sum(int(jax.numpy.size(x)) for x in jax.tree_util.tree_leaves(tree))
    axes = [a for a in mesh.axis_names if a in axes]  # mesh order: contiguous device blocks
    if n % math.prod(mesh.shape[a] for a in axes):
        return None
    return NamedSharding(mesh, P(*([None] * leading), tuple(axes) if len(axes) > 1 else axes[0]))
