"""Running configs: plan, run directory, sweep points, resume, plots, tables and the report."""

from __future__ import annotations

import contextlib
import queue
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from chainrule.runner.config import (
    SEED_SWEEP_KEY,
    MultiSpec,
    RunSpec,
    apply_override,
    config_hash,
    device_list,
    dump_yaml,
    load_yaml,
    resolve,
)
from chainrule.runner.context import (
    RunContext,
    _Progress,
    _stderr_is_terminal,
    key_overrides,
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
        devs = device_list(r.devices)
        lines.append(
            f"{r.experiment}: seed {r.seed}, {len(r.points)} point(s)"
            + ("" if isinstance(spec, MultiSpec) else f", into {r.output_dir}/")
            + (f", spread over {len(devs)} device(s)" if devs is not None else "")
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
    """Validate and run a config; return its run directory.

    With the config's ``devices`` (``"all"`` or a count) the sweep points run concurrently,
    one per local device; the run directory is the sequential run's. Under
    ``jax.distributed`` every process runs the points and only process 0 writes.

    Args:
        config: the YAML file (optional with ``resume``: the run's own config.yaml is used).
        out: parent folder of the run directory (overrides the config's ``output_dir``).
        overrides: ``key.path=value`` strings, applied before validation.
        dry_run: validate and describe the run; write nothing.
        resume: an existing run directory; finished sweep points are skipped.
        show_progress: progress bars; default: only when stderr is a terminal.
        echo: where one-line status messages go (default: nothing).
        on_start: called with the run directory before the first point runs.

    Returns:
        The run directory; ``None`` for a dry run, and in a process other than 0 of several
        (``jax.process_index() != 0``), which writes nothing.

    Raises:
        ConfigError: invalid config, or more ``devices`` than this process has (nothing is
            written).
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
            _take_devices(saved, spec)  # how the points are spread is not part of the hash
        spec = saved
        _check_device_counts(spec)
        if dry_run:
            say(plan_text(spec))
            return None
        say(f"resuming {run_dir}")
    else:
        spec = load_spec(config, overrides)
        if out is not None:
            spec.output_dir = str(out)
        _check_device_counts(spec)
        if dry_run:
            say(plan_text(spec))
            return None
        run_dir = None
    writer = _is_writer()
    if not writer:
        import jax

        say(
            f"process {jax.process_index()} of {jax.process_count()}: running every point, "
            f"writing nothing (process 0 writes the run directory)"
        )
        _run_without_writing(spec, run_dir, show_progress, say)
        return None
    if run_dir is None:
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


def _is_writer() -> bool:
    """Whether this process writes run directories: the only one, or process 0 of several."""
    import jax

    return jax.process_count() == 1 or jax.process_index() == 0


def _run_without_writing(
    spec: RunSpec | MultiSpec,
    run_dir: Path | None,
    show_progress: bool,
    say: Callable[[str], None],
) -> None:
    """A process other than 0 under ``jax.distributed``: run the points, write nothing.

    It runs the points process 0 runs (all of them; with ``--resume`` those without a point
    file in ``run_dir``, which it only reads) in the same order, so programs that span every
    process's devices are launched alike everywhere. ``ctx.out_dir`` is a temporary folder,
    removed afterwards.
    """
    scratch = Path(tempfile.mkdtemp(prefix="chainrule-nonwriter-"))
    try:
        progress = _Progress() if show_progress else None
        runs = spec.runs if isinstance(spec, MultiSpec) else [spec]
        for i, child in enumerate(runs):
            child_dir = run_dir
            if run_dir is not None and isinstance(spec, MultiSpec):
                child_dir = run_dir / f"{i + 1:02d}-{child.experiment}"
            _execute(child, child_dir, progress, show_progress, say, write=False, work=scratch)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _take_devices(saved: RunSpec | MultiSpec, given: RunSpec | MultiSpec) -> None:
    """Give ``saved`` the ``devices`` of ``given`` (a resume with ``--set devices=...``)."""
    saved.devices = given.devices
    if isinstance(saved, MultiSpec) and isinstance(given, MultiSpec):
        for a, b in zip(saved.runs, given.runs, strict=True):
            a.devices = b.devices


def _check_device_counts(spec: RunSpec | MultiSpec) -> None:
    """Raise ``ConfigError`` before anything is written if a run asks for too many devices."""
    if isinstance(spec, MultiSpec):
        for i, child in enumerate(spec.runs):
            device_list(child.devices, f"runs[{i}].devices" if child.devices else "devices")
    else:
        device_list(spec.devices)


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
        "seed": spec.point_seeds[i],
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
    run_dir: Path | None,
    progress: Any,
    show_progress: bool,
    say: Callable[[str], None],
    write: bool = True,
    work: Path | None = None,
) -> None:
    """Run every unfinished sweep point; save each one as soon as it is done.

    With ``spec.devices`` the points run concurrently, one per local device (see
    :func:`_spread`); each is saved by this thread as it arrives, in its own file, so the run
    directory is the sequential run's. ``write=False`` (a process other than 0 under
    ``jax.distributed``) runs the same points and writes nothing; ``ctx.out_dir`` is ``work``.
    """
    import jax

    module = spec.module
    n = len(spec.points)
    todo = [
        i
        for i in range(n)
        if run_dir is None or _finished(_point_file(run_dir, i), spec, i) is None
    ]
    if len(todo) < n:
        say(f"  {n - len(todo)} of {n} point(s) already done")
    devices = device_list(spec.devices)
    out_dir = run_dir if write and run_dir is not None else (work or Path(tempfile.gettempdir()))

    def compute(i: int) -> tuple[dict[str, Any], float]:
        overrides, params, seed = spec.points[i], spec.point_params[i], spec.point_seeds[i]
        ctx = RunContext(
            seed=seed,
            key=point_key(seed, point_id(key_overrides(overrides))),
            out_dir=out_dir,
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
        return to_jsonable(results), elapsed

    def save(i: int, results: dict[str, Any], elapsed: float, device: str) -> None:
        if write:
            write_json(
                _point_file(run_dir, i),  # type: ignore[arg-type]
                {
                    "index": i,
                    "experiment": spec.experiment,
                    "seed": spec.point_seeds[i],
                    "overrides": spec.points[i],
                    "params": spec.point_params[i].model_dump(mode="json"),
                    "elapsed_s": round(elapsed, 3),
                    "device": device,
                    "results": results,
                },
            )
        on = f" on {device}" if devices is not None else ""
        say(f"  point {i + 1}/{n} done in {elapsed:.1f} s{on}")

    with _x64(bool(getattr(module, "X64", False))):
        if devices is None:
            device = _default_device_name()
            iterator: Any = todo
            if progress is not None and n > 1:
                iterator = progress.track(todo, len(todo), f"{spec.experiment} sweep")
            for i in iterator:
                results, elapsed = compute(i)
                save(i, results, elapsed, device)
            return
        used = devices[: max(1, min(len(devices), len(todo)))]
        if todo:
            say(
                f"  {len(todo)} point(s) over {len(used)} device(s): "
                + ", ".join(str(d) for d in used)
            )
        bar: Any = contextlib.nullcontext(lambda: None)
        if progress is not None and n > 1:
            bar = progress.counter(len(todo), f"{spec.experiment} sweep")
        with bar as tick:

            def done(i: int, results: dict[str, Any], elapsed: float, device: Any) -> None:
                save(i, results, elapsed, str(device))
                tick()

            _spread(todo, used, compute, done, jax.default_device)


def _default_device_name() -> str:
    """The device a sequential run's computations go to (JAX's default device)."""
    import jax

    dev = jax.config.jax_default_device
    if dev is None:
        dev = jax.local_devices()[0]
    return str(dev)


def _spread(
    todo: list[int],
    devices: list[Any],
    compute: Callable[[int], tuple[dict[str, Any], float]],
    done: Callable[[int, dict[str, Any], float, Any], None],
    place: Callable[[Any], Any],
) -> None:
    """Run ``compute(i)`` for each ``i`` in ``todo``, concurrently, one thread per device.

    Points go round-robin in ``todo``'s order: ``todo[k]`` to ``devices[k % len(devices)]``;
    each thread runs its points in order inside ``place(device)`` (``jax.default_device``),
    so each point's computations are placed on its device. JAX releases the GIL while a
    compiled program runs, so the devices compute at the same time. ``done`` is called in
    this (the calling) thread as each point finishes, in the order they finish.

    A point that raises: the sequential run stops there, every earlier point finished. Here
    the threads go on with the points before the lowest failing index only (points after it
    that are already running finish and are saved too); then that point's exception is
    raised. On ``KeyboardInterrupt`` the finished points are handed to ``done`` and no new
    point starts; the points in flight are lost, as in a sequential run (the threads are
    daemons: they do not hold the process).
    """
    lanes = [todo[k :: len(devices)] for k in range(len(devices))]
    results: queue.Queue = queue.Queue()
    lock = threading.Lock()
    state: dict[str, Any] = {"failed": None, "stop": False}

    def worker(device: Any, lane: list[int]) -> None:
        try:
            with place(device):
                for i in lane:
                    with lock:
                        failed = state["failed"]
                        if state["stop"] or (failed is not None and i > failed):
                            break  # the lane's later points come after it too
                    try:
                        out = compute(i)
                    except BaseException as exc:  # noqa: BLE001  (re-raised by the caller)
                        with lock:
                            if state["failed"] is None or i < state["failed"]:
                                state["failed"] = i
                        results.put(("error", i, exc, device))
                        break
                    results.put(("done", i, out, device))
        finally:
            results.put(("lane", None, None, None))

    threads = [
        threading.Thread(target=worker, args=(d, lane), name=f"chainrule-point-{d}", daemon=True)
        for d, lane in zip(devices, lanes, strict=True)
        if lane
    ]
    errors: dict[int, BaseException] = {}

    def handle(item: tuple) -> bool:
        kind, i, payload, device = item
        if kind == "lane":
            return True
        if kind == "error":
            errors[i] = payload
        else:
            done(i, payload[0], payload[1], device)
        return False

    for t in threads:
        t.start()
    live = len(threads)
    try:
        while live:
            try:
                item = results.get(timeout=0.1)  # a timeout keeps Ctrl-C responsive
            except queue.Empty:
                continue
            live -= handle(item)
    except BaseException:
        with lock:
            state["stop"] = True
        while True:  # save what has finished already
            try:
                item = results.get_nowait()
            except queue.Empty:
                break
            with contextlib.suppress(Exception):
                handle(item)
        raise
    if errors:
        raise errors[min(errors)]


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
    seeds = spec.sweep.get(SEED_SWEEP_KEY)
    seed_text = f"seeds {', '.join(map(str, seeds))}" if seeds else f"seed {spec.seed}"
    md.append(
        f"Run `{run_dir.name}` · config hash `{config_hash(spec.resolved())[:8]}` · "
        f"{seed_text} · {len(points)}/{len(spec.points)} point(s) finished"
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
