"""``chainrule bench [SUITE ...] [--quick] [--json FILE] [--reps N] [--size S]``.

Runs the named benchmark suites (all of them when none is named), prints a header (device,
backend, float32 matmul precision, versions, date) and one table per suite of medians and
ratios, then a line on the issue's targets; ``--json FILE`` writes the header and every row
(rewritten after each suite, so a run cut short keeps what it measured).

Suites are modules ``chainrule.bench.<name>`` exposing ``suite(quick: bool) -> list[dict]``,
imported only when run. A suite that is missing or fails is reported and the others still run;
the exit status is then 1. Nothing here imports pydantic (the GPU image has none).

Environment: ``CHAINRULE_BENCH_QUICK=1`` acts as ``--quick``; ``CHAINRULE_BENCH_SIZE`` sets the
``ad`` suite's size preset when ``--size`` is not given.
"""

from __future__ import annotations

import argparse
import datetime
import importlib
import importlib.metadata
import inspect
import sys
import time
import traceback
from typing import Any

from chainrule import _env

__all__ = ["SUITES", "main", "build_header"]

# name -> module; imported lazily, in this order when no suite is named.
SUITES: dict[str, str] = {
    "ad": "chainrule.bench.ad",
    "check": "chainrule.bench.check",
    "norm": "chainrule.bench.norm",
    "init": "chainrule.bench.init",
    "curvature": "chainrule.bench.curvature",
    "multidevice": "chainrule.bench.multidevice",
}


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="chainrule bench",
        description="Time chainrule against raw JAX (and torch where installed): medians of "
        "repeated, blocked calls after warm-up, contenders alternated call by call, compile time "
        "reported apart.",
    )
    p.add_argument(
        "suites",
        nargs="*",
        metavar="SUITE",
        help=f"suites to run, of: {', '.join(SUITES)} (default: all)",
    )
    p.add_argument(
        "--quick", action="store_true", help="tiny sizes, few repetitions: a smoke test, no figures"
    )
    p.add_argument("--json", metavar="FILE", help="write the header and every row to FILE")
    p.add_argument(
        "--power",
        action="store_true",
        help="check suite: the detection-power table (smallest bug caught per family) instead",
    )
    p.add_argument("--md", metavar="FILE", help="also write the header and rows as Markdown")
    p.add_argument(
        "--reps", type=int, metavar="N", help="timed repetitions per contender (default 20)"
    )
    p.add_argument(
        "--size",
        choices=("auto", "cpu", "gpu"),
        help="problem sizes for the suites that take them (ad): auto = gpu sizes on an "
        "accelerator, cpu sizes otherwise (default: $CHAINRULE_BENCH_SIZE or auto)",
    )
    return p


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def build_header(quick: bool, reps: int | None, size: str | None, argv: list[str]) -> dict:
    """The run's header: :func:`~chainrule.bench.timing.env_header` plus date, torch, settings."""
    import jax

    from chainrule.bench.timing import env_header, matmul_precision

    header: dict[str, Any] = {"date": datetime.datetime.now(datetime.timezone.utc).isoformat()}
    header.update(env_header())
    backend = jax.default_backend()
    prec = matmul_precision()
    if backend == "gpu":
        header["jax_float32_matmul"] = (
            f"jax_default_matmul_precision={prec}"
            if prec
            else "TF32 (JAX's default on recent NVIDIA GPUs; jax_default_matmul_precision unset)"
        )
    else:
        header["jax_float32_matmul"] = f"float32 on {backend}" + (
            f" (jax_default_matmul_precision={prec})" if prec else ""
        )
    # The version from package metadata: importing torch here would cost seconds for nothing.
    header["torch"] = _version("torch") or "not installed"
    if header["torch"] != "not installed":
        from chainrule.bench.ad import torch_precision

        header["torch_float32_matmul"] = torch_precision()
    header["quick"] = quick
    header["reps"] = reps if reps is not None else ("3 (quick)" if quick else 20)
    if size:
        header["size"] = size
    header["command"] = "chainrule bench " + " ".join(argv)
    return header


