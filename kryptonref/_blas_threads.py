"""One BLAS thread while a job runs: kryptonref parallelises its GEMMs itself.

The CPU kernels split every GEMM over Numba's threads, one single-threaded BLAS
call per thread (:func:`kryptonref.layers.blas.matmul`). A BLAS library with
threads of its own would nest inside them, and between Numba kernels its idle
threads spin for a while after each GEMM (OpenBLAS: ``2**28`` cycles, about
0.1 s) and take the cores from the kernel that follows. So while a job runs,
:func:`single_thread_blas` limits every BLAS library loaded in the process
(OpenBLAS, MKL, BLIS: through threadpoolctl) to one thread, and restores their
thread counts when the last job running ends. The ``single_thread_blas``
setting (:mod:`kryptonref.runtime`; ``KRYPTONREF_SINGLE_THREAD_BLAS=0``) leaves
them alone.
"""
from __future__ import annotations

import contextlib
import importlib

from ._jobs import WhileJobsRun

__all__ = ["single_thread_blas"]

_STATE: dict = {"controller": None, "limiter": None}
_JOBS = WhileJobsRun()


def _controller():
    """threadpoolctl's view of the loaded libraries, after loading SciPy's BLAS (the
    one the kernels call); made once per process."""
    if _STATE["controller"] is None:
        importlib.import_module("scipy.linalg.cython_blas")   # loads SciPy's BLAS
        from threadpoolctl import ThreadpoolController
        _STATE["controller"] = ThreadpoolController()
    return _STATE["controller"]


def _limit() -> None:
    _STATE["limiter"] = _controller().limit(limits=1, user_api="blas")


def _restore() -> None:
    limiter, _STATE["limiter"] = _STATE["limiter"], None
    limiter.restore_original_limits()


def single_thread_blas(enabled: bool = True
                       ) -> contextlib.AbstractContextManager[None]:
    """Context of one job: BLAS libraries run on one thread while it runs.

    Jobs may nest or overlap (from several threads); the original thread
    counts come back when the last one running ends. ``enabled=False`` (the
    setting off) changes nothing for this job.
    """
    if not enabled:
        return contextlib.nullcontext()
    return _JOBS.hold(_limit, _restore)
