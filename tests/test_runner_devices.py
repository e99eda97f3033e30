"""``devices:``: sweep points (and swept seeds) spread over the local devices by the runner.

XLA's host device count is fixed when JAX starts, so the runs on 8 simulated CPU devices
happen once, in a subprocess (``tests/_runner_devices_checks.py`` with
``--xla_force_host_platform_device_count=8``); the tests below assert on what it printed.
Validation of the key and the multi-run defaults are checked in this process.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

pytest.importorskip("pydantic")

from chainrule.runner import ConfigError, MultiSpec, load_spec, plan_text, run_config  # noqa: E402
from chainrule.runner.config import config_hash  # noqa: E402

HELPER = "_runner_devices_checks.py"
DEVICES = [f"cpu:{i}" for i in range(8)]


@pytest.fixture(scope="module")
def measured(helper_json) -> dict:
    out = helper_json(HELPER, drop_env=("CHAINRULE_EXPERIMENTS",))
    assert out["devices"] == DEVICES
    return out


def test_spread_run_is_the_sequential_run(measured):
    # point files (but wall time and device), results.json, tables and plots byte for byte,
    # report.md (but the run's name and the resolved config's output_dir/devices), log lines
    assert measured["n_points"] == 8
    assert measured["same"] == {
        "files": True,
        "points": True,
        "results": True,
        "report": True,
        "binary": True,
        "log": True,
    }
    assert measured["same_hash"]  # devices is not part of the config hash
    assert measured["par_config_devices"] == "all"


def test_points_go_round_robin_one_per_device_and_run_concurrently(measured):
    assert measured["par_point_devices"] == DEVICES  # point i on local device i % 8
    assert measured["seq_point_devices"] == ["cpu:0"] * 8
    # inside the experiment, the point's arrays (jitted steps, cr.hvp) live there
    for i, (overrides, seed) in enumerate(measured["par_point_keys"]):
        where = measured["par_array_devices"][f"{overrides['n']},{seed}"]
        assert where == [DEVICES[i], DEVICES[i]], (i, where)
    assert measured["seq_array_devices"] == ["cpu:0"]
    assert measured["par_overlap"]  # all 8 points were running at one moment
    assert not measured["seq_overlap"]
    assert any("8 point(s) over 8 device(s)" in m for m in measured["par_msgs"])


def test_swept_seeds_are_points_with_their_own_seed(measured):
    keys = measured["par_point_keys"]
    assert [k[0] for k in keys] == [{"n": n, "seed": s} for n in (1, 2, 3, 4) for s in (5, 6)]
    assert all(seed == over["seed"] for over, seed in keys)
    # a point of sweep.seed=[5, 6] has the numbers of the same point in a run with seed: 6
    assert measured["seed_sweep_equals_seed"]


def test_failing_point_stops_like_the_sequential_run_and_resume_spreads_the_rest(measured):
    # devices=2, point index 2 (n=3) raises: points 0 and 1 are saved, none after it is run,
    # the experiment's exception reaches the caller, no report is written
    assert measured["fail_error"] == "simulated crash"
    assert measured["fail_points"] == ["p0000.json", "p0001.json"]
    assert measured["fail_calls"] == [1, 2]
    assert not measured["fail_report"]
    # --resume --set devices=all: only the 6 unfinished points, over 6 devices
    assert measured["resume_same_dir"]
    assert measured["resume_calls"] == [3, 4, 5, 6, 7, 8]
    assert measured["resume_devices"] == DEVICES[:6]
    assert any("2 of 8 point(s) already done" in m for m in measured["resume_msgs"])
    assert measured["resume_points"] == [f"p{i:04d}.json" for i in range(8)]
    assert measured["resume_equals_fresh"]  # = a fresh sequential run's points
    assert measured["resume2_calls"] == [5] and measured["resume2_equal"]  # a deleted point


def test_more_devices_than_there_are_is_a_config_error(measured):
    msg = measured["too_many"]
    assert msg.startswith("devices: ") and "1..8" in msg and "found 16" in msg, msg
    assert not measured["too_many_wrote"]


def test_process_other_than_0_runs_but_writes_nothing(measured):
    assert measured["proc1_return"] is None and not measured["proc1_wrote"]
    assert measured["proc1_calls"] == 8
    assert measured["proc1_msgs"][0].startswith("process 1 of 2: running every point, writing")
    # resuming as process 1: reads the run directory, runs the missing point, changes nothing
    assert measured["proc1_resume_return"] is None and measured["proc1_resume_untouched"]
    assert measured["proc1_resume_calls"] == [7]


# ------------------------------------------------------------------------------ in-process

TOY = """
from pydantic import BaseModel, ConfigDict

