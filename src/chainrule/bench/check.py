"""The ``check`` benchmark suite: chainrule's gradient checks against ``jax.test_util.check_grads``.

Rows (``suite="check"``, ``impl`` ``"chainrule"`` or ``"jax"``, ``ms``, ``ratio`` = jax / chainrule
on the jax row):

* ``mlp cold``: a ~200k-parameter float32 MLP loss (3 layers of 256x256 tanh on a batch of 64),
  checked at order 2 in both modes, compilation included, each measured in a fresh Python
  process (fresh function object and empty caches: JAX's per-primitive caches would otherwise
  make ``check_grads``' later "cold" runs warm).
* ``mlp second point``: in that process, the same function checked again at a second point with
  the same shapes (chainrule: nothing re-traces); median of 5. The two checkers run in separate
  processes, so these are not interleaved: compare them within one run of the suite.
* ``zoo cold <dtype>``: the whole zoo of :mod:`chainrule.bench.zoo` (20 correct and wrong derivative
  rules), fresh functions, order and modes per case; and one ``zoo <dtype> <case>`` row per case
  with both checkers' verdicts in ``note``.

Both checkers run at equal coverage: order 2 (or the case's order), modes fwd+rev; for a
custom_vjp function ``check_grads`` is given ``modes=("rev",)`` (it raises TypeError otherwise),
chainrule reports forward mode as skipped. ``check_grads`` keeps its defaults (eps 1e-4,
tolerances 2e-3 in float32, 1e-5 in float64) except on the MLP, where it gets the anchor's
``atol=rtol=0.1`` (at its defaults it raises a false alarm there).

Run: ``python -m chainrule.bench.check [--quick]`` (prints the rows and the detection table).
"""

from __future__ import annotations

import math
import statistics
import sys
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from chainrule.bench.timing import block, env_header

__all__ = ["suite", "detection", "fd_coverage", "power", "power_table", "mlp_loss", "main"]


def _zoo():
    """The zoo of correct and wrong derivative rules (:mod:`chainrule.bench.zoo`)."""
    from chainrule.bench import zoo

    return zoo


def mlp_loss(width: int = 256, layers: int = 3, batch: int = 64, seed: int = 0):
    """A fresh ``(loss, params, params2)``: anchor_ad.py's check_grads problem.

    A tanh MLP in float32 with ``layers * width^2`` parameters (196,608 at the defaults), weights
    ``N(0, 2/4096)`` as in the anchor (slices of its width-4096 net), ``sum(h^2)`` loss.
    ``params2`` is a second point with the same shapes.
    """
    r = np.random.default_rng(seed)
    xb = jnp.asarray(r.normal(size=(batch, width)), jnp.float32)
    params = [
        jnp.asarray(r.normal(size=(width, width)) * np.sqrt(2.0 / 4096), jnp.float32)
        for _ in range(layers)
    ]
    params2 = [p * 0.9 + 0.001 for p in params]

    def loss(ps):
        h = xb
        for w in ps:
            h = jnp.tanh(h @ w)
        return jnp.sum(h**2)

    return loss, params, params2


def _cr_check(f, args, order, custom_vjp=False):
    import chainrule as cr

    return cr.check_grads(f, args, order=order, modes=("fwd", "rev"))


def _jax_check(f, args, order, custom_vjp=False, **tol):
    from jax.test_util import check_grads

    modes = ("rev",) if custom_vjp else ("fwd", "rev")
    try:
        check_grads(f, args, order=order, modes=modes, **tol)
    except AssertionError as e:
        return False, str(e).strip().splitlines()[0][:120]
    return True, ""


def _ms(fn) -> float:
    t0 = time.perf_counter()
    block(fn())
    return (time.perf_counter() - t0) * 1e3


def detection(dtypes=("float32", "float64"), cases=None) -> list[dict[str, Any]]:
    """Run both checkers on every zoo case (fresh functions, cold): one row per case and dtype.

    Rows: ``dtype, case, bug, chainrule_passed, jax_passed, chainrule_ms, jax_ms, jax_msg``;
    a checker is right when ``passed != bug``.
    """
    zoo = _zoo()
    rows = []
    for dt in dtypes:
        for c in cases or zoo.CASES:
            f, args = c.build(jnp.dtype(dt))
            t0 = time.perf_counter()
            rep = _cr_check(f, args, c.order)
            t_cr = (time.perf_counter() - t0) * 1e3
            f, args = c.build(jnp.dtype(dt))
            t0 = time.perf_counter()
            ok, msg = _jax_check(f, args, c.order, c.custom_vjp)
            t_jax = (time.perf_counter() - t0) * 1e3
            rows.append(
                {
                    "dtype": dt,
                    "case": c.name,
                    "bug": c.bug,
                    "chainrule_passed": rep.passed,
                    "jax_passed": ok,
                    "chainrule_ms": t_cr,
                    "jax_ms": t_jax,
                    "jax_msg": msg,
                }
            )
    return rows


