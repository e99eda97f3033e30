"""The compiled check program: the evaluations of ``f`` and of its AD derivatives, in one program.

Everything that involves ``f`` (the FD ladder's evaluations, the JVP, VJP and HVPs) is one
program, traced at every check so that it checks ``f`` as it is at the call (a global changed, a
custom rule redefined, an array mutated in place), and compiled through
:func:`chainrule._richardson.compiled_call` (``chainrule._jit``'s cache):
reuse keyed on the traced program, with arrays ``f`` closes over passed as arguments, so a
repeated check of the same program at the same shapes does not compile again but can never run
an outdated one. What does not involve ``f`` (directions, steps, Richardson tables of small
leaves, comparisons) runs on the host; the Richardson table of large leaves runs in small
kernels here that take arrays only (module-level jits are sound for them).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from chainrule import _env, _jit, _kinks
from chainrule._richardson import compiled_call
from chainrule._richardson import lines as _line
from chainrule._richardson import richardson_np as _richardson_np
from chainrule._richardson import richardson_table as _richardson_table
from chainrule._rules import hvp_rule
from chainrule.check.compare import _host_stats, _leaf_stats

PyTree = Any


def _scalarized(g: Callable, u0: PyTree | None) -> Callable:
    """``g`` if ``u0`` is None (scalar output), else ``a -> <u0, g(a)>``."""
    if u0 is None:
        return lambda a: jax.tree_util.tree_leaves(g(a))[0]

    def phi(a):
        o = jax.tree_util.tree_leaves(g(a))
        return sum(jnp.sum(x * u) for x, u in zip(o, jax.tree_util.tree_leaves(u0), strict=True))

    return phi


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
            return jax.vmap(lambda t: hvp_rule(mode)(phi, a, t))(v)

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


def _available(f: Callable, check: str, args: tuple) -> str | None:
    """None if the AD side of ``check`` exists for ``f``, else the reason (TypeError text).

    Traced at every call (no cache keyed on ``f``: a rule redefined since must be seen)."""
    try:
        _ad_probe(f, check, args)
    # jax: TypeError "can't apply forward-mode autodiff (jvp) to a custom_vjp function", and
    # NotImplementedError "Differentiation rule for 'custom_lin'" (rev-over-fwd of a custom_vjp)
    except _UNAVAILABLE as e:
        return _why(e)
    return None


def _out_struct(f: Callable, args: tuple) -> PyTree:
    return jax.eval_shape(lambda a: f(*a), args)


# what a line of f is along the directions: f is smooth, its kinks are frozen (FD of the piece),
# or it has kinks that could not be frozen (a multi-key sort, an effect, an unknown loop): the
# driver's re-checks differ
LINE_KINDS = ("smooth", "frozen", "kinked")


def _piece(fn: Callable, args: PyTree) -> tuple[Callable, str]:
    """``fn``'s smooth piece at ``args`` (:func:`chainrule._kinks.smooth_piece`)."""
    try:
        return _kinks.smooth_piece(fn, args)
    except Exception:  # a primitive the interpreter cannot bind twice: FD of fn itself
        return fn, "kinked"


