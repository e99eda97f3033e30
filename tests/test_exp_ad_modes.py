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
