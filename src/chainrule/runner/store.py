"""Run directories and atomic persistence: JSON, CSV, YAML, text; the environment record."""

from __future__ import annotations

import csv
import io
import json
import math
import os
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

__all__ = [
    "atomic_write_text",
    "atomic_write_bytes",
    "to_jsonable",
    "write_json",
    "read_json",
    "write_csv",
    "make_run_dir",
    "environment",
]


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` to a temp file in the same folder, fsync, then ``os.replace``.

    A reader (or a resumed run) sees either the old file or the whole new one, never a part.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def to_jsonable(obj: Any) -> Any:
    """Convert results to plain JSON: arrays -> lists, numpy/jax scalars -> Python numbers.

    Non-finite floats (NaN, +-inf: an overflow is a result too) stay floats; :func:`write_json`
    writes them as ``NaN``/``Infinity``/``-Infinity`` (what Python's ``json``, numpy and pandas
    read back), so an exploding value is never stored as a missing one.
    """
    import numpy as np

    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, bool | str) or obj is None:
        return obj
    if isinstance(obj, int) and not isinstance(obj, bool):
        return obj
    if isinstance(obj, float):
        return obj
    if hasattr(obj, "__array__") or isinstance(obj, np.generic):
        arr = np.asarray(obj)
        if arr.dtype.kind == "b":
            return arr.tolist()
        if arr.dtype.kind in "iu":
            return arr.tolist()
        if arr.dtype.kind in "fc":
            return to_jsonable(arr.astype(float).tolist())
        return to_jsonable(arr.tolist())
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(
        f"results contain a {type(obj).__name__} ({obj!r:.60}); return only dicts, lists, "
        f"strings, numbers, booleans and arrays"
    )


def write_json(path: str | Path, data: Any) -> None:
    """Atomically write ``data`` as JSON; NaN and +-inf round-trip (``NaN``, ``Infinity``)."""
    text = json.dumps(to_jsonable(data), indent=1, allow_nan=True)
    atomic_write_text(path, text + "\n")


def read_json(path: str | Path) -> Any:
    """Read a JSON file written by :func:`write_json` (``NaN``/``Infinity`` become floats)."""
    return json.loads(Path(path).read_text(encoding="utf-8"))


def _csv_cell(v: Any) -> Any:
    if isinstance(v, list | dict):
        return json.dumps(v)
    if v is None:
        return ""
    if isinstance(v, float) and not math.isfinite(v):
        return "nan" if math.isnan(v) else ("inf" if v > 0 else "-inf")
    return v


def write_csv(path: str | Path, rows: list[dict[str, Any]]) -> None:
    """Rows of dicts -> CSV (columns in order of first appearance; lists/dicts as JSON).

    ``None`` is an empty cell; NaN and +-inf are ``nan``, ``inf``, ``-inf`` (as pandas reads them).
    """
    columns: list[str] = []
    for row in rows:
        for k in row:
            if k not in columns:
                columns.append(k)
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: _csv_cell(v) for k, v in row.items()})
    atomic_write_text(path, buf.getvalue())


def make_run_dir(parent: str | Path, name: str, config_hash: str) -> Path:
    """Create ``parent/<name>-<YYYYmmdd-HHMMSS>-<hash8>``; add ``-2``, ``-3``... if taken.

    ``mkdir`` without ``exist_ok`` makes the choice race-free: a directory is never reused.

    Raises:
        RunnerError: ``parent`` is a file, or cannot be created or written (the message names
            it and the reason; the CLI exits with status 2).
    """
    from chainrule.runner.errors import RunnerError

    parent = Path(parent)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    base = f"{name}-{stamp}-{config_hash[:8]}"
    try:
        if parent.exists() and not parent.is_dir():
            raise RunnerError(
                f"output directory {str(parent)!r} is a file, not a folder; pass --out DIR "
                f"(a folder, created if missing)"
            )
        parent.mkdir(parents=True, exist_ok=True)
        for i in range(1, 10_000):
            path = parent / (base if i == 1 else f"{base}-{i}")
            try:
                path.mkdir()
            except FileExistsError:
                continue
            try:  # a folder that accepts mkdir may still refuse files (/proc, read-only mounts)
                probe = path / ".write-test"
                probe.write_bytes(b"")
                probe.unlink()
            except OSError:
                path.rmdir()
                raise
            return path
    except OSError as e:
        raise RunnerError(
            f"output directory {str(parent)!r}: cannot create a run directory there "
            f"({e.strerror or type(e).__name__}); pass --out DIR with a writable folder"
        ) from None
    raise RunnerError(f"could not create a fresh run directory under {str(parent)!r}")


def _git(args: list[str], cwd: Path) -> str | None:
    try:
        out = subprocess.run(
            ["git", *args], cwd=cwd, capture_output=True, text=True, timeout=5, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def environment(repo_hint: str | Path | None = None) -> dict[str, Any]:
    """Versions, backend, devices, x64 flag and the git commit (when in a checkout)."""
    import platform
    import sys

    import jax
    import jaxlib

    import chainrule

    # The config's checkout first (experiments live there), then the package's own.
    commit, cwd = None, Path(chainrule.__file__).parent
    for place in ([Path(repo_hint)] if repo_hint else []) + [Path(chainrule.__file__).parent]:
        commit = _git(["rev-parse", "HEAD"], place) if place.is_dir() else None
        if commit is not None:
            cwd = place
            break
    dirty = None
    if commit is not None:
        status = _git(["status", "--porcelain", "--untracked-files=no"], cwd)
        dirty = bool(status) if status is not None else None
    return {
        "chainrule": chainrule.__version__,
        "jax": jax.__version__,
        "jaxlib": jaxlib.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "backend": jax.default_backend(),
        "devices": [str(d) for d in jax.devices()],
        "device_kind": getattr(jax.devices()[0], "device_kind", ""),
        "x64": bool(jax.config.jax_enable_x64),
        "git_commit": commit,
        "git_dirty": dirty,
        "argv": list(sys.argv),
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
