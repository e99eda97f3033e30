"""fd_accuracy: the quick config through the runner; the slope fit on a synthetic V."""

import json
from pathlib import Path

import numpy as np
import pytest

from chainrule.runner import load_experiment, run_config

REPO = Path(__file__).resolve().parents[1]
fda = load_experiment("fd_accuracy")
QUICK = REPO / "configs" / "fd_accuracy_quick.yaml"


def results(run_dir: Path) -> dict:
    return json.loads((run_dir / "results.json").read_text())["points"][0]["results"]


@pytest.fixture(scope="module")
def quick_run(once):
    make = lambda out: str(run_config(QUICK, out=out, overrides=["params.cost_widths=[16, 256]"]))
    run_dir = Path(once("fd_accuracy-cost-widths", make))
    return run_dir, results(run_dir)


def test_slopes_match_the_stencil_orders(quick_run):
    run_dir, res = quick_run
    fits = {(f["method"], f["dtype"]): f for f in res["tables"]["slopes"]}
    # Truncation branch: error ~ h^p (tolerance: the fit spans 2-4 decades of a smooth f).
    assert fits["forward", "float64"]["slope_truncation"] == pytest.approx(1.0, abs=0.15)
    assert fits["central", "float64"]["slope_truncation"] == pytest.approx(2.0, abs=0.2)
    assert fits["central4", "float64"]["slope_truncation"] == pytest.approx(4.0, abs=0.4)
    assert fits["complex", "float64"]["slope_truncation"] == pytest.approx(2.0, abs=0.2)
    assert fits["forward", "float32"]["slope_truncation"] == pytest.approx(1.0, abs=0.2)
    assert fits["central", "float32"]["slope_truncation"] == pytest.approx(2.0, abs=0.25)
    assert fits["complex", "float32"]["slope_truncation"] == pytest.approx(2.0, abs=0.25)
    # Round-off branch: error ~ eps / h.
    assert fits["forward", "float64"]["slope_roundoff"] == pytest.approx(-1.0, abs=0.3)
    assert fits["central", "float64"]["slope_roundoff"] == pytest.approx(-1.0, abs=0.3)
    assert fits["forward", "float32"]["slope_roundoff"] == pytest.approx(-1.0, abs=0.3)
    # The complex step has no subtraction: no round-off branch, error near eps.
    assert fits["complex", "float64"]["slope_roundoff"] is None
    assert fits["complex", "float64"]["best_error"] < 1e-14
    # Best errors: forward ~ sqrt(eps), central ~ eps^(2/3) (up to a constant of ~10).
    for dt, eps in (("float32", 2.0**-23), ("float64", 2.0**-52)):
        assert fits["forward", dt]["best_error"] < 30 * eps**0.5
        assert fits["central", dt]["best_error"] < 30 * eps ** (2 / 3)
        assert fits["forward", dt]["best_error"] > 0.01 * eps**0.5
    # The higher-order stencils: O(h^4) and O(h^6) in float64.
    assert fits["central6", "float64"]["slope_truncation"] == pytest.approx(6.0, abs=0.55)
    verdicts = {(v["method"], v["dtype"]): v["verdict"] for v in res["tables"]["verdicts"]}
    for method in ("forward", "central", "central4", "central6", "complex"):
        assert verdicts[method, "float64"] == "reproduced", method
    assert res["summary"]["verdict"] == "reproduced"
    assert "Verdict on the O(h^p) claim" in (run_dir / "report.md").read_text()
    assert (run_dir / "plots" / "error_vs_step.png").exists()


def test_gradient_cost_table(quick_run):
    run_dir, res = quick_run
    cost = res["tables"]["cost"]
    assert [c["W"] for c in cost] == [16, 256]
    for c in cost:
        assert c["fd_evaluations"] == 4 * c["W"] and c["reverse_passes"] == 1
        assert c["max_abs_diff"] < 1e-6 * c["W"]  # central FD error ~1e-10 per element
    assert cost[-1]["fd_ms"] > cost[-1]["reverse_ms"]
    assert (run_dir / "plots" / "gradient_cost.png").exists()
    assert (run_dir / "plots" / "error_vs_step.png").exists()


