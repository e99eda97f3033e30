"""Where a cold gradient check's time goes on a GPU, and which compiler options shorten it.

Each variant runs in a fresh process (``--child``): the 196k-parameter MLP of
``chainrule bench check`` checked at order 2, fwd+rev, cold (compilation included) and again at
a second point (median of 5). It prints one JSON line per variant with the cold and second
times, JAX's compile events (trace, lowering, backend compile: count and seconds) and the
second point split into the check's program (``_eval``, blocked), the Richardson step
(``_fd_tree``) and the rest (host).

A variant is extra XLA options merged over chainrule's own for both of the check's programs
(through ``CHAINRULE_CHECK_XLA_OPTIONS``), and optionally ``levels``;
``jax.test_util.check_grads`` runs once beside them as the reference. Device use: ~2 minutes
on an H100/H200.

    python benchmarks/gpu_check_variants.py            (all variants; JSON lines on stdout)
    python benchmarks/gpu_check_variants.py --quick    (a small MLP: a CPU smoke run)
    python benchmarks/gpu_check_variants.py --profile  (cProfile of 10 second-point checks,
                                                        device work blocked where it is issued)
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import time

# Relative to chainrule's options of 2026-11-27 (no Triton GEMMs, ptxas -O0 for the check's
# program): the 2026-11-26 options were "triton_and_ptxas_on" (cold 2.96 s on an H200 against
# 0.77 s); xla_gpu_enable_llvm_module_compilation_parallelism does not exist in jax 0.11.2.
VARIANTS: list[tuple[str, dict, int | None]] = [
    ("current", {}, None),
    ("triton_on", {"xla_gpu_enable_triton_gemm": True}, None),
    ("ptxas_opt_on", {"xla_gpu_disable_gpuasm_optimizations": False}, None),
    (
        "triton_and_ptxas_on",
        {"xla_gpu_enable_triton_gemm": True, "xla_gpu_disable_gpuasm_optimizations": False},
        None,
    ),
    ("no_command_buffer", {"xla_gpu_enable_command_buffer": ""}, None),
    ("current_levels4", {}, 4),
    ("current_again", {}, None),
]


def child(name: str, quick: bool) -> dict:
    """One variant in this fresh process (its options came in CHAINRULE_CHECK_XLA_OPTIONS)."""
    import collections

    import jax
    from jax._src import monitoring

    jax.config.update("jax_enable_x64", True)
    import chainrule as cr
    import chainrule.check as C
    from chainrule.bench.check import _jax_check, mlp_loss

    levels = next((lv for n, _, lv in VARIANTS if n == name), None)
    split = collections.defaultdict(float)
    ev, fd = C._eval, C._fd_tree

    def timed_eval(*a, **k):
        t0 = time.perf_counter()
        out = jax.block_until_ready(ev(*a, **k))
        split["eval_ms"] += (time.perf_counter() - t0) * 1e3
        return out

    def timed_fd(*a, **k):
        t0 = time.perf_counter()
        out = fd(*a, **k)
        split["fd_ms"] += (time.perf_counter() - t0) * 1e3
        return out

    C._eval, C._fd_tree = timed_eval, timed_fd
    width, batch = (16, 4) if quick else (256, 64)
    loss, p, p2 = mlp_loss(width, 3, batch)
    jax.block_until_ready((p, p2))
    events: dict[str, list[float]] = collections.defaultdict(list)
    monitoring.register_event_duration_secs_listener(
        lambda ev, dur, **kw: events[ev.rsplit("/", 1)[-1]].append(dur)
    )
    if name == "jax":
        run = lambda q: _jax_check(loss, (q,), 2, atol=1e-1, rtol=1e-1)[0]
    else:
        kw = {} if levels is None else {"levels": levels}
        run = lambda q: cr.check_grads(loss, (q,), order=2, modes=("fwd", "rev"), **kw).passed

    def ms(q):
        split.clear()
        t0 = time.perf_counter()
        ok = run(q)
        return (time.perf_counter() - t0) * 1e3, ok, dict(split)

    cold, ok, cold_split = ms(p)
    compile_events = {k: [len(v), round(sum(v), 3)] for k, v in events.items()}
    seconds = [ms(p2) for _ in range(2 if quick else 5)]
    sec = statistics.median(s[0] for s in seconds)
    mid = sorted(seconds, key=lambda s: s[0])[len(seconds) // 2][2]
    return {
        "variant": name,
        "backend": jax.default_backend(),
        "cold_ms": round(cold, 1),
        "cold_split_ms": {k: round(v, 1) for k, v in cold_split.items()},
        "compile_events": compile_events,
        "second_ms": round(sec, 2),
        "second_split_ms": {k: round(v, 2) for k, v in mid.items()},
        "passed": ok and all(s[1] for s in seconds),
    }


def profile(quick: bool) -> None:
    """cProfile of 10 checks at the second point with the device programs blocked inside their
    calls, so that the host functions' times are host work, not waits on the device."""
    import cProfile
    import io
    import pstats

    import jax

    jax.config.update("jax_enable_x64", True)
    import chainrule as cr
    import chainrule.check as C
    from chainrule.bench.check import mlp_loss

    for name in ("_eval", "_richardson_dev"):
        fn = getattr(C, name)
        setattr(C, name, lambda *a, _fn=fn, **k: jax.block_until_ready(_fn(*a, **k)))
    loss, p, p2 = mlp_loss(*((16, 3, 4) if quick else ()))
    run = lambda q: cr.check_grads(loss, (q,), order=2, modes=("fwd", "rev")).passed
    run(p), run(p2)
    pr = cProfile.Profile()
    t0 = time.perf_counter()
    pr.enable()
    for _ in range(10):
        run(p2)
    pr.disable()
    print(f"# profile: {(time.perf_counter() - t0) * 100:.1f} ms per check (profiled)")
    for key in ("tottime", "cumtime"):
        s = io.StringIO()
        pstats.Stats(pr, stream=s).sort_stats(key).print_stats(30)
        print(s.getvalue())


