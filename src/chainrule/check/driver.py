"""The driver: a check as a sequence of steps, each a small function over an explicit state.

1. :func:`_options` validates the options (shared validators of :mod:`chainrule._validate`);
   ``api._prepare`` the arguments.
2. :func:`_plan` fixes what the run needs besides ``f``: the output's structure (``f`` traced
   abstractly, now), the seeded directions, the step ladders, the leaf paths.
3. :func:`_first_run` runs the compiled program once; only if that fails for a mode ``f`` does
   not have (forward mode of a ``custom_vjp``) are the checks probed one by one.
4. :func:`_judge` compares the derivatives and the primal outputs (host side).
5. :func:`_recheck` re-runs the same program at smaller steps, for failures (FD across a kink
   or past ``f``'s domain is wrong at large steps only) and for *loose passes* (a detection floor
   far above rounding: a kink or a high frequency within the ladder inflates the FD error
   estimate, and a loose pass is not a pass), bounded by the first run's tolerances.
6. :func:`_diagnose` turns NaNs in ``f(x)`` and a non-deterministic ``f`` (two traces of ``f``
   at ``args`` disagree) into failures that say so.
7. :func:`_taylor`, :func:`_locate` (per-leaf re-checks of a first-order failure) and
   :func:`_report` (results in the order asked, skipped checks named).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from chainrule import sharding
from chainrule._richardson import DEFAULT_LEVELS, dtype_eps
from chainrule._tree import leaf_paths, tree_size
from chainrule._validate import check_key, check_levels, check_seed, check_step
from chainrule.check import program
from chainrule.check.compare import (
    _at,
    _compare_leaves,
    _compare_primal,
    _dot_test,
    _first_bad,
    _host_stats,
    _taylor_result,
)
from chainrule.check.results import CheckReport, CheckResult
from chainrule.check.tolerance import (
    C_DOT,
    SHRINKS,
    _ad_coef,
    _Cfg,
    _directions,
    _leaf_scales,
    _np_leaves,
    _ratio,
    _scale_dirs,
    _steps,
    floor_of,
    loose_floor,
)

PyTree = Any


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


@dataclasses.dataclass(frozen=True)
class _Plan:
    """Everything fixed before ``f`` runs: the context, the program's inputs, the steps."""

    ctx: _Ctx
    args: tuple
    u0: PyTree
    h0: np.ndarray
    ts: np.ndarray
    tts: np.ndarray
    scales: list
    W: int
    session: dict = dataclasses.field(default_factory=dict, compare=False, repr=False)


def _fetch(res: dict, todo: tuple) -> dict:
    """One transfer for everything the host compares (a GPU syncs per array otherwise); the
    gradient ladder and the HVPs stay for the Richardson kernel, as does a line of f values
    too large for the host."""
    stay = {"G", *(c for c in todo if c.startswith("hvp"))}
    if "F" in res and any(x.size > program._HOST_MAX for x in jax.tree_util.tree_leaves(res["F"])):
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
        est, err = program._fd_tree(res["F"], h0, eps, levels)
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
        dif, tol, fde, adr, notes, size = _dot_test(
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
            floor_of(tol, size),
            float(adr[k]),
        )
    hvps = [c for c in cfg.checks if c.startswith("hvp")]
    if hvps:
        stats = program._hvp_stats(
            res["G"], [res[c] for c in hvps], h0, eps, levels, cfg, ctx.ad_coef
        )
        for c, st in zip(hvps, stats, strict=True):
            out[c], tols[c] = _compare_leaves(
                c, st, ctx.in_paths, ctx.in_shapes, cfg, "the AD HVP", caps.get(c)
            )
    return out, tols


