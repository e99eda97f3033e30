"""dynamical_isometry: singular values of a deep network's input-output Jacobian.

Pennington, Schoenholz & Ganguli (2017), "Resurrecting the sigmoid in deep learning through
dynamical isometry": for ``x_l = phi(W_l x_{l-1} + b_l)`` the input-output Jacobian is
``J = prod_l D_l W_l`` with ``D_l = diag(phi'(h_l))``. At criticality (mean squared singular
value ``chi = sigma_w^2 E[phi'(h)^2] = 1``) the *mean* of ``J^T J``'s spectrum is 1 at any depth,
but its *shape* depends on the weights and the nonlinearity: with tanh, orthogonal weights and
a small fixed point ``q*`` the singular values stay concentrated around 1 as depth grows
(dynamical isometry); with Gaussian weights they spread (the largest grows ~ sqrt(L)); ReLU
cannot achieve it with either (``D_l`` is 0/1, so the spectrum always has a large mass near 0).

For each configuration and depth the experiment draws ``n_nets`` networks of width ``width``,
evaluates the dense ``J`` at one input ``x ~ N(0, q* I)`` with ``cr.jacobian`` (``width``
reverse passes; the layers run in a ``lax.scan``, so every depth compiles once per shape), takes
its SVD and reports the spread: ``mean s^2`` (criticality check, ~1), ``std(s)``,
``std(s^2)/mean(s^2)`` (``diagnostics.Spectrum.spread``), ``s_max`` and the fraction of singular
values within ``[near_low, near_high]`` (default [0.5, 2]).

The tanh point on the critical line is computed, not looked up: for the chosen ``q*`` solve
``sigma_w^2 E[tanh'(sqrt(q*) z)^2] = 1`` and ``sigma_b^2 = q* - sigma_w^2 E[tanh(sqrt(q*) z)^2]``
(Gauss-Hermite quadrature), so that ``q*`` is the fixed point of the variance map.
"""

from __future__ import annotations

import math
from typing import Literal, get_args

import jax
import jax.numpy as jnp
import numpy as np
from pydantic import BaseModel, ConfigDict, Field

import chainrule as cr
from chainrule import diagnostics

DESCRIPTION = (
    "Pennington et al. 2017: input-output Jacobian spectra of deep tanh/ReLU nets with Gaussian "
    "vs orthogonal weights; only tanh+orthogonal stays near 1"
)

Config = Literal["tanh_orthogonal", "tanh_gaussian", "relu_orthogonal", "relu_gaussian"]
ALL_CONFIGS: list[str] = list(get_args(Config))
LABELS = {
    "tanh_orthogonal": "tanh + orthogonal (critical)",
    "tanh_gaussian": "tanh + Gaussian (critical)",
    "relu_orthogonal": "ReLU + orthogonal (gain sqrt 2)",
    "relu_gaussian": "ReLU + Gaussian (He)",
}


class Params(BaseModel):
    model_config = ConfigDict(extra="forbid")

    width: int = Field(128, ge=2, le=4096, description="units per layer N (J is N x N)")
    depths: list[int] = Field(
        default_factory=lambda: [2, 8, 32, 128], min_length=1, description="depths L"
    )
    n_nets: int = Field(2, ge=1, description="networks drawn per (config, depth)")
    configs: list[Config] = Field(default_factory=lambda: list(ALL_CONFIGS), min_length=1)
    q_star: float = Field(
        1 / 64, gt=0, le=10, description="tanh fixed point q* of the pre-activation variance"
    )
    near_low: float = Field(0.5, gt=0, description="lower end of the 'near 1' window")
    near_high: float = Field(2.0, gt=1, description="upper end of the 'near 1' window")


# ----------------------------------------------------------------------------- mean-field theory


def tanh_critical_point(q_star: float, order: int = 101) -> tuple[float, float]:
    """``(sigma_w^2, sigma_b^2)`` on tanh's critical line with fixed point ``q_star``.

    ``chi = sigma_w^2 E[sech^4(sqrt(q*) z)] = 1`` and ``q* = sigma_w^2 E[tanh^2] + sigma_b^2``
    for ``z ~ N(0, 1)``; expectations by Gauss-Hermite (probabilists') quadrature.

    >>> sw2, sb2 = tanh_critical_point(1 / 64)
    >>> round(sw2, 3), sb2 > 0
    (1.031, True)
    """
    z, w = np.polynomial.hermite_e.hermegauss(order)
    w = w / w.sum()
    h = math.sqrt(q_star) * z
    sw2 = 1.0 / float(np.sum(w / np.cosh(h) ** 4))
    sb2 = q_star - sw2 * float(np.sum(w * np.tanh(h) ** 2))
    return sw2, max(sb2, 0.0)


