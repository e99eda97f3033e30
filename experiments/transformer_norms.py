"""transformer_norms: Post-LN, Pre-LN and DeepNorm transformers at init and in training.

The stacks are ``cr.nets.transformer_init`` parameters applied with ``cr.nets.transformer_apply``
(Post-LN ``LN(x + F(x))``, Pre-LN ``x + F(LN(x))`` with a final LN, DeepNorm
``LN(alpha x + F(x))`` with its beta-scaled init). Task: token embedding + learned positions ->
N encoder blocks -> linear read-out, trained to output the input sequence reversed
(vocabulary ``vocab``, length ``seq_len``, cross-entropy; chance is ``ln vocab``).

1. **Gradients at init** (Xiong et al. 2020, "On Layer Normalization in the Transformer
   Architecture", Thm. 1 and Fig. 3): the quantity is theirs, the gradient norm of each block's
   feed-forward weights ``||dL/dW^{2,l}||_F`` (log-mean over ``grad_nets`` inits, each with its
   own batch). Claims: Post-LN's last-layer gradient does not shrink with depth (Thm. 1:
   O(d sqrt(ln d)), independent of N) and grows toward the output (Fig. 3); Pre-LN's scales
   like 1/sqrt(N) (Thm. 1: O(d sqrt(ln d / N))) and its profile is flat. The scaling is tested
   quantitatively: the fitted exponent of ``g_L`` against ``N``.
2. **Warm-up** (Xiong et al. 2020, Fig. 2; Popel & Bojar 2018): Post-LN trained with Adam at a
   learning rate where it trains *with* a linear warm-up trains much worse *without* it; Pre-LN
   trains without one. Tested on a learning-rate sweep at depth ``train_depth``, for every
   seed, at two budgets (half and all of ``steps``).

All runs of one wiring (learning rates x warm-up x seeds) are one ``vmap`` over a ``lax.scan``
of Adam steps (``optax.inject_hyperparams``: the learning rate is an input), so each wiring
compiles once.
"""

from __future__ import annotations

import math
from typing import Literal

import jax
import jax.numpy as jnp
import numpy as np
import optax
from pydantic import BaseModel, ConfigDict, Field

import chainrule as cr
from chainrule import nets

from ._common import Check, claims_section, floats, line_panel, overall, share_y, within

DESCRIPTION = (
    "Post-LN vs Pre-LN vs DeepNorm transformers: feed-forward gradient norms per layer at init "
    "(Xiong et al. 2020's quantity, 1/sqrt(N) tested) and a learning-rate sweep with and "
    "without warm-up"
)

Wiring = Literal["post", "pre", "deep"]
LABELS = {"post": "Post-LN", "pre": "Pre-LN", "deep": "DeepNorm"}
# Fitted exponent of g_L against N: Pre-LN -1/2, Post-LN 0 (Xiong et al. Thm. 1), +-SLOPE_TOL.
SLOPE_TOL = 0.15


class Params(BaseModel):
    model_config = ConfigDict(extra="forbid")

    depths: list[int] = Field(default_factory=lambda: [6, 12, 24], min_length=2)
    wirings: list[Wiring] = Field(default_factory=lambda: ["post", "pre", "deep"], min_length=1)
    d_model: int = Field(32, ge=2, le=1024)
    n_heads: int = Field(2, ge=1, le=64)
    d_ff: int = Field(64, ge=1, le=4096)
    vocab: int = Field(16, ge=2, le=4096)
    seq_len: int = Field(8, ge=2, le=512)
    batch: int = Field(32, ge=1, le=4096)
    grad_nets: int = Field(
        8, ge=1, le=256, description="random inits (each with its own batch) log-averaged at init"
    )
    train_wirings: list[Wiring] = Field(
        default_factory=lambda: ["post", "pre"], min_length=1, description="wirings trained"
    )
    train_depth: int = Field(6, ge=1, le=64, description="depth of the warm-up comparison")
    lrs: list[float] = Field(
        default_factory=lambda: [1e-3, 3e-3, 1e-2], min_length=1, description="peak lr sweep"
    )
    steps: int = Field(300, ge=2, le=100_000, description="Adam steps per training run")
    warmup_steps: int = Field(100, ge=1, description="linear warm-up length (warm-up runs)")
    train_seeds: int = Field(2, ge=1, le=16, description="independent runs per setting")


