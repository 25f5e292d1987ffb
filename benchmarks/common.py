"""Shared helpers of the benchmark scripts: machine information and timing."""
from __future__ import annotations

import os
import platform
import time

import numpy as np


def machine_info():
    """Print the machine, library versions and BLAS/thread configuration."""
    import numba
    print(f"python {platform.python_version()}  {platform.machine()}  "
          f"nproc={os.cpu_count()}  sched_affinity={len(os.sched_getaffinity(0))}")
    print(f"numpy {np.__version__}  numba {numba.__version__}  "
          f"numba threads={numba.config.NUMBA_NUM_THREADS}  "
          f"numba threading layer (configured)={numba.config.THREADING_LAYER}")
    for var in ("OPENBLAS_CORETYPE", "OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS",
                "MKL_NUM_THREADS", "NUMBA_NUM_THREADS", "NUMBA_THREADING_LAYER"):
        if var in os.environ:
            print(f"  {var}={os.environ[var]}")
    from threadpoolctl import threadpool_info   # a dependency of kryptonref
    for pool in threadpool_info():
        print("  threadpool: " + ", ".join(
            f"{k}={pool.get(k)}" for k in ("user_api", "internal_api", "version",
                                             "architecture", "threading_layer",
                                             "num_threads") if k in pool))
    _print_kryptonref_location()
    try:
        load = os.getloadavg()
        print(f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} "
              "(timings are best-of-N; other work on the cores makes them noisy)")
    except OSError:
        pass


def _print_kryptonref_location():
    """Where kryptonref was imported from, with a warning when it is not this checkout:
    a script's folder, not the working directory, is on ``sys.path``, so an installed
    copy in site-packages wins over the checkout unless it is installed editable."""
    import kryptonref
    location = os.path.dirname(os.path.abspath(kryptonref.__file__))
    checkout = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                            "kryptonref")
    print(f"kryptonref {kryptonref.__version__} from {location}")
    if location != checkout:
        print(f"  WARNING: not this checkout's {checkout}; `pip install -e .` (or "
              f"PYTHONPATH) measures the code beside this benchmark")


def best_of(fn, repeat):
    """Best wall time of ``repeat`` calls, and the last result."""
    return best_of_interleaved([fn], repeat)[0]


def best_of_interleaved(fns, repeat):
    """``[(best wall time, last result), ...]`` of each function, called in ``repeat``
    rounds of one call each, so that a slow spell of a shared machine falls on all
    of them rather than on one."""
    times = [[] for _ in fns]
    results = [None] * len(fns)
    for _ in range(repeat):
        for i, fn in enumerate(fns):
            t0 = time.perf_counter()
            results[i] = fn()
            times[i].append(time.perf_counter() - t0)
    return [(min(t), r) for t, r in zip(times, results)]
