"""hessian_spectrum quick config: outliers above the SLQ bulk, both variants analysed."""

from __future__ import annotations

import numpy as np
import pytest


@pytest.fixture(scope="module")
def results(run_quick):
    return run_quick("hessian_spectrum")


def test_outliers_densities_and_gradient_fractions(results):
    rows = results["tables"]["checkpoints"]
    assert {(r["variant"], r["step"]) for r in rows} == {
        (v, s) for v in ("plain", "batchnorm") for s in (0, 20, 60)
    }
    for r in rows:
        assert r["converged"]
        top = np.asarray(r["top"])
        assert np.all(np.diff(top) <= 0) and top[-1] > 0  # descending, k of them
        assert 0.0 <= r["grad_energy_topk"] <= 1.0
        assert r["bulk_edge"] < r["lambda_1"]
    # without batch norm the top eigenvalue stands far above the bulk once training starts
    plain = [r for r in rows if r["variant"] == "plain" and r["step"] > 0]
    assert all(r["outlier_ratio"] >= 5 for r in plain)
    for c in results["curves"]:
        grid, dens = np.asarray(c["grid"]), np.asarray(c["density"])
        assert np.all(dens >= 0)
        assert abs(np.sum(dens) * (grid[1] - grid[0]) - 1) < 1e-2
    names = [c["name"] for c in results["tables"]["checks"]]
    assert names == ["outliers_without_bn", "bn_shrinks_outliers", "gradient_in_outlier_span"]
    assert results["summary"]["verdict"] in ("reproduced", "partial", "not reproduced")
