"""ad_modes: the cost of forward against reverse mode, of the three HVPs, and of stored residuals.

Three measurements on the CPU (timings are medians of interleaved calls,
``chainrule.bench.timing.time_alternating``; memory is XLA's own accounting,
``jax.jit(f).lower(...).compile().memory_analysis()``, where the backend provides it):

1. **Jacobian of f: R^N -> R^M** (a two-layer tanh map ``x -> tanh(W2 tanh(W1 x))`` with a
   hidden width ``H``) by ``cr.jacobian(mode="fwd")`` (N forward passes), ``"rev"`` (M reverse
   passes), ``"auto"`` and ``"fwd"/"rev"`` chunked (``chunk_size``), as N and M cross at fixed
   ``N * M``. The theory (Griewank & Walther 2008, "Evaluating Derivatives", ch. 3-4; Baydin et
   al. 2018, JMLR 18(153), sec. 3): forward mode costs ``O(N)`` evaluations of f, reverse mode
   ``O(M)``, so forward wins for tall Jacobians (N << M), reverse for wide ones (N >> M), and
   chunking bounds the working memory at the price of a loop.
2. **Hessian-vector products** of a scalar MLP loss of its parameters by the three compositions
   of ``cr.hvp``: fwd-over-rev, rev-over-rev, rev-over-fwd, against one gradient. Pearlmutter
   (1994, "Fast exact multiplication by the Hessian"): an HVP costs a small constant times one
   gradient, independent of the number of parameters.
3. **Reverse mode's residuals** (what ``jax.vjp`` stores for the backward pass,
   ``cr.graph.residuals``) for an MLP loss as the depth grows, with and without
   ``jax.checkpoint`` per layer: the stored activations grow linearly with depth (Griewank &
   Walther, ch. 12: reverse mode's memory is proportional to the length of the computation);
   checkpointing keeps only each layer's input.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
from pydantic import BaseModel, ConfigDict, Field

import chainrule as cr
from chainrule.bench.timing import time_alternating

DESCRIPTION = (
    "Forward vs reverse mode: Jacobian time/memory as N and M cross, the three HVPs, and "
    "reverse mode's stored residuals against depth"
)

HVP_MODES = ("fwd-over-rev", "rev-over-rev", "rev-over-fwd")


class Params(BaseModel):
    model_config = ConfigDict(extra="forbid")

    jac_sizes: list[tuple[int, int]] = Field(
        default_factory=lambda: [(8, 2048), (32, 512), (128, 128), (512, 32), (2048, 8)],
        min_length=2,
        description="(N inputs, M outputs) pairs of the Jacobian sweep",
    )
    hidden: int = Field(256, ge=1, description="hidden width H of the two-layer map")
    chunk_size: int = Field(16, ge=1, description="basis vectors per chunk (chunked modes)")
    reps: int = Field(15, ge=1, description="timed repetitions per contender (interleaved)")
    hvp_width: int = Field(128, ge=1, description="width of the MLP whose loss the HVP uses")
    hvp_depth: int = Field(4, ge=1, description="layers of that MLP")
    hvp_batch: int = Field(64, ge=1, description="batch of the MLP loss")
    residual_depths: list[int] = Field(
        default_factory=lambda: [1, 2, 4, 8, 16, 32], min_length=2, description="MLP depths"
    )
    residual_width: int = Field(64, ge=1, description="MLP width for the residual sweep")
    residual_batch: int = Field(32, ge=1, description="MLP batch for the residual sweep")
    chain_width: int = Field(
        256, ge=8, description="widest layer of the chain_jacobian section's chains"
    )


# ----------------------------------------------------------------------------------------------
# XLA's memory accounting
# ----------------------------------------------------------------------------------------------


def compiled(fn, *args):
    """``fn`` lowered and compiled for ``args`` (one compile serves timing and memory)."""
    return jax.jit(fn).lower(*args).compile()


def xla_memory(exe) -> dict[str, int | None]:
    """Temp (working) and output bytes of a compiled executable, or None if unavailable."""
    try:
        ma = exe.memory_analysis()
    except Exception:  # noqa: BLE001 - some backends do not implement it
        ma = None
    if ma is None:
        return {"temp_bytes": None, "output_bytes": None}
    return {
        "temp_bytes": int(ma.temp_size_in_bytes),
        "output_bytes": int(ma.output_size_in_bytes),
    }


# ----------------------------------------------------------------------------------------------
# 1. Jacobians
# ----------------------------------------------------------------------------------------------


def _two_layer(x: jax.Array, w: dict[str, jax.Array]) -> jax.Array:
    return jnp.tanh(w["w2"] @ jnp.tanh(w["w1"] @ x))


def jacobian_contenders(chunk_size: int) -> dict[str, dict]:
    """Name -> ``cr.jacobian`` keyword arguments."""
    return {
        "fwd": {"mode": "fwd"},
        "rev": {"mode": "rev"},
        "auto": {"mode": "auto"},
        f"fwd_chunk{chunk_size}": {"mode": "fwd", "chunk_size": chunk_size},
        f"rev_chunk{chunk_size}": {"mode": "rev", "chunk_size": chunk_size},
    }


def jacobian_sweep(key, p: Params, ctx) -> list[dict]:
    rows = []
    contenders = jacobian_contenders(p.chunk_size)
    for n, m in ctx.progress(p.jac_sizes, total=len(p.jac_sizes), desc="jacobian N x M"):
        k1, k2, k3 = jax.random.split(jax.random.fold_in(key, n * 100003 + m), 3)
        w = {
            "w1": jax.random.normal(k1, (p.hidden, n)) / math.sqrt(n),
            "w2": jax.random.normal(k2, (m, p.hidden)) / math.sqrt(p.hidden),
        }
        x = jax.random.normal(k3, (n,))
        fns = {
            name: compiled(cr.jacobian(_two_layer, **kw), x, w) for name, kw in contenders.items()
        }
        ref = fns["rev"](x, w)
        for name, fn in fns.items():  # every contender computes the same matrix
            err = float(jnp.max(jnp.abs(fn(x, w) - ref)))
            if not err < 1e-4:
                raise AssertionError(f"jacobian {name} differs from rev by {err} at N={n}, M={m}")
        times = time_alternating(fns, x, w, warmup=2, reps=p.reps)
        row = {"N": n, "M": m, "auto_mode": "fwd" if n < m else "rev"}
        for name, fn in fns.items():
            row[f"{name}_ms"] = times[name]["median_ms"]
            row[f"{name}_temp_bytes"] = xla_memory(fn)["temp_bytes"]
        rows.append(row)
    return rows


# ----------------------------------------------------------------------------------------------
# 2. HVPs
# ----------------------------------------------------------------------------------------------


def _mlp_loss(flat: jax.Array, shapes: tuple, x: jax.Array) -> jax.Array:
    params, i = [], 0
    for n_in, n_out in shapes:
        params.append({"w": flat[i : i + n_in * n_out].reshape(n_in, n_out)})
        i += n_in * n_out
        params[-1]["b"] = flat[i : i + n_out]
        i += n_out
    return jnp.mean(cr.nets.mlp_apply(params, x, "tanh") ** 2)


def hvp_sweep(key, p: Params) -> list[dict]:
    sizes = [p.hvp_width] * (p.hvp_depth + 1)
    kp, kx, kv = jax.random.split(key, 3)
    params = cr.nets.mlp_init(kp, sizes)
    flat = jnp.concatenate([jnp.concatenate([ly["w"].ravel(), ly["b"]]) for ly in params])
    shapes = tuple(zip(sizes[:-1], sizes[1:], strict=True))
    x = jax.random.normal(kx, (p.hvp_batch, p.hvp_width))
    v = jax.random.normal(kv, flat.shape)
    f = functools.partial(_mlp_loss, shapes=shapes, x=x)

    def grad_fn(z, _v):
        return cr.grad(f)(z)

    fns = {"grad": compiled(grad_fn, flat, v)}
    for mode in HVP_MODES:
        fn = functools.partial(lambda z, u, mode: cr.hvp(f, z, u, mode=mode), mode=mode)
        fns[mode] = compiled(fn, flat, v)
    ref = fns["fwd-over-rev"](flat, v)
    scale = float(jnp.max(jnp.abs(ref)))
    times = time_alternating(fns, flat, v, warmup=2, reps=p.reps)
    rows = []
    for name, fn in fns.items():
        out = fn(flat, v)
        mem = xla_memory(fn)
        rows.append(
            {
                "op": name,
                "params": int(flat.size),
                "median_ms": times[name]["median_ms"],
                "ratio_to_grad": times[name]["median_ms"] / times["grad"]["median_ms"],
                "temp_bytes": mem["temp_bytes"],
                "max_rel_diff_vs_fwd_over_rev": (
                    None if name == "grad" else float(jnp.max(jnp.abs(out - ref))) / scale
                ),
            }
        )
    return rows


# ----------------------------------------------------------------------------------------------
# 3. Residuals against depth
# ----------------------------------------------------------------------------------------------


def residual_sweep(key, p: Params) -> list[dict]:
    rows = []
    kx, kp = jax.random.split(key)
    x = jax.random.normal(kx, (p.residual_batch, p.residual_width))
    for depth in p.residual_depths:
        params = cr.nets.mlp_init(kp, [p.residual_width] * (depth + 1))
        for ckpt in (False, True):

            def loss(params, x, ckpt=ckpt):
                return jnp.mean(cr.nets.mlp_apply(params, x, "tanh", checkpoint=ckpt) ** 2)

            rep = cr.graph.residuals(loss, params, x)
            grad_temp = xla_memory(compiled(jax.grad(loss), params, x))["temp_bytes"]
            rows.append(
                {
                    "depth": depth,
                    "checkpoint": ckpt,
                    "residuals": rep.count,
                    "residual_bytes": rep.nbytes,
                    "activation_bytes": rep.activation_bytes,
                    "argument_bytes": rep.argument_bytes,
                    "grad_temp_bytes": grad_temp,
                }
            )
    return rows


def _slope(xs, ys) -> float:
    return float(np.polyfit(np.asarray(xs, float), np.asarray(ys, float), 1)[0])


def run(params: Params, ctx) -> dict:
    p = params
    jac = jacobian_sweep(ctx.fold("jacobian"), p, ctx)
    hvps = hvp_sweep(ctx.fold("hvp"), p)
    res = residual_sweep(ctx.fold("residuals"), p)

    summary: dict = {}
    # Extreme aspect ratios: the tallest (N << M) and the widest (N >> M) Jacobian.
    tall = min(jac, key=lambda r: r["N"] / r["M"])
    wide = max(jac, key=lambda r: r["N"] / r["M"])
    summary["tall_N_M"] = f"{tall['N']}x{tall['M']}"
    summary["wide_N_M"] = f"{wide['N']}x{wide['M']}"
    summary["tall_rev_over_fwd"] = tall["rev_ms"] / tall["fwd_ms"]
    summary["wide_fwd_over_rev"] = wide["fwd_ms"] / wide["rev_ms"]
    summary["tall_auto_over_best"] = tall["auto_ms"] / min(tall["fwd_ms"], tall["rev_ms"])
    summary["wide_auto_over_best"] = wide["auto_ms"] / min(wide["fwd_ms"], wide["rev_ms"])
    summary["tall_auto_mode"] = tall["auto_mode"]
    summary["wide_auto_mode"] = wide["auto_mode"]
    # Forward time grows with N, reverse time with M: slopes of log time against log size.
    summary["fwd_time_loglog_slope_vs_N"] = _slope(
        np.log([r["N"] for r in jac]), np.log([r["fwd_ms"] for r in jac])
    )
    summary["rev_time_loglog_slope_vs_M"] = _slope(
        np.log([r["M"] for r in jac]), np.log([r["rev_ms"] for r in jac])
    )
    ck = p.chunk_size
    mems = [
        (r[f"{m}_temp_bytes"], r[f"{m}_chunk{ck}_temp_bytes"])
        for r in jac
        for m in ("fwd", "rev")
        if r[f"{m}_temp_bytes"] is not None and r[f"{m}_chunk{ck}_temp_bytes"] is not None
    ]
    summary["memory_analysis_available"] = bool(mems)
    if mems:
        summary["chunked_temp_bytes_max_ratio"] = max(c / max(u, 1) for u, c in mems)
        summary["chunked_temp_bytes_min_ratio"] = min(c / max(u, 1) for u, c in mems)
    by_op = {r["op"]: r for r in hvps}
    for mode in HVP_MODES:
        summary[f"hvp_{mode}_over_grad"] = by_op[mode]["ratio_to_grad"]
    summary["hvp_max_rel_diff"] = max(by_op[m]["max_rel_diff_vs_fwd_over_rev"] for m in HVP_MODES)
    plain = [r for r in res if not r["checkpoint"]]
    ckpt = [r for r in res if r["checkpoint"]]
    act = [r["activation_bytes"] for r in plain]
    summary["residual_bytes_monotone_in_depth"] = bool(
        all(b > a for a, b in zip(act[:-1], act[1:], strict=True))
    )
    summary["activation_bytes_per_layer"] = _slope([r["depth"] for r in plain], act)
    summary["activation_bytes_per_layer_checkpointed"] = _slope(
        [r["depth"] for r in ckpt], [r["activation_bytes"] for r in ckpt]
    )
    summary["layer_output_bytes"] = p.residual_batch * p.residual_width * 4
    summary["agrees"] = bool(
        summary["tall_rev_over_fwd"] > 1
        and summary["wide_fwd_over_rev"] > 1
        and summary["tall_auto_mode"] == "fwd"
        and summary["wide_auto_mode"] == "rev"
        and summary["residual_bytes_monotone_in_depth"]
        and all(summary[f"hvp_{m}_over_grad"] < 10 for m in HVP_MODES)
    )
    out = {"tables": {"jacobian": jac, "hvp": hvps, "residuals": res}, "summary": summary}
    return chain_section(out, p)  # 4. chain_jacobian (issue 20), below


def plot(results: dict, params: Params) -> dict:
    # Figures built directly: no pyplot, so no global backend switch and no figure registry.
    from matplotlib.figure import Figure

    figs = {}
    jac = results["tables"]["jacobian"]
    ratio = [r["N"] / r["M"] for r in jac]
    ck = params.chunk_size
    fig = Figure(figsize=(11, 4))
    axes = fig.subplots(1, 2)
    for name, style in (
        ("fwd", "o-"),
        ("rev", "s-"),
        ("auto", "k--"),
        (f"fwd_chunk{ck}", "o:"),
        (f"rev_chunk{ck}", "s:"),
    ):
        axes[0].plot(ratio, [r[f"{name}_ms"] for r in jac], style, label=name)
        mem = [r[f"{name}_temp_bytes"] for r in jac]
        if all(m is not None for m in mem):
            axes[1].plot(ratio, [max(m, 1) for m in mem], style, label=name)
    for ax, ylabel in zip(axes, ("median time (ms)", "XLA temp bytes"), strict=True):
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("N / M (inputs / outputs)")
        ax.set_ylabel(ylabel)
        ax.legend(fontsize=8)
    axes[0].set_title(f"Jacobian of R^N -> R^M, N*M fixed, H={params.hidden}")
    axes[1].set_title("working memory (memory_analysis)")
    fig.tight_layout()
    figs["jacobian"] = fig

    hv = results["tables"]["hvp"]
    fig = Figure(figsize=(6, 3.5))
    ax = fig.subplots()
    ax.bar([r["op"] for r in hv], [r["median_ms"] for r in hv])
    ax.set_ylabel("median time (ms)")
    ax.set_title(f"HVP compositions vs one gradient ({hv[0]['params']} params)")
    fig.tight_layout()
    figs["hvp"] = fig

    res = results["tables"]["residuals"]
    fig = Figure(figsize=(6, 3.5))
    ax = fig.subplots()
    for ck_flag, label in ((False, "plain"), (True, "jax.checkpoint per layer")):
        rr = [r for r in res if r["checkpoint"] == ck_flag]
        ax.plot([r["depth"] for r in rr], [r["activation_bytes"] for r in rr], "o-", label=label)
    ax.set_xlabel("depth (layers)")
    ax.set_ylabel("stored activation bytes")
    ax.set_title("reverse mode's residuals (cr.graph.residuals)")
    ax.legend()
    fig.tight_layout()
    figs["residuals"] = fig
    figs.update(chain_plot(results))  # 4. chain_jacobian (issue 20), below
    return figs


def report(results: dict, params: Params) -> str:
    s = results["summary"]
    ok = "agrees" if s["agrees"] else "does NOT fully agree"
    mem = (
        f"Chunking changes XLA's temp bytes by a factor {s['chunked_temp_bytes_min_ratio']:.3g} to "
        f"{s['chunked_temp_bytes_max_ratio']:.3g} across the sweep (chunk size "
        f"{params.chunk_size}; < 1 means less working memory)."
        if s["memory_analysis_available"]
        else "XLA's memory analysis is not available on this backend."
    )
    hvp_mem = (
        ", ".join(
            f"{r['op']} {r['temp_bytes']}" for r in results["tables"]["hvp"] if r["temp_bytes"]
        )
        or "not available"
    )
    return f"""\
