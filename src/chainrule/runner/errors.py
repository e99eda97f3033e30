"""User-facing errors of the runner: the CLI prints them as one line and exits non-zero."""

from __future__ import annotations

import difflib
from collections.abc import Iterable

__all__ = ["ConfigError", "RunnerError", "did_you_mean"]


class RunnerError(Exception):
    """An error caused by the user's input (config, paths, options), not by a bug.

    The CLI prints ``str(error)`` on one line without a traceback and exits with status 2.
    """


class ConfigError(RunnerError, ValueError):
    """A config file or ``--set`` override is invalid; the message names the key path."""


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """``" Did you mean 'x'?"`` for the nearest of ``choices`` (difflib), or ``""``."""
    close = difflib.get_close_matches(str(word), [str(c) for c in choices], n=1, cutoff=0.6)
    return f" Did you mean {close[0]!r}?" if close else ""
