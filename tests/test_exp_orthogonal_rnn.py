"""orthogonal_rnn quick config: orthogonal/identity BPTT Jacobians are isometric, Gaussian no;
an orthogonal tanh RNN learns the adding problem at T = 40 where a Gaussian g = 2 one does not."""

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
