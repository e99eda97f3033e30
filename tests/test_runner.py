"""The experiment runner: config loading and validation, run directories, resume, reports.

A test-only experiment (``toy``) is written to a temp folder and found through
``$CHAINRULE_EXPERIMENTS``; it draws its numbers from ``ctx`` so determinism is checked end to
end, and it can be told (by an environment variable) to fail at one sweep point, which
simulates an interrupted run.
"""

import json
import math
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import jax
import pytest

from chainrule.runner import (
    ConfigError,
    MultiSpec,
    RunContext,
    RunnerError,
    list_experiments,
    load_spec,
    load_yaml,
    rebuild_report,
    run_config,
)
from chainrule.runner.config import apply_override, parse_value
from chainrule.runner.core import _x64 as enable_x64
from chainrule.runner.store import read_json, to_jsonable, write_csv, write_json

TOY = """
import os
from typing import Literal

import jax
import jax.numpy as jnp
from pydantic import BaseModel, ConfigDict, Field

DESCRIPTION = "toy experiment for the runner tests"


class Inner(BaseModel):
    model_config = ConfigDict(extra="forbid")
    width: int = Field(4, ge=1)


class Params(BaseModel):
    model_config = ConfigDict(extra="forbid")
    n: int = Field(3, ge=1, description="samples")
    scale: float = 1.0
    mode: Literal["alpha", "beta"] = "alpha"
    inner: Inner = Inner()


def run(params, ctx):
    if os.environ.get("TOY_FAIL_AT") == str(params.n):
        raise RuntimeError("simulated crash")
    with open(os.environ["TOY_LOG"], "a") as fh:
        fh.write(f"{params.n}\\n")
    x = jax.random.normal(ctx.fold("x"), (params.n,)) * params.scale
    y = jax.random.uniform(ctx.key, (2,))
    total = 0.0
    for v in ctx.progress(list(x), desc="values"):
        total += float(v)
    ctx.log(f"n={params.n}")
    rows = [{"i": i, "x": float(v)} for i, v in enumerate(x)]
    return {"tables": {"samples": rows}, "summary": {"total": total, "y0": float(y[0])},
            "nan": float("nan")}


def plot(results, params):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(2, 2))
    fig.add_subplot().plot([r["x"] for r in results["tables"]["samples"]])
    return {"xs": fig}


def report(results, params):
    return f"## Toy\\n\\nn = {params.n}, total = {results['summary']['total']:.3f}"
"""


@pytest.fixture
def toy(tmp_path, monkeypatch):
    """A repo-like folder with experiments/toy.py and configs/toy.yaml."""
    root = tmp_path / "repo"
    (root / "experiments").mkdir(parents=True)
    (root / "experiments" / "__init__.py").write_text("")
    (root / "experiments" / "toy.py").write_text(TOY)
    (root / "configs").mkdir()
    cfg = root / "configs" / "toy.yaml"
    cfg.write_text("experiment: toy\nseed: 3\nparams:\n  n: 4\n  scale: 2e-1\n")
    monkeypatch.setenv("CHAINRULE_EXPERIMENTS", str(root / "experiments"))
    monkeypatch.setenv("TOY_LOG", str(tmp_path / "calls.log"))
    monkeypatch.delenv("TOY_FAIL_AT", raising=False)
    return root


def write(path: Path, text: str) -> Path:
    path.write_text(textwrap.dedent(text))
    return path


def calls(tmp_path) -> list[int]:
    log = tmp_path / "calls.log"
    return [int(s) for s in log.read_text().split()] if log.exists() else []


def points(run_dir: Path) -> list:
    return json.loads((run_dir / "results.json").read_text())["points"]


# ------------------------------------------------------------------------------- YAML, --set


def test_yaml_reads_exponent_numbers_as_floats(tmp_path):
    p = write(tmp_path / "a.yaml", "a: 1e-3\nb: -2E+4\nc: 1.5e3\nd: .inf\ne: 10\nf: '1e-3'\n")
    data = load_yaml(p)
    assert data == {"a": 1e-3, "b": -2e4, "c": 1500.0, "d": float("inf"), "e": 10, "f": "1e-3"}
    assert isinstance(data["a"], float) and isinstance(data["e"], int)
    assert parse_value("1e-3") == 1e-3 and parse_value("[1, 2e1]") == [1, 20.0]


