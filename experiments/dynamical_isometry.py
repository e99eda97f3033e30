"""dynamical_isometry: singular values of a deep network's input-output Jacobian, swept over q*.

Pennington, Schoenholz & Ganguli (2017), "Resurrecting the sigmoid in deep learning through
dynamical isometry": for ``x_l = phi(W_l x_{l-1} + b_l)`` the input-output Jacobian is
``J = prod_l D_l W_l`` with ``D_l = diag(phi'(h_l))``. At criticality (mean squared singular
value ``chi = sigma_w^2 E[phi'(h)^2] = 1``) the *mean* of ``J^T J``'s spectrum is 1 at any depth,
but its *shape* depends on the weights, the nonlinearity and the fixed point ``q*`` of the
pre-activation variance. Free probability gives its relative variance exactly (N -> infinity):

    Var[s^2] / E[s^2]^2 = L (mu_2 / mu_1^2 - 1 + v_W),   mu_k = E[phi'(h)^(2k)], h ~ N(0, q*),

with ``v_W = 0`` for orthogonal and 1 for Gaussian weights. For tanh ``mu_2/mu_1^2 - 1 ~ 8 q*^2``
vanishes as ``q* -> 0``: orthogonal weights with small ``q*`` keep every singular value near 1 at
any depth (dynamical isometry), and it is lost once ``L q*^2`` is no longer small; Gaussian
weights spread as ``sqrt(L)`` at every ``q*``; ReLU (``phi'^2`` in {0, 1}: ``mu_2/mu_1^2 - 1 = 1``)
spreads as ``sqrt(L)`` or ``sqrt(2L)`` whatever its scale.

For each configuration, ``q*`` (tanh only: ReLU is scale-free) and depth the experiment draws
``n_nets`` networks of width ``width``, evaluates the dense ``J`` at one input ``x ~ N(0, q* I)``
with ``cr.jacobian`` (``width`` reverse passes; the layers run in a ``lax.scan``, so every depth
compiles once per shape) in float64, takes its SVD and reports the spread: ``mean s^2``
(criticality, ~1), ``std(s^2)/mean(s^2)`` (``diagnostics.Spectrum.spread``, the square root of
the quantity above, beside the theory), ``s_max`` and the fraction of singular values within
``[near_low, near_high]`` (default [0.5, 2]).

The tanh point on the critical line is computed, not looked up: for each ``q*`` solve
``sigma_w^2 E[tanh'(sqrt(q*) z)^2] = 1`` and ``sigma_b^2 = q* - sigma_w^2 E[tanh(sqrt(q*) z)^2]``
(Gauss-Hermite quadrature), so that ``q*`` is the fixed point of the variance map.
"""

from __future__ import annotations

import math
from typing import Literal, get_args

import jax
import jax.numpy as jnp
import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

import chainrule as cr
from chainrule import diagnostics

from ._common import Check, claims_section, overall

DESCRIPTION = (
    "Pennington et al. 2017: input-output Jacobian spectra of deep tanh/ReLU nets with Gaussian "
    "vs orthogonal weights over a sweep of q*; isometry only for tanh+orthogonal at small q*"
)
X64 = True  # the spectra of deep Gaussian/ReLU nets reach 1e-8 and below: float64 resolves them

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
    n_nets: int = Field(2, ge=1, description="networks drawn per (config, q*, depth)")
    configs: list[Config] = Field(default_factory=lambda: list(ALL_CONFIGS), min_length=1)
    q_stars: list[float] = Field(
        default_factory=lambda: [1 / 256, 1 / 64, 1 / 16, 1 / 4, 1.0],
        min_length=1,
        description="tanh fixed points q* of the pre-activation variance (each > 0, <= 10)",
    )
    near_low: float = Field(0.5, gt=0, description="lower end of the 'near 1' window")
    near_high: float = Field(2.0, gt=1, description="upper end of the 'near 1' window")
    isometric_frac: float = Field(
        0.9, gt=0, le=1, description="isometry: at least this fraction of s in the window"
    )
    theory_factor: float = Field(
        1.5, ge=1, description="measured spread within this factor of the theory (both ways)"
    )
    theory_max_spread: float = Field(
        1.0,
        gt=0,
        description="compare with the N -> infinity theory only where it predicts a spread up "
        "to this (beyond, finite N truncates the heavy tail)",
    )

    @model_validator(mode="after")
    def _check(self) -> Params:
        bad = [q for q in self.q_stars if not (0 < q <= 10 and math.isfinite(q))]
        if bad:
            raise ValueError(f"q_stars {bad} must be in (0, 10]; e.g. [0.00390625, 1.0]")
        return self


