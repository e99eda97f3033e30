"""Timing primitives for benchmarks: medians of blocked calls, alternated A/B runs, compile time.

Rules every suite follows: inputs are placed on the device before timing; compilation is timed
separately (``compile_ms``) from execution; each timed call ends in ``block_until_ready``; when a
ratio is reported the contenders are called in alternation (A, B, A, B, ...) within one run so
that drift in a shared, noisy machine hits both alike.
"""

from __future__ import annotations

import contextlib
import statistics
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import jax

__all__ = [
    "block",
    "time_call",
    "time_alternating",
    "cold_call_ms",
    "compile_ms",
    "env_header",
    "default_reps",
    "resolve_reps",
]

# Repetitions used when a suite passes ``reps=None``; ``chainrule bench --reps N`` sets it for the
# duration of a run through :func:`default_reps`.
_DEFAULT_REPS = 20


@contextlib.contextmanager
def default_reps(reps: int | None) -> Iterator[None]:
    """Within the block, ``reps=None`` in :func:`time_call`/:func:`time_alternating` means ``reps``.

    ``None`` leaves the current default (20) unchanged.
    """
    global _DEFAULT_REPS
    old = _DEFAULT_REPS
    if reps is not None:
        if not isinstance(reps, int) or isinstance(reps, bool) or reps < 1:
            raise ValueError(f"reps must be a positive integer, found {reps!r}.")
        _DEFAULT_REPS = reps
    try:
        yield
    finally:
        _DEFAULT_REPS = old


def resolve_reps(reps: int | None) -> int:
    """``reps``, or the run's default (see :func:`default_reps`) when it is None."""
    return _DEFAULT_REPS if reps is None else reps


def block(out: Any) -> Any:
    """Wait for every array in ``out`` (any pytree; non-array leaves are ignored)."""
    return jax.block_until_ready(out)


def _once(fn: Callable, args: tuple) -> float:
    t0 = time.perf_counter()
    block(fn(*args))
    return (time.perf_counter() - t0) * 1e3


def time_call(fn: Callable, *args: Any, warmup: int = 3, reps: int | None = None) -> dict[str, Any]:
    """Median, min and all times (ms) of ``fn(*args)`` after ``warmup`` untimed calls.

    ``reps=None`` uses the run's default (20 unless ``chainrule bench --reps`` says otherwise).
    """
    reps = resolve_reps(reps)
    for _ in range(warmup):
        block(fn(*args))
    times = [_once(fn, args) for _ in range(reps)]
    return {"median_ms": statistics.median(times), "min_ms": min(times), "times_ms": times}


def time_alternating(
    fns: Mapping[str, Callable], *args: Any, warmup: int = 3, reps: int | None = None
) -> dict[str, dict[str, Any]]:
    """Time several functions of the same arguments, interleaved call by call.

    Returns ``{name: {"median_ms", "min_ms", "times_ms"}}``. Interleaving puts every contender
    under the same machine conditions, which is what makes their ratio meaningful; the order
    rotates from one repetition to the next. ``reps=None`` uses the run's default, as in
    :func:`time_call`.
    """
    reps = resolve_reps(reps)
    for _ in range(warmup):
        for fn in fns.values():
            block(fn(*args))
    times: dict[str, list[float]] = {name: [] for name in fns}
    names = list(fns)
    for i in range(reps):
        # Rotate who goes first: a call right after a heavy one (a cold thread pool, evicted
        # caches) is slower, and a fixed order would pin that cost on one contender.
        k = i % len(names)
        for name in names[k:] + names[:k]:
            times[name].append(_once(fns[name], args))
    return {
        name: {"median_ms": statistics.median(t), "min_ms": min(t), "times_ms": t}
        for name, t in times.items()
    }


def cold_call_ms(fn: Callable, *args: Any) -> float:
    """Wall time (ms) of one call, compilation included: what a user waits on first use."""
    return _once(fn, args)


def compile_ms(jitted: Any, *args: Any) -> float:
    """Time (ms) to lower and compile a ``jax.jit``-wrapped function for these arguments."""
    t0 = time.perf_counter()
    jitted.lower(*args).compile()
    return (time.perf_counter() - t0) * 1e3


def matmul_precision() -> str | None:
    """JAX's ``jax_default_matmul_precision`` (None when unset), read defensively: the config
    attribute API has changed between JAX releases, and a benchmark header must not fail."""
    try:
        return jax.config.jax_default_matmul_precision
    except AttributeError:
        try:
            return jax.config.values.get("jax_default_matmul_precision")  # type: ignore[attr-defined]
        except Exception:
            return None


def env_header() -> dict[str, Any]:
    """Device, backend, versions and float32 matmul precision, for a benchmark's header."""
    import platform

    import jaxlib

    import chainrule

    dev = jax.devices()[0]
    from chainrule import _env

    extra = _env.raw("CHAINRULE_CHECK_XLA_OPTIONS")  # recorded verbatim, as set
    return {
        "chainrule": chainrule.__version__,
        "jax": jax.__version__,
        "jaxlib": jaxlib.__version__,
        "python": platform.python_version(),
        "backend": jax.default_backend(),
        "device": getattr(dev, "device_kind", str(dev)),
        "device_count": jax.device_count(),
        "x64": bool(jax.config.jax_enable_x64),
        "matmul_precision": str(matmul_precision() or "default")
        + (" (TF32 on recent NVIDIA GPUs)" if jax.default_backend() == "gpu" else ""),
        "cpu": platform.processor() or platform.machine(),
        **({"check_xla_options": extra} if extra else {}),
    }