# ----------------------------------------------------------------------------------------------
# Model (nets' blocks)
# ----------------------------------------------------------------------------------------------


def init_model(key: jax.Array, depth: int, wiring: str, p: Params) -> dict:
    k1, k2, k3, k4 = jax.random.split(key, 4)
    return {
        "emb": jax.random.normal(k1, (p.vocab, p.d_model)),
        "pos": jax.random.normal(k2, (p.seq_len, p.d_model)),
        "stack": nets.transformer_init(k3, depth, p.d_model, p.n_heads, p.d_ff, wiring),
        "out": cr.init.xavier_normal()(k4, (p.d_model, p.vocab)),
    }


def loss_fn(model: dict, tokens: jax.Array, wiring: str, n_heads: int) -> jax.Array:
    z = model["emb"][tokens] + model["pos"]
    z = nets.transformer_apply(model["stack"], z, wiring, n_heads)
    logits = z @ model["out"]
    target = tokens[:, ::-1]  # the task: reverse the sequence
    return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, target))


def _tokens(key: jax.Array, p: Params) -> jax.Array:
    return jax.random.randint(key, (p.batch, p.seq_len), 0, p.vocab)


# ----------------------------------------------------------------------------------------------
# 1. Feed-forward gradient norms at init
# ----------------------------------------------------------------------------------------------


def init_ffn_grads(key: jax.Array, depth: int, wiring: str, p: Params) -> np.ndarray:
    """``||dL/dW^{2,l}||_F`` for ``l = 1..N``, log-averaged over ``grad_nets`` inits."""
    g_fn = jax.jit(jax.grad(loss_fn), static_argnums=(2, 3))
    logs = []
    for k in jax.random.split(jax.random.fold_in(key, depth), p.grad_nets):
        k_init, k_data = jax.random.split(k)
        model = init_model(k_init, depth, wiring, p)
        g = g_fn(model, _tokens(k_data, p), wiring, p.n_heads)["stack"]["layers"]
        norms = np.array([float(jnp.linalg.norm(layer["ffn"]["w2"])) for layer in g])
        logs.append(np.log(norms))
    return np.exp(np.mean(logs, axis=0))


def fit_exponent(depths: list[int], values: list[float]) -> float:
    """Least-squares slope of ``log value`` against ``log depth`` (the scaling exponent)."""
    x, y = np.log(np.asarray(depths, float)), np.log(np.asarray(values, float))
    return float(np.polyfit(x, y, 1)[0])


# ----------------------------------------------------------------------------------------------
# 2. Warm-up on a learning-rate sweep
# ----------------------------------------------------------------------------------------------


def schedules(p: Params) -> tuple[np.ndarray, list[dict]]:
    """One learning-rate schedule per run (lr x warm-up x seed) and the runs' labels."""
    t = np.arange(p.steps, dtype=np.float64)
    rows, scheds = [], []
    for lr in p.lrs:
        for warmup in (False, True):
            s = lr * np.minimum(1.0, (t + 1) / p.warmup_steps) if warmup else np.full(p.steps, lr)
            for seed in range(p.train_seeds):
                rows.append({"lr": lr, "warmup": warmup, "seed": seed})
                scheds.append(s)
    return np.asarray(scheds, np.float32), rows


def train_all(key: jax.Array, wiring: str, p: Params) -> tuple[np.ndarray, list[dict]]:
    """Training losses ``(runs, steps)`` for every run of ``wiring`` (one vmapped program)."""
    scheds, rows = schedules(p)
    opt = optax.inject_hyperparams(optax.adam)(learning_rate=1e-3)

    def one(sched, seed_key):
        k_init, k_data = jax.random.split(seed_key)
        model = init_model(k_init, p.train_depth, wiring, p)
        state = opt.init(model)

        def step(carry, inputs):
            model, state = carry
            lr, k = inputs
            loss, g = jax.value_and_grad(loss_fn)(model, _tokens(k, p), wiring, p.n_heads)
            state.hyperparams["learning_rate"] = lr
            updates, state = opt.update(g, state, model)
            return (optax.apply_updates(model, updates), state), loss

        keys = jax.random.split(k_data, p.steps)
        return jax.lax.scan(step, (model, state), (sched, keys))[1]

    # The same init and batches for every lr and warm-up of a seed (common random numbers).
    seed_keys = jnp.stack([jax.random.fold_in(key, r["seed"]) for r in rows])
    losses = jax.jit(jax.vmap(one))(jnp.asarray(scheds), seed_keys)
    return np.asarray(losses, np.float64), rows


