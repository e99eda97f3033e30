"""Data-parallel and parameter-sharded derivatives on 8 simulated CPU devices.

XLA's host device count is fixed when JAX starts, so the measurements run once, in a subprocess
(``tests/_multidevice_checks.py`` with ``--xla_force_host_platform_device_count=8``), against
the single-device results in float32 and float64; the tests below assert on what it printed.

Tolerances: float32 results of a different reduction order (per-device partial sums, then an
all-reduce) agree to ~1e-6 relative; 1e-5 is stated. float64: 1e-12.
"""

from __future__ import annotations

import math

import pytest

HELPER = "_multidevice_checks.py"
TOL = {"32": 1e-5, "64": 1e-12}


@pytest.fixture(scope="module")
def measured(helper_json) -> dict:
    out = helper_json(HELPER)
    assert out["devices"] == 8
    return out


@pytest.mark.parametrize("bits", ["32", "64"])
def test_data_parallel_equals_single_device(measured, bits):
    r = measured[f"dp{bits}"]
    assert r["batch_spec"] == ["data"]
    for name in ("grad", "hvp", "hvp_batched") if bits == "32" else ("grad", "hvp"):
        assert r[name] <= TOL[bits], (name, r[name])


@pytest.mark.parametrize("bits", ["32", "64"])
def test_curvature_over_sharded_dataset(measured, bits):
    r = measured[f"dp{bits}"]
    for name in ("hessian", "ggn") if bits == "32" else ("hessian",):
        # stacked batches (num_batches, batch, ...): each batch split along 'data'
        assert r[f"{name}_data_spec"] == [None, "data"]
    if bits == "32":
        assert r["ggn_matvec"] <= TOL[bits], r["ggn_matvec"]
    # the sharded operator against the dense single-device Hessian of the full-dataset loss
    assert r["hessian_dense"] <= TOL[bits]
    if bits == "64":  # equal to rounding: the algorithms below then see the same operator
        return
    assert r["trace"] <= 4 * r["trace_se"] + TOL[bits]  # Hutchinson, 8 probes


# PartitionSpecs as lists, trailing Nones dropped: w2 is P("model", None)
EXPECTED_SPECS = {"['b1']": ["model"], "['w1']": [None, "model"], "['w2']": ["model"]}


@pytest.mark.parametrize("bits", ["32", "64"])
def test_param_sharded_outputs_keep_the_parameters_sharding(measured, bits):
    r = measured[f"ps{bits}"]
    for path, spec in r["param_specs"].items():
        assert spec == EXPECTED_SPECS[path]
        assert r["hvp_specs"][path] == spec, (path, r["hvp_specs"][path])
        assert r["matvec_specs"][path] == spec, (path, r["matvec_specs"][path])
        full, shard = r["hvp_shards"][path]
        assert math.prod(shard) * 4 == math.prod(full), (path, full, shard)
    assert r["hvp"] <= TOL[bits] and r["matvec"] <= TOL[bits]
    if bits == "64":
        return
    for path in r["param_specs"]:
        # a stack of directions: leading axis replicated, the rest like the parameter
        assert r["hvp_batched_specs"][path] == [None, *r["param_specs"][path]], path
    assert r["jacobian"] <= TOL[bits]
    for path, (full, shard) in r["jacobian_shards"].items():
        assert shard != full, (path, "jacobian gathered onto one device")


def test_compiled_hvp_never_holds_the_parameters_whole(measured):
    mem = measured["ps32"]["mem"]
    # per-device bytes of the compiled (fwd-over-rev) program: outputs are one of 4 shards
    assert mem["output"] <= mem["param_bytes"] / 4 * 1.01, mem
    assert mem["argument"] <= 2 * mem["param_bytes"] / 4 * 1.01 + 8 * 1024 * 8 * 8, mem
    assert mem["temp"] < mem["param_bytes"], mem


def test_lanczos_basis_and_check_directions_are_sharded(measured):
    r = measured["ps32"]
    assert r["basis_specs"], "eigsh did not run its expand program"
    for v_in, v_out in r["basis_specs"]:  # (m + 1, n): the n parameters split over 'model'
        assert v_in == v_out == [None, "model"], (v_in, v_out)
    for path, spec in r["eigvec_specs"].items():  # (k, ...) like the parameters
        assert spec[0] is None and "model" in spec, (path, spec)
    # eigsh over a dataset split along 'data' with parameters split along 'model': the top
    # eigenvalues of the dense single-device Hessian, to eigsh's float32 tolerance
    assert r["eigsh_converged"] and r["eigsh"] <= 1e-4
    assert r["check_ok"]
    dirs = r["check_dir_specs"]  # (num_directions, ...) like each parameter
    assert {str(d) for d in dirs} == {str([None, *sp]) for sp in EXPECTED_SPECS.values()}


def test_bad_input_names_the_axis_or_the_path(measured):
    b = measured["bad"]
    assert b["indivisible"].startswith("ValueError")
    assert "batch['x']" in b["indivisible"] and "'data' (size 8)" in b["indivisible"]
    assert "batches[0]" in b["indivisible_op"] and "'data' (size 8)" in b["indivisible_op"]
    assert b["no_axis"].startswith("ValueError") and "'batch' is not an axis" in b["no_axis"]
    assert "'data', 'model'" in b["no_axis"]
    for key in ("mixed_tree_mesh", "mixed_op"):
        assert b[key].startswith("ValueError"), b[key]
        assert "params['w2']" in b[key] and "params['b1']" in b[key], b[key]
    assert b["params_vs_mesh"].startswith("ValueError"), b["params_vs_mesh"]
    assert "place both on one Mesh" in b["params_vs_mesh"]


def test_bench_rows_on_this_process_devices():
    # the suite's measurement on this process's devices (one, here): both cases, their ratio
    from chainrule.bench.multidevice import measure

    rows = measure(1, "quick", reps=1)
    assert [r["name"] for r in rows] == [
        "hvp (eager, fwd-over-rev)",
        "curvature.hessian matvec (2 batches)",
    ]
    for r in rows:
        assert r["devices"] == 1 and r["plain_ms"] > 0 and r["sharded_ms"] > 0
        assert r["ratio"] == pytest.approx(r["sharded_ms"] / r["plain_ms"])
