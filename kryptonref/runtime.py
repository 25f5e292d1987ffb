"""Process-wide performance settings, applied when kryptonref's entry points run.

``import kryptonref`` changes nothing in the host process: no environment
variable is written, Numba's threading layer is not switched, the allocator
is not tuned. kryptonref's entry points (``Model.forward``,
``incremental_inference``, ``occlusion`` and what calls them) apply the
settings below when they run, through :func:`entry_point`; each is read at
call time from :func:`configure`'s overrides, else from the environment, and
each has its opt-out.

``threading_layer`` (``KRYPTONREF_THREADING_LAYER``; default ``"workqueue"``)
    Numba's OpenMP threads spin while they wait and fight OpenBLAS's threads for
    the cores (measured: ``docs/design.md``, Performance facts);
    the ``workqueue`` layer's idle threads sleep. The first entry point to run
    selects it, unless the user chose a layer (``NUMBA_THREADING_LAYER``, or
    ``numba.config.THREADING_LAYER`` set to anything but ``"default"``) or
    Numba's threads are already running. ``"numba"`` leaves Numba's own choice.
    The ``workqueue`` layer aborts the process when parallel kernels are
    launched from two threads at once, so while it is in use the entry points
    take a process-wide lock: calls from several threads queue up.
``malloc_tuning`` (``KRYPTONREF_MALLOC_TUNING``; default on, ``0`` turns it off)
    While a job runs, glibc's malloc keeps freed memory instead of handing it
    back and faulting it in again every batch (:mod:`kryptonref._memory`).
``single_thread_blas`` (``KRYPTONREF_SINGLE_THREAD_BLAS``; default on, ``0`` turns it off)
    While a job runs, the process's BLAS libraries run on one thread: the CPU
    kernels split their GEMMs over Numba's threads themselves, one
    single-threaded BLAS call each (:mod:`kryptonref._blas_threads`). Off, BLAS
    keeps its threads, which then nest inside Numba's (slower on few cores).
``winograd`` (``KRYPTONREF_WINOGRAD``; default on, ``0`` turns it off)
    Dense 3x3 stride-1 convolutions with enough channels run as Winograd
    F(2x2, 3x3) on the CPU (:mod:`kryptonref.layers.winograd`); read when a
    model's parameters are prepared.
``cupy_tf32`` (``CUPY_TF32``)
    When the CUDA backend first loads CuPy it sets ``CUPY_TF32=0`` unless the
    user set it, so cuBLAS GEMMs stay float32-exact.
``OPENBLAS_THREAD_TIMEOUT`` (the ``kryptonref`` command only)
    After a GEMM, OpenBLAS's threads spin for ``2**28`` cycles (about 0.1 s)
    and slow the Numba kernels that follow about twofold on two cores. Within
    a job ``single_thread_blas`` leaves OpenBLAS no threads to spin; the
    timeout still matters where it is off, and for BLAS work between jobs.
    OpenBLAS reads the variable once, when NumPy loads it, so it cannot be set
    at call time: the ``kryptonref`` command sets it to 18 before NumPy loads
    (:func:`prepare_command_process`), unless the user set it. A program
    importing kryptonref sets it itself, before importing NumPy
    (``OPENBLAS_THREAD_TIMEOUT=18``); the README gives the measured cost.
"""
from __future__ import annotations

import contextlib
import functools
import os
import threading
from collections.abc import Callable, Iterator, MutableMapping
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from typing import ParamSpec, TypeVar

    _P = ParamSpec("_P")
    _R = TypeVar("_R")

__all__ = ["Settings", "settings", "configure", "entry_point", "job",
           "prepare_command_process", "OPENBLAS_THREAD_TIMEOUT", "THREADING_LAYERS"]

#: Threading layers ``threading_layer`` accepts; ``"numba"`` leaves Numba's choice alone.
THREADING_LAYERS = ("workqueue", "omp", "tbb", "numba")
#: The OpenBLAS thread timeout the ``kryptonref`` command sets (``2**18`` cycles,
#: about 0.1 ms: back-to-back GEMMs still find the threads awake).
OPENBLAS_THREAD_TIMEOUT = "18"


@dataclass(frozen=True)
class Settings:
    """The settings in effect (see the module docstring)."""

    threading_layer: str = "workqueue"
    malloc_tuning: bool = True
    single_thread_blas: bool = True
    winograd: bool = True


