"""Gradient checks: automatic derivatives against finite differences, with an error model.

A check compares what AD computes (JAX's transforms, including any ``jax.custom_jvp`` /
``jax.custom_vjp`` rule on the way) with a finite-difference estimate along random directions,
and accepts the difference only if it is within a tolerance *derived* from the two sides'
errors rather than a fixed ``atol``/``rtol``:

``tolerance = safety * |FD error estimate| + C_AD * eps * sqrt(W) * |AD| * (1 + 1/h_rel)``

* The FD error estimate comes from :mod:`chainrule.fd`'s Richardson ladder: central
  differences at ``levels`` halving steps, extrapolated to orders 4 and 6, the best entry
  picked per output leaf with its error taken as the largest difference to its neighbours in step
  size (truncation and round-off noise both show there), floored by the round-off model
  ``eps * max|f| * sum|c| / h`` (max over the points used). ``safety`` (default 10) covers
  the chance that the measured difference underestimates the error.
* The AD side rounds too: a derivative is a sum of about W (the number of inputs) products,
  each rounded at ``eps``; with random signs the error grows like ``sqrt(W) * eps * |result|``
  (``C_AD = 4``). For the dot-product test the AD term is ``8 * eps * sum |terms|``.
* Norms are taken per output leaf and per direction, so one unlucky element cannot raise a
  false alarm, while an error concentrated in one element, row or leaf still shows.

Because the FD side is accurate to ~1e-5 relative in float32 (~1e-10 in float64) where a
fixed-step checker is accurate to ~1e-3, 1% and 1e-3 errors are caught in float32, and a
function with inputs of magnitude 1e3 or a sum over 1e5 terms raises no false alarm.

Checks (each run along ``num_directions`` random directions drawn from ``seed``/``key``):

* ``jvp``: forward mode ``J v`` against FD ``J v``; and its primal output against ``f(x)``.
* ``vjp``: the dot-product test ``<u, J v> = <J^T u, v>`` with ``J v`` from FD and ``J^T u``
  from reverse mode; and the primal output of the VJP against ``f(x)``.
* ``hvp[mode]``: second order: FD of the AD gradient along ``v`` against the AD HVP
  (``fwd-over-rev`` when ``"fwd"`` is in modes, ``rev-over-rev`` for ``"rev"``). A non-scalar
  ``f`` is reduced to ``<u0, f(x)>`` with a random ``u0``.
* ``taylor``: ``|f(x+hv) - f(x) - h <g, v>|`` must shrink as O(h^2) over a ladder of h: a
  step-size-free check (see :func:`taylor_test`).

The checks run where the caller puts them: at ``args``. An error confined to a region of the
input space is caught when ``args`` visits that region (e.g. a batch of points spanning the
domain of interest); ``check_grads`` does not invent other points.

Everything that involves ``f`` (the evaluations along the FD ladder, the JVP, VJP and HVP) is one
jit-compiled program per (function, shapes, options): a repeated check of the same function at
the same shapes does not re-trace. What does not involve ``f`` (random directions, steps, the
Richardson table, the comparisons) runs on the host in NumPy, except the Richardson table of
large leaves (over 2^18 line values, e.g. a gradient ladder), which is one small kernel per
shape shared by every check (on an accelerator it also compares the HVPs there, and only
statistics come back); so a cold check compiles little beyond the derivatives of ``f``.
The compiler options that make this cheap are in :func:`_compile_options`. A mode that does not
exist for ``f`` (forward mode of a ``custom_vjp`` function) is reported as skipped.

Costs, in evaluations of ``f`` per direction: FD ``2 * levels + 1`` (13 by default); a JVP ~2-3;
a VJP ~3; an HVP check ``2 * levels + 1`` gradient evaluations (~3 each) plus one HVP (~4-5). On
failure the program runs again with the ladder 64x, then 4096x lower (FD across a kink or past
f's domain is wrong at large steps only; a re-check passes only within the first run's
tolerances), and a localisation pass repeats the first-order FD once per input leaf.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from chainrule._tree import (
    check_choice,
    check_differentiable,
    is_hashable,
    leaf_paths,
    tree_size,
)
from chainrule.fd import (
    DEFAULT_LEVELS,
    _floor_scale,
    _noise_seen,
    _richardson_matrices,
    _richardson_table,
    dtype_eps,
)

PyTree = Any

__all__ = [
    "CheckResult",
    "CheckReport",
    "GradientCheckError",
    "check_grads",
    "check_jvp",
    "check_vjp",
    "check_hvp",
    "taylor_test",
]

MODES = ("fwd", "rev")
HVP_CHECK_MODES = ("fwd-over-rev", "rev-over-rev", "rev-over-fwd")
C_AD = 4.0  # AD rounding: C_AD * eps * sqrt(W) * |result|
C_DOT = 8.0  # dot-product test rounding: C_DOT * eps * sum |terms|


def _input_rounding(eps: float) -> float:
    """``1 + 1/h_rel``: besides the AD side's own rounding, the FD side perturbs inputs that are
    themselves rounded at ``eps |x|``; divided by the relative step ``h_rel = 2 eps^(1/7)`` at
    the top of the ladder, that is a derivative error of ``eps sqrt(W) |J v| / h_rel`` for W
    inputs with random signs, whatever the FD error estimate says (it cannot see it when f(x)
    is a sum of cancelling terms)."""
    return 1.0 + 1.0 / (2.0 * eps ** (1 / 7))


def _ad_coef(eps: float, W: int) -> float:
    """AD-side rounding allowed per unit of ``|AD result|``: ``C_AD eps sqrt(W) (1 + 1/h_rel)``."""
    return C_AD * eps * math.sqrt(W) * _input_rounding(eps)


C_PRIMAL = 64.0  # primal outputs: 64 ulps of the output's scale
TAYLOR_ORDER = 1.5  # required convergence order of the Taylor remainder (1 = wrong, 2 = right)


class GradientCheckError(AssertionError):
    """Raised by :meth:`CheckReport.raise_if_failed`; its message is the report's summary."""


@dataclasses.dataclass(frozen=True)
class CheckResult:
    """One check's outcome.

    Attributes:
      name: ``"jvp"``, ``"jvp primal"``, ``"vjp"``, ``"vjp primal"``, ``"hvp[fwd-over-rev]"``,
        ``"hvp[rev-over-rev]"``, ``"hvp[rev-over-fwd]"`` or ``"taylor"``.
      status: ``"passed"``, ``"failed"`` or ``"skipped"``.
      error: the measured error (for ``taylor``: the observed convergence order).
      tolerance: what it was held to (for ``taylor``: the required order).
      error_model: where the tolerance came from, with its components.
      fd_error: the finite-difference error estimate at the worst direction (None if n/a).
      worst_path: pytree path of the worst leaf (output leaf for jvp/primal, input leaf for
        vjp/hvp), or None.
      worst_index: index of the worst element within that leaf, or None.
      note: extra information (why skipped, NaN/Inf found, ...).
    """

    name: str
    status: str
    error: float = float("nan")
    tolerance: float = float("nan")
    error_model: str = ""
    fd_error: float | None = None
    worst_path: str | None = None
    worst_index: tuple[int, ...] | None = None
    note: str = ""

    @property
    def passed(self) -> bool:
        return self.status != "failed"

    def line(self) -> str:
        if self.status == "skipped":
            return f"  SKIP {self.name}: {self.note}"
        tag = "ok  " if self.status == "passed" else "FAIL"
        where = ""
        if self.worst_path is not None:
            where = f" worst at {self.worst_path}"
            if self.worst_index is not None:
                where += f"{list(self.worst_index)}"
        fd = f", FD err {self.fd_error:.2e}" if self.fd_error is not None else ""
        txt = f"  {tag} {self.name}: error {self.error:.3e} vs tol {self.tolerance:.3e}{fd}{where}"
        if self.error_model:
            txt += f"\n       tol = {self.error_model}"
        if self.note:
            txt += f"\n       note: {self.note}"
        return txt


