"""residual_depth: the first layer's gradient against depth, with and without skip connections.

The same stack of ``L`` square layers, ``z_l = h_{l-1} W_l``, is run three ways:

* ``plain``: ``h_l = act(z_l)``;
* ``residual``: ``h_l = h_{l-1} + act(z_l)`` (identity skip, He et al. 2016b);
* ``residual_scaled``: ``h_l = h_{l-1} + act(z_l) / sqrt(L)`` (branch scaled so the sum of the
  branches' variances stays bounded as L grows; Hanin & Rolnick 2018, cf. Fixup/SkipInit).

For a linear read-out loss ``l = mean_b <h_L, r>`` (fixed random ``r``, so the backward signal
does not inherit the forward scale) it measures ``g_l = ||dl/dW_l||_F`` for every layer with one
reverse pass (``cr.value_and_grad``; the layers run in a ``lax.scan``, so each depth compiles
once), averaged in log scale over ``n_nets`` networks. Reported: ``g_1`` (the first layer) and
``g_1 / g_L`` (how much the gradient shrinks or grows on its way from the last layer to the
first; 1 = no vanishing).

He et al. 2016b ("Identity mappings in deep residual networks", eq. 5): with identity skips
``dl/dh_l = dl/dh_L (I + d/dh_l sum_i F_i)``, so the gradient reaching a shallow layer contains
the deep layer's gradient unchanged and does not vanish however deep the network or small the
weights; a plain network multiplies one Jacobian per layer and its first-layer gradient decays
geometrically (ReLU with Xavier weights: by sqrt(1/2) per layer).
"""

from __future__ import annotations

import math
from typing import Literal, get_args

import jax
import jax.numpy as jnp
import numpy as np
from pydantic import BaseModel, ConfigDict, Field

import chainrule as cr

DESCRIPTION = (
    "First-layer gradient norm against depth for the same deep network with and without "
    "residual connections (He et al. 2016b)"
)
X64 = True  # float64 keeps the plain network's 2^-L/2 gradients far from underflow

Variant = Literal["plain", "residual", "residual_scaled"]
ALL_VARIANTS: list[str] = list(get_args(Variant))
LABELS = {
    "plain": "plain",
    "residual": "residual h + F(h)",
    "residual_scaled": "residual h + F(h)/sqrt(L)",
}
INITS = {
    "xavier": lambda: cr.init.xavier_normal(),
    "he": lambda: cr.init.he_normal(),
    "lecun": lambda: cr.init.lecun_normal(),
    "orthogonal": lambda: cr.init.orthogonal(),
}


class Params(BaseModel):
    model_config = ConfigDict(extra="forbid")

    width: int = Field(64, ge=2, le=4096, description="units per layer")
    depths: list[int] = Field(
        default_factory=lambda: [2, 4, 8, 16, 32, 64, 128], min_length=1, description="depths L"
    )
    activations: list[Literal["relu", "tanh"]] = Field(
        default_factory=lambda: ["relu", "tanh"], min_length=1
    )
    init: Literal["xavier", "he", "lecun", "orthogonal"] = Field(
        "xavier", description="weight initializer (cr.init), the same for every variant"
    )
    variants: list[Variant] = Field(default_factory=lambda: list(ALL_VARIANTS), min_length=1)
    batch: int = Field(64, ge=1, description="standard-normal inputs per network")
    n_nets: int = Field(4, ge=1, description="networks per point (log-mean of g)")


def _branch_scale(variant: str, depth: int) -> float:
    return 1.0 / math.sqrt(depth) if variant == "residual_scaled" else 1.0


def _loss(
    ws: jax.Array, x: jax.Array, r: jax.Array, activation: str, residual: bool, alpha: float
) -> jax.Array:
    act = cr.nets.get_activation(activation)

    def layer(h, w):
        f = act(h @ w)
        return (h + alpha * f if residual else f), None

    h = jax.lax.scan(layer, x, ws)[0]
    return jnp.mean(h @ r)


