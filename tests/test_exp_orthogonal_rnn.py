"""orthogonal_rnn quick config: orthogonal/identity BPTT Jacobians are isometric, Gaussian no."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip("pydantic")
from chainrule.runner import run_config  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    run_dir = run_config(
        ROOT / "configs" / "orthogonal_rnn_quick.yaml",
        out=tmp_path_factory.mktemp("runs"),
        show_progress=False,
    )
    assert (run_dir / "report.md").is_file()
    return json.loads((run_dir / "results.json").read_text())["points"][0]["results"]


def _at(results, act, t):
    return {
        r["init"]: r
        for r in results["tables"]["jacobian"]
        if r["activation"] == act and r["T"] == t
    }


def test_linear_orthogonal_is_isometry_gaussian_spreads(results):
    at = _at(results, "linear", 50)
    for init in ("orthogonal", "identity"):
        # float32 rounding over 50 products: |s - 1| ~ 50 * eps, far inside 1e-3.
        assert 1 - 1e-3 < at[init]["s_min"] <= at[init]["s_max"] < 1 + 1e-3, init
    g = at["gaussian"]
    assert g["s_max"] > 100 * g["s_median"]  # spread by orders of magnitude
    assert g["s_median"] < 1e-2
    assert results["summary"]["agrees_linear"] is True


def test_tanh_orthogonal_decays_far_slower_than_gaussian(results):
    at = _at(results, "tanh", 50)
    assert at["orthogonal"]["s_median"] > 100 * at["gaussian"]["s_median"]
    assert at["identity"]["s_median"] > 100 * at["gaussian"]["s_median"]
    assert results["summary"]["agrees_tanh"] is True


def test_horizon_beyond_max_t_is_rejected():
    from experiments.orthogonal_rnn import Params

    with pytest.raises(ValueError, match=r"horizons \[80\] are outside 1..max_t = 1..50"):
        Params(max_t=50, horizons=[10, 80])
