"""ad_modes: the cost of forward against reverse mode, of the three HVPs, and of stored residuals.

The experiment is a list of sections (``SECTIONS``), each a function ``(out, p, ctx) -> out``
that adds its tables, summary entries and claim checks to ``out``; ``run`` calls them in turn,
and ``plot`` / ``report`` do the same with ``PLOTS`` / ``REPORTS``. Sections:

1. **Jacobian of f: R^N -> R^M** (a two-layer tanh map ``x -> tanh(W2 tanh(W1 x))`` with a
   hidden width ``H``) by ``cr.jacobian(mode="fwd")`` (N forward passes), ``"rev"`` (M reverse
   passes), ``"auto"`` and ``"fwd"/"rev"`` chunked (``chunk_size``), as N and M cross at fixed
   ``N * M``. The theory (Griewank & Walther 2008, "Evaluating Derivatives", ch. 3-4; Baydin et
   al. 2018, JMLR 18(153), sec. 3): forward mode costs ``O(N)`` evaluations of f, reverse mode
   ``O(M)``, so forward wins for tall Jacobians (N << M), reverse for wide ones (N >> M), and
   chunking bounds the working memory at the price of a loop. ``auto`` compiles to the very
   program of the mode it picks (the optimized HLO is compared), so it must time the same.
2. **Hessian-vector products** of a scalar MLP loss of its parameters by the three compositions
   of ``cr.hvp``: fwd-over-rev, rev-over-rev, rev-over-fwd, against one gradient. Pearlmutter
   (1994, "Fast exact multiplication by the Hessian"): an HVP costs a small constant times one
   gradient, independent of the number of parameters.
3. **Reverse mode's residuals** (what ``jax.vjp`` stores for the backward pass,
   ``cr.graph.residuals``) for an MLP loss as the depth grows, with and without
   ``jax.checkpoint`` per layer: the stored activations grow linearly with depth (Griewank &
   Walther, ch. 12: reverse mode's memory is proportional to the length of the computation);
   checkpointing keeps only each layer's input.
4. **Chain Jacobians** (issue 20, below): the cheapest bracketing of a chain's layer Jacobians.

Timing (sections 1-2): ``rounds`` rounds, each a ``time_alternating`` of every contender
(calls interleaved, order rotating) plus a second copy of one contender's executable -- the
same program timed twice, whose ratio is the run's **noise band**. A ratio is reported as the
median over rounds with its range; a timing claim gets a verdict only where its margin exceeds
the noise band (the largest factor between the two timings of one program in any round),
is "not reproduced" where the opposite does, and "not tested" (within noise) otherwise.
Memory is XLA's own accounting (``jax.jit(f).lower(...).compile().memory_analysis()``) and is
deterministic.
"""

from __future__ import annotations

import functools
import hashlib
import math
import re
import statistics

import jax
import jax.numpy as jnp
import numpy as np
from pydantic import BaseModel, ConfigDict, Field

import chainrule as cr
from chainrule.bench.timing import time_alternating

from ._common import Check, claims_section, overall

DESCRIPTION = (
    "Forward vs reverse mode: Jacobian time/memory as N and M cross, the three HVPs, and "
    "reverse mode's stored residuals against depth"
)

HVP_MODES = ("fwd-over-rev", "rev-over-rev", "rev-over-fwd")
#: The smallest noise band assumed (10%): a few rounds can agree by luck.
MIN_NOISE = 1.1


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
    rounds: int = Field(
        5, ge=2, description="rounds the repetitions are split into (the spread is across rounds)"
    )
    hvp_width: int = Field(128, ge=1, description="width of the MLP whose loss the HVP uses")
    hvp_depth: int = Field(4, ge=1, description="layers of that MLP")
    hvp_batch: int = Field(64, ge=1, description="batch of the MLP loss")
    hvp_max_ratio: float = Field(
        10.0, gt=1, description="an HVP within this many gradients is 'a small constant'"
    )
    residual_depths: list[int] = Field(
        default_factory=lambda: [1, 2, 4, 8, 16, 32], min_length=2, description="MLP depths"
    )
    residual_width: int = Field(64, ge=1, description="MLP width for the residual sweep")
    residual_batch: int = Field(32, ge=1, description="MLP batch for the residual sweep")
    chain_width: int = Field(
        256, ge=8, description="widest layer of the chain_jacobian section's chains"
    )