@dataclasses.dataclass(frozen=True)
class CheckReport:
    """The outcome of a gradient check: ``passed``, per-check results, ``summary()``.

    Skipped checks do not fail the report. Use ``report.raise_if_failed()`` (or
    ``assert report.passed, report.summary()``) in tests.
    """

    results: tuple[CheckResult, ...]
    function: str = ""
    dtype: str = ""

    @property
    def passed(self) -> bool:
        return all(r.passed for r in self.results) and any(
            r.status == "passed" for r in self.results
        )

    @property
    def failed(self) -> tuple[CheckResult, ...]:
        return tuple(r for r in self.results if r.status == "failed")

    @property
    def skipped(self) -> tuple[CheckResult, ...]:
        return tuple(r for r in self.results if r.status == "skipped")

    def __getitem__(self, name: str) -> CheckResult:
        for r in self.results:
            if r.name == name:
                return r
        raise KeyError(f"No check named {name!r}; have {[r.name for r in self.results]}.")

    def summary(self) -> str:
        """A readable multi-line account: one line per check, tolerances and their sources."""
        head = "PASSED" if self.passed else "FAILED"
        if not any(r.status == "passed" for r in self.results) and not self.failed:
            head = "FAILED (nothing could be checked)"
        lines = [f"gradient check of {self.function} ({self.dtype}): {head}"]
        lines += [r.line() for r in self.results]
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.summary()

    def raise_if_failed(self) -> CheckReport:
        """Raise :class:`GradientCheckError` (an AssertionError) with the summary if failed."""
        if not self.passed:
            raise GradientCheckError(self.summary())
        return self

    assert_passed = raise_if_failed

    def assert_failed(self, *names: str) -> CheckReport:
        """Assert that the report failed (and, if given, that each named check failed)."""
        if self.passed:
            raise AssertionError("expected the gradient check to fail:\n" + self.summary())
        for n in names:
            if self[n].status != "failed":
                raise AssertionError(f"expected check {n!r} to fail:\n" + self.summary())
        return self


# --------------------------------------------------------------------------------------------
# Configuration and availability probes
# --------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class _Cfg:
    checks: tuple[str, ...]
    num_directions: int
    levels: int
    safety: float
    step: float | None
    taylor_levels: int = 14


def _struct(args: tuple) -> tuple:
    leaves, treedef = jax.tree_util.tree_flatten(args)
    return treedef, tuple((np.shape(x), jnp.result_type(x)) for x in leaves)


def _scalarized(g: Callable, u0: PyTree | None) -> Callable:
    """``g`` if ``u0`` is None (scalar output), else ``a -> <u0, g(a)>``."""
    if u0 is None:
        return lambda a: jax.tree_util.tree_leaves(g(a))[0]

    def phi(a):
        o = jax.tree_util.tree_leaves(g(a))
        return sum(jnp.sum(x * u) for x, u in zip(o, jax.tree_util.tree_leaves(u0), strict=True))

    return phi


def _hvp(phi: Callable, x: PyTree, v: PyTree, mode: str) -> PyTree:
    if mode == "fwd-over-rev":
        return jax.jvp(jax.grad(phi), (x,), (v,))[1]
    if mode == "rev-over-rev":
        return jax.vjp(jax.grad(phi), x)[1](v)[0]
    return jax.grad(lambda a: jax.jvp(phi, (a,), (v,))[1])(x)


def _ad_probe(f: Callable, check: str, args: tuple) -> None:
    """Trace the AD side of ``check`` as ``_eval_impl`` does (under vmap: JAX raises its
    forward-mode TypeError for custom_vjp functions only once the tangent is batched)."""
    g = lambda a: f(*a)
    vs = jax.tree.map(lambda x: jax.ShapeDtypeStruct((1, *x.shape), x.dtype), args)
    if check == "jvp":
        jax.eval_shape(lambda a, v: jax.vmap(lambda t: jax.jvp(g, (a,), (t,)))(v), args, vs)
    elif check == "vjp":
        jax.eval_shape(lambda a: jax.vjp(g, a)[1](g(a)), args)
    elif check.startswith("hvp"):
        mode = check[4:-1]
        out = jax.eval_shape(g, args)
        # The contraction vector goes in as an argument so that eval_shape turns its
        # ShapeDtypeStructs into tracers; closed over, they would meet the tracers of g(a).
        u0 = None if _is_scalar(out) else out

        def hvps(a, v, u):
            phi = _scalarized(g, u)
            return jax.vmap(lambda t: _hvp(phi, a, t, mode))(v)

        jax.eval_shape(hvps, args, vs, u0)
    elif check == "taylor":
        out = jax.eval_shape(g, args)
        u0 = None if _is_scalar(out) else out
        jax.eval_shape(lambda a, u: jax.grad(_scalarized(g, u))(a), args, u0)


def _is_scalar(out: PyTree) -> bool:
    leaves = jax.tree_util.tree_leaves(out)
    return len(leaves) == 1 and tuple(leaves[0].shape) == ()


_UNAVAILABLE = (TypeError, NotImplementedError)  # what JAX raises for a mode f does not have


def _why(e: Exception) -> str:
    return f"{type(e).__name__}: {str(e).splitlines()[0][:160]}"


@functools.lru_cache(maxsize=512)
def _available_cached(f: Callable, check: str, struct: tuple) -> str | None:
    treedef, shapes = struct
    args = treedef.unflatten([jax.ShapeDtypeStruct(s, d) for s, d in shapes])
    try:
        _ad_probe(f, check, args)
    # jax: TypeError "can't apply forward-mode autodiff (jvp) to a custom_vjp function", and
    # NotImplementedError "Differentiation rule for 'custom_lin'" (rev-over-fwd of a custom_vjp)
    except _UNAVAILABLE as e:
        return _why(e)
    return None


def _available(f: Callable, check: str, args: tuple) -> str | None:
    """None if the AD side of ``check`` exists for ``f``, else the reason (TypeError text)."""
    if is_hashable(f):
        return _available_cached(f, check, _struct(args))
    try:
        _ad_probe(f, check, args)
    except _UNAVAILABLE as e:
        return _why(e)
    return None


@functools.lru_cache(maxsize=512)
def _out_struct_cached(f: Callable, struct: tuple) -> PyTree:
    treedef, shapes = struct
    args = treedef.unflatten([jax.ShapeDtypeStruct(s, d) for s, d in shapes])
    return jax.eval_shape(lambda a: f(*a), args)


def _out_struct(f: Callable, args: tuple) -> PyTree:
    if is_hashable(f):
        return _out_struct_cached(f, _struct(args))
    return jax.eval_shape(lambda a: f(*a), args)


# --------------------------------------------------------------------------------------------
# The compiled, function-dependent part: evaluations of f and of its AD derivatives.
# Everything that does not depend on f (random directions, steps, the Richardson table, the
# comparisons) runs on the host in NumPy: it costs no compilation, so a cold check compiles
# only what a check of f must compile.
# --------------------------------------------------------------------------------------------


def _line(fn: Callable, x: PyTree, vs: PyTree, ts: jax.Array) -> PyTree:
    """``fn(x + ts[k, j] vs[k])`` for every direction k and step j: leaves get (K, T) axes."""

    def at(v, t):
        return fn(jax.tree.map(lambda a, b: a + t.astype(a.dtype) * b, x, v))

    return jax.vmap(lambda v, tk: jax.vmap(lambda t: at(v, t))(tk))(vs, ts)


def _eval_impl(f, args, vs, us, u0, ts, tts, cfg):
    g = lambda a: f(*a)
    res: dict[str, Any] = {"f0": g(args)}
    if "jvp" in cfg.checks or "vjp" in cfg.checks:
        res["F"] = _line(g, args, vs, ts)
    if "jvp" in cfg.checks:
        prim, tan = jax.vmap(lambda v: jax.jvp(g, (args,), (v,)))(vs)
        res["jvp"] = (jax.tree.map(lambda t: t[0], prim), tan)
    if "vjp" in cfg.checks:
        out, pull = jax.vjp(g, args)
        res["vjp"] = (out, jax.vmap(lambda u: pull(u)[0])(us))
    hvps = [c for c in cfg.checks if c.startswith("hvp")]
    if hvps or "taylor" in cfg.checks:
        phi = _scalarized(g, u0)
        grad_fn = jax.grad(phi)
    if hvps:
        res["G"] = _line(grad_fn, args, vs, ts)
        for c in hvps:
            res[c] = jax.vmap(lambda v: _hvp(phi, args, v, c[4:-1]))(vs)
    if "taylor" in cfg.checks:
        gr = grad_fn(args)
        d = jax.vmap(
            lambda v: sum(
                jnp.sum(a * b)
                for a, b in zip(
                    jax.tree_util.tree_leaves(gr), jax.tree_util.tree_leaves(v), strict=True
                )
            )
        )(vs)
        res["taylor"] = (phi(args), _line(phi, args, vs, tts), d)
    return res


# Options that make a check's programs compile faster, by backend, and that an XLA older or
# newer than the measured one may not know (then :func:`_fast_jit` drops them). XLA:CPU's
# fusion emitters (its default since 2025) spend ~0.35 s more on a check's program than the
# older IR emitters. On a GPU (H200, jax 0.11.2, the 196k MLP's check) Triton GEMM fusions took
# 2.1 of the 2.7 s of compilation, cuBLAS runs the same small matmuls without compiling; ptxas
# without optimisation saves another ~0.2 s on the check's program.
_FAST = {
    "cpu": ({"xla_cpu_use_fusion_emitters": False}, {}),
    "gpu": ({"xla_gpu_enable_triton_gemm": False}, {"xla_gpu_disable_gpuasm_optimizations": True}),
}