class Params(BaseModel):
    model_config = ConfigDict(extra="forbid")
    n: int = 1

def run(params, ctx):
    return {"summary": {"n": params.n}}
"""


@pytest.fixture
def toy(tmp_path, monkeypatch):
    (tmp_path / "experiments").mkdir()
    (tmp_path / "experiments" / "__init__.py").write_text("")
    (tmp_path / "experiments" / "dtoy.py").write_text(TOY)
    monkeypatch.setenv("CHAINRULE_EXPERIMENTS", str(tmp_path / "experiments"))
    cfg = tmp_path / "dtoy.yaml"
    cfg.write_text("experiment: dtoy\nsweep:\n  n: [1, 2]\n")
    return cfg


@pytest.mark.parametrize(
    ("value", "pattern"),
    [
        ("0", r"devices: expected 'all', an int >= 1 .* or null \(sequential\); found 0\."),
        ("true", r"devices: expected .*; found True\."),
        ("al", r"found 'al'\. Did you mean 'all'\?"),
        ("[1, 2]", r"devices: expected .*; found \[1, 2\]\."),
        ("1.5", r"found 1\.5\."),
    ],
)
def test_devices_value_is_validated(toy, tmp_path, value, pattern):
    with pytest.raises(ConfigError, match=pattern):
        run_config(toy, out=tmp_path / "runs", overrides=[f"devices={value}"])
    assert not (tmp_path / "runs").exists()


def test_more_devices_than_this_process_has(toy, tmp_path):
    import jax

    n = len(jax.local_devices())
    with pytest.raises(ConfigError, match=rf"devices: .* 1\.\.{n} .*; found {n + 1}\."):
        run_config(toy, out=tmp_path / "runs", overrides=[f"devices={n + 1}"], dry_run=True)


def test_devices_default_and_plan(toy):
    spec = load_spec(toy)
    assert spec.devices is None and spec.resolved()["devices"] is None
    spread = load_spec(toy, ["devices=all"])
    assert config_hash(spread.resolved()) == config_hash(spec.resolved())
    assert "2 point(s), into runs/, spread over 1 device(s)" in plan_text(spread)
    assert "spread over" not in plan_text(spec)


def test_multi_run_devices_is_the_default_of_its_runs(toy, tmp_path):
    multi = tmp_path / "multi.yaml"
    multi.write_text(
        "devices: 1\nruns:\n  - include: dtoy.yaml\n  - include: dtoy.yaml\n    devices: all\n"
    )
    spec = load_spec(multi)
    assert isinstance(spec, MultiSpec)
    assert [r.devices for r in spec.runs] == [1, "all"] and spec.devices == 1
    run_dir = run_config(multi, out=tmp_path / "runs")
    for sub in ("01-dtoy", "02-dtoy"):
        point = json.loads((run_dir / sub / "points" / "p0001.json").read_text())
        assert point["results"] == {"summary": {"n": 2}} and point["device"]


def test_seed_sweep_values_are_validated(toy, tmp_path):
    with pytest.raises(ConfigError, match=r"sweep\.seed\[1\]: expected an int .*; found -1\."):
        load_spec(toy, ["sweep.seed=[0, -1]"])
    spec = load_spec(toy, ["sweep.seed=[4, 7]"])
    assert spec.point_seeds == [4, 7, 4, 7]
    assert spec.points[1] == {"n": 1, "seed": 7}


DIST_TOY = """
import jax
from pydantic import BaseModel, ConfigDict

class Params(BaseModel):
    model_config = ConfigDict(extra="forbid")
    n: int = 1