**Published claims.** A Jacobian of f: R^N -> R^M costs O(N) passes in forward mode and O(M)
in reverse mode (Griewank & Walther 2008, *Evaluating Derivatives*; Baydin et al. 2018, JMLR),
so forward mode wins for N << M and reverse mode for N >> M. A Hessian-vector product costs a
small constant times one gradient (Pearlmutter 1994). Reverse mode stores intermediates for its
backward pass, so its memory grows with the length (depth) of the computation; checkpointing
trades that memory for recomputation (Griewank & Walther ch. 12; Chen et al. 2016).

**Measured (this run).**
- Tallest Jacobian {s["tall_N_M"]} (N x M): reverse / forward time = {s["tall_rev_over_fwd"]:.3g};
  widest {s["wide_N_M"]}: forward / reverse = {s["wide_fwd_over_rev"]:.3g}. `auto` chose
  `{s["tall_auto_mode"]}` and `{s["wide_auto_mode"]}` and ran at {s["tall_auto_over_best"]:.2f}x and
  {s["wide_auto_over_best"]:.2f}x the faster mode's time. Log-log slope of forward time against
  N: {s["fwd_time_loglog_slope_vs_N"]:.2f}; of reverse time against M:
  {s["rev_time_loglog_slope_vs_M"]:.2f} (1 = linear in the number of passes; below 1 where
  vectorized passes share work or fixed overhead dominates).
