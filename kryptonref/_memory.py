"""Keep freed memory in the process while an occlusion job runs (glibc's malloc).

Every batch allocates and frees the same large arrays (read windows, im2col
and Winograd buffers, layer outputs: megabytes each). With glibc's default
settings, arrays above the mmap threshold are mapped afresh on each allocation
and freed heap memory past the trim threshold is handed back to the kernel, so
every batch pays a page fault (and a page of zeroing) per 4 KiB it touches
(measured: ``docs/design.md``, Performance facts). onnxruntime avoids the same
cost with its own memory arena.

:func:`retained_memory` raises both thresholds (once per process, through
``mallopt``) so freed arrays are reused, and calls ``malloc_trim(0)`` when the
job ends, which hands the retained memory back. The raised thresholds stay in
effect for the rest of the process. glibc caps the mmap threshold at 32 MiB,
and arrays above it (Inception v3's 768-channel maps at batch 64 are 57 MB)
would still be mapped afresh every batch, so while a job runs, mapping is
turned off altogether (``M_MMAP_MAX = 0``: every array comes from the heap);
when the last job ends it is turned back on, at glibc's default (65536
mappings), before the trim. The ``malloc_tuning`` setting
(:mod:`kryptonref.runtime`; ``KRYPTONREF_MALLOC_TUNING=0`` in the environment)
leaves the allocator alone; on other C libraries (macOS, musl) nothing is
changed.
"""
from __future__ import annotations

import contextlib
import ctypes
import os
import threading

from ._jobs import WhileJobsRun

__all__ = ["retained_memory", "MMAP_THRESHOLD", "TRIM_THRESHOLD", "DEFAULT_MMAP_MAX"]
#: Allocations below this come from the heap, not a fresh mapping (glibc's
#: largest accepted value on 64-bit systems, ``DEFAULT_MMAP_THRESHOLD_MAX``).
MMAP_THRESHOLD = 32 << 20
#: Free memory at the top of the heap kept until the job ends.
TRIM_THRESHOLD = 1 << 30

#: glibc's default for ``M_MMAP_MAX``, restored when the last job ends.
DEFAULT_MMAP_MAX = 65536

_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD, _M_MMAP_MAX = -1, -3, -4
_STATE = {"libc": None, "checked": False}
_LOCK = threading.Lock()
_JOBS = WhileJobsRun()


def _glibc():
    """The C library when it is glibc (``None`` otherwise)."""
    try:
        if not os.confstr("CS_GNU_LIBC_VERSION").startswith("glibc"):
            return None
        return ctypes.CDLL("libc.so.6")
    except (AttributeError, ValueError, OSError):  # no confstr, no such name, no such file
        return None


def _tuned_libc():
    """glibc, after raising its thresholds once; ``None`` when not applicable."""
    with _LOCK:
        if not _STATE["checked"]:
            _STATE["checked"] = True
            libc = _glibc()
            if libc is not None and libc.mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD) \
                    and libc.mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD):
                _STATE["libc"] = libc
        return _STATE["libc"]


def retained_memory(enabled: bool = True
                    ) -> contextlib.AbstractContextManager[None]:
    """Context of one job: freed memory is reused while it runs, released after.

    Jobs may nest or overlap (from several threads); the memory is released
    when the last one running ends. ``enabled=False`` (the ``malloc_tuning``
    setting off) changes nothing for this job.
    """
    libc = _tuned_libc() if enabled else None
    if libc is None:
        return contextlib.nullcontext()

    def release():
        libc.mallopt(_M_MMAP_MAX, DEFAULT_MMAP_MAX)
        libc.malloc_trim(0)
    return _JOBS.hold(lambda: libc.mallopt(_M_MMAP_MAX, 0), release)