def test_yaml_rejects_duplicate_keys_and_bad_syntax(tmp_path):
    p = write(tmp_path / "d.yaml", "seed: 1\nseed: 2\n")
    with pytest.raises(ConfigError, match=r"d.yaml:2: duplicate key 'seed' \(first at line 1\)"):
        load_yaml(p)
    q = write(tmp_path / "s.yaml", "params: [1, 2\n")
    with pytest.raises(ConfigError, match=r"s.yaml:\d+:\d+: YAML syntax error"):
        load_yaml(q)
    with pytest.raises(ConfigError, match="not found"):
        load_yaml(tmp_path / "missing.yaml")


def test_yaml_safe_load_only(tmp_path):
    p = write(tmp_path / "x.yaml", "a: !!python/object/apply:os.system ['echo hi']\n")
    with pytest.raises(ConfigError, match="YAML syntax error"):
        load_yaml(p)


def test_apply_override_paths():
    raw = {"seed": 0, "params": {"inner": {"width": 4}}, "runs": [{"params": {}}]}
    out = apply_override(raw, "params.inner.width=8")
    assert out["params"]["inner"]["width"] == 8 and raw["params"]["inner"]["width"] == 4
    assert apply_override(raw, "params.lr=1e-3")["params"]["lr"] == 1e-3
    assert apply_override(raw, "sweep.inner.width=[1, 2]")["sweep"] == {"inner.width": [1, 2]}
    assert apply_override(raw, "runs.0.params.n=5")["runs"][0]["params"]["n"] == 5
    with pytest.raises(ConfigError, match="expected KEY.PATH=VALUE"):
        apply_override(raw, "params.n")
    with pytest.raises(ConfigError, match=r"runs.3 must be an index 0..0"):
        apply_override(raw, "runs.3.seed=1")
    with pytest.raises(ConfigError, match="seed is 0, not a mapping"):
        apply_override(raw, "seed.x=1")


# ------------------------------------------------------------------------------- validation


@pytest.mark.parametrize(
    ("text", "pattern"),
    [
        (
            "experiment: toy\nparams:\n  scael: 2\n",
            r"params.scael: unknown key. Did you mean 'scale'\? Valid keys: n, scale, mode, inner",
        ),
        (
            "experiment: toy\nparams:\n  n: abc\n",
            r"params.n: Input should be a valid integer.*\(expected int >= 1\); found 'abc'",
        ),
        (
            "experiment: toy\nparams:\n  n: 0\n",
            r"params.n: Input should be greater than or equal to 1 \(expected int >= 1\); found 0",
        ),
        (
            "experiment: toy\nparams:\n  mode: alpah\n",
            r"params.mode: Input should be 'alpha' or 'beta'.*found 'alpah'. Did you mean 'alpha'",
        ),
        (
            "experiment: toy\nparams:\n  inner:\n    widht: 3\n",
            r"params.inner.widht: unknown key. Did you mean 'width'",
        ),
        ("experiment: toy\nseedd: 1\n", r"seedd: unknown key. Did you mean 'seed'"),
        ("experiment: toy\nseed: one\n", r"seed: Input should be a valid integer.*found 'one'"),
        ("experiment: toi\n", r"experiment: unknown experiment 'toi'. Did you mean 'toy'"),
        ("params: {}\n", r"experiment: required key is missing"),
        (
            "experiment: toy\nsweep:\n  nn: [1, 2]\n",
            r"sweep.nn: unknown parameter 'nn' in params. Did you mean 'n'",
        ),
        (
            "experiment: toy\nsweep:\n  params.n: [1, -1]\n",
            r"sweep.params.n\[1\] = -1: params.n: Input should be greater than or equal to 1",
        ),
        ("experiment: toy\nsweep:\n  n: []\n", r"sweep.n: needs a non-empty list"),
        ("- 1\n- 2\n", r"a config must be a mapping"),
    ],
)
def test_invalid_config_names_the_key_and_writes_nothing(toy, tmp_path, text, pattern):
    cfg = write(tmp_path / "bad.yaml", text)
    out = tmp_path / "runs"
    with pytest.raises(ConfigError, match=pattern) as info:
        run_config(cfg, out=out)
    assert "\n" not in str(info.value)
    assert not out.exists()


