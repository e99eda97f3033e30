"""Test configuration shared by every test module.

x64 is enabled for the whole session so each derivative test can run in float32 and float64
(explicit dtypes everywhere; library code must respect the input dtype). Hypothesis uses a
deterministic profile without deadlines (JAX compiles on first call).
"""

import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402
import pytest  # noqa: E402
from hypothesis import HealthCheck, settings  # noqa: E402

jax.config.update("jax_enable_x64", True)

settings.register_profile(
    "chainrule",
    derandomize=True,
    deadline=None,
    max_examples=25,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.load_profile("chainrule")

FLOAT_DTYPES = ("float32", "float64")


@pytest.fixture(params=FLOAT_DTYPES)
def dtype(request):
    """Each derivative test runs in float32 and float64."""
    import jax.numpy as jnp

    return jnp.dtype(request.param)


@pytest.fixture(scope="session")
def once(tmp_path_factory):
    """``once(name, make)``: ``make(folder)``'s JSON value, computed once per test session.

    Under pytest-xdist a module-scoped fixture runs once per worker that gets one of its tests
    (twice with ``-n 2``: the quick experiment runs and the 8-device subprocesses were a third of
    the suite's time). The value is kept in the session's shared temporary folder, behind a file
    lock: the first worker computes it, the other waits for it. ``folder`` is a fresh folder in
    that shared place (run directories made there stay readable by every worker).
    """
    import json

    from filelock import FileLock

    root = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        root = root.parent  # the session's folder, shared by its workers

    def get(name: str, make):
        base = root / f"once-{name}"
        value = base / "value.json"
        with FileLock(f"{base}.lock"):
            if not value.is_file():
                (base / "work").mkdir(parents=True, exist_ok=True)
                value.write_text(json.dumps(make(base / "work")))
        return json.loads(value.read_text())

    return get


@pytest.fixture(scope="module")
def run_quick(once):
    """``run_quick("name")``: run ``configs/<name>_quick.yaml`` through the runner into a fresh
    directory (once per session); returns the first sweep point's results (checks that a report
    was written)."""
    pytest.importorskip("pydantic")
    import json
    from pathlib import Path

    from chainrule.runner import run_config

    configs = Path(__file__).resolve().parents[1] / "configs"

    def run(name: str) -> dict:
        def make(folder):
            run_dir = run_config(configs / f"{name}_quick.yaml", out=folder, show_progress=False)
            assert (run_dir / "report.md").is_file()
            return json.loads((run_dir / "results.json").read_text())["points"][0]["results"]

        return once(f"quick-{name}", make)

    return run


@pytest.fixture(scope="session")
def helper_json(once):
    """``helper_json(script, drop_env=())``: the JSON that ``tests/<script>`` prints, run once
    per session in a fresh Python on the CPU (``XLA_FLAGS`` and ``drop_env`` removed from its
    environment: the 8-device helpers set their own device count before JAX starts)."""
    import json
    import subprocess
    import sys
    from pathlib import Path

    def run(script: str, drop_env: tuple[str, ...] = ()) -> dict:
        def make(_):
            env = dict(os.environ, JAX_PLATFORMS="cpu")
            for k in ("XLA_FLAGS", *drop_env):
                env.pop(k, None)
            proc = subprocess.run(
                [sys.executable, str(Path(__file__).with_name(script))],
                capture_output=True,
                text=True,
                env=env,
                timeout=600,
            )
            assert proc.returncode == 0, proc.stderr[-4000:]
            return json.loads(proc.stdout)

        return once(Path(script).stem, make)

    return run