def layer_grad_norms(key, activation: str, variant: str, depth: int, p: Params) -> np.ndarray:
    """``||dl/dW_l||_F`` for ``l = 1..L`` (log-mean over ``p.n_nets`` networks)."""
    init = INITS[p.init]()
    residual = variant != "plain"
    alpha = _branch_scale(variant, depth)
    dtype = jnp.float64 if jax.config.jax_enable_x64 else jnp.float32
    logs = []
    for k in jax.random.split(key, p.n_nets):
        kw, kx, kr = jax.random.split(k, 3)
        ws = jax.vmap(lambda kk: init(kk, (p.width, p.width), dtype))(jax.random.split(kw, depth))
        x = jax.random.normal(kx, (p.batch, p.width), dtype)
        r = jax.random.normal(kr, (p.width,), dtype)
        g = cr.grad(_loss)(ws, x, r, activation, residual, alpha)
        with np.errstate(divide="ignore"):
            logs.append(np.log(np.asarray(jnp.sqrt(jnp.sum(g * g, axis=(1, 2))), np.float64)))
    return np.exp(np.mean(logs, axis=0))


def run(params: Params, ctx) -> dict:
    p = params
    rows, curves = [], []
    grid = [(a, v, d) for a in p.activations for v in p.variants for d in p.depths]
    for act, variant, depth in ctx.progress(grid, total=len(grid), desc="act x variant x depth"):
        # Common random numbers: the same weights for every variant at a depth.
        g = layer_grad_norms(ctx.fold(f"{act}/{depth}"), act, variant, depth, p)
        rows.append(
            {
                "activation": act,
                "variant": variant,
                "depth": depth,
                "branch_scale": _branch_scale(variant, depth),
                "g_first": float(g[0]),
                "g_last": float(g[-1]),
                "ratio_first_last": float(g[0] / g[-1]) if g[-1] > 0 else float("nan"),
            }
        )
        if depth == max(p.depths):
            curves.append({"activation": act, "variant": variant, "g": g.tolist()})
    deepest = max(p.depths)
    summary: dict = {"deepest": deepest}
    for r in rows:
        if r["depth"] == deepest:
            summary[f"{r['activation']}.{r['variant']}.g_first"] = r["g_first"]
    for act in p.activations:
        for v in p.variants:
            g = {
                r["depth"]: r["g_first"]
                for r in rows
                if r["activation"] == act and r["variant"] == v
            }
            summary[f"{act}.{v}.g_first_deepest_over_shallowest"] = (
                g[deepest] / g[min(p.depths)] if g[min(p.depths)] > 0 else float("nan")
            )
    summary["agrees"] = _agrees(rows, p.depths)
    return {"tables": {"grad_norms": rows}, "summary": summary, "curves": curves}


def _agrees(rows: list[dict], depths: list[int]) -> bool | None:
    """For every activation whose *plain* first-layer gradient vanishes (falls more than 100x
    from the shallowest to the deepest depth), every residual variant's does not (stays above
    0.1x its shallowest value). None when no plain network vanished or no pair was run."""
    lo, hi = min(depths), max(depths)
    g = {(r["activation"], r["variant"], r["depth"]): r["g_first"] for r in rows}
    verdicts = []
    for act in sorted({r["activation"] for r in rows}):
        if (act, "plain", lo) not in g or g[(act, "plain", hi)] * 100 >= g[(act, "plain", lo)]:
            continue
        for v in ("residual", "residual_scaled"):
            if (act, v, lo) in g:
                verdicts.append(g[(act, v, hi)] > 0.1 * g[(act, v, lo)])
    return all(verdicts) if verdicts else None


# ----------------------------------------------------------------------------- plots, report


