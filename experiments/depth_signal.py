"""depth_signal: does the signal survive 50 layers? Activation x initializer grid.

For each pair (activation, initializer) an ensemble of ``n_nets`` plain networks
``z_l = h_{l-1} W_l``, ``h_l = act(z_l)`` (no biases, square ``width x width`` weights, depth
``depth``) is run on a Gaussian batch, and two signals are measured per layer:

* forward: ``q_l = E[z_l^2]``, the variance of the pre-activations (mean over networks,
  examples and units; ``E[z] = 0`` by the symmetry of the weights). Initialization theory
  (LeCun 1998, Glorot & Bengio 2010, He et al. 2015) chooses ``Var[W]`` so that ``q_l`` stays
  constant in ``l``.
* backward: ``g_l``, the RMS over examples of the per-example gradient norm of ``W_l``,
  ``||dl_b/dW_l|| = ||h_{l-1,b}|| ||dl_b/dz_{l,b}||`` for a linear read-out loss
  ``l_b = <h_{L,b}, r>`` with a fixed random ``r`` (so the backward signal does not inherit the
  forward scale). Per-example, because a batch-mean gradient also measures how much the
  examples' gradients agree, which is a different question.

The pair *holds* when both ``q_L / q_1`` and ``g_1 / g_L`` stay within ``hold_factor`` (2) of 1,
*vanishes*/*explodes* otherwise (by the signal that fails most, in log scale). The library's
own :func:`chainrule.diagnostics.verdict` (factor 100, scanning layer by layer) is reported too.

Computation: ``cr.value_and_grad`` of the summed loss with respect to zero offsets ``e_l``
added to each pre-activation gives every ``dl_b/dz_{l,b}`` in one reverse pass; the layers run
in a ``lax.scan`` so the 50-layer network compiles once per activation.
"""

from __future__ import annotations

import functools
import math
from typing import Literal, get_args

import jax
import jax.numpy as jnp
import numpy as np
from pydantic import BaseModel, ConfigDict, Field

import chainrule as cr
from chainrule import diagnostics

DESCRIPTION = (
    "Activation variance and per-layer gradient norm through a deep plain network for each "
    "activation x initializer pair: which vanish, explode or hold"
)
X64 = True  # float64 keeps 1e-100 and 1e+100 finite, so exploding pairs stay readable

Activation = Literal["sigmoid", "tanh", "relu"]
Initializer = Literal["normal", "small_uniform", "lecun", "xavier", "he", "orthogonal"]
ALL_ACTIVATIONS: list[str] = list(get_args(Activation))
ALL_INITIALIZERS: list[str] = list(get_args(Initializer))

INIT_LABELS = {
    "normal": "N(0, 1)",
    "small_uniform": "U(-a, a) small",
    "lecun": "LeCun",
    "xavier": "Xavier",
    "he": "He",
    "orthogonal": "orthogonal",
}


class Params(BaseModel):
    model_config = ConfigDict(extra="forbid")

    depth: int = Field(50, ge=2, le=1000, description="number of layers L")
    width: int = Field(256, ge=2, le=8192, description="units per layer (square weights)")
    batch: int = Field(256, ge=1, description="inputs per network")
    n_nets: int = Field(8, ge=1, description="independent networks averaged per pair")
    activations: list[Activation] = Field(
        default_factory=lambda: list(ALL_ACTIVATIONS), min_length=1
    )
    initializers: list[Initializer] = Field(
        default_factory=lambda: list(ALL_INITIALIZERS), min_length=1
    )
    uniform_scale: float = Field(
        0.01, gt=0, description="half-width a of the naive small uniform U(-a, a)"
    )
    orthogonal_gain: Literal["activation", "one"] = Field(
        "activation",
        description="orthogonal gain: 'activation' = cr.init.gain(act) (1, 5/3, sqrt 2), or 1",
    )
    hold_factor: float = Field(2.0, gt=1, description="'holds' = both ratios within this factor")
    dtype: Literal["float32", "float64"] = "float64"


def make_init(name: str, activation: str, p: Params):
    """The weight initializer ``init(key, shape, dtype)`` for one pair, from ``cr.init``."""
    if name == "normal":
        return cr.init.normal(1.0)
    if name == "small_uniform":
        return cr.init.uniform(p.uniform_scale)
    if name == "lecun":
        return cr.init.lecun_normal()
    if name == "xavier":
        return cr.init.xavier_normal()
    if name == "he":
        return cr.init.he_normal()
    if name == "orthogonal":
        return cr.init.orthogonal(orthogonal_gain(activation, p))
    raise ValueError(f"unknown initializer {name!r}")  # unreachable: Params validates


_ACT = {"sigmoid": jax.nn.sigmoid, "tanh": jnp.tanh, "relu": jax.nn.relu}


