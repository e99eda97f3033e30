"""Host-side comparisons: AD results against finite differences, judged by the tolerance model.

NumPy only (the statistics in :func:`_leaf_stats` are generic in ``xp`` so that the device
kernels of :mod:`chainrule.check.program` compute the same numbers); each comparison returns a
:class:`~chainrule.check.results.CheckResult` with its detection floor.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from chainrule._richardson import norm_rows as _norm_rows
from chainrule.check.results import CheckResult
from chainrule.check.tolerance import (
    C_AD,
    C_DOT,
    C_PRIMAL,
    TAYLOR_ORDER,
    _input_rounding,
    _np_leaves,
    _ratio,
    floor_of,
)


def _first_bad(x, xp=np):
    """Flat index of the first element that is NaN/Inf in any direction (axis 0), or -1."""
    bad = ~xp.isfinite(x.reshape(x.shape[0], -1) if x.ndim else x.reshape(1, 1))
    anyb = xp.any(bad, axis=0)
    if xp is np:
        return int(np.argmax(anyb)) if anyb.any() else -1
    return xp.where(xp.any(anyb), xp.argmax(anyb), -1)


def _unravel(i: int, shape: tuple[int, ...]) -> tuple[int, ...] | None:
    if not shape or 0 in shape:  # a scalar, or an empty leaf (no element to point at)
        return None
    return tuple(int(j) for j in np.unravel_index(int(i), shape))


def _at(path: str, shape: tuple[int, ...], i: int) -> str:
    idx = _unravel(i, shape)
    return f"{path}{list(idx) if idx else ''}"


def _leaf_stats(a, b, e, safety: float, ad_coef: float, xp=np) -> dict[str, Any]:
    """AD values ``a`` against FD estimates ``b`` with error estimates ``e``, (K, n) each.

    Per direction: the error ``||a - b||``, the FD error ``||e||``, the AD rounding
    ``ad_coef ||a||`` and the element whose error is largest against its share of the
    tolerance; the first NaN/Inf element of ``a`` and of ``b`` (-1: none). Generic in ``xp``:
    NumPy on the host, jax.numpy inside the Richardson kernel for large leaves, where only
    these few numbers leave the device (every sum is of non-negative terms, so float32 is
    benign there).
    """
    K, n = a.shape
    d = xp.abs(a - b)
    ad_r = ad_coef * _norm_rows(a, xp)
    if n:
        tiny = xp.finfo(d.dtype).tiny
        score = d / (safety * e + ad_r[:, None] / math.sqrt(n) + tiny)
        idx = xp.argmax(xp.where(xp.isnan(score), xp.inf, score), axis=1)
    else:
        idx = xp.zeros(K, xp.int32)
    return {
        "err": _norm_rows(d, xp),
        "fd": _norm_rows(e, xp),
        "ad": ad_r,
        "size": _norm_rows(a, xp),
        "idx": idx,
        "bad_ad": _first_bad(a, xp),
        "bad_fd": _first_bad(b, xp),
    }


def _host_stats(ad_leaves, fd_leaves, err_leaves, cfg, ad_coef) -> list[dict[str, Any]]:
    out = []
    with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
        for a, b, e in zip(ad_leaves, fd_leaves, err_leaves, strict=True):
            a = a.reshape(a.shape[0], -1).astype(np.float64)
            out.append(_leaf_stats(a, b, e, cfg.safety, ad_coef))
    return out


def _compare_leaves(name, stats, paths, shapes, cfg, what, caps=None):
    """Judge per leaf and direction in norm, from :func:`_leaf_stats` of every leaf.

    Returns the result and each leaf's per-direction tolerances; ``caps`` (such tolerances
    from an earlier run) bound this run's: a re-check may not be looser than the first check.
    """
    best, notes, tols, sq_tol, sq_size = None, [], [], 0.0, 0.0
    for li, st in enumerate(stats):
        if st["bad_ad"] >= 0:
            notes.append(f"NaN/Inf in {what} at {_at(paths[li], shapes[li], st['bad_ad'])}")
        if st["bad_fd"] >= 0:
            notes.append(
                f"NaN/Inf in finite differences at {_at(paths[li], shapes[li], st['bad_fd'])}"
            )
        err, fd_n, ad_r = (np.asarray(st[k], np.float64) for k in ("err", "fd", "ad"))
        tol = cfg.safety * fd_n + ad_r
        if caps is not None:
            tol = np.fmin(tol, caps[li])  # fmin: a NaN/Inf first tolerance bounds nothing
        tols.append(tol)
        with np.errstate(over="ignore", invalid="ignore"):
            sq_tol = sq_tol + tol**2
            sq_size = sq_size + np.asarray(st["size"], np.float64) ** 2
        ratio = _ratio(err, tol)
        k = int(np.argmax(ratio))
        cand = (
            float(ratio[k]),
            li,
            float(err[k]),
            float(tol[k]),
            float(fd_n[k]),
            float(ad_r[k]),
            int(st["idx"][k]),
        )
        if best is None or cand[0] > best[0]:
            best = cand
    ratio, li, err, tol, fd, ad, idx = best
    model = (
        f"{cfg.safety:g} x FD error estimate {fd:.2e} (Richardson ladder, {cfg.levels} "
        f"steps) + rounding {C_AD:g} eps sqrt(W) |AD| (1 + 1/h_rel) = {ad:.2e}"
    )
    status = "failed" if (ratio > 1 or notes) else "passed"
    # the floor of the whole comparison, per direction over every leaf together: a relative
    # error r of the AD result moves ||a - b|| by about r ||a||
    floor = floor_of(np.sqrt(sq_tol), np.sqrt(sq_size))
    res = CheckResult(
        name,
        status,
        err,
        tol,
        model,
        fd,
        paths[li],
        _unravel(idx, shapes[li]),
        "; ".join(notes),
        floor,
        ad,
    )
    return res, tols


def _compare_primal(name, p_leaves, f0_leaves, paths, shapes, eps, what):
    best, notes, sq_tol, sq_size = None, [], 0.0, 0.0
    for li, (a, b) in enumerate(zip(p_leaves, f0_leaves, strict=True)):
        a = a.reshape(-1).astype(np.float64)
        b = b.reshape(-1).astype(np.float64)
        if _first_bad(a[None]) >= 0:
            notes.append(f"NaN/Inf in {what} at {_at(paths[li], shapes[li], _first_bad(a[None]))}")
        with np.errstate(invalid="ignore", over="ignore"):
            scale = np.abs(b) + np.linalg.norm(b) / math.sqrt(max(b.size, 1))
            tol = C_PRIMAL * eps * scale
            d = np.abs(a - b)
            sq_tol += float(np.sum(tol**2))
            sq_size += float(np.sum(b**2))
        r = _ratio(d, tol)
        i = int(np.argmax(r)) if r.size else 0
        cand = (
            float(r[i]) if r.size else 0.0,
            li,
            float(d[i]) if d.size else 0.0,
            float(tol[i]) if tol.size else 0.0,
            i,
        )
        if best is None or cand[0] > best[0]:
            best = cand
    ratio, li, err, tol, i = best
    model = f"{C_PRIMAL:g} eps (|f(x)| + rms f(x)) elementwise (both sides round at eps)"
    status = "failed" if (ratio > 1 or notes) else "passed"
    floor = floor_of(math.sqrt(sq_tol), math.sqrt(sq_size))
    return CheckResult(
        name,
        status,
        err,
        tol,
        model,
        None,
        paths[li],
        _unravel(i, shapes[li]),
        "; ".join(notes),
        floor,
    )


def _dot_test(
    us, est, err, jtu, vs, eps, cfg, in_paths, in_shapes, out_paths=None, out_shapes=None
):
    """<u, FD J v> against <J^T u, v> per direction: the differences, tolerances, their FD and
    rounding parts, NaN notes and ``|<J^T u, v>|`` (the size a relative error scales)."""
    K = est[0].shape[0]
    ul = [u.reshape(K, -1).astype(np.float64) for u in _np_leaves(us)]
    j_raw = [j.reshape(K, -1) for j in _np_leaves(jtu)]
    with np.errstate(invalid="ignore", over="ignore"):
        # products in float64, each formed once (W-sized: the host's largest work here).
        # J^T u where v is exactly 0 (the other leaves, when localising) contributes nothing:
        # a NaN there must not turn the re-check of a healthy leaf into a NaN
        jv = [
            np.where(v != 0, j * v.astype(np.float64), 0.0)
            for j, v in zip(j_raw, (v.reshape(K, -1) for v in _np_leaves(vs)), strict=True)
        ]
        lhs = sum(np.sum(u * e, 1) for u, e in zip(ul, est, strict=True))
        lhs_err = sum(np.sum(np.abs(u) * r, 1) for u, r in zip(ul, err, strict=True))
        rhs = sum(np.sum(x, 1) for x in jv)
        terms = sum(np.sum(np.abs(u * e), 1) for u, e in zip(ul, est, strict=True)) + sum(
            np.sum(np.abs(x), 1) for x in jv
        )
        terms = terms * _input_rounding(eps)
        tol = cfg.safety * lhs_err + C_DOT * eps * terms
        dif = np.abs(lhs - rhs)
    notes = [
        f"NaN/Inf in the AD cotangent (vjp) at {_at(p, s, _first_bad(j))}"
        for p, s, j in zip(in_paths, in_shapes, j_raw, strict=True)
        if _first_bad(j) >= 0
    ]
    if out_paths is not None:
        notes += [
            f"NaN/Inf in finite differences at {_at(p, s, _first_bad(e))}"
            for p, s, e in zip(out_paths, out_shapes, est, strict=True)
            if _first_bad(e) >= 0
        ]
    return dif, tol, lhs_err, C_DOT * eps * terms, notes, np.abs(rhs)


def _taylor_result(p0, ps, d, tts, eps, W) -> CheckResult:
    """The Taylor test's verdict from ``f(x)``, ``f(x + h v)`` over the halving steps and
    ``<g, v>``.

    Rates are measured where the remainder stands 100x above its round-off model (at 10x,
    rounding at the smallest valid steps bent a right gradient's order 2 down to 1.3 on 1 of
    60 random smooth float32 cases), or 10x for a direction that never gets there. A
    remainder at round-off at every step (a linear ``f``)
    is judged by its size instead: a gradient error ``delta`` would leave ``h |delta|`` at the
    largest step, so it passes only if ``r(h0) <= 10 noise(h0)`` and states the floor
    ``10 noise(h0) / (h0 |<g, v>|)``; never a NaN pass.
    """
    p0 = float(np.asarray(p0))
    ps = np.asarray(ps, np.float64)
    hh = np.asarray(tts, np.float64)
    d = np.asarray(d, np.float64)[:, None]
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        r = np.abs(ps - p0 - hh * d)
        noise = 8 * eps * (abs(p0) + np.abs(ps)) + C_AD * eps * math.sqrt(W) * np.abs(hh * d)
        rate = np.log2(r[:, :-1] / r[:, 1:])
        # the smallest relative gradient error that would show: h |delta| above the
        # remainder (or its noise) at the smallest step still measured
        rel = np.maximum(r, 10 * noise) / np.abs(hh * d)
    valid = (r[:, 1:] > 100 * noise[:, 1:]) & (r[:, :-1] > 100 * noise[:, :-1])
    # a nearly linear f (small x, a low curvature) may never reach 100x: then 10x, as before
    low = (r[:, 1:] > 10 * noise[:, 1:]) & (r[:, :-1] > 10 * noise[:, :-1])
    valid = np.where(valid.any(axis=1, keepdims=True), valid, low)
    model = (
        f"remainder |f(x+hv) - f(x) - h <g,v>| over {r.shape[1]} halving steps must shrink "
        f"with order >= {TAYLOR_ORDER} (2 = right gradient, 1 = wrong); steps where it is "
        f"below 100x the round-off model are ignored"
    )
    if not np.all(np.isfinite(r)):
        return CheckResult(
            "taylor",
            "failed",
            float("nan"),
            TAYLOR_ORDER,
            model,
            note="NaN/Inf in the Taylor remainder",
        )
    measured, floors = [], []
    for k in range(r.shape[0]):
        if valid[k].any():
            idx = np.nonzero(valid[k])[0][-3:]
            measured.append(float(np.median(rate[k][idx])))
            floors.append(float(rel[k, idx[-1] + 1]))
    if not measured:
        # never 10x above round-off: f is linear along v
        ratio = r[:, 0] / (10 * noise[:, 0])
        floor = floor_of(10 * noise[:, 0], np.abs(hh[:, 0] * d[:, 0]))
        # above round-off at the top step only: wrong if it falls like h there (order 1)
        ok = bool(np.all((ratio <= 1) | (rate[:, 0] >= TAYLOR_ORDER)))
        return CheckResult(
            "taylor",
            "passed" if ok else "failed",
            float(np.max(r[:, 0])),
            float(np.min(10 * noise[:, 0])),
            "remainder at the largest step <= 10x its round-off model (a remainder that never "
            "rises 10x above round-off: f is linear along v)",
            note="remainder at round-off level at every step: a linear f along the directions"
            + ("" if ok else "; but at the largest step it is above round-off: wrong gradient"),
            floor=floor,
        )
    m = min(measured)
    return CheckResult(
        "taylor",
        "failed" if m < TAYLOR_ORDER else "passed",
        m,
        TAYLOR_ORDER,
        model,
        floor=max(floors),
    )
