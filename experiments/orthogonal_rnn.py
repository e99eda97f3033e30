"""orthogonal_rnn: backpropagation through time with Gaussian, orthogonal and identity weights.

Part 1 (Jacobians). For an Elman RNN ``h_t = act(x_t U + h_{t-1} W + b)`` (``chainrule.nets``)
the Jacobian ``dh_T/dh_0 = prod_t W D_t`` (``D_t = diag(act'(.))``, ``I`` when linear) is what
backpropagation through time multiplies the gradient by. The experiment computes it for every
``T`` at once with one forward-mode ``cr.jacobian`` of the whole hidden trajectory (``hidden``
passes of the scan), then the singular values at each ``T`` in ``horizons``: the largest, the
median and the smallest. Recurrent weights: Gaussian ``N(0, 1/n)`` (spectral radius ~1, the
"properly scaled" random matrix), Haar orthogonal and the identity.

Part 2 (learning). The adding problem (Hochreiter & Schmidhuber 1997; Le, Jaitly & Hinton
2015; Arjovsky, Shah & Bengio 2016): each step carries a value ``v_t ~ U[0, 1]`` and a marker;
exactly two steps are marked (one in each half of the sequence) and the target, read out
linearly from ``h_T`` after ``task_steps`` steps, is the sum of the two marked values. Always
predicting the mean (1) gives MSE ``Var[v_a + v_b] = 1/6``, the trivial baseline; the losses are
reported relative to it. Each (activation, recurrent init) pair trains ``task_seeds`` times with
Adam and global-norm gradient clipping (optax) on the same data stream; the runs of one
activation share one compiled program (``jax.vmap`` over runs of a ``jax.lax.scan`` over the
training steps). Gaussian recurrent weights are ``N(0, g^2/n)`` for each gain ``g`` in
``task_gaussian_gains`` (``g = 1``: spectral radius ~1; ``g > 1``: the autonomous tanh network
is chaotic, Sompolinsky, Crisanti & Sommers 1988). An earlier version of this part (remember the
sign of the first input for 40 steps of unit noise, tanh, SGD with momentum, 400 steps) did not
separate the inits: 0/3, 0/3 and 1/3 runs solved for Gaussian, orthogonal and identity.

Saxe, McClelland & Ganguli (2014) show that orthogonal weights make a deep *linear* network's
input-output map an exact isometry at any depth (all singular values 1), while scaled Gaussian
weights do not: products of Gaussian matrices have singular values that spread exponentially
with depth. Unrolled in time an RNN is such a deep network with tied weights; orthogonal (or
identity, Le, Jaitly & Hinton 2015) recurrent weights are the standard remedy for vanishing and
exploding gradients through time.
"""

from __future__ import annotations

import math
from typing import Literal, get_args

import jax
import jax.numpy as jnp
import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

import chainrule as cr
from chainrule import nets

from ._common import Check, claims_section, overall, within

DESCRIPTION = (
    "Saxe et al. 2014: ||dh_T/dh_0|| spectra vs T for Gaussian, orthogonal and identity "
    "recurrent weights (linear and tanh), and the adding problem trained from each init"
)

X64 = True  # the Jacobian spectra are computed in float64 (see jacobian_singular_values)

Init = Literal["gaussian", "orthogonal", "identity"]
ALL_INITS: list[str] = list(get_args(Init))
LABELS = {"gaussian": "Gaussian N(0, 1/n)", "orthogonal": "orthogonal", "identity": "identity"}


class Params(BaseModel):
    model_config = ConfigDict(extra="forbid")

    hidden: int = Field(64, ge=2, le=2048, description="hidden units n")
    inits: list[Init] = Field(default_factory=lambda: list(ALL_INITS), min_length=1)
    activations: list[Literal["linear", "tanh"]] = Field(
        default_factory=lambda: ["linear", "tanh"], min_length=1
    )
    max_t: int = Field(200, ge=1, description="longest horizon T of the Jacobian part")
    horizons: list[int] = Field(
        default_factory=lambda: [1, 2, 5, 10, 20, 50, 100, 200],
        min_length=1,
        description="T values reported in the table (<= max_t)",
    )
    input_scale: float = Field(
        0.1, ge=0, description="std of x_t U per unit (drives tanh away from 0)"
    )
    h0_scale: float = Field(0.1, ge=0, description="std of h_0 per unit")
    n_nets: int = Field(2, ge=1, description="networks per (init, activation); log-mean")
    # learning task (the adding problem)
    task: bool = Field(True, description="run part 2 (learning)")
    task_activations: list[Literal["tanh", "relu"]] = Field(
        default_factory=lambda: ["tanh"], min_length=1, description="RNN activations trained"
    )
    task_inits: list[Init] = Field(default_factory=lambda: list(ALL_INITS), min_length=1)
    task_gaussian_gains: list[float] = Field(
        default_factory=lambda: [1.0, 2.0],
        min_length=1,
        description="g of the Gaussian recurrent init N(0, g^2/n); one run set per g",
    )
    task_hidden: int = Field(32, ge=2)
    task_steps: int = Field(50, ge=2, description="sequence length T of the adding problem")
    train_steps: int = Field(2000, ge=1)
    batch: int = Field(32, ge=1)
    lr: float = Field(3e-3, gt=0, description="Adam learning rate")
    clip: float = Field(1.0, gt=0, description="global gradient-norm clip (optax)")
    task_seeds: int = Field(3, ge=1, description="independent training runs per init")
    solved_ratio: float = Field(
        0.1, gt=0, lt=1, description="solved: final MSE < solved_ratio * baseline (1/6)"
    )
    learned_ratio: float = Field(
        0.5, gt=0, lt=1, description="learned: final MSE < learned_ratio * baseline (1/6)"
    )
    # deep linear networks (Saxe et al.'s headline: learning time against depth)
    linear: bool = Field(True, description="run part 3 (deep linear networks)")
    linear_depths: list[int] = Field(
        default_factory=lambda: [2, 5, 10, 20, 50, 100],
        min_length=2,
        description="depths D of the deep linear networks (each in 2..400)",
    )
    linear_width: int = Field(16, ge=2, le=256, description="input and hidden width n")
    linear_lr_scales: list[float] = Field(
        default_factory=lambda: [0.4, 0.8, 1.6, 3.2, 6.4],
        min_length=1,
        description="learning rates c / D tried per depth; the fastest is reported",
    )
    linear_seeds: int = Field(3, ge=1, description="networks (and teachers) per depth and init")
    linear_max_steps: int = Field(500, ge=10, description="gradient steps before giving up")
    linear_criterion: float = Field(
        0.01, gt=0, lt=1, description="learned: loss <= criterion x the zero map's loss"
    )

    @model_validator(mode="after")
    def _check(self) -> Params:
        bad = [t for t in self.horizons if not 1 <= t <= self.max_t]
        if bad:
            raise ValueError(
                f"horizons {bad} are outside 1..max_t = 1..{self.max_t}; raise max_t to "
                f"{max(bad)} or drop them"
            )
        bad = [d for d in self.linear_depths if not 2 <= d <= 400]
        if bad:
            raise ValueError(f"linear_depths {bad} must each be in 2..400")
        bad = [c for c in self.linear_lr_scales if not (c > 0 and math.isfinite(c))]
        if bad:
            raise ValueError(f"linear_lr_scales {bad} must be finite and > 0")
        bad = [g for g in self.task_gaussian_gains if not (g > 0 and math.isfinite(g))]
        if bad:
            raise ValueError(
                f"task_gaussian_gains {bad} must be finite and > 0 (std = g / sqrt(n)); "
                "drop them or use e.g. [1.0, 2.0]"
            )
        return self