def _loss(offsets, weights, x, r, activation):
    """Sum over networks and examples of ``<h_L, r>``, with ``offsets`` added to every z_l.

    Returns the loss and, per layer, ``E[z_l^2]`` and ``||h_{l-1,b}||^2`` per example.
    """
    act = _ACT[activation]

    def layer(h, inputs):
        w, e = inputs
        z = jnp.einsum("kbi,kij->kbj", h, w) + e
        return act(z), (jnp.mean(z * z), jnp.sum(h * h, axis=-1))

    h_last, (q, h_in_sq) = jax.lax.scan(layer, x, (weights, offsets))
    return jnp.sum(h_last @ r), (q, h_in_sq)


@functools.lru_cache(maxsize=64)
def _sampler(name: str, activation: str, uniform_scale: float, orthogonal_gain: str):
    """A jitted ``keys (depth, n_nets) -> weights (depth, n_nets, width, width)`` per init."""
    init = make_init(
        name, activation, Params(uniform_scale=uniform_scale, orthogonal_gain=orthogonal_gain)
    )

    @functools.partial(jax.jit, static_argnums=(1, 2))
    def sample(keys, width, dtype):
        return jax.vmap(jax.vmap(lambda k: init(k, (width, width), dtype)))(keys)

    return sample


def sample_weights(init_name: str, p: Params, key: jax.Array) -> jax.Array:
    """``(depth, n_nets, width, width)`` weights from ``cr.init`` (one draw per layer and net).

    The orthogonal initializer is drawn with gain 1; :func:`for_activation` applies the gain.
    ``cr.init.orthogonal(g)`` is exactly ``g`` times the gain-1 matrix for the same key, so one
    QR per matrix (the slow part on a CPU) serves every activation.
    """
    sample = _sampler(init_name, "relu", p.uniform_scale, "one")
    keys = jax.random.split(key, p.depth * p.n_nets).reshape(p.depth, p.n_nets)
    return sample(keys, p.width, jnp.dtype(p.dtype))


def for_activation(weights: jax.Array, init_name: str, activation: str, p: Params) -> jax.Array:
    """The weights of ``init_name`` for ``activation`` (only orthogonal's gain depends on it)."""
    if init_name != "orthogonal":
        return weights
    return weights * jnp.asarray(orthogonal_gain(activation, p), weights.dtype)


def orthogonal_gain(activation: str, p: Params) -> float:
    """The gain of the orthogonal initializer for ``activation`` under ``p.orthogonal_gain``."""
    return cr.init.gain(activation) if p.orthogonal_gain == "activation" else 1.0


def measure(activation: str, weights: jax.Array, p: Params, key: jax.Array) -> dict:
    """Per-layer ``q_l`` and ``g_l`` for one pair (ensemble of ``p.n_nets`` networks).

    Cost: one forward and one reverse pass through all networks (``cr.value_and_grad``).
    """
    dtype = jnp.dtype(p.dtype)
    k_x, k_r = jax.random.split(key)
    x = jax.random.normal(k_x, (p.n_nets, p.batch, p.width), dtype)
    r = jax.random.normal(k_r, (p.width,), dtype)
    offsets = jnp.zeros((p.depth, p.n_nets, p.batch, p.width), dtype)
    (_, (q, h_in_sq)), delta = cr.value_and_grad(_loss, has_aux=True)(
        offsets, weights, x, r, activation
    )
    # ||dl_b/dW_l||^2 = ||h_{l-1,b}||^2 ||dl_b/dz_{l,b}||^2 (an outer product), RMS over b, k.
    per_example_sq = h_in_sq * jnp.sum(delta * delta, axis=-1)
    g = jnp.sqrt(jnp.mean(per_example_sq, axis=(1, 2)))
    return {"q": np.asarray(q, np.float64), "g": np.asarray(g, np.float64)}


def _log_ratio(a: float, b: float) -> float:
    """``log10(a / b)``; +-inf for overflow/underflow, nan when undefined."""
    if not (math.isfinite(a) and math.isfinite(b)):
        return math.inf if not math.isfinite(a) else -math.inf
    if a == 0 and b == 0:
        return math.nan
    if a == 0:
        return -math.inf
    if b == 0:
        return math.inf
    return math.log10(a / b)


def classify(fwd_log: float, bwd_log: float, factor: float) -> str:
    """'holds' if both log10 ratios are within log10(factor); else the worse one's direction."""
    lim = math.log10(factor)
    vals = [v for v in (fwd_log, bwd_log) if not math.isnan(v)]
    if len(vals) < 2:
        return "undefined"
    if all(abs(v) <= lim for v in vals):
        return "holds"
    worst = max(vals, key=abs)
    return "explodes" if worst > 0 else "vanishes"


