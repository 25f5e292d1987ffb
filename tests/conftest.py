"""Test session setup.

CUDA kernels run under Numba's simulator unless the environment says otherwise
(``docs/design.md``): ``NUMBA_ENABLE_CUDASIM`` must be set before
``numba.cuda`` is first imported, so it is set here, before any test module
loads. On a GPU machine run ``NUMBA_ENABLE_CUDASIM=0 python -m pytest`` to test
the real kernels (``-m gpu`` selects the tests that only mean something there).

Markers (``pyproject.toml``): ``slow`` for tests that take seconds each,
``cuda`` for tests of the CUDA backend (simulated on CPU-only machines),
``gpu`` for tests that need a real GPU.
"""
import os

import pytest

os.environ.setdefault("NUMBA_ENABLE_CUDASIM", "1")

#: Whether CUDA kernels run in Numba's simulator (tiny shapes, few examples).
SIMULATOR = os.environ.get("NUMBA_ENABLE_CUDASIM", "0") == "1"


def pytest_collection_modifyitems(config, items):
    """Tests of the CUDA backend get the ``cuda`` marker, whatever file they are in;
    ``gpu`` tests are skipped under the simulator."""
    no_gpu = pytest.mark.skip(reason="needs a real GPU (NUMBA_ENABLE_CUDASIM=0)")
    for item in items:
        callspec = getattr(item, "callspec", None)
        if callspec is not None and callspec.params.get("device") == "cuda":
            item.add_marker(pytest.mark.cuda)
        if SIMULATOR and item.get_closest_marker("gpu") is not None:
            item.add_marker(no_gpu)


def require(module, extra):
    """``module``, or skip the test saying which kryptonref extra brings it (CI installs
    every test extra, so nothing is skipped there)."""
    return pytest.importorskip(module, reason=f"needs {module} (pip install "
                                              f"'kryptonref[{extra}]')")
