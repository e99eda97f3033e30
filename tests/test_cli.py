"""The ``chainrule`` command line: subcommands, help, exit codes, one-line errors."""

import os
import re
import subprocess
import sys
import types
from pathlib import Path

import pytest

import chainrule.bench
from chainrule.cli import main

TOY = """
from pydantic import BaseModel, ConfigDict, Field

DESCRIPTION = "cli toy"


class Params(BaseModel):
    model_config = ConfigDict(extra="forbid")
    depth: int = Field(2, ge=1)


def run(params, ctx):
    return {"tables": {"t": [{"depth": params.depth}]}, "summary": {"depth": params.depth}}
"""


@pytest.fixture
def repo(tmp_path, monkeypatch):
    root = tmp_path / "repo"
    (root / "experiments").mkdir(parents=True)
    (root / "experiments" / "clitoy.py").write_text(TOY)
    (root / "configs").mkdir()
    (root / "configs" / "clitoy.yaml").write_text("experiment: clitoy\nparams:\n  depth: 3\n")
    monkeypatch.setenv("CHAINRULE_EXPERIMENTS", str(root / "experiments"))
    monkeypatch.chdir(root)
    return root


@pytest.mark.parametrize(
    "argv",
    [["--help"], ["run", "--help"], ["list", "--help"], ["report", "--help"], ["regenerate", "-h"]],
)
def test_help_everywhere(argv, capsys):
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 0
    assert "usage: chainrule" in capsys.readouterr().out


def test_no_command_prints_help(capsys):
    assert main([]) == 2
    assert "run" in capsys.readouterr().out


def test_run_set_out_and_report(repo, capsys):
    out = repo / "out"
    assert (
        main(["run", "configs/clitoy.yaml", "--set", "params.depth=5", "--out", str(out), "-q"])
        == 0
    )
    report = Path(capsys.readouterr().out.strip())
    assert report.name == "report.md" and report.parent.parent == out
    assert "| depth | 5 |" in report.read_text()
    report.unlink()
    assert main(["report", str(report.parent)]) == 0
    assert report.exists()


def test_dry_run(repo, capsys):
    assert main(["run", "configs/clitoy.yaml", "--dry-run"]) == 0
    assert "clitoy: seed 0, 1 point(s)" in capsys.readouterr().out
    assert not (repo / "runs").exists()


@pytest.mark.parametrize(
    ("argv", "pattern"),
    [
        (
            ["run", "configs/clitoy.yaml", "--set", "params.dept=4"],
            "params.dept: unknown key. Did you mean 'depth'?",
        ),
        (
            ["run", "configs/clitoy.yaml", "--set", "params.depth=deep"],
            "params.depth: Input should be a valid integer",
        ),
        (
            ["run", "configs/clitoy.yaml", "--set", "experiment=clitoi"],
            "unknown experiment 'clitoi'. Did you mean 'clitoy'?",
        ),
        (["run", "missing.yaml"], "config file 'missing.yaml' not found"),
        (["run", "clitoi"], "config file 'clitoi' not found"),
        (["run", "clitoy", "--out", "/proc/x/runs"], "output directory '/proc/x/runs': cannot"),
        (["run", "clitoy", "--out", "configs/clitoy.yaml"], "is a file, not a folder"),
        (["run"], "give CONFIG, or --resume RUN_DIR"),
        (["run", "--resume", "nowhere"], "not a run directory"),
        (["report", "nowhere"], "not a run directory"),
    ],
)
def test_user_errors_exit_2_with_one_line(repo, capsys, argv, pattern):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert pattern in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert not (repo / "runs").exists()


def test_list(repo, capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"^clitoy +cli toy\n +configs/clitoy.yaml$", out, re.M)


def test_bench_delegates(monkeypatch):
    seen = []
    fake = types.ModuleType("chainrule.bench.cli")
    fake.main = lambda argv: seen.append(argv) or 3
    monkeypatch.setitem(sys.modules, "chainrule.bench.cli", fake)
    monkeypatch.setattr(chainrule.bench, "cli", fake, raising=False)
    assert main(["bench", "ad", "--quick", "--help"]) == 3
    assert seen == [["ad", "--quick", "--help"]]


def test_console_entry_point_exit_code(repo):
    """A real process: user error -> status 2, one line on stderr, no traceback."""
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    cmd = [
        sys.executable,
        "-m",
        "chainrule.cli",
        "run",
        "configs/clitoy.yaml",
        "--set",
        "params.depth=0",
    ]
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=repo)
    assert out.returncode == 2
    assert out.stderr.strip() == (
        "chainrule run: error: params.depth: Input should be greater than or equal to 1 "
        "(expected int >= 1); found 0."
    )
    assert not (repo / "runs").exists()


def test_run_a_config_by_name_from_elsewhere(repo, capsys, monkeypatch, tmp_path):
    """``chainrule run NAME`` finds ``configs/NAME.yaml`` (here ./configs; installed: the
    package's bundled copy, exercised by .ci/run on a built wheel)."""
    assert main(["run", "clitoy", "--out", str(tmp_path / "o"), "-q"]) == 0
    assert "| depth | 3 |" in Path(capsys.readouterr().out.strip()).read_text()


def test_bundled_experiments_and_configs_are_found(tmp_path, monkeypatch):
    """A wheel ships ``chainrule/_bundled/{experiments,configs}``: discovery looks there."""
    import chainrule
    from chainrule.runner import discovery

    fake_pkg = tmp_path / "site" / "chainrule"
    (fake_pkg / "_bundled" / "experiments").mkdir(parents=True)
    (fake_pkg / "_bundled" / "configs").mkdir()
    (fake_pkg / "_bundled" / "experiments" / "clitoy2.py").write_text(TOY)
    (fake_pkg / "_bundled" / "configs" / "clitoy2.yaml").write_text("experiment: clitoy2\n")
    monkeypatch.setattr(chainrule, "__file__", str(fake_pkg / "__init__.py"))
    monkeypatch.delenv("CHAINRULE_EXPERIMENTS", raising=False)
    monkeypatch.chdir(tmp_path)
    assert discovery.find_config("clitoy2") == fake_pkg / "_bundled" / "configs" / "clitoy2.yaml"
    (item,) = discovery.list_experiments()
    assert item["name"] == "clitoy2" and item["configs"] == [
        str(fake_pkg / "_bundled" / "configs" / "clitoy2.yaml")
    ]


def test_bench_json_unwritable_fails_before_running(monkeypatch, capsys):
    from chainrule.bench import cli as bench_cli

    ran = []
    monkeypatch.setattr(bench_cli, "_run_suite", lambda *a, **k: ran.append(a) or [])
    assert main(["bench", "--json", "/proc/nowhere/bench.json"]) == 2
    assert "--json /proc/nowhere/bench.json: cannot be written" in capsys.readouterr().err
    assert ran == []


def test_regenerate_refuses_a_dirty_tree(repo, capsys):
    for args in (["init", "-q"], ["add", "."]):
        subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True)
    subprocess.run(
        ["git", "-c", "user.email=t@t", "-c", "user.name=t", "commit", "-q", "-m", "t"],
        cwd=repo,
        check=True,
        capture_output=True,
    )
    (repo / "configs" / "clitoy.yaml").write_text("experiment: clitoy\nparams: {depth: 4}\n")
    assert main(["regenerate", "clitoy"]) == 2
    err = capsys.readouterr().err
    assert "uncommitted changes" in err and "M configs/clitoy.yaml" in err