def run(params: Params, ctx) -> dict:
    p = params
    rows, curves = [], []
    # Common random numbers: one weight draw per initializer, shared by every activation
    # (the orthogonal draw is rescaled by each activation's gain, see sample_weights).
    pairs = [(a, i) for i in p.initializers for a in p.activations]
    base: dict = {}
    for activation, init_name in ctx.progress(pairs, total=len(pairs), desc="pairs"):
        if init_name not in base:
            base.clear()  # keep one draw in memory
            base[init_name] = sample_weights(init_name, p, ctx.fold(f"w/{init_name}"))
        w = for_activation(base[init_name], init_name, activation, p)
        m = measure(activation, w, p, ctx.fold("inputs"))
        q, g = m["q"], m["g"]
        fwd = _log_ratio(q[-1], q[0])
        bwd = _log_ratio(g[0], g[-1])
        stats = diagnostics.LayerStats(
            act_mean=np.zeros_like(q),
            act_var=q,
            grad_norm=g,
            grad_ratio=g[:-1] / np.where(g[1:] == 0, np.nan, g[1:]),
            loss=float("nan"),
            global_norm=float("nan"),
            clipped_norm=float("nan"),
            max_norm=1.0,
        )
        v = diagnostics.verdict(stats)
        rows.append(
            {
                "activation": activation,
                "initializer": init_name,
                "q_first": float(q[0]),
                "q_last": float(q[-1]),
                "log10_q_ratio": fwd,
                "g_first": float(g[0]),
                "g_last": float(g[-1]),
                "log10_g_ratio": bwd,
                "outcome": classify(fwd, bwd, p.hold_factor),
                "diagnostics_verdict": f"{v.status}" + (f" ({v.signal})" if v.signal else ""),
            }
        )
        ctx.log(
            f"{activation}+{init_name}: log10 q_L/q_1 = {fwd:+.2f}, log10 g_1/g_L = {bwd:+.2f}"
            f" -> {rows[-1]['outcome']}"
        )
        curves.append(
            {"activation": activation, "initializer": init_name, "q": q.tolist(), "g": g.tolist()}
        )

    def order(row):
        return p.activations.index(row["activation"]), p.initializers.index(row["initializer"])

    rows.sort(key=order)
    curves.sort(key=order)
    summary: dict = {}
    for row in rows:
        summary[f"{row['activation']}+{row['initializer']}"] = row["outcome"]
    summary["pairs_holding"] = sum(r["outcome"] == "holds" for r in rows)
    summary["pairs"] = len(rows)
    return {"tables": {"pairs": rows}, "summary": summary, "curves": curves}


# ----------------------------------------------------------------------------- plots, report


def _grid(rows: list[dict], key: str, p: Params) -> np.ndarray:
    g = np.full((len(p.activations), len(p.initializers)), np.nan)
    for r in rows:
        v = r[key]
        if r["activation"] in p.activations and r["initializer"] in p.initializers:
            i, j = p.activations.index(r["activation"]), p.initializers.index(r["initializer"])
            g[i, j] = np.nan if v is None else v
    return g


def plot(results: dict, params: Params) -> dict:
    from matplotlib.colors import TwoSlopeNorm
    from matplotlib.figure import Figure

    p = params
    rows = results["tables"]["pairs"]
    figs = {}
    fig = Figure(
        figsize=(4.2 + 1.6 * len(p.initializers), 1.4 + 1.1 * len(p.activations)),
        layout="constrained",
    )
    axes = fig.subplots(1, 2)
    lim = math.log10(p.hold_factor)
    for ax, key, title in (
        (axes[0], "log10_q_ratio", "forward: log10 q_L / q_1"),
        (axes[1], "log10_g_ratio", "backward: log10 g_1 / g_L"),
    ):
        grid = _grid(rows, key, p)
        # Colour saturates at 5 decades; the numbers in the cells are the real ratios.
        shown = np.clip(np.nan_to_num(grid, nan=0.0, posinf=5, neginf=-5), -5, 5)
        im = ax.imshow(shown, cmap="RdBu_r", norm=TwoSlopeNorm(0.0, -5, 5), aspect="auto")
        ax.set_xticks(
            range(len(p.initializers)),
            [INIT_LABELS[i] for i in p.initializers],
            rotation=30,
            ha="right",
        )
        ax.set_yticks(range(len(p.activations)), p.activations)
        ax.set_title(title, fontsize=10)
        for i in range(grid.shape[0]):
            for j in range(grid.shape[1]):
                v = grid[i, j]
                txt = "nan" if np.isnan(v) else ("inf" if np.isinf(v) else f"{v:+.1f}")
                ok = np.isfinite(v) and abs(v) <= lim
                ax.text(
                    j,
                    i,
                    txt + ("\n✓" if ok else ""),
                    ha="center",
                    va="center",
                    fontsize=8,
                    color="white" if abs(shown[i, j]) > 3 else "black",
                )
        fig.colorbar(im, ax=ax, shrink=0.8, label="log10 ratio (colour clipped at ±5)")
    fig.suptitle(f"depth {p.depth}, width {p.width}: 0 = signal kept (✓ within x{p.hold_factor:g})")
    figs["heatmaps"] = fig

    for key, ylabel, name in (
        ("q", "pre-activation variance q_l", "variance_by_layer"),
        ("g", "per-example gradient norm g_l", "gradnorm_by_layer"),
    ):
        fig = Figure(figsize=(4.0 * len(p.activations), 3.6), layout="constrained")
        axes = np.atleast_1d(fig.subplots(1, len(p.activations), sharey=False))
        for ax, act in zip(axes, p.activations, strict=True):
            for c in results["curves"]:
                if c["activation"] != act:
                    continue
                y = np.array([np.nan if v is None else v for v in c[key]], float)
                y = np.where(y > 0, y, np.nan)
                ax.semilogy(np.arange(1, len(y) + 1), y, label=INIT_LABELS[c["initializer"]])
            ax.set_title(act)
            ax.set_xlabel("layer l")
            ax.set_ylabel(ylabel)
            ax.grid(True, which="major", alpha=0.3)
        axes[-1].legend(fontsize=8)
        figs[name] = fig
    return figs