MAGS = (0.3, 0.1, 0.03, 0.01, 1e-3, 1e-4)


def _caught(impl: str, fam, dt, seed: int, mag: float) -> bool:
    f, args = fam.build(jnp.dtype(dt), seed, mag)
    if impl == "chainrule":
        import chainrule as cr

        return not cr.check_grads(f, args, order=1, seed=seed).passed
    return not _jax_check(f, args, 1, fam.custom_vjp)[0]


def effect(fam, dt, seed: int, mag: float) -> float:
    """The planted bug's size where a check sees it: ``|grad_bug - grad| / |grad|`` at the
    family's point for ``seed`` (all leaves; JAX's reverse mode through the rule under test,
    float64 norms). A bug of relative size ``mag`` confined to a region has an effect of about
    ``mag`` times the region's share of the derivative."""
    f, args = fam.build(jnp.dtype(dt), seed, mag)
    f0, _ = fam.build(jnp.dtype(dt), seed, 0.0)
    g = jax.tree_util.tree_leaves(jax.grad(lambda a: f(*a))(args))
    g0 = jax.tree_util.tree_leaves(jax.grad(lambda a: f0(*a))(args))
    num = math.sqrt(
        sum(float(np.sum((np.asarray(a, np.float64) - b) ** 2)) for a, b in zip(g, g0, strict=True))
    )
    den = math.sqrt(sum(float(np.sum(np.asarray(b, np.float64) ** 2)) for b in g0))
    return num / den if den > 0 else float("inf")


def power(
    dtypes=("float32", "float64"), seeds: int = 10, families=None, mags=MAGS
) -> list[dict[str, Any]]:
    """The detection-power table: per family, dtype and checker, the smallest relative bug
    caught at >= 95% of ``seeds`` (the seed draws the point and chainrule's directions;
    ``jax.test_util.check_grads`` draws its own directions from a fixed state), and the false
    alarms on the correct function (``mag = 0``) over the same seeds.

    Magnitudes are tried from large to small and the search stops at the first one caught at
    fewer than 95% of the seeds. Cost: one compilation per (family, dtype, checker) -- the bug's
    magnitude is an array the rule closes over -- and ``seeds`` checks per magnitude tried.
    """
    from chainrule.bench import zoo

    rows = []
    need = math.ceil(0.95 * seeds)
    for dt in dtypes:
        for fam in families or zoo.FAMILIES:
            for impl in ("chainrule", "jax"):
                t0 = time.perf_counter()
                alarms = sum(_caught(impl, fam, dt, s, 0.0) for s in range(seeds))
                smallest = None
                for mag in mags:
                    hits = 0
                    for s in range(seeds):
                        hits += _caught(impl, fam, dt, s, mag)
                        if hits + (seeds - s - 1) < need:
                            break  # 95% out of reach
                    if hits < need:
                        break
                    smallest = mag
                # the bug's effect on the derivative at the smallest magnitude caught (median
                # over the seeds): what "caught at 1%" means for a bug confined to a region
                eff = (
                    None
                    if smallest is None
                    else float(np.median([effect(fam, dt, s, smallest) for s in range(seeds)]))
                )
                rows.append(
                    {
                        "suite": "check",
                        "name": f"power {dt} {fam.name}",
                        "family": fam.name,
                        "kind": fam.kind,
                        "dtype": dt,
                        "impl": impl,
                        "smallest": smallest,
                        "effect": eff,
                        "false_alarms": alarms,
                        "seeds": seeds,
                        "ms": (time.perf_counter() - t0) * 1e3,
                        "note": f"smallest bug caught at >=95% of {seeds} seeds: "
                        + ("none tried" if smallest is None else f"{smallest:g}")
                        + f"; false alarms {alarms}/{seeds}",
                    }
                )
    return rows