def test_override_errors_name_the_key(toy, tmp_path):
    out = tmp_path / "runs"
    with pytest.raises(ConfigError, match=r"params.n: Input should be a valid integer"):
        run_config(toy / "configs" / "toy.yaml", out=out, overrides=["params.n=[1]"])
    assert not out.exists()


def test_multi_config_errors_name_the_entry(toy, tmp_path):
    cfg = write(
        toy / "configs" / "multi.yaml",
        "runs:\n  - include: toy.yaml\n  - include: toy.yaml\n    params: {n: -2}\n",
    )
    with pytest.raises(ConfigError, match=r"runs\[1\] \(.*toy.yaml\): params.n: Input should"):
        load_spec(cfg)
    write(cfg, "runs:\n  - include: nope.yaml\n")
    with pytest.raises(ConfigError, match="nope.yaml' not found"):
        load_spec(cfg)
    write(cfg, "runs:\n  - experimnt: toy\n")
    with pytest.raises(ConfigError, match=r"runs\[0\].experimnt: unknown key. Did you mean"):
        load_spec(cfg)


def test_unknown_experiment_without_any_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("CHAINRULE_EXPERIMENTS", str(tmp_path / "nowhere"))
    monkeypatch.chdir(tmp_path)
    cfg = write(tmp_path / "c.yaml", "experiment: nothing_like_this\n")
    with pytest.raises(ConfigError, match="unknown experiment 'nothing_like_this'"):
        load_spec(cfg)


# ------------------------------------------------------------------------------- running


def test_run_directory_contents(toy, tmp_path):
    out = tmp_path / "runs"
    run_dir = run_config(toy / "configs" / "toy.yaml", out=out)
    assert run_dir.parent == out
    assert run_dir.name.startswith("toy-") and len(run_dir.name.split("-")[-1]) == 8
    cfg = load_yaml(run_dir / "config.yaml")
    assert cfg == {
        "experiment": "toy",
        "seed": 3,
        "output_dir": str(out),
        "devices": None,
        "sweep": {},
        "params": {"n": 4, "scale": 0.2, "mode": "alpha", "inner": {"width": 4}},
    }
    env = json.loads((run_dir / "environment.json").read_text())
    for key in ("chainrule", "jax", "jaxlib", "backend", "devices", "x64", "git_commit"):
        assert key in env
    (point,) = points(run_dir)
    assert math.isnan(point["results"]["nan"])  # non-finite values round-trip
    assert len(point["results"]["tables"]["samples"]) == 4
    csv_lines = (run_dir / "tables" / "samples.csv").read_text().splitlines()
    assert csv_lines[0] == "i,x" and len(csv_lines) == 5
    assert (run_dir / "plots" / "xs.png").read_bytes()[:4] == b"\x89PNG"
    report = (run_dir / "report.md").read_text()
    assert "## Toy" in report and "![xs](plots/xs.png)" in report
    assert "| i | x |" in report and "total" in report
    assert (run_dir / "log.txt").read_text() == "n=4\n"
    assert not list(run_dir.rglob(".*.tmp"))  # atomic writes leave no temp files


def test_same_config_same_numbers_and_never_overwritten(toy, tmp_path):
    out = tmp_path / "runs"
    cfg = toy / "configs" / "toy.yaml"
    a = run_config(cfg, out=out)
    b = run_config(cfg, out=out)
    assert a != b and a.exists() and b.exists()
    assert points(a)[0]["results"] == points(b)[0]["results"]
    c = run_config(cfg, out=out, overrides=["seed=4"])
    assert points(c)[0]["results"] != points(a)[0]["results"]


