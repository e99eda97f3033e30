"""Validators for the options that ``chainrule.fd`` and ``chainrule.check`` share.

One function per option, each raising an error that names the caller, the option, what was
expected and what was found. Internal: imported by both modules so that ``step=0`` (or a
string, a NaN, a negative number) means the same error everywhere.
"""

from __future__ import annotations

import math
from typing import Any

import jax
import numpy as np

__all__ = [
    "check_has_aux",
    "check_key",
    "check_levels",
    "check_order",
    "check_seed",
    "check_step",
]


def _is_int(x: Any) -> bool:
    return not isinstance(x, (bool, np.bool_)) and isinstance(x, (int, np.integer))


def check_step(step: Any, what: str, default: str = "default_step") -> float | None:
    """``step`` as a positive finite float, None (the default) or a tracer (the caller's).

    Raises:
      TypeError: ``step`` is not a real number (a string, a bool, an array of several values).
      ValueError: ``step`` is 0, negative, NaN or infinite.
    """
    if step is None or isinstance(step, jax.core.Tracer):
        return step
    if isinstance(step, (str, bytes, bool, np.bool_)) or not (
        isinstance(step, (int, float, np.integer, np.floating))
        or (isinstance(step, (np.ndarray, jax.Array)) and np.ndim(step) == 0)
    ):
        raise TypeError(
            f"{what}: step must be a positive real number or None (for {default}), found "
            f"{step!r} ({type(step).__name__})."
        )
    h = float(np.asarray(step))
    if not (math.isfinite(h) and h > 0):
        raise ValueError(
            f"{what}: step must be a positive, finite number, found {step!r}; or None for "
            f"{default}."
        )
    return h


def check_levels(levels: Any, what: str, default: int, minimum: int = 3) -> int:
    """``levels`` as an int >= ``minimum``."""
    if not _is_int(levels) or levels < minimum:
        raise ValueError(
            f"{what}: levels must be an int >= {minimum}, found {levels!r}; the default is "
            f"{default}."
        )
    return int(levels)


def check_seed(seed: Any, what: str) -> int:
    """``seed`` as a non-negative int (NumPy's generators reject negative seeds)."""
    if not _is_int(seed):
        raise TypeError(
            f"{what}: seed must be a non-negative int, found {seed!r} ({type(seed).__name__}); "
            f"or pass key=jax.random.key(...)."
        )
    if seed < 0:
        raise ValueError(f"{what}: seed must be a non-negative int, found {seed!r}.")
    return int(seed)


def check_key(key: Any, what: str) -> Any:
    """``key`` as None or a ``jax.random`` key (a typed key, or a raw uint32 pair)."""
    if key is None:
        return None
    dt = getattr(key, "dtype", None)
    is_key_dtype = dt is not None and jax.dtypes.issubdtype(dt, jax.dtypes.prng_key)
    typed = is_key_dtype and np.shape(key) == ()
    raw = dt is not None and not is_key_dtype and np.dtype(dt) == np.uint32
    if not (typed or (raw and np.shape(key) == (2,))):
        raise TypeError(
            f"{what}: key must be a single jax.random key (jax.random.key(0)), found "
            f"{type(key).__name__} with shape {np.shape(key)} and dtype {dt}."
        )
    return key


def check_order(order: Any, what: str, allowed: tuple[int, ...] = (1, 2)) -> int:
    """``order`` as one of ``allowed`` (an int, not a bool or a float)."""
    if not _is_int(order) or order not in allowed:
        raise ValueError(
            f"{what}: order must be {' or '.join(map(str, allowed))} (an int), found {order!r} "
            f"({type(order).__name__})."
        )
    return int(order)


def check_has_aux(has_aux: Any, what: str) -> bool:
    """``has_aux`` as a bool."""
    if not isinstance(has_aux, (bool, np.bool_)):
        raise TypeError(
            f"{what}: has_aux must be True or False, found {has_aux!r} ({type(has_aux).__name__})."
        )
    return bool(has_aux)
