"""The environment variables chainrule reads: each one read and validated here, and only here.

Every variable is read when asked for (not at import), so a test or a benchmark that sets one
in ``os.environ`` sees its effect on the next call. A malformed value raises a ``ValueError``
that names the variable, the value found and what is expected.

| variable | meaning | default |
|---|---|---|
| ``CHAINRULE_CHECK_O0`` | ``0``: gradient-check programs get XLA's default options | ``1`` |
| ``CHAINRULE_CHECK_XLA_OPTIONS`` | a JSON object of XLA options merged over the check's | none |
| ``CHAINRULE_BENCH_QUICK`` | ``1``: ``chainrule bench`` runs its quick sizes | ``0`` |
| ``CHAINRULE_BENCH_SIZE`` | ``auto``, ``cpu``, ``gpu``, ``quick``: ad suite sizes | ``auto`` |
| ``CHAINRULE_EXPERIMENTS`` | experiment folders searched first (``os.pathsep``-separated) | none |
| ``CHAINRULE_JIT_CACHE_SIZE`` | programs kept by the AD core's compiled-program cache | ``256`` |
"""

from __future__ import annotations

import json
import os
from typing import Any

__all__ = [
    "VARIABLES",
    "bench_quick",
    "bench_size",
    "check_o0",
    "check_xla_options",
    "experiment_path",
    "jit_cache_size",
    "raw",
]

VARIABLES = (
    "CHAINRULE_CHECK_O0",
    "CHAINRULE_CHECK_XLA_OPTIONS",
    "CHAINRULE_BENCH_QUICK",
    "CHAINRULE_BENCH_SIZE",
    "CHAINRULE_EXPERIMENTS",
    "CHAINRULE_JIT_CACHE_SIZE",
)

_TRUE = ("1", "true", "yes", "on")
_FALSE = ("", "0", "false", "no", "off")


def raw(name: str) -> str | None:
    """The variable's text as set (None when unset), for a benchmark header to record it."""
    if name not in VARIABLES:
        raise ValueError(f"{name} is not one of chainrule's variables: {', '.join(VARIABLES)}.")
    return os.environ.get(name)


def _flag(name: str, default: bool) -> bool:
    raw = os.environ.get(name)
    if raw is None:
        return default
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ValueError(
        f"{name} must be one of {', '.join(repr(v) for v in _TRUE + _FALSE[1:])}, found {raw!r}; "
        f"unset it for the default ({'1' if default else '0'})."
    )


def check_o0() -> bool:
    """``CHAINRULE_CHECK_O0``: whether gradient-check programs get their own compile options."""
    return _flag("CHAINRULE_CHECK_O0", True)


def check_xla_options() -> dict[str, Any]:
    """``CHAINRULE_CHECK_XLA_OPTIONS`` parsed as a JSON object ({} when unset or blank)."""
    raw = os.environ.get("CHAINRULE_CHECK_XLA_OPTIONS", "").strip()
    if not raw:
        return {}
    try:
        parsed: Any = json.loads(raw)
    except json.JSONDecodeError as e:
        parsed = e
    if not isinstance(parsed, dict):
        raise ValueError(
            "CHAINRULE_CHECK_XLA_OPTIONS must be a JSON object of XLA options, e.g. "
            f"'{{\"xla_gpu_enable_triton_gemm\": false}}', found {raw!r} ({parsed}); "
            "unset it to use chainrule's defaults."
        )
    return parsed


def bench_quick() -> bool:
    """``CHAINRULE_BENCH_QUICK``: ``chainrule bench`` acts as if given ``--quick``."""
    return _flag("CHAINRULE_BENCH_QUICK", False)


BENCH_SIZES = ("auto", "cpu", "gpu", "quick")


def bench_size() -> str:
    """``CHAINRULE_BENCH_SIZE``: one of ``auto``, ``cpu``, ``gpu``, ``quick`` (default ``auto``)."""
    raw = os.environ.get("CHAINRULE_BENCH_SIZE", "").strip()
    if not raw:
        return "auto"
    if raw not in BENCH_SIZES:
        raise ValueError(
            f"CHAINRULE_BENCH_SIZE must be one of {', '.join(BENCH_SIZES)}, found {raw!r}."
        )
    return raw


def experiment_path() -> list[str]:
    """``CHAINRULE_EXPERIMENTS`` split on ``os.pathsep`` (empty entries dropped)."""
    raw = os.environ.get("CHAINRULE_EXPERIMENTS", "")
    return [p for p in raw.split(os.pathsep) if p]


def jit_cache_size() -> int:
    """``CHAINRULE_JIT_CACHE_SIZE``: a non-negative int; 0 turns compiled reuse off."""
    raw = os.environ.get("CHAINRULE_JIT_CACHE_SIZE", "").strip()
    if not raw:
        return 256
    try:
        value = int(raw)
    except ValueError:
        value = -1
    if value < 0:
        raise ValueError(
            f"CHAINRULE_JIT_CACHE_SIZE must be a non-negative integer, found {raw!r} "
            "(0 turns the AD core's compiled-program cache off)."
        )
    return value