def config_constants(config: str, q_star: float) -> dict:
    """Activation, weight kind, ``sigma_w^2``, ``sigma_b^2`` and input variance of a config."""
    act, weights = config.split("_")
    if act == "tanh":
        sw2, sb2 = tanh_critical_point(q_star)
        q_in = q_star
    else:  # ReLU is critical at sigma_w^2 = 2 (He) for every input scale; no bias
        sw2, sb2, q_in = 2.0, 0.0, 1.0
    return {"activation": act, "weights": weights, "sigma_w2": sw2, "sigma_b2": sb2, "q_in": q_in}


# ----------------------------------------------------------------------------- the network


def _forward(x: jax.Array, ws: jax.Array, bs: jax.Array, activation: str) -> jax.Array:
    """``x_L`` of ``x_l = act(x_{l-1} W_l + b_l)``, layers stacked on axis 0 of ``ws``/``bs``."""
    act = cr.nets.get_activation(activation)

    def layer(h, wb):
        w, b = wb
        return act(h @ w + b), None

    return jax.lax.scan(layer, x, (ws, bs))[0]


def _weights(key: jax.Array, c: dict, depth: int, width: int):
    sw = math.sqrt(c["sigma_w2"])
    if c["weights"] == "orthogonal":
        init = cr.init.orthogonal(sw)
    else:
        init = cr.init.normal(sw / math.sqrt(width))
    kw, kb = jax.random.split(key)
    ws = jax.vmap(lambda k: init(k, (width, width), jnp.float32))(jax.random.split(kw, depth))
    bs = math.sqrt(c["sigma_b2"]) * jax.random.normal(kb, (depth, width), jnp.float32)
    return ws, bs


def spectrum(key: jax.Array, config: str, depth: int, p: Params) -> np.ndarray:
    """Singular values of ``dx_L/dx_0`` for ``p.n_nets`` random networks (concatenated)."""
    c = config_constants(config, p.q_star)
    jac = cr.jacobian(_forward, mode="rev")
    out = []
    for k in jax.random.split(key, p.n_nets):
        k_net, k_x = jax.random.split(k)
        ws, bs = _weights(k_net, c, depth, p.width)
        x = math.sqrt(c["q_in"]) * jax.random.normal(k_x, (p.width,), jnp.float32)
        j = jac(x, ws, bs, c["activation"])
        out.append(np.asarray(jnp.linalg.svd(j, compute_uv=False), np.float64))
    return np.sort(np.concatenate(out))[::-1]


def spread_stats(s: np.ndarray, low: float, high: float) -> dict:
    """Spread measures of singular values ``s`` (via ``diagnostics.Spectrum``)."""
    spec = diagnostics.Spectrum(s, "exact", (len(s), len(s)))
    return {
        "mean_sq": spec.mean_sq,
        "s_max": float(s.max()),
        "s_median": float(np.median(s)),
        "s_std": float(np.std(s)),
        "spread_sq": spec.spread,
        "frac_near_1": float(np.mean((s >= low) & (s <= high))),
    }


def run(params: Params, ctx) -> dict:
    p = params
    rows, spectra = [], []
    grid = [(c, d) for c in p.configs for d in p.depths]
    for config, depth in ctx.progress(grid, total=len(grid), desc="config x depth"):
        # Common random numbers across configs: the same keys at each depth.
        s = spectrum(ctx.fold(f"depth/{depth}"), config, depth, p)
        c = config_constants(config, p.q_star)
        rows.append(
            {
                "config": config,
                "depth": depth,
                "sigma_w2": c["sigma_w2"],
                "sigma_b2": c["sigma_b2"],
                **spread_stats(s, p.near_low, p.near_high),
            }
        )
        spectra.append({"config": config, "depth": depth, "s": s.tolist()})
    deepest = max(p.depths)
    summary: dict = {"deepest": deepest}
    for r in rows:
        if r["depth"] == deepest:
            summary[f"{r['config']}.frac_near_1"] = r["frac_near_1"]
            summary[f"{r['config']}.spread_sq"] = r["spread_sq"]
    summary["agrees"] = _agrees(rows, deepest)
    return {"tables": {"spectra": rows}, "summary": summary, "spectra": spectra}


def _agrees(rows: list[dict], depth: int) -> bool | None:
    """tanh+orthogonal is the most concentrated config at the deepest depth, by both the
    fraction of singular values near 1 and the scale-free spread std(s^2)/mean(s^2) (None if
    it was not run). (The plain std of s is not used: ReLU's collapse to 0 makes it small.)"""
    at = {r["config"]: r for r in rows if r["depth"] == depth}
    if "tanh_orthogonal" not in at or len(at) < 2:
        return None
    ref = at["tanh_orthogonal"]
    others = [r for c, r in at.items() if c != "tanh_orthogonal"]
    return all(
        ref["frac_near_1"] > o["frac_near_1"] and ref["spread_sq"] < o["spread_sq"] for o in others
    )


# ----------------------------------------------------------------------------- plots, report