# ----------------------------------------------------------------------------------------------
# XLA's memory accounting and program identity
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


def program_hash(exe) -> str | None:
    """SHA-256 (12 hex digits) of the optimized HLO, module name removed; None if unavailable.

    Two executables with the same hash run the same program: any timing difference between
    them is noise.
    """
    try:
        text = exe.as_text()
    except Exception:  # noqa: BLE001 - not every backend exposes the text
        return None
    text = re.sub(r"^HloModule \S+", "HloModule m", text, flags=re.M)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


# ----------------------------------------------------------------------------------------------
# Timing: interleaved rounds, medians with spread, verdicts beyond the noise band
# ----------------------------------------------------------------------------------------------


def timed_rounds(fns: dict, args: tuple, p: Params, twin: str) -> dict:
    """Per-round median ms of every contender, plus ``twin`` timed twice (``"<twin>#2"``).

    Every round is one ``time_alternating`` call (interleaved, rotating order) of
    ``ceil(reps / rounds)`` repetitions; the first round has 2 warm-up calls per contender.
    """
    per = max(1, math.ceil(p.reps / p.rounds))
    fns = {**fns, f"{twin}#2": fns[twin]}
    rounds = []
    for r in range(p.rounds):
        t = time_alternating(fns, *args, warmup=2 if r == 0 else 1, reps=per)
        rounds.append({k: v["median_ms"] for k, v in t.items()})
    return {"rounds": rounds, "twin": twin}


def stats_ms(tr: dict, name: str) -> dict:
    """Median over rounds of ``name``'s round medians, with their min and max."""
    v = [r[name] for r in tr["rounds"]]
    return {"median_ms": statistics.median(v), "lo_ms": min(v), "hi_ms": max(v)}


def ratios(tr: dict, num: str, den: str) -> list[float]:
    """``num / den`` per round (interleaved calls: a burst of load hits both)."""
    return [r[num] / r[den] for r in tr["rounds"]]


def noise_band(tr: dict) -> float:
    """The largest factor between the two timings of one program in any round (>= 1.1)."""
    r = ratios(tr, f"{tr['twin']}#2", tr["twin"])
    return max(MIN_NOISE, *(max(x, 1 / x) for x in r))


def faster_verdict(slow_over_fast: list[float], noise: float) -> bool | None:
    """Is the first contender faster? ``True``: the median ratio exceeds the noise band;
    ``False``: it is below its inverse (slower beyond noise); ``None``: within noise.

    >>> faster_verdict([3.0, 2.5, 4.0], 1.2), faster_verdict([0.5, 0.4, 0.9], 1.2)
    (True, False)
    >>> faster_verdict([1.5, 1.1, 0.9], 1.2) is None
    True
    """
    m = statistics.median(slow_over_fast)
    if m > noise:
        return True
    if m < 1 / noise:
        return False
    return None


def bound_verdict(ratio: list[float], lo: float, hi: float, noise: float) -> bool | None:
    """Is the ratio inside ``[lo, hi]``? ``True``: the median is inside by more than the
    noise band; ``False``: outside by more than it; ``None``: within noise of a bound.

    >>> bound_verdict([2.0, 1.5, 30.0], 1.0, 10.0, 1.5), bound_verdict([40.0, 50.0], 1.0, 10.0, 2)
    (True, False)
    """
    m = statistics.median(ratio)
    if lo * noise <= m <= hi / noise:
        return True
    if m < lo / noise or m > hi * noise:
        return False
    return None