def power_table(rows: list[dict[str, Any]]) -> str:
    """Markdown: one line per family and dtype, chainrule beside jax."""
    fmt = lambda r: (
        (">0.3" if r["smallest"] is None else f"{r['smallest']:g}")
        + (f" [{r['effect']:.1e}]" if r.get("effect") is not None else "")
        + (f" ({r['false_alarms']} FA)" if r["false_alarms"] else "")
    )
    by = {(r["dtype"], r["family"], r["impl"]): r for r in rows}
    out = [
        "| family | kind | dtype | chainrule | jax.test_util.check_grads |",
        "|---|---|---|---|---|",
    ]
    for (dt, fam, impl), r in by.items():
        if impl != "chainrule":
            continue
        j = by[(dt, fam, "jax")]
        out.append(f"| {fam} | {r['kind']} | {dt} | {fmt(r)} | {fmt(j)} |")
    seeds = rows[0]["seeds"] if rows else 0
    fa = {i: sum(r["false_alarms"] for r in rows if r["impl"] == i) for i in ("chainrule", "jax")}
    out.append("")
    out.append(
        f'Smallest relative bug caught at >= 95% of {seeds} seeds (">0.3": not even 30%); '
        f"[e]: the bug's effect at that size, |grad_bug - grad| / |grad| (median over the "
        f"seeds); (n FA): false alarms on the correct function over the seeds. Total false alarms: "
        f"chainrule {fa['chainrule']}, jax {fa['jax']} of {seeds * len(rows) // 2}."
    )
    return "\n".join(out)


def fd_coverage(dtypes=("float32", "float64")) -> dict[str, Any]:
    """How often ``cr.fd.directional``'s error estimate bounds its actual error.

    ``x^3``, ``log``, ``1/x``, ``sin``, ``sin(50 x)``, ``|x|``, ``relu`` at ``x = 0.7 s`` for
    ``s`` in 1e-4 .. 1e5, every method (the complex step on holomorphic functions only). Returns
    ``{"cases", "bounded", "coverage", "misses": [(dtype, f, s, method, actual/estimate)]}``.
    Cost: one directional derivative per case (470 with both dtypes; ~1-2 min on 2 cores).
    """
    from chainrule import fd

    fs = {
        "x^3": (lambda x: x**3, lambda x: 3 * x**2),
        "log": (jnp.log, lambda x: 1 / x),
        "1/x": (lambda x: 1 / x, lambda x: -1 / x**2),
        "sin": (jnp.sin, np.cos),
        "sin(50x)": (lambda x: jnp.sin(50 * x), lambda x: 50 * np.cos(50 * x)),
        "|x|": (jnp.abs, np.sign),
        "relu": (jax.nn.relu, lambda x: float(x > 0)),
    }
    cases = bounded = 0
    misses = []
    for dt in dtypes:
        for name, (f, df) in fs.items():
            for s in (1e-4, 1e-2, 1.0, 1e2, 1e5):
                for m in fd.METHODS:
                    if m == "complex" and name in ("|x|", "relu"):
                        continue  # not holomorphic: the complex step does not apply
                    x = jnp.asarray([0.7 * s], dt)
                    d, e = fd.directional(f, x, jnp.ones_like(x), method=m)
                    actual = abs(float(d[0]) - float(df(np.float64(np.asarray(x)[0]))))
                    ok = bool(np.isfinite(actual) and actual <= float(e[0]))
                    cases += 1
                    bounded += ok
                    if not ok:
                        ratio = actual / float(e[0]) if float(e[0]) > 0 else math.inf
                        misses.append((dt, name, s, m, ratio))
    return {"cases": cases, "bounded": bounded, "coverage": bounded / cases, "misses": misses}


def _child(kind: str, impl: str, dtype: str, quick: bool) -> dict[str, Any]:
    """One cold measurement in this (fresh) process: what a user waits for on first use."""
    jax.config.update("jax_enable_x64", True)
    width, batch = (16, 4) if quick else (256, 64)
    if kind == "mlp":
        loss, p, p2 = mlp_loss(width, 3, batch)
        if impl == "chainrule":
            run = lambda q: _cr_check(loss, (q,), 2).passed
        else:
            run = lambda q: _jax_check(loss, (q,), 2, atol=1e-1, rtol=1e-1)[0]
        cold = _ms(lambda: run(p))
        ok = run(p)
        second = [_ms(lambda: run(p2)) for _ in range(2 if quick else 5)]
        return {"cold_ms": cold, "second_ms": statistics.median(second), "passed": ok}
    zoo = _zoo()
    cases = (zoo.CASES[:3] + zoo.CORRECT[:2]) if quick else zoo.CASES
    out = []
    for c in cases:
        f, args = c.build(jnp.dtype(dtype))
        t0 = time.perf_counter()
        if impl == "chainrule":
            ok, msg = _cr_check(f, args, c.order).passed, ""
        else:
            ok, msg = _jax_check(f, args, c.order, c.custom_vjp)
        out.append(
            {
                "case": c.name,
                "bug": c.bug,
                "passed": ok,
                "ms": (time.perf_counter() - t0) * 1e3,
                "msg": msg,
            }
        )
    return {"cases": out}