- {mem}
- HVP time / gradient time: fwd-over-rev {s["hvp_fwd-over-rev_over_grad"]:.2f},
  rev-over-rev {s["hvp_rev-over-rev_over_grad"]:.2f}, rev-over-fwd
  {s["hvp_rev-over-fwd_over_grad"]:.2f}; the three agree to a relative
  {s["hvp_max_rel_diff"]:.1e}. XLA temp bytes: {hvp_mem}.
- Stored activations grow by {s["activation_bytes_per_layer"]:.0f} bytes per layer
  (one layer output is {s["layer_output_bytes"]} bytes) and strictly increase with depth:
  {s["residual_bytes_monotone_in_depth"]}; with `jax.checkpoint` per layer the slope is
  {s["activation_bytes_per_layer_checkpointed"]:.0f} bytes per layer. (The `grad_temp_bytes`
  column is XLA's temp for the whole jitted gradient program, which schedules, fuses and reuses
  buffers across the forward and backward passes, so it need not follow this accounting.)

**Verdict:** this run {ok} with the claims (forward faster for the tall Jacobian, reverse for
the wide one, auto picks the faster, HVPs within 10x a gradient, residuals growing with depth).
Timings are from a shared 2-core CPU: medians of interleaved calls.
""" + chain_report(results)  # 4. chain_jacobian (issue 20), below


# ----------------------------------------------------------------------------------------------
# 4. chain_jacobian (issue 20): the cheapest bracketing of a chain's layer Jacobians.
#    Self-contained: chain_section (measurements), chain_plot, chain_report; the config key
#    is Params.chain_width. Claim: the matrix-chain dynamic program over the layer widths
#    (Griewank & Walther ch. 9-10; Naumann's Jacobian chain bracketing) finds a plan within
#    1.1x of the best of fwd / rev / auto on every chain shape, and >= 10x faster than auto
#    on a bottleneck.
# ----------------------------------------------------------------------------------------------


def chain_section(out: dict, p: Params) -> dict:
    """``out`` with the chain table (a row per shape and contender) and its summary added."""
    from chainrule.bench.chain import CONTENDERS, measure_chain, shapes

    rows, times = [], {}
    for shape, widths in shapes(p.chain_width).items():
        stats = measure_chain(widths, reps=p.reps, warmup=2)  # also checks every Jacobian
        best = min(CONTENDERS, key=lambda c: stats[c]["median_ms"])
        best_times = np.asarray(stats[best]["times_ms"])
        for c in CONTENDERS:
            st = stats[c]
            rows.append(
                {
                    "shape": shape,
                    "widths": "-".join(map(str, widths)),
                    "contender": c,
                    "plan": st["plan"],
                    "predicted_flops": st["predicted_flops"],
                    "median_ms": st["median_ms"],
                    "min_ms": st["min_ms"],
                    # per-repetition ratios (alternated calls): a burst of load on a shared
                    # machine hits both sides of a pair
                    "ratio_to_best": float(np.median(np.asarray(st["times_ms"]) / best_times)),
                }
            )
            times[shape, c] = np.asarray(st["times_ms"])
    by = {(r["shape"], r["contender"]): r for r in rows}
    shape_names = list(dict.fromkeys(r["shape"] for r in rows))
    opt = [by[s, "chain optimal"] for s in shape_names]
    logp = np.log([r["predicted_flops"] for r in rows])
    logt = np.log([r["median_ms"] for r in rows])
    s = out["summary"]
    s["chain_optimal_over_best_max"] = max(r["ratio_to_best"] for r in opt)
    s["chain_bottleneck_auto_over_optimal"] = float(
        np.median(times["bottleneck", "auto"] / times["bottleneck", "chain optimal"])
    )
    s["chain_bottleneck_plan"] = by["bottleneck", "chain optimal"]["plan"]
    # where the model ranks a contender first, is it (within 1.1x) the fastest measured?
    s["chain_predicted_best_is_measured_best"] = sum(
        min((by[sh, c] for c in CONTENDERS), key=lambda r: r["predicted_flops"])["ratio_to_best"]
        <= 1.1
        for sh in shape_names
    )
    s["chain_shapes"] = len(shape_names)
    s["chain_loglog_corr_predicted_measured"] = float(np.corrcoef(logp, logt)[0, 1])
    s["chain_loglog_slope_measured_vs_predicted"] = _slope(logp, logt)
    s["chain_agrees"] = bool(
        s["chain_optimal_over_best_max"] <= 1.1 and s["chain_bottleneck_auto_over_optimal"] >= 10
    )
    out["tables"]["chain"] = rows
    return out


def chain_plot(results: dict) -> dict:
    """Predicted FLOPs against measured time, one marker per contender, one colour per shape."""
    rows = results["tables"].get("chain")
    if not rows:
        return {}
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.5, 4.5))
    ax = fig.subplots()
    shape_names = list(dict.fromkeys(r["shape"] for r in rows))
    markers = {"chain fwd": "o", "chain rev": "s", "auto": "x", "chain optimal": "*"}
    for i, sh in enumerate(shape_names):
        for c, m in markers.items():
            rr = [r for r in rows if r["shape"] == sh and r["contender"] == c]
            ax.plot(
                [r["predicted_flops"] for r in rr],
                [r["median_ms"] for r in rr],
                m,
                color=f"C{i}",
                markersize=11 if c == "chain optimal" else 7,
                label=f"{sh}" if c == "chain optimal" else None,
            )
    for c, m in markers.items():
        ax.plot([], [], m, color="gray", label=c)
    # time proportional to FLOPs, through the geometric means: where the model would put them
    fl = np.asarray([r["predicted_flops"] for r in rows])
    ms = np.asarray([r["median_ms"] for r in rows])
    c = np.exp(np.mean(np.log(ms)) - np.mean(np.log(fl)))
    xs = np.geomspace(fl.min(), fl.max(), 2)
    ax.plot(xs, c * xs, "k--", lw=0.8, label="time proportional to FLOPs")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("predicted cost (FLOPs, chain_jacobian_plan)")
    ax.set_ylabel("measured median time (ms)")
    ax.set_title("chain Jacobians: predicted against measured cost")
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    return {"chain": fig}


def chain_report(results: dict) -> str:
    s = results["summary"]
    if "chain_agrees" not in s:
        return ""
    ok = "agrees" if s["chain_agrees"] else "does NOT agree"
    return f"""