# ----------------------------------------------------------------------------- mean-field theory


def _gauss(order: int = 101) -> tuple[np.ndarray, np.ndarray]:
    z, w = np.polynomial.hermite_e.hermegauss(order)
    return z, w / w.sum()


def tanh_critical_point(q_star: float, order: int = 101) -> tuple[float, float]:
    """``(sigma_w^2, sigma_b^2)`` on tanh's critical line with fixed point ``q_star``.

    ``chi = sigma_w^2 E[sech^4(sqrt(q*) z)] = 1`` and ``q* = sigma_w^2 E[tanh^2] + sigma_b^2``
    for ``z ~ N(0, 1)``; expectations by Gauss-Hermite (probabilists') quadrature.

    >>> sw2, sb2 = tanh_critical_point(1 / 64)
    >>> round(sw2, 3), sb2 > 0
    (1.031, True)
    """
    z, w = _gauss(order)
    h = math.sqrt(q_star) * z
    sw2 = 1.0 / float(np.sum(w / np.cosh(h) ** 4))
    sb2 = q_star - sw2 * float(np.sum(w * np.tanh(h) ** 2))
    return sw2, max(sb2, 0.0)


def theory_spread(config: str, q_star: float, depth: int) -> float:
    """Free-probability ``std(s^2) / mean(s^2)`` of ``J``'s singular values at N -> infinity.

    ``sqrt(L (mu_2 / mu_1^2 - 1 + v_W))`` with ``mu_k = E[phi'(h)^(2k)]``, ``h ~ N(0, q*)``,
    ``v_W`` = 0 (orthogonal) or 1 (Gaussian): the relative variances of free factors add.

    >>> round(theory_spread("relu_gaussian", 1.0, 8) ** 2, 6)
    16.0
    >>> theory_spread("tanh_orthogonal", 1e-6, 8) < 1e-4
    True
    """
    act, weights = config.split("_")
    if act == "tanh":
        z, w = _gauss()
        d2 = 1.0 / np.cosh(math.sqrt(q_star) * z) ** 4  # tanh'(h)^2
        mu1, mu2 = float(np.sum(w * d2)), float(np.sum(w * d2**2))
        rel = mu2 / mu1**2 - 1.0
    else:  # relu'(h)^2 is 0 or 1 with probability 1/2: mu_1 = mu_2 = 1/2
        rel = 1.0
    v_w = 0.0 if weights == "orthogonal" else 1.0
    return math.sqrt(depth * (rel + v_w))


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


def unit_draws(key: jax.Array, depth: int, p: Params) -> dict[str, np.ndarray]:
    """Unit-scale weights of both kinds, biases and inputs for ``p.n_nets`` networks.

    Every config and ``q*`` at this depth rescales the same draws (common random numbers), so
    the orthogonal matrices -- a QR each, the run's dominant cost on a CPU -- are drawn once
    per depth. Orthogonal: Haar (``cr.init.orthogonal``); Gaussian: ``N(0, 1/N)``.
    """
    n, w = p.n_nets, p.width

    def draw(k):
        k_w, k_b, k_x = jax.random.split(k, 3)
        kws = jax.random.split(k_w, depth)
        orth = jax.vmap(lambda k: cr.init.orthogonal(1.0)(k, (w, w), jnp.float64))(kws)
        gauss = jax.vmap(lambda k: cr.init.normal(1.0 / math.sqrt(w))(k, (w, w), jnp.float64))(kws)
        return {
            "orthogonal": orth,
            "gaussian": gauss,
            "bias": jax.random.normal(k_b, (depth, w), jnp.float64),
            "x": jax.random.normal(k_x, (w,), jnp.float64),
        }

    out = jax.jit(jax.vmap(draw))(jax.random.split(key, n))
    return {k: np.asarray(v) for k, v in out.items()}


