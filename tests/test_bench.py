"""The benchmark harness (`chainrule bench`): it runs, writes what it says, fails clearly.

No timing is asserted: the figures depend on the machine. What is checked: the CLI's quick run
of the ``ad`` suite produces rows with positive finite times and the documented keys, in JSON,
without importing pydantic (the GPU image has none); unknown, missing and failing suites.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import types
from pathlib import Path

import pytest

from chainrule.bench import cli, report

SRC = str(Path(__file__).resolve().parents[1] / "src")

# Run as the GPU script does: a fresh interpreter where `import pydantic` fails.
_NO_PYDANTIC_MAIN = (
    "import sys; sys.modules['pydantic'] = None; "
    "from chainrule.bench.cli import main; raise SystemExit(main(sys.argv[1:]))"
)


@pytest.fixture(scope="module")
def quick_ad(once):
    def make(folder):
        out = folder / "ad.json"
        env = {**os.environ, "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", "")}
        env.pop("JAX_ENABLE_X64", None)
        proc = subprocess.run(
            [sys.executable, "-c", _NO_PYDANTIC_MAIN, "ad", "--quick", "--json", str(out)],
            capture_output=True,
            text=True,
            env=env,
            timeout=600,
        )
        return {
            "returncode": proc.returncode,
            "stdout": proc.stdout,
            "stderr": proc.stderr,
            "out": str(out),
        }

    got = once("bench-quick-ad", make)
    return types.SimpleNamespace(**got), Path(got["out"])


def test_quick_ad_runs_and_writes_json(quick_ad):
    proc, out = quick_ad
    assert proc.returncode == 0, proc.stderr[-3000:]
    doc = json.loads(out.read_text())
    assert set(doc) == {"header", "rows", "errors"}
    assert doc["errors"] == []
    header = doc["header"]
    for key in ("date", "device", "backend", "jax", "jaxlib", "chainrule", "torch"):
        assert key in header
    assert header["jax_float32_matmul"] and header["quick"] is True
    rows = doc["rows"]
    names = {r["name"] for r in rows}
    for expected in (
        "forward",
        "jvp",
        "vjp (fwd+pullback)",
        "grad",
        "value_and_grad",
        "linearize+apply",
        "hvp fwd-over-rev",
        "hvp rev-over-rev",
        "hvp rev-over-fwd",
        "jacobian fwd",
        "jacobian rev",
        "hessian",
    ):
        assert expected in names, expected
    assert any(n.startswith("hvp_batched") for n in names)
    assert any(n.startswith("jacobian auto") for n in names)
    assert any(n.startswith("jacobian chunked") for n in names)
    # issue 15's eager rows (a fresh closure per call, a function reused) and the memory row
    for kind in ("eager fresh: ", "eager reused: "):
        assert {f"{kind}grad", f"{kind}hvp fwd-over-rev", f"{kind}vjp (fwd+pullback)"} <= names
    memory = [r for r in rows if r["name"].startswith("memory:")]
    assert {r["impl"] for r in memory} == {"chainrule", "jax eager"}
    assert all(r["rss_mb"] > 0 and math.isfinite(r["growth_mb"]) for r in memory)
    for r in rows:
        assert r["suite"] == "ad"
        if r["name"].startswith("memory:"):
            continue  # megabytes, not times
        assert {"name", "impl", "size", "ms", "first_call_ms"} <= set(r), r
        for key in ("ms", "min_ms", "first_call_ms", "ratio", "x_fwd"):
            if key in r:
                assert isinstance(r[key], float) and math.isfinite(r[key]) and r[key] > 0, r
    chainrule_rows = [r for r in rows if r["impl"] == "chainrule"]
    assert chainrule_rows and all("ratio" in r and "vs" in r for r in chainrule_rows)
    # Every chainrule row has its raw JAX counterpart (a pair) except the chunked variants,
    # which are compared against the unchunked raw transform measured for the same size.
    raw = {(r["name"], r["size"]) for r in rows if r["impl"] != "chainrule"}
    for r in chainrule_rows:
        if "chunked" not in r["name"] and not r["name"].startswith("jacobian auto"):
            assert (r["name"], r["size"]) in raw, r["name"]
    # The table and the target line are printed.
    assert "median ms" in proc.stdout and "targets:" in proc.stdout


def test_quick_ad_compares_torch_when_installed(quick_ad):
    pytest.importorskip("torch")
    proc, out = quick_ad
    rows = json.loads(out.read_text())["rows"]
    torch_rows = [r for r in rows if r["impl"].startswith("torch")]
    impls = {r["impl"] for r in torch_rows}
    assert {"torch.func jvp(grad)", "torch.autograd.functional.hvp", "torch"} <= impls
    assert all(r.get("vs") == "chainrule" for r in torch_rows if r["name"] != "forward")
    header = json.loads(out.read_text())["header"]
    assert "float32" in header["torch_float32_matmul"] or "TF32" in header["torch_float32_matmul"]


def test_unknown_suite_lists_the_valid_ones(capsys):
    assert cli.main(["ad", "add"]) == 2
    err = capsys.readouterr().err
    assert "'add'" in err and "Did you mean 'ad'" in err
    for name in cli.SUITES:
        assert f"'{name}'" in err


def test_bad_reps_is_a_usage_error(capsys):
    assert cli.main(["ad", "--reps", "0"]) == 2
    assert "--reps must be >= 1" in capsys.readouterr().err


def test_missing_and_failing_suites_are_reported_and_the_rest_runs(monkeypatch, tmp_path, capsys):
    ok = types.ModuleType("_bench_ok_suite")
    ok.suite = lambda quick: [{"name": "thing", "impl": "chainrule", "ms": 1.5}]
    bad = types.ModuleType("_bench_bad_suite")

    def boom(quick):
        raise RuntimeError("the suite broke")

    bad.suite = boom
    monkeypatch.setitem(sys.modules, "_bench_ok_suite", ok)
    monkeypatch.setitem(sys.modules, "_bench_bad_suite", bad)
    monkeypatch.setattr(
        cli,
        "SUITES",
        {
            "ghost": "chainrule.bench._no_such_suite_module",
            "bad": "_bench_bad_suite",
            "ok": "_bench_ok_suite",
        },
    )
    path = tmp_path / "out.json"
    assert cli.main(["ghost", "bad", "ok", "--json", str(path)]) == 1
    captured = capsys.readouterr()
    assert "ghost: the suite is not available: module chainrule.bench._no_such_suite_module" in (
        captured.err
    )
    assert "RuntimeError: the suite broke" in captured.err
    doc = json.loads(path.read_text())
    assert [e["suite"] for e in doc["errors"]] == ["ghost", "bad"]
    assert doc["rows"] == [{"name": "thing", "impl": "chainrule", "ms": 1.5, "suite": "ok"}]
    assert "thing" in captured.out


def test_suite_gets_reps_and_size_only_when_it_accepts_them(monkeypatch):
    seen = {}
    plain = types.ModuleType("_bench_plain")

    def plain_suite(quick):
        seen["plain"] = quick
        return []

    plain.suite = plain_suite
    rich = types.ModuleType("_bench_rich")

    def rich_suite(quick, reps=None, size=None):
        seen["rich"] = (quick, reps, size)
        return []

    rich.suite = rich_suite
    monkeypatch.setitem(sys.modules, "_bench_plain", plain)
    monkeypatch.setitem(sys.modules, "_bench_rich", rich)
    monkeypatch.setattr(cli, "SUITES", {"plain": "_bench_plain", "rich": "_bench_rich"})
    assert cli._run_suite("plain", True, 7, "cpu") == []
    assert cli._run_suite("rich", False, 7, "cpu") == []
    assert seen == {"plain": True, "rich": (False, 7, "cpu")}


def test_report_table_and_json_helpers(tmp_path):
    import numpy as np

    rows = [
        {"suite": "ad", "name": "grad", "impl": "chainrule", "ms": 2.0, "ratio": 1.01},
        {"suite": "ad", "name": "grad", "impl": "jax", "ms": np.float32(1.98), "note": "raw"},
        {"suite": "ad", "name": "hvp", "impl": "chainrule", "ms": 9.0, "ratio": 1.2,
         "target": "ratio<=1.03", "meets_target": False},
    ]  # fmt: skip
    table = report.format_table(rows)
    lines = table.splitlines()
    assert len(lines) == 2 + len(rows)
    assert "median ms" in lines[0] and "ratio" in lines[0] and "note" in lines[0]
    assert "1.010" in lines[2] and "MISSED" in lines[4]
    summary = report.format_targets(rows)
    assert summary.startswith("targets: 0 of 1 met") and "hvp" in summary
    assert "not judged" in report.format_targets(rows, quick=True)
    md = report.format_markdown({"device": "cpu"}, rows)
    assert "| device | cpu |" in md and md.count("| ad |") == len(rows) and "0 of 1 met" in md
    path = tmp_path / "sub" / "r.json"
    report.write_json(path, {"device": "cpu"}, rows + [{"ms": float("nan")}])
    doc = json.loads(path.read_text())
    assert doc["rows"][1]["ms"] == pytest.approx(1.98, rel=1e-6)
    assert doc["rows"][-1]["ms"] == "nan"