def test_sweep_points_get_their_own_keys(toy, tmp_path):
    run_dir = run_config(
        toy / "configs" / "toy.yaml",
        out=tmp_path / "r",
        overrides=["sweep.params.n=[2, 3]", "sweep.mode=[alpha, beta]"],
    )
    pts = points(run_dir)
    assert [p["overrides"] for p in pts] == [
        {"params.n": 2, "mode": "alpha"},
        {"params.n": 2, "mode": "beta"},
        {"params.n": 3, "mode": "alpha"},
        {"params.n": 3, "mode": "beta"},
    ]
    assert len({p["results"]["summary"]["y0"] for p in pts}) == 4
    rows = (run_dir / "tables" / "samples.csv").read_text().splitlines()
    assert rows[0] == "params.n,mode,i,x" and len(rows) == 1 + 2 * 2 + 3 * 2
    assert sorted(p.name for p in (run_dir / "plots").iterdir())[0] == "p0000-xs.png"
    assert "## Point 4/4: params.n=3, mode=beta" in (run_dir / "report.md").read_text()


def test_interrupted_run_resumes(toy, tmp_path, monkeypatch):
    cfg = write(
        toy / "configs" / "sweep.yaml", "experiment: toy\nseed: 1\nsweep:\n  n: [1, 2, 3]\n"
    )
    out = tmp_path / "runs"
    monkeypatch.setenv("TOY_FAIL_AT", "2")
    with pytest.raises(RuntimeError, match="simulated crash"):
        run_config(cfg, out=out)
    (run_dir,) = list(out.iterdir())
    assert sorted(p.name for p in (run_dir / "points").iterdir()) == ["p0000.json"]
    assert calls(tmp_path) == [1]
    monkeypatch.delenv("TOY_FAIL_AT")
    assert run_config(resume=run_dir) == run_dir
    assert calls(tmp_path) == [1, 2, 3]  # point 1 was not run again
    fresh = run_config(cfg, out=tmp_path / "fresh")
    assert [p["results"] for p in points(run_dir)] == [p["results"] for p in points(fresh)]
    # A deleted point is re-run on resume; nothing else is.
    (run_dir / "points" / "p0001.json").unlink()
    run_config(cfg, resume=run_dir)
    assert calls(tmp_path) == [1, 2, 3, 1, 2, 3, 2]


def test_resume_refuses_another_config(toy, tmp_path):
    cfg = toy / "configs" / "toy.yaml"
    run_dir = run_config(cfg, out=tmp_path / "runs")
    with pytest.raises(RunnerError, match=r"differs from the run's config.yaml"):
        run_config(cfg, resume=run_dir, overrides=["params.n=5"])
    with pytest.raises(RunnerError, match="not a run directory"):
        run_config(resume=tmp_path)


def test_dry_run_writes_nothing(toy, tmp_path):
    lines = []
    out = tmp_path / "runs"
    assert (
        run_config(toy / "configs" / "toy.yaml", out=out, dry_run=True, echo=lines.append) is None
    )
    assert not out.exists()
    assert "toy: seed 3, 1 point(s)" in lines[0] and "scale: 0.2" in lines[0]


def test_report_is_rebuilt_from_saved_results(toy, tmp_path):
    run_dir = run_config(toy / "configs" / "toy.yaml", out=tmp_path / "runs")
    before = (run_dir / "report.md").read_text()
    (run_dir / "report.md").unlink()
    (run_dir / "plots" / "xs.png").unlink()
    n_calls = len(calls(tmp_path))
    rebuild_report(run_dir)
    assert (run_dir / "report.md").read_text() == before
    assert (run_dir / "plots" / "xs.png").exists()
    assert len(calls(tmp_path)) == n_calls  # nothing re-run
    with pytest.raises(RunnerError, match="not a run directory"):
        rebuild_report(tmp_path)


def test_multi_run_config(toy, tmp_path):
    cfg = write(
        toy / "configs" / "multi.yaml",
        """\
        name: both
        seed: 7
        runs:
          - include: toy.yaml
            params: {n: 2}
          - experiment: toy
            params: {mode: beta}
        """,
    )
    spec = load_spec(cfg)
    assert isinstance(spec, MultiSpec)
    # The included file's seed (3) stays; the inline run takes the top-level seed.
    assert [r.seed for r in spec.runs] == [3, 7]
    assert spec.runs[0].params.scale == 0.2 and spec.runs[0].params.n == 2
    run_dir = run_config(cfg, out=tmp_path / "runs")
    assert run_dir.name.startswith("both-")
    subs = sorted(p.name for p in run_dir.iterdir() if p.is_dir())
    assert subs == ["01-toy", "02-toy"]
    report = (run_dir / "report.md").read_text()
    assert "[01-toy/report.md](01-toy/report.md)" in report and "01-toy/plots/xs.png" in report
    assert load_yaml(run_dir / "02-toy" / "config.yaml")["seed"] == 7
    rebuild_report(run_dir)
    assert run_config(resume=run_dir) == run_dir  # all done: nothing re-run
    assert calls(tmp_path) == [2, 3]


