"""``chainrule bench multidevice``: the data-parallel path's cost against the single-device one.

At equal total work (one fixed batch, a fixed MLP), each row times two contenders in
alternation: ``plain`` -- the batch on one device -- and ``sharded`` -- the same batch split
along a mesh axis of ``d`` devices with :func:`chainrule.sharding.shard_batch` (XLA's SPMD
partitioner does the reduction) -- for ``cr.hvp`` (eager, the AD core's compiled program) and
for a ``cr.curvature.hessian`` matvec over two batches. The figure is ``ratio = sharded /
plain``.

On the CPU the devices are simulated (``--xla_force_host_platform_device_count=d``, one
subprocess per ``d`` in 1, 2, 4, 8): they share the machine's cores, so the ratio measures the
partitioning's overhead, not a speed-up. On an accelerator the suite runs in-process over
``d`` = 1, 2, 4, ... of the local devices; the ``d = 1`` row carries the target: the
data-parallel path over one device costs at most 1.05x the plain path.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any

__all__ = ["suite", "measure"]

TARGET = 1.05
SIZES = {  # (layer widths, total batch)
    "quick": ([8, 32, 4], 64),
    "cpu": ([64, 256, 256, 10], 512),
    "gpu": ([512, 2048, 2048, 10], 8192),
}


def measure(num_devices: int, size: str, reps: int | None = None) -> list[dict]:
    """Time plain against sharded over the first ``num_devices`` local devices.

    Args:
      num_devices: devices in the data axis.
      size: a key of :data:`SIZES`.
      reps: timed repetitions per contender (default: the run's).

    Returns:
      Rows ``{name, devices, plain_ms, sharded_ms, ratio, ...}``.
    """
    import jax
    import jax.numpy as jnp
    import numpy as np
    from jax.sharding import Mesh

    import chainrule as cr
    from chainrule.bench.timing import time_alternating

    widths, batch = SIZES[size]
    key = jax.random.PRNGKey(0)
    params = cr.nets.mlp_init(key, widths)
    x = jax.random.normal(key, (batch, widths[0]))
    y = jax.random.randint(jax.random.fold_in(key, 1), (batch,), 0, widths[-1])
    mesh = Mesh(np.array(jax.devices()[:num_devices]), ("data",))
    xs, ys = cr.sharding.shard_batch((x, y), mesh, "data")
    ce = cr.curvature.loss_value
    loss = lambda p, x, y: ce("softmax_cross_entropy", cr.nets.mlp_apply(p, x, "tanh"), y)  # noqa: E731
    v = jax.tree.map(jnp.ones_like, params)
    half = batch // 2
    batches = [(x[:half], y[:half]), (x[half:], y[half:])]
    H1 = cr.curvature.hessian(lambda p, b: loss(p, *b), params, batches)
    Hd = cr.curvature.hessian(lambda p, b: loss(p, *b), params, batches, mesh=mesh)
    cases = {
        "hvp (eager, fwd-over-rev)": {
            "plain": lambda: cr.hvp(lambda p: loss(p, x, y), params, v),
            "sharded": lambda: cr.hvp(lambda p: loss(p, xs, ys), params, v),
        },
        "curvature.hessian matvec (2 batches)": {
            "plain": lambda: H1.matvec(v),
            "sharded": lambda: Hd.matvec(v),
        },
    }
    rows = []
    n = sum(a.size for a in jax.tree.leaves(params))
    backend = jax.default_backend()
    for name, fns in cases.items():
        t = time_alternating(fns, reps=reps)
        plain, sharded = t["plain"]["median_ms"], t["sharded"]["median_ms"]
        row: dict[str, Any] = {
            "name": name,
            "impl": f"sharded over {num_devices} {backend} device{'s' * (num_devices > 1)}",
            "devices": num_devices,
            "backend": backend,
            "size": f"{n} params, batch {batch}",
            "ms": sharded,
            "vs": f"plain {plain:.3f} ms",
            "plain_ms": plain,
            "sharded_ms": sharded,
            "ratio": sharded / plain,
            "sharded_min_over_plain_min": t["sharded"]["min_ms"] / t["plain"]["min_ms"],
        }
        if backend == "cpu":
            row["note"] = "simulated devices share the cores: an overhead, not a speed-up"
        if num_devices == 1 and backend != "cpu" and size != "quick":
            row["target"] = f"sharded over one device <= {TARGET}x plain"
            row["meets_target"] = row["ratio"] <= TARGET
        rows.append(row)
    return rows


def _simulated(num_devices: int, size: str, reps: int | None) -> list[dict]:
    """:func:`measure` in a subprocess with ``num_devices`` simulated CPU devices."""
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    flags = [f for f in env.get("XLA_FLAGS", "").split() if "device_count" not in f]
    # Simulated devices are threads on shared cores: on a loaded machine they can reach a
    # collective far apart, and XLA's 40 s rendezvous timeout would abort the worker.
    flags += [
        f"--xla_force_host_platform_device_count={num_devices}",
        "--xla_cpu_collective_call_terminate_timeout_seconds=900",
        "--xla_cpu_collective_timeout_seconds=900",
    ]
    env["XLA_FLAGS"] = " ".join(flags)
    cmd = [sys.executable, "-m", "chainrule.bench.multidevice", str(num_devices), size]
    cmd += [str(reps)] if reps is not None else []
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=1800)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def suite(quick: bool = False, reps: int | None = None, size: str | None = None) -> list[dict]:
    """The multi-device table (see the module docstring).

    Args:
      quick: tiny sizes and 3 repetitions (a smoke test; the target is not judged).
      reps: timed repetitions per contender.
      size: ``"cpu"`` or ``"gpu"`` sizes (default: by backend; ``"auto"`` likewise).

    Returns:
      One row per (case, device count).
    """
    import jax

    from chainrule.bench.timing import resolve_reps

    backend = jax.default_backend()
    if quick:
        size, reps = "quick", reps or 3
    elif size in (None, "auto"):
        size = "cpu" if backend == "cpu" else "gpu"
    reps = resolve_reps(reps)
    if backend == "cpu":
        counts = (1, 2) if quick else (1, 2, 4, 8)
        rows = []
        for d in counts:  # one failed device count must not lose the others' rows
            try:
                rows.extend(_simulated(d, size, reps))
            except (RuntimeError, subprocess.TimeoutExpired) as e:
                rows.append({"name": "all cases", "devices": d, "error": str(e)[-500:]})
        return rows
    local = len(jax.devices())
    counts = [d for d in (1, 2, 4, 8, 16, 32, 64) if d <= local]
    return [row for d in counts for row in measure(d, size, reps)]


if __name__ == "__main__":  # worker: python -m chainrule.bench.multidevice DEVICES SIZE [REPS]
    _d, _size = int(sys.argv[1]), sys.argv[2]
    _reps = int(sys.argv[3]) if len(sys.argv) > 3 else None
    print(json.dumps(measure(_d, _size, _reps)))
