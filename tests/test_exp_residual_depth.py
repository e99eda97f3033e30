"""residual_depth quick config: a plain ReLU net's first-layer gradient vanishes, residual's not."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="module")
def results(run_quick):
    return run_quick("residual_depth")


def _g(results, variant, depth):
    (row,) = [
        r
        for r in results["tables"]["grad_norms"]
        if r["activation"] == "relu" and r["variant"] == variant and r["depth"] == depth
    ]
    return row["g_first"]


def test_plain_vanishes_residual_does_not(results):
    rows = results["tables"]["grad_norms"]
    lo, hi = min(r["depth"] for r in rows), max(r["depth"] for r in rows)
    # Plain ReLU with Xavier weights: g_1 shrinks by ~2^(-(hi - lo)/2) = 2^-15 here.
    assert _g(results, "plain", hi) < 1e-3 * _g(results, "plain", lo)
    # Scaled residual branches: g_1 stays within a factor 10 of the shallow network's.
    assert 0.1 < _g(results, "residual_scaled", hi) / _g(results, "residual_scaled", lo) < 10
    # Unscaled residual ReLU branches: no vanishing, but growth (x1.5 variance per block).
    assert _g(results, "residual", hi) > 10 * _g(results, "residual", lo)
    assert _g(results, "residual_scaled", hi) > 1e3 * _g(results, "plain", hi)
    assert results["summary"]["agrees"] is True
