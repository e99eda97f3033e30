"""fd_accuracy: the V-shaped error of finite differences, and what a full FD gradient costs.

Part 1. For a smooth test function ``f: R^n -> R`` (``sum(exp(sin x) cos(x / 2))``, holomorphic
so the complex step applies), a point ``x`` and a direction ``v`` (rms 1), the directional
derivative ``J(x) v`` is estimated with ``cr.fd.directional(f, x, v, method, step=h)`` over a
log grid of steps ``h``, in float32 and float64, and compared with the exact JVP (``cr.jvp``
in float64 at the same, rounded, point). The relative error follows a V:

* right branch, truncation: ``C h^p`` for a stencil of order ``p`` (forward 1, central 2,
  central4 4, complex step 2);
* left branch, round-off: ``~ eps |f| / (h |J v|)`` -- cancellation in ``f(x + h v) - f(x)``;
  the complex step has no subtraction, so its error stays at ``eps`` as ``h -> 0``.

The slope of each branch is fitted in log-log on the points at least ``fit_margin`` times away
from the best step and ``fit_margin`` times above the best error (and ``h <= fit_max_step``).

Part 2. The cost of a full gradient of ``f`` on ``W`` parameters: ``cr.fd.gradient`` (central:
``4W`` evaluations including its error estimate; ``2W`` is the minimum) against one reverse pass
(``cr.grad``), timed alternately (``chainrule.bench.timing.time_alternating``). FD work grows as
``W^2`` for an ``O(W)`` function, reverse mode as ``W``. Timings are measurements, not
reproducible numbers: they differ from run to run.
"""

from __future__ import annotations

import math
from typing import Literal

import jax
import jax.numpy as jnp
import numpy as np
from pydantic import BaseModel, ConfigDict, Field

import chainrule as cr

DESCRIPTION = (
    "Finite-difference error vs step (forward, central, higher order, Richardson, complex step; "
    "float32/float64): V-curves, fitted slopes, and FD-gradient cost vs one reverse pass"
)
X64 = True  # float64 curves need jax_enable_x64

Method = Literal["forward", "backward", "central", "central4", "central6", "richardson", "complex"]
#: Truncation order of each stencil (richardson adapts its order, so it has none).
ORDERS = {"forward": 1, "backward": 1, "central": 2, "central4": 4, "central6": 6, "complex": 2}


class Params(BaseModel):
    model_config = ConfigDict(extra="forbid")

    n: int = Field(8, ge=1, description="dimension of x for the error curves")
    n_directions: int = Field(
        16, ge=1, description="random (x, v) pairs; the curves show the RMS relative error"
    )
    methods: list[Method] = Field(
        default_factory=lambda: ["forward", "central", "central4", "richardson", "complex"],
        min_length=1,
    )
    dtypes: list[Literal["float32", "float64"]] = Field(
        default_factory=lambda: ["float32", "float64"], min_length=1
    )
    min_log10_step: float = Field(-14.0, description="smallest step, log10")
    max_log10_step: float = Field(0.0, description="largest step, log10")
    steps_per_decade: int = Field(4, ge=1, le=20)
    fit_margin: float = Field(5.0, gt=1, description="distance from the optimum for the fits")
    fit_max_step: float = Field(
        0.1,
        gt=0,
        description="largest step used in the truncation fits (beyond ~0.1 the next term of "
        "the Taylor series bends a sixth-order curve)",
    )
    cost_widths: list[int] = Field(
        default_factory=lambda: [16, 64, 256, 1024, 4096],
        description="W for the cost comparison ([] skips it)",
    )
    cost_reps: int = Field(5, ge=1, description="timed repetitions (median reported)")
    cost_chunk: int = Field(512, ge=1, description="FD columns evaluated per batch")


def test_function(x: jax.Array) -> jax.Array:
    """``sum(exp(sin x) cos(x / 2))``: smooth, O(n), holomorphic (works on complex input)."""
    return jnp.sum(jnp.exp(jnp.sin(x)) * jnp.cos(0.5 * x))


def _slope(h: np.ndarray, err: np.ndarray, mask: np.ndarray) -> float | None:
    if mask.sum() < 3:
        return None
    return float(np.polyfit(np.log10(h[mask]), np.log10(err[mask]), 1)[0])