def _cold(kind: str, impl: str, dtype: str, quick: bool) -> dict[str, Any]:
    import json
    import os
    import subprocess

    cmd = [sys.executable, "-m", "chainrule.bench.check", "--child", kind, impl, dtype]
    if quick:
        cmd.append("--quick")
    # The child uses the parent's platform choice if one was made; otherwise JAX's default
    # (on a GPU machine, the GPU). "gpu" is not a valid JAX_PLATFORMS value on jax 0.11.
    env = dict(os.environ)
    if jax.default_backend() == "cpu":
        env.setdefault("JAX_PLATFORMS", "cpu")
    out = subprocess.run(cmd, capture_output=True, text=True, check=True, env=env)
    return json.loads(out.stdout.strip().splitlines()[-1])


def suite(quick: bool = False, power: bool = False) -> list[dict[str, Any]]:
    """Benchmark rows; ``quick`` uses tiny sizes and a zoo subset (a CI smoke run, seconds);
    ``power``: the detection-power table's rows instead (:func:`power`; quick: 3 seeds, 2
    families, float32).

    Every cold figure is measured in a fresh Python process (imports and data set-up excluded
    from the timing), so neither checker profits from kernels compiled by an earlier one: JAX's
    per-primitive caches would otherwise make ``check_grads``' second "cold" run look warm.
    """
    if power:
        from chainrule.bench import zoo

        if quick:
            return globals()["power"](("float32",), 3, zoo.FAMILIES[:2], MAGS[:3])
        return globals()["power"]()
    rows: list[dict[str, Any]] = []
    reps = 1 if quick else 2
    n_params = 3 * (16 * 16 if quick else 256 * 256)
    res = {
        impl: [_cold("mlp", impl, "float32", quick) for _ in range(reps)]
        for impl in ("chainrule", "jax")
    }
    med = lambda impl, k: statistics.median(r[k] for r in res[impl])
    for key, name in (
        ("cold_ms", f"mlp cold (float32, {n_params} params, order 2, fwd+rev)"),
        ("second_ms", "mlp second point (same shapes, same process)"),
    ):
        c, j = med("chainrule", key), med("jax", key)
        ok = lambda impl: "passed" if all(r["passed"] for r in res[impl]) else "FAILED"
        rows.append(
            {"suite": "check", "name": name, "impl": "chainrule", "ms": c, "note": ok("chainrule")}
        )
        rows.append(
            {
                "suite": "check",
                "name": name,
                "impl": "jax",
                "ms": j,
                "ratio": j / c,
                "note": ok("jax"),
            }
        )
    for dt in ("float32",) if quick else ("float32", "float64"):
        det = {impl: _cold("zoo", impl, dt, quick)["cases"] for impl in ("chainrule", "jax")}
        totals = {impl: sum(r["ms"] for r in det[impl]) for impl in det}
        nb = sum(r["bug"] for r in det["jax"])
        nc = len(det["jax"]) - nb
        for impl in ("chainrule", "jax"):
            caught = sum(not r["passed"] for r in det[impl] if r["bug"])
            alarms = sum(not r["passed"] for r in det[impl] if not r["bug"])
            row = {
                "suite": "check",
                "name": f"zoo cold {dt} ({nb + nc} cases)",
                "impl": impl,
                "ms": totals[impl],
                "note": f"caught {caught}/{nb}, false alarms {alarms}/{nc}",
            }
            if impl == "jax":
                row["ratio"] = totals["jax"] / totals["chainrule"]
            rows.append(row)
        for rc, rj in zip(det["chainrule"], det["jax"], strict=True):
            for impl, r in (("chainrule", rc), ("jax", rj)):
                verdict = ("passed" if r["passed"] else "FAILED") + (
                    " (wrong)" if r["passed"] == r["bug"] else ""
                )
                rows.append(
                    {
                        "suite": "check",
                        "name": f"zoo {dt} {r['case']}",
                        "impl": impl,
                        "ms": r["ms"],
                        "note": verdict,
                    }
                )
    return rows


def main(argv: list[str] | None = None) -> None:
    """Print the suite's rows (``--quick`` for the smoke sizes) with the environment header."""
    argv = sys.argv[1:] if argv is None else argv
    if "--child" in argv:
        import json

        i = argv.index("--child")
        print(json.dumps(_child(argv[i + 1], argv[i + 2], argv[i + 3], "--quick" in argv)))
        return
    jax.config.update("jax_enable_x64", True)  # the zoo runs in float64 too
    print(env_header())
    if "--power" in argv:
        rows = suite("--quick" in argv, power=True)
        print(power_table(rows))
        return
    for r in suite("--quick" in argv):
        ratio = f"  x{r['ratio']:.2f}" if "ratio" in r else ""
        note = f"  [{r['note']}]" if "note" in r else ""
        print(f"{r['name']:60s} {r['impl']:10s} {r['ms']:10.1f} ms{ratio}{note}")


if __name__ == "__main__":
    main()