def plot(results: dict, params: Params) -> dict:
    from matplotlib.figure import Figure

    p = params
    rows = results["tables"]["grad_norms"]
    figs = {}
    for key, ylabel, name in (
        ("g_first", "first-layer gradient norm g_1", "first_layer_grad_vs_depth"),
        ("ratio_first_last", "g_1 / g_L", "ratio_vs_depth"),
    ):
        fig = Figure(figsize=(4.2 * len(p.activations), 3.6), layout="constrained")
        axes = np.atleast_1d(fig.subplots(1, len(p.activations)))
        for ax, act in zip(axes, p.activations, strict=True):
            for k, v in enumerate(p.variants):
                rs = sorted(
                    (r for r in rows if r["activation"] == act and r["variant"] == v),
                    key=lambda r: r["depth"],
                )
                y = np.array([np.nan if r[key] is None else r[key] for r in rs], float)
                ax.loglog(
                    [r["depth"] for r in rs],
                    np.where(y > 0, y, np.nan),
                    "o-",
                    color=f"C{k}",
                    label=LABELS[v],
                )
            ax.set_title(f"{act}, {p.init} init, width {p.width}")
            ax.set_xlabel("depth L")
            ax.set_ylabel(ylabel)
            ax.grid(True, which="major", alpha=0.3)
        axes[0].legend(fontsize=8)
        figs[name] = fig

    fig = Figure(figsize=(4.2 * len(p.activations), 3.6), layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, len(p.activations)))
    for ax, act in zip(axes, p.activations, strict=True):
        for k, v in enumerate(p.variants):
            for c in results["curves"]:
                if c["activation"] == act and c["variant"] == v:
                    y = np.array([np.nan if t is None else t for t in c["g"]], float)
                    ax.semilogy(
                        np.arange(1, len(y) + 1),
                        np.where(y > 0, y, np.nan),
                        color=f"C{k}",
                        label=LABELS[v],
                    )
        ax.set_title(f"{act}, depth {max(p.depths)}")
        ax.set_xlabel("layer l")
        ax.set_ylabel("gradient norm g_l")
        ax.grid(True, which="major", alpha=0.3)
    axes[0].legend(fontsize=8)
    figs["grad_by_layer"] = fig
    return figs


def report(results: dict, params: Params) -> str:
    p = params
    rows = results["tables"]["grad_norms"]
    deepest = max(p.depths)
    lines = [
        "## What was run",
        "",
        f"Square networks of width {p.width} at depths {p.depths}, {p.init} weights, no biases, "
        f"activations {p.activations}, each as {', '.join(LABELS[v] for v in p.variants)}; "
        f"gradient norms of every layer's weights for a random linear read-out, log-mean over "
        f"{p.n_nets} networks of {p.batch} inputs (float64).",
        "",
        "## The published claim",
        "",
        "He, Zhang, Ren & Sun (2016b), *Identity mappings in deep residual networks* (eq. 5): "
        "with identity skip connections the gradient at any layer contains the last layer's "
        "gradient unchanged, so it does not vanish with depth; in a plain network the "
        "first-layer gradient is a product of one Jacobian per layer and shrinks (or grows) "
        "geometrically. Unscaled branches add variance at every block, so very deep "
        "residual networks also need the branches scaled down (Hanin & Rolnick 2018; Zhang et "
        "al. 2019, Fixup).",
        "",
        f"## What this run measured (depth {deepest})",
        "",
    ]
    for r in rows:
        if r["depth"] == deepest:
            lines.append(
                f"- {r['activation']}, {LABELS[r['variant']]}: g_1 = {r['g_first']:.3g}, "
                f"g_1/g_L = {r['ratio_first_last']:.3g}."
            )
    agree = results["summary"].get("agrees")
    verdict = {
        True: "yes",
        False: "no",
        None: "not tested (no plain network's gradient vanished, or no residual variant ran)",
    }[agree]
    s = results["summary"]
    lines += [""]
    for act in p.activations:
        drops = ", ".join(
            f"{LABELS[v]} x{s[f'{act}.{v}.g_first_deepest_over_shallowest']:.3g}"
            for v in p.variants
        )
        lines.append(f"- {act}: g_1 at depth {deepest} relative to depth {min(p.depths)}: {drops}.")
    lines += [
        "",
        f"Agreement with the claim: **{verdict}** — the criterion: wherever the plain "
        "network's first-layer gradient vanishes (falls > 100x between the shallowest and the "
        "deepest depth), each residual variant's stays above 0.1x its shallow value. An "
        "unscaled residual branch makes ReLU gradients *explode* instead (variance x1.5 per "
        "block with Xavier weights), which is why the scaled variant is shown; tanh with "
        "Xavier (sigma_w = 1) is critical, so even its plain network decays only slowly.",
    ]
    return "\n".join(lines)