def jacobian_fn():
    """``(x, ws, bs, activation) -> dx_L/dx_0`` (``width`` reverse passes), jitted.

    Built per run, never cached at module level; the scales are arguments, so every ``q*``
    and config of one depth and activation reuse one compiled program.
    """
    return jax.jit(cr.jacobian(_forward, mode="rev"), static_argnums=3)


def spectrum(draws: dict, config: str, p: Params, q_star: float, jac=None) -> np.ndarray:
    """Singular values of ``dx_L/dx_0`` for the networks in ``draws`` (concatenated).

    The SVD runs in LAPACK (numpy): on a loaded CPU XLA's is ~25x slower at this size.
    """
    c = config_constants(config, q_star)
    jac = jac or jacobian_fn()
    sw, sb, sq = (math.sqrt(c[k]) for k in ("sigma_w2", "sigma_b2", "q_in"))
    out = []
    for i in range(p.n_nets):
        j = jac(
            sq * draws["x"][i], sw * draws[c["weights"]][i], sb * draws["bias"][i], c["activation"]
        )
        out.append(np.linalg.svd(np.asarray(j, np.float64), compute_uv=False))
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


def grid(p: Params) -> list[tuple[str, float | None, int]]:
    """(config, q*, depth) cells: tanh at every q*, ReLU once (it is scale-free: q* None)."""
    out = []
    for d in p.depths:  # depth outermost: one set of draws per depth
        for c in p.configs:
            out += [(c, q, d) for q in (p.q_stars if c.startswith("tanh") else [None])]
    return out


def run(params: Params, ctx) -> dict:
    p = params
    rows, spectra = [], []
    cells = grid(p)
    jac = jacobian_fn()
    draws: dict[int, dict] = {}
    for config, q, depth in ctx.progress(cells, total=len(cells), desc="config x q* x depth"):
        # Common random numbers: the same draws at each depth, for every config and q*.
        if depth not in draws:
            draws = {depth: unit_draws(ctx.fold(f"depth/{depth}"), depth, p)}
        s = spectrum(draws[depth], config, p, 1.0 if q is None else q, jac)
        c = config_constants(config, 1.0 if q is None else q)
        rows.append(
            {
                "config": config,
                "q_star": q,
                "depth": depth,
                "sigma_w2": c["sigma_w2"],
                "sigma_b2": c["sigma_b2"],
                **spread_stats(s, p.near_low, p.near_high),
                "theory_spread_sq": theory_spread(config, 1.0 if q is None else q, depth),
            }
        )
        spectra.append({"config": config, "q_star": q, "depth": depth, "s": s.tolist()})
    order = {c: i for i, c in enumerate(p.configs)}
    rows.sort(key=lambda r: (order[r["config"]], r["q_star"] or 0.0, r["depth"]))
    checks = claim_checks(rows, p)
    summary: dict = {"deepest": max(p.depths)}
    for ch in checks:
        summary[f"{ch.name}.measured"] = ch.measured
        summary[f"{ch.name}.verdict"] = ch.verdict
    summary["verdict"] = overall(ch.passed for ch in checks)
    return {
        "tables": {"spectra": rows, "claims": [ch.row() for ch in checks]},
        "summary": summary,
        "spectra": spectra,
    }


def _fmt_frac(rows: list[dict]) -> str:
    return ", ".join(
        f"{'q*=' + format(r['q_star'], 'g') + ': ' if r['q_star'] is not None else ''}"
        f"{100 * r['frac_near_1']:.0f}%"
        for r in rows
    )


