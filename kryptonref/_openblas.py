"""Shorten OpenBLAS's busy-wait after each call, when kryptonref is imported before NumPy.

After a GEMM, OpenBLAS's worker threads spin for ``2**OPENBLAS_THREAD_TIMEOUT``
cycles (``2**28`` by default, about 0.1 s) before they sleep. With as many
threads as cores, that spinning slows the Numba kernels that follow each GEMM
(window gathers, Winograd transforms, pooling) about twofold: a Winograd layer's
transforms took 18-30 ms instead of 9-12 ms, and ResNet18 occlusion at stride 8
took 9.7-10.4 s instead of 7.6-8.6 s on this project's 2-core machines.

OpenBLAS reads the variable once, when NumPy loads it, so it can only be set
here when kryptonref is imported before NumPy (the ``kryptonref`` command is);
a value the user set is never overridden. Otherwise, set
``OPENBLAS_THREAD_TIMEOUT`` yourself before importing NumPy.
"""
import os
import sys

__all__ = ["THREAD_TIMEOUT", "APPLIED"]

#: ``2**18`` cycles (about 0.1 ms): back-to-back GEMMs still find the threads awake.
THREAD_TIMEOUT = "18"
#: Whether this import set the variable.
APPLIED = "numpy" not in sys.modules and "OPENBLAS_THREAD_TIMEOUT" not in os.environ
if APPLIED:
    os.environ["OPENBLAS_THREAD_TIMEOUT"] = THREAD_TIMEOUT
