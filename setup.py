"""Build step: ship the top-level ``experiments/`` and ``configs/`` inside the wheel.

Everything else is in ``pyproject.toml``. The sources stay where they are (the repository's
``experiments/`` and ``configs/``); building a wheel copies them to
``chainrule/_bundled/experiments`` and ``chainrule/_bundled/configs``, where the runner's
discovery finds them after a plain ``pip install .`` (an editable install uses the checkout
itself, so nothing is copied for it).
"""

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent
BUNDLED = {"experiments": "*.py", "configs": "*.yaml"}


class BuildPyWithExperiments(build_py):
    def run(self):
        super().run()
        if getattr(self, "editable_mode", False):
            return
        for folder, pattern in BUNDLED.items():
            src = ROOT / folder
            dst = Path(self.build_lib) / "chainrule" / "_bundled" / folder
            shutil.rmtree(dst, ignore_errors=True)  # no stale copy of a removed experiment
            dst.mkdir(parents=True)
            files = sorted(src.glob(pattern))
            if not files:
                raise RuntimeError(f"no {pattern} files in {src}: nothing to ship")
            for f in files:
                self.copy_file(str(f), str(dst / f.name))

    def get_outputs(self, include_bytecode=True):
        outs = super().get_outputs(include_bytecode)
        if getattr(self, "editable_mode", False):
            return outs
        for folder, pattern in BUNDLED.items():
            dst = Path(self.build_lib) / "chainrule" / "_bundled" / folder
            outs += [str(dst / f.name) for f in sorted((ROOT / folder).glob(pattern))]
        return outs


setup(cmdclass={"build_py": BuildPyWithExperiments})