def claim_checks(rows: list[dict], p: Params) -> list[Check]:
    """The paper's claims, each on its own quantity at the deepest depth run.

    1. tanh + orthogonal at the smallest q* is isometric (>= ``isometric_frac`` of the singular
       values in the window). 2. The isometry is lost as q* grows: at the largest q* under half
       are in the window, and the spread does not fall as q* grows. 3. The spread
       std(s^2)/mean(s^2) of tanh + orthogonal matches the free-probability value within
       ``theory_factor`` either way, at every (q*, L) where the theory predicts at most
       ``theory_max_spread``. 4. Gaussian weights are not isometric at any q* (under half in
       the window). 5. ReLU is not isometric with either weights.
    """
    deepest = max(r["depth"] for r in rows)
    at = [r for r in rows if r["depth"] == deepest]
    frac = p.isometric_frac
    win = f"[{p.near_low:g}, {p.near_high:g}]"
    out: list[Check] = []
    orth = sorted((r for r in at if r["config"] == "tanh_orthogonal"), key=lambda r: r["q_star"])
    if orth:
        lo = orth[0]
        out.append(
            Check(
                "isometry_tanh_orthogonal_small_q",
                "tanh + orthogonal at small q* keeps the singular values near 1 at depth "
                f"{deepest}",
                f"spread -> 0 as q* -> 0 (theory std(s^2)/mean(s^2) = "
                f"{lo['theory_spread_sq']:.2g} at q* = {lo['q_star']:g})",
                f"{100 * lo['frac_near_1']:.0f}% in {win}, spread {lo['spread_sq']:.2g}",
                lo["frac_near_1"] >= frac,
                f"fraction in {win} >= {frac:g} at the smallest q*",
            )
        )
    if len(orth) >= 2:
        hi = orth[-1]
        spreads = [r["spread_sq"] for r in orth]
        rising = all(b >= 0.9 * a for a, b in zip(spreads[:-1], spreads[1:], strict=True))
        out.append(
            Check(
                "isometry_lost_as_q_grows",
                "the isometry of tanh + orthogonal is lost as q* grows (tanh leaves its linear "
                "regime)",
                "spread ~ sqrt(8 L) q*: "
                + ", ".join(format(r["theory_spread_sq"], ".2g") for r in orth),
                f"fraction in {win}: {_fmt_frac(orth)}; spread "
                f"{', '.join(f'{v:.2g}' for v in spreads)}",
                hi["frac_near_1"] < 0.5 and rising,
                f"under half in {win} at the largest q*, and the spread never falls by more "
                "than 10% from one q* to the next",
            )
        )
    cells = [
        r
        for r in rows
        if r["config"] == "tanh_orthogonal" and r["theory_spread_sq"] <= p.theory_max_spread
    ]
    if cells:
        ratios = [r["spread_sq"] / r["theory_spread_sq"] for r in cells]
        out.append(
            Check(
                "spread_matches_free_probability",
                "the spread of tanh + orthogonal follows sqrt(L (mu_2/mu_1^2 - 1))",
                f"ratio measured / theory = 1 (N -> infinity), {len(cells)} (q*, L) cells with "
                f"theory <= {p.theory_max_spread:g}",
                f"ratio {min(ratios):.2f}..{max(ratios):.2f}",
                all(1 / p.theory_factor <= x <= p.theory_factor for x in ratios),
                f"every ratio within a factor {p.theory_factor:g} of 1",
            )
        )
    gauss = sorted((r for r in at if r["config"] == "tanh_gaussian"), key=lambda r: r["q_star"])
    if gauss:
        out.append(
            Check(
                "gaussian_never_isometric",
                "tanh + Gaussian weights are not isometric at any q*",
                f"spread >= sqrt(L) = {math.sqrt(deepest):.2g}",
                f"fraction in {win}: {_fmt_frac(gauss)}",
                all(r["frac_near_1"] < 0.5 for r in gauss),
                f"under half in {win} at every q*",
            )
        )
    relu = [r for r in at if r["config"].startswith("relu")]
    if relu:
        out.append(
            Check(
                "relu_never_isometric",
                "ReLU networks are not isometric with orthogonal or Gaussian weights",
                f"spread sqrt(L) = {math.sqrt(deepest):.2g} (orthogonal), sqrt(2L) = "
                f"{math.sqrt(2 * deepest):.2g} (Gaussian)",
                ", ".join(
                    f"{r['config'].split('_')[1]}: {100 * r['frac_near_1']:.0f}% in {win}"
                    for r in relu
                ),
                all(r["frac_near_1"] < 0.5 for r in relu),
                f"under half in {win} for each",
            )
        )
    return out


