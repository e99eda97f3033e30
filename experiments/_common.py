"""What the experiments share: a jitted optax step, stored floats, the verdict skeleton, panels.

Experiment modules import it relatively (``from . import _common`` or ``from ._common import
...``); the runner imports the experiments folder as a package, so this works from a checkout
and from an installed wheel alike. A module starting with ``_`` is not an experiment.

The verdict vocabulary is fixed: a claim is **reproduced** (every check on the claim's own
quantity passes, two-sided where the claim is), **partial** (some do), **not reproduced** (none
do) or **not tested** (the run did not measure it). Each check carries the paper's number
beside ours, so a report reads ``claim | paper | measured | verdict``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

__all__ = [
    "REPRODUCED",
    "PARTIAL",
    "NOT_REPRODUCED",
    "NOT_TESTED",
    "VERDICTS",
    "Check",
    "overall",
    "within",
    "within_factor",
    "claims_table",
    "claims_section",
    "verdict_line",
    "floats",
    "finite_or_none",
    "tail_mean",
    "make_train_step",
    "line_panel",
    "share_y",
]

REPRODUCED = "reproduced"
PARTIAL = "partial"
NOT_REPRODUCED = "not reproduced"
NOT_TESTED = "not tested"
VERDICTS = (REPRODUCED, PARTIAL, NOT_REPRODUCED, NOT_TESTED)


# ----------------------------------------------------------------------------------------------
# Verdicts
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Check:
    """One claim checked on its own quantity.

    Attributes:
        name: a short identifier (``warmup_rescues_post_ln``), also the summary key prefix.
        claim: the claim in words, as the paper states it.
        paper: the paper's number or statement (``"x0.50 (1/sqrt N)"``).
        measured: our number, formatted (``"x0.79"``).
        passed: whether the measurement shows the claim; ``None``: not tested in this run.
        criterion: the rule ``passed`` came from (``"0.35 <= ratio <= 0.70"``).
    """

    name: str
    claim: str
    paper: str
    measured: str
    passed: bool | None
    criterion: str = ""

    @property
    def verdict(self) -> str:
        if self.passed is None:
            return NOT_TESTED
        return REPRODUCED if self.passed else NOT_REPRODUCED

    def row(self) -> dict[str, Any]:
        """The check as a results-table row (JSON-able)."""
        return {**asdict(self), "verdict": self.verdict}


def overall(passed: Iterable[bool | None]) -> str:
    """The verdict over several checks: all pass -> reproduced, none -> not reproduced.

    Checks that were not tested (``None``) are left out; with none tested the verdict is
    ``"not tested"``.

    >>> overall([True, True]), overall([True, False]), overall([False]), overall([None])
    ('reproduced', 'partial', 'not reproduced', 'not tested')
    """
    tested = [bool(p) for p in passed if p is not None]
    if not tested:
        return NOT_TESTED
    if all(tested):
        return REPRODUCED
    return PARTIAL if any(tested) else NOT_REPRODUCED


def within(x: float | None, lo: float = -math.inf, hi: float = math.inf) -> bool:
    """``lo <= x <= hi`` for a finite ``x``; ``None``/NaN/inf outside any finite bound fail.

    Two-sided by construction: an explosion (``inf``) is not inside ``[lo, hi]`` unless
    ``hi`` is infinite.

    >>> within(0.5, 0.35, 0.7), within(float("inf"), 0.0), within(None, 0.0, 1.0)
    (True, True, False)
    >>> within(float("nan"), -1.0, 1.0)
    False
    """
    if x is None:
        return False
    x = float(x)
    return not math.isnan(x) and lo <= x <= hi


def within_factor(measured: float | None, predicted: float, factor: float) -> bool:
    """``predicted / factor <= measured <= predicted * factor`` (both positive): two-sided.

    >>> within_factor(0.6, 0.5, 1.5), within_factor(0.79, 0.5, 1.5), within_factor(0.2, 0.5, 1.5)
    (True, False, False)
    """
    if factor < 1 or predicted <= 0:
        raise ValueError(
            f"within_factor: need factor >= 1 and predicted > 0; got {factor}, {predicted}"
        )
    return within(measured, predicted / factor, predicted * factor)


def claims_table(checks: Sequence[Check | Mapping[str, Any]]) -> str:
    """Markdown ``claim | paper | measured | verdict`` (checks or their stored rows)."""
    lines = ["| claim | paper | measured | verdict |", "|---|---|---|---|"]
    for c in checks:
        r = c.row() if isinstance(c, Check) else dict(c)
        cells = [r["claim"], r["paper"], r["measured"], f"**{r['verdict']}**"]
        lines.append("| " + " | ".join(str(x).replace("|", "\\|") for x in cells) + " |")
    return "\n".join(lines) + "\n"


def verdict_line(checks: Sequence[Check | Mapping[str, Any]]) -> str:
    """``**Verdict: partial** (2 of 3 checks reproduced).``"""
    rows = [c.row() if isinstance(c, Check) else dict(c) for c in checks]
    tested = [r for r in rows if r["passed"] is not None]
    ok = sum(bool(r["passed"]) for r in tested)
    v = overall(r["passed"] for r in rows)
    return f"**Verdict: {v}** ({ok} of {len(tested)} checks reproduced)."


def claims_section(
    published: str, setup: str, checks: Sequence[Check | Mapping[str, Any]], notes: str = ""
) -> str:
    """The report skeleton: published claim, this run, the claims table, notes, the verdict."""
    parts = [f"**Published claim.** {published.strip()}", f"**This run.** {setup.strip()}"]
    parts.append(claims_table(checks).rstrip())
    rows = [c.row() if isinstance(c, Check) else dict(c) for c in checks]
    crit = [f"- `{r['name']}`: {r['criterion']}" for r in rows if r.get("criterion")]
    if crit:
        parts.append("Criteria (computed on the claim's own quantity):\n" + "\n".join(crit))
    if notes.strip():
        parts.append(notes.strip())
    parts.append(verdict_line(checks))
    return "\n\n".join(parts) + "\n"


# ----------------------------------------------------------------------------------------------
# Stored floats
# ----------------------------------------------------------------------------------------------


def floats(values: Any) -> np.ndarray:
    """Stored numbers -> a float64 array; ``None`` (older results' non-finite) -> NaN.

    The runner stores NaN and +-inf as such (JSON ``NaN``/``Infinity``); results written
    before that stored them as ``null``.

    >>> floats([1, None, float("inf")]).tolist()
    [1.0, nan, inf]
    """
    if values is None:
        return np.array([], np.float64)

    def conv(v: Any) -> Any:
        if isinstance(v, list | tuple):
            return [conv(u) for u in v]
        return np.nan if v is None else float(v)

    return np.asarray(
        conv(list(values) if not isinstance(values, np.ndarray) else values.tolist()), np.float64
    )


def finite_or_none(x: Any) -> float | None:
    """``float(x)`` if finite, else ``None`` (for prose that prints "non-finite")."""
    if x is None:
        return None
    x = float(x)
    return x if math.isfinite(x) else None


def tail_mean(xs: Sequence[float], frac: float = 0.1) -> float:
    """Mean of the last ``frac`` of ``xs`` (at least one value); NaN if any is non-finite."""
    n = max(1, int(len(xs) * frac))
    v = np.asarray(xs[-n:], np.float64)
    return float(v.mean()) if np.isfinite(v).all() else math.nan


# ----------------------------------------------------------------------------------------------
# Training
# ----------------------------------------------------------------------------------------------


def make_train_step(loss_fn: Callable[..., Any], opt: Any, jit: bool = True) -> Callable:
    """One optax step ``(params, opt_state, *batch) -> (params, opt_state, loss, grad_norm)``.

    ``grad_norm`` is the global norm of the raw gradient (before any clipping in ``opt``).
    The step is built per call (never cached at module level), so it sees ``loss_fn`` as it
    is. Cost: one forward and one backward pass of ``loss_fn`` per step.

    Args:
        loss_fn: ``loss_fn(params, *batch) -> scalar``.
        opt: an ``optax.GradientTransformation``.
        jit: wrap the step in ``jax.jit``.

    Returns:
        The step function.

    >>> import jax.numpy as jnp, optax
    >>> step = make_train_step(lambda w, x: jnp.sum((w * x) ** 2), optax.sgd(0.1))
    >>> w, s, loss, gn = step(jnp.ones(2), optax.sgd(0.1).init(jnp.ones(2)), jnp.ones(2))
    >>> float(loss), [round(float(v), 6) for v in w]
    (2.0, [0.8, 0.8])
    """
    import jax
    import optax

    def step(params, opt_state, *batch):
        loss, g = jax.value_and_grad(loss_fn)(params, *batch)
        updates, opt_state = opt.update(g, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss, optax.tree.norm(g)

    return jax.jit(step) if jit else step


# ----------------------------------------------------------------------------------------------
# Plots
# ----------------------------------------------------------------------------------------------


def line_panel(
    ax: Any,
    series: Mapping[str, Any],
    x: Any = None,
    *,
    title: str = "",
    xlabel: str = "",
    ylabel: str = "",
    logy: bool = True,
    logx: bool = False,
    styles: Mapping[str, Mapping[str, Any]] | None = None,
    hlines: Mapping[str, float] | None = None,
) -> Any:
    """The standard panel: one line per series (label -> values), NaN/None gaps, log y.

    Non-positive values are hidden on a log axis (rather than clipped); ``hlines`` adds dotted
    reference lines (label -> y). Returns ``ax``.
    """
    styles = styles or {}
    for label, ys in series.items():
        y = floats(ys)
        if logy:
            y = np.where(y > 0, y, np.nan)
        xs = np.arange(1, len(y) + 1) if x is None else floats(x)
        kw = {"lw": 1.2, **styles.get(label, {})}
        ax.plot(xs, y, label=label, **kw)
    for label, yv in (hlines or {}).items():
        ax.axhline(yv, color="gray", ls=":", lw=1, label=label)
    if logy:
        ax.set_yscale("log")
    if logx:
        ax.set_xscale("log")
    ax.set_title(title, fontsize=10)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if series or hlines:
        ax.legend(fontsize=7)
    return ax


def share_y(axes: Iterable[Any]) -> None:
    """Give every panel the union of their y-ranges (comparable heights across panels)."""
    axes = list(axes)
    lims = [ax.get_ylim() for ax in axes]
    lo, hi = min(a for a, _ in lims), max(b for _, b in lims)
    for ax in axes:
        ax.set_ylim(lo, hi)


# ----------------------------------------------------------------------------------------------
# Mean-field integrals
# ----------------------------------------------------------------------------------------------


def gauss_expect(f: Callable[[np.ndarray], np.ndarray], var: float, n: int = 24_000) -> float:
    """``E[f(z)]`` for ``z ~ N(0, var)`` on a dense grid of ``n`` points over +-12 std.

    A dense grid, not Gauss-Hermite: at large ``var`` the Hermite nodes step over narrow
    peaks such as tanh's derivative and the integral comes out orders of magnitude low. The
    grid is symmetric with no point at 0 (ReLU's derivative jumps there).

    >>> round(gauss_expect(lambda z: z**2, 3.0), 6), gauss_expect(lambda z: (z > 0) * 1.0, 1.0)
    (3.0, 0.5)
    """
    t = np.linspace(-12.0, 12.0, n if n % 2 == 0 else n + 1)
    w = np.exp(-0.5 * t * t)
    return float(np.sum(w * f(math.sqrt(var) * t)) / np.sum(w))
