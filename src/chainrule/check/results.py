"""Results and reports: what a check found, its tolerance, and the smallest error it could see.

The bottom layer of :mod:`chainrule.check`: plain frozen dataclasses, no JAX.
"""

from __future__ import annotations

import dataclasses
import math

__all__ = ["WEAK_FLOOR", "CheckResult", "CheckReport", "GradientCheckError"]

# A check that could not have seen a relative error below this is flagged weak in the summary
# whatever its verdict: "a few percent" is what a bug in a kinked function's rule looks like.
WEAK_FLOOR = 0.03


class GradientCheckError(AssertionError):
    """Raised by :meth:`CheckReport.raise_if_failed`; its message is the report's summary."""


def _pct(x: float) -> str:
    if not math.isfinite(x):
        return "inf%"
    return f"{100 * x:.2g}%"


@dataclasses.dataclass(frozen=True)
class CheckResult:
    """One check's outcome.

    Attributes:
      name: ``"jvp"``, ``"jvp primal"``, ``"vjp"``, ``"vjp primal"``, ``"hvp[fwd-over-rev]"``,
        ``"hvp[rev-over-rev]"``, ``"hvp[rev-over-fwd]"``, ``"taylor"`` or ``"determinism"``.
      status: ``"passed"``, ``"failed"`` or ``"skipped"``.
      error: the measured error (for ``taylor``: the observed convergence order).
      tolerance: what it was held to (for ``taylor``: the required order).
      error_model: where the tolerance came from, with its components.
      fd_error: the finite-difference error estimate at the worst direction (None if n/a).
      worst_path: pytree path of the worst leaf (output leaf for jvp/primal, input leaf for
        vjp/hvp), or None.
      worst_index: index of the worst element within that leaf, or None.
      note: extra information (why skipped, NaN/Inf found, re-checks, ...).
      floor: the detection floor: the smallest relative error of the checked quantity this
        check would have caught (its tolerance over the size of what it compared, at the
        least favourable direction); None where nothing was compared.
      rounding: the share of the tolerance that rounding of the AD side and of the inputs
        accounts for at the worst direction (the rest is FD's error estimate); None if n/a.
    """

    name: str
    status: str
    error: float = float("nan")
    tolerance: float = float("nan")
    error_model: str = ""
    fd_error: float | None = None
    worst_path: str | None = None
    worst_index: tuple[int, ...] | None = None
    note: str = ""
    floor: float | None = None
    rounding: float | None = None

    @property
    def passed(self) -> bool:
        return self.status != "failed"

    @property
    def weak(self) -> bool:
        """True when the check could only have caught errors above :data:`WEAK_FLOOR`."""
        return self.status != "skipped" and self.floor is not None and not self.floor <= WEAK_FLOOR

    def line(self) -> str:
        if self.status == "skipped":
            return f"  SKIP {self.name}: {self.note}"
        tag = "ok  " if self.status == "passed" else "FAIL"
        where = ""
        if self.worst_path is not None:
            where = f", worst at {self.worst_path}"
            if self.worst_index is not None:
                where += f"{list(self.worst_index)}"
        fd = f", FD err {self.fd_error:.2e}" if self.fd_error is not None else ""
        floor = ""
        if self.floor is not None:
            floor = f", catches errors above {_pct(self.floor)}" + (" (WEAK)" if self.weak else "")
        txt = (
            f"  {tag} {self.name}: error {self.error:.3e} vs tol {self.tolerance:.3e}{fd}{floor}"
            f"{where}"
        )
        if self.error_model:
            txt += f"\n       tol = {self.error_model}"
        if self.note:
            txt += f"\n       note: {self.note}"
        return txt


@dataclasses.dataclass(frozen=True)
class CheckReport:
    """The outcome of a gradient check: ``passed``, per-check results, ``summary()``.

    Skipped checks do not fail the report. Use ``report.raise_if_failed()`` (or
    ``assert report.passed, report.summary()``) in tests.
    """

    results: tuple[CheckResult, ...]
    function: str = ""
    dtype: str = ""

    @property
    def passed(self) -> bool:
        return all(r.passed for r in self.results) and any(
            r.status == "passed" for r in self.results
        )

    @property
    def failed(self) -> tuple[CheckResult, ...]:
        return tuple(r for r in self.results if r.status == "failed")

    @property
    def skipped(self) -> tuple[CheckResult, ...]:
        return tuple(r for r in self.results if r.status == "skipped")

    @property
    def weak(self) -> tuple[CheckResult, ...]:
        """The checks whose detection floor is above :data:`WEAK_FLOOR`, whatever their verdict."""
        return tuple(r for r in self.results if r.weak)

    @property
    def floor(self) -> float | None:
        """The largest detection floor over the derivative checks (None if none was run)."""
        fl = [r.floor for r in self.results if r.floor is not None and r.status != "skipped"]
        return max(fl) if fl else None

    def __getitem__(self, name: str) -> CheckResult:
        for r in self.results:
            if r.name == name:
                return r
        raise KeyError(f"No check named {name!r}; have {[r.name for r in self.results]}.")

    def summary(self) -> str:
        """A readable multi-line account: one line per check, tolerances and their sources,
        and what the check could have caught ("would catch errors above X%"), weak checks
        (floor above :data:`WEAK_FLOOR`) named."""
        head = "PASSED" if self.passed else "FAILED"
        if not any(r.status == "passed" for r in self.results) and not self.failed:
            head = "FAILED (nothing could be checked)"
        lines = [f"gradient check of {self.function} ({self.dtype}): {head}"]
        lines += [r.line() for r in self.results]
        floored = [r for r in self.results if r.floor is not None and r.status != "skipped"]
        if floored:
            lines.append(
                "  this check would catch errors above "
                + ", ".join(f"{_pct(r.floor)} ({r.name})" for r in floored)
            )
        if self.weak:
            lines.append(
                f"  WEAK: {', '.join(r.name for r in self.weak)} could not see errors below "
                f"{_pct(WEAK_FLOOR)}; check at other points, or in float64"
            )
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.summary()

    def raise_if_failed(self) -> CheckReport:
        """Raise :class:`GradientCheckError` (an AssertionError) with the summary if failed."""
        if not self.passed:
            raise GradientCheckError(self.summary())
        return self

    assert_passed = raise_if_failed

    def assert_failed(self, *names: str) -> CheckReport:
        """Assert that the report failed (and, if given, that each named check failed)."""
        if self.passed:
            raise AssertionError("expected the gradient check to fail:\n" + self.summary())
        for n in names:
            if self[n].status != "failed":
                raise AssertionError(f"expected check {n!r} to fail:\n" + self.summary())
        return self
