"""kryptonref shortens OpenBLAS's busy-wait only when it can: imported before NumPy,
and never over a value the user set. Each case runs in a fresh interpreter."""
import pytest

from .processes import run_python

REPORT = ("import os, kryptonref; "
          "print(os.environ.get('OPENBLAS_THREAD_TIMEOUT'), kryptonref._openblas.APPLIED)")


def run(code, **env):
    return run_python(code, env=env, drop=("OPENBLAS_THREAD_TIMEOUT",)).split()


@pytest.mark.parametrize("code, env, expected", [
    (REPORT, {}, ["18", "True"]),
    ("import numpy; " + REPORT, {}, ["None", "False"]),      # too late: OpenBLAS is loaded
    (REPORT, {"OPENBLAS_THREAD_TIMEOUT": "7"}, ["7", "False"]),
])
def test_thread_timeout(code, env, expected):
    assert run(code, **env) == expected