def equal_verdict(a_over_b: list[float], noise: float) -> bool | None:
    """Do two contenders time the same? ``True``: the median ratio is within the noise band
    either way; ``False``: outside its square (a difference no noise seen in this run makes);
    ``None``: in between (undetermined).

    >>> equal_verdict([1.05, 0.97, 1.2], 1.25), equal_verdict([0.35, 0.4, 0.3], 1.25)
    (True, False)
    >>> equal_verdict([1.17, 1.2, 1.12], 1.12) is None
    True
    """
    m = statistics.median(a_over_b)
    if 1 / noise <= m <= noise:
        return True
    if m < 1 / noise**2 or m > noise**2:
        return False
    return None


def _all_or_none(vs: list[bool | None]) -> bool | None:
    """False if any is False, True if all are True, else None (some within noise)."""
    if any(v is False for v in vs):
        return False
    return True if all(v is True for v in vs) else None


def _rng(r: list[float]) -> str:
    return f"{statistics.median(r):.3g} (rounds {min(r):.3g}..{max(r):.3g})"


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


def jacobian_sweep(key, p: Params, ctx) -> tuple[list[dict], dict]:
    """One row per (N, M) with every contender's median, range and XLA temp bytes, and the
    raw rounds (``{"NxM": timed_rounds}``) for the verdicts."""
    rows, raw = [], {}
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
        picked = "fwd" if n < m else "rev"
        tr = timed_rounds(fns, (x, w), p, twin=picked)
        raw[f"{n}x{m}"] = tr
        # auto against its own mode, alternated by themselves: among the heavy contenders a
        # call's time depends on which program ran before it (caches, thread pool), and that
        # position effect is not the program's
        raw[f"{n}x{m}/auto"] = timed_rounds(
            {picked: fns[picked], "auto": fns["auto"]}, (x, w), p, twin=picked
        )
        row = {
            "N": n,
            "M": m,
            "auto_mode": picked,
            "auto_same_program": program_hash(fns["auto"]) == program_hash(fns[picked]),
            "noise_band": noise_band(tr),
        }
        for name, fn in fns.items():
            st = stats_ms(tr, name)
            row[f"{name}_ms"] = st["median_ms"]
            row[f"{name}_lo_ms"] = st["lo_ms"]
            row[f"{name}_hi_ms"] = st["hi_ms"]
            row[f"{name}_temp_bytes"] = xla_memory(fn)["temp_bytes"]
        rows.append(row)
    return rows, raw


