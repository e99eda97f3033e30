"""clipping: the verdict logic at every budget on synthetic curves, and the quick config."""

from __future__ import annotations

import math

import pytest

from chainrule.runner import load_experiment

cl = load_experiment("clipping")


@pytest.fixture(scope="module")
def results(run_quick):
    return run_quick("clipping")


def _evals(values, every=100):
    return [{"step": every * (i + 1), "eval_loss": v} for i, v in enumerate(values)]


def test_budgets_are_every_checkpoint_from_half_on():
    assert cl.budgets(cl.Params(steps=1000, eval_every=250)) == [500, 750, 1000]
    assert cl.budgets(cl.Params(steps=1000, eval_every=300)) == [600, 900, 1000]


def test_verdict_must_hold_at_every_budget():
    p = cl.Params(steps=400, eval_every=100, learn_fraction=0.8)
    base = 0.16
    ok = {"no_clip": _evals([math.nan] * 4), "clip": _evals([0.2, 0.12, 0.1, 0.09])}
    assert [c.passed for c in cl.evaluate(ok, base, 0.3, p)] == [True, True]
    # Learning only the bias (0.1404 against the mean predictor's 0.1412) is not learning.
    bias_only = {**ok, "clip": _evals([0.2, 0.12, 0.1404, 0.1404])}
    assert [c.passed for c in cl.evaluate(bias_only, base, 0.3, p)] == [True, False]
    # A verdict that holds at 400 steps but not at 300 does not hold.
    flips = {**ok, "clip": _evals([0.2, 0.12, 0.15, 0.09])}
    assert cl.evaluate(flips, base, 0.3, p)[1].passed is False
    # Plain SGD that learns too (below the mean predictor at any budget): not reproduced.
    noclip_learns = {**ok, "no_clip": _evals([math.inf, math.inf, 0.12, math.inf])}
    assert cl.evaluate(noclip_learns, base, 0.3, p)[0].passed is False


def test_quick_run(results):
    s = results["summary"]
    # rho = 1.2 over 12 steps: the init gradient is above the clip threshold of 1.
    assert s["grad_norm_at_init"] > 1
    assert [c["name"] for c in results["claims"]] == ["no_clip_fails", "clip_learns"]
    assert len(results["curves"]["clip"]["loss"]) == 400
    assert [r["step"] for r in results["tables"]["held_out_loss"]] == [100, 200, 300, 400]
    assert s["verdict"] in ("reproduced", "partial", "not reproduced")