def _options(what, num_directions, levels, safety, seed, key, step) -> None:
    if (
        isinstance(num_directions, bool)
        or not isinstance(num_directions, (int, np.integer))
        or num_directions < 1
    ):
        raise ValueError(
            f"{what}: num_directions must be a positive int, found {num_directions!r}."
        )
    check_levels(levels, what, DEFAULT_LEVELS)
    if isinstance(safety, bool) or not (isinstance(safety, (int, float)) and safety > 0):
        raise ValueError(
            f"{what}: safety must be a number > 0, found {safety!r}; the default is 10."
        )
    check_key(key, what)
    if key is None:
        check_seed(seed, what)
    check_step(step, what, default="the default ladder")


def _plan(f, args, checks, cfg: _Cfg, seed, key, what) -> _Plan:
    out = program._out_struct(f, args)
    for leaf in jax.tree_util.tree_leaves(out):
        if not jnp.issubdtype(leaf.dtype, jnp.floating):
            raise TypeError(
                f"{what}: f returned a {leaf.dtype} output leaf; gradient checks need "
                f"real floating outputs. Cast it, or return only the floating part."
            )
    eps = dtype_eps(args)
    tdtype = np.dtype(np.float32) if eps > 1e-10 else np.dtype(np.float64)
    W = tree_size(args)
    K = cfg.num_directions
    scales = _leaf_scales(args)
    vs = _scale_dirs(_directions(args, K, seed, key, 0), scales)
    us = _directions(out, K, seed, key, 1)
    u0 = (
        None
        if program._is_scalar(out)
        else jax.tree.map(lambda u: u[0], _directions(out, 1, seed, key, 2))
    )
    h0, ts, tts = _steps(vs, scales, cfg, eps, tdtype)
    ctx = _Ctx(
        cfg,
        eps,
        _ad_coef(eps, W),
        us,
        vs,
        [p for p, _ in leaf_paths(args, "args")],
        [np.shape(x) for x in jax.tree_util.tree_leaves(args)],
        [p for p, _ in leaf_paths(out, "out")],
        [tuple(x.shape) for x in jax.tree_util.tree_leaves(out)],
    )
    return _Plan(ctx, args, u0, h0, ts, tts, scales, W)


def _run(f, plan: _Plan, cfg: _Cfg, shrink: float = 1.0) -> dict:
    c = plan.ctx
    ts = plan.ts if shrink == 1.0 else plan.ts * shrink
    # Sharded inputs: each device gets only its slice of the (host-drawn) directions.
    vs = sharding.reshard_like(c.vs, plan.args, leading=1)
    res = program._eval(f, plan.args, vs, c.us, plan.u0, ts, plan.tts, cfg, plan.session)
    return _fetch(res, cfg.checks)


def _first_run(f, plan: _Plan) -> tuple[dict | None, _Plan, dict[str, str]]:
    """The program's first run; on a mode ``f`` lacks, the checks are probed one by one."""
    cfg = plan.ctx.cfg
    try:
        return _run(f, plan, cfg), plan, {}
    except program._UNAVAILABLE:
        # Optimistic first: probing each check's AD side costs a trace of f per check. Only
        # when the combined program fails (forward mode of a custom_vjp function) are the
        # checks probed one by one, and the ones that exist run.
        unavailable = {
            c: w for c in cfg.checks if (w := program._available(f, c, plan.args)) is not None
        }
        if not unavailable:
            raise
    todo = tuple(c for c in cfg.checks if c not in unavailable)
    plan = dataclasses.replace(
        plan, ctx=dataclasses.replace(plan.ctx, cfg=dataclasses.replace(cfg, checks=todo))
    )
    return (_run(f, plan, plan.ctx.cfg) if todo else None), plan, unavailable


def _primals(res: dict, plan: _Plan) -> dict[str, CheckResult]:
    c = plan.ctx
    f0 = _np_leaves(res["f0"])
    out = {}
    for name in ("jvp", "vjp"):
        if name in c.cfg.checks:
            out[f"{name} primal"] = _compare_primal(
                f"{name} primal",
                _np_leaves(res[name][0]),
                f0,
                c.out_paths,
                c.out_shapes,
                c.eps,
                f"the {name} primal output",
            )
    return out