def pick(lines: list[dict]) -> dict:
    """The extra options of the fastest cold variant (default levels) whose checks passed and
    whose second point is within 25% of the current options' (single second-point medians move
    ~20% between fresh processes on an H200); {} when none beats current."""
    by = {r["variant"]: r for r in lines if "cold_ms" in r and r.get("passed")}
    base = [by[n] for n in ("current", "current_again") if n in by]
    if not base:
        return {}
    cold0 = min(r["cold_ms"] for r in base)
    sec0 = min(r["second_ms"] for r in base)
    best, best_cold = {}, cold0
    for n, extra, levels in VARIANTS:
        r = by.get(n)
        if r and extra and levels is None and r["second_ms"] <= 1.25 * sec0:
            if r["cold_ms"] < best_cold:
                best, best_cold = extra, r["cold_ms"]
    return best


def main() -> None:
    import os

    quick = "--quick" in sys.argv
    if "--child" in sys.argv:
        print(json.dumps(child(sys.argv[sys.argv.index("--child") + 1], quick)))
        return
    if "--profile" in sys.argv:
        profile(quick)
        return
    if "--pick" in sys.argv:
        path = sys.argv[sys.argv.index("--pick") + 1]
        with open(path) as fh:
            rows = [json.loads(x) for x in fh if x.startswith("{")]
        print(json.dumps(pick(rows)))
        return
    runs = [(n, e) for n, e, _ in VARIANTS]
    runs.insert(1, ("jax", {}))
    for name, extra in runs:
        cmd = [sys.executable, __file__, "--child", name] + (["--quick"] if quick else [])
        env = dict(os.environ)
        env.pop("CHAINRULE_CHECK_XLA_OPTIONS", None)
        if extra:
            env["CHAINRULE_CHECK_XLA_OPTIONS"] = json.dumps(extra)
        t0 = time.perf_counter()
        try:
            out = subprocess.run(cmd, capture_output=True, text=True, timeout=60, env=env)
            lines = out.stdout.strip().splitlines()
            if out.returncode == 0 and lines:
                print(lines[-1], flush=True)
            else:
                tail = (out.stderr or out.stdout).strip().splitlines()[-3:]
                print(json.dumps({"variant": name, "error": tail}), flush=True)
        except subprocess.TimeoutExpired:
            print(json.dumps({"variant": name, "error": "timeout 60 s"}), flush=True)
        print(f"# {name}: process {time.perf_counter() - t0:.1f} s", flush=True)


if __name__ == "__main__":
    main()
