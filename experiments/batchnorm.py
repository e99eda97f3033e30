"""batchnorm: train vs inference behaviour of batch norm, small batches, layer norm, and depth.

Three measurements with ``cr.norm.batch_norm`` (pure: ``(y, new_state)``) and
``cr.norm.layer_norm``:

1. **Running statistics.** Batches from a Gaussian with known per-feature mean and variance go
   through ``batch_norm(training=True)``; the exponential moving averages in the state are
   compared with the true statistics step by step (Ioffe & Szegedy 2015, sec. 3.1: inference
   uses population statistics, estimated by moving averages during training).
2. **Small batches.** The same MLP (BN or LN after each hidden linear layer) is trained with
   Adam on a synthetic 4-class task at several batch sizes for the same number of examples.
   For each: held-out accuracy in inference mode (BN: running statistics) and the train/eval
   mismatch (loss on the same training examples in inference mode minus in training mode).
   Ioffe 2017 (Batch Renormalization) and Wu & He 2018 (Group Normalization, Fig. 1): BN's error
   rises sharply for batches of 2-4 because batch statistics are noisy and differ from the
   running averages used at inference; layer norm has no batch dependence (Ba et al. 2016), so
   one sample's output does not depend on its batch mates (checked exactly here).
3. **Gradients against depth and weight scale.** A deep ReLU stack ``h_l = relu(N(h_{l-1} W_l))``
   with ``N`` = identity (plain), BN or LN, weights ``g x`` He normal for several ``g``:
   ``||dL/dh_l||`` per layer. Ioffe & Szegedy 2015 (sec. 3.3): with BN, back-propagation through
   a layer is unaffected by the scale of its weights, ``d BN((aW)u)/du = d BN(Wu)/du``; a plain
   network's gradient scales like ``g^depth``. (Yang et al. 2019, "A mean field theory of batch
   normalization", predict that BN itself makes gradients grow with depth at init; the measured
   per-layer growth is reported.)
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
from chainrule.normalization import batch_norm, batch_norm_init, layer_norm, layer_norm_init

DESCRIPTION = (
    "Batch norm: running statistics, small-batch train/eval mismatch, layer norm's batch "
    "independence, and gradient norms by depth and weight scale (Ioffe & Szegedy 2015)"
)

Norm = Literal["bn", "ln"]


class Params(BaseModel):
    model_config = ConfigDict(extra="forbid")

    # 1. running statistics
    features: int = Field(8, ge=1, description="features of the running-statistics check")
    stat_steps: int = Field(500, ge=1, description="training-mode batches fed to batch_norm")
    stat_batch: int = Field(32, ge=2, description="their batch size")
    momentum: float = Field(0.99, ge=0, le=1, description="batch_norm momentum (old weight)")
    # 2. small batches
    batch_sizes: list[int] = Field(default_factory=lambda: [2, 4, 64], min_length=2)
    norms: list[Norm] = Field(default_factory=lambda: ["bn", "ln"], min_length=1)
    examples: int = Field(32768, ge=64, description="training examples seen per run")
    in_dim: int = Field(16, ge=1)
    width: int = Field(64, ge=1)
    hidden_layers: int = Field(2, ge=1)
    classes: int = Field(4, ge=2)
    lr: float = Field(1e-3, gt=0, description="Adam learning rate")
    train_momentum: float = Field(0.9, ge=0, le=1, description="BN momentum while training")
    eval_size: int = Field(2048, ge=1, description="held-out examples")
    # 3. gradients by depth
    depth: int = Field(30, ge=2, description="layers of the deep stack")
    depth_width: int = Field(64, ge=1)
    depth_batch: int = Field(64, ge=2)
    gains: list[float] = Field(default_factory=lambda: [0.5, 1.0, 2.0], min_length=2)


# ----------------------------------------------------------------------------------------------
# 1. Running statistics converge
# ----------------------------------------------------------------------------------------------


def running_stats(key: jax.Array, p: Params) -> dict:
    km, ks, kd = jax.random.split(key, 3)
    mu = jax.random.uniform(km, (p.features,), minval=-3.0, maxval=3.0)
    sd = jax.random.uniform(ks, (p.features,), minval=0.5, maxval=3.0)
    _, state = batch_norm_init(p.features)

    def step(state, k):
        x = mu + sd * jax.random.normal(k, (p.stat_batch, p.features))
        _, state = batch_norm(x, None, state, training=True, momentum=p.momentum)
        mean_err = jnp.mean(jnp.abs(state["mean"] - mu) / sd)
        var_err = jnp.mean(jnp.abs(state["var"] / sd**2 - 1.0))
        return state, (mean_err, var_err)

    _, (mean_err, var_err) = jax.lax.scan(step, state, jax.random.split(kd, p.stat_steps))
    # The EMA forgets at rate momentum^t; its residual noise is ~ sqrt((1-m)/(1+m) / batch).
    noise = math.sqrt((1 - p.momentum) / (1 + p.momentum) / p.stat_batch)
    return {
        "mean_err": np.asarray(mean_err).tolist(),
        "var_err": np.asarray(var_err).tolist(),
        "ema_noise_floor": noise,
    }


# ----------------------------------------------------------------------------------------------
# 2. Small batches: an MLP with BN or LN
# ----------------------------------------------------------------------------------------------


def _task(key: jax.Array, n: int, teacher: jax.Array) -> tuple[jax.Array, jax.Array]:
    x = jax.random.normal(key, (n, teacher.shape[0]))
    return x, jnp.argmax(x @ teacher, axis=-1)


def _init_net(key: jax.Array, p: Params) -> tuple[dict, dict]:
    sizes = [p.in_dim] + [p.width] * p.hidden_layers + [p.classes]
    layers = cr.nets.mlp_init(key, sizes, init=cr.init.he_normal())
    norm_params, norm_state = [], []
    for _ in range(p.hidden_layers):
        bp, bs = batch_norm_init(p.width)
        norm_params.append(bp)
        norm_state.append(bs)
    return {"layers": layers, "norm": norm_params}, {"bn": norm_state}


def _forward(params, state, x, norm: str, training: bool, momentum: float):
    """The MLP: linear -> norm -> relu per hidden layer, then a linear read-out."""
    new_state = []
    h = x
    for i, layer in enumerate(params["layers"][:-1]):
        z = h @ layer["w"] + layer["b"]
        if norm == "bn":
            z, s = batch_norm(
                z, params["norm"][i], state["bn"][i], training=training, momentum=momentum
            )
            new_state.append(s)
        else:
            z = layer_norm(z, params["norm"][i])
        h = jax.nn.relu(z)
    out = params["layers"][-1]
    logits = h @ out["w"] + out["b"]
    return logits, ({"bn": new_state} if norm == "bn" else state)


def _xent(logits, y):
    return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, y))


def train_small_batch(key, p: Params, norm: str, batch: int) -> dict:
    k_init, k_teacher, k_data, k_eval = jax.random.split(key, 4)
    teacher = jax.random.normal(k_teacher, (p.in_dim, p.classes))
    params, state = _init_net(k_init, p)
    opt = optax.adam(p.lr)
    opt_state = opt.init(params)
    steps = max(1, p.examples // batch)

    def loss_fn(params, state, x, y):
        logits, new_state = _forward(params, state, x, norm, True, p.train_momentum)
        return _xent(logits, y), new_state

    def step(carry, k):
        params, state, opt_state = carry
        x, y = _task(k, batch, teacher)
        (loss, state), g = jax.value_and_grad(loss_fn, has_aux=True)(params, state, x, y)
        updates, opt_state = opt.update(g, opt_state, params)
        return (optax.apply_updates(params, updates), state, opt_state), loss

    @jax.jit
    def train(params, state, opt_state):
        return jax.lax.scan(step, (params, state, opt_state), jax.random.split(k_data, steps))

    (params, state, _), losses = train(params, state, opt_state)

    x_ev, y_ev = _task(k_eval, p.eval_size, teacher)
    logits_eval, _ = _forward(params, state, x_ev, norm, False, p.train_momentum)
    acc = float(jnp.mean(jnp.argmax(logits_eval, -1) == y_ev))
    # Train/eval mismatch on training-like data: the same examples in training-size batches
    # (training mode, batch statistics) against inference mode (running statistics).
    n_b = max(1, min(p.eval_size, 1024) // batch)
    xb = x_ev[: n_b * batch].reshape(n_b, batch, -1)
    yb = y_ev[: n_b * batch].reshape(n_b, batch)
    train_mode = jax.vmap(
        lambda x, y: _xent(_forward(params, state, x, norm, True, p.train_momentum)[0], y)
    )(xb, yb)
    eval_mode = _xent(
        _forward(params, state, xb.reshape(n_b * batch, -1), norm, False, p.train_momentum)[0],
        yb.reshape(-1),
    )
    tail = max(1, steps // 10)
    return {
        "norm": norm,
        "batch": batch,
        "steps": steps,
        "final_train_loss": float(jnp.mean(losses[-tail:])),
        "loss_train_mode": float(jnp.mean(train_mode)),
        "loss_eval_mode": float(eval_mode),
        "train_eval_gap": float(eval_mode - jnp.mean(train_mode)),
        "eval_accuracy": acc,
    }


def batch_independence(key, p: Params) -> dict:
    """Max change of one sample's output when computed alone vs inside a batch."""
    x = jax.random.normal(key, (64, p.width))
    params_bn, state = batch_norm_init(p.width)
    ln_params = layer_norm_init(p.width)
    ln_alone = layer_norm(x[:2], ln_params)
    ln_batch = layer_norm(x, ln_params)[:2]
    bn_alone, _ = batch_norm(x[:2], params_bn, state, training=True)
    bn_batch, _ = batch_norm(x, params_bn, state, training=True)
    bn_batch = bn_batch[:2]
    return {
        "ln_max_diff": float(jnp.max(jnp.abs(ln_alone - ln_batch))),
        "bn_train_max_diff": float(jnp.max(jnp.abs(bn_alone - bn_batch))),
    }