def _run_suite(
    name: str, quick: bool, reps: int | None, size: str | None, power: bool = False
) -> list[dict]:
    """Import ``chainrule.bench.<name>`` and run its ``suite``, passing what it accepts."""
    module = importlib.import_module(SUITES[name])
    fn = getattr(module, "suite", None)
    if not callable(fn):
        raise AttributeError(f"{SUITES[name]} has no function suite(quick: bool) -> list[dict]")
    params = inspect.signature(fn).parameters
    kwargs: dict[str, Any] = {}
    if reps is not None and "reps" in params:
        kwargs["reps"] = reps
    if power and "power" in params:
        kwargs["power"] = True
    if size is not None and "size" in params:
        kwargs["size"] = size
    rows = fn(quick, **kwargs)
    if not isinstance(rows, list):
        raise TypeError(f"{SUITES[name]}.suite returned {type(rows).__name__}, expected a list")
    for row in rows:
        row.setdefault("suite", name)
    return rows


def _unwritable(path: str) -> str | None:
    """Why ``path`` cannot be written (created parents included), or None if it can."""
    from pathlib import Path

    p = Path(path)
    if p.is_dir():
        return "is a folder, not a file"
    existed = p.exists()
    try:
        p.parent.mkdir(parents=True, exist_ok=True)
        with open(p, "a"):
            pass
    except OSError as e:
        return f"cannot be written ({e.strerror or type(e).__name__})"
    if not existed:
        p.unlink()
    return None


def main(argv: list[str] | None = None) -> int:
    """Run ``chainrule bench``; returns the exit status (0 ok, 1 a suite failed, 2 bad usage)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        args = _parser().parse_args(argv)
    except SystemExit as e:  # --help, or argparse's own usage error
        return e.code if isinstance(e.code, int) else 2
    from chainrule._tree import check_choice

    names = list(dict.fromkeys(args.suites)) or list(SUITES)
    for name in names:
        try:
            check_choice(name, tuple(SUITES), "benchmark suite")
        except ValueError as e:
            print(f"chainrule bench: error: {e}", file=sys.stderr)
            return 2
    if args.reps is not None and args.reps < 1:
        print(f"chainrule bench: error: --reps must be >= 1, found {args.reps}.", file=sys.stderr)
        return 2
    for flag, out in (("--json", args.json), ("--md", args.md)):
        problem = _unwritable(out) if out else None
        if problem:  # before the benchmark runs, not after minutes of it
            print(f"chainrule bench: error: {flag} {out}: {problem}", file=sys.stderr)
            return 2
    try:
        quick = args.quick or _env.bench_quick()
    except ValueError as e:
        print(f"chainrule bench: error: {e}", file=sys.stderr)
        return 2

    from chainrule.bench.report import (
        format_header,
        format_markdown,
        format_table,
        format_targets,
        write_json,
    )
    from chainrule.bench.timing import default_reps

    header = build_header(quick, args.reps, args.size, argv)
    print(format_header(header), flush=True)
    rows: list[dict] = []
    errors: list[dict] = []
    for name in names:
        print(f"\n== {name} ==", flush=True)
        t0 = time.perf_counter()
        try:
            with default_reps(args.reps):
                suite_rows = _run_suite(name, quick, args.reps, args.size, args.power)
        except ModuleNotFoundError as e:
            if e.name != SUITES[name]:
                raise_msg = f"{type(e).__name__}: {e}"
                err = {"suite": name, "error": f"the suite failed to import: {raise_msg}"}
            else:
                err = {
                    "suite": name,
                    "error": f"the suite is not available: module {SUITES[name]} was not found "
                    "(not written yet, or not installed)",
                }
            errors.append(err)
            print(f"chainrule bench: {name}: {err['error']}", file=sys.stderr, flush=True)
            continue
        except Exception as e:  # one broken suite must not lose the others' figures
            tb = traceback.format_exc()
            errors.append({"suite": name, "error": f"{type(e).__name__}: {e}", "traceback": tb})
            print(f"chainrule bench: {name} failed:\n{tb}", file=sys.stderr, flush=True)
            continue
        finally:
            if args.json:
                write_json(args.json, header, rows, errors)
        rows.extend(suite_rows)
        print(format_table(suite_rows), flush=True)
        print(f"({name}: {time.perf_counter() - t0:.1f} s)", flush=True)
        if args.json:
            write_json(args.json, header, rows, errors)
    print("\n" + format_targets(rows, quick=quick), flush=True)
    if errors:
        print(
            f"{len(errors)} suite(s) did not complete: {', '.join(e['suite'] for e in errors)}",
            file=sys.stderr,
        )
    if args.json:
        write_json(args.json, header, rows, errors)
        print(f"wrote {args.json}", flush=True)
    if args.md:
        from pathlib import Path

        Path(args.md).parent.mkdir(parents=True, exist_ok=True)
        Path(args.md).write_text(format_markdown(header, rows, quick=quick))
        print(f"wrote {args.md}", flush=True)
    return 1 if errors else 0