def _compile_options(optimize: bool, fast: bool = True) -> dict[str, Any] | None:
    """Compiler options for a check's programs, or None with ``CHAINRULE_CHECK_O0=0``.

    A check runs its program a few times but compiles it once per function: without
    ``optimize``, XLA's backend optimisation level 0 (LLVM passes are most of a cold check's
    time on the CPU, while the matmuls are library calls either way) and on a GPU ptxas's -O0.
    On a GPU no GEMM autotuning (it tries algorithms per distinct matmul shape at compile time)
    and no Triton GEMMs, on the CPU the IR emitters, in either case (``fast``: the options of
    ``_FAST``). ``CHAINRULE_CHECK_XLA_OPTIONS`` (a JSON object, read at import) is merged over
    these: how options are tried on a new accelerator.
    """
    import json
    import os

    if os.environ.get("CHAINRULE_CHECK_O0", "1") == "0":
        return None
    opts: dict[str, Any] = {} if optimize else {"xla_backend_optimization_level": 0}
    backend = jax.default_backend()
    if backend == "gpu":
        opts["xla_gpu_autotune_level"] = 0
    both, unoptimized = _FAST.get(backend, ({}, {}))
    if fast:
        opts.update(both)
        if not optimize:
            opts.update(unoptimized)
    extra = os.environ.get("CHAINRULE_CHECK_XLA_OPTIONS", "").strip()
    if extra:
        try:
            parsed = json.loads(extra)
        except json.JSONDecodeError as e:
            parsed = e
        if not isinstance(parsed, dict):
            raise ValueError(
                "CHAINRULE_CHECK_XLA_OPTIONS must be a JSON object of XLA options, e.g. "
                f"'{{\"xla_gpu_enable_triton_gemm\": false}}', found {extra!r} ({parsed}); "
                "unset it to use chainrule's defaults."
            )
        opts.update(parsed)
    return opts or None


def _fast_jit(impl: Callable, static_argnums: tuple[int, ...], optimize: bool) -> Callable:
    """``jax.jit(impl)`` with :func:`_compile_options`; an XLA without the CPU flag (older or
    newer than the one it was measured on: "No such compile option") gets the other options.
    ``call.jit(f, static_argnums)`` builds another jit with the same options."""
    state: dict[str, Any] = {}

    def build(opts):
        state["opts"] = opts
        state["jitted"] = jax.jit(impl, static_argnums=static_argnums, compiler_options=opts)

    def jit(fn: Callable, static: tuple[int, ...]) -> Callable:
        return jax.jit(fn, static_argnums=static, compiler_options=state["opts"])

    def call(*args: Any, _run: Callable | None = None) -> Any:
        run = _run or (lambda: state["jitted"](*args))
        try:
            return run()
        except jax.errors.JaxRuntimeError as e:
            fallback = _compile_options(optimize, fast=False)
            if "No such compile option" not in str(e) or state["opts"] == fallback:
                raise
        build(fallback)
        return run()

    build(_compile_options(optimize))
    call.jit = jit  # type: ignore[attr-defined]
    call.state = state  # type: ignore[attr-defined]
    return call


def _compiled_fast(impl: Callable, static_argnums: tuple[int, ...]) -> Callable:
    """Like ``chainrule.ad._compiled`` (``fun`` static, one cached jit), with the unoptimised
    options of :func:`_compile_options`."""
    jitted = _fast_jit(impl, (0, *static_argnums), optimize=False)
    tail = tuple(i - 1 for i in static_argnums)

    def call(fun: Callable, *args: Any) -> Any:
        if is_hashable(fun):
            return jitted(fun, *args)
        return jitted(_run=lambda: jitted.jit(functools.partial(impl, fun), tail)(*args))

    return call


_eval = _compiled_fast(_eval_impl, static_argnums=(7,))


# --------------------------------------------------------------------------------------------
# Host side: directions, steps, Richardson, comparisons
# --------------------------------------------------------------------------------------------


def _np_leaves(tree: PyTree) -> list[np.ndarray]:
    return [np.asarray(x) for x in jax.tree_util.tree_leaves(tree)]


def _directions(tree: PyTree, K: int, seed: int, key: jax.Array | None, salt: int) -> PyTree:
    """K standard-normal directions shaped like ``tree`` (leading axis K), seeded."""
    leaves, treedef = jax.tree_util.tree_flatten(tree)
    if key is not None:
        keys = jax.random.split(jax.random.fold_in(key, salt), max(len(leaves), 1))
        out = [
            np.asarray(jax.random.normal(k, (K, *x.shape), x.dtype))
            for k, x in zip(keys, leaves, strict=False)
        ]
    else:
        shapes = tuple((tuple(x.shape), np.dtype(x.dtype)) for x in leaves)
        out = list(_seeded_normals(shapes, K, int(seed), salt))
    return treedef.unflatten(out)


@functools.lru_cache(maxsize=8)
def _seeded_normals(shapes: tuple, K: int, seed: int, salt: int) -> tuple[np.ndarray, ...]:
    # A repeated check (a second point, same shapes) draws the same directions: drawing ~1e5
    # normals costs a few ms per check, as much as the rest of the host side. Read-only, as
    # they are shared between checks.
    rng = np.random.default_rng([seed, salt])
    out = tuple(rng.standard_normal((K, *shape)).astype(dt) for shape, dt in shapes)
    for x in out:
        x.flags.writeable = False
    return out


def _rms_np(leaves: list[np.ndarray], axis0: bool = False) -> np.ndarray:
    if axis0:
        K = leaves[0].shape[0]
        sq = sum(np.sum(np.abs(x.reshape(K, -1).astype(np.float64)) ** 2, 1) for x in leaves)
        n = sum(x[0].size for x in leaves)
    else:
        sq = sum(np.sum(np.abs(x.astype(np.float64)) ** 2) for x in leaves)
        n = sum(x.size for x in leaves)
    return np.sqrt(sq / max(n, 1))


def _leaf_scales(args: tuple) -> list[float]:
    """Per input leaf, the magnitude its direction is scaled to: the leaf's rms, or (for an
    all-zero leaf) the rms of all of ``args``, or 1.

    A direction is any direction, so it may as well respect the parameters' own scale: weights
    of size 0.02 perturbed on a unit scale leave the asymptotic range of every step in the
    ladder (a false alarm we measured on a tanh MLP before scaling), while inputs of size 1e3
    perturbed on a unit scale drown in their own rounding (eps * 1e3).
    """
    xs = jax.device_get(jax.tree_util.tree_leaves(args))  # one transfer, not one per leaf
    glob = float(_rms_np(xs)) if xs else 1.0
    glob = glob if glob > 0 and np.isfinite(glob) else 1.0
    out = []
    for x in xs:
        r = float(_rms_np([x])) if x.size else 0.0
        out.append(r if r > 0 and np.isfinite(r) else glob)
    return out


def _scale_dirs(vs: PyTree, scales: list[float]) -> PyTree:
    leaves, treedef = jax.tree_util.tree_flatten(vs)
    return treedef.unflatten(
        [(v * np.asarray(s, v.dtype)).astype(v.dtype) for v, s in zip(leaves, scales, strict=True)]
    )


def _steps(
    vs: PyTree, scales: list[float], cfg: _Cfg, eps: float, tdtype
) -> tuple[np.ndarray, ...]:
    """Per direction: the largest step h0 of the ladder and the (K, 2L+1) line parameters.

    ``h0 = 2 eps^(1/7) / rms(v / scale)`` over the non-zero leaves of ``v``: with directions
    scaled to the leaves (:func:`_leaf_scales`) each coordinate moves by about
    ``2 eps^(1/7)`` of its own size at the top of the ladder (0.2 in float32, 0.012 in float64),
    halving ``levels - 1`` times.
    """
    vl = _np_leaves(vs)
    K = vl[0].shape[0]
    sq = np.zeros(K)
    n = np.zeros(K)
    for v, s in zip(vl, scales, strict=True):
        r = np.abs(v.reshape(K, -1).astype(np.float64)) / s
        nz = np.any(r > 0, axis=1)
        sq += np.where(nz, np.sum(r**2, axis=1), 0.0)
        n += np.where(nz, r.shape[1], 0)
    rv = np.sqrt(sq / np.maximum(n, 1))
    unit = 1.0 / np.where(rv > 0, rv, 1.0)
    h0 = (2.0 * eps ** (1 / 7) * unit) if cfg.step is None else np.full(K, cfg.step)
    h0 = h0.astype(tdtype)
    L = cfg.levels
    hs = h0[:, None] * (0.5 ** np.arange(L)).astype(tdtype)[None]
    ts = np.concatenate([hs, -hs, np.zeros((len(h0), 1), tdtype)], 1)
    Lt = cfg.taylor_levels
    tts = h0[:, None] * (0.5 ** np.arange(Lt)).astype(tdtype)[None]
    return h0, ts, tts