# ----------------------------------------------------------------------------------------------
# 3. Gradients by depth and weight scale
# ----------------------------------------------------------------------------------------------


def _deep_loss(perturb, ws, x, r, norm: str):
    h = x
    for i in range(ws.shape[0]):
        z = h @ ws[i]
        if norm == "bn":
            z, _ = batch_norm(z, None, batch_norm_init(z.shape[-1])[1], training=True)
        elif norm == "ln":
            z = layer_norm(z)
        h = jax.nn.relu(z) + perturb[i]
    return jnp.mean(h @ r)


def depth_grads(key, p: Params) -> list[dict]:
    """``||dL/dh_l||`` for each layer: the gradient w.r.t. a zero perturbation of ``h_l``."""
    kw, kx, kr = jax.random.split(key, 3)
    base = jax.vmap(lambda k: cr.init.he_normal()(k, (p.depth_width, p.depth_width)))(
        jax.random.split(kw, p.depth)
    )
    x = jax.random.normal(kx, (p.depth_batch, p.depth_width))
    r = jax.random.normal(kr, (p.depth_width,))
    perturb = jnp.zeros((p.depth, p.depth_batch, p.depth_width))
    rows = []
    for norm in ("plain", "bn", "ln"):
        g_fn = jax.jit(jax.grad(_deep_loss), static_argnums=4)
        for gain in p.gains:
            g = g_fn(perturb, gain * base, x, r, norm)
            norms = np.asarray(jnp.sqrt(jnp.sum(g * g, axis=(1, 2))), np.float64)
            rows.append({"norm": norm, "gain": gain, "grad_norms": norms.tolist()})
    return rows


