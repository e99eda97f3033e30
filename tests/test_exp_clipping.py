"""clipping quick config: SGD on an exploding RNN diverges; clipped SGD lowers the loss."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

pytest.importorskip("pydantic")
from chainrule.runner import run_config  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    run_dir = run_config(
        ROOT / "configs" / "clipping_quick.yaml",
        out=tmp_path_factory.mktemp("runs"),
        show_progress=False,
    )
    assert (run_dir / "report.md").is_file()
    return json.loads((run_dir / "results.json").read_text())["points"][0]["results"]


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