def _richardson_np(F: np.ndarray, h0: np.ndarray, eps: float, levels: int):
    """Host version of :func:`chainrule.fd._richardson_table` for (K, T, n) line values.

    The combinations run in F's own dtype (BLAS matmuls): their rounding, ``eps |F| sum|c|``,
    is what the round-off floor already allows for.
    """
    A, BL, BR, amp = (m.astype(F.dtype) for m in _richardson_matrices(levels))
    K = F.shape[0]
    ests, errs = [], []
    tiny = np.finfo(F.dtype).tiny
    for k in range(K):
        Fk = F[k]
        h = F.dtype.type(h0[k])
        with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
            E = np.maximum(np.abs(BL @ Fk), np.abs(BR @ Fk)) / h
            model = eps * (_floor_scale(np.abs(Fk), levels, np) + tiny)
            E = np.maximum(E, amp[:, None] * model / h)
            E[np.isnan(E)] = np.inf
            seen = _noise_seen(Fk, levels, np)
            seen[np.isnan(seen)] = np.inf
            # One entry per (direction, leaf): the smallest error in norm over the leaf.
            # Picking per element would let a few elements whose neighbour differences cancel
            # by chance pass an underestimated error; a whole leaf cannot be that unlucky.
            score = np.maximum(_norm_rows(E, np), amp * _norm_rows(seen[None], np)[0] / h)
            i = int(np.argmin(score))
            est = (A[i] @ Fk) / h  # only the chosen candidate is formed
            err = np.maximum(E[i], amp[i] * seen / h)
        ests.append(est.astype(np.float64))
        errs.append(err.astype(np.float64))
    return np.stack(ests), np.stack(errs)


def _richardson_dev_impl(F: jax.Array, h0: jax.Array, eps: float, levels: int):
    # compiled once per (shape, dtype, levels), independent of f: shared by every check; an
    # elementwise kernel, so optimised (at level 0 on the CPU it runs 2x slower)
    K, T = F.shape[:2]
    F = F.reshape(K, T, -1)  # here, not eagerly: an eager reshape is a dispatch of its own
    return jax.vmap(_richardson_table, in_axes=(0, 0, None, None))(F, h0, eps, levels)


_richardson_dev = _fast_jit(_richardson_dev_impl, (2, 3), optimize=True)


_HOST_MAX = 1 << 18  # line values up to this size are combined in NumPy (no compilation)