def test_list_experiments_shows_configs(toy):
    (item,) = [e for e in list_experiments() if e["name"] == "toy"]
    assert item["description"] == "toy experiment for the runner tests"
    assert item["configs"] == [str(toy / "configs" / "toy.yaml")]


def test_repo_experiments_and_configs_validate():
    repo = Path(__file__).resolve().parents[1]
    names = {e["name"] for e in list_experiments()}
    assert {"depth_signal", "fd_accuracy"} <= names
    for name in (
        "depth_signal",
        "depth_signal_quick",
        "fd_accuracy",
        "fd_accuracy_quick",
        "quickstart",
    ):
        load_spec(repo / "configs" / f"{name}.yaml")  # the shipped configs are valid


# ------------------------------------------------------------------------------- pieces


def test_run_context_keys():
    a = RunContext.create(seed=0, out_dir=".", show_progress=False)
    b = RunContext.create(seed=0, out_dir=".", point={"n": 2}, show_progress=False)
    same = RunContext.create(seed=0, out_dir=".", show_progress=False)
    data = jax.random.key_data
    assert (data(a.key) == data(same.key)).all() and (data(a.key) != data(b.key)).any()
    assert (data(a.fold("w")) == data(same.fold("w"))).all()
    assert (data(a.fold("w")) != data(a.fold("b"))).any()
    items = [1, 2]
    assert a.progress(items) is items  # not a terminal: no bar, the iterable itself


def test_json_conversion(tmp_path):
    import numpy as np

    data = {
        "a": np.float32(1.5),
        "b": np.arange(3),
        "c": [float("inf"), -np.inf, np.nan],
        "d": (True,),
        "e": np.array([np.inf, 1.0], np.float32),
    }
    got = to_jsonable(data)
    assert got["a"] == 1.5 and got["b"] == [0, 1, 2] and got["d"] == [True]
    assert got["c"][:2] == [math.inf, -math.inf] and math.isnan(got["c"][2])
    assert got["e"] == [math.inf, 1.0]
    with pytest.raises(TypeError, match="results contain a object"):
        to_jsonable({"x": object()})
    write_json(tmp_path / "x.json", data)
    back = read_json(tmp_path / "x.json")
    assert back["c"][:2] == [math.inf, -math.inf] and math.isnan(back["c"][2])
    assert back["e"] == [math.inf, 1.0]  # an overflow is not stored as a missing value
    write_csv(tmp_path / "x.csv", [{"x": math.inf}, {"x": -math.inf}, {"x": math.nan}, {"x": None}])
    assert (tmp_path / "x.csv").read_text().splitlines() == ["x", "inf", "-inf", "nan", '""']


def test_import_chainrule_stays_light():
    code = (
        "import sys, chainrule, chainrule.cli\n"
        "heavy = [m for m in ('pydantic', 'yaml', 'matplotlib', 'rich') if m in sys.modules]\n"
        "print(heavy)\n"
        "assert not heavy, heavy\n"
    )
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert out.returncode == 0, out.stderr


# ------------------------------------------------------------------------------- issue 17


def test_non_finite_results_survive_the_round_trip(toy, tmp_path):
    exp = toy / "experiments" / "toy.py"
    exp.write_text(
        exp.read_text().replace(
            '"nan": float("nan")}',
            '"nan": float("nan"), "inf": [float("inf"), -float("inf")],\n'
            '            "tables2": None}',
        )
    )
    run_dir = run_config(toy / "configs" / "toy.yaml", out=tmp_path / "runs")
    (point,) = points(run_dir)
    assert point["results"]["inf"] == [math.inf, -math.inf]
    assert math.isnan(point["results"]["nan"])
    saved = read_json(run_dir / "points" / "p0000.json")["results"]
    assert saved["inf"] == [math.inf, -math.inf]


