"""transformer_norms quick config: Post-LN's gradients peak at the output; deep Post-LN fails
to train at a learning rate where DeepNorm trains; the scanned stack matches nets."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import pytest

from chainrule import nets


@pytest.fixture(scope="module")
def results(run_quick):
    return run_quick("transformer_norms")


@pytest.mark.parametrize("wiring", ["post", "pre", "deep"])
def test_scanned_stack_matches_nets(wiring):
    from experiments.transformer_norms import Params, init_model, stack_apply

    p = Params(depths=[2], train_depth=2, steps=1, d_model=8, d_ff=16, seq_len=4)
    m = init_model(jax.random.key(0), 2, wiring, p)
    listed = {
        "layers": [jax.tree.map(lambda a, i=i: a[i], m["layers"]) for i in range(2)],
        "ln_f": m["ln_f"],
    }
    x = jax.random.normal(jax.random.key(1), (3, 4, 8), jnp.float32)
    got = stack_apply(m["layers"], m["ln_f"], x, wiring, p.n_heads)
    want = nets.transformer_apply(listed, x, wiring, p.n_heads)
    # Same operations in the same order up to fusion: float32 roundoff of O(1) activations.
    assert float(jnp.max(jnp.abs(got - want))) < 1e-5


def test_post_ln_gradient_top_heavy_relative_to_pre_ln(results):
    s = results["summary"]
    deepest = max(r["depth"] for r in results["tables"]["init_grads"])
    # Pre-LN's gradient falls toward the output; Post-LN's does not (ratio last/first block).
    assert s[f"pre_last_over_first_d{deepest}"] < 0.8
    assert s[f"post_last_over_first_d{deepest}"] > 1.5 * s[f"pre_last_over_first_d{deepest}"]


def test_deep_post_ln_fails_where_deepnorm_trains(results):
    s = results["summary"]
    chance = s["chance_loss"]
    # Post-LN without warm-up stays near chance (ln 16); DeepNorm learns the task.
    assert s["post_no_warmup_final_loss"] > 0.8 * chance
    assert s["deep_no_warmup_final_loss"] < 0.5 * chance
    assert s["agrees"] is True