def fit_slopes(h: np.ndarray, err: np.ndarray, p: Params) -> dict:
    """Best step and error; log-log slopes of the truncation and round-off branches."""
    ok = np.isfinite(err) & (err > 0)
    if not ok.any():
        return {
            "best_step": None,
            "best_error": None,
            "slope_truncation": None,
            "slope_roundoff": None,
        }
    i = int(np.argmin(np.where(ok, err, np.inf)))
    h_opt, e_min = h[i], err[i]
    # The floor: the third-smallest error, so that one lucky cancellation at the bottom of the
    # V does not pull noise-floor points into the fits.
    floor = np.sort(err[ok])[min(2, int(ok.sum()) - 1)]
    above = ok & (err >= p.fit_margin * floor)
    right = above & (h >= p.fit_margin * h_opt) & (h <= p.fit_max_step)
    # Left of the optimum, stop where x + h v rounds to x and the estimate collapses to 0
    # (relative error 1): that plateau is not the eps / h branch.
    left = above & (h <= h_opt / p.fit_margin) & (err <= 0.1)
    slope = _slope(h, err, right)
    return {
        "best_step": float(h_opt),
        "best_error": float(e_min),
        "slope_truncation": slope,
        "slope_roundoff": _slope(h, err, left),
        # Where the truncation fit lies (for the plot's guide lines): its step range and the
        # geometric-mean constant C of err = C h^slope over the fitted points.
        "fit_step_min": float(h[right].min()) if slope is not None else None,
        "fit_step_max": float(h[right].max()) if slope is not None else None,
        "fit_log10_c": (
            float(np.mean(np.log10(err[right]) - slope * np.log10(h[right])))
            if slope is not None
            else None
        ),
    }


#: A fitted order counts as the stencil's when within this distance of it: ~0.3 for the
#: first-order stencils, ~0.55 at order 6 (neighbouring central stencils differ by 2 orders).
def order_tolerance(order: int) -> float:
    """Two-sided tolerance on a fitted truncation slope of a stencil of ``order``."""
    return 0.25 + 0.05 * order


def best_error_theory(order: int, eps: float) -> float:
    """The textbook best relative error of an order-``order`` stencil, ``eps^(p/(p+1))``;
    the complex step has no cancellation, so its best error is ``eps``."""
    return eps ** (order / (order + 1))


def stencil_verdicts(fits: list[dict]) -> list[dict]:
    """One verdict per (method, dtype) with a known order, on the claim's own quantities.

    Claim: truncation error ``~ h^p`` (two-sided: ``|slope - p| <= order_tolerance(p)``),
    round-off error ``~ eps/h`` for a subtraction (slope within ``-1 +- 0.3``; the complex
    step must have no such branch), and the best error within a factor 100 of
    ``eps^(p/(p+1))`` (``eps`` for the complex step), either way. ``"not resolvable"`` when the
    truncation branch is too short to fit (float32 high orders: round-off meets truncation
    within a decade of the largest step); such cells do not count for or against the claim.
    """
    out = []
    for f in fits:
        p = f["expected_order"]
        if p is None:
            continue
        eps = float(np.finfo(f["dtype"]).eps)
        complex_step = f["method"] == "complex"
        theory_err = eps if complex_step else best_error_theory(p, eps)
        s, r, e = f["slope_truncation"], f["slope_roundoff"], f["best_error"]
        checks = {
            "order": s is not None and abs(s - p) <= order_tolerance(p),
            "roundoff": (r is None) if complex_step else (r is not None and abs(r + 1) <= 0.3),
            "best_error": e is not None and theory_err / 100 <= e <= 100 * theory_err,
        }
        if s is None:
            verdict = "not resolvable"
        elif all(checks.values()):
            verdict = "reproduced"
        elif checks["order"]:
            verdict = "partial"
        else:
            verdict = "not reproduced"
        out.append(
            {
                "method": f["method"],
                "dtype": f["dtype"],
                "paper_order": p,
                "slope_truncation": s,
                "order_tolerance": order_tolerance(p),
                "paper_roundoff_slope": None if complex_step else -1.0,
                "slope_roundoff": r,
                "paper_best_error": theory_err,
                "best_error": e,
                **{f"ok_{k}": v for k, v in checks.items()},
                "verdict": verdict,
            }
        )
    return out