def tail_loss(losses: np.ndarray, upto: int, frac: float = 0.1) -> float:
    """Mean training loss over the last ``frac`` of the first ``upto`` steps (NaN if any is)."""
    n = max(1, int(upto * frac))
    v = np.asarray(losses[upto - n : upto], np.float64)
    return float(v.mean()) if np.isfinite(v).all() else math.nan


# ----------------------------------------------------------------------------------------------
# Run and verdict
# ----------------------------------------------------------------------------------------------


def run(params: Params, ctx) -> dict:
    p = params
    grad_rows, profiles = [], []
    grid = [(w, d) for w in p.wirings for d in p.depths]
    for wiring, depth in ctx.progress(grid, total=len(grid), desc="wiring x depth"):
        g = init_ffn_grads(ctx.fold("init_grads"), depth, wiring, p)
        grad_rows.append(
            {
                "wiring": wiring,
                "depth": depth,
                "g_first": float(g[0]),
                "g_last": float(g[-1]),
                "last_over_first": float(g[-1] / g[0]),
            }
        )
        profiles.append({"wiring": wiring, "depth": depth, "ffn_grad_norms": g.tolist()})

    train_rows, curves = [], []
    budgets = sorted({p.steps // 2, p.steps})
    for wiring in ctx.progress(p.train_wirings, desc="training"):
        losses, runs = train_all(ctx.fold("train"), wiring, p)
        for r, curve in zip(runs, losses, strict=True):
            row = {"wiring": wiring, "depth": p.train_depth, **r}
            for b in budgets:
                row[f"loss_at_{b}"] = tail_loss(curve, b)
            train_rows.append(row)
            curves.append({**row, "loss": curve.tolist()})

    checks = [c.row() for c in evaluate(grad_rows, train_rows, p)]
    s: dict = {"chance_loss": math.log(p.vocab), "train_depth": p.train_depth}
    for w in p.wirings:
        rs = sorted((r for r in grad_rows if r["wiring"] == w), key=lambda r: r["depth"])
        s[f"{w}_g_last_exponent"] = fit_exponent(
            [r["depth"] for r in rs], [r["g_last"] for r in rs]
        )
        s[f"{w}_last_over_first_d{max(p.depths)}"] = rs[-1]["last_over_first"]
    s["verdict"] = overall(c["passed"] for c in checks)
    return {
        "tables": {"init_ffn_grads": grad_rows, "training": train_rows, "claims": checks},
        "summary": s,
        "claims": checks,
        "profiles": profiles,
        "curves": curves,
    }


def evaluate(grad_rows: list[dict], train_rows: list[dict], p: Params) -> list[Check]:
    """The claims on their own quantities; a claim whose runs are missing is "not tested"."""
    out = []
    by_w: dict[str, list[dict]] = {}
    for r in grad_rows:
        by_w.setdefault(r["wiring"], []).append(r)
    for w, predicted, claim in (
        ("pre", -0.5, "Pre-LN: the last layer's FFN gradient scales like 1/sqrt(N)"),
        ("post", 0.0, "Post-LN: the last layer's FFN gradient does not shrink with N"),
    ):
        rs = sorted(by_w.get(w, []), key=lambda r: r["depth"])
        if len(rs) < 2:
            out.append(Check(f"{w}_last_exponent", claim, f"N^{predicted:g}", "(not run)", None))
            continue
        e = fit_exponent([r["depth"] for r in rs], [r["g_last"] for r in rs])
        lo, hi = rs[0], rs[-1]
        out.append(
            Check(
                f"{w}_last_exponent",
                claim,
                f"exponent {predicted:g} (x{(lo['depth'] / hi['depth']) ** -predicted:.2f} "
                f"from N={lo['depth']} to {hi['depth']})",
                f"exponent {e:+.2f} (x{hi['g_last'] / lo['g_last']:.2f})",
                within(e, predicted - SLOPE_TOL, predicted + SLOPE_TOL),
                f"fitted exponent of g_L vs N in {predicted:g} +- {SLOPE_TOL}",
            )
        )
    deepest = max(p.depths)
    for w, claim, ok, crit in (
        (
            "post",
            "Post-LN: the FFN gradient grows toward the output (Fig. 3)",
            lambda x: within(x, 1.5),
            "g_L / g_1 >= 1.5",
        ),
        (
            "pre",
            "Pre-LN: the FFN gradient is flat across layers (Fig. 3)",
            lambda x: within(x, 1 / 1.5, 1.5),
            "1/1.5 <= g_L / g_1 <= 1.5",
        ),
    ):
        r = [x for x in by_w.get(w, []) if x["depth"] == deepest]
        out.append(
            Check(
                f"{w}_profile",
                claim,
                "increasing (Post-LN) / flat (Pre-LN), d_model 512",
                f"g_L/g_1 = {r[0]['last_over_first']:.2f} at N={deepest}" if r else "(not run)",
                ok(r[0]["last_over_first"]) if r else None,
                crit,
            )
        )
    out += _warmup_checks(train_rows, p)
    return out


def _warmup_checks(rows: list[dict], p: Params) -> list[Check]:
    chance = math.log(p.vocab)
    budgets = sorted({p.steps // 2, p.steps})

    def loss(w, lr, warmup, seed, b):
        for r in rows:
            if (r["wiring"], r["lr"], r["warmup"], r["seed"]) == (w, lr, warmup, seed):
                v = r[f"loss_at_{b}"]
                return math.inf if v is None or not math.isfinite(v) else v
        return None

    have = {r["wiring"] for r in rows}
    out = []
    claim = "Post-LN that trains with a warm-up trains much worse without it"
    crit = (
        "at the lr where Post-LN with warm-up does best: with warm-up < 0.5 chance, and "
        "without >= with + 0.25 chance, for every seed and both budgets"
    )
    claim_pre = "Pre-LN trains without warm-up at that learning rate"
    crit_pre = "Pre-LN without warm-up < 0.5 chance, every seed and budget"
    if "post" not in have:
        return [
            Check("warmup_rescues_post_ln", claim, "Fig. 2", "(not run)", None, crit),
            Check("pre_ln_needs_no_warmup", claim_pre, "Fig. 2", "(not run)", None, crit_pre),
        ]
    seeds = sorted({r["seed"] for r in rows})
    best_lr = min(
        p.lrs, key=lambda lr: np.mean([loss("post", lr, True, s, p.steps) for s in seeds])
    )
    cells, ok = [], True
    for s in seeds:
        for b in budgets:
            wu, nw = loss("post", best_lr, True, s, b), loss("post", best_lr, False, s, b)
            ok &= wu < 0.5 * chance and nw >= wu + 0.25 * chance
            cells.append(f"seed {s} @{b}: {nw:.2f} vs {wu:.2f}")
    out.append(
        Check(
            "warmup_rescues_post_ln",
            claim,
            "Fig. 2: without warm-up BLEU far lower at lr 5e-4/1e-3",
            f"lr {best_lr:g}, loss without vs with warm-up: " + "; ".join(cells),
            bool(ok),
            crit,
        )
    )
    if "pre" in have:
        vals = [loss("pre", best_lr, False, s, b) for s in seeds for b in budgets]
        out.append(
            Check(
                "pre_ln_needs_no_warmup",
                claim_pre,
                "Fig. 2 / Sec. 4: Pre-LN without warm-up trains",
                f"lr {best_lr:g}: " + ", ".join(f"{v:.2f}" for v in vals),
                all(v < 0.5 * chance for v in vals),
                crit_pre,
            )
        )
    else:
        out.append(Check("pre_ln_needs_no_warmup", claim_pre, "Fig. 2", "(not run)", None))
    return out


# ----------------------------------------------------------------------------------------------
# Plots and report
# ----------------------------------------------------------------------------------------------


def plot(results: dict, params: Params) -> dict:
    from matplotlib.figure import Figure

    figs = {}
    ws = params.wirings
    fig = Figure(figsize=(4.2 * len(ws), 3.6), layout="constrained")
    axes = fig.subplots(1, len(ws), squeeze=False)[0]
    for ax, w in zip(axes, ws, strict=True):
        series = {
            f"N={prof['depth']}": prof["ffn_grad_norms"]
            for prof in results["profiles"]
            if prof["wiring"] == w
        }
        for label, ys in series.items():
            ax.plot(np.arange(1, len(ys) + 1), floats(ys), "o-", ms=3, label=label)
        ax.set_yscale("log")
        ax.set_title(f"{LABELS[w]}: ||dL/dW2_ffn|| at init", fontsize=10)
        ax.set_xlabel("block (1 = input side)")
        ax.legend(fontsize=7)
    axes[0].set_ylabel("FFN W2 gradient norm")
    share_y(axes)
    figs["init_ffn_grads"] = fig

    tw = params.train_wirings
    fig = Figure(figsize=(4.2 * len(params.lrs), 3.6 * len(tw)), layout="constrained")
    axes = fig.subplots(len(tw), len(params.lrs), squeeze=False)
    chance = results["summary"]["chance_loss"]
    for i, w in enumerate(tw):
        for j, lr in enumerate(params.lrs):
            series, styles = {}, {}
            for c in results["curves"]:
                if c["wiring"] == w and c["lr"] == lr:
                    label = f"{'warm-up' if c['warmup'] else 'no warm-up'}, seed {c['seed']}"
                    series[label] = c["loss"]
                    styles[label] = {"color": "C0" if c["warmup"] else "C3", "lw": 0.8}
            line_panel(
                axes[i][j],
                series,
                title=f"{LABELS[w]}, N={params.train_depth}, peak lr {lr:g}",
                xlabel="Adam step",
                ylabel="training loss",
                logy=False,
                styles=styles,
                hlines={"chance": chance},
            )
    share_y(axes.ravel())
    figs["training"] = fig
    return figs


def report(results: dict, params: Params) -> str:
    p = params
    published = (
        "Xiong et al. 2020 (*On Layer Normalization in the Transformer Architecture*, ICML): at "
        "initialization the gradient of the last layer's feed-forward weights is O(d sqrt(ln "
        "d)) for Post-LN, independent of the depth N, and O(d sqrt(ln d / N)) for Pre-LN "
        "(Thm. 1); per layer, Post-LN's grows toward the output and Pre-LN's is flat (Fig. 3). "
        "Hence Post-LN needs a learning-rate warm-up and trains badly without one, Pre-LN "
        "does not (Fig. 2; also Popel & Bojar 2018)."
    )
    rows = results["tables"]["training"]
    budgets = sorted({p.steps // 2, p.steps})
    tab = ["| wiring | lr | warm-up | " + " | ".join(f"loss @{b} (seeds)" for b in budgets) + " |"]
    tab.append("|---|---|---|" + "---|" * len(budgets))
    for w in p.train_wirings:
        for lr in p.lrs:
            for wu in (False, True):
                cells = []
                for b in budgets:
                    vs = [
                        r[f"loss_at_{b}"]
                        for r in rows
                        if (r["wiring"], r["lr"], r["warmup"]) == (w, lr, wu)
                    ]
                    cells.append(", ".join("nan" if v is None else f"{v:.2f}" for v in vs))
                tab.append(
                    f"| {LABELS[w]} | {lr:g} | {'yes' if wu else 'no'} | "
                    + " | ".join(cells)
                    + " |"
                )
    setup = (
        f"d_model {p.d_model}, {p.n_heads} heads, d_ff {p.d_ff}, reversing sequences of "
        f"{p.seq_len} tokens from {p.vocab} (chance loss {math.log(p.vocab):.3f}). Init: "
        f"depths {p.depths}, {p.grad_nets} inits each, the FFN W2 gradient of every block. "
        f"Training: depth {p.train_depth}, Adam, peak lr {p.lrs}, {p.steps} steps of "
        f"{p.batch} sequences, linear warm-up over {p.warmup_steps} steps or none, "
        f"{p.train_seeds} seeds; loss = mean training loss over the last 10% of each budget.\n\n"
        + "\n".join(tab)
    )
    notes = (
        f"The model is tiny next to Xiong et al.'s (d_model 512, 6 layers, translation): the "
        f"verdict says what holds at this size. Exponent tolerance +-{SLOPE_TOL} around "
        f"Thm. 1's value; a warm-up 'rescue' needs both a Post-LN run that trains with warm-up "
        f"and a gap of a quarter of the chance loss without it."
    )
    return claims_section(published, setup, results["claims"], notes)