def test_error_curves_are_reproducible_and_the_verdict_holds_for_another_seed(quick_run, tmp_path):
    _, res = quick_run
    again = results(run_config(QUICK, out=tmp_path, overrides=["params.cost_widths=[]"]))
    assert again["tables"]["errors"] == res["tables"]["errors"]
    assert again["tables"]["slopes"] == res["tables"]["slopes"]
    other = results(run_config(QUICK, out=tmp_path, overrides=["params.cost_widths=[]", "seed=1"]))
    assert other["tables"]["errors"] != res["tables"]["errors"]
    assert other["summary"]["verdict"] == "reproduced"


def _synthetic_fits(orders, p, scale=10.0, eps=2.0**-52):
    """Fits of exact V curves ``scale h^q + eps / h`` (``q`` the measured order)."""
    h = np.logspace(-16, 0, 161)  # 10 steps per decade
    out = []
    for method, q in orders.items():
        err = scale * h**q + eps / h
        fit = fda.fit_slopes(h, err, p)
        out.append(
            {"dtype": "float64", "method": method, "expected_order": fda.ORDERS[method], **fit}
        )
    return out


def test_verdicts_on_synthetic_v_curves():
    p = fda.Params()
    good = fda.stencil_verdicts(
        _synthetic_fits({"forward": 1, "central": 2, "central4": 4, "central6": 6}, p)
    )
    assert [v["verdict"] for v in good] == ["reproduced"] * 4
    assert fda.overall_verdict(good) == "reproduced"
    # Two-sided: a sixth-order stencil that measures 5 or 7, or a fourth-order one at 3 or 5,
    # is not its paper's order.
    for wrong in ({"central6": 5}, {"central6": 7}, {"central4": 3}, {"central4": 5}):
        bad = fda.stencil_verdicts(_synthetic_fits(wrong, p))
        assert bad[0]["verdict"] == "not reproduced", wrong
    mixed = fda.stencil_verdicts(_synthetic_fits({"central": 2, "central6": 4}, p))
    assert fda.overall_verdict(mixed) == "partial"
    # A round-off branch far off eps / h fails that part of the claim only.
    h = np.logspace(-16, 0, 65)
    fit = fda.fit_slopes(h, 1e-3 * h**2 + 1e-20 / h**2, p)
    (v,) = fda.stencil_verdicts(
        [{"dtype": "float64", "method": "central", "expected_order": 2, **fit}]
    )
    assert v["verdict"] == "partial" and not v["ok_roundoff"]


def test_an_unresolvable_float64_stencil_keeps_the_verdict_partial():
    p = fda.Params()
    fits = _synthetic_fits({"central": 2}, p)
    flat = fda.fit_slopes(np.logspace(-16, 0, 65), np.full(65, 1e-16), p)
    fits.append({"dtype": "float64", "method": "central6", "expected_order": 6, **flat})
    verdicts = fda.stencil_verdicts(fits)
    assert verdicts[1]["verdict"] == "not resolvable"
    assert fda.overall_verdict(verdicts) == "partial"


def test_fit_slopes_on_a_synthetic_v():
    h = np.logspace(-12, 0, 49)
    p = fda.Params()
    fit = fda.fit_slopes(h, 1e-3 * h**2 + 1e-16 / h, p)
    assert fit["slope_truncation"] == pytest.approx(2.0, abs=0.01)
    assert fit["slope_roundoff"] == pytest.approx(-1.0, abs=0.01)
    assert fit["best_step"] == pytest.approx((0.5e-13) ** (1 / 3), rel=0.2)
    flat = fda.fit_slopes(h, np.full_like(h, 1e-16), p)
    assert flat["slope_truncation"] is None and flat["slope_roundoff"] is None