def overall_verdict(verdicts: list[dict]) -> str:
    """``reproduced`` when every resolvable stencil reproduces and every stencil run in
    float64 is resolvable; ``not reproduced`` when none does; ``partial`` otherwise."""
    resolved = [v for v in verdicts if v["verdict"] != "not resolvable"]
    f64_unresolved = [
        v for v in verdicts if v["dtype"] == "float64" and v["verdict"] == "not resolvable"
    ]
    if not resolved:
        return "not reproduced"
    good = [v for v in resolved if v["verdict"] == "reproduced"]
    if len(good) == len(resolved) and not f64_unresolved:
        return "reproduced"
    return "not reproduced" if not good else "partial"


def _directional_batch(x, v, method, step):
    """``cr.fd.directional`` for a batch of points and directions (rows of ``x`` and ``v``)."""
    return jax.vmap(lambda xi, vi: cr.fd.directional(test_function, xi, vi, method, step))(x, v)


_directional_batch_jit = jax.jit(_directional_batch, static_argnums=(2,))


def error_curves(p: Params, key: jax.Array) -> tuple[list[dict], list[dict]]:
    """RMS over ``p.n_directions`` random (x, v) of the error relative to RMS ``|J v|``.

    One pair alone gives a ragged V in float32: the round-off error is a few ulps of
    ``f(x + hv) - f(x)``, quantized, and single steps can cancel by luck; the RMS over several
    pairs shows the typical error that the error model describes.
    """
    kx, kv = jax.random.split(key)
    x64 = jax.random.uniform(kx, (p.n_directions, p.n), jnp.float64, -1.0, 1.0)
    v64 = jax.random.normal(kv, (p.n_directions, p.n), jnp.float64)
    v64 = v64 / jnp.sqrt(jnp.mean(v64 * v64, axis=1, keepdims=True))
    n_steps = int(round((p.max_log10_step - p.min_log10_step) * p.steps_per_decade)) + 1
    hs = np.logspace(p.min_log10_step, p.max_log10_step, n_steps)
    rows, fits = [], []
    for dt in p.dtypes:
        dtype = jnp.dtype(dt)
        x, v = x64.astype(dtype), v64.astype(dtype)
        # The exact JVP in float64 at the rounded points: only the FD error is measured.
        ref = jax.vmap(lambda xi, vi: cr.jvp(test_function, (xi,), (vi,))[1])(
            x.astype(jnp.float64), v.astype(jnp.float64)
        )
        ref = np.asarray(ref, np.float64)
        # Errors relative to the typical size of J v (its RMS over the pairs), not to each
        # pair's own J v, which can be near 0 for an unlucky direction.
        scale = float(np.sqrt(np.mean(ref**2)))
        for method in p.methods:
            errs = []
            for h in hs:
                est, est_err = _directional_batch_jit(x, v, method, float(h))
                rel = np.abs(np.asarray(est, np.float64) - ref) / scale
                e = float(np.sqrt(np.mean(rel**2)))
                errs.append(e)
                rows.append(
                    {
                        "dtype": dt,
                        "method": method,
                        "step": float(h),
                        "rel_error": e,
                        "estimated_rel_error": float(
                            np.sqrt(np.mean((np.asarray(est_err, np.float64) / scale) ** 2))
                        ),
                    }
                )
            fit = fit_slopes(hs, np.asarray(errs), p)
            fits.append(
                {"dtype": dt, "method": method, "expected_order": ORDERS.get(method), **fit}
            )
    return rows, fits


def cost_table(p: Params, key: jax.Array) -> list[dict]:
    from chainrule.bench.timing import time_alternating

    grad = cr.grad(test_function)
    rows = []
    for w in p.cost_widths:
        x = jax.random.uniform(jax.random.fold_in(key, w), (w,), jnp.float64, -1.0, 1.0)
        chunk = p.cost_chunk if w > p.cost_chunk else None

        def fd_grad(x, chunk=chunk):
            return cr.fd.gradient(test_function, x, method="central", chunk_size=chunk)[0]

        t = time_alternating({"fd": fd_grad, "reverse": grad}, x, warmup=1, reps=p.cost_reps)
        diff = float(jnp.max(jnp.abs(fd_grad(x) - grad(x))))
        rows.append(
            {
                "W": w,
                "fd_evaluations": 4 * w,
                "fd_min_evaluations": 2 * w,
                "reverse_passes": 1,
                "fd_ms": t["fd"]["median_ms"],
                "reverse_ms": t["reverse"]["median_ms"],
                "ratio": t["fd"]["median_ms"] / t["reverse"]["median_ms"],
                "max_abs_diff": diff,
            }
        )
    return rows