def test_context_create_gives_the_runners_key(toy, tmp_path):
    run_dir = run_config(
        toy / "configs" / "toy.yaml",
        out=tmp_path / "r",
        overrides=["sweep.params.n=[2]", "sweep.inner.width=[3]"],
    )
    (p,) = points(run_dir)
    ctx = RunContext.create(seed=3, out_dir=tmp_path, point=p["overrides"], show_progress=False)
    with enable_x64(False):  # the toy runs without x64
        y0 = float(jax.random.uniform(ctx.key, (2,))[0])
    assert y0 == p["results"]["summary"]["y0"]


def test_seeds_up_to_64_bits_same_key_with_and_without_x64():
    from chainrule.runner.context import seed_key

    data = jax.random.key_data
    for seed in (0, 5, 2**32 + 5, 2**64 - 1):
        with enable_x64(False):
            a = data(seed_key(seed))
        with enable_x64(True):
            b = data(seed_key(seed))
        assert (a == b).all()
    assert (data(seed_key(5)) == data(jax.random.key(5))).all()  # old keys unchanged
    assert (data(seed_key(5)) != data(seed_key(2**32 + 5))).any()


def test_resume_compares_what_points_were_computed_with(toy, tmp_path):
    cfg = write(toy / "configs" / "sweep.yaml", "experiment: toy\nseed: 1\nsweep:\n  n: [1, 2]\n")
    run_dir = run_config(cfg, out=tmp_path / "runs")
    saved = run_dir / "config.yaml"
    text = saved.read_text()
    saved.write_text(text.replace("scale: 1.0", "scale: 2.0"))
    n_calls = len(calls(tmp_path))
    with pytest.raises(RunnerError, match=r"computed with params.scale=1.0.*now gives.*2.0"):
        run_config(resume=run_dir)
    saved.write_text(text.replace("seed: 1", "seed: 9"))
    with pytest.raises(RunnerError, match=r"computed with seed=1"):
        run_config(resume=run_dir)
    assert len(calls(tmp_path)) == n_calls  # nothing re-run, nothing overwritten
    saved.write_text(text)
    assert run_config(resume=run_dir) == run_dir


@pytest.mark.parametrize(
    ("text", "pattern"),
    [
        ("seed: 18446744073709551616", r"seed: .*less than or equal to 18446744073709551615"),
        ("seed: true", r"seed: Input should be a valid integer"),
        ("params: {n: true}", r"params.n: Input should be a valid integer.*found True"),
        ("params: {n: '8'}", r"params.n: Input should be a valid integer.*found '8'"),
        ("params: {n: 8.5}", r"params.n: Input should be a valid integer"),
        ("params: {n: 100000000}", r"params.n: 100000000 is beyond the runner's bound"),
        ("params: {lo_x: 1}", r"params.lo_x: unknown key"),
        ("params: {min_x: 3.0, max_x: 1.0}", r"params.min_x: the range's lower end 3.0 is above"),
        ("params: {band_low: 2, band_high: 1}", r"params.band_low: the range's lower end 2"),
    ],
)
def test_strict_validation(toy, tmp_path, text, pattern):
    exp = toy / "experiments" / "toy.py"
    exp.write_text(
        exp.read_text().replace(
            '    mode: Literal["alpha", "beta"] = "alpha"\n',
            '    mode: Literal["alpha", "beta"] = "alpha"\n    min_x: float = 0.0\n'
            "    max_x: float = 1.0\n    band_low: int = 0\n    band_high: int = 5\n",
        )
    )
    cfg = write(toy / "configs" / "bad.yaml", f"experiment: toy\n{text}\n")
    out = tmp_path / "runs"
    with pytest.raises(ConfigError, match=pattern):
        run_config(cfg, out=out)
    assert not out.exists()  # nothing written


def test_float_params_accept_ints_and_lists_fill_tuples(toy, tmp_path):
    spec = load_spec(raw={"experiment": "toy", "params": {"scale": 2, "n": 5}})
    assert spec.params.scale == 2.0 and isinstance(spec.params.scale, float)


