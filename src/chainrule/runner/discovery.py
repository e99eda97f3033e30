"""Finding and loading experiment modules from the repository's ``experiments/`` folder.

Search order (first folder that holds ``<name>.py`` wins):

1. ``$CHAINRULE_EXPERIMENTS`` (one folder, or several separated by ``os.pathsep``);
2. ``./experiments`` (the working directory, e.g. the repo root);
3. ``experiments/`` next to the config file's folder (``configs/x.yaml`` -> ``experiments/``);
4. the source checkout of the installed package (``src/chainrule`` -> ``experiments/``);
5. the copy shipped inside the package (``chainrule/_bundled/experiments``, made from the
   top-level ``experiments/`` when a wheel is built), so a plain ``pip install`` has them.

Configs named without a path (``chainrule run quickstart``) are looked up the same way in
``./configs``, the source checkout's ``configs/`` and ``chainrule/_bundled/configs``.

Each folder is imported as its own package under a private name, so experiment modules can
import their siblings relatively (``from . import _common``) and two checkouts never clash.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.machinery
import importlib.util
import sys
from pathlib import Path
from typing import Any

from chainrule import _env
from chainrule.runner.errors import ConfigError, RunnerError, did_you_mean
from chainrule.runner.yamlio import load_yaml

__all__ = [
    "ENV_VAR",
    "experiment_dirs",
    "config_dirs",
    "find_config",
    "list_experiments",
    "load_experiment",
]

ENV_VAR = "CHAINRULE_EXPERIMENTS"


def _package_roots() -> list[Path]:
    """Folders holding ``experiments/`` and ``configs/`` that come with the installed package:
    the source checkout (an editable install) and the copy bundled into a wheel."""
    import chainrule

    pkg = Path(chainrule.__file__).resolve().parent
    roots = []
    checkout = pkg.parents[1]
    if (checkout / "pyproject.toml").is_file():  # src/chainrule inside a checkout
        roots.append(checkout)
    roots.append(pkg / "_bundled")
    return roots


def experiment_dirs(config_path: str | Path | None = None) -> list[Path]:
    """The existing experiment folders, in search order, without duplicates."""
    candidates: list[Path] = []
    candidates += [Path(p) for p in _env.experiment_path()]  # $CHAINRULE_EXPERIMENTS
    candidates.append(Path.cwd() / "experiments")
    if config_path:
        candidates.append(Path(config_path).resolve().parent.parent / "experiments")
    candidates += [root / "experiments" for root in _package_roots()]
    out: list[Path] = []
    for c in candidates:
        c = c.resolve()
        if c.is_dir() and c not in out:
            out.append(c)
    return out


def config_dirs() -> list[Path]:
    """The existing config folders, in search order: ``./configs``, then the package's."""
    out: list[Path] = []
    for c in [Path.cwd() / "configs", *(root / "configs" for root in _package_roots())]:
        c = c.resolve()
        if c.is_dir() and c not in out:
            out.append(c)
    return out


def find_config(config: str | Path) -> Path:
    """``config`` if it is a file; else ``<name>.yaml`` from :func:`config_dirs` for a bare name.

    Raises:
        ConfigError: no such file; the message lists the config names found.
    """
    path = Path(config)
    if path.is_file():
        return path
    if path.is_dir():
        raise ConfigError(f"config {str(config)!r} is a folder, not a YAML file")
    name = str(config)
    dirs = config_dirs()
    if path.parent == Path(".") and not path.is_absolute():
        for d in dirs:
            for cand in (d / name, d / f"{name}.yaml"):
                if cand.is_file():
                    return cand
    known = sorted({p.stem for d in dirs for p in d.glob("*.yaml")})
    stem = path.stem if path.suffix in (".yaml", ".yml") else name
    raise ConfigError(
        f"config file {name!r} not found (a path, or a name from "
        f"{', '.join(map(str, dirs)) or 'no configs folder'}).{did_you_mean(stem, known)} "
        f"Available: {', '.join(known) or '(none)'}."
    )