def _eval_impl(f, args, vs, us, u0, ts, tts, cfg):
    g = lambda a: f(*a)
    # f is evaluated twice, as two traces: a function that is not deterministic (it draws
    # NumPy random numbers while tracing, reads a counter) shows as two different values
    res: dict[str, Any] = {"f0": g(args), "f0_again": g(args)}
    # FD of f's smooth piece at args: across a kink (relu, max, clip, where) FD of f itself
    # blends two pieces, and steps small enough to avoid every kink are rounding-bound in
    # float32; the piece has f's derivatives at args at every step
    piece, kind = _piece(g, args)
    res["line"] = np.int8(LINE_KINDS.index(kind))
    if "jvp" in cfg.checks or "vjp" in cfg.checks:
        res["F"] = _line(piece, args, vs, ts)
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
        # a smooth f has a smooth gradient: no second trace of the gradient to find that out
        res["G"] = _line(grad_fn if kind == "smooth" else _piece(grad_fn, args)[0], args, vs, ts)
        for c in hvps:
            rule = hvp_rule(c[4:-1])
            res[c] = jax.vmap(lambda v, rule=rule: rule(phi, args, v))(vs)
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
        line_fn = phi if kind == "smooth" else _piece(phi, args)[0]
        res["taylor"] = (phi(args), _line(line_fn, args, vs, tts), d)
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

    A check runs its program a few times but compiles it once per traced program: without
    ``optimize``, XLA's backend optimisation level 0 (LLVM passes are most of a cold check's
    time on the CPU, while the matmuls are library calls either way) and on a GPU ptxas's -O0.
    On a GPU no GEMM autotuning (it tries algorithms per distinct matmul shape at compile time)
    and no Triton GEMMs, on the CPU the IR emitters, in either case (``fast``: the options of
    ``_FAST``). ``CHAINRULE_CHECK_XLA_OPTIONS`` (a JSON object; both variables are read through
    :mod:`chainrule._env` at each call) is merged over these: how options are tried on a new
    accelerator.
    """
    if not _env.check_o0():
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
    opts.update(_env.check_xla_options())
    return opts or None


# backends whose XLA rejected a fast option (older or newer than the one it was measured on):
# from then on they get the options without _FAST's
_FAST_REJECTED: set[str] = set()


def _with_options(run: Callable[[dict | None], Any], optimize: bool) -> Any:
    """``run(options)`` with :func:`_compile_options`; an XLA without one of ``_FAST``'s flags
    ("No such compile option") gets the other options, now and for the rest of the process."""
    backend = jax.default_backend()
    opts = _compile_options(optimize, fast=backend not in _FAST_REJECTED)
    try:
        return run(opts)
    except jax.errors.JaxRuntimeError as e:
        fallback = _compile_options(optimize, fast=False)
        if "No such compile option" not in str(e) or opts == fallback:
            raise
    _FAST_REJECTED.add(backend)
    return run(fallback)


def _fast_jit(impl: Callable, static_argnums: tuple[int, ...], optimize: bool) -> Callable:
    """``jax.jit(impl)`` with :func:`_compile_options`, for kernels that take arrays only (never
    a user's function: a module-level jit of one would keep it and its closure alive, and
    could replay an outdated trace). One jit per options seen, made when first needed."""
    jits: dict[Any, Callable] = {}

    def call(*args: Any) -> Any:
        def run(opts):
            key = tuple(sorted(opts.items())) if opts else None
            if key not in jits:
                jits[key] = jax.jit(impl, static_argnums=static_argnums, compiler_options=opts)
            return jits[key](*args)

        return _with_options(run, optimize)

    call.jits = jits  # type: ignore[attr-defined]
    return call


# Compiled check programs of plain functions go into _jit's cache (bounded by
# CHAINRULE_JIT_CACHE_SIZE, emptied by cr.clear_caches()) under a key of the traced program of f
# (its _jit fingerprint), the check's options and the input types; never f itself. An entry
# holds no user array (f's closed-over arrays are arguments of the program) and no callable.
def _plain(jaxpr: Any) -> bool:
    """No custom rule, callback or effect anywhere in ``jaxpr``: then the check program (JAX's
    own derivative rules applied to these primitives) is a function of the jaxpr alone."""
    for eqn in jaxpr.eqns:
        name = eqn.primitive.name
        if name.startswith("custom_") or "callback" in name or "debug" in name or eqn.effects:
            return False
        for p in eqn.params.values():
            for sub in p if isinstance(p, (tuple, list)) else (p,):
                inner = getattr(sub, "jaxpr", sub)
                if hasattr(inner, "eqns") and not _plain(inner):
                    return False
    return True


def _eval_fast(f, inputs: tuple, cfg, opts, session: dict | None) -> dict[str, Any] | None:
    """The check program of a plain ``f`` (see :func:`_plain`) from ``f``'s jaxpr: one trace of
    ``f`` per check instead of a trace of the whole program (its JVPs, VJPs and HVPs), then the
    compiled program of that jaxpr, if seen before. None where this does not apply: ``f`` has
    custom rules or callbacks, or two traces of ``f`` differ (not deterministic: the full
    program evaluates both and the determinism check says so)."""
    args = inputs[0]
    flat_args, in_tree = jax.tree_util.tree_flatten(args)
    if any(isinstance(x, jax.core.Tracer) for x in flat_args) or jax.config.jax_disable_jit:
        return None
    parts = ("_fingerprint", "_trace", "_compile", "_unflatten", "_compiled", "_lock", "_stats")
    if not all(hasattr(_jit, n) for n in parts):
        return None

    def g(*leaves):
        return f(*jax.tree_util.tree_unflatten(in_tree, leaves))

    def g_again(*leaves):  # another object: make_jaxpr caches its trace per function object
        return f(*jax.tree_util.tree_unflatten(in_tree, leaves))

    try:
        c1, out_shape = jax.make_jaxpr(g, return_shape=True)(*flat_args)
        c2 = jax.make_jaxpr(g_again)(*flat_args)
    except Exception:  # whatever tracing f raises, the full program raises it too
        return None
    if not _plain(c1.jaxpr):
        return None
    k1 = _jit._fingerprint(c1, flat_args, None)
    if k1 is None or k1 != _jit._fingerprint(c2, flat_args, None):
        return None
    out_tree = jax.tree_util.tree_structure(out_shape)
    jaxpr = c1.jaxpr
    consts = list(c1.consts)
    full = (consts, *inputs)
    flat, tree = jax.tree_util.tree_flatten(full)
    flat = [x if isinstance(x, jax.Array) else jnp.asarray(x) for x in flat]
    key = (k1, cfg, tree, tuple(jax.typeof(x) for x in flat), str(opts))
    try:
        hash(key)
    except TypeError:
        return None
    key = ("chainrule.check program", *key)
    capacity = _env.jit_cache_size()
    with _jit._lock:
        entry = _jit._compiled.get(key) if capacity else None
        if entry is not None:
            _jit._compiled.move_to_end(key)
            _jit._stats["hits"] += 1
    if entry is None:

        def program(cs, a, v, u, w, t, tt):
            def f_now(*aa):
                out = jax.core.eval_jaxpr(jaxpr, cs, *jax.tree_util.tree_leaves(aa))
                return jax.tree_util.tree_unflatten(out_tree, out)

            return _eval_impl(f_now, a, v, u, w, t, tt, cfg)

        closed, static = _jit._trace(program, flat, tree)
        exe = _jit._compile(closed, list(closed.consts), flat, opts)
        entry = (list(closed.consts), static, exe)
        with _jit._lock:
            _jit._stats["compiled"] += 1
            if capacity:
                _jit._compiled[key] = entry
                while len(_jit._compiled) > capacity:
                    _jit._compiled.popitem(last=False)
    pc, static, exe = entry
    return _jit._unflatten(static, list(exe(pc, *flat)))


def _eval(f, args, vs, us, u0, ts, tts, cfg, session: dict | None = None) -> dict[str, Any]:
    """One run of the check program for ``f`` as it is now (traced at the check's first run).

    ``session`` (a dict the driver makes per check call and drops after it) holds the traced
    and compiled program between the runs of one check (re-checks at smaller steps, per-leaf
    localisation: the same program on other steps and directions), never across calls.
    """

    def program(a, v, u, w, t, tt):
        return _eval_impl(f, a, v, u, w, t, tt, cfg)

    mine = None if session is None else session.setdefault(cfg, {})

    def run(opts):
        fast = _eval_fast(f, (args, vs, us, u0, ts, tts), cfg, opts, mine)
        if fast is not None:
            return fast
        return compiled_call(program, (args, vs, us, u0, ts, tts), opts, mine)

    return _with_options(run, optimize=False)


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