def test_yaml_merge_keys(tmp_path):
    path = write(
        tmp_path / "m.yaml",
        """\
        base: &base {n: 1, scale: 2.0}
        params:
          <<: *base
          n: 4
        """,
    )
    assert load_yaml(path)["params"] == {"n": 4, "scale": 2.0}
    dup = write(tmp_path / "d.yaml", "params:\n  <<: {n: 1}\n  n: 2\n  n: 3\n")
    with pytest.raises(ConfigError, match="duplicate key 'n'"):
        load_yaml(dup)


@pytest.mark.parametrize("where", ["file", "proc", "readonly"])
def test_unusable_output_directory_is_a_runner_error(toy, tmp_path, where):
    if where == "file":
        out = tmp_path / "a-file"
        out.write_text("x")
    elif where == "proc":
        out = Path("/proc/chainrule-test/runs")
    else:
        if os.geteuid() == 0:
            pytest.skip("root can write into a read-only folder")
        ro = tmp_path / "ro"
        ro.mkdir()
        ro.chmod(0o500)
        out = ro / "runs"
    with pytest.raises(RunnerError, match=r"output directory .*(file, not a folder|cannot)"):
        run_config(toy / "configs" / "toy.yaml", out=out)
    assert calls(tmp_path) == []


def test_runner_modules_have_no_import_cycle():
    code = (
        "import importlib, sys\n"
        "for m in ('config', 'discovery', 'yamlio', 'context', 'store', 'core', 'regen'):\n"
        "    for k in [k for k in sys.modules if k.startswith('chainrule.runner')]:\n"
        "        del sys.modules[k]\n"
        "    importlib.import_module('chainrule.runner.' + m)\n"
        "import ast, pathlib, chainrule.runner as r\n"
        "src = pathlib.Path(r.__file__).parent / 'discovery.py'\n"
        "names = [n.module for n in ast.walk(ast.parse(src.read_text()))\n"
        "         if isinstance(n, ast.ImportFrom)]\n"
        "assert 'chainrule.runner.config' not in names, names\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr


def test_same_config_and_commit_bit_identical_points(toy, tmp_path):
    cfg = toy / "configs" / "toy.yaml"
    a = run_config(cfg, out=tmp_path / "a")
    b = run_config(cfg, out=tmp_path / "b")

    def strip(run_dir):
        data = read_json(run_dir / "points" / "p0000.json")
        data.pop("elapsed_s")
        return json.dumps(data, sort_keys=True)

    assert strip(a) == strip(b)
    csv = ("tables", "samples.csv")
    assert a.joinpath(*csv).read_bytes() == b.joinpath(*csv).read_bytes()


def _git_repo(root: Path) -> None:
    for args in (
        ["init", "-q"],
        ["add", "."],
        ["-c", "user.email=t@t", "-c", "user.name=t", "commit", "-q", "-m", "toy"],
    ):
        subprocess.run(["git", *args], cwd=root, check=True, capture_output=True)


def test_regenerate_from_a_clean_commit(toy, tmp_path):
    from chainrule.runner.regen import regenerate

    (toy / "docs" / "results" / "toy").mkdir(parents=True)
    (toy / "docs" / "results" / "toy" / "report.md").write_text("old\n")
    _git_repo(toy)
    commit = subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=toy, capture_output=True, text=True
    ).stdout.strip()
    (dest,) = regenerate(repo=toy)
    report = (dest / "report.md").read_text()
    assert f"from commit `{commit}`" in report and "uncommitted" not in report
    env = json.loads((dest / "environment.json").read_text())
    assert env["git_commit"] == commit and env["git_dirty"] is False
    first = json.loads((dest / "results.json").read_text())
    # The tree is now dirty (the report changed): a second regeneration is refused ...
    with pytest.raises(RunnerError, match="uncommitted changes or untracked files"):
        regenerate(repo=toy)
    # ... and from the committed state the same commit gives bit-identical results.
    subprocess.run(["git", "checkout", "-q", "--", "."], cwd=toy, check=True)
    subprocess.run(["git", "clean", "-qfd"], cwd=toy, check=True)
    (dest,) = regenerate(["toy"], repo=toy)
    second = json.loads((dest / "results.json").read_text())
    for r in (first, second):
        for p in r["points"]:
            p.pop("elapsed_s")
    assert first == second