def jacobian_section(out: dict, p: Params, ctx) -> dict:
    jac, raw = jacobian_sweep(ctx.fold("jacobian"), p, ctx)
    s, checks = out["summary"], out["checks"]
    tall = min(jac, key=lambda r: r["N"] / r["M"])
    wide = max(jac, key=lambda r: r["N"] / r["M"])
    rt, rw = raw[f"{tall['N']}x{tall['M']}"], raw[f"{wide['N']}x{wide['M']}"]
    nt, nw = noise_band(rt), noise_band(rw)
    s["tall_N_M"] = f"{tall['N']}x{tall['M']}"
    s["wide_N_M"] = f"{wide['N']}x{wide['M']}"
    tall_r, wide_r = ratios(rt, "rev", "fwd"), ratios(rw, "fwd", "rev")
    s["tall_rev_over_fwd"] = statistics.median(tall_r)
    s["wide_fwd_over_rev"] = statistics.median(wide_r)
    s["noise_band_tall"], s["noise_band_wide"] = nt, nw
    checks.append(
        Check(
            "forward_wins_tall",
            f"forward mode is faster for a tall Jacobian (N x M = {s['tall_N_M']})",
            f"rev / fwd time ~ M / N = {tall['M'] / tall['N']:.3g} (pass counts)",
            f"rev / fwd = {_rng(tall_r)}; noise band x{nt:.2f}",
            faster_verdict(tall_r, nt),
            "the median ratio above the noise band (the same program timed twice)",
        )
    )
    checks.append(
        Check(
            "reverse_wins_wide",
            f"reverse mode is faster for a wide Jacobian (N x M = {s['wide_N_M']})",
            f"fwd / rev time ~ N / M = {wide['N'] / wide['M']:.3g} (pass counts)",
            f"fwd / rev = {_rng(wide_r)}; noise band x{nw:.2f}",
            faster_verdict(wide_r, nw),
            "the median ratio above the noise band",
        )
    )
    for name, row in (("tall", tall), ("wide", wide)):
        tr = raw[f"{row['N']}x{row['M']}/auto"]
        picked = row["auto_mode"]
        r = ratios(tr, "auto", picked)
        twin = ratios(tr, f"{picked}#2", picked)
        s[f"{name}_auto_mode"] = picked
        s[f"{name}_auto_over_picked"] = statistics.median(r)
        s[f"{name}_auto_same_program"] = row["auto_same_program"]
        checks.append(
            Check(
                f"auto_is_its_mode_{name}",
                f"`auto` runs the mode it picks ({picked}) for the {name} Jacobian: the same "
                "program, the same time",
                "auto / picked = 1 (identical optimized HLO)",
                f"HLO identical: {'yes' if row['auto_same_program'] else 'no'}; auto / "
                f"{picked} = {_rng(r)}; {picked} / itself = {_rng(twin)}",
                equal_verdict(r, noise_band(tr)) if row["auto_same_program"] else False,
                "identical HLO and the median ratio within the noise band (auto, its mode and "
                "its mode again alternated by themselves); beyond the band squared: not "
                "reproduced; in between: undetermined",
            )
        )
    s["auto_picks"] = ", ".join(f"{r['N']}x{r['M']}: {r['auto_mode']}" for r in jac)
    # Forward time grows with N, reverse time with M: slopes of log time against log size
    # (informational: below 1 where vectorized passes share work or fixed overhead dominates).
    s["fwd_time_loglog_slope_vs_N"] = _slope(
        np.log([r["N"] for r in jac]), np.log([r["fwd_ms"] for r in jac])
    )
    s["rev_time_loglog_slope_vs_M"] = _slope(
        np.log([r["M"] for r in jac]), np.log([r["rev_ms"] for r in jac])
    )
    ck = p.chunk_size
    mems = [
        (r[f"{m}_temp_bytes"], r[f"{m}_chunk{ck}_temp_bytes"])
        for r in jac
        for m in ("fwd", "rev")
        if r[f"{m}_temp_bytes"] is not None and r[f"{m}_chunk{ck}_temp_bytes"] is not None
    ]
    s["memory_analysis_available"] = bool(mems)
    if mems:
        s["chunked_temp_bytes_max_ratio"] = max(c / max(u, 1) for u, c in mems)
        s["chunked_temp_bytes_min_ratio"] = min(c / max(u, 1) for u, c in mems)
        # the many-pass mode at the extremes: rev for the tall Jacobian, fwd for the wide one
        cut = [
            tall[f"rev_chunk{ck}_temp_bytes"] / max(tall["rev_temp_bytes"], 1),
            wide[f"fwd_chunk{ck}_temp_bytes"] / max(wide["fwd_temp_bytes"], 1),
        ]
        checks.append(
            Check(
                "chunking_bounds_memory",
                f"chunks of {ck} basis vectors cut the working memory of the many-pass mode",
                f"temp memory ~ chunk / (number of passes) = {ck}/{tall['M']}, {ck}/{wide['N']}",
                f"chunked / unchunked XLA temp bytes: rev (tall) {cut[0]:.3g}, fwd (wide) "
                f"{cut[1]:.3g}",
                all(c < 0.5 for c in cut),
                "both ratios below 0.5 (XLA's memory analysis; deterministic)",
            )
        )
    else:
        checks.append(
            Check(
                "chunking_bounds_memory",
                "chunking cuts the working memory of the many-pass mode",
                "less temp memory",
                "XLA memory analysis unavailable on this backend",
                None,
            )
        )
    out["tables"]["jacobian"] = jac
    return out


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


