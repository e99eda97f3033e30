"""clipping quick config: SGD on an exploding RNN diverges; clipped SGD lowers the loss."""

from __future__ import annotations

import math

import pytest


@pytest.fixture(scope="module")
def results(run_quick):
    return run_quick("clipping")


def test_gradient_explodes_at_init(results):
    # rho = 1.6 over 30 steps: the init gradient is far above the clip threshold of 1.
    assert results["summary"]["grad_norm_at_init"] > 10


def test_clipping_trains_and_plain_sgd_does_not(results):
    s = results["summary"]
    assert not s["clip_diverged"]
    assert s["clip_final_loss"] < 0.7 * s["initial_loss"]
    bad = s["no_clip_final_loss"]
    assert (
        s["no_clip_diverged"]
        or bad is None
        or not math.isfinite(bad)
        or bad > 2 * s["clip_final_loss"]
    )
    assert s["agrees"] is True


def test_curves_have_one_entry_per_step(results):
    for name in ("clip", "no_clip"):
        assert len(results["curves"][name]["loss"]) == 60
