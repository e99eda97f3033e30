"""Curvature operators: Hessian, generalized Gauss-Newton, empirical and Monte-Carlo Fisher."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from chainrule import _tree, sharding
from chainrule._rules import hvp_rule

PyTree = Any
Wrt = str | Sequence[str] | Callable[[str, Any], bool] | None

__all__ = [
    "LOSSES",
    "CurvatureOperator",
    "empirical_fisher",
    "ggn",
    "hessian",
    "loss_value",
    "mc_fisher",
]


@dataclasses.dataclass(frozen=True)
class CurvatureOperator:
    """A symmetric linear operator on a pytree of parameters, applied matrix-free.

    ``matvec(v)`` takes and returns a pytree like :attr:`like`; :meth:`matmat` maps a stack of
    such pytrees (a leading axis). The algorithms in ``cr.curvature`` use the flat form
    :meth:`apply_flat`, a pure function of ``(state, x)`` that they trace once inside their own
    ``jit`` / ``lax`` loops (``state`` holds every array the operator reads: the parameters, the
    stacked batches, a PRNG key -- they enter the compiled loop as arguments, not constants).

    Cost: one matvec is one pass over the data (``num_batches`` per-batch products, summed in a
    ``lax.scan`` in batch order, so the same data gives the same answer); each per-batch product
    is one HVP (Hessian) or one linearized forward + one transposed pass of the model (GGN and
    Fisher).

    Attributes:
      kind: ``"hessian"``, ``"ggn"``, ``"empirical_fisher"`` or ``"mc_fisher"``.
      like: a pytree like the operator's vectors (the selected parameters).
      size: the dimension ``n`` (number of scalars in ``like``).
      dtype: the vectors' dtype.
      num_batches: per-batch products per matvec (1 without a dataset).
      paths: the selected parameters' paths (``params['w1']`` ...), in flattening order.
    """

    kind: str
    _apply: Callable = dataclasses.field(repr=False)
    state: PyTree = dataclasses.field(repr=False)
    like: PyTree = dataclasses.field(repr=False)
    size: int
    dtype: Any
    num_batches: int
    paths: tuple[str, ...]
    _selection: _Selection = dataclasses.field(repr=False)
    _programs: dict = dataclasses.field(default_factory=dict, repr=False, compare=False)

    def unravel(self, x: jax.Array) -> PyTree:
        """The pytree (like :attr:`like`) of a flat vector of length :attr:`size`."""
        return ravel_pytree(self.like)[1](x)

    def ravel(self, v: PyTree) -> jax.Array:
        """The flat vector of a pytree like :attr:`like` (checked: names the first bad path)."""
        _tree.check_same_shapes_dtypes(self.like, v, "params", "v")
        return ravel_pytree(v)[0]

    def apply_flat(self, state: PyTree, x: jax.Array) -> jax.Array:
        """The pure flat matvec ``A x`` given the operator's ``state`` (traceable)."""
        return self._apply(state, x)

    def matvec(self, v: PyTree) -> PyTree:
        """``A v`` for a pytree ``v`` like :attr:`like`: one matvec (one data pass).

        Raises:
          ValueError, TypeError: ``v``'s structure, shapes or dtypes differ from the
            parameters' (the message names the first differing path).
        """
        mv = self.program("matvec", lambda: jax.jit(self._apply))
        # The flat vector's layout is XLA's choice; the result goes back on the parameters'
        # shardings (a reshard of slices, never a gather onto one device).
        return sharding.reshard_like(self.unravel(mv(self.state, self.ravel(v))), self.like)

    def matmat(self, vs: PyTree) -> PyTree:
        """``A v_i`` for a stack of pytrees (leading axis ``m``): ``m`` matvecs, vmapped."""
        flat = jax.vmap(lambda v: ravel_pytree(v)[0])(vs)
        one = jax.tree.map(lambda x: x[0], vs)
        _tree.check_same_shapes_dtypes(self.like, one, "params", "vs[0]")
        mm = self.program("matmat", lambda: jax.jit(jax.vmap(self._apply, in_axes=(None, 0))))
        out = mm(self.state, flat)
        return jax.vmap(self.unravel)(out)

    def __matmul__(self, v: PyTree) -> PyTree:
        return self.matvec(v)

    def embed(self, v: PyTree) -> PyTree:
        """A vector of the (restricted) operator placed in the full parameter tree, zeros
        elsewhere."""
        return self._selection.embed(v, self.state["rest"])

    def with_params(self, params: PyTree) -> CurvatureOperator:
        """The same operator at new parameters (same structure, shapes and dtypes).

        The returned operator shares this one's compiled programs (like reusing one
        ``jax.jit(f)``): repeated analyses along a training run compile once. Build a new
        operator instead if the loss or model function itself has changed.

        Raises:
          ValueError, TypeError: ``params`` differs in structure, shape or dtype (the message
            names the path).
        """
        sub, rest = self._selection.split(params)
        _tree.check_same_shapes_dtypes(self.like, sub, "params", "new params")
        state = dict(self.state, params=sub, rest=rest)
        return dataclasses.replace(self, state=state, like=sub, _programs=self._programs)

    def program(self, name: str, build: Callable[[], Callable]) -> Callable:
        """A compiled program of the algorithms (``build()`` once per name), shared by the
        operators derived with :meth:`with_params`."""
        if name not in self._programs:
            self._programs[name] = build()
        return self._programs[name]

    def to_dense(self) -> jax.Array:
        """The ``n x n`` matrix (``n`` matvecs; for small operators and tests)."""
        eye = jnp.eye(self.size, dtype=self.dtype)
        mm = self.program("dense", lambda: jax.jit(jax.vmap(self._apply, in_axes=(None, 0))))
        return mm(self.state, eye).T