def _spread(values) -> float:
    v = np.asarray(values, np.float64)
    return float(v.max() / v.min()) if v.min() > 0 else float("inf")


def run(params: Params, ctx) -> dict:
    p = params
    stats = running_stats(ctx.fold("running"), p)
    grid = [(n, b) for n in p.norms for b in p.batch_sizes]
    small = [
        train_small_batch(ctx.fold("small_batch"), p, n, b)
        for n, b in ctx.progress(grid, total=len(grid), desc="norm x batch")
    ]
    indep = batch_independence(ctx.fold("indep"), p)
    deep = depth_grads(ctx.fold("depth"), p)

    s: dict = {
        "running_mean_err_final": stats["mean_err"][-1],
        "running_var_err_final": stats["var_err"][-1],
        "running_mean_err_step1": stats["mean_err"][0],
        "ema_noise_floor": stats["ema_noise_floor"],
        **indep,
    }
    bmin, bmax = min(p.batch_sizes), max(p.batch_sizes)
    by = {(r["norm"], r["batch"]): r for r in small}
    for n in p.norms:
        s[f"{n}_acc_b{bmin}"] = by[(n, bmin)]["eval_accuracy"]
        s[f"{n}_acc_b{bmax}"] = by[(n, bmax)]["eval_accuracy"]
        s[f"{n}_gap_b{bmin}"] = by[(n, bmin)]["train_eval_gap"]
        s[f"{n}_gap_b{bmax}"] = by[(n, bmax)]["train_eval_gap"]
    # Weight-scale invariance: how much the first layer's gradient changes across the gains.
    for norm in ("plain", "bn", "ln"):
        first = [r["grad_norms"][0] for r in deep if r["norm"] == norm]
        s[f"{norm}_first_grad_spread_over_gains"] = _spread(first)
        g1 = (
            next(r for r in deep if r["norm"] == norm and r["gain"] == 1.0)
            if 1.0 in p.gains
            else None
        )
        if g1 is not None:
            gn = g1["grad_norms"]
            s[f"{norm}_growth_per_layer_gain1"] = (gn[0] / gn[-1]) ** (1 / (p.depth - 1))

    stats_ok = (
        s["running_mean_err_final"] < min(0.1, 0.2 * s["running_mean_err_step1"])
        and s["running_var_err_final"] < 0.1
    )
    small_ok = True
    if "bn" in p.norms:
        # The train/eval mismatch in either direction: with 2 samples BN's training-mode output
        # is nearly binary (each feature is +-1), so inference mode is a different network.
        small_ok = abs(s[f"bn_gap_b{bmin}"]) > 2 * abs(s[f"bn_gap_b{bmax}"])
        if "ln" in p.norms:
            # BN's accuracy deficit against LN trained identically: larger at the small batch.
            for b in (bmin, bmax):
                s[f"bn_deficit_vs_ln_b{b}"] = s[f"ln_acc_b{b}"] - s[f"bn_acc_b{b}"]
            small_ok = small_ok and (
                s[f"bn_deficit_vs_ln_b{bmin}"] > s[f"bn_deficit_vs_ln_b{bmax}"] + 0.05
            )
    ln_ok = s["ln_max_diff"] < 1e-5 < s["bn_train_max_diff"]
    scale_ok = (
        s["plain_first_grad_spread_over_gains"] > 100
        and s["bn_first_grad_spread_over_gains"] < 1.1
        and s["ln_first_grad_spread_over_gains"] < 1.1
    )
    s["agrees_running_stats"] = bool(stats_ok)
    s["agrees_small_batch"] = bool(small_ok)
    s["agrees_ln_independent"] = bool(ln_ok)
    s["agrees_scale_invariance"] = bool(scale_ok)
    s["agrees"] = bool(stats_ok and small_ok and ln_ok and scale_ok)
    return {
        "tables": {"small_batch": small},
        "summary": s,
        "running_stats": stats,
        "depth_grads": deep,
    }