def _names(folder: Path) -> list[str]:
    return sorted(
        p.stem for p in folder.glob("*.py") if not p.stem.startswith("_") and p.stem.isidentifier()
    )


def _package_for(folder: Path) -> str:
    """Import ``folder`` as a package under a private, folder-specific name."""
    name = "_chainrule_experiments_" + hashlib.sha1(str(folder).encode()).hexdigest()[:10]
    if name not in sys.modules:
        init = folder / "__init__.py"
        spec = importlib.util.spec_from_file_location(
            name, init if init.exists() else None, submodule_search_locations=[str(folder)]
        )
        if spec is None:  # pragma: no cover - folder without __init__ and no loader
            spec = importlib.machinery.ModuleSpec(name, None, is_package=True)
            spec.submodule_search_locations = [str(folder)]
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        if spec.loader is not None:
            spec.loader.exec_module(module)
    return name


def _check_module(module: Any, name: str, path: str) -> None:
    from pydantic import BaseModel

    params = getattr(module, "Params", None)
    if not (isinstance(params, type) and issubclass(params, BaseModel)):
        raise RunnerError(
            f"experiment {name!r} ({path}) has no pydantic model `Params`; see docs/experiments.md"
        )
    if not callable(getattr(module, "run", None)):
        raise RunnerError(f"experiment {name!r} ({path}) has no function `run(params, ctx)`")


def load_experiment(name: str, config_path: str | Path | None = None, context: str = "") -> Any:
    """Import ``experiments/<name>.py`` (see the module docstring for the search order).

    Raises:
        ConfigError: no folder holds ``<name>.py``; the message lists the folders searched, the
            experiments found and the nearest name.
    """
    dirs = experiment_dirs(config_path)
    for folder in dirs:
        if (folder / f"{name}.py").is_file() and name.isidentifier() and not name.startswith("_"):
            module = importlib.import_module(f"{_package_for(folder)}.{name}")
            _check_module(module, name, str(folder / f"{name}.py"))
            return module
    head = f"{context}: " if context else ""
    if not dirs:
        raise ConfigError(
            f"{head}experiment: no experiments folder found (looked in ${ENV_VAR}, "
            f"./experiments, next to the config file, the source checkout and the package); "
            f"run from the repository root or set {ENV_VAR}=/path/to/experiments."
        )
    known = sorted({n for d in dirs for n in _names(d)})
    raise ConfigError(
        f"{head}experiment: unknown experiment {name!r}.{did_you_mean(name, known)} "
        f"Available: {', '.join(known) or '(none)'} (in {', '.join(map(str, dirs))})."
    )


def list_experiments(config_path: str | Path | None = None) -> list[dict[str, Any]]:
    """``[{name, description, folder, configs}]`` for every experiment found (first wins)."""
    seen: dict[str, dict[str, Any]] = {}
    for folder in experiment_dirs(config_path):
        for name in _names(folder):
            if name in seen:
                continue
            try:
                module = load_experiment(name, config_path)
                desc = str(getattr(module, "DESCRIPTION", "")).strip() or "(no DESCRIPTION)"
            except Exception as e:  # a broken module must not hide the others
                desc = f"(cannot import: {type(e).__name__}: {e})"
            configs = _configs_by_experiment(folder.parent / "configs").get(name, [])
            seen[name] = {
                "name": name,
                "description": desc,
                "folder": str(folder),
                "configs": configs,
            }
    return list(seen.values())


def _configs_by_experiment(configs_dir: Path) -> dict[str, list[str]]:
    """Map experiment name -> config files in ``configs_dir`` naming it (``experiment:`` key)."""
    out: dict[str, list[str]] = {}
    if not configs_dir.is_dir():
        return out
    for path in sorted(configs_dir.glob("*.yaml")):
        try:
            data = load_yaml(path)
        except RunnerError:
            continue
        if isinstance(data, dict) and isinstance(data.get("experiment"), str):
            out.setdefault(data["experiment"], []).append(str(path))
    return out
