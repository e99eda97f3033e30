"""batchnorm quick config: running stats converge, batch 2 hurts BN not LN, BN is scale-free."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="module")
def results(run_quick):
    return run_quick("batchnorm")


def test_running_statistics_converge(results):
    s = results["summary"]
    # From ~1 sigma after one step to within 0.1 sigma of the data's mean and variance.
    assert s["running_mean_err_step1"] > 0.5
    assert s["running_mean_err_final"] < 0.1
    assert s["running_var_err_final"] < 0.1


def test_small_batches_hurt_batch_norm_not_layer_norm(results):
    s = results["summary"]
    # Train/eval mismatch: much larger with 2 samples per batch than with 64.
    assert abs(s["bn_gap_b2"]) > 2 * abs(s["bn_gap_b64"])
    # BN falls behind an identically trained LN net by much more at batch 2 than at 64.
    assert s["bn_deficit_vs_ln_b2"] > s["bn_deficit_vs_ln_b64"] + 0.05
    # LN has one mode: the same loss in "training" and "inference" (float32 roundoff).
    assert abs(s["ln_gap_b2"]) < 1e-5


def test_layer_norm_ignores_the_batch(results):
    s = results["summary"]
    assert s["ln_max_diff"] < 1e-5
    assert s["bn_train_max_diff"] > 0.1


def test_normalization_removes_weight_scale(results):
    s = results["summary"]
    # Plain ReLU stack of 10 layers, gains 0.5 vs 2: the gradient moves by ~4^9.
    assert s["plain_first_grad_spread_over_gains"] > 1e3
    assert s["bn_first_grad_spread_over_gains"] < 1.05
    assert s["ln_first_grad_spread_over_gains"] < 1.05
    assert s["agrees"] is True