def _is_loose(r: CheckResult, eps: float) -> bool:
    """A pass whose floor is above ``loose_floor`` because of FD's error estimate (10x above
    the rounding share of the tolerance): a kink or a high frequency within the steps. A floor
    set by rounding (a large W) is what it is; smaller steps would only raise it."""
    if r.status != "passed" or (r.floor is not None and r.floor <= loose_floor(eps)):
        return False
    fd_part = r.tolerance - (r.rounding or 0.0)
    return not fd_part <= 10 * (r.rounding or 0.0)


def _recheck(f, plan: _Plan, first: dict, tols: dict, smooth: bool) -> dict[str, CheckResult]:
    """Re-run at smaller steps (``SHRINKS``) the derivative checks that failed or passed
    loosely.

    A failure that a re-check passes within the first run's tolerances is FD's (a kink, a step
    past ``f``'s domain), not AD's. A loose pass (detection floor above
    :func:`~chainrule.check.tolerance.loose_floor`) is re-judged by a re-check only if that one
    is tighter on its own (its tolerance at most a quarter of the first's: FD's error was a
    kink's or a high frequency's, which smaller steps shrink); if smaller steps do not tighten
    it, FD's error is rounding's (``f`` sums many terms) and the first verdict stands. A loose
    pass that no step makes tight says so in its note.

    ``smooth``: the line of ``f`` the FD side evaluates is smooth (``f`` has no switch, or its
    switches are frozen at ``args``). Then the first re-check that is tighter decides: its FD
    error estimate is a smooth function's. Otherwise (switches in a loop body) a loose pass
    fails only when two successive re-checks fail with an error that does not shrink: FD
    across a kink the smaller ladder still straddles shrinks with the step, an AD error does
    not.
    """
    eps = plan.ctx.eps
    out = dict(first)
    fails = [
        c for c, r in first.items() if r.status == "failed" and "NaN/Inf in the AD" not in r.note
    ]
    loose = [c for c, r in first.items() if _is_loose(r, eps)]
    rounding: set[str] = set()
    pending: dict[str, CheckResult] = {}
    for shrink in SHRINKS if fails or loose else ():
        run = _run(f, plan, plan.ctx.cfg, shrink)
        h = plan.h0 * shrink
        at = f"at {1 / shrink:g}x smaller steps"
        if fails:
            capped, _ = _derivatives(run, h, plan.ctx, tols)
            # A re-check that could see a few percent decides a failure: a pass there is FD's
            # error at the default steps (a kink, a step past f's domain); on a smooth line a
            # failure there is the verdict (smaller steps would only add rounding). A weak one
            # (FD rounding-bound at tiny steps) decides nothing.
            for c in [c for c in fails if not capped[c].weak]:
                r0, r1 = first[c], capped[c]
                if r1.status == "passed":
                    note = (
                        f"passed {at}; at the default steps FD differed by {r0.error:.2e} "
                        f"(tol {r0.tolerance:.2e}), as it does across a kink (relu, abs, max) "
                        f"or where large steps leave f's domain"
                    )
                elif smooth:
                    note = (
                        f"failed {at} too, on a smooth line of f (FD error "
                        f"{r1.fd_error or 0:.2e}); at the default steps the error was "
                        f"{r0.error:.2e} (tol {r0.tolerance:.2e})"
                    )
                else:
                    continue
                out[c] = dataclasses.replace(r1, note=note + (f" ({r0.note})" if r0.note else ""))
                fails.remove(c)
        if loose:
            own, _ = _derivatives(run, h, plan.ctx)
            for c in list(loose):
                r0, r1 = first[c], own[c]
                if not r1.tolerance <= r0.tolerance / 4:
                    rounding.add(c)  # smaller steps do not help: FD's error is rounding's
                    loose.remove(c)
                    continue
                if r1.status == "failed" and smooth and "NaN/Inf" not in r1.note:
                    out[c] = dataclasses.replace(
                        r1,
                        note=f"failed {at}, where FD is tighter (tol {r1.tolerance:.2e}) on a "
                        f"smooth line of f; at the default steps it passed loosely (error "
                        f"{r0.error:.2e}, tol {r0.tolerance:.2e}): FD's error there was a high "
                        f"frequency's or a steep region's, not rounding"
                        + (f" ({r1.note})" if r1.note else ""),
                    )
                    loose.remove(c)
                    continue
                if r1.status == "failed":
                    # FD across the kinks that the smaller ladder still straddles shrinks with
                    # the step; an AD error does not: a loose pass fails only when two
                    # successive re-checks fail with an error that did not shrink
                    prev = pending.get(c)
                    pending[c] = r1
                    if prev is None or r1.error < prev.error / 4 or "NaN/Inf" in r1.note:
                        continue
                    out[c] = dataclasses.replace(
                        r1,
                        note=f"failed {at} and the re-check before, where FD is tighter (tol "
                        f"{r1.tolerance:.2e}), with an error that does not shrink with the "
                        f"step ({prev.error:.2e}, then {r1.error:.2e}); at the default steps "
                        f"it passed loosely (error {r0.error:.2e}, tol {r0.tolerance:.2e}): "
                        f"FD's error there was a kink's or a high frequency's, not rounding"
                        + (f" ({r1.note})" if r1.note else ""),
                    )
                    loose.remove(c)
                    continue
                pending.pop(c, None)
                if out[c] is not r0 and not r1.tolerance < out[c].tolerance:
                    loose.remove(c)  # looser than the re-check before: rounding from here on
                    continue
                out[c] = dataclasses.replace(
                    r1,
                    note=f"re-checked {at}: at the default steps FD's error was far above "
                    f"rounding (tol {r0.tolerance:.2e}, catches errors above "
                    f"{100 * (r0.floor or np.inf):.2g}%)",
                )
                if not _is_loose(r1, eps):
                    loose.remove(c)
        if not fails and not loose:
            break
    for c in loose:
        r = out[c]
        out[c] = dataclasses.replace(
            r,
            note="; ".join(
                x
                for x in (
                    r.note,
                    f"no step found where f is smooth along the directions: FD's error stays "
                    f"far above rounding down to {SHRINKS[-1]:g}x the default steps (a kink or "
                    f"a high frequency within them at args)",
                )
                if x
            ),
        )
    return out