_OVERRIDES: dict[str, Any] = {}   # str for threading_layer, bool for the others
_STATE = {"layer_applied": False}
_LOCK: contextlib.AbstractContextManager[object] = threading.RLock()


def _flag(name: str, default: bool) -> bool:
    value = os.environ.get(name)
    return default if value is None else value.strip() != "0"


def settings() -> Settings:
    """The :class:`Settings` in effect now: :func:`configure`'s overrides, else the
    environment, else the defaults."""
    from_env = Settings(
        threading_layer=os.environ.get("KRYPTONREF_THREADING_LAYER", "workqueue").strip()
        or "workqueue",
        malloc_tuning=_flag("KRYPTONREF_MALLOC_TUNING", True),
        single_thread_blas=_flag("KRYPTONREF_SINGLE_THREAD_BLAS", True),
        winograd=_flag("KRYPTONREF_WINOGRAD", True))
    return replace(from_env, **_OVERRIDES)


def configure(**overrides: str | bool | None) -> None:
    """Override settings for this process (``None`` removes an override).

    Examples
    --------
    >>> import kryptonref
    >>> kryptonref.runtime.configure(malloc_tuning=False)   # leave glibc's malloc alone
    >>> kryptonref.runtime.configure(malloc_tuning=None)    # back to the environment
    """
    known = set(Settings.__dataclass_fields__)
    for key, value in overrides.items():
        if key not in known:
            raise TypeError(f"configure: unknown setting {key!r}; settings are {sorted(known)}")
        if key == "threading_layer" and value is not None and value not in THREADING_LAYERS:
            raise ValueError(f"configure: threading_layer must be one of {THREADING_LAYERS}, "
                             f"got {value!r}")
        if value is None:
            _OVERRIDES.pop(key, None)
        else:
            _OVERRIDES[key] = value if key == "threading_layer" else bool(value)


def _numba_threads_running() -> bool:
    import numba
    try:
        numba.threading_layer()
    except ValueError:   # no parallel kernel has run yet
        return False
    return True


def _apply_threading_layer(choice: str) -> None:
    """Select Numba's threading layer once, before its threads start, if the user did not."""
    if _STATE["layer_applied"]:
        return
    _STATE["layer_applied"] = True
    import numba
    if choice == "numba" or "NUMBA_THREADING_LAYER" in os.environ \
            or numba.config.THREADING_LAYER != "default" or _numba_threads_running():
        return
    numba.config.THREADING_LAYER = choice


def _serialise() -> bool:
    """Whether parallel launches must come from one thread at a time (the workqueue layer)."""
    import numba
    try:
        layer = numba.threading_layer()
    except ValueError:
        layer = numba.config.THREADING_LAYER
    return layer not in ("tbb", "omp", "threadsafe")


@contextlib.contextmanager
def job() -> Iterator[None]:
    """The context of one entry-point call: the settings applied, the lock held if needed,
    freed memory retained and BLAS on one thread while it runs (re-entrant: nested
    calls add nothing)."""
    from ._blas_threads import single_thread_blas
    from ._memory import retained_memory
    current = settings()
    _apply_threading_layer(current.threading_layer)
    lock = _LOCK if _serialise() else contextlib.nullcontext()
    with lock, retained_memory(current.malloc_tuning), \
            single_thread_blas(current.single_thread_blas):
        yield


def entry_point(function: Callable[_P, _R]) -> Callable[_P, _R]:
    """Decorate a public function so that it runs inside :func:`job`."""
    @functools.wraps(function)
    def run(*args: _P.args, **kwargs: _P.kwargs) -> _R:
        with job():
            return function(*args, **kwargs)
    return run


def prepare_command_process(environ: MutableMapping[str, str] = os.environ) -> bool:
    """Settings that must precede NumPy, for the ``kryptonref`` command's own process.

    Sets ``OPENBLAS_THREAD_TIMEOUT`` unless the user did or NumPy is already
    loaded (too late: OpenBLAS read it). Returns whether it set it.
    """
    import sys
    if "numpy" in sys.modules or "OPENBLAS_THREAD_TIMEOUT" in environ:
        return False
    environ["OPENBLAS_THREAD_TIMEOUT"] = OPENBLAS_THREAD_TIMEOUT
    return True