# ----------------------------------------------------------------------------- selection


class _Selection:
    """Which leaves of the parameters an operator acts on (``wrt``), as pure functions of the
    full parameters: ``split(params) -> (sub, rest)``, ``merge(sub, rest) -> params``. ``sub``
    is the whole tree for ``wrt=None``, else a dict keyed by the selected paths; ``rest`` the
    full list of leaves (the unselected ones are read from it)."""

    def __init__(self, params: PyTree, wrt: Wrt) -> None:
        flat, self.treedef = jax.tree_util.tree_flatten_with_path(params)
        keys = [jax.tree_util.keystr(p) for p, _ in flat]
        self.all = wrt is None
        if wrt is None:
            chosen = list(range(len(keys)))
        elif callable(wrt):
            chosen = [i for i, (k, (_, x)) in enumerate(zip(keys, flat, strict=True)) if wrt(k, x)]
        else:
            prefixes = [wrt] if isinstance(wrt, str) else list(wrt)
            for pre in prefixes:
                if not isinstance(pre, str):
                    raise TypeError(
                        f"wrt: expected a path string like \"['w1']\", a list of them or a "
                        f"filter(path, leaf) -> bool; found {type(pre).__name__} {pre!r}."
                    )
            norm = [p[len("params") :] if p.startswith("params") else p for p in prefixes]
            chosen = [i for i, k in enumerate(keys) if any(k.startswith(p) for p in norm)]
        if not chosen:
            raise ValueError(
                f"wrt={wrt!r} selects no parameter. The parameter paths are: "
                f"{', '.join('params' + k for k in keys)}."
            )
        self.chosen = chosen
        self.paths = tuple("params" + keys[i] for i in chosen)

    def split(self, params: PyTree) -> tuple[PyTree, list | None]:
        if self.all:
            return params, None
        leaves = self.treedef.flatten_up_to(params)
        return {p: leaves[i] for p, i in zip(self.paths, self.chosen, strict=True)}, leaves

    def merge(self, sub: PyTree, rest: list | None) -> PyTree:
        if self.all:
            return sub
        new = list(rest)
        for p, i in zip(self.paths, self.chosen, strict=True):
            new[i] = sub[p]
        return jax.tree_util.tree_unflatten(self.treedef, new)

    def embed(self, sub: PyTree, rest: list | None) -> PyTree:
        if self.all:
            return sub
        return self.merge(sub, [jnp.zeros_like(x) for x in rest])


def _float_dtype(sub: PyTree, paths: tuple[str, ...]) -> Any:
    leaves = jax.tree_util.tree_leaves(sub)
    if not leaves:
        raise ValueError("The parameters have no leaves: the operator would be 0 x 0.")
    dtypes = [jnp.result_type(x) for x in leaves]
    for p, d in zip(paths, dtypes, strict=True):
        if not jnp.issubdtype(d, jnp.floating):
            raise TypeError(
                f"{p} has dtype {d}: a curvature operator needs floating-point parameters. "
                f"Cast it, or leave it out with wrt=..."
            )
    for p, d in zip(paths, dtypes, strict=True):
        if d != dtypes[0]:
            raise TypeError(
                f"{p} has dtype {d} but {paths[0]} is {dtypes[0]}: the selected parameters "
                f"must share one dtype (cast them, or select a sub-tree with wrt=...)."
            )
    return dtypes[0]


