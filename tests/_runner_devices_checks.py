"""Sweep points spread over 8 simulated CPU devices, run in a subprocess by
tests/test_runner_devices.py.

XLA's device count is fixed when JAX starts, so this script sets
``--xla_force_host_platform_device_count=8`` before importing JAX, runs a test experiment
(``devtoy``: a jitted training loop and ``cr.hvp``, numbers drawn from ``ctx``)
through the runner sequentially and with ``devices``, and prints one JSON object of what it
found; the test module asserts on it.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import textwrap
import time
from pathlib import Path

os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
).strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402

from chainrule.runner import ConfigError, run_config  # noqa: E402
from chainrule.runner.store import read_json  # noqa: E402

DEVTOY = """
import json
import os
import time

import jax
import jax.numpy as jnp
from pydantic import BaseModel, ConfigDict, Field

import chainrule as cr

DESCRIPTION = "sweep points on several devices (runner test)"


class Params(BaseModel):
    model_config = ConfigDict(extra="forbid")
    n: int = Field(3, ge=1)
    steps: int = Field(5, ge=1)
    sleep: float = Field(0.0, ge=0, description="seconds x n spent in time.sleep")


@jax.jit
def step(w, x, y):
    loss = lambda w: jnp.mean((jnp.tanh(x @ w).sum(1) - y) ** 2)
    value, g = jax.value_and_grad(loss)(w)
    return w - 0.1 * g, value


def run(p, ctx):
    t0 = time.time()
    if os.environ.get("TOY_FAIL_AT") == str(p.n):
        raise RuntimeError("simulated crash")
    # the shapes do not depend on n: one compilation per device serves every point
    x = jax.random.normal(ctx.fold("x"), (16, 4)) * p.n
    w = jax.random.normal(ctx.fold("w"), (4, 8)) / 3
    y = jnp.sin(x.sum(1))
    losses = []
    for _ in range(p.steps):
        w, value = step(w, x, y)
        losses.append(value)
    loss = lambda w: jnp.mean((jnp.tanh(x @ w).sum(1) - y) ** 2)
    hv = cr.hvp(loss, w, jnp.ones_like(w))
    time.sleep(p.sleep * p.n)
    record = {
        "n": p.n,
        "seed": ctx.seed,
        "w": str(next(iter(w.devices()))),
        "hv": str(next(iter(hv.devices()))),
        "start": t0,
        "end": time.time(),
    }
    with open(os.environ["TOY_LOG"], "a") as fh:
        fh.write(json.dumps(record) + "\\n")
    ctx.log(f"n={p.n}")
    return {
        "tables": {"loss": [{"step": i, "loss": v} for i, v in enumerate(losses)]},
        "summary": {"loss": losses[-1], "hv": jnp.sum(hv)},
        "w": w,
        "u": jax.random.uniform(ctx.key, (3,)),
    }


def plot(results, params):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(2, 2))
    fig.add_subplot().plot([r["loss"] for r in results["tables"]["loss"]])
    return {"loss": fig}
"""

OUT: dict = {}
ROOT = Path(tempfile.mkdtemp(prefix="chainrule-devices-"))
LOG = ROOT / "calls.log"


def tick(label: str, t0: list) -> None:
    now = time.perf_counter()
    print(f"  {label}: {now - t0[0]:.2f} s", file=sys.stderr)
    t0[0] = now


def calls() -> list[dict]:
    if not LOG.exists():
        return []
    out = [json.loads(line) for line in LOG.read_text().splitlines()]
    LOG.unlink()
    return out


def point_files(run_dir: Path) -> dict[str, dict]:
    return {p.name: read_json(p) for p in sorted((run_dir / "points").glob("*.json"))}


def comparable(run_dir: Path) -> dict:
    """Everything of a run directory except wall times, the run's name and the devices."""
    files = sorted(str(p.relative_to(run_dir)) for p in run_dir.rglob("*") if p.is_file())
    points = {}
    for name, data in point_files(run_dir).items():
        points[name] = json.dumps(
            {k: v for k, v in data.items() if k not in ("elapsed_s", "device")}, sort_keys=True
        )
    results = read_json(run_dir / "results.json")
    for p in results["points"]:
        p.pop("elapsed_s")
    report = [
        line
        for line in (run_dir / "report.md").read_text().replace(run_dir.name, "RUN").splitlines()
        if not line.startswith(("output_dir: ", "devices: "))  # the resolved config's
    ]
    binary = {
        f: (run_dir / f).read_bytes().hex() for f in files if f.startswith(("tables/", "plots/"))
    }
    return {
        "files": files,
        "points": points,
        "results": json.dumps(results, sort_keys=True),
        "report": report,
        "binary": binary,
        "log": sorted((run_dir / "log.txt").read_text().splitlines()),
    }


