"""Freed memory is kept for reuse while an occlusion job runs (glibc's malloc).

Each case runs in a fresh interpreter: the allocator's thresholds are process-wide
and, once raised, stay raised.
"""
import platform
import textwrap

import pytest

import kryptonref as kr
from .processes import run_python

GLIBC = platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"

SCRIPT = textwrap.dedent("""
    import os
    import resource
    import numpy as np
    from kryptonref._memory import retained_memory

    def faults():
        return resource.getrusage(resource.RUSAGE_SELF).ru_minflt

    size = int(os.environ["BLOCK_MB"]) << 20
    with retained_memory():
        first = np.empty(size, np.uint8)
        first[:] = 1
        del first
        before = faults()
        for _ in range(20):  # what every batch does: allocate, touch, free
            blocks = [np.empty(size, np.uint8) for _ in range(3)]
            for block in blocks:
                block[:] = 1
            del blocks, block
        print(faults() - before)
""")


def page_faults(tuning, megabytes):
    output = run_python(SCRIPT, env={"KRYPTONREF_MALLOC_TUNING": tuning,
                                     "BLOCK_MB": str(megabytes)})
    return int(output.split()[-1])


@pytest.mark.skipif(not GLIBC, reason="the tuning applies to glibc's malloc only")
@pytest.mark.parametrize("megabytes", [8, 48])  # below and above glibc's largest mmap threshold
def test_batches_reuse_freed_memory_instead_of_faulting_it_in_again(megabytes):
    untuned, tuned = page_faults("0", megabytes), page_faults("1", megabytes)
    assert untuned > 10_000  # freed blocks handed back, then faulted in again
    assert tuned < untuned / 10


def test_the_public_functions_keep_their_signature_and_docs():
    import inspect
    assert "positions" in inspect.signature(kr.incremental_inference).parameters
    assert "stride" in inspect.signature(kr.occlusion).parameters
    assert kr.occlusion.__doc__.startswith("Occlusion heatmap")


def test_overlapping_jobs_release_the_memory_when_the_last_one_ends(monkeypatch):
    """Jobs from several threads (a thread-safe Numba layer, no lock) end in any order."""
    from kryptonref import _memory

    trims = []

    mmap_max = []

    class FakeLibc:
        def malloc_trim(self, pad):
            trims.append(pad)

        def mallopt(self, option, value):
            assert option == -4  # M_MMAP_MAX
            mmap_max.append(value)

    monkeypatch.setitem(_memory._STATE, "checked", True)
    monkeypatch.setitem(_memory._STATE, "libc", FakeLibc())
    monkeypatch.setitem(_memory._STATE, "jobs", 0)
    first, second = _memory.retained_memory(), _memory.retained_memory()
    first.__enter__()
    second.__enter__()
    first.__exit__(None, None, None)   # the first job ends while the second runs
    assert trims == []
    second.__exit__(None, None, None)
    assert trims == [0] and _memory._STATE["jobs"] == 0
    assert mmap_max == [0, _memory.DEFAULT_MMAP_MAX]  # mapping off while any job runs
