"""dynamical_isometry: the quick config through the runner (tanh+orthogonal isometric at small q*,
lost at q* = 1, spread as free probability predicts; Gaussian and ReLU never), the claim checks
on synthetic rows, and the mean-field constants."""

from __future__ import annotations

import math

import numpy as np
import pytest

pytest.importorskip("pydantic")
from chainrule.runner import load_experiment  # noqa: E402

di = load_experiment("dynamical_isometry")


@pytest.fixture(scope="module")
def results(run_quick):
    return run_quick("dynamical_isometry")


def test_quick_run_reproduces_every_claim(results):
    rows = results["tables"]["spectra"]
    deepest = max(r["depth"] for r in rows)
    orth = {r["q_star"]: r for r in rows if r["config"] == "tanh_orthogonal"}
    small, large = min(orth), max(orth)
    ref = [r for r in rows if r["config"] == "tanh_orthogonal" and r["q_star"] == small]
    ref = max(ref, key=lambda r: r["depth"])
    assert ref["depth"] == deepest and 0.8 < ref["mean_sq"] < 1.25 and ref["frac_near_1"] >= 0.9
    lost = [r for r in rows if r["config"] == "tanh_orthogonal" and r["q_star"] == large]
    assert max(lost, key=lambda r: r["depth"])["frac_near_1"] < 0.5
    claims = {c["name"]: c for c in results["tables"]["claims"]}
    assert set(claims) == {
        "isometry_tanh_orthogonal_small_q",
        "isometry_lost_as_q_grows",
        "spread_matches_free_probability",
        "gaussian_never_isometric",
        "relu_never_isometric",
    }
    assert all(c["verdict"] == "reproduced" for c in claims.values()), claims
    assert results["summary"]["verdict"] == "reproduced"


def _row(config, q, depth, frac, spread=None):
    theory = di.theory_spread(config, 1.0 if q is None else q, depth)
    return {
        "config": config,
        "q_star": q,
        "depth": depth,
        "frac_near_1": frac,
        "spread_sq": theory if spread is None else spread,
        "theory_spread_sq": theory,
    }


def _synthetic(**over):
    rows = [
        _row("tanh_orthogonal", 1 / 256, 64, over.get("small", 0.99)),
        _row("tanh_orthogonal", 1.0, 64, over.get("large", 0.05)),
        _row("tanh_gaussian", 1 / 256, 64, over.get("gauss", 0.03)),
        _row("relu_orthogonal", None, 64, 0.02),
    ]
    if "spread" in over:
        rows[0]["spread_sq"] = over["spread"]
    return {c.name: c.verdict for c in di.claim_checks(rows, di.Params())}


def test_claim_checks_on_synthetic_rows():
    assert set(_synthetic().values()) == {"reproduced"}
    assert _synthetic(small=0.6)["isometry_tanh_orthogonal_small_q"] == "not reproduced"
    assert _synthetic(large=0.8)["isometry_lost_as_q_grows"] == "not reproduced"
    assert _synthetic(gauss=0.95)["gaussian_never_isometric"] == "not reproduced"
    # Two-sided against the theory: a spread 2x too large or 2x too small, or an explosion.
    t = di.theory_spread("tanh_orthogonal", 1 / 256, 64)
    for bad in (2 * t, t / 2, math.inf):
        assert _synthetic(spread=bad)["spread_matches_free_probability"] == "not reproduced"


def test_theory_spread_and_critical_point():
    # Orthogonal tanh at small q*: mu_2/mu_1^2 - 1 ~ 8 q*^2, so the spread ~ sqrt(8 L) q*.
    q, depth = 1e-3, 100
    assert di.theory_spread("tanh_orthogonal", q, depth) == pytest.approx(
        math.sqrt(8 * depth) * q, rel=0.02
    )
    assert di.theory_spread("tanh_gaussian", q, depth) == pytest.approx(10.0, rel=0.01)
    assert di.theory_spread("relu_orthogonal", 1.0, depth) == pytest.approx(10.0)
    sw2, sb2 = di.tanh_critical_point(0.05)
    z, w = np.polynomial.hermite_e.hermegauss(101)
    w = w / w.sum()
    h = np.sqrt(0.05) * z
    assert abs(sw2 * np.sum(w / np.cosh(h) ** 4) - 1) < 1e-12
    assert abs(sw2 * np.sum(w * np.tanh(h) ** 2) + sb2 - 0.05) < 1e-12


def test_bad_q_star_is_rejected():
    with pytest.raises(ValueError, match=r"q_stars \[0.0\] must be in \(0, 10\]"):
        di.Params(q_stars=[0.1, 0.0])