def run(params, ctx):
    return {"summary": {"u": float(jax.random.uniform(ctx.key)), "n": params.n}}
"""


def test_two_processes_under_jax_distributed_one_run_directory(tmp_path):
    # two real processes (a coordinator on localhost): one command per host, as documented
    import socket

    (tmp_path / "experiments").mkdir()
    (tmp_path / "experiments" / "__init__.py").write_text("")
    (tmp_path / "experiments" / "dtoy.py").write_text(DIST_TOY)
    cfg = tmp_path / "d.yaml"
    cfg.write_text("experiment: dtoy\ndevices: all\nsweep:\n  n: [1, 2, 3]\n")
    with socket.socket() as s:
        s.bind(("localhost", 0))
        port = s.getsockname()[1]
    env = dict(os.environ, JAX_PLATFORMS="cpu", CHAINRULE_EXPERIMENTS=str(tmp_path / "experiments"))
    env.pop("XLA_FLAGS", None)
    code = "import sys; from chainrule.cli import main; sys.exit(main())"
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", code, "run", str(cfg), "--out", str(tmp_path / "out")]
            + ["--coordinator", f"localhost:{port}", "--num-processes", "2"]
            + ["--process-id", str(i)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        for i in (0, 1)
    ]
    outs = [p.communicate(timeout=300) for p in procs]
    for p, (_, err) in zip(procs, outs, strict=True):
        assert p.returncode == 0, err[-3000:]
    (run_dir,) = (tmp_path / "out").iterdir()
    assert outs[0][0].strip() == str(run_dir / "report.md")
    assert outs[1][0] == ""  # process 1 prints no report path: it wrote none
    assert "process 1 of 2: running every point, writing nothing" in outs[1][1]
    assert "  point 3/3 done" in outs[1][1]
    points = sorted((run_dir / "points").iterdir())
    assert [p.name for p in points] == ["p0000.json", "p0001.json", "p0002.json"]
    env_rec = json.loads((run_dir / "environment.json").read_text())
    assert len(env_rec["devices"]) == 2  # both processes' devices: jax.devices() is global


def test_spread_order_failure_and_interrupt_without_jax():
    # _spread with stand-in devices: the scheduling rules, independent of any backend
    import contextlib
    import threading
    import time

    from chainrule.runner.core import _spread

    seen: list = []
    lock = threading.Lock()

    def place(device):
        return contextlib.nullcontext()

    def compute_with(fail_at=None, slow=()):
        def compute(i):
            time.sleep(0.2 if i in slow else 0.01)
            with lock:
                seen.append((i, threading.current_thread().name))
            if i == fail_at:
                raise ValueError(f"point {i}")
            return {"i": i}, 0.0

        return compute

    got: dict = {}
    _spread(
        list(range(7)),
        ["d0", "d1", "d2"],
        compute_with(),
        lambda i, r, e, d: got.update({i: d}),
        place,
    )
    assert got == {i: f"d{i % 3}" for i in range(7)}  # round-robin in point order
    # lanes d0: 0, 3, 6; d1: 1, 4; d2: 2, 5. Point 4 fails early, while 0, 2 and 3 are slow:
    # points 0..3 all run (as sequentially), 5 and 6 are not started; point 4's exception
    seen.clear()
    got.clear()
    with pytest.raises(ValueError, match="point 4"):
        _spread(
            list(range(7)),
            ["d0", "d1", "d2"],
            compute_with(fail_at=4, slow=(0, 2, 3)),
            lambda i, r, e, d: got.update({i: d}),
            place,
        )
    assert sorted(got) == [0, 1, 2, 3] and sorted(i for i, _ in seen) == [0, 1, 2, 3, 4]
    # Ctrl-C (here: raised while saving the first point) starts no new point; what finished is
    # handed over before the exception goes on
    got.clear()

    def done(i, r, e, d):
        if not got:
            got[i] = d
            raise KeyboardInterrupt
        got[i] = d

    with pytest.raises(KeyboardInterrupt):
        _spread(list(range(40)), ["d0", "d1"], compute_with(slow=range(40)), done, place)
    time.sleep(0.5)
    assert len(got) <= 4  # the points in flight at most, not the 40
