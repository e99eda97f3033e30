"""depth_signal: does the signal survive 50 layers? Activation x initializer grid.

For each pair (activation, initializer) an ensemble of ``n_nets`` plain networks
``z_l = h_{l-1} W_l``, ``h_l = act(z_l)`` (no biases, square ``width x width`` weights, depth
``depth``) is run on a Gaussian batch, and two signals are measured per layer:

* forward: ``q_l = E[z_l^2]``, the variance of the pre-activations (mean over networks,
  examples and units; ``E[z] = 0`` by the symmetry of the weights). Initialization theory
  (LeCun 1998, Glorot & Bengio 2010, He et al. 2015) chooses ``Var[W]`` so that ``q_l`` stays
  constant in ``l``.
* backward: ``d_l``, the RMS over examples of the per-example **back-propagated signal**
  ``||dl_b/dh_{l,b}||`` for a linear read-out loss ``l_b = <h_{L,b}, r>`` with a fixed random
  ``r`` (so ``d_L = ||r||`` whatever the forward scale). Beside it ``g_l``, the RMS per-example
  weight-gradient norm ``||dl_b/dW_l|| = ||h_{l-1,b}|| ||dl_b/dz_{l,b}||``: for ReLU (positively
  homogeneous) the forward and backward factors cancel in it, so ``g_1 / g_L`` stays near 1 even
  where ``d_1 / d_L`` is ``2^-24.5``; it is reported, never judged by.

The pair *holds* when both ``q_L / q_1`` and ``d_1 / d_L`` stay within ``hold_factor`` (2) of 1,
*vanishes*/*explodes* otherwise (by the signal that fails most, in log scale). Beside every
measurement is the mean-field prediction (the variance recursions of LeCun/Glorot/He, infinite
width, Gauss-Hermite integrals). The library's :func:`chainrule.diagnostics.verdict` (factor
100, layer by layer, on the weight gradients) is reported too.

Computation: ``cr.value_and_grad`` of the summed loss with respect to zero offsets added to
each pre-activation and each layer output gives every ``dl_b/dz_{l,b}`` and ``dl_b/dh_{l,b}``
in one reverse pass; the layers run in a ``lax.scan`` so the network compiles once per
activation.
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
from chainrule import diagnostics, nets

from ._common import Check, claims_section, floats, gauss_expect, overall

DESCRIPTION = (
    "Forward variance and per-example back-propagated signal through a deep plain network for "
    "each activation x initializer pair, beside mean field: which vanish, explode or hold"
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


def _loss(offsets, weights, x, r, activation):
    """Sum over networks and examples of ``<h_L, r>``; ``offsets = (e_z, e_h)`` are added to
    every ``z_l`` and every ``h_l`` (their gradients are ``dl/dz_l`` and ``dl/dh_l``).

    Returns the loss and, per layer, ``E[z_l^2]`` and ``||h_{l-1,b}||^2`` per example.
    """
    act = nets.get_activation(activation)

    def layer(h, inputs):
        w, ez, eh = inputs
        z = jnp.einsum("kbi,kij->kbj", h, w) + ez
        return act(z) + eh, (jnp.mean(z * z, axis=(1, 2)), jnp.sum(h * h, axis=-1))

    h_last, (q, h_in_sq) = jax.lax.scan(layer, x, (weights, *offsets))
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


@functools.partial(jax.jit, static_argnums=(0, 3))
def _measure(activation: str, weights: jax.Array, key: jax.Array, batch: int):
    """One compiled program per activation and shape (our own function: safe to keep jitted)."""
    depth, n_nets, width, _ = weights.shape
    dtype = weights.dtype
    k_x, k_r = jax.random.split(key)
    x = jax.random.normal(k_x, (n_nets, batch, width), dtype)
    r = jax.random.normal(k_r, (width,), dtype)
    zeros = jnp.zeros((depth, n_nets, batch, width), dtype)
    (_, (q, h_in_sq)), (delta_z, delta_h) = cr.value_and_grad(_loss, has_aux=True)(
        (zeros, zeros), weights, x, r, activation
    )
    # ||dl_b/dW_l||^2 = ||h_{l-1,b}||^2 ||dl_b/dz_{l,b}||^2 (an outer product), RMS over b, k.
    per_example_sq = h_in_sq * jnp.sum(delta_z * delta_z, axis=-1)
    g = jnp.sqrt(jnp.mean(per_example_sq, axis=(1, 2)))
    d_sq = jnp.mean(jnp.sum(delta_h * delta_h, axis=-1), axis=2)  # (depth, n_nets)
    return q, d_sq, g


def measure(activation: str, weights: jax.Array, p: Params, key: jax.Array) -> dict:
    """Per-layer ``q_l``, ``d_l`` and ``g_l`` for one pair (ensemble of ``p.n_nets`` networks).

    Cost: one forward and one reverse pass through all networks (``cr.value_and_grad``).
    """
    q_k, d_sq_k, g = _measure(activation, weights, key, p.batch)
    q_k, d_sq_k = np.asarray(q_k, np.float64), np.asarray(d_sq_k, np.float64)
    return {
        "q": q_k.mean(axis=1),
        "d": np.sqrt(d_sq_k.mean(axis=1)),
        "g": np.asarray(g, np.float64),
        # Sampling error (delta method) of log10 q_L/q_1 and log10 d_1/d_L over the ensemble.
        "se_log10_q": float(np.hypot(_se_log10(q_k[-1]), _se_log10(q_k[0]))),
        "se_log10_d": float(0.5 * _se_log10(d_sq_k[0])),
    }


def _se_log10(x: np.ndarray) -> float:
    """Standard error of ``log10(mean(x))`` over the ensemble (delta method)."""
    m = float(np.mean(x))
    if len(x) < 2 or not (math.isfinite(m) and m > 0):
        return math.nan
    return float(np.std(x, ddof=1) / (math.sqrt(len(x)) * m * math.log(10)))


def sigma2(init_name: str, activation: str, p: Params) -> float:
    """``fan_in * Var(W_ij)`` of the initializer (square ``width x width`` weights)."""
    return {
        "normal": float(p.width),
        "small_uniform": p.width * p.uniform_scale**2 / 3,
        "lecun": 1.0,
        "xavier": 1.0,
        "he": 2.0,
        "orthogonal": orthogonal_gain(activation, p) ** 2,
    }[init_name]


_NP_ACT = {
    "sigmoid": (
        lambda z: 1 / (1 + np.exp(-z)),
        lambda z: np.exp(-np.abs(z)) / (1 + np.exp(-np.abs(z))) ** 2,
    ),
    "tanh": (np.tanh, lambda z: 1 - np.tanh(z) ** 2),
    "relu": (lambda z: np.maximum(z, 0.0), lambda z: (z > 0) * 1.0),
}


def mean_field(activation: str, s2: float, depth: int) -> dict[str, float]:
    """Infinite-width ``log10 q_L / q_1`` and ``log10 d_1 / d_L`` for inputs ``N(0, I)``.

    ``q_1 = s2``, ``q_{l+1} = s2 E[act(z)^2]`` and the squared signal gains
    ``s2 E[act'(z)^2]`` per layer, ``z ~ N(0, q_l)`` (LeCun 1998; Glorot & Bengio 2010; He et
    al. 2015; Poole et al. 2016).
    """
    f, df = _NP_ACT[activation]
    q = s2
    q1 = q
    log_d = 0.0
    for _ in range(depth - 1):
        log_d += 0.5 * math.log10(max(s2 * gauss_expect(lambda t: df(t) ** 2, q), 1e-300))
        q = s2 * gauss_expect(lambda t: f(t) ** 2, q)
    return {"log10_q_ratio": math.log10(q / q1), "log10_d_ratio": log_d}


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


def classify(fwd_log: float, bwd_log: float, factor: float, se: tuple = (0.0, 0.0)) -> str:
    """'holds' if both log10 ratios are within log10(factor), widened by twice each one's
    sampling error ``se`` (an ensemble of finite-width nets scatters around the expectation);
    else the worse one's direction."""
    lim = math.log10(factor)
    vals = [v for v in (fwd_log, bwd_log) if not math.isnan(v)]
    if len(vals) < 2:
        return "undefined"
    tol = [lim + 2 * (e if math.isfinite(e) else 0.0) for e in se]
    if all(abs(v) <= t for v, t in zip((fwd_log, bwd_log), tol, strict=True)):
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
        q, d, g = m["q"], m["d"], m["g"]
        fwd = _log_ratio(q[-1], q[0])
        bwd = _log_ratio(d[0], d[-1])
        mf = mean_field(activation, sigma2(init_name, activation, p), p.depth)
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
                "mf_log10_q_ratio": mf["log10_q_ratio"],
                "log10_d_ratio": bwd,
                "mf_log10_d_ratio": mf["log10_d_ratio"],
                "g_first": float(g[0]),
                "g_last": float(g[-1]),
                "log10_g_ratio": _log_ratio(g[0], g[-1]),
                "se_log10_q": m["se_log10_q"],
                "se_log10_d": m["se_log10_d"],
                "outcome": classify(fwd, bwd, p.hold_factor, (m["se_log10_q"], m["se_log10_d"])),
                "diagnostics_verdict": f"{v.status}" + (f" ({v.signal})" if v.signal else ""),
            }
        )
        ctx.log(
            f"{activation}+{init_name}: log10 q_L/q_1 = {fwd:+.2f}, log10 d_1/d_L = {bwd:+.2f}"
            f" -> {rows[-1]['outcome']}"
        )
        curves.append(
            {
                "activation": activation,
                "initializer": init_name,
                "q": q.tolist(),
                "d": d.tolist(),
                "g": g.tolist(),
            }
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
    checks = [c.row() for c in evaluate(rows, p)]
    summary["verdict"] = overall(c["passed"] for c in checks)
    return {
        "tables": {"pairs": rows, "claims": checks},
        "summary": summary,
        "claims": checks,
        "curves": curves,
    }


# A measured log10 ratio matches the mean-field one within this many decades (x3, two-sided):
# the ensemble RMS of width-256 networks sits within a few tens of percent of it.
MF_DECADES = math.log10(3.0)


def _pairs(rows: list[dict], acts, inits) -> list[dict]:
    return [r for r in rows if r["activation"] in acts and r["initializer"] in inits]


def _finite(v) -> float:
    return float(v) if v is not None and math.isfinite(v) else 0.0


def _fmt_log(v: float | None) -> str:
    if v is None or not math.isfinite(v):
        return "non-finite"
    return f"10^{v:+.1f}"


def evaluate(rows: list[dict], p: Params) -> list[Check]:
    """The claims, each on the per-example back-propagated signal ``d`` and the variance ``q``.

    A claim whose pairs were not run is "not tested".
    """
    lim = math.log10(p.hold_factor)
    out = []

    def add(name, claim, paper, picked, passed_fn, measured_fn, criterion):
        out.append(
            Check(
                name,
                claim,
                paper,
                "; ".join(measured_fn(r) for r in picked) if picked else "(not run)",
                all(passed_fn(r) for r in picked) if picked else None,
                criterion,
            )
        )

    def both(r):
        return (
            f"{r['activation']}+{r['initializer']}: q {_fmt_log(r['log10_q_ratio'])}, "
            f"d {_fmt_log(r['log10_d_ratio'])}"
        )

    def near_mf(r):
        return all(
            math.isfinite(r[k])
            and abs(r[k] - r[f"mf_{k}"]) <= MF_DECADES + 2 * _finite(r.get(f"se_{k[:-6]}"))
            for k in ("log10_q_ratio", "log10_d_ratio")
        )

    add(
        "he_relu_holds",
        "Var[W] = 2/fan_in keeps a ReLU net's forward variance and back-propagated signal",
        "q_L/q_1 = 1, d_1/d_L = 1",
        _pairs(rows, ["relu"], ["he"]),
        lambda r: r["outcome"] == "holds",
        both,
        f"|log10 q_L/q_1| and |log10 d_1/d_L| <= log10 {p.hold_factor:g} + 2 x their "
        "ensemble standard errors",
    )
    add(
        "relu_var1_halves",
        "with Var[W] = 1/fan_in (LeCun, Xavier) a ReLU loses half the variance per layer",
        f"q: 2^-{p.depth - 1} = 10^{-(p.depth - 1) * math.log10(2):.1f}, "
        f"d: 2^-{(p.depth - 1) / 2:g}",
        _pairs(rows, ["relu"], ["lecun", "xavier"]),
        near_mf,
        both,
        "both log10 ratios within log10 3 (+ 2 ensemble standard errors) of the mean-field "
        "values, two-sided",
    )
    add(
        "tanh_power_law",
        "tanh with Var[W] = 1/fan_in: q decays slowly (a power law, not geometrically)",
        "mean-field: q ~ 1/(2l) (see the table)",
        _pairs(rows, ["tanh"], ["lecun", "xavier"]),
        lambda r: near_mf(r) and r["log10_q_ratio"] < -lim,
        both,
        "q_L/q_1 below 1/hold and both ratios within log10 3 (+ 2 s.e.) of mean field",
    )
    add(
        "sigmoid_scaled_vanishes",
        "sigmoid (slope <= 1/4) loses the back-propagated signal with every scaled initializer",
        "d_1/d_L <= (sigma_w / 4)^(L-1)",
        _pairs(rows, ["sigmoid"], ["lecun", "xavier", "he", "orthogonal"]),
        lambda r: r["log10_d_ratio"] < -lim,
        both,
        f"log10 d_1/d_L < -log10 {p.hold_factor:g}",
    )
    add(
        "normal_breaks",
        "N(0, 1) weights saturate sigmoid/tanh and blow up ReLU: no pair holds",
        "q_1 ~ width; ReLU q x width/2 per layer",
        _pairs(rows, ALL_ACTIVATIONS, ["normal"]),
        lambda r: (
            r["outcome"] != "holds" and (r["activation"] != "relu" or r["log10_q_ratio"] > lim)
        ),
        both,
        "outcome is not 'holds' (and ReLU's forward variance explodes)",
    )
    add(
        "small_uniform_vanishes",
        "tiny uniform weights make the back-propagated signal vanish geometrically",
        f"d_1/d_L ~ (width a^2/3 E[act'^2])^((L-1)/2), a = {p.uniform_scale:g}",
        _pairs(rows, ALL_ACTIVATIONS, ["small_uniform"]),
        lambda r: (
            r["log10_d_ratio"] < -lim
            and abs(r["log10_d_ratio"] - r["mf_log10_d_ratio"]) <= MF_DECADES
        ),
        both,
        "d vanishes and matches mean field within log10 3",
    )
    return out


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
        figsize=(6.0 + 2.4 * len(p.initializers), 1.4 + 1.1 * len(p.activations)),
        layout="constrained",
    )
    axes = fig.subplots(1, 3)
    lim = math.log10(p.hold_factor)
    for ax, key, title in (
        (axes[0], "log10_q_ratio", "forward: log10 q_L / q_1"),
        (axes[1], "log10_d_ratio", "backward signal: log10 d_1 / d_L"),
        (axes[2], "log10_g_ratio", "weight gradient (not judged): log10 g_1 / g_L"),
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
                ok = np.isfinite(v) and abs(v) <= lim and key != "log10_g_ratio"
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
        ("d", "back-propagated signal d_l = ||dl/dh_l||", "signal_by_layer"),
        ("g", "per-example weight-gradient norm g_l", "gradnorm_by_layer"),
    ):
        fig = Figure(figsize=(4.0 * len(p.activations), 3.6), layout="constrained")
        axes = np.atleast_1d(fig.subplots(1, len(p.activations), sharey=True))
        for ax, act in zip(axes, p.activations, strict=True):
            for c in results["curves"]:
                if c["activation"] != act:
                    continue
                y = floats(c.get(key))
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
    table = [
        "| pair | log10 q_L/q_1 | mean field | log10 d_1/d_L | mean field | log10 g_1/g_L "
        "(not judged) | outcome |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        table.append(
            f"| {r['activation']}+{r['initializer']} | {_num(r['log10_q_ratio'])} | "
            f"{_num(r['mf_log10_q_ratio'])} | {_num(r['log10_d_ratio'])} | "
            f"{_num(r['mf_log10_d_ratio'])} | {_num(r['log10_g_ratio'])} | {r['outcome']} |"
        )
    published = (
        "Var[W] = 2/fan_in (He et al. 2015) keeps the variance of ReLU pre-activations and of "
        "the back-propagated signal constant with depth. Var[W] = 1/fan_in (LeCun 1998) and "
        "2/(fan_in + fan_out) (Glorot & Bengio 2010; the same for square layers) suit tanh "
        "near its linear regime, though tanh's saturation makes q_l decay slowly (a power "
        "law), and a ReLU loses half the variance per layer with them. Sigmoid (slope <= 1/4) "
        "loses the backward signal with every scaled initializer. N(0, 1) weights saturate "
        "sigmoid and tanh and blow up ReLU; tiny uniform weights make the signal vanish."
    )
    setup = (
        f"Activations {p.activations} x initializers {p.initializers}: {p.n_nets} networks of "
        f"depth {p.depth} and width {p.width} without biases, {p.batch} standard-normal inputs "
        f"each ({p.dtype}). q_l = E[z_l^2]; d_l = RMS over examples of the per-example "
        f"back-propagated signal ||dl_b/dh_l|| for a random linear read-out (the backward "
        f"verdict's quantity); g_l = RMS per-example weight-gradient norm (reported only). A "
        f"pair *holds* when q_L/q_1 and d_1/d_L are both within a factor {p.hold_factor:g}. "
        f"'mean field': the infinite-width variance recursion for the same pair.\n\n"
        + "\n".join(table)
    )
    notes = (
        "For ReLU the weight-gradient ratio g_1/g_L stays near 1 for every scaled "
        "initializer: g_l ~ ||h_{l-1}|| d_l and ReLU is positively homogeneous, so a shrinking "
        "forward pass and a shrinking backward signal cancel in it (Xavier: d_1/d_L = "
        f"2^-{(p.depth - 1) / 2:g} while g_1/g_L ~ 1). Finite width makes one network's q_l a "
        "random walk in log scale (std ~ sqrt(5 L / width)); the RMS over the ensemble is the "
        "expectation the theory predicts."
    )
    return claims_section(published, setup, results["claims"], notes)


def _num(v) -> str:
    if v is None:
        return "–"
    if not math.isfinite(v):
        return "inf" if v > 0 else ("-inf" if v < 0 else "nan")
    return f"{v:+.2f}"
