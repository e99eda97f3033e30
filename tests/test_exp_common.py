"""experiments/_common.py: the verdict vocabulary, two-sided criteria, stored floats, the step."""

from __future__ import annotations

import doctest
import importlib.util
import math
import sys
from pathlib import Path

import numpy as np
import pytest

_PATH = Path(__file__).resolve().parents[1] / "experiments" / "_common.py"


@pytest.fixture(scope="module")
def common():
    spec = importlib.util.spec_from_file_location("_exp_common_under_test", _PATH)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_doctests(common):
    res = doctest.testmod(common, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert res.attempted > 0 and res.failed == 0


def test_overall_vocabulary(common):
    assert common.overall([True, None, True]) == common.REPRODUCED
    assert common.overall([False, None]) == common.NOT_REPRODUCED
    assert common.overall([True, False, None]) == common.PARTIAL
    assert common.overall([]) == common.NOT_TESTED


def test_within_is_two_sided(common):
    # An explosion is not "no vanishing": a finite upper bound rejects inf.
    assert not common.within(math.inf, 0.1, 10.0)
    assert not common.within(-math.inf, -10.0, 10.0)
    assert not common.within(1e41, 0.1, 10.0)
    assert common.within(1.0, 0.1, 10.0)
    assert not common.within_factor(4.0, 1.0, 2.0) and not common.within_factor(0.25, 1.0, 2.0)
    with pytest.raises(ValueError, match="factor"):
        common.within_factor(1.0, 1.0, 0.5)


def test_check_rows_and_report(common):
    checks = [
        common.Check("a", "x scales like 1/sqrt N", "x0.50", "x0.79", False, "0.35 <= r <= 0.7"),
        common.Check("b", "y trains", "loss < 1", "0.2", True),
        common.Check("c", "z", "-", "-", None),
    ]
    rows = [c.row() for c in checks]
    assert [r["verdict"] for r in rows] == ["not reproduced", "reproduced", "not tested"]
    text = common.claims_section("P.", "S.", rows)
    assert "| x scales like 1/sqrt N | x0.50 | x0.79 | **not reproduced** |" in text
    assert "**Verdict: partial** (1 of 2 checks reproduced)." in text


def test_floats_decodes_old_and_new(common):
    got = common.floats([1, None, math.inf, -math.inf, math.nan])
    assert got.dtype == np.float64 and got[0] == 1 and np.isnan(got[1]) and np.isnan(got[4])
    assert got[2] == math.inf and got[3] == -math.inf
    assert common.floats([[1, None], [2, 3]]).shape == (2, 2)
    assert common.tail_mean([1.0, 2.0, 3.0, 4.0], 0.5) == 3.5
    assert math.isnan(common.tail_mean([1.0, math.nan], 0.5))


def test_train_step_matches_optax(common):
    import jax
    import jax.numpy as jnp
    import optax

    def loss(w, x):
        return jnp.sum(jnp.tanh(x @ w) ** 2)

    w = jax.random.normal(jax.random.PRNGKey(0), (3, 2))
    x = jax.random.normal(jax.random.PRNGKey(1), (4, 3))
    opt = optax.chain(optax.clip_by_global_norm(0.1), optax.sgd(0.5))
    w1, _, l0, gn = common.make_train_step(loss, opt)(w, opt.init(w), x)
    g = jax.grad(loss)(w, x)
    up, _ = opt.update(g, opt.init(w), w)
    np.testing.assert_allclose(w1, optax.apply_updates(w, up), rtol=1e-6)
    np.testing.assert_allclose(gn, jnp.linalg.norm(g), rtol=1e-6)
    np.testing.assert_allclose(l0, loss(w, x), rtol=1e-6)