def _init(name: str, n: int, gain: float = 1.0):
    if name == "gaussian":
        return cr.init.normal(gain / math.sqrt(n))
    if name == "orthogonal":
        return cr.init.orthogonal()
    return cr.init.identity()


# ----------------------------------------------------------------------------- part 1


def _trajectory(h0, params, xs, activation):
    return nets.rnn_apply(params, xs, h0, activation)


#: Relative resolution of a float64 SVD: singular values below ``s_max * EPS64`` are round-off.
EPS64 = float(np.finfo(np.float64).eps)


def jacobian_singular_values(key, init: str, activation: str, p: Params) -> np.ndarray:
    """``(max_t, n)`` singular values (descending) of ``dh_T/dh_0`` for ``T = 1..max_t``.

    Computed in float64, weights included (an orthogonal matrix drawn in float32 is
    orthogonal only to ~1e-7, which T products turn into ~T * 1e-7): in float32 a Gaussian
    product's small singular values sink into round-off (``s_max * 1.2e-7``) within ~50 steps.
    Values below ``s_max * EPS64`` are still round-off and are returned as NaN (hidden).
    """
    n = p.hidden
    k1, k2, k3 = jax.random.split(key, 3)
    params = nets.rnn_init(
        k1,
        n,
        n,
        w_hh_init=_init(init, n),
        w_xh_init=cr.init.normal(p.input_scale / math.sqrt(n)),
        dtype=jnp.float64,
    )
    xs = jax.random.normal(k2, (p.max_t, n), jnp.float64)
    h0 = p.h0_scale * jax.random.normal(k3, (n,), jnp.float64)
    # One forward-mode Jacobian of the whole trajectory: n passes give dh_T/dh_0 for every T.
    jac = cr.jacobian(_trajectory, mode="fwd")(h0, params, xs, activation)  # (T, n, n)
    # LAPACK's SVD (numpy): XLA's CPU SVD is ~25x slower at this size on a loaded machine.
    s = np.linalg.svd(np.asarray(jac, np.float64), compute_uv=False)
    return hide_roundoff(s)


def hide_roundoff(s: np.ndarray, eps: float = EPS64) -> np.ndarray:
    """``s`` (rows of descending singular values) with values below ``s_max * eps`` as NaN.

    >>> hide_roundoff(np.array([[2.0, 1e-3, 1e-17]])).tolist()
    [[2.0, 0.001, nan]]
    """
    s = np.array(s, np.float64)
    s[s < s[..., :1] * eps] = np.nan
    return s