def _fd_tree(Ftree: PyTree, h0, eps, levels) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Per leaf of a line-value pytree (K, T, *shape): FD estimates and errors, (K, n)."""
    ests, errs = [], []
    for F in jax.tree_util.tree_leaves(Ftree):
        K, T = F.shape[:2]
        if F.size <= _HOST_MAX:
            e, r = _richardson_np(np.asarray(F).reshape(K, T, -1), h0, eps, levels)
        else:
            e, r = _richardson_dev(F, h0, eps, levels)
        ests.append(np.asarray(e, np.float64))
        errs.append(np.asarray(r, np.float64))
    return ests, errs


def _first_bad(x, xp=np):
    """Flat index of the first element that is NaN/Inf in any direction (axis 0), or -1."""
    bad = ~xp.isfinite(x.reshape(x.shape[0], -1) if x.ndim else x.reshape(1, 1))
    anyb = xp.any(bad, axis=0)
    if xp is np:
        return int(np.argmax(anyb)) if anyb.any() else -1
    return jnp.where(jnp.any(anyb), jnp.argmax(anyb), -1)


def _unravel(i: int, shape: tuple[int, ...]) -> tuple[int, ...] | None:
    if not shape or 0 in shape:  # a scalar, or an empty leaf (no element to point at)
        return None
    return tuple(int(j) for j in np.unravel_index(int(i), shape))


def _at(path: str, shape: tuple[int, ...], i: int) -> str:
    idx = _unravel(i, shape)
    return f"{path}{list(idx) if idx else ''}"


def _ratio(err, tol):
    err, tol = np.asarray(err, np.float64), np.asarray(tol, np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        r = np.where(tol > 0, err / np.where(tol > 0, tol, 1.0), np.where(err > 0, np.inf, 0.0))
    # a NaN error or tolerance certifies nothing (NaN > 0 is False: it would read as a pass)
    return np.where(np.isnan(r) | np.isnan(err) | np.isnan(tol), np.inf, r)


def _norm_rows(x, xp):
    """Per row of (K, n): the 2-norm, scaled by the row's largest |x| so that float32 squares
    cannot overflow (|x| > 1.8e19) or underflow; Inf and NaN rows stay Inf and NaN."""
    m = xp.max(xp.abs(x), axis=1) if x.shape[1] else xp.zeros(x.shape[0], x.dtype)
    ok = (m > 0) & xp.isfinite(m)
    ms = xp.where(ok, m, 1)
    return xp.where(ok, ms * xp.sqrt(xp.sum((x / ms[:, None]) ** 2, axis=1)), m)


def _leaf_stats(a, b, e, safety: float, ad_coef: float, xp=np) -> dict[str, Any]:
    """AD values ``a`` against FD estimates ``b`` with error estimates ``e``, (K, n) each.

    Per direction: the error ``||a - b||``, the FD error ``||e||``, the AD rounding
    ``ad_coef ||a||`` and the element whose error is largest against its share of the
    tolerance; the first NaN/Inf element of ``a`` and of ``b`` (-1: none). Generic in ``xp``:
    NumPy on the host, jax.numpy inside the Richardson kernel for large leaves, where only
    these few numbers leave the device (every sum is of non-negative terms, so float32 is
    benign there).
    """
    K, n = a.shape
    d = xp.abs(a - b)
    ad_r = ad_coef * _norm_rows(a, xp)
    if n:
        tiny = xp.finfo(d.dtype).tiny
        score = d / (safety * e + ad_r[:, None] / math.sqrt(n) + tiny)
        idx = xp.argmax(xp.where(xp.isnan(score), xp.inf, score), axis=1)
    else:
        idx = xp.zeros(K, xp.int32)
    return {
        "err": _norm_rows(d, xp),
        "fd": _norm_rows(e, xp),
        "ad": ad_r,
        "idx": idx,
        "bad_ad": _first_bad(a, xp),
        "bad_fd": _first_bad(b, xp),
    }


def _host_stats(ad_leaves, fd_leaves, err_leaves, cfg, ad_coef) -> list[dict[str, Any]]:
    out = []
    with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
        for a, b, e in zip(ad_leaves, fd_leaves, err_leaves, strict=True):
            a = a.reshape(a.shape[0], -1).astype(np.float64)
            out.append(_leaf_stats(a, b, e, cfg.safety, ad_coef))
    return out


def _stats_one(F, A, h0, eps, levels, safety, ad_coef):
    # one leaf's ladder F (K, T, ...) and its HVP modes A (M, K, n): Richardson, then every
    # mode's comparison at once (vmapped: the FD side's reductions are formed once)
    est, err = _richardson_dev_impl(F, h0, eps, levels)
    wide = jnp.promote_types(est.dtype, jnp.float32)  # float16 norms would overflow
    est, err = est.astype(wide), err.astype(wide)
    return jax.vmap(lambda a: _leaf_stats(a.astype(wide), est, err, safety, ad_coef, jnp))(A)


def _stats_dev_impl(Fs, h0, ads, eps, levels, safety, ad_coef):
    # leaves of one shape and dtype (a network's repeated layers) are stacked and vmapped: one
    # set of kernels per distinct shape, and kernels are most of this program's compile time
    groups: dict[tuple, list[int]] = {}
    for i, F in enumerate(Fs):
        groups.setdefault((F.shape, F.dtype), []).append(i)
    out: list[Any] = [None] * len(Fs)
    for idx in groups.values():
        F = jnp.stack([Fs[i] for i in idx])
        A = jnp.stack([jnp.stack([a.reshape(a.shape[0], -1) for a in ads[i]]) for i in idx])
        one = functools.partial(_stats_one, eps=eps, levels=levels, safety=safety, ad_coef=ad_coef)
        st = jax.vmap(one, in_axes=(0, 0, None))(F, A, h0)
        for g, i in enumerate(idx):
            out[i] = {k: v[g] for k, v in st.items()}
    return out


# Compiled once per set of leaf shapes and run once per check: unoptimised, like the check's
# program. Used where the host is not the device (on the CPU it would compile for ~1 s and run
# slower than NumPy on the same data).
_stats_dev = _fast_jit(_stats_dev_impl, (3, 4, 5, 6), optimize=False)


def _compare_on_device() -> bool:
    return jax.default_backend() != "cpu"


def _hvp_stats(G, hvps: list, h0, eps, levels, cfg, ad_coef) -> list[list[dict[str, Any]]]:
    """Per HVP output in ``hvps`` (pytrees like the input), per input leaf: :func:`_leaf_stats`
    against the Richardson estimate from the gradient ladder ``G``. Small leaves are combined
    on the host; on an accelerator large ones go through one device call that returns only
    the statistics (no transfer of the ladder's estimates, no host pass over them)."""
    g_leaves = jax.tree_util.tree_leaves(G)
    ad = [jax.tree_util.tree_leaves(t) for t in hvps]
    on_device = _compare_on_device()
    large = [i for i, x in enumerate(g_leaves) if on_device and x.size > _HOST_MAX]
    rest = [i for i in range(len(g_leaves)) if i not in large]
    out: list[list[Any]] = [[None] * len(g_leaves) for _ in hvps]
    if large:
        dev = _stats_dev(
            tuple(g_leaves[i] for i in large),
            h0,
            tuple(tuple(m[i] for m in ad) for i in large),
            eps,
            levels,
            cfg.safety,
            ad_coef,
        )
        for i, st in zip(large, jax.device_get(dev), strict=True):
            for m in range(len(hvps)):
                out[m][i] = {k: (int(v[m]) if k.startswith("bad") else v[m]) for k, v in st.items()}
    if rest:
        # one transfer; a leaf the host would not combine stays for _richardson_dev
        gl = [g_leaves[i] for i in rest]
        small, mods = jax.device_get(
            ([x for x in gl if x.size <= _HOST_MAX], [[m[i] for i in rest] for m in ad])
        )
        it = iter(small)
        est, err = _fd_tree([next(it) if x.size <= _HOST_MAX else x for x in gl], h0, eps, levels)
        for m, leaves in enumerate(mods):
            for i, st in zip(rest, _host_stats(leaves, est, err, cfg, ad_coef), strict=True):
                out[m][i] = st
    return out


def _compare_leaves(name, stats, paths, shapes, cfg, what, caps=None):
    """Judge per leaf and direction in norm, from :func:`_leaf_stats` of every leaf.

    Returns the result and each leaf's per-direction tolerances; ``caps`` (such tolerances
    from an earlier run) bound this run's: a re-check may not be looser than the first check.
    """
    best, notes, tols = None, [], []
    for li, st in enumerate(stats):
        if st["bad_ad"] >= 0:
            notes.append(f"NaN/Inf in {what} at {_at(paths[li], shapes[li], st['bad_ad'])}")
        if st["bad_fd"] >= 0:
            notes.append(
                f"NaN/Inf in finite differences at {_at(paths[li], shapes[li], st['bad_fd'])}"
            )
        err, fd_n, ad_r = (np.asarray(st[k], np.float64) for k in ("err", "fd", "ad"))
        tol = cfg.safety * fd_n + ad_r
        if caps is not None:
            tol = np.fmin(tol, caps[li])  # fmin: a NaN/Inf first tolerance bounds nothing
        tols.append(tol)
        ratio = _ratio(err, tol)
        k = int(np.argmax(ratio))
        cand = (
            float(ratio[k]),
            li,
            float(err[k]),
            float(tol[k]),
            float(fd_n[k]),
            float(ad_r[k]),
            int(st["idx"][k]),
        )
        if best is None or cand[0] > best[0]:
            best = cand
    ratio, li, err, tol, fd, ad, idx = best
    model = (
        f"{cfg.safety:g} x FD error estimate {fd:.2e} (Richardson ladder, {cfg.levels} "
        f"steps) + rounding {C_AD:g} eps sqrt(W) |AD| (1 + 1/h_rel) = {ad:.2e}"
    )
    status = "failed" if (ratio > 1 or notes) else "passed"
    res = CheckResult(
        name, status, err, tol, model, fd, paths[li], _unravel(idx, shapes[li]), "; ".join(notes)
    )
    return res, tols


def _compare_primal(name, p_leaves, f0_leaves, paths, shapes, eps, what):
    best, notes = None, []
    for li, (a, b) in enumerate(zip(p_leaves, f0_leaves, strict=True)):
        a = a.reshape(-1).astype(np.float64)
        b = b.reshape(-1).astype(np.float64)
        if _first_bad(a[None]) >= 0:
            notes.append(f"NaN/Inf in {what} at {_at(paths[li], shapes[li], _first_bad(a[None]))}")
        with np.errstate(invalid="ignore", over="ignore"):
            scale = np.abs(b) + np.linalg.norm(b) / math.sqrt(max(b.size, 1))
            tol = C_PRIMAL * eps * scale
            d = np.abs(a - b)
        r = _ratio(d, tol)
        i = int(np.argmax(r)) if r.size else 0
        cand = (
            float(r[i]) if r.size else 0.0,
            li,
            float(d[i]) if d.size else 0.0,
            float(tol[i]) if tol.size else 0.0,
            i,
        )
        if best is None or cand[0] > best[0]:
            best = cand
    ratio, li, err, tol, i = best
    model = f"{C_PRIMAL:g} eps (|f(x)| + rms f(x)) elementwise (both sides round at eps)"
    status = "failed" if (ratio > 1 or notes) else "passed"
    return CheckResult(
        name, status, err, tol, model, None, paths[li], _unravel(i, shapes[li]), "; ".join(notes)
    )


def _dot_test(
    us, est, err, jtu, vs, eps, cfg, in_paths, in_shapes, out_paths=None, out_shapes=None
):
    """<u, FD J v> against <J^T u, v> per direction."""
    K = est[0].shape[0]
    ul = [u.reshape(K, -1).astype(np.float64) for u in _np_leaves(us)]
    j_raw = [j.reshape(K, -1) for j in _np_leaves(jtu)]
    with np.errstate(invalid="ignore", over="ignore"):
        # products in float64, each formed once (W-sized: the host's largest work here).
        # J^T u where v is exactly 0 (the other leaves, when localising) contributes nothing:
        # a NaN there must not turn the re-check of a healthy leaf into a NaN
        jv = [
            np.where(v != 0, j * v.astype(np.float64), 0.0)
            for j, v in zip(j_raw, (v.reshape(K, -1) for v in _np_leaves(vs)), strict=True)
        ]
        lhs = sum(np.sum(u * e, 1) for u, e in zip(ul, est, strict=True))
        lhs_err = sum(np.sum(np.abs(u) * r, 1) for u, r in zip(ul, err, strict=True))
        rhs = sum(np.sum(x, 1) for x in jv)
        terms = sum(np.sum(np.abs(u * e), 1) for u, e in zip(ul, est, strict=True)) + sum(
            np.sum(np.abs(x), 1) for x in jv
        )
        terms = terms * _input_rounding(eps)
        tol = cfg.safety * lhs_err + C_DOT * eps * terms
        dif = np.abs(lhs - rhs)
    notes = [
        f"NaN/Inf in the AD cotangent (vjp) at {_at(p, s, _first_bad(j))}"
        for p, s, j in zip(in_paths, in_shapes, j_raw, strict=True)
        if _first_bad(j) >= 0
    ]
    if out_paths is not None:
        notes += [
            f"NaN/Inf in finite differences at {_at(p, s, _first_bad(e))}"
            for p, s, e in zip(out_paths, out_shapes, est, strict=True)
            if _first_bad(e) >= 0
        ]
    return dif, tol, lhs_err, C_DOT * eps * terms, notes


def _taylor_result(p0, ps, d, tts, eps, W) -> CheckResult:
    p0 = float(np.asarray(p0))
    ps = np.asarray(ps, np.float64)
    hh = np.asarray(tts, np.float64)
    d = np.asarray(d, np.float64)[:, None]
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        r = np.abs(ps - p0 - hh * d)
        noise = 8 * eps * (abs(p0) + np.abs(ps)) + C_AD * eps * math.sqrt(W) * np.abs(hh * d)
        rate = np.log2(r[:, :-1] / r[:, 1:])
    valid = (r[:, 1:] > 10 * noise[:, 1:]) & (r[:, :-1] > 10 * noise[:, :-1])
    measured = [
        float(np.median(rate[k][valid[k]][-3:])) for k in range(r.shape[0]) if valid[k].any()
    ]
    model = (
        f"remainder |f(x+hv) - f(x) - h <g,v>| over {r.shape[1]} halving steps must shrink "
        f"with order >= {TAYLOR_ORDER} (2 = right gradient, 1 = wrong); steps where it is "
        f"below 10x the round-off model are ignored"
    )
    if not np.all(np.isfinite(r)):
        return CheckResult(
            "taylor",
            "failed",
            float("nan"),
            TAYLOR_ORDER,
            model,
            note="NaN/Inf in the Taylor remainder",
        )
    if not measured:
        return CheckResult(
            "taylor",
            "passed",
            float("nan"),
            TAYLOR_ORDER,
            model,
            note="remainder at round-off level for every step: consistent with "
            "a right gradient of a (locally) linear function",
        )
    m = min(measured)
    return CheckResult("taylor", "failed" if m < TAYLOR_ORDER else "passed", m, TAYLOR_ORDER, model)


# the re-checks' ladders: 64x lower (just below the default one's 32x span), then 4096x
_SHRINKS = (2.0**-6, 2.0**-12)


@dataclasses.dataclass(frozen=True)
class _Ctx:
    """What turning one run of the check's program into results needs besides the run."""

    cfg: _Cfg
    eps: float
    ad_coef: float
    us: PyTree
    vs: PyTree
    in_paths: list
    in_shapes: list
    out_paths: list
    out_shapes: list


def _fetch(res: dict, todo: tuple) -> dict:
    """One transfer for everything the host compares (a GPU syncs per array otherwise); the
    gradient ladder and the HVPs stay for the Richardson kernel, as does a line of f values
    too large for the host."""
    stay = {"G", *(c for c in todo if c.startswith("hvp"))}
    if "F" in res and any(x.size > _HOST_MAX for x in jax.tree_util.tree_leaves(res["F"])):
        stay.add("F")
    return {**res, **jax.device_get({k: v for k, v in res.items() if k not in stay})}


def _derivatives(res: dict, h0, ctx: _Ctx, caps=None) -> tuple[dict, dict]:
    """The jvp, vjp and HVP results of one run, and per check its per-direction tolerances
    (``caps`` from an earlier run bound them, see :func:`_compare_leaves`)."""
    cfg, eps, levels = ctx.cfg, ctx.eps, ctx.cfg.levels
    caps = caps or {}
    out: dict[str, CheckResult] = {}
    tols: dict[str, Any] = {}
    if "F" in res:
        est, err = _fd_tree(res["F"], h0, eps, levels)
    if "jvp" in cfg.checks:
        out["jvp"], tols["jvp"] = _compare_leaves(
            "jvp",
            _host_stats(_np_leaves(res["jvp"][1]), est, err, cfg, ctx.ad_coef),
            ctx.out_paths,
            ctx.out_shapes,
            cfg,
            "the AD tangent (jvp)",
            caps.get("jvp"),
        )
    if "vjp" in cfg.checks:
        dif, tol, fde, adr, notes = _dot_test(
            ctx.us,
            est,
            err,
            res["vjp"][1],
            ctx.vs,
            eps,
            cfg,
            ctx.in_paths,
            ctx.in_shapes,
            ctx.out_paths,
            ctx.out_shapes,
        )
        if "vjp" in caps:
            tol = np.fmin(tol, caps["vjp"])
        tols["vjp"] = tol
        ratio = _ratio(dif, tol)
        k = int(np.argmax(ratio))
        model = (
            f"{cfg.safety:g} x sum|u| FD error {float(fde[k]):.2e} (Richardson ladder, "
            f"{levels} steps) + rounding {C_DOT:g} eps sum|terms| (1 + 1/h_rel) = "
            f"{float(adr[k]):.2e}"
        )
        out["vjp"] = CheckResult(
            "vjp",
            "failed" if (ratio[k] > 1 or notes) else "passed",
            float(dif[k]),
            float(tol[k]),
            model,
            float(fde[k]),
            ctx.in_paths[0] if len(ctx.in_paths) == 1 else None,
            None,
            "; ".join(notes),
        )
    hvps = [c for c in cfg.checks if c.startswith("hvp")]
    if hvps:
        stats = _hvp_stats(res["G"], [res[c] for c in hvps], h0, eps, levels, cfg, ctx.ad_coef)
        for c, st in zip(hvps, stats, strict=True):
            out[c], tols[c] = _compare_leaves(
                c, st, ctx.in_paths, ctx.in_shapes, cfg, "the AD HVP", caps.get(c)
            )
    return out, tols


def _run_checks(
    f,
    args,
    checks,
    *,
    num_directions,
    seed,
    key,
    safety,
    levels,
    step,
    localize,
    what,
    taylor_levels=14,
) -> CheckReport:
    if not callable(f):
        raise TypeError(f"{what}: f must be callable, found {type(f).__name__}.")
    args = _prepare(args, what)
    if (
        isinstance(num_directions, bool)
        or not isinstance(num_directions, int)
        or num_directions < 1
    ):
        raise ValueError(
            f"{what}: num_directions must be a positive int, found {num_directions!r}."
        )
    if isinstance(levels, bool) or not isinstance(levels, int) or levels < 3:
        raise ValueError(
            f"{what}: levels must be an int >= 3, found {levels!r}; the default is "
            f"{DEFAULT_LEVELS}."
        )
    if not (isinstance(safety, (int, float)) and safety > 0):
        raise ValueError(
            f"{what}: safety must be a number > 0, found {safety!r}; the default is 10."
        )
    if key is None and (isinstance(seed, bool) or not isinstance(seed, (int, np.integer))):
        raise TypeError(f"{what}: seed must be an int, found {type(seed).__name__}; or pass key=.")
    out = _out_struct(f, args)
    for leaf in jax.tree_util.tree_leaves(out):
        if not jnp.issubdtype(leaf.dtype, jnp.floating):
            raise TypeError(
                f"{what}: f returned a {leaf.dtype} output leaf; gradient checks need "
                f"real floating outputs. Cast it, or return only the floating part."
            )
    unavailable: dict[str, str] = {}
    todo = tuple(checks)
    cfg = _Cfg(
        todo,
        num_directions,
        levels,
        float(safety),
        None if step is None else float(step),
        taylor_levels,
    )
    eps = dtype_eps(args)
    tdtype = np.dtype(np.float32) if eps > 1e-10 else np.dtype(np.float64)
    W = tree_size(args)
    ad_coef = _ad_coef(eps, W)
    K = num_directions
    scales = _leaf_scales(args)
    vs = _scale_dirs(_directions(args, K, seed, key, 0), scales)
    us = _directions(out, K, seed, key, 1)
    u0 = (
        None if _is_scalar(out) else jax.tree.map(lambda u: u[0], _directions(out, 1, seed, key, 2))
    )
    h0, ts, tts = _steps(vs, scales, cfg, eps, tdtype)
    in_paths = [p for p, _ in leaf_paths(args, "args")]
    in_shapes = [np.shape(x) for x in jax.tree_util.tree_leaves(args)]
    out_paths = [p for p, _ in leaf_paths(out, "out")]
    out_shapes = [tuple(x.shape) for x in jax.tree_util.tree_leaves(out)]
    results: dict[str, CheckResult] = {}
    try:
        res = _eval(f, args, vs, us, u0, ts, tts, cfg)
    except _UNAVAILABLE:
        # Optimistic first: probing each check's AD side costs a trace of f per check. Only
        # when the combined program fails (forward mode of a custom_vjp function) are the
        # checks probed one by one, and the ones that exist run.
        unavailable = {c: w for c in checks if (w := _available(f, c, args)) is not None}
        if not unavailable:
            raise
        todo = tuple(c for c in checks if c not in unavailable)
        cfg = dataclasses.replace(cfg, checks=todo)
        res = _eval(f, args, vs, us, u0, ts, tts, cfg) if todo else None
    if res is not None:
        res = _fetch(res, todo)
    ctx = _Ctx(cfg, eps, ad_coef, us, vs, in_paths, in_shapes, out_paths, out_shapes)
    f0 = _np_leaves(res["f0"]) if res is not None else []
    f0_notes = [
        f"NaN/Inf in f(args) at {_at(p, s, _first_bad(x[None]))}"
        for p, s, x in zip(out_paths, out_shapes, f0, strict=False)
        if _first_bad(x[None]) >= 0
    ]
    derived, tols = _derivatives(res, h0, ctx) if res is not None else ({}, {})
    results.update(derived)
    for c in ("jvp", "vjp"):
        if c in todo:
            results[f"{c} primal"] = _compare_primal(
                f"{c} primal",
                _np_leaves(res[c][0]),
                f0,
                out_paths,
                out_shapes,
                eps,
                f"the {c} primal output",
            )
    # A failure that smaller steps undo is FD's, not AD's: finite differences across a kink
    # (relu, abs, max) or with steps leaving f's domain or range (log, exp overflow) are wrong
    # at the default steps only. The same compiled program runs again with the ladder 64x
    # lower, then 4096x; a re-check must pass with tolerances no looser than the first run's.
    retry = [
        c for c, r in derived.items() if r.status == "failed" and "NaN/Inf in the AD" not in r.note
    ]
    for shrink in _SHRINKS if retry and not f0_notes else ():
        again, _ = _derivatives(
            _fetch(_eval(f, args, vs, us, u0, ts * shrink, tts, cfg), todo),
            h0 * shrink,
            ctx,
            caps=tols,
        )
        for c in [c for c in retry if again[c].status == "passed"]:
            first = derived[c]
            results[c] = dataclasses.replace(
                again[c],
                note=f"passed at {1 / shrink:g}x smaller steps; at the default steps FD "
                f"differed by {first.error:.2e} (tol {first.tolerance:.2e}), as it does "
                f"across a kink (relu, abs, max) or where large steps leave f's domain"
                + (f" ({first.note})" if first.note else ""),
            )
            retry.remove(c)
        if not retry:
            break
    if "taylor" in todo:
        p0, ps, d = res["taylor"]
        results["taylor"] = _taylor_result(p0, ps, d, tts, eps, W)
    if f0_notes:
        for n, r in results.items():
            results[n] = dataclasses.replace(
                r, status="failed", note="; ".join(x for x in (r.note, *f0_notes) if x)
            )
    # Localise first-order failures to an input leaf: re-run the same compiled program (no
    # re-trace) with the directions confined to one input leaf at a time.
    failed = [n for n in ("jvp", "vjp") if n in results and results[n].status == "failed"]
    if failed and localize and len(in_paths) > 1 and not f0_notes:
        ratios = _localize(f, args, scales, vs, us, u0, ts, tts, cfg, eps, W, levels)
        worst = int(np.argmax(ratios))
        loc = "per-input-leaf re-check (error/tol): " + ", ".join(
            f"{p}: {q:.3g}" for p, q in zip(in_paths, ratios, strict=True)
        )
        for n in failed:
            r = results[n]
            results[n] = dataclasses.replace(
                r,
                worst_path=in_paths[worst] if n == "vjp" else r.worst_path,
                note="; ".join(x for x in (r.note, loc) if x),
            )
    ordered: list[CheckResult] = []
    for c in checks:
        if c in unavailable:
            ordered.append(
                CheckResult(
                    c, "skipped", note=f"mode unavailable for this function ({unavailable[c]})"
                )
            )
            continue
        ordered.append(results[c])
        if c + " primal" in results:
            ordered.append(results[c + " primal"])
    name = getattr(f, "__name__", type(f).__name__)
    dts = sorted({str(jnp.result_type(x)) for x in jax.tree_util.tree_leaves(args)})
    return CheckReport(tuple(ordered), name, "/".join(dts))


def _localize(f, args, scales, vs, us, u0, ts, tts, cfg, eps, W, levels) -> np.ndarray:
    """Per input leaf: max over directions of error/tol of the first-order checks."""
    leaves, treedef = jax.tree_util.tree_flatten(vs)
    first = tuple(c for c in cfg.checks if c in ("jvp", "vjp"))
    paths = [p for p, _ in leaf_paths(args, "args")]
    shapes = [np.shape(x) for x in jax.tree_util.tree_leaves(args)]
    out = []
    for i in range(len(leaves)):
        vi = treedef.unflatten([x if j == i else np.zeros_like(x) for j, x in enumerate(leaves)])
        h0, tsi, _ = _steps(vi, scales, cfg, eps, ts.dtype)
        # the same cfg as the main check: the compiled program is re-used, nothing re-traces
        res = _eval(f, args, vi, us, u0, tsi, tts, cfg)
        est, err = _fd_tree(res["F"], h0, eps, levels)
        worst = 0.0
        if "vjp" in first:
            dif, tol, *_ = _dot_test(us, est, err, res["vjp"][1], vi, eps, cfg, paths, shapes)
            worst = max(worst, float(np.max(_ratio(dif, tol))))
        if "jvp" in first:
            tan = _np_leaves(res["jvp"][1])
            for st in _host_stats(tan, est, err, cfg, _ad_coef(eps, W)):
                tol = cfg.safety * st["fd"] + st["ad"]
                worst = max(worst, float(np.max(_ratio(st["err"], tol))))
        out.append(worst)
    return np.asarray(out)


# --------------------------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------------------------


def _prepare(args: Any, what: str) -> tuple:
    if not isinstance(args, (tuple, list)):
        raise TypeError(
            f"{what}: args must be a tuple or list of f's positional arguments, found "
            f"{type(args).__name__}. Wrap a single argument as (x,)."
        )
    args = tuple(jax.tree.map(jnp.asarray, tuple(args)))
    for path, leaf in leaf_paths(args, "args"):
        dt = jnp.result_type(leaf)
        if not jnp.issubdtype(dt, jnp.inexact):
            # as in jax.test_util.check_grads, every leaf of args is perturbed: an integer or
            # boolean one (indices, masks) has no derivative to check
            raise TypeError(
                f"{what}: Cannot differentiate with respect to {path}: its dtype is {dt}, "
                f"expected a floating dtype. {what} perturbs every leaf of args; hold this one "
                f"fixed by closing over it, e.g. {what}(lambda x: f(x, n), (x,))."
            )
    for i, a in enumerate(args):
        check_differentiable(
            a,
            f"args[{i}]",
            allow_complex=False,
            complex_fix=f"Pass its real and imaginary parts as two real arguments and rebuild "
            f"it inside f, e.g. {what}(lambda re, im: f(re + 1j * im), (x.real, x.imag)).",
        )
    if not jax.tree_util.tree_leaves(args):
        raise ValueError(
            f"{what}: args has no array leaves, so there is nothing to differentiate; pass "
            f"f's arguments as a tuple, e.g. {what}(f, (x,))."
        )
    return args


def check_grads(
    f: Callable,
    args: Sequence[Any],
    order: int = 1,
    modes: Sequence[str] = ("fwd", "rev"),
    *,
    num_directions: int = 2,
    seed: int = 0,
    key: jax.Array | None = None,
    safety: float = 10.0,
    levels: int = DEFAULT_LEVELS,
    step: float | None = None,
    taylor: bool = False,
    localize: bool = True,
) -> CheckReport:
    """Check ``f``'s derivatives (and custom rules' primal outputs) at ``args``.

    Runs :func:`check_jvp` (``"fwd"`` in modes) and :func:`check_vjp` (``"rev"``); with
    ``order=2`` also :func:`check_hvp` in ``fwd-over-rev`` (``"fwd"``) and ``rev-over-rev``
    (``"rev"``) modes, and :func:`taylor_test` if ``taylor``. Everything runs as one
    jit-compiled program per (f, shapes, options): repeated checks do not re-trace. A mode that
    does not exist for ``f`` (forward mode of a custom_vjp function) is reported as skipped.

    Cost per direction: 13 evaluations of ``f`` for the FD side (levels=6), a JVP and/or a VJP;
    with order 2, 13 gradient evaluations and one HVP per mode. Independent of the number of
    parameters W (beyond the cost of f itself). A failed check is re-run at 64x and 4096x
    smaller steps (at most two more runs of the same program) and passes if a re-run passes
    within the first run's tolerances: the FD of a relu network across its kinks, or a step that
    overflows, is wrong at large steps only.

    Args:
      f: function of ``len(args)`` positional pytree arguments, returning any pytree of
        floating arrays.
      args: tuple or list of the arguments (floating leaves only).
      order: 1 or 2.
      modes: a subset of ``("fwd", "rev")``.
      num_directions: random directions per check (seeded; default 2).
      seed: seed for the directions (ignored if ``key`` is given).
      key: a ``jax.random`` key for the directions.
      safety: multiple of the FD error estimate allowed (default 10).
      levels: steps in the Richardson ladder (default 6; >= 3).
      step: largest step of the ladder (default from dtype and scale, see ``chainrule.fd``).
      localize: on a first-order failure, re-check one input leaf at a time to name the
        worst leaf (O(#leaves) more runs of the compiled check, only when failed).
      taylor: also run the step-size-free :func:`taylor_test`.

    Returns:
      A :class:`CheckReport`: ``.passed``, ``.results``, ``.summary()``, ``.raise_if_failed()``.

    Raises:
      TypeError: ``args`` not a tuple/list, integer/complex leaves, ``f`` not callable.
      ValueError: bad ``order``, ``modes``, ``num_directions``, ``levels`` or ``safety``.

    Example:
      >>> import chainrule as cr, jax.numpy as jnp
      >>> report = cr.check_grads(jnp.sin, (jnp.linspace(0.0, 1.0, 5),), order=2)
      >>> report.passed
      True
    """
    if order not in (1, 2):
        raise ValueError(f"check_grads: order must be 1 or 2, found {order!r}.")
    if isinstance(modes, str):
        modes = (modes,)
    if not modes:
        raise ValueError('check_grads: modes is empty; give ("fwd",), ("rev",) or both.')
    for m in modes:
        check_choice(m, MODES, "check_grads mode")
    checks: list[str] = []
    if "fwd" in modes:
        checks.append("jvp")
    if "rev" in modes:
        checks.append("vjp")
    if order == 2:
        if "fwd" in modes:
            checks.append("hvp[fwd-over-rev]")
        if "rev" in modes:
            checks.append("hvp[rev-over-rev]")
    if taylor:
        checks.append("taylor")
    return _run_checks(
        f,
        args,
        tuple(checks),
        num_directions=num_directions,
        seed=seed,
        key=key,
        safety=safety,
        levels=levels,
        step=step,
        localize=localize,
        what="check_grads",
    )


def check_jvp(
    f: Callable,
    args: Sequence[Any],
    *,
    num_directions: int = 2,
    seed: int = 0,
    key: jax.Array | None = None,
    safety: float = 10.0,
    levels: int = DEFAULT_LEVELS,
    step: float | None = None,
    localize: bool = True,
) -> CheckReport:
    """Forward mode: ``jax.jvp(f)`` against a finite-difference ``J v``, plus its primal output.

    Cost per direction: one JVP (~2-3 evaluations of ``f``) and 13 evaluations for the FD side.

    Args:
      f: function of ``len(args)`` positional arguments.
      args: tuple or list of the arguments.
      num_directions: random directions per check (seeded; default 2).
      seed: seed for the directions (ignored if ``key`` is given).
      key: a ``jax.random`` key for the directions.
      safety: multiple of the FD error estimate allowed (default 10).
      levels: steps in the Richardson ladder (default 6; >= 3).
      step: largest step of the ladder (default from dtype and scale, see ``chainrule.fd``).
      localize: on a first-order failure, re-check one input leaf at a time to name the
        worst leaf (O(#leaves) more runs of the compiled check, only when failed).

    Returns:
      A :class:`CheckReport` with checks ``jvp`` and ``jvp primal`` (skipped if forward mode
      does not exist for ``f``).

    Raises:
      TypeError, ValueError: as for :func:`check_grads`.

    Example:
      >>> import chainrule as cr, jax.numpy as jnp
      >>> cr.check_jvp(jnp.tanh, (jnp.ones(3),)).passed
      True
    """
    return _run_checks(
        f,
        args,
        ("jvp",),
        num_directions=num_directions,
        seed=seed,
        key=key,
        safety=safety,
        levels=levels,
        step=step,
        localize=localize,
        what="check_jvp",
    )


def check_vjp(
    f: Callable,
    args: Sequence[Any],
    *,
    num_directions: int = 2,
    seed: int = 0,
    key: jax.Array | None = None,
    safety: float = 10.0,
    levels: int = DEFAULT_LEVELS,
    step: float | None = None,
    localize: bool = True,
) -> CheckReport:
    """Reverse mode by the dot-product test ``<u, J v> = <J^T u, v>``, plus its primal output.

    ``J v`` comes from finite differences, ``J^T u`` from ``jax.vjp``; ``u`` and ``v`` random.

    Cost per direction: one VJP pass (~3 evaluations of ``f``, the forward shared) and 17
    evaluations for the FD side.

    Args:
      f: function of ``len(args)`` positional arguments.
      args: tuple or list of the arguments.
      num_directions: random directions per check (seeded; default 2).
      seed: seed for the directions (ignored if ``key`` is given).
      key: a ``jax.random`` key for the directions.
      safety: multiple of the FD error estimate allowed (default 10).
      levels: steps in the Richardson ladder (default 6; >= 3).
      step: largest step of the ladder (default from dtype and scale, see ``chainrule.fd``).
      localize: on a first-order failure, re-check one input leaf at a time to name the
        worst leaf (O(#leaves) more runs of the compiled check, only when failed).

    Returns:
      A :class:`CheckReport` with checks ``vjp`` and ``vjp primal``.

    Raises:
      TypeError, ValueError: as for :func:`check_grads`.

    Example:
      >>> import chainrule as cr, jax.numpy as jnp
      >>> cr.check_vjp(lambda x: jnp.sum(x ** 2), (jnp.ones(3),)).passed
      True
    """
    return _run_checks(
        f,
        args,
        ("vjp",),
        num_directions=num_directions,
        seed=seed,
        key=key,
        safety=safety,
        levels=levels,
        step=step,
        localize=localize,
        what="check_vjp",
    )


def check_hvp(
    f: Callable,
    args: Sequence[Any],
    mode: str = "fwd-over-rev",
    *,
    num_directions: int = 2,
    seed: int = 0,
    key: jax.Array | None = None,
    safety: float = 10.0,
    levels: int = DEFAULT_LEVELS,
    step: float | None = None,
) -> CheckReport:
    """Second order: finite differences of the AD gradient along ``v`` against the AD HVP.

    A non-scalar ``f`` is reduced to ``<u0, f(x)>`` for a fixed random ``u0``. The reference
    is FD of ``jax.grad`` (reverse mode), so check first order first.

    Cost per direction: 13 gradient evaluations (~3 evaluations of ``f`` each) and one HVP
    (~4-5 evaluations of ``f``).

    Args:
      f: function of ``len(args)`` positional arguments.
      args: tuple or list of the arguments.
      mode: ``"fwd-over-rev"``, ``"rev-over-rev"`` or ``"rev-over-fwd"`` (the composition
        whose second-order rules are exercised; rev-over-fwd needs forward mode of ``f``
        and is reported as skipped for a ``custom_vjp`` function).
      num_directions: random directions per check (seeded; default 2).
      seed: seed for the directions (ignored if ``key`` is given).
      key: a ``jax.random`` key for the directions.
      safety: multiple of the FD error estimate allowed (default 10).
      levels: steps in the Richardson ladder (default 6; >= 3).
      step: largest step of the ladder (default from dtype and scale, see ``chainrule.fd``).

    Returns:
      A :class:`CheckReport` with the check ``hvp[mode]``.

    Raises:
      ValueError: an unknown mode; otherwise as for :func:`check_grads`.

    Example:
      >>> import chainrule as cr, jax.numpy as jnp
      >>> cr.check_hvp(lambda x: jnp.sum(jnp.sin(x) ** 2), (jnp.ones(3),)).passed
      True
    """
    check_choice(mode, HVP_CHECK_MODES, "check_hvp mode")
    return _run_checks(
        f,
        args,
        (f"hvp[{mode}]",),
        num_directions=num_directions,
        seed=seed,
        key=key,
        safety=safety,
        levels=levels,
        step=step,
        localize=False,
        what="check_hvp",
    )


def taylor_test(
    f: Callable,
    args: Sequence[Any],
    *,
    num_directions: int = 2,
    seed: int = 0,
    key: jax.Array | None = None,
    levels: int = 14,
) -> CheckReport:
    """Step-size-free first-order check: the Taylor remainder must shrink as O(h^2).

    ``r(h) = |f(x + h v) - f(x) - h <grad f(x), v>|`` over ``levels`` halving steps: with the
    right gradient ``r`` falls by 4x per halving (order 2), with a wrong one only by 2x
    (order 1) once ``h`` is small. The observed order (median of the last 3 halvings whose
    remainders stand 10x above the round-off model) must be >= 1.5. No tolerance to tune; the
    price is less sensitivity than the FD checks to errors far below the curvature of ``f``.
    A non-scalar ``f`` is reduced to ``<u0, f(x)>`` with a fixed random ``u0``.

    Cost per direction: ``levels + 1`` evaluations of ``f`` and one gradient.

    Args:
      f: function of ``len(args)`` positional arguments.
      args: tuple or list of the arguments.
      num_directions: random directions (seeded).
      seed: seed for the directions; key: a ``jax.random`` key instead.
      levels: number of halving steps (>= 4).

    Returns:
      A :class:`CheckReport` with the check ``taylor`` (error = observed order).

    Raises:
      ValueError: ``levels < 4``; otherwise as for :func:`check_grads`.

    Example:
      >>> import chainrule as cr, jax.numpy as jnp
      >>> cr.taylor_test(lambda x: jnp.sum(jnp.exp(x)), (jnp.ones(4),)).passed
      True
    """
    if not isinstance(levels, int) or levels < 4:
        raise ValueError(f"taylor_test: levels must be an int >= 4, found {levels!r}.")
    return _run_checks(
        f,
        args,
        ("taylor",),
        num_directions=num_directions,
        seed=seed,
        key=key,
        safety=10.0,
        levels=DEFAULT_LEVELS,
        step=None,
        localize=False,
        what="taylor_test",
        taylor_levels=levels,
    )
