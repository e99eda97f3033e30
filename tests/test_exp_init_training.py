"""init_training quick config: He trains a deep ReLU MLP, Xavier stalls, N(0, 1) diverges."""

from __future__ import annotations

import math

import pytest


@pytest.fixture(scope="module")
def results(run_quick):
    return run_quick("init_training")


def test_he_converges_xavier_stalls(results):
    by = {r["init"]: r for r in results["tables"]["training"]}
    chance = math.log(4)
    he, xa = by["he"]["final_loss"], by["xavier"]["final_loss"]
    assert he < 0.5 * xa
    assert xa > 0.9 * chance  # Xavier has not left the chance plateau
    assert results["summary"]["agrees"] is True


def test_gradients_at_init(results):
    by = {r["init"]: r for r in results["tables"]["training"]}
    # 15 ReLU halvings of the variance between the layers: ~2^7.5 ~ 180x smaller with Xavier.
    he = by["he"]["grad_norm_first_layer_at_init"]
    xa = by["xavier"]["grad_norm_first_layer_at_init"]
    assert he > 30 * xa
    # N(0, 1) weights explode (width 32: variance x16 per layer): the run diverges or the
    # initial loss is astronomically large.
    naive = by["naive_normal"]
    assert naive["diverged"] or naive["initial_loss"] > 1e6


def test_steps_must_be_a_multiple_of_eval_every():
    from experiments.init_training import Params

    with pytest.raises(ValueError, match=r"steps \(15\) must be a multiple of eval_every \(10\)"):
        Params(steps=15, eval_every=10)
