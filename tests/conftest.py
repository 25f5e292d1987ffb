"""Test session setup.

CUDA kernels run under Numba's simulator unless the environment says otherwise
(DESIGN.md section 8): ``NUMBA_ENABLE_CUDASIM`` must be set before
``numba.cuda`` is first imported, so it is set here, before any test module
loads. On a GPU machine run ``NUMBA_ENABLE_CUDASIM=0 python -m pytest`` to test
the real kernels.
"""
import os

os.environ.setdefault("NUMBA_ENABLE_CUDASIM", "1")