# ----------------------------------------------------------------------------- plots, report


def _hist_rows(p: Params) -> list[tuple[str, float | None]]:
    out: list[tuple[str, float | None]] = []
    for c in p.configs:
        if c == "tanh_orthogonal":
            out += [(c, q) for q in p.q_stars]
        elif c == "tanh_gaussian":
            out += [(c, q) for q in dict.fromkeys([min(p.q_stars), max(p.q_stars)])]
        else:
            out.append((c, None))
    return out


def plot(results: dict, params: Params) -> dict:
    from matplotlib.figure import Figure

    p = params
    figs = {}
    hrows = _hist_rows(p)
    fig = Figure(figsize=(3.2 * len(p.depths), 2.1 * len(hrows)), layout="constrained")
    axes = np.atleast_2d(fig.subplots(len(hrows), len(p.depths), squeeze=False))
    by = {
        (e["config"], e["q_star"], e["depth"]): np.asarray(e["s"], float)
        for e in results["spectra"]
    }
    top = max((s.max() for s in by.values()), default=2.0)
    bins = np.logspace(-3, math.log10(max(top, 2.0)) + 0.05, 50)
    for i, (c, q) in enumerate(hrows):
        for j, d in enumerate(p.depths):
            ax = axes[i, j]
            s = by.get((c, q, d))
            if s is None:
                continue
            ax.hist(np.clip(s, 1e-3, None), bins=bins, color=f"C{ALL_CONFIGS.index(c)}")
            ax.set_xscale("log")
            ax.axvspan(p.near_low, p.near_high, color="0.85", zorder=0)
            ax.axvline(1.0, color="k", lw=0.8)
            qs = "" if q is None else f", q*={q:.3g}"
            ax.set_title(f"{LABELS[c]}{qs}, L={d}", fontsize=7)
            if i == len(hrows) - 1:
                ax.set_xlabel("singular value of J (clipped at 1e-3)")
    fig.suptitle(f"width {p.width}: shaded = [{p.near_low:g}, {p.near_high:g}]")
    figs["histograms"] = fig

    rows = results["tables"]["spectra"]
    deepest = max(p.depths)
    fig = Figure(figsize=(11, 3.6), layout="constrained")
    axes = fig.subplots(1, 3)
    for k, c in enumerate(ALL_CONFIGS):
        rs = sorted(
            (r for r in rows if r["config"] == c and r["depth"] == deepest),
            key=lambda r: r["q_star"] or 0,
        )
        if not rs:
            continue
        if rs[0]["q_star"] is None:  # ReLU: q*-free, a horizontal line
            axes[0].axhline(rs[0]["frac_near_1"], color=f"C{k}", ls="--", label=LABELS[c])
        else:
            q = [r["q_star"] for r in rs]
            axes[0].semilogx(
                q, [r["frac_near_1"] for r in rs], "o-", color=f"C{k}", label=LABELS[c]
            )
            axes[1].loglog(
                q, [r["spread_sq"] for r in rs], "o-", color=f"C{k}", label=f"{LABELS[c]} measured"
            )
            axes[1].loglog(
                q,
                [r["theory_spread_sq"] for r in rs],
                ":",
                color=f"C{k}",
                label="theory (N -> inf)",
            )
    axes[0].axhline(p.isometric_frac, color="k", lw=0.6, ls=":")
    axes[0].set_xlabel("q* (tanh fixed point)")
    axes[0].set_ylabel(f"fraction of s in [{p.near_low:g}, {p.near_high:g}] at L={deepest}")
    axes[1].set_xlabel("q*")
    axes[1].set_ylabel(f"std(s^2)/mean(s^2) at L={deepest}")
    for q in p.q_stars:
        rs = sorted(
            (r for r in rows if r["config"] == "tanh_orthogonal" and r["q_star"] == q),
            key=lambda r: r["depth"],
        )
        if rs:
            ln = axes[2].loglog(
                [r["depth"] for r in rs], [r["spread_sq"] for r in rs], "o-", label=f"q*={q:.3g}"
            )
            axes[2].loglog(
                [r["depth"] for r in rs],
                [r["theory_spread_sq"] for r in rs],
                ":",
                color=ln[0].get_color(),
            )
    axes[2].set_xlabel("depth L")
    axes[2].set_ylabel("std(s^2)/mean(s^2), tanh + orthogonal")
    axes[2].set_title("dotted: free-probability theory", fontsize=8)
    for ax in axes:
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=6)
    figs["isometry_vs_q"] = fig
    return figs