def hvp_sweep(key, p: Params) -> tuple[list[dict], dict]:
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
    tr = timed_rounds(fns, (flat, v), p, twin="grad")
    rows = []
    for name, fn in fns.items():
        out = fn(flat, v)
        mem = xla_memory(fn)
        st = stats_ms(tr, name)
        r = ratios(tr, name, "grad")
        rows.append(
            {
                "op": name,
                "params": int(flat.size),
                "median_ms": st["median_ms"],
                "lo_ms": st["lo_ms"],
                "hi_ms": st["hi_ms"],
                "ratio_to_grad": statistics.median(r),
                "ratio_to_grad_lo": min(r),
                "ratio_to_grad_hi": max(r),
                "temp_bytes": mem["temp_bytes"],
                "max_rel_diff_vs_fwd_over_rev": (
                    None if name == "grad" else float(jnp.max(jnp.abs(out - ref))) / scale
                ),
            }
        )
    return rows, tr


def hvp_section(out: dict, p: Params, ctx) -> dict:
    hvps, tr = hvp_sweep(ctx.fold("hvp"), p)
    s, checks = out["summary"], out["checks"]
    noise = noise_band(tr)
    by_op = {r["op"]: r for r in hvps}
    for mode in HVP_MODES:
        s[f"hvp_{mode}_over_grad"] = by_op[mode]["ratio_to_grad"]
    s["hvp_max_rel_diff"] = max(by_op[m]["max_rel_diff_vs_fwd_over_rev"] for m in HVP_MODES)
    s["noise_band_hvp"] = noise
    r_all = {m: ratios(tr, m, "grad") for m in HVP_MODES}
    checks.append(
        Check(
            "hvp_small_constant",
            "a Hessian-vector product costs a small constant times one gradient (each of the "
            "three compositions)",
            f"HVP / gradient = O(1) (Pearlmutter 1994); here <= {p.hvp_max_ratio:g}",
            ", ".join(f"{m} {_rng(r)}" for m, r in r_all.items()) + f"; noise band x{noise:.2f}",
            _all_or_none([bound_verdict(r, 1.0, p.hvp_max_ratio, noise) for r in r_all.values()]),
            f"each median ratio in [1, {p.hvp_max_ratio:g}] (an HVP contains a gradient) by "
            "more than the noise band; outside by more than it: not reproduced",
        )
    )
    checks.append(
        Check(
            "hvp_modes_agree",
            "the three HVP compositions compute the same H v",
            "equal (exact arithmetic)",
            f"max relative difference {s['hvp_max_rel_diff']:.1e}",
            s["hvp_max_rel_diff"] < 1e-4,
            "max |difference| / max |H v| < 1e-4 (float32)",
        )
    )
    out["tables"]["hvp"] = hvps
    return out


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


