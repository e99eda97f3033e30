"""``RunContext``: what an experiment's ``run(params, ctx)`` gets from the runner."""

from __future__ import annotations

import contextlib
import sys
import zlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jax

__all__ = [
    "RunContext",
    "stable_hash",
    "point_id",
    "point_key",
    "key_overrides",
    "seed_key",
    "MAX_SEED",
]

MAX_SEED = 2**64 - 1


def stable_hash(text: str) -> int:
    """A 31-bit hash of ``text`` that is the same in every process (unlike ``hash``)."""
    return zlib.crc32(text.encode("utf-8")) & 0x7FFFFFFF


def point_id(overrides: dict[str, Any]) -> str:
    """Canonical text of a point's overrides: its identity for keys and resume.

    The runner and :meth:`RunContext.create` both derive keys from this text, so a context
    built by hand for a point gets the runner's key for it.
    """
    import json

    from chainrule.runner.store import to_jsonable

    return json.dumps(to_jsonable(overrides), sort_keys=True, separators=(",", ":"))


def seed_key(seed: int) -> jax.Array:
    """``jax.random.key(seed)`` for any seed in ``[0, 2**64)``, the same with x64 on or off.

    ``jax.random.key`` keeps only the low 32 bits without x64 and overflows past 2**63 with it;
    building the threefry key data ``[seed >> 32, seed & 0xffffffff]`` directly is what
    ``key(seed)`` gives under x64 for every seed it accepts (and equals ``key(seed)`` for seeds
    below 2**32 in both modes).

    Raises:
        ValueError: the seed is not an int in ``[0, 2**64)``.
    """
    import numpy as np

    if (
        isinstance(seed, bool)
        or not isinstance(seed, int | np.integer)
        or not (0 <= int(seed) <= MAX_SEED)
    ):
        raise ValueError(f"seed: expected an int in [0, 2**64 - 1]; found {seed!r}")
    seed = int(seed)
    data = np.array([seed >> 32, seed & 0xFFFFFFFF], np.uint32)
    return jax.random.wrap_key_data(data, impl="threefry2x32")


def point_key(seed: int, point_id: str) -> jax.Array:
    """The PRNG key of one sweep point: the config seed with the point's identity folded in.

    Folding in the point's overrides (not its index) keeps a point's numbers the same when the
    grid around it changes.
    """
    return jax.random.fold_in(seed_key(seed), stable_hash(point_id))


def key_overrides(point: dict[str, Any]) -> dict[str, Any]:
    """The overrides a point's key folds in: all but a swept ``seed`` (which is the seed).

    A point of ``sweep: {seed: [3]}`` therefore has the key of the same point in a run with
    ``seed: 3`` and no seed sweep.
    """
    return {k: v for k, v in point.items() if k != "seed"}


class _Progress:
    """One shared ``rich`` progress display (nested bars are tasks of the same display)."""

    def __init__(self) -> None:
        import threading

        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self.progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            transient=True,
        )
        self.depth = 0
        # Points running on several devices at once open and close bars from their threads.
        self._lock = threading.Lock()

    def _open(self, desc: str, total: int | None) -> Any:
        with self._lock:
            if self.depth == 0:
                self.progress.start()
            self.depth += 1
            return self.progress.add_task(desc or "working", total=total)

    def _close(self, task: Any) -> None:
        with self._lock:
            self.progress.remove_task(task)
            self.depth -= 1
            if self.depth == 0:
                self.progress.stop()

    def track(self, iterable: Iterable, total: int | None, desc: str) -> Iterator:
        task = self._open(desc, total)
        try:
            for item in iterable:
                yield item
                self.progress.advance(task)
        finally:
            self._close(task)

    @contextlib.contextmanager
    def counter(self, total: int | None, desc: str) -> Iterator[Callable[[], None]]:
        """A bar advanced by calling what this yields (points finishing in any order)."""
        task = self._open(desc, total)
        try:
            yield lambda: self.progress.advance(task)
        finally:
            self._close(task)


def _stderr_is_terminal() -> bool:
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):
        return False


@dataclass
class RunContext:
    """Randomness, progress and logging for one sweep point of an experiment.

    Attributes:
        seed: the point's seed: the config's, or the point's own with ``sweep.seed``.
        key: the point's PRNG key, derived from ``seed`` and the point's sweep overrides.
        out_dir: the run directory.
        point: the point's sweep overrides (``{}`` without a sweep).

    Example:
        >>> import tempfile
        >>> ctx = RunContext.create(seed=0, out_dir=tempfile.mkdtemp())
        >>> bool((ctx.fold("w") == ctx.fold("w")).all()) and ctx.seed == 0
        True
    """

    seed: int
    key: jax.Array
    out_dir: Path
    point: dict[str, Any] = field(default_factory=dict)
    show_progress: bool = False
    _progress: Any = field(default=None, repr=False)
    _log_lines: list[str] = field(default_factory=list, repr=False)

    @classmethod
    def create(
        cls,
        seed: int = 0,
        out_dir: str | Path = ".",
        point: dict[str, Any] | None = None,
        show_progress: bool | None = None,
    ) -> RunContext:
        """Build a context as the runner does (for tests and interactive use).

        The key is the runner's for the same ``seed`` and ``point`` (the sweep overrides; a
        ``seed`` among them, from ``sweep.seed``, is the point's seed).
        """
        point = dict(point or {})
        if show_progress is None:
            show_progress = _stderr_is_terminal()
        seed = int(point.get("seed", seed))  # a swept seed is the point's seed
        return cls(
            seed=seed,
            key=point_key(seed, point_id(key_overrides(point))),
            out_dir=Path(out_dir),
            point=point,
            show_progress=show_progress,
        )

    def fold(self, name: str) -> jax.Array:
        """A named sub-key: the same name always gives the same key within a point."""
        return jax.random.fold_in(self.key, stable_hash(name))

    def progress(self, iterable: Iterable, total: int | None = None, desc: str = "") -> Iterable:
        """Wrap ``iterable`` in a progress bar on a terminal; return it unchanged otherwise."""
        if not self.show_progress:
            return iterable
        if total is None and hasattr(iterable, "__len__"):
            total = len(iterable)  # type: ignore[arg-type]
        if self._progress is None:
            self._progress = _Progress()
        return self._progress.track(iterable, total, desc)

    def log(self, msg: str) -> None:
        """Print ``msg`` to stderr (when on a terminal) and append it to ``log.txt``."""
        self._log_lines.append(msg)
        if self.show_progress:
            if self._progress is not None and self._progress.depth:
                self._progress.progress.console.print(msg)
            else:
                print(msg, file=sys.stderr)
        try:
            if self.out_dir.is_dir():
                with open(self.out_dir / "log.txt", "a", encoding="utf-8") as fh:
                    fh.write(msg.rstrip("\n") + "\n")
        except OSError:
            pass