def report(results: dict, params: Params) -> str:
    p = params
    rows = results["tables"]["spectra"]
    deepest = max(p.depths)
    crit = ", ".join(
        f"q* = {q:g}: sigma_w^2 = {tanh_critical_point(q)[0]:.4f}, "
        f"sigma_b^2 = {tanh_critical_point(q)[1]:.3g}"
        for q in p.q_stars
    )
    published = (
        "Pennington, Schoenholz & Ganguli (2017), *Resurrecting the sigmoid in deep learning "
        "through dynamical isometry*: at criticality every configuration has mean squared "
        "singular value 1, but only sigmoidal (tanh) networks with orthogonal weights and a small "
        "fixed point q* keep the whole singular-value spectrum concentrated around 1 as depth "
        "grows (dynamical isometry); the relative variance of J^T J's spectrum is "
        "L (mu_2/mu_1^2 - 1 + v_W), so it grows with q* (mu_2/mu_1^2 - 1 ~ 8 q*^2 for tanh), "
        "Gaussian weights (v_W = 1) spread it at every q*, and ReLU (mu_2/mu_1^2 - 1 = 1) cannot "
        "reach isometry with either."
    )
    setup = (
        f"Input-output Jacobians of plain networks of width {p.width} at depths {p.depths} "
        f"({p.n_nets} networks each, float64, dense J by `cr.jacobian`, then an SVD). tanh "
        f"networks on the critical line at each q* ({crit}; by quadrature); ReLU networks with "
        "sigma_w^2 = 2, no bias (scale-free, so run once). Orthogonal weights are "
        "`cr.init.orthogonal(sigma_w)`, Gaussian ones `cr.init.normal(sigma_w / sqrt(N))`. "
        f"Claims are checked at depth {deepest}."
    )
    lines = [claims_section(published, setup, results["tables"]["claims"]), ""]
    lines += [f"## Depth {deepest}, every configuration", ""]
    for r in rows:
        if r["depth"] == deepest:
            qs = "" if r["q_star"] is None else f", q* = {r['q_star']:g}"
            lines.append(
                f"- {LABELS[r['config']]}{qs}: {100 * r['frac_near_1']:.0f}% of singular values "
                f"in [{p.near_low:g}, {p.near_high:g}], median {r['s_median']:.3g}, "
                f"std(s^2)/mean(s^2) {r['spread_sq']:.3g} (theory {r['theory_spread_sq']:.3g}), "
                f"max {r['s_max']:.3g}, mean s^2 {r['mean_sq']:.3g}."
            )
    lines += [
        "",
        "Finite width: the theory is for N -> infinity at fixed L. Where it predicts a large "
        "spread (L comparable to N, or Gaussian/ReLU), a sample of N singular values misses the "
        "heavy tail and mean s^2 falls below 1; the comparison with theory is therefore made "
        f"only where it predicts a spread <= {p.theory_max_spread:g}.",
    ]
    return "\n".join(lines)