def _stack_batches(
    batches: Sequence[PyTree] | None, mesh: Any = None, axis: Any = "data"
) -> tuple[PyTree, int]:
    if batches is None:
        if mesh is not None:
            raise TypeError("mesh= shards the batches over a mesh axis: pass batches=[...] too.")
        return None, 1
    if not isinstance(batches, (list, tuple)) or len(batches) == 0:
        raise TypeError(
            "batches: expected a non-empty list of batches (pytrees with the same structure "
            f"and shapes); found {type(batches).__name__}"
            + (" of length 0." if isinstance(batches, (list, tuple)) else ".")
        )
    for i, b in enumerate(batches[1:], start=1):
        _tree.check_same_shapes_dtypes(batches[0], b, "batches[0]", f"batches[{i}]")
    if mesh is not None:
        spec_axis = sharding.check_batch(batches[0], mesh, axis, name="batches[0]")
    stacked = jax.tree.map(lambda *xs: jnp.stack([jnp.asarray(x) for x in xs]), *batches)
    if mesh is not None:  # (num_batches, batch, ...): every batch split along the mesh axis
        spec = jax.sharding.PartitionSpec(None, spec_axis)
        stacked = jax.device_put(stacked, jax.sharding.NamedSharding(mesh, spec))
    return stacked, len(batches)


def _check_placement(params: PyTree, data: PyTree, mesh: Any) -> None:
    """The parameters, the data and ``mesh`` must share one mesh (named errors, not JAX's from
    inside the trace)."""
    pm = sharding.tree_mesh(params, "params")
    dm = sharding.tree_mesh(data, "batches")
    for what, m in (("the batches", dm), ("mesh=", mesh)):
        if pm is not None and m is not None and m != pm:
            raise ValueError(
                f"The parameters are placed on {sharding._describe(pm)} but {what} on "
                f"{sharding._describe(m)}: place both on one Mesh."
            )


def _acc_dtype(dtype: Any, accumulate: Any) -> Any:
    if accumulate is None:
        return dtype
    acc = jnp.dtype(accumulate)
    if acc == jnp.float64 and not jax.config.jax_enable_x64:
        raise ValueError(
            "accumulate='float64' needs 64-bit JAX: call "
            "jax.config.update('jax_enable_x64', True) first."
        )
    if not jnp.issubdtype(acc, jnp.floating):
        raise TypeError(f"accumulate: expected a floating dtype such as 'float64', found {acc}.")
    return acc


def _batch_sum(per_batch: Callable, data: PyTree, nb: int, x: jax.Array, acc: Any) -> jax.Array:
    """``mean_b per_batch(batch_b, b, x)``, summed in batch order in a ``lax.scan`` (one compiled
    body, whatever the number of batches), in the accumulation dtype ``acc``."""
    if data is None:
        return per_batch(None, 0, x)

    def body(carry, inp):
        b, i = inp
        return carry + per_batch(b, i, x).astype(acc), None

    total, _ = jax.lax.scan(body, jnp.zeros(x.shape, acc), (data, jnp.arange(nb)))
    return (total / nb).astype(x.dtype)


def _check_scalar_loss(loss: Callable, params: PyTree, batch: PyTree) -> None:
    args = (params,) if batch is None else (params, batch)
    out = jax.eval_shape(loss, *args)
    _tree.check_scalar_output(out, "A Hessian operator", loss)


def _first_batch(data: PyTree) -> PyTree:
    return None if data is None else jax.tree.map(lambda x: x[0], data)