def report(results: dict, params: Params) -> str:
    p = params
    rows = results["tables"]["pairs"]
    by = {(r["activation"], r["initializer"]): r for r in rows}
    lines = [
        "## What was run",
        "",
        f"For each activation in {p.activations} and initializer in {p.initializers}: "
        f"{p.n_nets} networks of depth {p.depth} and width {p.width} without biases, on "
        f"{p.batch} standard-normal inputs each ({p.dtype}). Forward signal: the "
        f"pre-activation variance q_l = E[z_l^2]; backward signal: the RMS per-example "
        f"gradient norm g_l of W_l for a random linear read-out. A pair *holds* when "
        f"q_L/q_1 and g_1/g_L are both within a factor {p.hold_factor:g}.",
        "",
        "## The published claim",
        "",
        "Var[W] = 2/fan_in (He et al. 2015) keeps the variance of ReLU pre-activations and of "
        "the backpropagated signal constant with depth. Var[W] = 1/fan_in (LeCun 1998) and "
        "2/(fan_in + fan_out) (Glorot & Bengio 2010; the same for square layers) suit tanh "
        "near its linear regime, but tanh's saturation still makes q_l decay slowly (a power "
        "law, not geometrically), and a ReLU loses half the variance per layer with them. "
        "Sigmoid (slope <= 1/4, mean 1/2) loses the backward signal with every scaled "
        "initializer. N(0, 1) weights saturate sigmoid and tanh (q_1 ~ width) and blow up ReLU; "
        "tiny uniform weights make the signal vanish geometrically.",
        "",
        "## What this run measured",
        "",
    ]
    holding = [f"{a}+{i}" for (a, i), r in by.items() if r["outcome"] == "holds"]
    lines.append(f"Pairs that hold: {', '.join(holding) or 'none'} ({len(holding)}/{len(rows)}).")
    he = by.get(("relu", "he"))
    if he is not None:
        lines.append(
            f"He + ReLU: q_L/q_1 = {10 ** he['log10_q_ratio']:.3g}, g_1/g_L = "
            f"{10 ** he['log10_g_ratio']:.3g} -> {he['outcome']}."
        )
    sn = by.get(("sigmoid", "normal"))
    if sn is not None:
        lines.append(
            f"sigmoid + N(0, 1): q_1 = {sn['q_first']:.3g} (saturated: the input variance is 1), "
            f"q_L/q_1 = {10 ** sn['log10_q_ratio']:.3g}, g_1/g_L = "
            f"{_pow10(sn['log10_g_ratio'])} -> {sn['outcome']}."
        )
    agree = he is not None and he["outcome"] == "holds" and (sn is None or sn["outcome"] != "holds")
    lines += [
        "",
        f"Agreement with the claim: **{'yes' if agree else 'see the table'}** (He + ReLU holds"
        + (", sigmoid + N(0, 1) does not" if sn is not None else "")
        + "). Finite width makes q_l of one network a random walk in log scale "
        "(std of order sqrt(5 L / width), about 1 at L = 50, width 256); the mean over the "
        f"{p.n_nets} networks is the expectation the theory predicts.",
    ]
    return "\n".join(lines)


def _pow10(v) -> str:
    if v is None or not math.isfinite(v):
        return "non-finite"
    return f"{10**v:.3g}"