def run(params: Params, ctx) -> dict:
    p = params
    if p.min_log10_step >= p.max_log10_step:
        raise ValueError("min_log10_step must be below max_log10_step")
    rows, fits = error_curves(p, ctx.fold("point"))
    cost = cost_table(p, ctx.fold("cost")) if p.cost_widths else []
    verdicts = stencil_verdicts(fits)
    summary: dict = {}
    for v in verdicts:
        if v["slope_truncation"] is not None:
            summary[f"slope {v['method']} {v['dtype']} (paper {v['paper_order']})"] = round(
                v["slope_truncation"], 3
            )
    summary["verdict"] = overall_verdict(verdicts)
    if cost:
        big = cost[-1]
        summary[f"FD/reverse time at W={big['W']}"] = round(big["ratio"], 1)
        if len(cost) >= 2:
            # Between the two largest W: small W is dominated by dispatch, not arithmetic.
            a, b = cost[-2], cost[-1]
            summary["FD time exponent in W (two largest W)"] = round(
                math.log(b["fd_ms"] / a["fd_ms"]) / math.log(b["W"] / a["W"]), 2
            )
    return {
        "tables": {"slopes": fits, "verdicts": verdicts, "cost": cost, "errors": rows},
        "summary": summary,
    }


# ----------------------------------------------------------------------------- plots, report


def plot(results: dict, params: Params) -> dict:
    from matplotlib.figure import Figure

    p = params
    rows = results["tables"]["errors"]
    figs = {}
    fig = Figure(figsize=(5.2 * len(p.dtypes), 4.2), layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, len(p.dtypes), sharey=True))
    fits = {(f["method"], f["dtype"]): f for f in results["tables"]["slopes"]}
    for ax, dt in zip(axes, p.dtypes, strict=True):
        eps = float(np.finfo(dt).eps)
        for k, method in enumerate(p.methods):
            pts = [
                (r["step"], r["rel_error"])
                for r in rows
                if r["dtype"] == dt and r["method"] == method and r["rel_error"]
            ]
            if pts:
                h, e = np.array(pts).T
                ax.loglog(h, e, marker=".", color=f"C{k}", label=method)
            # Guide line C h^p with the stencil's own order p, a decade below the fitted points
            # (so it does not hide under the curve) and extended a decade to the left: a
            # measured curve parallel to it has order p.
            f = fits.get((method, dt))
            order = ORDERS.get(method)
            if f and order and f.get("fit_log10_c") is not None:
                g = np.logspace(
                    math.log10(f["fit_step_min"]) - 1, math.log10(f["fit_step_max"]), 20
                )
                mid = (math.log10(f["fit_step_min"]) + math.log10(f["fit_step_max"])) / 2
                c = 10 ** (f["fit_log10_c"] + (f["slope_truncation"] - order) * mid - 1)
                ax.loglog(g, c * g**order, "--", color=f"C{k}", lw=1.2)
                ax.annotate(
                    f"h^{order}",
                    (g[0], c * g[0] ** order),
                    fontsize=7,
                    color=f"C{k}",
                    ha="right",
                    va="top",
                )
        h = np.logspace(p.min_log10_step, p.max_log10_step, 50)
        ax.loglog(h, eps / h, "k:", lw=1, label="eps / h")
        ax.axhline(eps, color="gray", lw=0.8)
        ax.set_ylim(max(eps * 1e-3, 1e-18), 10.0)
        ax.set_title(f"{dt} (eps = {eps:.1e})")
        ax.set_xlabel("step h")
        ax.grid(True, which="major", alpha=0.3)
    axes[0].set_ylabel("relative error of J v")
    axes[-1].legend(fontsize=8, ncol=2)
    fig.suptitle(
        "dashed: C h^p with each stencil's paper order p, drawn a decade below its fitted "
        "truncation points",
        fontsize=9,
    )
    figs["error_vs_step"] = fig

    cost = results["tables"].get("cost") or []
    if cost:
        fig = Figure(figsize=(5.2, 4.0), layout="constrained")
        ax = fig.add_subplot()
        w = np.array([c["W"] for c in cost], float)
        ax.loglog(w, [c["fd_ms"] for c in cost], "o-", label="FD gradient (central, 4W evals)")
        ax.loglog(w, [c["reverse_ms"] for c in cost], "s-", label="one reverse pass (cr.grad)")
        ax.set_xlabel("W (parameters)")
        ax.set_ylabel("median time (ms)")
        ax.set_title("full gradient: O(W) evaluations vs one reverse pass")
        ax.grid(True, which="major", alpha=0.3)
        ax.legend(fontsize=8)
        figs["gradient_cost"] = fig
    return figs


