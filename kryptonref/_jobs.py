"""Process-wide state held while any job runs (the allocator tuning, BLAS's threads).

Jobs may nest or overlap (from several threads, with a thread-safe Numba layer);
the state is set when the first one starts and undone when the last one ends.
"""
from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator

__all__ = ["WhileJobsRun"]


class WhileJobsRun:
    """A count of running jobs: :meth:`hold` calls ``begin`` when the first job starts
    and ``end`` when the last one ends, both under one lock."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.jobs = 0

    @contextlib.contextmanager
    def hold(self, begin: Callable[[], object],
             end: Callable[[], object]) -> Iterator[None]:
        """Context of one job."""
        with self.lock:
            self.jobs += 1
            if self.jobs == 1:
                begin()
        try:
            yield
        finally:
            with self.lock:
                self.jobs -= 1
                if self.jobs == 0:
                    end()