def _note_piece(results: dict) -> dict:
    """Say that FD was of ``f``'s smooth piece at ``args`` (FD across a kink is not a cause)."""
    text = (
        "FD of f's smooth piece at args (its switches -- relu, max, abs, clip, where, "
        "roundings, sorts -- frozen as they are at args; ties take JAX's conventions)"
    )
    for c in ("jvp", "vjp", *[k for k in results if k.startswith("hvp")], "taylor"):
        if c in results and results[c].status != "skipped":
            r = results[c]
            results[c] = dataclasses.replace(r, note="; ".join(x for x in (r.note, text) if x))
    return results


def _diagnose(res: dict, plan: _Plan, results: dict) -> tuple[dict, list[str]]:
    """NaN/Inf in ``f(args)`` and a non-deterministic ``f`` fail every check, saying so."""
    c = plan.ctx
    f0 = _np_leaves(res["f0"])
    notes = [
        f"NaN/Inf in f(args) at {_at(p, s, _first_bad(x[None]))}"
        for p, s, x in zip(c.out_paths, c.out_shapes, f0, strict=False)
        if _first_bad(x[None]) >= 0
    ]
    same = _compare_primal(
        "determinism", _np_leaves(res["f0_again"]), f0, c.out_paths, c.out_shapes, c.eps, "f(args)"
    )
    if same.status == "failed" and not notes:
        msg = (
            f"f is not deterministic: two evaluations of f at args differ by {same.error:.3e} "
            f"at {same.worst_path}"
            + (f"{list(same.worst_index)}" if same.worst_index else "")
            + " (does it draw NumPy random numbers or read state that changes while it is "
            "traced?); finite differences of such an f mean nothing, and a primal mismatch is "
            "not a custom rule's"
        )
        results["determinism"] = dataclasses.replace(same, note=msg, floor=None)
        notes.append("f is not deterministic (see determinism)")
    if notes:
        for n, r in results.items():
            if n != "determinism":
                results[n] = dataclasses.replace(
                    r, status="failed", note="; ".join(x for x in (r.note, *notes) if x)
                )
    return results, notes