def hessian(
    loss: Callable,
    params: PyTree,
    batches: Sequence[PyTree] | None = None,
    *,
    wrt: Wrt = None,
    mode: str = "fwd-over-rev",
    accumulate: Any = None,
    mesh: Any = None,
    data_axis: Any = "data",
) -> CurvatureOperator:
    """The Hessian of ``loss`` at ``params`` as a matrix-free operator.

    With ``batches``, the operator is the Hessian of ``mean_b loss(params, batch_b)`` (the
    full-dataset loss for equal-size batches); without, of ``loss(params)``.

    Args:
      loss: ``loss(params, batch) -> scalar`` (or ``loss(params)`` when ``batches`` is None).
      params: the point, any pytree of floating arrays.
      batches: a list of batches (pytrees with equal structure and shapes), or None.
      wrt: restrict to a sub-tree: a path prefix such as ``"['layers'][0]"``, a list of
        prefixes, or ``filter(path, leaf) -> bool``; the operator's vectors are then dicts
        keyed by the selected paths (``op.embed`` puts one back into the full tree).
      mode: the HVP composition, one of ``cr.HVP_MODES`` (the rule table ``chainrule._rules``).
      accumulate: dtype of the sum over batches (e.g. ``"float64"``); default the parameters'.
      mesh: a ``jax.sharding.Mesh``: every batch is split along its axis ``data_axis``
        (data parallelism: XLA reduces the per-device sums); the parameters may be sharded on
        the same mesh (``cr.sharding``).
      data_axis: the mesh axis (or axes) to split each batch's leading dimension over.

    Returns:
      A :class:`CurvatureOperator`; one matvec costs one HVP per batch (one data pass).

    Raises:
      TypeError: ``loss`` does not return a real scalar, or a parameter is not floating.
      ValueError: unknown ``mode``; ``wrt`` selects nothing; batches differ in structure or
        shape (the message names the path); ``data_axis`` is not an axis of ``mesh`` or does
        not divide the batch size; parameters and batches on different meshes.

    Example:
      >>> import jax.numpy as jnp
      >>> import chainrule as cr
      >>> op = cr.curvature.hessian(lambda p: jnp.sum(p["w"] ** 3), {"w": jnp.ones(2)})
      >>> op.matvec({"w": jnp.array([1.0, 0.0])})["w"].tolist()
      [6.0, 0.0]
    """
    rule = hvp_rule(mode)
    data, nb = _stack_batches(batches, mesh, data_axis)
    _check_placement(params, data, mesh)
    _check_scalar_loss(loss, params, _first_batch(data))
    sel = _Selection(params, wrt)
    sub, rest = sel.split(params)
    paths = sel.paths
    dtype = _float_dtype(sub, paths)
    acc = _acc_dtype(dtype, accumulate)
    flat0, unravel = ravel_pytree(sub)

    def apply(state, x):
        p_sub, d = state["params"], state["data"]
        merge = lambda s: sel.merge(s, state["rest"])

        def per_batch(batch, _i, x):
            f = (lambda s: loss(merge(s))) if batch is None else (lambda s: loss(merge(s), batch))
            return ravel_pytree(rule(f, p_sub, unravel(x)))[0]

        return _batch_sum(per_batch, d, nb, x, acc)

    return CurvatureOperator(
        "hessian",
        apply,
        {"params": sub, "rest": rest, "data": data, "key": None},
        sub,
        int(flat0.size),
        dtype,
        nb,
        paths,
        sel,
    )


# ----------------------------------------------------------------------------- losses


def _mse(out, y):
    return jnp.mean((out - y) ** 2)


def _mse_hvp(out, y, u):
    return (2.0 / out.size) * u


def _mse_out_grad(out, y):  # per-sample loss mean_k (o - y)^2
    return 2.0 * (out - y) / _per_sample(out)


def _mse_sample(key, out):  # E[s s^T] = (2/K) I, the per-sample output Hessian
    return jnp.sqrt(2.0 / _per_sample(out)) * jax.random.normal(key, out.shape, out.dtype)


def _onehot(y, out):
    return jax.nn.one_hot(y, out.shape[-1], dtype=out.dtype) if y.ndim == out.ndim - 1 else y


def _ce(out, y):
    return -jnp.mean(jnp.sum(_onehot(y, out) * jax.nn.log_softmax(out, axis=-1), axis=-1))