def main() -> None:
    t0 = [time.perf_counter()]
    (ROOT / "experiments").mkdir()
    (ROOT / "experiments" / "__init__.py").write_text("")
    (ROOT / "experiments" / "devtoy.py").write_text(textwrap.dedent(DEVTOY))
    cfg = ROOT / "devtoy.yaml"
    cfg.write_text("experiment: devtoy\nseed: 3\nparams:\n  sleep: 0.08\n")
    os.environ["CHAINRULE_EXPERIMENTS"] = str(ROOT / "experiments")
    os.environ["TOY_LOG"] = str(LOG)
    os.environ.pop("TOY_FAIL_AT", None)
    local = [str(d) for d in jax.local_devices()]
    OUT["devices"] = local
    sweep = ["sweep.n=[1, 2, 3, 4]", "sweep.seed=[5, 6]"]  # 8 points

    # 1. sequential against all 8 devices
    seq = run_config(cfg, out=ROOT / "seq", overrides=sweep, show_progress=False)
    seq_calls = calls()
    tick("sequential run", t0)
    t = time.perf_counter()
    msgs: list[str] = []
    par = run_config(
        cfg,
        out=ROOT / "par",
        overrides=[*sweep, "devices=all"],
        show_progress=False,
        echo=msgs.append,
    )
    OUT["par_wall_s"] = time.perf_counter() - t
    par_calls = calls()
    tick("devices=all run", t0)
    a, b = comparable(seq), comparable(par)
    OUT["same"] = {k: a[k] == b[k] for k in a}
    OUT["n_points"] = len(a["points"])
    OUT["same_hash"] = seq.name.split("-")[-1] == par.name.split("-")[-1]
    OUT["par_config_devices"] = read_json_yaml(par / "config.yaml").get("devices")
    OUT["seq_point_devices"] = [p["device"] for p in point_files(seq).values()]
    OUT["par_point_devices"] = [p["device"] for p in point_files(par).values()]
    OUT["par_point_keys"] = [[p["overrides"], p["seed"]] for p in point_files(par).values()]
    # where each point's arrays lived (from inside the experiment), by (n, seed)
    OUT["par_array_devices"] = {f"{c['n']},{c['seed']}": [c["w"], c["hv"]] for c in par_calls}
    OUT["seq_array_devices"] = sorted({c["w"] for c in seq_calls} | {c["hv"] for c in seq_calls})
    OUT["par_overlap"] = max(c["start"] for c in par_calls) < min(c["end"] for c in par_calls)
    OUT["seq_overlap"] = any(
        x["end"] > y["start"] for x, y in zip(seq_calls, seq_calls[1:], strict=False)
    )
    OUT["sleep_total_s"] = sum(0.08 * c["n"] for c in par_calls)
    OUT["par_msgs"] = msgs

    # 2. a swept seed is the seed: the point (n=2, seed=6) of the sweep = a run with seed 6
    single = run_config(
        cfg, out=ROOT / "single", overrides=["seed=6", "sweep.n=[2]"], show_progress=False
    )
    calls()
    (one,) = point_files(single).values()
    match = [p for p in point_files(seq).values() if p["overrides"] == {"n": 2, "seed": 6}]
    OUT["seed_sweep_equals_seed"] = match[0]["results"] == one["results"]
    tick("single run", t0)

    # 3. a point that raises with devices=2: like the sequential run, every point before it is
    # finished; then resume with devices=all runs only the rest, spread over the devices
    sweep8 = ["sweep.n=[1, 2, 3, 4, 5, 6, 7, 8]", "params.sleep=0.1", "params.steps=3"]
    os.environ["TOY_FAIL_AT"] = "3"
    err = None
    try:
        run_config(cfg, out=ROOT / "fail", overrides=[*sweep8, "devices=2"], show_progress=False)
    except RuntimeError as e:
        err = str(e)
    os.environ.pop("TOY_FAIL_AT")
    OUT["fail_error"] = err
    (fail_dir,) = (ROOT / "fail").iterdir()
    OUT["fail_points"] = sorted(point_files(fail_dir))
    OUT["fail_calls"] = sorted(c["n"] for c in calls())
    OUT["fail_report"] = (fail_dir / "report.md").exists()
    tick("failing run", t0)
    msgs = []
    back = run_config(
        resume=fail_dir, overrides=["devices=all"], show_progress=False, echo=msgs.append
    )
    OUT["resume_same_dir"] = back == fail_dir
    resumed = calls()
    OUT["resume_calls"] = sorted(c["n"] for c in resumed)
    OUT["resume_devices"] = sorted({c["w"] for c in resumed})
    OUT["resume_msgs"] = msgs
    OUT["resume_points"] = sorted(point_files(fail_dir))
    fresh = run_config(cfg, out=ROOT / "fresh", overrides=sweep8, show_progress=False)
    calls()
    OUT["resume_equals_fresh"] = comparable(fail_dir)["points"] == comparable(fresh)["points"]
    # a deleted point is re-run on resume (devices from the saved config.yaml: 2); nothing else
    (fail_dir / "points" / "p0004.json").unlink()
    run_config(resume=fail_dir, show_progress=False)
    OUT["resume2_calls"] = sorted(c["n"] for c in calls())
    OUT["resume2_equal"] = comparable(fail_dir)["points"] == comparable(fresh)["points"]
    tick("resumes", t0)

    # 4. more devices than there are: a one-line error naming the key, nothing written
    try:
        run_config(cfg, out=ROOT / "toomany", overrides=["devices=16"], show_progress=False)
    except ConfigError as e:
        OUT["too_many"] = str(e)
    OUT["too_many_wrote"] = (ROOT / "toomany").exists()

    # 5. jax.distributed: a process other than 0 runs the points and writes nothing
    real = jax.process_index, jax.process_count
    jax.process_index, jax.process_count = (lambda *a: 1), (lambda *a: 2)
    try:
        msgs = []
        ret = run_config(
            cfg,
            out=ROOT / "proc1",
            overrides=[*sweep, "devices=all"],
            show_progress=False,
            echo=msgs.append,
        )
        OUT["proc1_return"] = ret
        OUT["proc1_wrote"] = (ROOT / "proc1").exists()
        OUT["proc1_calls"] = len(calls())
        OUT["proc1_msgs"] = msgs
        # resuming as process 1 reads the run directory and leaves it as it was
        (fail_dir / "points" / "p0006.json").unlink()
        before = {str(p): p.read_bytes() for p in sorted(fail_dir.rglob("*")) if p.is_file()}
        ret = run_config(resume=fail_dir, show_progress=False)
        after = {str(p): p.read_bytes() for p in sorted(fail_dir.rglob("*")) if p.is_file()}
        OUT["proc1_resume_return"] = ret
        OUT["proc1_resume_untouched"] = before == after
        OUT["proc1_resume_calls"] = sorted(c["n"] for c in calls())
    finally:
        jax.process_index, jax.process_count = real
    tick("process 1", t0)
    print(json.dumps(OUT))


def read_json_yaml(path: Path) -> dict:
    from chainrule.runner import load_yaml

    return load_yaml(path)


if __name__ == "__main__":
    import shutil

    try:
        main()
    finally:
        shutil.rmtree(ROOT, ignore_errors=True)