def plot(results: dict, params: Params) -> dict:
    # Figures built directly: no pyplot, so no global backend switch and no figure registry.
    from matplotlib.figure import Figure

    figs = {}
    st = results["running_stats"]
    fig = Figure(figsize=(6, 3.5))
    ax = fig.subplots()
    ax.plot(st["mean_err"], label="|running mean - mu| / sigma")
    ax.plot(st["var_err"], label="|running var / sigma^2 - 1|")
    ax.axhline(st["ema_noise_floor"], color="gray", ls=":", label="EMA noise level")
    ax.set_yscale("log")
    ax.set_xlabel("training-mode batches")
    ax.set_title(f"running statistics (momentum {params.momentum})")
    ax.legend(fontsize=8)
    fig.tight_layout()
    figs["running_stats"] = fig

    small = results["tables"]["small_batch"]
    fig = Figure(figsize=(11, 4))
    axes = fig.subplots(1, 2)
    for norm in params.norms:
        rr = [r for r in small if r["norm"] == norm]
        axes[0].plot([r["batch"] for r in rr], [r["eval_accuracy"] for r in rr], "o-", label=norm)
        axes[1].plot([r["batch"] for r in rr], [r["train_eval_gap"] for r in rr], "o-", label=norm)
    for ax, yl in zip(
        axes,
        ("held-out accuracy (inference mode)", "eval-mode loss - train-mode loss"),
        strict=True,
    ):
        ax.set_xscale("log", base=2)
        ax.set_xlabel("batch size")
        ax.set_ylabel(yl)
        ax.legend()
    fig.tight_layout()
    figs["small_batch"] = fig

    fig = Figure(figsize=(6.5, 4))
    ax = fig.subplots()
    colors = {"plain": "C3", "bn": "C0", "ln": "C2"}
    styles = ["--", "-", ":", "-."]
    for r in results["depth_grads"]:
        i = params.gains.index(r["gain"]) % len(styles)
        ax.plot(
            np.arange(1, len(r["grad_norms"]) + 1),
            r["grad_norms"],
            styles[i],
            color=colors[r["norm"]],
            label=f"{r['norm']}, gain {r['gain']}",
        )
    ax.set_yscale("log")
    ax.set_xlabel("layer l")
    ax.set_ylabel("||dL/dh_l||")
    ax.set_title(f"ReLU depth {params.depth}: gradient by layer and weight scale")
    ax.legend(fontsize=7, ncol=3)
    fig.tight_layout()
    figs["depth_grads"] = fig
    return figs