def _locate(f, plan: _Plan, results: dict) -> dict:
    """Name the worst input leaf of a first-order failure by re-checking one leaf at a time."""
    c = plan.ctx
    failed = [n for n in ("jvp", "vjp") if n in results and results[n].status == "failed"]
    if not failed or len(c.in_paths) < 2:
        return results
    ratios = _localize(
        f,
        plan.args,
        plan.scales,
        c.vs,
        c.us,
        plan.u0,
        plan.ts,
        plan.tts,
        c.cfg,
        c.eps,
        plan.W,
        c.cfg.levels,
        plan.session,
    )
    worst = int(np.argmax(ratios))
    loc = "per-input-leaf re-check (error/tol): " + ", ".join(
        f"{p}: {q:.3g}" for p, q in zip(c.in_paths, ratios, strict=True)
    )
    for n in failed:
        r = results[n]
        results[n] = dataclasses.replace(
            r,
            worst_path=c.in_paths[worst] if n == "vjp" else r.worst_path,
            note="; ".join(x for x in (r.note, loc) if x),
        )
    return results


def _report(f, args, checks, results: dict, unavailable: dict) -> CheckReport:
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
    if "determinism" in results:
        ordered.insert(0, results["determinism"])
    name = getattr(f, "__name__", type(f).__name__)
    dts = sorted({str(jnp.result_type(x)) for x in jax.tree_util.tree_leaves(args)})
    return CheckReport(tuple(ordered), name, "/".join(dts))


def run_checks(
    f: Callable,
    args: tuple,
    checks: tuple[str, ...],
    *,
    num_directions: int,
    seed: int,
    key: Any,
    safety: float,
    levels: int,
    step: float | None,
    localize: bool,
    what: str,
    taylor_levels: int = 14,
) -> CheckReport:
    """Run ``checks`` on ``f`` at the prepared ``args`` (see the module docstring's steps)."""
    _options(what, num_directions, levels, safety, seed, key, step)
    cfg = _Cfg(
        tuple(checks),
        int(num_directions),
        int(levels),
        float(safety),
        None if step is None else float(step),
        taylor_levels,
    )
    plan = _plan(f, args, checks, cfg, seed, key, what)
    res, plan, unavailable = _first_run(f, plan)
    results: dict[str, CheckResult] = {}
    if res is not None:
        derived, tols = _derivatives(res, plan.h0, plan.ctx)
        results.update(derived)
        results.update(_primals(res, plan))
        results, notes = _diagnose(res, plan, results)
        line = program.LINE_KINDS[int(res["line"])]
        if not notes:
            results.update(_recheck(f, plan, derived, tols, smooth=line != "kinked"))
        if line == "frozen" and not notes:
            results = _note_piece(results)
        if "taylor" in plan.ctx.cfg.checks:
            results["taylor"] = _taylor(res, plan)
            if notes:
                results["taylor"] = dataclasses.replace(
                    results["taylor"], status="failed", note="; ".join(notes)
                )
        if localize and not notes:
            results = _locate(f, plan, results)
    return _report(f, args, checks, results, unavailable)


def _taylor(res: dict, plan: _Plan) -> CheckResult:
    p0, ps, d = res["taylor"]
    return _taylor_result(p0, ps, d, plan.tts, plan.ctx.eps, plan.W)


def _localize(f, args, scales, vs, us, u0, ts, tts, cfg, eps, W, levels, session) -> np.ndarray:
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
        res = program._eval(f, args, vi, us, u0, tsi, tts, cfg, session)
        est, err = program._fd_tree(res["F"], h0, eps, levels)
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
