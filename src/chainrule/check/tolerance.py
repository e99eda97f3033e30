"""The tolerance model: error coefficients, random directions, steps, detection floors.

What a check is held to, derived from the two sides' errors rather than a fixed atol/rtol:
``tolerance = safety * |FD error estimate| + C_AD * eps * sqrt(W) * |AD| * (1 + 1/h_rel)``
(see :mod:`chainrule.check`). This layer holds the constants of that model, the options of a
check (:class:`_Cfg`), the seeded directions and the step ladders (NumPy, no compilation), and
the detection floor: the smallest relative error a comparison could have caught.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any

import jax
import numpy as np

PyTree = Any

MODES = ("fwd", "rev")
C_AD = 4.0  # AD rounding: C_AD * eps * sqrt(W) * |result|
C_DOT = 8.0  # dot-product test rounding: C_DOT * eps * sum |terms|
C_PRIMAL = 64.0  # primal outputs: 64 ulps of the output's scale
TAYLOR_ORDER = 1.5  # required convergence order of the Taylor remainder (1 = wrong, 2 = right)
# the re-checks' ladders: 64x lower (just below the default one's 32x span), then 4096x, then
# 2^18x (inputs crowded within 1e-2 of a kink need steps that small to see smooth f)
SHRINKS = (2.0**-6, 2.0**-12, 2.0**-18)


def loose_floor(eps: float) -> float:
    """A passing check whose detection floor is above this was loose: FD's error is far above
    what rounding explains (a kink or a high frequency within the ladder's steps), and the
    check looks for smaller steps where ``f`` is smooth. ``eps^0.4``: 1.7e-3 in float32,
    5.5e-7 in float64, both far above a smooth function's floor (~1e-5 and ~1e-10)."""
    return eps**0.4


@dataclasses.dataclass(frozen=True)
class _Cfg:
    checks: tuple[str, ...]
    num_directions: int
    levels: int
    safety: float
    step: float | None
    taylor_levels: int = 14


def _input_rounding(eps: float) -> float:
    """``1 + 1/h_rel``: besides the AD side's own rounding, the FD side perturbs inputs that are
    themselves rounded at ``eps |x|``; divided by the relative step ``h_rel = 2 eps^(1/7)`` at
    the top of the ladder, that is a derivative error of ``eps sqrt(W) |J v| / h_rel`` for W
    inputs with random signs, whatever the FD error estimate says (it cannot see it when f(x)
    is a sum of cancelling terms)."""
    return 1.0 + 1.0 / (2.0 * eps ** (1 / 7))


def _ad_coef(eps: float, W: int) -> float:
    """AD-side rounding allowed per unit of ``|AD result|``: ``C_AD eps sqrt(W) (1 + 1/h_rel)``."""
    return C_AD * eps * math.sqrt(W) * _input_rounding(eps)


def _np_leaves(tree: PyTree) -> list[np.ndarray]:
    return [np.asarray(x) for x in jax.tree_util.tree_leaves(tree)]


def _directions(tree: PyTree, K: int, seed: int, key: jax.Array | None, salt: int) -> PyTree:
    """K standard-normal directions shaped like ``tree`` (leading axis K), seeded."""
    leaves, treedef = jax.tree_util.tree_flatten(tree)
    if key is not None:
        keys = jax.random.split(jax.random.fold_in(key, salt), max(len(leaves), 1))
        out = [
            np.asarray(jax.random.normal(k, (K, *x.shape), x.dtype))
            for k, x in zip(keys, leaves, strict=False)
        ]
    else:
        shapes = tuple((tuple(x.shape), np.dtype(x.dtype)) for x in leaves)
        out = list(_seeded_normals(shapes, K, int(seed), salt))
    return treedef.unflatten(out)


@functools.lru_cache(maxsize=8)
def _seeded_normals(shapes: tuple, K: int, seed: int, salt: int) -> tuple[np.ndarray, ...]:
    # A repeated check (a second point, same shapes) draws the same directions: drawing ~1e5
    # normals costs a few ms per check, as much as the rest of the host side. Read-only, as
    # they are shared between checks.
    rng = np.random.default_rng([seed, salt])
    out = tuple(rng.standard_normal((K, *shape)).astype(dt) for shape, dt in shapes)
    for x in out:
        x.flags.writeable = False
    return out


def _rms_np(leaves: list[np.ndarray], axis0: bool = False) -> np.ndarray:
    if axis0:
        K = leaves[0].shape[0]
        sq = sum(np.sum(np.abs(x.reshape(K, -1).astype(np.float64)) ** 2, 1) for x in leaves)
        n = sum(x[0].size for x in leaves)
    else:
        sq = sum(np.sum(np.abs(x.astype(np.float64)) ** 2) for x in leaves)
        n = sum(x.size for x in leaves)
    return np.sqrt(sq / max(n, 1))


def _leaf_scales(args: tuple) -> list[float]:
    """Per input leaf, the magnitude its direction is scaled to: the leaf's rms, or (for an
    all-zero leaf) the rms of all of ``args``, or 1.

    A direction is any direction, so it may as well respect the parameters' own scale: weights
    of size 0.02 perturbed on a unit scale leave the asymptotic range of every step in the
    ladder (a false alarm we measured on a tanh MLP before scaling), while inputs of size 1e3
    perturbed on a unit scale drown in their own rounding (eps * 1e3).
    """
    xs = jax.device_get(jax.tree_util.tree_leaves(args))  # one transfer, not one per leaf
    glob = float(_rms_np(xs)) if xs else 1.0
    glob = glob if glob > 0 and np.isfinite(glob) else 1.0
    out = []
    for x in xs:
        r = float(_rms_np([x])) if x.size else 0.0
        out.append(r if r > 0 and np.isfinite(r) else glob)
    return out


def _scale_dirs(vs: PyTree, scales: list[float]) -> PyTree:
    leaves, treedef = jax.tree_util.tree_flatten(vs)
    return treedef.unflatten(
        [(v * np.asarray(s, v.dtype)).astype(v.dtype) for v, s in zip(leaves, scales, strict=True)]
    )


def _steps(
    vs: PyTree, scales: list[float], cfg: _Cfg, eps: float, tdtype
) -> tuple[np.ndarray, ...]:
    """Per direction: the largest step h0 of the ladder and the (K, 2L+1) line parameters.

    ``h0 = 2 eps^(1/7) / rms(v / scale)`` over the non-zero leaves of ``v``: with directions
    scaled to the leaves (:func:`_leaf_scales`) each coordinate moves by about
    ``2 eps^(1/7)`` of its own size at the top of the ladder (0.2 in float32, 0.012 in float64),
    halving ``levels - 1`` times.
    """
    vl = _np_leaves(vs)
    K = vl[0].shape[0]
    sq = np.zeros(K)
    n = np.zeros(K)
    for v, s in zip(vl, scales, strict=True):
        r = np.abs(v.reshape(K, -1).astype(np.float64)) / s
        nz = np.any(r > 0, axis=1)
        sq += np.where(nz, np.sum(r**2, axis=1), 0.0)
        n += np.where(nz, r.shape[1], 0)
    rv = np.sqrt(sq / np.maximum(n, 1))
    unit = 1.0 / np.where(rv > 0, rv, 1.0)
    h0 = (2.0 * eps ** (1 / 7) * unit) if cfg.step is None else np.full(K, cfg.step)
    h0 = h0.astype(tdtype)
    L = cfg.levels
    hs = h0[:, None] * (0.5 ** np.arange(L)).astype(tdtype)[None]
    ts = np.concatenate([hs, -hs, np.zeros((len(h0), 1), tdtype)], 1)
    Lt = cfg.taylor_levels
    tts = h0[:, None] * (0.5 ** np.arange(Lt)).astype(tdtype)[None]
    return h0, ts, tts


def _ratio(err, tol):
    err, tol = np.asarray(err, np.float64), np.asarray(tol, np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        r = np.where(tol > 0, err / np.where(tol > 0, tol, 1.0), np.where(err > 0, np.inf, 0.0))
    # a NaN error or tolerance certifies nothing (NaN > 0 is False: it would read as a pass)
    return np.where(np.isnan(r) | np.isnan(err) | np.isnan(tol), np.inf, r)


def floor_of(tol: Any, size: Any) -> float | None:
    """Detection floor: per direction ``tol / size`` (the relative error that would just reach
    the tolerance), the largest over directions (a smaller error could hide in the least
    favourable one). None if nothing of non-zero size was compared."""
    tol = np.asarray(tol, np.float64).reshape(-1)
    size = np.asarray(size, np.float64).reshape(-1)
    ok = size > 0
    if not ok.any():
        return None
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        r = tol[ok] / size[ok]
    r = np.where(np.isnan(r), np.inf, r)
    return float(np.max(r))
