"""residual_depth: the verdict on the per-example back-propagated signal, two-sided."""

from __future__ import annotations

import importlib
import math

import pytest


@pytest.fixture(scope="module")
def results(run_quick):
    return run_quick("residual_depth")


@pytest.fixture(scope="module")
def mod():
    from chainrule.runner import load_experiment

    return load_experiment("residual_depth")


def _rows(values: dict) -> list[dict]:
    return [
        {"activation": a, "variant": v, "depth": d, "signal_ratio": s}
        for (a, v, d), s in values.items()
    ]


def test_verdict_is_two_sided_on_synthetic_rows(mod):
    common = importlib.import_module(mod.__package__ + "._common")
    good = {
        ("relu", "plain", 2): 0.5,
        ("relu", "plain", 64): 1e-10,
        ("relu", "residual_bn", 2): 1.4,
        ("relu", "residual_bn", 64): 6.0,
    }
    checks = mod.evaluate(_rows(good))
    assert [c.passed for c in checks] == [True, True]
    assert common.overall(c.passed for c in checks) == "reproduced"
    # An explosion is not "holds": 1e41 fails the band as 1e-41 does.
    for bad in (1e41, 1e-41, math.inf, math.nan):
        checks = mod.evaluate(_rows({**good, ("relu", "residual_bn", 64): bad}))
        assert [c.passed for c in checks] == [True, False]
    # A plain network that neither vanishes nor explodes does not show the plain half.
    checks = mod.evaluate(_rows({**good, ("relu", "plain", 64): 0.3}))
    assert checks[0].passed is False
    # Every activation enters the verdict.
    tanh = {("tanh", v, d): s for (_, v, d), s in good.items()}
    tanh[("tanh", "residual_bn", 64)] = 1e3
    checks = mod.evaluate(_rows({**good, **tanh}))
    assert common.overall(c.passed for c in checks) == "partial"


def test_mean_field_known_cases(mod):
    # Plain ReLU, sigma_w^2 = 1: squared signal x1/2 per layer; BN branch: sqrt((L + 2) / 2).
    assert mod.mean_field_ratio("relu", "plain", 10, 1.0) == pytest.approx(2**-5, rel=1e-6)
    assert mod.mean_field_ratio("relu", "plain", 10, 2.0) == pytest.approx(1.0, rel=1e-6)
    assert mod.mean_field_ratio("relu", "residual_bn", 30, 1.0) == pytest.approx(4.0, rel=1e-6)
    assert mod.mean_field_ratio("relu", "residual", 8, 1.0) == pytest.approx(1.5**4, rel=1e-6)


def test_quick_run_measures_the_signal(results):
    rows = {(r["variant"], r["depth"]): r for r in results["tables"]["signal"]}
    # Plain ReLU, Xavier: ~2^-16 at depth 32 (theory 2^-(L/2) in mean square).
    assert rows[("plain", 32)]["signal_ratio"] < 1e-3
    # Its weight-gradient ratio hides that (the forward and backward factors cancel).
    assert 0.1 < rows[("plain", 32)]["weight_grad_ratio_first_last"] < 10
    # Identity skips alone explode; BN in the branch and scaled branches hold.
    assert rows[("residual", 32)]["signal_ratio"] > 100
    for v in ("residual_bn", "residual_scaled"):
        assert 0.5 < rows[(v, 32)]["signal_ratio"] < 20
    by = {c["name"]: c for c in results["claims"]}
    assert by["relu.plain_leaves_band"]["verdict"] == "reproduced"
    assert by["relu.residual_in_band"]["verdict"] == "not reproduced"
    assert results["summary"]["verdict"] == "partial"
