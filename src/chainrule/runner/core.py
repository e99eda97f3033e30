"""Running configs: plan, run directory, sweep points, resume, plots, tables and the report."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from chainrule.runner.config import (
    MultiSpec,
    RunSpec,
    apply_override,
    config_hash,
    dump_yaml,
    load_yaml,
    resolve,
)
from chainrule.runner.context import (
    RunContext,
    _Progress,
    _stderr_is_terminal,
    point_id,
    point_key,
)
from chainrule.runner.errors import ConfigError, RunnerError
from chainrule.runner.report import md_table, point_label, save_figures, write_tables
from chainrule.runner.store import (
    atomic_write_text,
    environment,
    make_run_dir,
    read_json,
    to_jsonable,
    write_json,
)

__all__ = ["load_spec", "run_config", "rebuild_report", "plan_text", "point_id"]


def load_spec(
    config: str | Path | None = None,
    overrides: Sequence[str] = (),
    raw: dict[str, Any] | None = None,
) -> RunSpec | MultiSpec:
    """Load a config file (or a dict), apply ``--set`` overrides and validate it."""
    if raw is None:
        if config is None:
            raise RunnerError("no config given")
        raw = load_yaml(config)
    if raw is None:
        raise ConfigError(f"{config}: the config file is empty")
    if not isinstance(raw, dict):
        raise ConfigError(f"{config}: a config must be a mapping; found {type(raw).__name__}")
    for o in overrides:
        raw = apply_override(raw, o)
    return resolve(raw, config or "")


@contextlib.contextmanager
def _x64(enabled: bool) -> Iterator[None]:
    """Set ``jax_enable_x64`` for the run (an experiment's ``X64``) and restore it after."""
    import jax

    before = bool(jax.config.jax_enable_x64)
    jax.config.update("jax_enable_x64", bool(enabled))
    try:
        yield
    finally:
        jax.config.update("jax_enable_x64", before)


def plan_text(spec: RunSpec | MultiSpec) -> str:
    """What a run would do (``--dry-run``): experiments, points, the resolved config."""
    runs = spec.runs if isinstance(spec, MultiSpec) else [spec]
    lines = []
    if isinstance(spec, MultiSpec):
        lines.append(f"multi-run {spec.name!r}: {len(runs)} runs into {spec.output_dir}/")
    for r in runs:
        lines.append(
            f"{r.experiment}: seed {r.seed}, {len(r.points)} point(s)"
            + ("" if isinstance(spec, MultiSpec) else f", into {r.output_dir}/")
        )
        if r.sweep:
            for i, p in enumerate(r.points):
                lines.append(f"  point {i}: {point_label(p)}")
    lines.append(f"config hash {config_hash(spec.resolved())[:8]}; resolved config:")
    lines.append(dump_yaml(spec.resolved()).rstrip())
    return "\n".join(lines)


def run_config(
    config: str | Path | None = None,
    *,
    out: str | Path | None = None,
    overrides: Sequence[str] = (),
    dry_run: bool = False,
    resume: str | Path | None = None,
    show_progress: bool | None = None,
    echo: Callable[[str], None] | None = None,
    on_start: Callable[[Path], None] | None = None,
) -> Path | None:
    """Validate and run a config; return its run directory (``None`` for a dry run).

    Args:
        config: the YAML file (optional with ``resume``: the run's own config.yaml is used).
        out: parent folder of the run directory (overrides the config's ``output_dir``).
        overrides: ``key.path=value`` strings, applied before validation.
        dry_run: validate and describe the run; write nothing.
        resume: an existing run directory; finished sweep points are skipped.
        show_progress: progress bars; default: only when stderr is a terminal.
        echo: where one-line status messages go (default: nothing).
        on_start: called with the run directory before the first point runs.

    Raises:
        ConfigError: invalid config (nothing is written).
        RunnerError: a resume directory that is not a run directory, or whose config differs.
    """
    say = echo or (lambda _msg: None)
    if show_progress is None:
        show_progress = _stderr_is_terminal()
    if resume is not None:
        run_dir = Path(resume)
        saved_path = run_dir / "config.yaml"
        if not saved_path.is_file():
            raise RunnerError(f"--resume {run_dir}: not a run directory (no config.yaml in it)")
        saved = load_spec(saved_path)
        if config is not None or overrides:
            spec = (
                load_spec(config, overrides)
                if config is not None
                else load_spec(saved_path, overrides)
            )
            a, b = config_hash(spec.resolved()), config_hash(saved.resolved())
            if a != b:
                raise RunnerError(
                    f"--resume {run_dir}: the given config (hash {a[:8]}) differs from the "
                    f"run's config.yaml (hash {b[:8]}); resume without CONFIG/--set, or start "
                    f"a new run"
                )
        spec = saved
        if dry_run:
            say(plan_text(spec))
            return None
        say(f"resuming {run_dir}")
    else:
        spec = load_spec(config, overrides)
        if out is not None:
            spec.output_dir = str(out)
        if dry_run:
            say(plan_text(spec))
            return None
        name = spec.name if isinstance(spec, MultiSpec) else spec.experiment
        run_dir = make_run_dir(spec.output_dir, name, config_hash(spec.resolved()))
        _write_header(spec, run_dir)
    say(f"run directory: {run_dir}")
    if on_start is not None:
        on_start(run_dir)
    progress = _Progress() if show_progress else None
    if isinstance(spec, MultiSpec):
        t0 = time.perf_counter()
        for i, child in enumerate(spec.runs):
            child_dir = run_dir / f"{i + 1:02d}-{child.experiment}"
            if not (child_dir / "config.yaml").is_file():
                child_dir.mkdir(exist_ok=True)
                _write_header(child, child_dir)
            say(f"[{i + 1}/{len(spec.runs)}] {child.experiment} -> {child_dir}")
            _execute(child, child_dir, progress, show_progress, say)
            _render_single(child, child_dir)
        _render_multi(spec, run_dir, wall_s=time.perf_counter() - t0)
    else:
        _execute(spec, run_dir, progress, show_progress, say)
        _render_single(spec, run_dir)
    return run_dir


def _write_header(spec: RunSpec | MultiSpec, run_dir: Path) -> None:
    atomic_write_text(run_dir / "config.yaml", dump_yaml(spec.resolved()))
    src = spec.source if isinstance(spec, RunSpec) else None
    env = environment(Path(src).resolve().parent if src else None)
    env["config_hash"] = config_hash(spec.resolved())
    if isinstance(spec, RunSpec):
        env["x64_during_run"] = bool(getattr(spec.module, "X64", False))
    write_json(run_dir / "environment.json", env)


def _point_file(run_dir: Path, i: int) -> Path:
    return run_dir / "points" / f"p{i:04d}.json"


def _flat(d: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(d, dict):
        out: dict[str, Any] = {}
        for k, v in d.items():
            out.update(_flat(v, f"{prefix}.{k}" if prefix else str(k)))
        return out
    return {prefix: d}


def _computed_with(spec: RunSpec, i: int) -> dict[str, Any]:
    """What point ``i`` is computed from: its overrides, its full params, the seed."""
    return {
        "overrides": to_jsonable(spec.points[i]),
        "params": to_jsonable(spec.point_params[i].model_dump(mode="json")),
        "seed": spec.seed,
    }


def _finished(path: Path, spec: RunSpec, i: int) -> dict[str, Any] | None:
    """Point ``i``'s saved record, or None if it is absent or unreadable (a killed write).

    Raises:
        RunnerError: the saved point was computed with other overrides, params or seed than
            ``spec`` gives it now (``config.yaml`` was edited after the run); reusing it would
            mix results of two configs, re-running it would overwrite a result.
    """
    try:
        data = read_json(path)
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or "results" not in data:
        return None
    want = _computed_with(spec, i)
    have = {k: data.get(k) for k in want}
    if "seed" not in data:  # written before points recorded their seed
        have["seed"] = want["seed"]
    if have != want:
        a, b = _flat(have), _flat(want)
        diff = sorted(k for k in a.keys() | b.keys() if a.get(k, "?") != b.get(k, "?"))
        k = diff[0] if diff else "?"
        raise RunnerError(
            f"{path}: this point was computed with {k}={a.get(k, '(absent)')!r}, but the run's "
            f"config.yaml now gives {k}={b.get(k, '(absent)')!r}"
            + (f" ({len(diff)} keys differ)" if len(diff) > 1 else "")
            + "; config.yaml was edited after the run: restore it, or start a new run"
        )
    return data


def _execute(
    spec: RunSpec,
    run_dir: Path,
    progress: Any,
    show_progress: bool,
    say: Callable[[str], None],
) -> None:
    """Run every unfinished sweep point; save each one as soon as it is done."""
    module = spec.module
    n = len(spec.points)
    todo = [i for i in range(n) if _finished(_point_file(run_dir, i), spec, i) is None]
    if len(todo) < len(spec.points):
        say(f"  {len(spec.points) - len(todo)} of {len(spec.points)} point(s) already done")
    iterator: Any = todo
    if progress is not None and len(spec.points) > 1:
        iterator = progress.track(todo, len(todo), f"{spec.experiment} sweep")
    with _x64(bool(getattr(module, "X64", False))):
        for i in iterator:
            overrides, params = spec.points[i], spec.point_params[i]
            ctx = RunContext(
                seed=spec.seed,
                key=point_key(spec.seed, point_id(overrides)),
                out_dir=run_dir,
                point=dict(overrides),
                show_progress=show_progress,
                _progress=progress,
            )
            t0 = time.perf_counter()
            results = module.run(params, ctx)
            elapsed = time.perf_counter() - t0
            if not isinstance(results, dict):
                raise TypeError(
                    f"experiment {spec.experiment!r}: run() must return a dict, got "
                    f"{type(results).__name__}"
                )
            write_json(
                _point_file(run_dir, i),
                {
                    "index": i,
                    "experiment": spec.experiment,
                    "seed": spec.seed,
                    "overrides": overrides,
                    "params": params.model_dump(mode="json"),
                    "elapsed_s": round(elapsed, 3),
                    "results": results,
                },
            )
            say(f"  point {i + 1}/{len(spec.points)} done in {elapsed:.1f} s")


def _load_points(spec: RunSpec, run_dir: Path) -> list[dict[str, Any]]:
    out = []
    for i in range(len(spec.points)):
        rec = _finished(_point_file(run_dir, i), spec, i)
        if rec is not None:
            out.append(rec)
    return out


def _render_single(spec: RunSpec, run_dir: Path) -> str:
    """Write results.json, tables/*.csv, plots/*.png and report.md from the point files."""
    module = spec.module
    points = _load_points(spec, run_dir)
    env = _read_env(run_dir)
    complete = len(points) == len(spec.points)
    write_json(
        run_dir / "results.json",
        {
            "experiment": spec.experiment,
            "config_hash": config_hash(spec.resolved()),
            "seed": spec.seed,
            "complete": complete,
            "points": [
                {k: p[k] for k in ("index", "overrides", "elapsed_s", "results")} for p in points
            ],
        },
    )
    tables = write_tables(points, run_dir / "tables")
    multi = len(spec.points) > 1
    desc = str(getattr(module, "DESCRIPTION", "")).strip()
    md = [f"# {spec.experiment}" + (f": {desc}" if desc else ""), ""]
    md.append(
        f"Run `{run_dir.name}` · config hash `{config_hash(spec.resolved())[:8]}` · seed "
        f"{spec.seed} · {len(points)}/{len(spec.points)} point(s) finished"
        + ("" if complete else f" — **incomplete**: resume with `chainrule run --resume {run_dir}`")
    )
    md.append("")
    md.append(_env_line(env))
    md.append("")
    md.append(
        "Reproduce: `chainrule run config.yaml` with this directory's `config.yaml` (the "
        "resolved config; same numbers on the same backend and versions)."
    )
    md.append("")
    plot = getattr(module, "plot", None)
    report = getattr(module, "report", None)
    for p in points:
        i = p["index"]
        params = spec.point_params[i]
        if multi:
            md += [f"## Point {i + 1}/{len(spec.points)}: {point_label(p['overrides'])}", ""]
        h = "###" if multi else "##"
        if report is not None:
            md += [report(p["results"], params).strip(), ""]
        summary = p["results"].get("summary") or {}
        if summary:
            md += [f"{h} Summary", ""]
            md.append(md_table([{"quantity": k, "value": v} for k, v in summary.items()], 200))
        if plot is not None:
            figs = plot(p["results"], params) or {}
            prefix = f"p{i:04d}-" if multi else ""
            names = save_figures(figs, run_dir / "plots", prefix)
            if names:
                md += [f"{h} Plots", ""]
                md += [f"![{n[:-4]}](plots/{n})\n" for n in names]
        if not multi:
            for name, rows in (p["results"].get("tables") or {}).items():
                md += [f"{h} Table `{name}`", ""]
                md.append(md_table(rows, csv_name=f"tables/{name}.csv"))
    if multi:
        md += ["## Tables (all points)", ""]
        for name, rows in tables.items():
            md += [f"### Table `{name}`", ""]
            md.append(md_table(rows, csv_name=f"tables/{name}.csv"))
    md += ["## Resolved config", "", "```yaml", dump_yaml(spec.resolved()).rstrip(), "```", ""]
    text = "\n".join(md)
    atomic_write_text(run_dir / "report.md", text)
    return text


def _read_env(run_dir: Path) -> dict[str, Any]:
    try:
        return read_json(run_dir / "environment.json")
    except (OSError, ValueError):
        return {}


def _env_line(env: dict[str, Any]) -> str:
    if not env:
        return "Environment: (not recorded)"
    git = env.get("git_commit")
    git_s = (
        f", git {git[:10]}{' (uncommitted changes)' if env.get('git_dirty') else ''}" if git else ""
    )
    return (
        f"Environment: chainrule {env.get('chainrule')}, jax {env.get('jax')} / jaxlib "
        f"{env.get('jaxlib')}, Python {env.get('python')}, backend {env.get('backend')} "
        f"({len(env.get('devices', []))} device(s): {env.get('device_kind')}), "
        f"x64 {_x64_text(env)}{git_s}."
    )


def _x64_text(env: dict[str, Any]) -> str:
    if "x64_during_run" in env:
        return "on" if env["x64_during_run"] else "off"
    return ("on" if env.get("x64") else "off") + " at start"


def _render_multi(spec: MultiSpec, run_dir: Path, wall_s: float | None = None) -> None:
    env = _read_env(run_dir)
    md = [f"# {spec.name}: {len(spec.runs)} experiment runs", ""]
    md.append(f"Run `{run_dir.name}` · config hash `{config_hash(spec.resolved())[:8]}`")
    md += ["", _env_line(env), ""]
    if wall_s is not None:
        md += [f"Wall time of this invocation: {wall_s:.1f} s.", ""]
    rows = []
    sections = []
    for i, child in enumerate(spec.runs):
        child_dir = run_dir / f"{i + 1:02d}-{child.experiment}"
        points = _load_points(child, child_dir)
        elapsed = sum(p.get("elapsed_s", 0.0) for p in points)
        desc = str(getattr(child.module, "DESCRIPTION", "")).strip()
        rows.append(
            {
                "run": child_dir.name,
                "experiment": child.experiment,
                "points": f"{len(points)}/{len(child.points)}",
                "time (s)": round(elapsed, 1),
                "report": f"[report]({child_dir.name}/report.md)",
            }
        )
        sec = [f"## {i + 1}. {child.experiment}" + (f" — {desc}" if desc else ""), ""]
        sec.append(f"Full report: [{child_dir.name}/report.md]({child_dir.name}/report.md)")
        sec.append("")
        for p in points[:1]:
            summary = p["results"].get("summary") or {}
            if summary:
                sec.append(md_table([{"quantity": k, "value": v} for k, v in summary.items()]))
        plots = (
            sorted((child_dir / "plots").glob("*.png")) if (child_dir / "plots").is_dir() else []
        )
        sec += [f"![{p.stem}]({child_dir.name}/plots/{p.name})\n" for p in plots]
        sections.append("\n".join(sec))
    md.append(md_table(rows))
    md += sections
    atomic_write_text(run_dir / "report.md", "\n".join(md) + "\n")
    write_json(
        run_dir / "results.json",
        {"name": spec.name, "config_hash": config_hash(spec.resolved()), "runs": rows},
    )


def rebuild_report(run_dir: str | Path) -> Path:
    """Rebuild plots, tables, results.json and report.md of a run directory from its points.

    Raises:
        RunnerError: ``run_dir`` is not a run directory.
    """
    run_dir = Path(run_dir)
    cfg = run_dir / "config.yaml"
    if not cfg.is_file():
        raise RunnerError(f"{run_dir}: not a run directory (no config.yaml in it)")
    spec = load_spec(cfg)
    if isinstance(spec, MultiSpec):
        for i, child in enumerate(spec.runs):
            child_dir = run_dir / f"{i + 1:02d}-{child.experiment}"
            if child_dir.is_dir():
                _render_single(child, child_dir)
        _render_multi(spec, run_dir)
    else:
        _render_single(spec, run_dir)
    return run_dir / "report.md"