def _safe_log(x: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.log(np.where(np.isnan(x), np.nan, np.maximum(x, 1e-300)))


def _median_resolved(s: np.ndarray) -> np.ndarray:
    """Median of each row; NaN where the median itself is below round-off (hidden)."""
    k = s.shape[1]
    srt = -np.sort(-np.nan_to_num(s, nan=-np.inf), axis=1)  # descending, hidden values last
    med = 0.5 * (srt[:, (k - 1) // 2] + srt[:, k // 2])
    return np.where(np.isfinite(med), med, np.nan)


def _min_resolved(s: np.ndarray) -> np.ndarray:
    """Smallest resolved singular value of each row (all rows keep at least s_max)."""
    return np.nanmin(s, axis=1)


# ----------------------------------------------------------------------------- part 2

#: MSE of always predicting the mean sum 1: Var[v_a + v_b] = 2 / 12 for v ~ U[0, 1].
ADDING_BASELINE = 1.0 / 6.0


def adding_batch(key, steps: int, batch: int):
    """One batch of the adding problem: inputs ``(steps, batch, 2)`` and targets ``(batch,)``.

    Channel 0 holds ``v_t ~ U[0, 1]``, channel 1 the marker: one marked step uniform in the
    first half, one in the second half; the target is the sum of the two marked values.
    """
    kv, ka, kb = jax.random.split(key, 3)
    values = jax.random.uniform(kv, (steps, batch), jnp.float32)
    first = jax.random.randint(ka, (batch,), 0, steps // 2)
    second = jax.random.randint(kb, (batch,), steps // 2, steps)
    t = jnp.arange(steps)[:, None]
    marks = ((t == first) | (t == second)).astype(jnp.float32)
    return jnp.stack([values, marks], axis=-1), jnp.sum(values * marks, axis=0)


def _task_loss(params, xs, target, activation: str):
    h = nets.rnn_apply(params["rnn"], xs, None, activation)[-1]
    return jnp.mean((h @ params["out"] + params["c"] - target) ** 2)


def task_arms(p: Params) -> list[dict]:
    """The (activation, recurrent init) pairs trained: one per Gaussian gain for 'gaussian'."""
    arms = []
    for act in p.task_activations:
        for init in p.task_inits:
            gains = p.task_gaussian_gains if init == "gaussian" else [1.0]
            for g in gains:
                label = f"Gaussian g={g:g}" if init == "gaussian" else init
                arms.append(
                    {
                        "name": f"{act}.{label.replace(' ', '_')}",
                        "activation": act,
                        "init": init,
                        "gain": g,
                        "label": f"{act}, {label}",
                    }
                )
    return arms


def train_task(key, p: Params) -> dict:
    """MSE curves of every arm, ``task_seeds`` runs each; one compiled program per activation.

    Run ``s`` of every arm uses the same input/output weights and the same batches (keys
    folded from ``key`` and ``s``), so arms differ only in the recurrent weights.
    """
    import optax

    opt = optax.chain(optax.clip_by_global_norm(p.clip), optax.adam(p.lr))
    n = p.task_hidden
    arms = task_arms(p)
    out: dict = {a["name"]: [] for a in arms}
    for act in p.task_activations:
        group = [a for a in arms if a["activation"] == act]

        def one(params, data_key, act=act):
            def step(carry, k):
                params, state = carry
                xs, target = adding_batch(k, p.task_steps, p.batch)
                loss, g = jax.value_and_grad(_task_loss)(params, xs, target, act)
                upd, state = opt.update(g, state, params)
                return (optax.apply_updates(params, upd), state), loss

            keys = jax.random.split(data_key, p.train_steps)
            return jax.lax.scan(step, (params, opt.init(params)), keys)[1]

        stacked, data_keys = [], []
        for s in range(p.task_seeds):
            k_rnn, k_out, k_data = jax.random.split(jax.random.fold_in(key, s), 3)
            for a in group:
                rnn = nets.rnn_init(k_rnn, 2, n, w_hh_init=_init(a["init"], n, a["gain"]))
                w_out = cr.init.normal(1.0 / math.sqrt(n))(k_out, (n,), jnp.float32)
                stacked.append({"rnn": rnn, "out": w_out, "c": jnp.zeros((), jnp.float32)})
                data_keys.append(k_data)
        batch = jax.tree.map(lambda *x: jnp.stack(x), *stacked)
        losses = np.asarray(jax.jit(jax.vmap(one))(batch, jnp.stack(data_keys)), np.float64)
        for i, a in enumerate(group * p.task_seeds):
            curve = np.where(np.isfinite(losses[i]), losses[i], np.nan)
            out[a["name"]].append([None if np.isnan(v) else float(v) for v in curve])
    return out


def _nan_none(x):
    """NaN (a value hidden as round-off) -> None in stored results; arrays elementwise."""
    if np.ndim(x):
        return [None if np.isnan(v) else float(v) for v in np.asarray(x, float)]
    return None if np.isnan(x) else float(x)


def _final(curve: list, tail: int) -> float:
    """Mean of the last ``tail`` losses; inf when the run diverged (a NaN/inf loss)."""
    y = np.array([np.inf if v is None else v for v in curve[-tail:]], float)
    return float(np.mean(y)) if np.all(np.isfinite(y)) else math.inf


# ----------------------------------------------------------------------------- part 3


def _product(ws: jax.Array) -> jax.Array:
    """``W_D ... W_1`` of layers stacked on axis 0."""
    return jax.lax.scan(lambda acc, w: (w @ acc, None), jnp.eye(ws.shape[-1], dtype=ws.dtype), ws)[
        0
    ]


def _linear_loss(ws: jax.Array, teacher: jax.Array) -> jax.Array:
    """Saxe et al.'s loss with whitened inputs: ``|A - (W_D...W_1)[:m]|_F^2 / (2 m)``."""
    d = _product(ws)[: teacher.shape[0]] - teacher
    return 0.5 * jnp.sum(d * d) / teacher.shape[0]


def deep_linear_teacher(key, n: int) -> jax.Array:
    """An ``(n/2, n)`` map with singular values spread over [0.5, 3] and random rotations.

    Fewer outputs than inputs: the product of square orthogonal matrices cannot change the
    sign of its determinant without passing a singular matrix, so a square teacher makes a
    random half of the orthogonal starts slow for a reason that has nothing to do with depth.
    """
    m = max(1, n // 2)
    ku, kv = jax.random.split(key)
    u = cr.init.orthogonal()(ku, (m, m), jnp.float32)
    v = cr.init.orthogonal()(kv, (n, m), jnp.float32)
    return u @ jnp.diag(jnp.linspace(0.5, 3.0, m, dtype=jnp.float32)) @ v.T


def deep_linear_init(key, init: str, depth: int, n: int) -> jax.Array:
    """``(depth, n, n)`` weights: Haar orthogonal, or scaled Gaussian ``N(0, 1/n)``."""
    ini = cr.init.orthogonal() if init == "orthogonal" else cr.init.normal(1.0 / math.sqrt(n))
    return jnp.stack([ini(k, (n, n), jnp.float32) for k in jax.random.split(key, depth)])


def deep_linear_times(key, init: str, depth: int, p: Params) -> np.ndarray:
    """``(seeds, len(lr_scales))`` steps until the loss is ``<= criterion`` x the zero map's.

    Full-batch gradient descent at ``lr = c / depth`` for each ``c`` (each layer moves the
    product, so the product's step grows with depth); -1: not reached within the budget (or
    diverged). All runs of one (init, depth) are one program (``vmap``); it stops as soon as
    every seed has one learning rate that reached the criterion -- the fastest time of each
    seed is then known.
    """
    n, cs, seeds = p.linear_width, p.linear_lr_scales, p.linear_seeds
    teachers, w0 = [], []
    for s in range(seeds):
        k_t, k_w = jax.random.split(jax.random.fold_in(key, s))
        teachers.append(deep_linear_teacher(k_t, n))
        w0.append(deep_linear_init(k_w, init, depth, n))
    runs = seeds * len(cs)
    teacher = jnp.repeat(jnp.stack(teachers), len(cs), axis=0)
    ws0 = jnp.repeat(jnp.stack(w0), len(cs), axis=0)
    lr = jnp.tile(jnp.asarray(cs, jnp.float32) / depth, seeds)
    crit = p.linear_criterion * jax.vmap(lambda a: 0.5 * jnp.sum(a * a) / a.shape[0])(teacher)
    value_and_grad = jax.vmap(jax.value_and_grad(_linear_loss))
    chunk = 10

    def steps(carry):
        def body(c, _):
            ws, t, i = c
            loss, g = value_and_grad(ws, teacher)
            t = jnp.where((t < 0) & jnp.isfinite(loss) & (loss <= crit), i, t)
            new = ws - lr[:, None, None, None] * g
            # a diverged run stops moving (its time stays -1) instead of spreading NaNs
            ok = jnp.all(jnp.isfinite(new), axis=(1, 2, 3))
            return (jnp.where(ok[:, None, None, None], new, ws), t, i + 1), None

        return jax.lax.scan(body, carry, None, length=chunk)[0]

    def running(carry):
        _, t, i = carry
        each_seed_done = jnp.all(jnp.any((t >= 0).reshape(seeds, -1), axis=1))
        return (i < p.linear_max_steps) & ~each_seed_done

    t0 = -jnp.ones(runs, jnp.int32)
    _, t, _ = jax.jit(lambda ws: jax.lax.while_loop(running, steps, (ws, t0, 0)))(ws0)
    return np.asarray(t).reshape(seeds, len(cs))


def deep_linear_part(key, p: Params, ctx) -> list[dict]:
    """One row per (init, depth): each seed's fastest learning time over the rates tried."""
    rows = []
    grid = [(i, d) for i in ("orthogonal", "gaussian") for d in p.linear_depths]
    for init, depth in ctx.progress(grid, total=len(grid), desc="deep linear nets"):
        # the same teachers (and the same key) for both inits at a depth
        t = deep_linear_times(jax.random.fold_in(key, depth), init, depth, p)
        best = [int(min(x for x in r if x >= 0)) if (r >= 0).any() else None for r in t]
        best_c = [
            float(p.linear_lr_scales[int(np.argmin(np.where(r >= 0, r, 1 << 30)))])
            if (r >= 0).any()
            else None
            for r in t
        ]
        done = [b for b in best if b is not None]
        rows.append(
            {
                "init": init,
                "depth": depth,
                "learning_time_median": (
                    float(np.median(done)) if len(done) == len(best) else None
                ),
                "learning_time_min": min(done) if done else None,
                "learning_time_max": max(done) if len(done) == len(best) else None,
                "learned": len(done),
                "runs": len(best),
                "times": best,
                "best_lr_scale": best_c,
            }
        )
    return rows


# ----------------------------------------------------------------------------- run


def run(params: Params, ctx) -> dict:
    p = params
    horizons = sorted(set(p.horizons))
    rows, curves = [], []
    grid = [(a, i) for a in p.activations for i in p.inits]
    for act, init in ctx.progress(grid, total=len(grid), desc="jacobians"):
        logs = []
        for k in jax.random.split(ctx.fold("jacobian"), p.n_nets):  # same draws for every init
            s = jacobian_singular_values(k, init, act, p)
            logs.append(
                np.stack(
                    [
                        _safe_log(s[:, 0]),
                        _safe_log(_median_resolved(s)),
                        _safe_log(_min_resolved(s)),
                        # the fraction of singular values hidden as round-off
                        np.mean(np.isnan(s), axis=1),
                    ]
                )
            )
        # log-mean over networks; a median hidden in any network stays hidden
        mx, med, mn = np.exp(np.mean(np.asarray(logs)[:, :3], axis=0))
        hidden = np.mean(np.asarray(logs)[:, 3], axis=0)
        curves.append(
            {
                "activation": act,
                "init": init,
                "s_max": _nan_none(mx),
                "s_median": _nan_none(med),
                "s_min_resolved": _nan_none(mn),
                "frac_hidden": hidden.tolist(),
            }
        )
        for t in horizons:
            rows.append(
                {
                    "activation": act,
                    "init": init,
                    "T": t,
                    "s_max": _nan_none(mx[t - 1]),
                    "s_median": _nan_none(med[t - 1]),
                    "s_min_resolved": _nan_none(mn[t - 1]),
                    "frac_below_roundoff": float(hidden[t - 1]),
                }
            )
    results: dict = {"tables": {"jacobian": rows}, "curves": curves}
    summary: dict = {}
    if p.task:
        ctx.log("training the adding problem")
        task = train_task(ctx.fold("task"), p)
        results["task"] = task
        tail = max(1, p.train_steps // 10)
        task_rows = []
        for arm in task_arms(p):
            final = [_final(c, tail) for c in task[arm["name"]]]
            ratio = [f / ADDING_BASELINE for f in final]
            row = {
                "activation": arm["activation"],
                "init": arm["init"],
                "gain": arm["gain"] if arm["init"] == "gaussian" else None,
                "final_mse_median": float(np.median(final)),
                "final_mse_min": float(np.min(final)),
                "final_mse_max": float(np.max(final)),
                "ratio_median": float(np.median(ratio)),
                "learned": int(sum(r < p.learned_ratio for r in ratio)),
                "solved": int(sum(r < p.solved_ratio for r in ratio)),
                # blown up: not finite, or 100x worse than predicting the mean
                "diverged": int(sum(not f < 100 * ADDING_BASELINE for f in final)),
                "runs": len(final),
            }
            task_rows.append(row)
            name = arm["name"]
            summary[f"task.{name}.ratio_median"] = row["ratio_median"]
            summary[f"task.{name}.learned_frac"] = row["learned"] / row["runs"]
            summary[f"task.{name}.solved_frac"] = row["solved"] / row["runs"]
        results["tables"]["task"] = task_rows
        for c in task_comparisons(task_rows):
            summary[c["key"]] = c["verdict"]
            summary[c["key"] + ".agrees"] = c["agrees"]
    if p.linear:
        ctx.log("training deep linear networks")
        results["tables"]["deep_linear"] = deep_linear_part(ctx.fold("deep_linear"), p, ctx)
    t_ref = max(horizons)
    for r in rows:
        if r["T"] == t_ref:
            summary[f"{r['activation']}.{r['init']}.s_max@T{t_ref}"] = r["s_max"]
            summary[f"{r['activation']}.{r['init']}.s_median@T{t_ref}"] = r["s_median"]
    checks = claim_checks(results["tables"], p)
    results["tables"]["claims"] = [c.row() for c in checks]
    for c in checks:
        summary[f"{c.name}.verdict"] = c.verdict
    summary["verdict"] = overall(c.passed for c in checks)
    results["summary"] = summary
    return results


def _at(rows, act, t):
    return {r["init"]: r for r in rows if r["activation"] == act and r["T"] == t}


#: Orthogonal/identity linear products are isometries to round-off: |s - 1| ~ T eps in float64.
ISOMETRY_TOL = 1e-9


def _g(v) -> str:
    return "below round-off" if v is None else f"{v:.3g}"


def claim_checks(tables: dict, p: Params) -> list[Check]:
    """Every claim on its own quantity (see the report's criteria), at the longest horizon.

    Spectra: the linear orthogonal (and identity) product is an isometry (every singular value
    within ``ISOMETRY_TOL`` of 1, two-sided); the linear Gaussian product's singular values
    spread (``s_max / s_median >= 100``; a median below round-off is a spread of at least
    ``1/eps``); with tanh, the orthogonal start's largest singular value exceeds the Gaussian
    start's 100-fold and still decays (``< 1``) -- compared on ``s_max``, which is always above
    round-off. Deep linear networks: the orthogonal learning time is depth-independent (the
    deepest over the shallowest median within a factor 4, every run learned), the Gaussian one
    grows (at least 10x, or not learned within the budget). The adding problem: "yes" of
    ``task_comparisons`` for each structured-vs-Gaussian pair.
    """
    rows = tables["jacobian"]
    t = max(r["T"] for r in rows)
    out: list[Check] = []
    lin = _at(rows, "linear", t)
    for init in ("orthogonal", "identity"):
        if init in lin:
            o = lin[init]
            out.append(
                Check(
                    f"linear_{init}_isometry",
                    f"a linear RNN with {init} recurrent weights is an isometry at every T",
                    "every singular value of dh_T/dh_0 = 1",
                    f"T={t}: max |s - 1| = "
                    + (
                        f"{max(abs(o['s_max'] - 1), abs(o['s_min_resolved'] - 1)):.1e}"
                        if o["s_min_resolved"] is not None
                        else "below round-off"
                    ),
                    within(o["s_min_resolved"], 1 - ISOMETRY_TOL, 1 + ISOMETRY_TOL)
                    and within(o["s_max"], 1 - ISOMETRY_TOL, 1 + ISOMETRY_TOL),
                    f"every singular value within {ISOMETRY_TOL:g} of 1 (float64)",
                )
            )
    if "gaussian" in lin:
        g = lin["gaussian"]
        spread = math.inf if g["s_median"] is None else g["s_max"] / g["s_median"]
        out.append(
            Check(
                "linear_gaussian_spreads",
                "products of scaled Gaussian matrices have exponentially spreading singular values",
                "s_max / s_median grows exponentially in T",
                f"T={t}: s_max {_g(g['s_max'])}, median {_g(g['s_median'])}"
                + (f" (ratio {spread:.3g})" if math.isfinite(spread) else " (ratio > 1/eps)"),
                spread >= 100,
                "s_max / s_median >= 100 (a median below s_max * eps counts as > 1/eps)",
            )
        )
    th = _at(rows, "tanh", t)
    if "orthogonal" in th and "gaussian" in th:
        o, g = th["orthogonal"], th["gaussian"]
        # A Gaussian median below round-off is known only to lie under s_max * eps.
        g_med = g["s_median"] if g["s_median"] is not None else g["s_max"] * EPS64
        o_med = o["s_median"]
        out.append(
            Check(
                "tanh_orthogonal_decays_slower",
                "with tanh the gradient through time still decays, far more slowly from an "
                "orthogonal start",
                "typical singular value: orthogonal >> Gaussian; orthogonal still < 1",
                f"T={t}: median orthogonal {_g(o_med)}, Gaussian {_g(g['s_median'])}"
                + (f" ({o_med / g_med:.3g}x)" if o_med else "")
                + f"; s_max orthogonal {_g(o['s_max'])}, Gaussian {_g(g['s_max'])}",
                o_med is not None and o_med >= 100 * g_med and within(o["s_max"], 0, 1),
                "median(orthogonal) >= 100 x median(Gaussian), both above round-off (a hidden "
                "Gaussian median counts as s_max eps), and s_max(orthogonal) < 1",
            )
        )
    dl = tables.get("deep_linear")
    if dl:
        depths = sorted({r["depth"] for r in dl})
        by = {(r["init"], r["depth"]): r for r in dl}
        o0, o1 = by["orthogonal", depths[0]], by["orthogonal", depths[-1]]
        g0, g1 = by["gaussian", depths[0]], by["gaussian", depths[-1]]
        ro = (
            o1["learning_time_median"] / o0["learning_time_median"]
            if o0["learning_time_median"] and o1["learning_time_median"]
            else None
        )
        budget = p.linear_max_steps
        out.append(
            Check(
                "deep_linear_orthogonal_depth_independent",
                f"deep linear nets from orthogonal init learn in a depth-independent time "
                f"(D = {depths[0]}..{depths[-1]})",
                "learning time independent of depth",
                f"median steps {_times(o0, budget)} at D={depths[0]}, {_times(o1, budget)} "
                f"at D={depths[-1]}" + (f" (x{ro:.2g})" if ro else ""),
                ro is not None and within(ro, 1 / 4, 4),
                "deepest / shallowest median learning time within a factor 4 (every run learned)",
            )
        )
        rg = (
            math.inf
            if g1["learning_time_median"] is None
            else (
                g1["learning_time_median"] / g0["learning_time_median"]
                if g0["learning_time_median"]
                else None
            )
        )
        out.append(
            Check(
                "deep_linear_gaussian_slows_with_depth",
                "from scaled Gaussian init the learning time grows with depth",
                "learning time grows with depth",
                f"median steps {_times(g0, budget)} at D={depths[0]}, {_times(g1, budget)} "
                f"at D={depths[-1]}",
                rg is not None and g0["learning_time_median"] is not None and rg >= 10,
                "deepest / shallowest median >= 10 (not learned within the budget at the "
                "deepest counts)",
            )
        )
    for c in task_comparisons(tables.get("task") or []):
        a, b = c["a"], c["b"]
        out.append(
            Check(
                f"adding_{c['activation']}_{a['init']}_vs_gaussian_g{b['gain']:g}",
                f"adding problem ({c['activation']}): {a['init']} learns, Gaussian "
                f"g={b['gain']:g} stays at the baseline",
                "structured init learns; Gaussian at MSE 1/6",
                f"learned {a['learned']}/{a['runs']} vs {b['learned']}/{b['runs']}; median "
                f"MSE {a['final_mse_median']:.3g} vs {b['final_mse_median']:.3g}: {c['verdict']}",
                c["agrees"] == "yes",
                "every run of the structured init ends below every Gaussian run, and at most "
                "half of the Gaussian runs learned",
            )
        )
    return out


def _times(row: dict, budget: int) -> str:
    if row["learning_time_median"] is None:
        return f"> {budget} ({row['learned']}/{row['runs']} learned)"
    return f"{row['learning_time_median']:.0f}"


def _task_label(row: dict) -> str:
    return f"Gaussian g={row['gain']:g}" if row["init"] == "gaussian" else row["init"]


def task_comparisons(task_rows: list[dict]) -> list[dict]:
    """Orthogonal and identity vs each Gaussian gain, per activation.

    Verdicts, strongest first: "A better in every run" when every run of A ended with a lower
    final MSE than every run of B (``final_mse_max(A) < final_mse_min(B)``; under no effect the
    chance of that is ``1 / C(2k, k)`` for k runs each, 1/924 for k = 6: the exact rank-sum
    test); "A better in median, ranges overlap" when A learned in more runs and its median
    final MSE is below half of B's; otherwise "does not separate". The same with A and B
    swapped gives "B better ...", the opposite of the claim. ``agrees`` is "yes" only when A
    is better in every run and at most half of B's runs learned (the claim says the Gaussian
    stays at the baseline); "in direction" when A is better but not both of those hold.
    """

    def verdict(a: dict, b: dict) -> str | None:
        if a["final_mse_max"] < b["final_mse_min"]:
            return f"{_task_label(a)} better in every run"
        if a["learned"] > b["learned"] and a["final_mse_median"] < 0.5 * b["final_mse_median"]:
            return f"{_task_label(a)} better in median, ranges overlap"
        return None

    out = []
    for act in dict.fromkeys(r["activation"] for r in task_rows):
        rows = [r for r in task_rows if r["activation"] == act]
        for w in (r for r in rows if r["init"] in ("orthogonal", "identity")):
            for g in (r for r in rows if r["init"] == "gaussian"):
                v = verdict(w, g) or verdict(g, w) or "does not separate"
                # The claim has two parts: the structured init learns, the Gaussian does not.
                gauss_stuck = 2 * g["learned"] <= g["runs"]
                if v.startswith(w["init"]):
                    strict = v.endswith("every run") and gauss_stuck
                    agrees = "yes" if strict else "in direction"
                elif v.startswith("Gaussian"):
                    agrees = "no"
                else:
                    agrees = "does not separate"
                out.append(
                    {
                        "key": f"task.{act}.{w['init']}_vs_gaussian_g{g['gain']:g}",
                        "activation": act,
                        "a": w,
                        "b": g,
                        "verdict": v,
                        "agrees": agrees,
                    }
                )
    return out


# ----------------------------------------------------------------------------- plots, report


def plot(results: dict, params: Params) -> dict:
    from matplotlib.figure import Figure

    p = params
    figs = {}
    fig = Figure(figsize=(4.4 * len(p.activations), 3.8), layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, len(p.activations)))
    for ax, act in zip(axes, p.activations, strict=True):
        for k, init in enumerate(p.inits):
            for c in results["curves"]:
                if c["activation"] == act and c["init"] == init:
                    t = np.arange(1, len(c["s_max"]) + 1)
                    for key, style in (
                        ("s_max", "-"),
                        ("s_median", "--"),
                        ("s_min_resolved", ":"),
                    ):
                        y = np.array([np.nan if v is None else v for v in c[key]], float)
                        ax.loglog(
                            t,
                            np.where(y > 0, y, np.nan),
                            style,
                            color=f"C{k}",
                            label=f"{LABELS[init]} {key[2:].replace('_resolved', '')}",
                        )
        ax.set_title(f"{act} RNN, n = {p.hidden} (float64; < s_max eps hidden)", fontsize=9)
        ax.set_xlabel("T")
        ax.set_ylabel("singular values of dh_T/dh_0")
        ax.grid(True, which="major", alpha=0.3)
    axes[-1].legend(fontsize=6, ncol=1)
    figs["jacobian_vs_T"] = fig
    if "task" in results:
        acts = list(p.task_activations)
        fig = Figure(figsize=(4.6 * len(acts), 3.8), layout="constrained")
        axes = np.atleast_1d(fig.subplots(1, len(acts), sharey=True))
        w = max(1, p.train_steps // 50)
        for ax, act in zip(axes, acts, strict=True):
            arms = [a for a in task_arms(p) if a["activation"] == act]
            for k, arm in enumerate(arms):
                for j, c in enumerate(results["task"].get(arm["name"], [])):
                    y = np.array([np.nan if v is None else v for v in c], float)
                    y = np.convolve(y / ADDING_BASELINE, np.ones(w) / w, mode="valid")
                    ax.semilogy(y, color=f"C{k}", alpha=0.8, label=arm["label"] if j == 0 else None)
            ax.axhline(1.0, color="k", lw=0.8, ls=":")
            ax.axhline(p.solved_ratio, color="k", lw=0.6, ls="--")
            ax.set_title(f"adding problem, T = {p.task_steps}, {act} RNN, n = {p.task_hidden}")
            ax.set_xlabel("training step")
            ax.set_ylim(1e-3, 3)
            ax.legend(fontsize=7)
        axes[0].set_ylabel("training MSE / baseline (1/6)")
        figs["task_training"] = fig
    dl = results.get("tables", {}).get("deep_linear")
    if dl:
        fig = Figure(figsize=(5.2, 3.8), layout="constrained")
        ax = fig.add_subplot()
        for k, init in enumerate(("orthogonal", "gaussian")):
            rs = sorted((r for r in dl if r["init"] == init), key=lambda r: r["depth"])
            for r in rs:  # every seed's time; not learned: a hollow marker at the budget
                for t in r["times"]:
                    ax.plot(
                        r["depth"],
                        p.linear_max_steps if t is None else t,
                        "o",
                        color=f"C{k}",
                        mfc="none" if t is None else f"C{k}",
                        alpha=0.5,
                        ms=5,
                    )
            d = [r["depth"] for r in rs if r["learning_time_median"] is not None]
            y = [r["learning_time_median"] for r in rs if r["learning_time_median"] is not None]
            label = "orthogonal" if init == "orthogonal" else "scaled Gaussian N(0, 1/n)"
            ax.loglog(d, y, "-", color=f"C{k}", label=f"{label} (median)")
        ax.axhline(
            p.linear_max_steps, color="k", lw=0.6, ls=":", label="budget (hollow: not learned)"
        )
        ax.set_xlabel("depth D")
        ax.set_ylabel(f"steps to loss <= {p.linear_criterion:g} x zero map's")
        ax.set_title(f"deep linear nets, width {p.linear_width}, best lr c/D per seed", fontsize=9)
        ax.grid(True, which="major", alpha=0.3)
        ax.legend(fontsize=7)
        figs["deep_linear_learning_time"] = fig
    return figs


def report(results: dict, params: Params) -> str:
    p = params
    rows = results["tables"]["jacobian"]
    t = max(r["T"] for r in rows)
    published = (
        "Saxe, McClelland & Ganguli (2014): orthogonal weights make the end-to-end map of a deep "
        "linear network an exact isometry at every depth, while scaled Gaussian weights do not "
        "(the singular values of their products spread exponentially); as a result deep linear "
        "networks started from orthogonal weights learn in a depth-independent time, while from "
        "scaled Gaussian weights the learning time grows with depth. Unrolled in time an RNN is "
        "such a deep network with tied weights, which is why orthogonal (or identity, Le et al. "
        "2015) recurrent weights are used against vanishing/exploding gradients through time; "
        "with a saturating nonlinearity the gradient still decays, but far more slowly from an "
        "orthogonal start."
    )
    setup = (
        f"Elman RNNs with {p.hidden} units, recurrent weights "
        f"{', '.join(LABELS[i] for i in p.inits)}, activations {p.activations}; inputs x_t U "
        f"with std {p.input_scale:g} per unit, h_0 with std {p.h0_scale:g}. dh_T/dh_0 for "
        f"T = 1..{p.max_t} by one forward-mode `cr.jacobian` of the trajectory, in float64, "
        f"then its singular values (log-mean over {p.n_nets} networks); values below "
        "s_max x eps(float64) are round-off and are hidden (reported as 'below round-off')."
    )
    if "deep_linear" in results["tables"]:
        setup += (
            f" Deep linear networks of width {p.linear_width} and depth {p.linear_depths} "
            f"(last layer read out to {max(1, p.linear_width // 2)} outputs), whitened inputs, "
            "a random teacher with singular values 0.5..3, full-batch gradient descent at "
            f"lr = c/D for c in {p.linear_lr_scales} (the fastest c per network), "
            f"{p.linear_seeds} networks per (init, depth); learning time = steps until the loss "
            f"is <= {p.linear_criterion:g} x the zero map's, budget {p.linear_max_steps} steps."
        )
    lines = [claims_section(published, setup, results["tables"].get("claims", [])), ""]
    lines += [f"## Spectra at T = {t}", ""]
    for r in rows:
        if r["T"] == t:
            lines.append(
                f"- {r['activation']}, {LABELS[r['init']]}: singular values max "
                f"{_g(r['s_max'])}, median {_g(r['s_median'])}, smallest resolved "
                f"{_g(r['s_min_resolved'])} ({100 * r['frac_below_roundoff']:.0f}% below "
                "round-off)."
            )
    dl = results["tables"].get("deep_linear")
    if dl:
        lines += ["", "## Deep linear networks: learning time against depth", ""]
        for r in dl:
            lines.append(
                f"- {r['init']}, D = {r['depth']}: steps per network {r['times']} (None: not "
                f"learned in {p.linear_max_steps}), fastest c {r['best_lr_scale']}."
            )
    if "task" in results.get("tables", {}):
        lines += ["", *_task_report(results["tables"]["task"], p)]
    return "\n".join(lines)


def _task_report(rows: list[dict], p: Params) -> list[str]:
    lines = [
        "## Learning: the adding problem",
        "",
        "Published claim: with orthogonal (Saxe et al. 2014; Arjovsky, Shah & Bengio 2016) or "
        "identity (IRNN, Le, Jaitly & Hinton 2015) recurrent weights a plain RNN learns the "
        "adding problem (Hochreiter & Schmidhuber 1997) over long sequences, where an RNN with "
        "random Gaussian recurrent weights stays at the trivial baseline (MSE 1/6 ≈ 0.167, "
        "always predicting the mean).",
        "",
        f"What was run: T = {p.task_steps} steps, {p.task_hidden} hidden units, activations "
        f"{p.task_activations}, recurrent init orthogonal / identity / Gaussian N(0, g²/n) with "
        f"g in {p.task_gaussian_gains}; input weights LeCun normal, linear read-out of h_T. Adam "
        f"lr {p.lr:g} after global-norm clipping at {p.clip:g}, batch {p.batch}, "
        f"{p.train_steps} steps, {p.task_seeds} seeds per arm (seed s: the same input/output "
        "weights and batches for every arm). Final MSE = mean training MSE over the last 10% "
        f"of steps (fresh batches every step, so it is a held-out estimate). Learned: final MSE "
        f"< {p.learned_ratio:g} x baseline; solved: < {p.solved_ratio:g} x baseline.",
        "",
    ]
    for r in rows:
        div = f", {r['diverged']} diverged" if r["diverged"] else ""
        lines.append(
            f"- {r['activation']}, {_task_label(r)}: median final MSE {r['final_mse_median']:.3g} "
            f"({r['ratio_median']:.2f} x baseline), best {r['final_mse_min']:.3g}; learned "
            f"{r['learned']}/{r['runs']}, solved {r['solved']}/{r['runs']}{div}."
        )
    lines += [
        "",
        'Comparisons ("better in every run": every run of A ended below every run of B; '
        '"better in median": A learned in more runs and its median final MSE is under half '
        "of B's):",
        "",
    ]
    for c in task_comparisons(rows):
        a, b = c["a"], c["b"]
        note = {"yes": " — agrees with the claim", "no": " — the opposite of the claim"}.get(
            c["agrees"], ""
        )
        if c["agrees"] == "in direction":
            why = (
                f"{_task_label(b)} learned too"
                if 2 * b["learned"] > b["runs"]
                else "the ranges overlap"
            )
            note = f" — agrees in direction only ({why})"
        lines.append(
            f"- {c['activation']}: {a['init']} (learned {a['learned']}/{a['runs']}, final MSE "
            f"{a['final_mse_min']:.3g}..{a['final_mse_max']:.3g}, median "
            f"{a['final_mse_median']:.3g}) vs {_task_label(b)} (learned {b['learned']}/"
            f"{b['runs']}, {b['final_mse_min']:.3g}..{b['final_mse_max']:.3g}, median "
            f"{b['final_mse_median']:.3g}): **{c['verdict']}**{note}."
        )
    lines += [
        "",
        "Caveats: the papers train on sequences of hundreds of steps for far longer (the IRNN "
        "paper with SGD and gradient clipping); this run's T and step count fit a 2-core CPU "
        "budget, and it uses Adam, which rescales each parameter's step by the running RMS of "
        "its gradient, so a vanishing gradient slows it much less than it slows SGD. With "
        f"{p.task_seeds} seeds per arm, 'does not separate' means this run cannot tell the two "
        "inits apart, not that they are equal; every run's final MSE range is listed above.",
    ]
    return lines
