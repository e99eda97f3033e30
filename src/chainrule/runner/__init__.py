"""The experiment runner: YAML configs -> validated specs -> run directories with a report.

``import chainrule`` does not import this package; importing it loads PyYAML and (on use)
pydantic, matplotlib and rich. See ``docs/experiments.md`` for the config format and the
experiment module contract.

Example:
    >>> from chainrule.runner import RunContext
    >>> ctx = RunContext.create(seed=0, out_dir=".")
    >>> ctx.seed
    0
"""

from chainrule.runner.config import MultiSpec as MultiSpec
from chainrule.runner.config import RunSpec as RunSpec
from chainrule.runner.config import load_yaml as load_yaml
from chainrule.runner.context import RunContext as RunContext
from chainrule.runner.core import load_spec as load_spec
from chainrule.runner.core import plan_text as plan_text
from chainrule.runner.core import rebuild_report as rebuild_report
from chainrule.runner.core import run_config as run_config
from chainrule.runner.discovery import ENV_VAR as ENV_VAR
from chainrule.runner.discovery import experiment_dirs as experiment_dirs
from chainrule.runner.discovery import list_experiments as list_experiments
from chainrule.runner.discovery import load_experiment as load_experiment
from chainrule.runner.errors import ConfigError as ConfigError
from chainrule.runner.errors import RunnerError as RunnerError

__all__ = [
    "ENV_VAR",
    "ConfigError",
    "MultiSpec",
    "RunContext",
    "RunSpec",
    "RunnerError",
    "experiment_dirs",
    "list_experiments",
    "load_experiment",
    "load_spec",
    "load_yaml",
    "plan_text",
    "rebuild_report",
    "run_config",
]
