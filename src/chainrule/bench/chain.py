"""The chain rows of the ``ad`` suite: ``cr.chain_jacobian`` plans against ``jacobian(auto)``.

For chains of dense ``tanh`` layers of several shapes (tall, wide, a bottleneck, an hourglass,
a wide middle), the Jacobian of the composition by four contenders, each under one
``jax.jit`` with the weights as arguments: ``chain fwd`` (``n_0`` forward passes),
``chain rev`` (``n_L`` reverse passes), ``auto`` (``cr.jacobian(mode="auto")`` of the
composition, the better pure mode) and ``chain optimal`` (the plan of
``cr.chain_jacobian_plan``). They are called in alternation (``time_alternating``) after a
correctness check against ``auto``. Each row carries the plan's predicted FLOPs next to the
measured time. Targets: ``chain optimal`` within 1.1x of the best measured contender on every
shape, and at least 10x faster than ``auto`` on the bottleneck.

Row fields (those of :mod:`chainrule.bench.ad`): ``suite, name ("chain <shape>"), impl, size
(the widths), ms, min_ms, first_call_ms, reps, ratio`` (``ms`` over the median of the best
measured contender, ``vs``), ``ratio_paired`` (the median over repetitions of the per-repetition
ratio to ``vs``: on a shared machine a burst of load hits one repetition of both, so this is the
one the target is judged on), ``ratio_min`` (``min_ms`` over ``vs``'s), ``predicted_flops``,
``predicted_ratio`` (the ratio the cost model predicts), ``plan`` (the bracketing), and on the
optimal row ``x_auto`` (auto's median over optimal's), ``x_auto_paired`` (the median of the
per-repetition ratios, what the bottleneck target is judged on), ``target``, ``meets_target``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

import chainrule as cr
from chainrule.bench.timing import cold_call_ms, time_alternating

__all__ = ["SHAPES", "OPTIMAL_TARGET", "BOTTLENECK_TARGET", "shapes", "measure_chain", "chain_rows"]

OPTIMAL_TARGET = 1.1  # chain optimal / the best measured contender
BOTTLENECK_TARGET = 10.0  # auto / chain optimal on the bottleneck
CONTENDERS = ("chain fwd", "chain rev", "auto", "chain optimal")


def shapes(width: int) -> dict[str, tuple[int, ...]]:
    """The five chain shapes at wide width ``width`` (narrow layers ``width // 64``, >= 2).

    Args:
      width: the widest layer's width.

    Returns:
      ``{shape: (n_0, ..., n_L)}`` for tall, wide, bottleneck, hourglass and wide middle.

    Example:
      >>> shapes(256)["bottleneck"]
      (256, 256, 4, 256, 256)
    """
    w, n = width, max(2, width // 64)
    q = max(n, w // 4)
    return {
        "tall": (n, w, w, w),
        "wide": (w, w, w, n),
        "bottleneck": (w, w, n, w, w),
        "hourglass": (w, q, n, q, w),
        "wide middle": (n, w, w, n),
    }


# per size preset of the ad suite: the CPU's (1024 -> 16 -> 1024, the issue's "1000 -> 10 ->
# 1000 style") calls take ~0.5-50 ms on 2 cores; quick (a smoke test of the harness, not a
# measurement) keeps two shapes to keep its compiles few
SHAPES = {
    "quick": {k: v for k, v in shapes(32).items() if k in ("tall", "bottleneck")},
    "cpu": shapes(1024),
    "gpu": shapes(4096),
}


def _layers(ws: list[tuple[jax.Array, jax.Array]]) -> list[Callable]:
    return [lambda h, w=w, b=b: jnp.tanh(w @ h + b) for w, b in ws]


def _compose(fs: list[Callable]) -> Callable:
    def f(x):
        for g in fs:
            x = g(x)
        return x

    return f


def _contenders(plan: Any) -> dict[str, Callable]:
    """Each contender as ``fn(ws, x)`` under its own jit; the weights are arguments, not
    constants folded into the programs."""
    return {
        "chain fwd": jax.jit(lambda ws, x: cr.chain_jacobian(_layers(ws), "fwd")(x)),
        "chain rev": jax.jit(lambda ws, x: cr.chain_jacobian(_layers(ws), "rev")(x)),
        "auto": jax.jit(lambda ws, x: cr.jacobian(_compose(_layers(ws)), mode="auto")(x)),
        "chain optimal": jax.jit(lambda ws, x: cr.chain_jacobian(_layers(ws), plan)(x)),
    }


def measure_chain(
    widths: tuple[int, ...], reps: int, warmup: int, seed: int = 0
) -> dict[str, dict[str, Any]]:
    """Plan, check and time the four contenders on a chain of dense tanh layers.

    The optimal contender runs the plan chosen (by ``cr.chain_jacobian_plan``, the same one
    ``mode="optimal"`` picks) before timing, so its time is the plan's, not the pricing's.

    Args:
      widths: ``n_0 ... n_L``.
      reps: timed repetitions per contender (alternated).
      warmup: untimed calls of each first.
      seed: for the weights and the input.

    Returns:
      ``{contender: {"median_ms", "min_ms", "times_ms", "first_call_ms", "predicted_flops",
      "plan", "max_abs_diff"}}``, float32.

    Raises:
      AssertionError: a contender's Jacobian differs from ``auto``'s beyond float32 rounding.
    """
    keys = jax.random.split(jax.random.PRNGKey(seed), len(widths))
    ws = [
        (
            jax.random.normal(keys[i], (widths[i + 1], widths[i]), jnp.float32)
            / math.sqrt(widths[i]),
            jnp.full((widths[i + 1],), 0.1, jnp.float32),
        )
        for i in range(len(widths) - 1)
    ]
    x = jax.random.normal(keys[-1], (widths[0],), jnp.float32)
    ws, x = jax.device_put((ws, x))
    plan = cr.chain_jacobian_plan(_layers(ws), x)
    fns = _contenders(plan)
    calls = {name: (lambda f=f: f(ws, x)) for name, f in fns.items()}
    first = {name: cold_call_ms(call) for name, call in calls.items()}
    ref = np.asarray(calls["auto"]())
    scale = float(np.max(np.abs(ref))) or 1.0
    diffs = {name: float(np.max(np.abs(np.asarray(c()) - ref))) for name, c in calls.items()}
    for name, d in diffs.items():
        if not d <= 1e-4 * scale:
            raise AssertionError(f"chain {widths}: {name} differs from auto by {d:.3g}")
    stats = time_alternating(calls, warmup=warmup, reps=reps)
    n = len(widths) - 1
    auto_name = next(c for c, _, _ in plan.candidates if c.startswith("auto"))
    predicted = {
        "chain fwd": (plan.predicted("fwd"), f"fwd[0:{n}]"),
        "chain rev": (plan.predicted("rev"), f"rev[0:{n}]"),
        "auto": (plan.predicted(auto_name), auto_name),
        "chain optimal": (plan.predicted_flops, plan.bracketing),
    }
    for name in CONTENDERS:
        stats[name].update(
            first_call_ms=first[name],
            predicted_flops=predicted[name][0],
            plan=predicted[name][1],
            max_abs_diff=diffs[name],
        )
    return stats


def chain_rows(size: str, reps: int, warmup: int) -> list[dict[str, Any]]:
    """The rows of every shape at the ``ad`` suite's size preset (``quick``/``cpu``/``gpu``).

    Args:
      size: a key of :data:`SHAPES`.
      reps: timed repetitions per contender.
      warmup: untimed calls per contender.

    Returns:
      Four rows per shape, in the row format of :mod:`chainrule.bench.ad`.
    """
    rows: list[dict[str, Any]] = []
    for shape, widths in SHAPES[size].items():
        stats = measure_chain(widths, reps, warmup)
        best = min(CONTENDERS, key=lambda c: stats[c]["median_ms"])
        best_ms, best_pred = stats[best]["median_ms"], stats[best]["predicted_flops"]
        best_times = np.asarray(stats[best]["times_ms"])
        label = "-".join(map(str, widths)) + " f32"
        for name in CONTENDERS:
            st = stats[name]
            row: dict[str, Any] = {
                "suite": "ad",
                "name": f"chain {shape}",
                "impl": name,
                "size": label,
                "ms": st["median_ms"],
                "min_ms": st["min_ms"],
                "first_call_ms": st["first_call_ms"],
                "reps": len(st["times_ms"]),
                "ratio": st["median_ms"] / best_ms,
                "ratio_paired": float(np.median(np.asarray(st["times_ms"]) / best_times)),
                "ratio_min": st["min_ms"] / stats[best]["min_ms"],
                "vs": f"best measured ({best})",
                "predicted_flops": float(st["predicted_flops"]),
                "predicted_ratio": float(st["predicted_flops"]) / float(best_pred),
                "plan": st["plan"],
                "size_preset": size,
            }
            if name == "chain optimal":
                x_auto = stats["auto"]["median_ms"] / st["median_ms"]
                auto_times = np.asarray(stats["auto"]["times_ms"])
                x_auto_paired = float(np.median(auto_times / np.asarray(st["times_ms"])))
                row["x_auto"] = x_auto
                row["x_auto_paired"] = x_auto_paired
                targets = [f"ratio_paired<={OPTIMAL_TARGET}"]
                met = [row["ratio_paired"] <= OPTIMAL_TARGET]
                if shape == "bottleneck":
                    targets.append(f"x_auto_paired>={BOTTLENECK_TARGET:g}")
                    met.append(x_auto_paired >= BOTTLENECK_TARGET)
                row["target"] = " and ".join(targets)
                row["meets_target"] = all(met)
                row["note"] = (
                    f"plan {st['plan']}; auto / optimal = {x_auto:.2f} (paired "
                    f"{x_auto_paired:.2f}); ratio paired {row['ratio_paired']:.3f}, of minima "
                    f"{row['ratio_min']:.3f}"
                )
            else:
                row["note"] = f"plan {st['plan']}"
            rows.append(row)
    return rows


def main(argv: list[str] | None = None) -> int:
    """``python -m chainrule.bench.chain [--size cpu] [--reps 30] [--json FILE]``: these rows
    alone, with the environment header (``chainrule bench ad`` runs them with the rest)."""
    import argparse

    from chainrule.bench.report import format_header, format_table, write_json
    from chainrule.bench.timing import env_header

    ap = argparse.ArgumentParser(prog="python -m chainrule.bench.chain")
    ap.add_argument("--size", choices=sorted(SHAPES), default="cpu")
    ap.add_argument("--reps", type=int, default=30)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    header = env_header()
    rows = chain_rows(args.size, args.reps, args.warmup)
    print(format_header(header))
    print(format_table(rows))
    if args.json:
        write_json(args.json, header, rows)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
