"""edge_of_stability quick config: the sharpness rises to 2/eta and hovers there."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="module")
def results(run_quick):
    return run_quick("edge_of_stability")


def test_sharpness_reaches_and_hovers_at_two_over_eta(results):
    rows = results["tables"]["per_lr"]
    assert len(rows) == 2
    for r in rows:
        assert r["t_eos"] is not None, r  # reached 0.9 x 2/eta within the budget
        assert r["sharpness_start"] < 0.6 * r["threshold"]  # ... from well below
        assert 0.85 <= r["ratio_median"] <= 1.2  # and stays there, two-sided
        assert r["loss_final"] < r["loss_at_eos"]
        assert r["max_residual"] < 1e-2 * r["sharpness_max"]  # Lanczos converged
    assert results["summary"]["verdict"] == "reproduced"
    names = {c["name"] for c in results["tables"]["checks"]}
    assert names == {
        "progressive_sharpening",
        "hovers_at_2_over_eta",
        "loss_non_monotone_but_decreasing",
    }