**Chain Jacobians (`cr.chain_jacobian`).** Claim: the cheapest bracketing of the layer
Jacobians, chosen by dynamic programming over the widths (a matrix-chain problem with a forward
and a reverse way to form each segment; Griewank & Walther ch. 9-10), is within 1.1x of the best
of fwd, rev and `jacobian(mode="auto")` on every chain shape, and >= 10x faster than `auto` on a
bottleneck. Measured on {s["chain_shapes"]} shapes (tall, wide, bottleneck, hourglass, wide
middle), as medians of per-repetition ratios of alternated calls: the optimal plan's time over
the best measured contender's is at most {s["chain_optimal_over_best_max"]:.2f}; on the
bottleneck it ran `{s["chain_bottleneck_plan"]}`, {s["chain_bottleneck_auto_over_optimal"]:.1f}x
faster than `auto`. The contender predicted
cheapest was the fastest measured (within 1.1x) on {s["chain_predicted_best_is_measured_best"]}
of {s["chain_shapes"]} shapes; across all contenders, log measured time against log predicted
FLOPs has correlation {s["chain_loglog_corr_predicted_measured"]:.3f} and slope
{s["chain_loglog_slope_measured_vs_predicted"]:.2f} (1 would be time proportional to FLOPs;
below 1, cheap calls are held up by fixed costs, see `docs/chain_jacobians.md`). Plot: `chain`.
This run {ok} with the claim (times within 1.1x of each other on a shared CPU are ties).
"""