def report(results: dict, params: Params) -> str:
    p = params
    fits = results["tables"]["slopes"]
    lines = [
        "## What was run",
        "",
        f"`cr.fd.directional` on f(x) = sum(exp(sin x) cos(x/2)), n = {p.n}, RMS over "
        f"{p.n_directions} random points and directions, for methods {p.methods} in "
        f"{p.dtypes}, at {p.steps_per_decade} steps per decade from "
        f"1e{p.min_log10_step:g} to 1e{p.max_log10_step:g}; error relative to the RMS of "
        "the exact JVP (float64) over the pairs."
        " Slopes are least-squares fits in log-log on each branch, away "
        f"from the optimum by a factor {p.fit_margin:g} in step and error (truncation: "
        f"h <= {p.fit_max_step:g}).",
        "",
        "## The published claim",
        "",
        "A stencil of order p has truncation error O(h^p) and round-off error ~eps/h, so the "
        "error is V-shaped with its best step near eps^(1/(p+1)) and best error near "
        "eps^(p/(p+1)) (forward: ~sqrt(eps); central: ~eps^(2/3)). The complex step "
        "Im f(x + ihv)/h has no subtraction: O(h^2) truncation and no round-off branch "
        "(Squire & Trapp 1998). A full FD gradient needs O(W) evaluations; reverse mode "
        "needs one pass (Griewank & Walther 2008).",
        "",
        "## What this run measured",
        "",
        "Per stencil: the fitted truncation slope against the paper's order p (two-sided "
        "tolerance 0.25 + 0.05 p), the round-off slope against -1 (+-0.3; the complex step must "
        "have none), and the best error against eps^(p/(p+1)) (eps for the complex step; "
        "within a factor 100 either way). Not resolvable: the truncation branch is too short "
        "to fit (round-off meets it within a decade of the largest step), which counts neither "
        "way.",
        "",
        "| method | dtype | paper order | truncation slope | round-off slope (paper -1) | "
        "best step | best error | paper best error | verdict |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    verdicts = {(v["method"], v["dtype"]): v for v in results["tables"].get("verdicts", [])}
    for f in fits:
        exp_o = f["expected_order"]
        v = verdicts.get((f["method"], f["dtype"]))
        paper_rs = "none" if f["method"] == "complex" else "-1"
        lines.append(
            f"| {f['method']} | {f['dtype']} | {exp_o if exp_o is not None else 'adaptive'} | "
            f"{_f(f['slope_truncation'])} | {_f(f['slope_roundoff'])} "
            f"({paper_rs if exp_o else '–'}) | {_f(f['best_step'])} | {_f(f['best_error'])} | "
            f"{_f(v['paper_best_error']) if v else '–'} | "
            f"{v['verdict'] if v else 'no claim (adaptive order)'} |"
        )
    cost = results["tables"].get("cost") or []
    lines.append("")
    if cost:
        a, b = cost[0], cost[-1]
        lines.append(
            f"Full gradient: at W = {b['W']} the FD gradient took {b['fd_ms']:.3g} ms against "
            f"{b['reverse_ms']:.3g} ms for one reverse pass ({b['ratio']:.0f}x); from W = "
            f"{a['W']} to {b['W']} FD time grew {b['fd_ms'] / a['fd_ms']:.0f}x, reverse "
            f"{b['reverse_ms'] / a['reverse_ms']:.1f}x (timings on this machine; small W is "
            "dispatch-bound)."
        )
        lines.append("")
    lines.append(
        f"Verdict on the O(h^p) claim over every stencil (forward 1, central 2, central4 4, "
        f"central6 6, complex 2): **{results['summary'].get('verdict', 'not tested')}**."
    )
    return "\n".join(lines)


def _f(v) -> str:
    return "–" if v is None else f"{v:.3g}"
