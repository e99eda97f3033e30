"""ad_modes quick config: forward wins tall Jacobians, reverse wide ones; residuals grow."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="module")
def results(run_quick):
    return run_quick("ad_modes")


def test_forward_for_tall_reverse_for_wide(results):
    s = results["summary"]
    # 4 x 1024 and 1024 x 4: 4 passes against 1024 passes, vmapped into matmuls, measured at
    # 5-10x on 2 busy cores (4.9x once, under the parallel test run); a 3x margin still tells
    # the modes apart, and swapping them would read below 1.
    assert s["tall_rev_over_fwd"] > 3
    assert s["wide_fwd_over_rev"] > 3
    assert (s["tall_auto_mode"], s["wide_auto_mode"]) == ("fwd", "rev")
    # auto runs the faster mode: far below the slower mode's time.
    for r in results["tables"]["jacobian"]:
        slow = max(r["fwd_ms"], r["rev_ms"])
        assert r["auto_ms"] < slow / 3


def test_chunking_bounds_working_memory(results):
    if not results["summary"]["memory_analysis_available"]:
        pytest.skip("no XLA memory analysis on this backend")
    for r in results["tables"]["jacobian"]:
        # The slow mode pushes 1024 basis vectors at once; chunks of 8 need far less.
        slow = "rev" if r["N"] < r["M"] else "fwd"
        assert r[f"{slow}_chunk8_temp_bytes"] < r[f"{slow}_temp_bytes"] / 10


def test_hvp_modes_agree_and_cost_a_few_gradients(results):
    s = results["summary"]
    assert s["hvp_max_rel_diff"] < 1e-4
    for mode in ("fwd-over-rev", "rev-over-rev", "rev-over-fwd"):
        assert s[f"hvp_{mode}_over_grad"] < 10


def test_residuals_grow_with_depth(results):
    s = results["summary"]
    assert s["residual_bytes_monotone_in_depth"] is True
    # At least one layer output (batch x width float32) stored per extra layer; less with
    # jax.checkpoint.
    assert s["activation_bytes_per_layer"] >= s["layer_output_bytes"]
    assert s["activation_bytes_per_layer_checkpointed"] < s["activation_bytes_per_layer"]


def test_chain_section_prices_and_measures_every_shape(results):
    # issue 20: measure_chain checked every contender's Jacobian against auto's before timing
    rows = results["tables"]["chain"]
    shapes = ["tall", "wide", "bottleneck", "hourglass", "wide middle"]
    contenders = ["chain fwd", "chain rev", "auto", "chain optimal"]
    assert [(r["shape"], r["contender"]) for r in rows] == [
        (s, c) for s in shapes for c in contenders
    ]
    by = {(r["shape"], r["contender"]): r for r in rows}
    for s in shapes:
        # the optimal plan is predicted no dearer than any pure mode (it is one of the DP's
        # candidates), and the pure rows price their own plans
        opt = by[s, "chain optimal"]["predicted_flops"]
        assert all(opt <= by[s, c]["predicted_flops"] * (1 + 1e-12) for c in contenders)
        assert by[s, "chain fwd"]["plan"].startswith("fwd[0:")
        assert all(r["median_ms"] > 0 for r in rows)
    assert by["tall", "chain optimal"]["plan"] == "fwd[0:3]"
    assert by["wide", "chain optimal"]["plan"] == "rev[0:3]"
    assert results["summary"]["chain_bottleneck_plan"] == "fwd[2:4] @ rev[0:2]"
    assert -1 <= results["summary"]["chain_loglog_corr_predicted_measured"] <= 1
