"""The ``init`` suite: initializer throughput on large kernels, chainrule vs jax.nn.initializers.

Each case jits ``key -> init(key, shape, dtype)`` (shape and dtype static) for chainrule's
initializer and its ``jax.nn.initializers`` counterpart of the same distribution, compiles both
(timed separately), and times them in alternation within one run (``time_alternating``). The
orthogonal cases include the QR factorization, which dominates their cost.

Counterparts (like for like, same distribution and cost class):

* ``normal`` / ``he_normal`` / ``lecun_normal`` (conv): jax ``normal`` / ``variance_scaling(.,
  ., "normal")`` (chainrule's ``*_normal`` are untruncated).
* ``he_normal_truncated``: jax ``he_normal`` (truncated). ``truncated_normal``: jax
  ``truncated_normal`` with the std correction applied by hand.
* ``uniform``: jax ``uniform`` (``[0, s)`` there, ``[-s, s)`` here: same cost).
* ``xavier_uniform``: jax ``glorot_uniform``; ``orthogonal``: jax ``orthogonal``.

Rows: ``suite="init"``, ``name``, ``impl`` (``chainrule`` or ``jax``), ``ms`` (median), ``min_ms``,
``compile_ms``, ``melem_per_s`` (output elements per second, millions), ``shape``, ``dtype``,
``device``, and on chainrule's rows ``ratio`` = chainrule / jax median time (target ~1).

Run: ``chainrule bench init [--quick]`` (or ``python -m chainrule.bench.init``).
"""

from __future__ import annotations

import math
import sys

import jax
import jax.numpy as jnp

from chainrule.bench.timing import compile_ms, time_alternating

__all__ = ["suite", "SIZES"]

# n for dense n x n kernels, c for 3x3 conv kernels (3, 3, c, c), m for orthogonal m x m.
SIZES = {
    "quick": {"n": 512, "c": 64, "m": 128},
    "cpu": {"n": 2048, "c": 128, "m": 512},  # 4096/1024 took ~10 min on a 2-core CPU
    "gpu": {"n": 8192, "c": 1024, "m": 4096},
    "tpu": {"n": 8192, "c": 1024, "m": 4096},
}

_TRUNC_STD = 0.87962566103423978


def _sizes(quick: bool) -> dict[str, int]:
    if quick:
        return SIZES["quick"]
    return SIZES.get(jax.default_backend(), SIZES["cpu"])


def _cases(quick: bool) -> list[tuple]:
    from chainrule import initializers as ini

    ji = jax.nn.initializers
    s = _sizes(quick)
    n, c, m = s["n"], s["c"], s["m"]
    f32, bf16 = jnp.float32, jnp.bfloat16
    return [
        ("normal", ini.normal(0.02), ji.normal(0.02), (n, n), f32),
        ("uniform", ini.uniform(0.02), ji.uniform(0.02), (n, n), f32),
        (
            "truncated_normal",
            ini.truncated_normal(0.02),
            ji.truncated_normal(0.02 / _TRUNC_STD),
            (n, n),
            f32,
        ),
        ("he_normal", ini.he_normal(), ji.variance_scaling(2.0, "fan_in", "normal"), (n, n), f32),
        ("he_normal_truncated", ini.he_normal(truncated=True), ji.he_normal(), (n, n), f32),
        (
            "he_normal_bf16",
            ini.he_normal(),
            ji.variance_scaling(2.0, "fan_in", "normal"),
            (n, n),
            bf16,
        ),
        ("xavier_uniform", ini.xavier_uniform(), ji.glorot_uniform(), (n, n), f32),
        (
            "lecun_normal_conv3x3",
            ini.lecun_normal(),
            ji.variance_scaling(1.0, "fan_in", "normal"),
            (3, 3, c, c),
            f32,
        ),
        ("orthogonal", ini.orthogonal(), ji.orthogonal(), (m, m), f32),
        ("orthogonal_tall", ini.orthogonal(), ji.orthogonal(), (4 * m, m // 2), f32),
        ("orthogonal_conv3x3", ini.orthogonal(), ji.orthogonal(), (3, 3, c, c), f32),
    ]


def suite(quick: bool = False) -> list[dict]:
    """Time chainrule's initializers against jax.nn.initializers on large kernels.

    Args:
      quick: CI smoke sizes (512x512 dense, 128x128 orthogonal) and fewer repetitions.

    Returns:
      One row per (case, impl); see the module docstring for the keys.

    Example:
      >>> rows = suite(quick=True)  # doctest: +SKIP
      >>> {r["impl"] for r in rows}  # doctest: +SKIP
      {'chainrule', 'jax'}
    """
    reps, warmup = (5, 1) if quick else (20, 3)
    key = jax.device_put(jax.random.key(0))
    dev = jax.devices()[0]
    device = f"{jax.default_backend()} {getattr(dev, 'device_kind', str(dev))}"
    rows: list[dict] = []
    for name, ours, theirs, shape, dtype in _cases(quick):
        fns = {
            "chainrule": jax.jit(lambda k, f=ours, s=shape, d=dtype: f(k, s, d)),
            "jax": jax.jit(lambda k, f=theirs, s=shape, d=dtype: f(k, s, d)),
        }
        comp = {impl: compile_ms(fn, key) for impl, fn in fns.items()}
        times = time_alternating(fns, key, warmup=warmup, reps=reps)
        size = math.prod(shape)
        for impl, t in times.items():
            row = {
                "suite": "init",
                "name": name,
                "impl": impl,
                "ms": t["median_ms"],
                "min_ms": t["min_ms"],
                "compile_ms": comp[impl],
                "melem_per_s": size / (t["median_ms"] * 1e-3) / 1e6,
                "shape": "x".join(map(str, shape)),
                "dtype": jnp.dtype(dtype).name,
                "device": device,
            }
            if impl == "chainrule":
                row["ratio"] = t["median_ms"] / times["jax"]["median_ms"]
            rows.append(row)
    return rows


if __name__ == "__main__":
    # One table printer for every suite: the bench CLI's.
    from chainrule.bench.cli import main

    sys.exit(main(["init", *sys.argv[1:]]))