def residual_section(out: dict, p: Params, ctx) -> dict:
    res = residual_sweep(ctx.fold("residuals"), p)
    s, checks = out["summary"], out["checks"]
    plain = [r for r in res if not r["checkpoint"]]
    ckpt = [r for r in res if r["checkpoint"]]
    act = [r["activation_bytes"] for r in plain]
    s["residual_bytes_monotone_in_depth"] = bool(
        all(b > a for a, b in zip(act[:-1], act[1:], strict=True))
    )
    s["activation_bytes_per_layer"] = _slope([r["depth"] for r in plain], act)
    s["activation_bytes_per_layer_checkpointed"] = _slope(
        [r["depth"] for r in ckpt], [r["activation_bytes"] for r in ckpt]
    )
    s["layer_output_bytes"] = p.residual_batch * p.residual_width * 4
    lob = s["layer_output_bytes"]
    checks.append(
        Check(
            "residuals_linear_in_depth",
            "reverse mode stores intermediates: its memory grows linearly with depth",
            f"at least one layer output ({lob} bytes) per layer",
            f"{s['activation_bytes_per_layer']:.0f} bytes per layer, strictly increasing: "
            f"{'yes' if s['residual_bytes_monotone_in_depth'] else 'no'}",
            s["residual_bytes_monotone_in_depth"] and s["activation_bytes_per_layer"] >= lob,
            "strictly increasing and a slope >= one layer output (cr.graph.residuals; "
            "deterministic)",
        )
    )
    checks.append(
        Check(
            "checkpointing_cuts_residuals",
            "checkpointing each layer keeps only its input",
            f"one layer output ({lob} bytes) per layer",
            f"{s['activation_bytes_per_layer_checkpointed']:.0f} bytes per layer",
            abs(s["activation_bytes_per_layer_checkpointed"] - lob) <= 0.05 * lob,
            "slope within 5% of one layer output",
        )
    )
    out["tables"]["residuals"] = res
    return out


def _slope(xs, ys) -> float:
    return float(np.polyfit(np.asarray(xs, float), np.asarray(ys, float), 1)[0])


def _chain(out: dict, p: Params, ctx) -> dict:
    """Section 4 (issue 20's own code, below), with its verdict as a claim check."""
    out = chain_section(out, p)
    s = out["summary"]
    if "chain_agrees" in s:
        out["checks"].append(
            Check(
                "chain_optimal_plan",
                "the cheapest bracketing of a chain's layer Jacobians is within 1.1x of the "
                "best of fwd / rev / auto on every shape, >= 10x faster than auto on a "
                "bottleneck",
                "optimal <= 1.1x best; bottleneck auto / optimal >= 10",
                f"optimal / best <= {s['chain_optimal_over_best_max']:.2f}; bottleneck "
                f"auto / optimal {s['chain_bottleneck_auto_over_optimal']:.1f}",
                bool(s["chain_agrees"]),
                "the chain section's criterion (medians of per-repetition ratios)",
            )
        )
    return out


#: The sections, in order: ``(out, params, ctx) -> out``. A new section appends itself here
#: (and to PLOTS / REPORTS) and adds its claim checks to ``out["checks"]``.
SECTIONS = [jacobian_section, hvp_section, residual_section, _chain]


def run(params: Params, ctx) -> dict:
    out: dict = {"tables": {}, "summary": {}, "checks": []}
    for section in SECTIONS:
        out = section(out, params, ctx)
    checks = out.pop("checks")
    out["tables"]["claims"] = [c.row() for c in checks]
    for c in checks:
        out["summary"][f"{c.name}.verdict"] = c.verdict
    out["summary"]["verdict"] = overall(c.passed for c in checks)
    return out


def _core_plot(results: dict, params: Params) -> dict:
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
        med = np.array([r[f"{name}_ms"] for r in jac])
        if f"{name}_lo_ms" in jac[0]:  # error bars: the range of the round medians
            err = [med - [r[f"{name}_lo_ms"] for r in jac], [r[f"{name}_hi_ms"] for r in jac] - med]
            axes[0].errorbar(ratio, med, yerr=err, fmt=style, capsize=3, label=name)
        else:
            axes[0].plot(ratio, med, style, label=name)
        mem = [r[f"{name}_temp_bytes"] for r in jac]
        if all(m is not None for m in mem):
            axes[1].plot(ratio, [max(m, 1) for m in mem], style, label=name)
    for ax, ylabel in zip(
        axes, ("median time (ms), bars: range over rounds", "XLA temp bytes"), strict=True
    ):
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
    med = np.array([r["median_ms"] for r in hv])
    if "lo_ms" in hv[0]:
        err = [med - [r["lo_ms"] for r in hv], [r["hi_ms"] for r in hv] - med]
        ax.bar([r["op"] for r in hv], med, yerr=err, capsize=4)
    else:
        ax.bar([r["op"] for r in hv], med)
    ax.set_ylabel("median time (ms), bars: range over rounds")
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
    return figs