def _ce_hvp(out, y, u):
    p = jax.nn.softmax(out, axis=-1)
    return (p * u - p * jnp.sum(p * u, axis=-1, keepdims=True)) / (out.size // out.shape[-1])


def _ce_out_grad(out, y):
    return jax.nn.softmax(out, axis=-1) - _onehot(y, out)


def _ce_sample(key, out):  # y ~ softmax(out): E[s s^T] = diag(p) - p p^T
    p = jax.nn.softmax(out, axis=-1)
    y = jax.random.categorical(key, out, axis=-1)
    return p - jax.nn.one_hot(y, out.shape[-1], dtype=out.dtype)


def _bce(out, y):
    return jnp.mean(jax.nn.softplus(out) - y * out)


def _bce_hvp(out, y, u):
    s = jax.nn.sigmoid(out)
    return s * (1 - s) * u / out.size


def _bce_out_grad(out, y):
    return (jax.nn.sigmoid(out) - y) / _per_sample(out)


def _bce_sample(key, out):  # y ~ Bernoulli(sigmoid(out)), per-sample loss a mean over K
    s = jax.nn.sigmoid(out)
    y = jax.random.bernoulli(key, s).astype(out.dtype)
    return (s - y) / jnp.sqrt(_per_sample(out))


def _per_sample(out):
    return out.size // out.shape[0]


@dataclasses.dataclass(frozen=True)
class _Loss:
    value: Callable
    hvp: Callable
    out_grad: Callable
    sample: Callable


LOSSES: dict[str, _Loss] = {
    "mse": _Loss(_mse, _mse_hvp, _mse_out_grad, _mse_sample),
    "softmax_cross_entropy": _Loss(_ce, _ce_hvp, _ce_out_grad, _ce_sample),
    "binary_cross_entropy": _Loss(_bce, _bce_hvp, _bce_out_grad, _bce_sample),
}
"""The losses with closed-form output Hessians (outputs ``(B, ...)``, batch axis first):

* ``"mse"``: ``mean((out - y)^2)`` over all elements; ``H_out = 2 / out.size * I``.
* ``"softmax_cross_entropy"``: ``mean_b -sum_c y_bc log softmax(out_b)_c`` (integer labels or
  one-hot / probabilities); ``H_out = (diag(p_b) - p_b p_b^T) / B`` per sample.
* ``"binary_cross_entropy"``: from logits, ``mean(softplus(out) - y out)``;
  ``H_out = sigmoid(out)(1 - sigmoid(out)) / out.size``.
"""


def loss_value(loss: str, out: jax.Array, targets: jax.Array) -> jax.Array:
    """The value of a named loss (see :data:`LOSSES`), so a Hessian and a GGN can share it.

    Args:
      loss: a key of :data:`LOSSES`.
      out: model outputs, batch axis first.
      targets: targets (labels for cross-entropy may be integers).

    Returns:
      The scalar loss.

    Raises:
      ValueError: unknown ``loss`` (the message lists the valid names).

    Example:
      >>> import jax.numpy as jnp
      >>> import chainrule as cr
      >>> float(cr.curvature.loss_value("mse", jnp.ones((2, 1)), jnp.zeros((2, 1))))
      1.0
    """
    _tree.check_choice(loss, tuple(LOSSES), "loss")
    return LOSSES[loss].value(out, targets)


def _output_operator(
    kind: str,
    model: Callable,
    params: PyTree,
    batches: Sequence[PyTree],
    loss: str,
    wrt: Wrt,
    accumulate: Any,
    out_op: Callable,
    key: jax.Array | None = None,
    mesh: Any = None,
    data_axis: Any = "data",
) -> CurvatureOperator:
    """``mean_b J_b^T M_b J_b`` with ``M_b = out_op(out, targets, key_b, u)`` in output space,
    through ``jax.linearize`` of the model and ``jax.linear_transpose`` of its JVP."""
    _tree.check_choice(loss, tuple(LOSSES), "loss")
    data, nb = _stack_batches(batches, mesh, data_axis)
    _check_placement(params, data, mesh)
    if data is None:
        raise TypeError(f"{kind} needs batches=[(inputs, targets), ...]; found None.")
    b0 = _first_batch(data)
    if not (isinstance(b0, (tuple, list)) and len(b0) == 2):
        raise TypeError(
            f"{kind}: each batch must be a pair (inputs, targets); batches[0] is "
            f"{type(b0).__name__} with structure {jax.tree_util.tree_structure(b0)}."
        )
    sel = _Selection(params, wrt)
    sub, rest = sel.split(params)
    paths = sel.paths
    dtype = _float_dtype(sub, paths)
    out_shape = jax.eval_shape(lambda p: model(p, b0[0]), params)
    if not hasattr(out_shape, "shape") or len(out_shape.shape) < 1:
        raise TypeError(
            f"{kind}: model(params, inputs) must return one array with a batch axis first; "
            f"found {out_shape}."
        )
    acc = _acc_dtype(dtype, accumulate)
    flat0, unravel = ravel_pytree(sub)

    def apply(state, x):
        p_sub, d, k = state["params"], state["data"], state["key"]
        merge = lambda s: sel.merge(s, state["rest"])

        def per_batch(batch, i, x):
            inputs, targets = batch
            out, jvp = jax.linearize(lambda s: model(merge(s), inputs), p_sub)
            u = jvp(unravel(x))
            kb = None if k is None else jax.random.fold_in(k, i)
            (g,) = jax.linear_transpose(jvp, p_sub)(out_op(out, targets, kb, u))
            return ravel_pytree(g)[0]

        return _batch_sum(per_batch, d, nb, x, acc)

    return CurvatureOperator(
        kind,
        apply,
        {"params": sub, "rest": rest, "data": data, "key": key},
        sub,
        int(flat0.size),
        dtype,
        nb,
        paths,
        sel,
    )


def ggn(
    model: Callable,
    params: PyTree,
    batches: Sequence[PyTree],
    loss: str = "mse",
    *,
    wrt: Wrt = None,
    accumulate: Any = None,
    mesh: Any = None,
    data_axis: Any = "data",
) -> CurvatureOperator:
    """The generalized Gauss-Newton matrix ``mean_b J_b^T H_loss J_b`` of ``loss(model(params))``.

    ``J_b`` is the Jacobian of the model's outputs on batch ``b`` with respect to the
    (selected) parameters and ``H_loss`` the loss's Hessian with respect to the outputs, in
    closed form (:data:`LOSSES`). Positive semi-definite for these convex losses; equal to the
    Hessian for a model linear in its parameters.

    Args:
      model: ``model(params, inputs) -> outputs`` (batch axis first).
      params: the point.
      batches: a list of ``(inputs, targets)`` pairs.
      loss: ``"mse"``, ``"softmax_cross_entropy"`` or ``"binary_cross_entropy"``.
      wrt: restrict to a sub-tree (as for :func:`hessian`).
      accumulate: dtype of the sum over batches.
      mesh, data_axis: split every batch along this mesh axis (as for :func:`hessian`).

    Returns:
      A :class:`CurvatureOperator`; one matvec is, per batch, one linearized forward (JVP) and
      one transposed pass (VJP) of the model -- no second derivatives.

    Raises:
      ValueError: unknown ``loss``; ``wrt`` selects nothing; mismatched batches.
      TypeError: a batch is not an ``(inputs, targets)`` pair, or the model's output has no
        batch axis.

    Example:
      >>> import jax.numpy as jnp
      >>> import chainrule as cr
      >>> x = jnp.array([[1.0, 0.0], [0.0, 2.0]])
      >>> op = cr.curvature.ggn(lambda w, x: x @ w, jnp.zeros((2, 1)), [(x, jnp.zeros((2, 1)))])
      >>> op.to_dense().tolist()   # (2 / 2) x^T x: the Hessian of the MSE of a linear model
      [[1.0, 0.0], [0.0, 4.0]]
    """
    spec = LOSSES.get(loss)
    return _output_operator(
        "ggn",
        model,
        params,
        batches,
        loss,
        wrt,
        accumulate,
        lambda o, y, k, u: spec.hvp(o, y, u),
        mesh=mesh,
        data_axis=data_axis,
    )


def _rank_one_per_sample(s: jax.Array, u: jax.Array) -> jax.Array:
    """``(1/B) sum_n s_n (s_n . u_n)``: a per-sample outer product in output space."""
    axes = tuple(range(1, s.ndim))
    w = jnp.sum(s * u, axis=axes, keepdims=True)
    return s * w / s.shape[0]


def empirical_fisher(
    model: Callable,
    params: PyTree,
    batches: Sequence[PyTree],
    loss: str = "softmax_cross_entropy",
    *,
    wrt: Wrt = None,
    accumulate: Any = None,
    mesh: Any = None,
    data_axis: Any = "data",
) -> CurvatureOperator:
    """The empirical Fisher ``mean_b (1/B) sum_n g_n g_n^T`` of per-sample loss gradients.

    ``g_n = J_n^T d l_n / d out_n`` at the data's own targets (``l_n`` the per-sample loss, whose
    mean is the batch loss). Not the Fisher of the model's predictive distribution (see
    :func:`mc_fisher`): at the data's labels it is a different matrix in general.

    Args:
      model: ``model(params, inputs) -> outputs``.
      params: the point.
      batches: a list of ``(inputs, targets)`` pairs.
      loss: a key of :data:`LOSSES`.
      wrt: restrict to a sub-tree.
      accumulate: dtype of the sum over batches.
      mesh, data_axis: split every batch along this mesh axis (as for :func:`hessian`).

    Returns:
      A :class:`CurvatureOperator`; one matvec is one JVP and one VJP of the model per batch.

    Raises:
      As :func:`ggn`.

    Example:
      >>> import jax.numpy as jnp
      >>> import chainrule as cr
      >>> x, y = jnp.array([[1.0], [2.0]]), jnp.zeros((2, 1))
      >>> op = cr.curvature.empirical_fisher(lambda w, x: x @ w, jnp.ones((1, 1)), [(x, y)], "mse")
      >>> op.to_dense().tolist()   # mean_n (2 x_n (x_n w - y_n))^2 = (4 + 64) / 2
      [[34.0]]
    """
    spec = LOSSES.get(loss)
    return _output_operator(
        "empirical_fisher",
        model,
        params,
        batches,
        loss,
        wrt,
        accumulate,
        lambda o, y, k, u: _rank_one_per_sample(spec.out_grad(o, y), u),
        mesh=mesh,
        data_axis=data_axis,
    )


def mc_fisher(
    model: Callable,
    params: PyTree,
    batches: Sequence[PyTree],
    loss: str = "softmax_cross_entropy",
    *,
    key: jax.Array,
    num_samples: int = 1,
    wrt: Wrt = None,
    accumulate: Any = None,
    mesh: Any = None,
    data_axis: Any = "data",
) -> CurvatureOperator:
    """The Monte-Carlo Fisher: targets drawn from the model's own predictive distribution.

    ``mean_b (1/B) sum_n (1/S) sum_s J_n^T s_ns s_ns^T J_n`` with ``s_ns`` the output gradient
    of the per-sample loss at a target sampled from the model (categorical for cross-entropy,
    Bernoulli for binary cross-entropy, Gaussian for squared error), so that
    ``E[s s^T] = H_loss``: in expectation the MC Fisher *is* the GGN (for these losses the
    Fisher of the predictive distribution equals the GGN). The samples are drawn once per batch
    from ``key`` (folded with the batch index), so the operator is a fixed symmetric PSD matrix.

    Args:
      model: ``model(params, inputs) -> outputs``.
      params: the point.
      batches: a list of ``(inputs, targets)`` pairs (the targets are not used).
      loss: a key of :data:`LOSSES`.
      key: a PRNG key.
      num_samples: sampled targets per data point ``S``.
      wrt: restrict to a sub-tree.
      accumulate: dtype of the sum over batches.
      mesh, data_axis: split every batch along this mesh axis (as for :func:`hessian`).

    Returns:
      A :class:`CurvatureOperator`; one matvec is one JVP and one VJP of the model per batch.

    Raises:
      As :func:`ggn`; ValueError for ``num_samples < 1``.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> import chainrule as cr
      >>> x = jnp.ones((4, 1))
      >>> op = cr.curvature.mc_fisher(lambda w, x: x @ w, jnp.zeros((1, 3)), [(x, jnp.zeros(4))],
      ...                             key=jax.random.PRNGKey(0), num_samples=2)
      >>> op.to_dense().shape
      (3, 3)
    """
    if not isinstance(num_samples, (int, np.integer)) or num_samples < 1:
        raise ValueError(f"num_samples: expected an int >= 1, found {num_samples!r}.")
    spec = LOSSES.get(loss)

    def out_op(o, y, k, u):
        keys = jax.random.split(k, num_samples)
        parts = jax.vmap(lambda kk: _rank_one_per_sample(spec.sample(kk, o), u))(keys)
        return jnp.mean(parts, axis=0)

    return _output_operator(
        "mc_fisher",
        model,
        params,
        batches,
        loss,
        wrt,
        accumulate,
        out_op,
        key=key,
        mesh=mesh,
        data_axis=data_axis,
    )
