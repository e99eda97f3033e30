"""The ``norm`` suite: forward+backward (x, dy -> dx) of layer norm and batch norm.

Each case is jitted as ``x, dy -> dx`` (the VJP of the forward, as in
``/work/shared/anchors/anchor_norm.py``): chainrule's :func:`~chainrule.normalization.layer_norm`
and training-mode :func:`~chainrule.normalization.batch_norm` against flax.linen's
``LayerNorm``/``BatchNorm`` (their defaults: the one-pass "fast" variance) and, when installed,
torch's functional forms, on the same inputs, timed in alternation within one run. No scale or
bias: the comparison is of the normalization itself.

Rows: ``suite="norm"``, ``name`` (``layer_norm``/``batch_norm``), ``impl`` (``chainrule``,
``flax``, ``torch``), ``ms`` (median), ``min_ms``, ``gbps`` (achieved bandwidth for the minimum
traffic of three tensors of x's size: read x, read dy, write dx), ``shape``, ``device``, and on
chainrule's rows ``ratio`` = chainrule / flax median time (target <= 1).

Run: ``chainrule bench norm [--quick]`` (or ``python -m chainrule.bench.norm``).
"""

from __future__ import annotations

import sys
from typing import Any

import jax
import jax.numpy as jnp

from chainrule.bench.timing import time_alternating, time_call

__all__ = ["suite", "SIZES"]

# (rows, cols) of float32 x per backend; quick is a CI smoke size.
SIZES = {"quick": (256, 512), "cpu": (4096, 1024), "gpu": (16384, 8192), "tpu": (16384, 8192)}


def _shape(quick: bool) -> tuple[int, int]:
    if quick:
        return SIZES["quick"]
    return SIZES.get(jax.default_backend(), SIZES["cpu"])


def _jax_cases(eps: float) -> dict[str, dict[str, Any]]:
    import flax.linen as nn

    from chainrule import normalization as crn

    ln = nn.LayerNorm(epsilon=eps, use_scale=False, use_bias=False)
    bn = nn.BatchNorm(use_running_average=False, use_scale=False, use_bias=False, epsilon=eps)

    def cr_bn(x, state):
        return crn.batch_norm(x, None, state, training=True, eps=eps)[0]

    def flax_bn(x, bvars):
        return bn.apply(bvars, x, mutable=["batch_stats"])[0]

    return {
        "layer_norm": {
            "chainrule": lambda x, aux: crn.layer_norm(x, eps=eps),
            "flax": lambda x, aux: ln.apply({}, x),
        },
        "batch_norm": {"chainrule": cr_bn, "flax": flax_bn},
        "_init": lambda x: {
            "batch_norm": {
                "chainrule": crn.batch_norm_init(x.shape[-1], x.dtype)[1],
                "flax": bn.init(jax.random.PRNGKey(2), x),
            }
        },
    }


def _vjp_fn(f):
    return jax.jit(lambda x, dy, aux: jax.vjp(lambda x: f(x, aux), x)[1](dy)[0])


def _torch_rows(r: int, c: int, eps: float, reps: int, nbytes: int) -> list[dict]:
    try:
        import torch
        import torch.nn.functional as F
    except Exception:  # torch is optional
        return []
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    gen = torch.Generator(device="cpu").manual_seed(0)
    x = (torch.randn(r, c, generator=gen) * 3 + 1).to(dev).requires_grad_(True)
    dy = torch.randn(r, c, generator=gen).to(dev)

    def sync(out):
        if dev == "cuda":
            torch.cuda.synchronize()
        return out

    def ln():
        y = F.layer_norm(x, (c,), eps=eps)
        return sync(torch.autograd.grad(y, x, dy)[0])

    def bn():
        y = F.batch_norm(x, None, None, training=True, eps=eps)
        return sync(torch.autograd.grad(y, x, dy)[0])

    rows = []
    for name, f in (("layer_norm", ln), ("batch_norm", bn)):
        t = time_call(f, reps=reps)
        rows.append(_row(name, "torch", t, nbytes, (r, c), f"torch {dev}"))
    return rows


def _row(name, impl, t, nbytes, shape, device) -> dict:
    return {
        "suite": "norm",
        "name": name,
        "impl": impl,
        "ms": t["median_ms"],
        "min_ms": t["min_ms"],
        "gbps": nbytes / (t["median_ms"] * 1e-3) / 1e9,
        "shape": f"{shape[0]}x{shape[1]} float32",
        "device": device,
    }


def suite(quick: bool = False) -> list[dict]:
    """Time x, dy -> dx of layer norm and batch norm: chainrule vs flax (vs torch).

    Args:
      quick: a small input and few repetitions (seconds; for CI).

    Returns:
      One dict per (case, implementation); see the module docstring for the keys.
    """
    r, c = _shape(quick)
    reps = 5 if quick else 30
    eps = 1e-5
    nbytes = 3 * r * c * 4
    kx, kd = jax.random.split(jax.random.PRNGKey(0))
    x = jax.device_put(jax.random.normal(kx, (r, c), jnp.float32) * 3 + 1)
    dy = jax.device_put(jax.random.normal(kd, (r, c), jnp.float32))
    dev = jax.devices()[0]
    device = f"{jax.default_backend()} {getattr(dev, 'device_kind', dev)}"
    cases = _jax_cases(eps)
    aux = cases.pop("_init")(x)
    rows = []
    for name, impls in cases.items():
        fns = {}
        for impl, f in impls.items():
            g = _vjp_fn(f)
            a = aux.get(name, {}).get(impl)
            fns[impl] = lambda x, dy, g=g, a=a: g(x, dy, a)
        times = time_alternating(fns, x, dy, reps=reps)
        for impl, t in times.items():
            row = _row(name, impl, t, nbytes, (r, c), device)
            if impl == "chainrule":
                row["ratio"] = t["median_ms"] / times["flax"]["median_ms"]
            rows.append(row)
    rows += _torch_rows(r, c, eps, reps, nbytes)
    return rows


if __name__ == "__main__":
    # One table printer for every suite: the bench CLI's.
    from chainrule.bench.cli import main

    sys.exit(main(["norm", *sys.argv[1:]]))
