"""orthogonal_rnn quick config: orthogonal/identity BPTT Jacobians are isometric (float64),
Gaussian ones spread;
an orthogonal tanh RNN learns the adding problem at T = 40 where a Gaussian g = 2 one does not;
deep linear nets learn in a depth-independent time from orthogonal init, not from Gaussian."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="module")
def results(run_quick):
    return run_quick("orthogonal_rnn")


def _at(results, act, t):
    return {
        r["init"]: r
        for r in results["tables"]["jacobian"]
        if r["activation"] == act and r["T"] == t
    }


def test_linear_orthogonal_is_isometry_gaussian_spreads(results):
    at = _at(results, "linear", 50)
    for init in ("orthogonal", "identity"):
        # float64 rounding over 50 products: |s - 1| ~ 50 * eps64, far inside 1e-9.
        row = at[init]
        assert 1 - 1e-9 < row["s_min_resolved"] <= row["s_max"] < 1 + 1e-9, init
        assert row["frac_below_roundoff"] == 0
    g = at["gaussian"]
    assert g["s_median"] is None or g["s_max"] > 100 * g["s_median"]
    claims = {c["name"]: c["verdict"] for c in results["tables"]["claims"]}
    assert claims["linear_orthogonal_isometry"] == "reproduced"
    assert claims["linear_gaussian_spreads"] == "reproduced"


def test_spectra_hide_roundoff_and_keep_the_rest(results):
    import numpy as np
    from experiments.orthogonal_rnn import EPS64

    for c in results["curves"]:
        smax = np.array(c["s_max"], float)
        for key in ("s_median", "s_min_resolved"):
            v = np.array([np.nan if x is None else x for x in c[key]], float)
            ok = ~np.isnan(v)
            # every value shown is above round-off (log-means of 1 network: exact)
            assert np.all(v[ok] >= smax[ok] * EPS64 * 0.999), (c["init"], c["activation"], key)


def test_tanh_orthogonal_decays_far_slower_than_gaussian(results):
    at = _at(results, "tanh", 50)
    o, g = at["orthogonal"], at["gaussian"]
    assert o["s_median"] is not None and o["s_max"] < 1
    assert g["s_median"] is None or o["s_median"] > 100 * g["s_median"]
    claims = {c["name"]: c["verdict"] for c in results["tables"]["claims"]}
    assert claims["tanh_orthogonal_decays_slower"] == "reproduced"


def test_deep_linear_learning_time_against_depth(results):
    rows = {(r["init"], r["depth"]): r for r in results["tables"]["deep_linear"]}
    # Measured with the quick config (seeds 0, 1): orthogonal 7-10 steps at D = 2, 18-19 at
    # D = 30; Gaussian 5-9 at D = 2 and not learned in 300 steps at D = 30.
    assert rows["orthogonal", 2]["learned"] == rows["orthogonal", 30]["learned"] == 2
    assert rows["orthogonal", 30]["learning_time_median"] < 4 * max(
        rows["orthogonal", 2]["learning_time_median"], 5
    )
    assert rows["gaussian", 2]["learned"] == 2
    assert rows["gaussian", 30]["learning_time_median"] is None or (
        rows["gaussian", 30]["learning_time_median"]
        > 10 * rows["gaussian", 2]["learning_time_median"]
    )
    claims = {c["name"]: c["verdict"] for c in results["tables"]["claims"]}
    assert claims["deep_linear_orthogonal_depth_independent"] == "reproduced"
    assert claims["deep_linear_gaussian_slows_with_depth"] == "reproduced"


def _claims(tables):
    from experiments.orthogonal_rnn import Params, claim_checks

    return {c.name: c.verdict for c in claim_checks(tables, Params())}


def _jac(init, act, smax, smed, smin):
    return {
        "activation": act,
        "init": init,
        "T": 100,
        "s_max": smax,
        "s_median": smed,
        "s_min_resolved": smin,
    }


def _dl(init, depth, median):
    return {
        "init": init,
        "depth": depth,
        "learning_time_median": median,
        "learned": 3 if median else 0,
        "runs": 3,
    }


def test_claim_checks_on_synthetic_tables():
    good = {
        "jacobian": [
            _jac("orthogonal", "linear", 1 + 1e-13, 1.0, 1 - 1e-13),
            _jac("gaussian", "linear", 1e4, 1e-3, 1e-9),
            _jac("orthogonal", "tanh", 0.1, 0.03, 1e-3),
            _jac("gaussian", "tanh", 2.0, None, 1e-15),  # median hidden: below 2 * eps
        ],
        "deep_linear": [
            _dl("orthogonal", 2, 10),
            _dl("orthogonal", 100, 30),
            _dl("gaussian", 2, 8),
            _dl("gaussian", 100, None),
        ],
    }
    assert set(_claims(good).values()) == {"reproduced"}

    def bad(path, row):
        t = {k: list(v) for k, v in good.items()}
        t[path] = [
            row
            if (r["init"], r.get("activation", r.get("depth")))
            == (row["init"], row.get("activation", row.get("depth")))
            else r
            for r in t[path]
        ]
        return _claims(t)

    # two-sided isometry: 1e-6 off either way is not an isometry in float64
    for s in (1 + 1e-6, 1 - 1e-6):
        r = bad("jacobian", _jac("orthogonal", "linear", max(s, 1.0), 1.0, min(s, 1.0)))
        assert r["linear_orthogonal_isometry"] == "not reproduced", s
    # tanh orthogonal that explodes (s_max > 1) or decays as fast as the Gaussian
    assert (
        bad("jacobian", _jac("orthogonal", "tanh", 3.0, 0.5, 1e-3))["tanh_orthogonal_decays_slower"]
        == "not reproduced"
    )
    assert (
        bad("jacobian", _jac("orthogonal", "tanh", 0.1, 1e-15, 1e-16))[
            "tanh_orthogonal_decays_slower"
        ]
        == "not reproduced"
    )
    # orthogonal learning time growing 10x with depth is not depth-independent; nor is 10x faster
    for m in (100, 1):
        assert (
            bad("deep_linear", _dl("orthogonal", 100, m))[
                "deep_linear_orthogonal_depth_independent"
            ]
            == "not reproduced"
        )
    assert (
        bad("deep_linear", _dl("gaussian", 100, 20))["deep_linear_gaussian_slows_with_depth"]
        == "not reproduced"
    )


def _task_row(results, init):
    (row,) = [r for r in results["tables"]["task"] if r["init"] == init]
    return row


def test_adding_problem_orthogonal_learns_gaussian_g2_does_not(results):
    from experiments.orthogonal_rnn import ADDING_BASELINE

    orth, gauss = _task_row(results, "orthogonal"), _task_row(results, "gaussian")
    assert gauss["gain"] == 2.0 and orth["runs"] == gauss["runs"] == 3
    # Measured with this config at seeds 0..3 (3 runs each, 2-core CPU): the best orthogonal
    # run ends at 0.15..0.25 x baseline (8 of 12 runs below 0.5 x; the others sit on the
    # trivial plateau a while longer), every Gaussian g = 2 run at >= 0.89 x baseline (0 of 12
    # leave the plateau at T = 40). The bounds leave a margin on both sides. Whether the verdict
    # is "in every run" or "in median" depends on the slow orthogonal run, so either is allowed.
    assert orth["final_mse_min"] < 0.5 * ADDING_BASELINE
    assert orth["learned"] >= 1
    assert gauss["final_mse_min"] > 0.8 * ADDING_BASELINE
    assert gauss["learned"] == 0 and gauss["diverged"] == 0
    verdict = results["summary"]["task.tanh.orthogonal_vs_gaussian_g2"]
    assert verdict.startswith("orthogonal better in "), verdict
    agrees = results["summary"]["task.tanh.orthogonal_vs_gaussian_g2.agrees"]
    assert agrees in ("yes", "in direction")


def test_adding_batch_targets_sum_one_marked_value_per_half():
    import jax
    import numpy as np
    from experiments.orthogonal_rnn import adding_batch

    xs, y = adding_batch(jax.random.key(0), 10, 64)
    xs, y = np.asarray(xs), np.asarray(y)
    assert xs.shape == (10, 64, 2) and y.shape == (64,)
    marks = xs[..., 1]
    assert np.all(marks[:5].sum(0) == 1) and np.all(marks[5:].sum(0) == 1)
    np.testing.assert_allclose(y, (xs[..., 0] * marks).sum(0), rtol=1e-6)
    assert np.all((xs[..., 0] >= 0) & (xs[..., 0] < 1))


def test_bad_gaussian_gain_is_rejected():
    from experiments.orthogonal_rnn import Params

    with pytest.raises(ValueError, match=r"task_gaussian_gains \[0.0\] must be finite and > 0"):
        Params(task_gaussian_gains=[1.0, 0.0])


def test_horizon_beyond_max_t_is_rejected():
    from experiments.orthogonal_rnn import Params

    with pytest.raises(ValueError, match=r"horizons \[80\] are outside 1..max_t = 1..50"):
        Params(max_t=50, horizons=[10, 80])