def report(results: dict, params: Params) -> str:
    s = results["summary"]
    bmin, bmax = min(params.batch_sizes), max(params.batch_sizes)

    def yes(flag):
        return "agrees" if flag else "does NOT agree"

    lines = [
        "**Published claims.** Ioffe & Szegedy 2015 (*Batch Normalization*): at inference the "
        "batch statistics are replaced by population statistics estimated with moving averages "
        "(sec. 3.1), and back-propagation through a BN layer is unaffected by the scale of its "
        "weights (sec. 3.3). Ioffe 2017 (*Batch Renormalization*) and Wu & He 2018 (*Group "
        "Normalization*, Fig. 1): with small batches (2-4) BN's batch statistics are noisy and "
        "differ from the running ones, so accuracy drops. Ba et al. 2016 (*Layer "
        "Normalization*): LN's statistics are per sample, so nothing depends on the batch.",
        "",
        "**Measured (this run).**",
        f"- Running statistics after {params.stat_steps} batches of {params.stat_batch} "
        f"(momentum {params.momentum}): mean error {s['running_mean_err_final']:.3g} sigma "
        f"(first step {s['running_mean_err_step1']:.3g}), variance error "
        f"{s['running_var_err_final']:.3g} (EMA noise level ~{s['ema_noise_floor']:.3g}): "
        f"{yes(s['agrees_running_stats'])}.",
    ]
    if "bn" in params.norms:
        lines.append(
            f"- BN held-out accuracy: batch {bmin}: {s[f'bn_acc_b{bmin}']:.3f}, batch {bmax}: "
            f"{s[f'bn_acc_b{bmax}']:.3f}; train/eval loss gap {s[f'bn_gap_b{bmin}']:.3g} vs "
            f"{s[f'bn_gap_b{bmax}']:.3g} ({params.examples} examples each)."
        )
    if f"bn_deficit_vs_ln_b{bmin}" in s:
        lines.append(
            f"- BN's accuracy deficit against LN (same net, data and steps): batch {bmin}: "
            f"{s[f'bn_deficit_vs_ln_b{bmin}']:.3f}, batch {bmax}: "
            f"{s[f'bn_deficit_vs_ln_b{bmax}']:.3f}. Small batches hurt BN (larger mismatch and "
            f"deficit): {yes(s['agrees_small_batch'])}."
        )
    if "ln" in params.norms:
        lines.append(
            f"- LN held-out accuracy: batch {bmin}: {s[f'ln_acc_b{bmin}']:.3f}, batch {bmax}: "
            f"{s[f'ln_acc_b{bmax}']:.3f}; train/eval gap {s[f'ln_gap_b{bmin}']:.2g} (LN has "
            "no mode)."
        )
    lines += [
        f"- One sample alone vs in a batch of 64: LN output changes by {s['ln_max_diff']:.2g}, "
        f"BN (training mode) by {s['bn_train_max_diff']:.3g}: {yes(s['agrees_ln_independent'])}.",
        f"- Depth {params.depth}, weight gains {params.gains}: the first layer's gradient varies "
        f"by a factor {s['plain_first_grad_spread_over_gains']:.3g} across gains in the plain "
        f"net, {s['bn_first_grad_spread_over_gains']:.4g} with BN and "
        f"{s['ln_first_grad_spread_over_gains']:.4g} with LN: "
        f"{yes(s['agrees_scale_invariance'])}.",
    ]
    if "bn_growth_per_layer_gain1" in s:
        lines.append(
            f"- Per-layer gradient growth towards the input at gain 1 (He init): plain "
            f"{s['plain_growth_per_layer_gain1']:.3f}, BN {s['bn_growth_per_layer_gain1']:.3f}, "
            f"LN {s['ln_growth_per_layer_gain1']:.3f} (Yang et al. 2019 predict > 1 for BN)."
        )
    lines += ["", f"**Verdict:** overall the run {yes(s['agrees'])} with the claims."]
    return "\n".join(lines) + "\n"