def plot(results: dict, params: Params) -> dict:
    from matplotlib.figure import Figure

    p = params
    figs = {}
    fig = Figure(figsize=(3.4 * len(p.depths), 2.6 * len(p.configs)), layout="constrained")
    axes = np.atleast_2d(fig.subplots(len(p.configs), len(p.depths), squeeze=False))
    by = {(e["config"], e["depth"]): np.asarray(e["s"], float) for e in results["spectra"]}
    top = max((s.max() for s in by.values()), default=2.0)
    bins = np.logspace(-3, math.log10(max(top, 2.0)) + 0.05, 50)
    for i, c in enumerate(p.configs):
        for j, d in enumerate(p.depths):
            ax = axes[i, j]
            s = by.get((c, d))
            if s is None:
                continue
            ax.hist(np.clip(s, 1e-3, None), bins=bins, color=f"C{i}")
            ax.set_xscale("log")
            ax.axvspan(p.near_low, p.near_high, color="0.85", zorder=0)
            ax.axvline(1.0, color="k", lw=0.8)
            ax.set_title(f"{LABELS[c]}, L={d}", fontsize=8)
            if i == len(p.configs) - 1:
                ax.set_xlabel("singular value of J (clipped at 1e-3)")
    fig.suptitle(f"width {p.width}: shaded = [{p.near_low:g}, {p.near_high:g}]")
    figs["histograms"] = fig

    fig = Figure(figsize=(10, 3.4), layout="constrained")
    axes = fig.subplots(1, 3)
    rows = results["tables"]["spectra"]
    for k, c in enumerate(p.configs):
        rs = sorted((r for r in rows if r["config"] == c), key=lambda r: r["depth"])
        d = [r["depth"] for r in rs]
        axes[0].semilogx(d, [r["frac_near_1"] for r in rs], "o-", color=f"C{k}", label=LABELS[c])
        axes[1].loglog(d, [r["s_max"] for r in rs], "o-", color=f"C{k}")
        axes[2].loglog(d, [r["mean_sq"] for r in rs], "o-", color=f"C{k}")
    axes[0].set_ylabel(f"fraction of s in [{p.near_low:g}, {p.near_high:g}]")
    axes[1].set_ylabel("largest singular value")
    axes[2].set_ylabel("mean s^2 (criticality: 1)")
    for ax in axes:
        ax.set_xlabel("depth L")
        ax.grid(True, alpha=0.3)
    axes[0].legend(fontsize=7)
    figs["spread_vs_depth"] = fig
    return figs


def report(results: dict, params: Params) -> str:
    p = params
    rows = results["tables"]["spectra"]
    deepest = max(p.depths)
    at = {r["config"]: r for r in rows if r["depth"] == deepest}
    sw2, sb2 = tanh_critical_point(p.q_star)
    lines = [
        "## What was run",
        "",
        f"Input-output Jacobians of plain networks of width {p.width} at depths {p.depths} "
        f"({p.n_nets} networks each, float32, dense J by `cr.jacobian`, then an SVD). tanh "
        f"networks sit on the critical line at q* = {p.q_star:g}: sigma_w^2 = {sw2:.4f}, "
        f"sigma_b^2 = {sb2:.3g} (computed by quadrature); ReLU networks use sigma_w^2 = 2, no "
        f"bias. Orthogonal weights are `cr.init.orthogonal(sigma_w)`, Gaussian ones "
        f"`cr.init.normal(sigma_w / sqrt(N))`.",
        "",
        "## The published claim",
        "",
        "Pennington, Schoenholz & Ganguli (2017), *Resurrecting the sigmoid in deep learning "
        "through dynamical isometry*: at criticality every configuration has mean squared "
        "singular value 1, but only sigmoidal (tanh) networks with orthogonal weights and small "
        "q* keep the whole singular-value spectrum concentrated around 1 as depth grows; "
        "Gaussian weights spread it (the largest singular value grows with depth) and ReLU "
        "networks, orthogonal or not, cannot reach dynamical isometry.",
        "",
        f"## What this run measured (depth {deepest})",
        "",
    ]
    for c in p.configs:
        r = at.get(c)
        if r is not None:
            lines.append(
                f"- {LABELS[c]}: {100 * r['frac_near_1']:.0f}% of singular values in "
                f"[{p.near_low:g}, {p.near_high:g}], median {r['s_median']:.3g}, "
                f"std(s^2)/mean(s^2) "
                f"{r['spread_sq']:.3g}, max {r['s_max']:.3g}, "
                f"mean s^2 {r['mean_sq']:.3g}."
            )
    agree = results["summary"].get("agrees")
    verdict = {True: "yes", False: "no", None: "not tested (tanh+orthogonal not run)"}[agree]
    lines += [
        "",
        f"Agreement with the claim: **{verdict}** — tanh+orthogonal "
        + ("has" if agree else "does not have")
        + " both the largest fraction of singular values near 1 and the smallest spread "
        f"std(s^2)/mean(s^2) at depth {deepest}. Finite width matters: the theory is for "
        "N -> infinity at fixed L, and at "
        f"L comparable to N even tanh+orthogonal spreads slowly (its spread grows ~ q* L).",
    ]
    return "\n".join(lines)