def plot(results: dict, params: Params) -> dict:
    figs: dict = {}
    for fn in PLOTS:
        figs.update(fn(results, params))
    return figs


def _core_report(results: dict, params: Params) -> str:
    s = results["summary"]
    published = (
        "A Jacobian of f: R^N -> R^M costs O(N) passes in forward mode and O(M) in reverse "
        "mode (Griewank & Walther 2008, *Evaluating Derivatives*; Baydin et al. 2018, JMLR), so "
        "forward mode wins for N << M and reverse mode for N >> M; chunking the basis bounds "
        "the working memory. A Hessian-vector product costs a small constant times one "
        "gradient (Pearlmutter 1994). Reverse mode stores intermediates for its backward pass, "
        "so its memory grows with the length (depth) of the computation; checkpointing trades "
        "that memory for recomputation (Griewank & Walther ch. 12; Chen et al. 2016)."
    )
    p = params
    setup = (
        f"Jacobians of a two-layer tanh map (H = {p.hidden}) at (N, M) = {p.jac_sizes}; HVPs of "
        f"a {p.hvp_depth}-layer tanh MLP loss (width {p.hvp_width}, batch {p.hvp_batch}); "
        f"residuals of MLPs of depth {p.residual_depths}. Timings: {p.rounds} rounds of "
        f"{max(1, math.ceil(p.reps / p.rounds))} interleaved calls per contender on a shared "
        "2-core CPU; each ratio is the median over rounds with its range, and one program is "
        "timed twice in every round to measure the noise band. A timing claim whose margin "
        "does not exceed the noise band gets no verdict ('not tested'). "
        f"`auto` picked: {s.get('auto_picks', '?')}."
    )
    mem = (
        f"Chunking changes XLA's temp bytes by a factor {s['chunked_temp_bytes_min_ratio']:.3g} "
        f"to {s['chunked_temp_bytes_max_ratio']:.3g} across the sweep (chunk size "
        f"{p.chunk_size}; < 1 means less working memory; the few-pass mode can grow)."
        if s.get("memory_analysis_available")
        else "XLA's memory analysis is not available on this backend."
    )
    hvp_mem = (
        ", ".join(
            f"{r['op']} {r['temp_bytes']}" for r in results["tables"]["hvp"] if r["temp_bytes"]
        )
        or "not available"
    )
    notes = (
        f"Log-log slope of forward time against N: {s['fwd_time_loglog_slope_vs_N']:.2f}; of "
        f"reverse time against M: {s['rev_time_loglog_slope_vs_M']:.2f} (informational: 1 = "
        "linear in the number of passes; below 1 where vectorized passes share work or fixed "
        f"overhead dominates). {mem} HVP XLA temp bytes: {hvp_mem}. The `grad_temp_bytes` "
        "column of the residuals table is XLA's temp for the whole jitted gradient program, "
        "which schedules, fuses and reuses buffers, so it need not follow the residual "
        "accounting."
    )
    return claims_section(published, setup, results["tables"]["claims"], notes)


def report(results: dict, params: Params) -> str:
    return "\n".join(fn(results, params) for fn in REPORTS)


def _chain_plot(results: dict, params: Params) -> dict:
    return chain_plot(results)


def _chain_report(results: dict, params: Params) -> str:
    return chain_report(results)


#: Figures and report parts of the sections, in order: ``(results, params) -> dict / str``.
PLOTS = [_core_plot, _chain_plot]
REPORTS = [_core_report, _chain_report]


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
