"""The ``chainrule`` command: ``run``, ``list``, ``report``, ``regenerate`` and ``bench``.

User errors (bad config, unknown experiment, missing file) print one line and exit with 2;
an experiment that fails prints its traceback and the command to resume, and exits with 1.
Heavy libraries are imported inside the subcommands, so ``chainrule --help`` is instant.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

__all__ = ["main", "build_parser"]

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="chainrule",
        description="Run chain-rule experiments from YAML configs, rebuild their reports, "
        "and run the benchmark suite.",
        epilog="Start with: chainrule run configs/quickstart.yaml",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    run = sub.add_parser(
        "run",
        help="run an experiment config (or a multi-run config)",
        description="Validate CONFIG, create a fresh run directory under output_dir (or --out) "
        "and run every sweep point; results, plots and report.md go into it.",
        epilog="Examples:\n  chainrule run configs/quickstart.yaml\n"
        "  chainrule run configs/depth_signal.yaml --set params.depth=20 --set seed=1\n"
        "  chainrule run configs/fd_accuracy.yaml --dry-run\n"
        "  chainrule run quickstart              # a shipped config, from any directory\n"
        "  chainrule run --resume runs/depth_signal-20260101-120000-ab12cd34",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    run.add_argument(
        "config",
        nargs="?",
        metavar="CONFIG",
        help="YAML config file, or the name of a shipped one (quickstart, clipping_quick, ...)",
    )
    run.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY.PATH=VALUE",
        help="override a config value (YAML syntax: 10, 1e-3, [a, b]); repeatable",
    )
    run.add_argument("--out", metavar="DIR", help="parent folder of the run directory")
    run.add_argument(
        "--dry-run", action="store_true", help="validate and show the plan; write nothing"
    )
    run.add_argument(
        "--resume", metavar="RUN_DIR", help="continue a run directory, skipping finished points"
    )
    run.add_argument("-q", "--quiet", action="store_true", help="no status lines on stderr")
    dist = run.add_argument_group(
        "several hosts (jax.distributed)",
        "Start the same command on every host; each runs every point on its local devices "
        "and only process 0 writes the run directory (docs/multidevice.md).",
    )
    dist.add_argument(
        "--distributed",
        action="store_true",
        help="call jax.distributed.initialize() first (on SLURM, Open MPI, TPU pods... it "
        "finds the coordinator and this process's id itself); implied by the options below",
    )
    dist.add_argument("--coordinator", metavar="HOST:PORT", help="process 0's address")
    dist.add_argument("--num-processes", type=int, metavar="N", help="how many processes")
    dist.add_argument("--process-id", type=int, metavar="I", help="this process's id, 0..N-1")

    sub.add_parser(
        "list",
        help="list the experiments with their descriptions and configs",
        description="List the experiments found (see docs/experiments.md for the search "
        "order: $CHAINRULE_EXPERIMENTS, ./experiments, the source checkout).",
    )

    rep = sub.add_parser(
        "report",
        help="rebuild plots, tables and report.md of a run directory",
        description="Rebuild plots/, tables/, results.json and report.md of RUN_DIR from its "
        "saved point results (no experiment is re-run).",
    )
    rep.add_argument("run_dir", metavar="RUN_DIR", help="a run directory made by `chainrule run`")

    regen = sub.add_parser(
        "regenerate",
        help="re-run the full configs behind the committed reports (docs/results/) from a "
        "clean commit",
        description="For each NAME (default: every docs/results/<name>/ with a report.md), run "
        "configs/<name>.yaml and replace docs/results/<name>/ with its report, config, "
        "environment, results, plots and tables. Refuses a tree with uncommitted changes or "
        "untracked files; each report records the commit it came from.",
        epilog="From a clean clone: git clone . /tmp/regen && cd /tmp/regen && "
        "PYTHONPATH=src chainrule regenerate clipping",
    )
    regen.add_argument("names", nargs="*", metavar="NAME", help="experiments to regenerate")
    regen.add_argument(
        "--into", default="docs/results", metavar="DIR", help="reports folder (in the checkout)"
    )

    sub.add_parser(
        "bench",
        help="run the benchmark suite (see `chainrule bench --help`)",
        add_help=False,
    )
    return parser


def _bench(argv: list[str]) -> int:
    try:
        from chainrule.bench import cli as bench_cli
    except ImportError as e:
        print(f"chainrule: error: the benchmark command is not available ({e})", file=sys.stderr)
        return EXIT_USAGE
    rc = bench_cli.main(argv)
    return int(rc or 0)


def _cmd_run(args: argparse.Namespace) -> int:
    from chainrule.runner import run_config
    from chainrule.runner.discovery import find_config

    if args.config is None and args.resume is None:
        print("chainrule run: error: give CONFIG, or --resume RUN_DIR", file=sys.stderr)
        return EXIT_USAGE
    if args.config is not None:
        args.config = find_config(args.config)  # a path, or a shipped config's name
    quiet = args.quiet
    explicit = (args.coordinator, args.num_processes, args.process_id)
    if (args.distributed or any(v is not None for v in explicit)) and not args.dry_run:
        import jax

        jax.distributed.initialize(
            coordinator_address=args.coordinator,
            num_processes=args.num_processes,
            process_id=args.process_id,
        )

    def echo(msg: str) -> None:
        if args.dry_run:
            print(msg)
        elif not quiet:
            print(msg, file=sys.stderr)

    started: list[Path] = []
    try:
        run_dir = run_config(
            args.config,
            out=args.out,
            overrides=args.overrides,
            dry_run=args.dry_run,
            resume=args.resume,
            echo=echo,
            on_start=started.append,
        )
    except KeyboardInterrupt:
        if started:
            print(
                f"\ninterrupted; finished points are saved. Resume with: chainrule run --resume "
                f"{started[-1]}",
                file=sys.stderr,
            )
        return EXIT_INTERRUPTED
    except Exception:
        from chainrule.runner import RunnerError

        exc = sys.exc_info()[1]
        if isinstance(exc, RunnerError | BrokenPipeError):
            raise
        import traceback

        traceback.print_exc()
        if started:
            print(
                f"chainrule run: the experiment failed; finished points are saved. After a fix, "
                f"resume with: chainrule run --resume {started[-1]}",
                file=sys.stderr,
            )
        return EXIT_FAILED
    if run_dir is not None:
        print(run_dir / "report.md")
    return EXIT_OK


def _cmd_list(_args: argparse.Namespace) -> int:
    from chainrule.runner import experiment_dirs, list_experiments

    items = list_experiments()
    if not items:
        dirs = ", ".join(map(str, experiment_dirs())) or "none found"
        print(f"no experiments found (experiment folders: {dirs})")
        return EXIT_OK
    width = max(len(it["name"]) for it in items)
    cwd = Path.cwd()
    for it in items:
        print(f"{it['name']:<{width}}  {it['description']}")
        for c in it["configs"]:
            p = Path(c)
            try:
                p = p.relative_to(cwd)
            except ValueError:
                pass
            print(f"{'':<{width}}    {p}")
    return EXIT_OK


def _cmd_report(args: argparse.Namespace) -> int:
    from chainrule.runner import rebuild_report

    print(rebuild_report(args.run_dir))
    return EXIT_OK


def _cmd_regenerate(args: argparse.Namespace) -> int:
    from chainrule.runner.regen import regenerate

    for path in regenerate(args.names, into=args.into, echo=lambda m: print(m, file=sys.stderr)):
        print(path / "report.md")
    return EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``chainrule`` console script; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "bench":
        return _bench(argv[1:])
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return EXIT_USAGE
    handlers = {
        "run": _cmd_run,
        "list": _cmd_list,
        "report": _cmd_report,
        "regenerate": _cmd_regenerate,
    }
    try:
        return handlers[args.command](args)
    except BrokenPipeError:
        # `chainrule list | head`: the reader left; stay quiet like other CLI tools.
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK
    except Exception as e:
        from chainrule.runner import RunnerError

        if isinstance(e, RunnerError):
            msg = " ".join(str(e).split())  # one line, whatever the message holds
            print(f"chainrule {args.command}: error: {msg}", file=sys.stderr)
            return EXIT_USAGE
        raise


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
