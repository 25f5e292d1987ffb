"""The package ships type information (py.typed) and mypy finds no error in it."""
import os
import subprocess
import sys

from .conftest import require

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_the_package_is_marked_typed():
    assert os.path.isfile(os.path.join(ROOT, "kryptonref", "py.typed"))


def test_mypy_passes_over_the_package():
    require("mypy", "test")
    run = subprocess.run([sys.executable, "-m", "mypy", "--no-incremental",
                          "--config-file", os.path.join(ROOT, "pyproject.toml")],
                         cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, run.stdout + run.stderr
