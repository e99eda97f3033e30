"""dynamical_isometry quick config: tanh+orthogonal stays near 1, the others spread."""

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
        ROOT / "configs" / "dynamical_isometry_quick.yaml",
        out=tmp_path_factory.mktemp("runs"),
        show_progress=False,
    )
    data = json.loads((run_dir / "results.json").read_text())
    assert (run_dir / "report.md").is_file()
    return data["points"][0]["results"]


def test_tanh_orthogonal_concentrated_others_spread(results):
    rows = results["tables"]["spectra"]
    deepest = max(r["depth"] for r in rows)
    at = {r["config"]: r for r in rows if r["depth"] == deepest}
    ref = at["tanh_orthogonal"]
    # Criticality: mean s^2 near 1; isometry: (nearly) every singular value in [0.5, 2].
    assert 0.7 < ref["mean_sq"] < 1.4
    assert ref["frac_near_1"] >= 0.9
    for name in ("tanh_gaussian", "relu_orthogonal", "relu_gaussian"):
        other = at[name]
        assert other["frac_near_1"] <= 0.5, name
        assert other["spread_sq"] > 4 * ref["spread_sq"], name
    assert results["summary"]["agrees"] is True


def test_tanh_gaussian_spreads_with_depth(results):
    rows = {(r["config"], r["depth"]): r for r in results["tables"]["spectra"]}
    depths = sorted({d for _, d in rows})
    shallow, deep = rows[("tanh_gaussian", depths[0])], rows[("tanh_gaussian", depths[-1])]
    assert deep["s_max"] > 1.5 * shallow["s_max"]
    assert deep["frac_near_1"] < shallow["frac_near_1"]


def test_critical_point_is_a_fixed_point():
    import numpy as np
    from experiments.dynamical_isometry import tanh_critical_point

    q = 0.05
    sw2, sb2 = tanh_critical_point(q)
    z, w = np.polynomial.hermite_e.hermegauss(101)
    w = w / w.sum()
    h = np.sqrt(q) * z
    assert abs(sw2 * np.sum(w / np.cosh(h) ** 4) - 1) < 1e-12
    assert abs(sw2 * np.sum(w * np.tanh(h) ** 2) + sb2 - q) < 1e-12
