"""Process-wide settings (kryptonref.runtime): nothing at import, everything at call time.

``import kryptonref`` must leave the host process as it was; the entry points
apply the threading layer (and its lock) and the allocator tuning when they run,
each read at call time and each with its opt-out; the ``kryptonref`` command sets
OpenBLAS's thread timeout before NumPy loads. Process-wide state that cannot be
undone (an imported module, a threading layer once its threads run, glibc's
thresholds once raised, a crash) is checked in a fresh interpreter.
"""
import platform
import textwrap

import pytest

import kryptonref as kr
from .processes import run_python

GLIBC = platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"

IMPORT_CHANGES_NOTHING = textwrap.dedent("""
    import os, sys, numba
    environ, layer = dict(os.environ), numba.config.THREADING_LAYER
    import importlib, pkgutil, kryptonref
    names = [m.name for m in pkgutil.walk_packages(kryptonref.__path__, "kryptonref.")
             if "cuda" not in m.name and not m.name.endswith("__main__")]
    for name in names:
        importlib.import_module(name)
    for name in kryptonref.__all__:
        getattr(kryptonref, name)
    assert dict(os.environ) == environ, set(os.environ.items()) ^ set(environ.items())
    assert numba.config.THREADING_LAYER == layer, numba.config.THREADING_LAYER
    print("unchanged", len(names))
""")


def test_importing_kryptonref_changes_nothing():
    """Every module imported, every public name resolved: os.environ and Numba's
    threading layer as they were."""
    out = run_python(IMPORT_CHANGES_NOTHING, drop=("NUMBA_THREADING_LAYER",
                                                   "OPENBLAS_THREAD_TIMEOUT"))
    assert out.startswith("unchanged")
    assert int(out.split()[1]) > 20


def test_import_is_lazy():
    out = run_python("import sys, kryptonref; print('numpy' in sys.modules, "
                     "'numba' in sys.modules)")
    assert out.split() == ["False", "False"]


LAYER_AFTER_A_CALL = textwrap.dedent("""
    import numba, numpy as np, kryptonref as kr
    {before}
    g = kr.Graph((1, 6, 6))
    g.add(kr.Conv2d(1, 2, 3, padding=1), name="c")
    kr.incremental_inference(kr.Model(g), np.zeros((1, 6, 6), np.float32), [(1, 1)], 2)
    print(numba.config.THREADING_LAYER, numba.threading_layer())
""")


@pytest.mark.parametrize("env, before, expected", [
    ({}, "", ["workqueue", "workqueue"]),                                  # the default
    ({"NUMBA_THREADING_LAYER": "omp"}, "", ["omp", "omp"]),                # the user's choice
    ({"KRYPTONREF_THREADING_LAYER": "numba"}, "", ["default", None]),      # opted out
    ({}, "kr.runtime.configure(threading_layer='numba')", ["default", None]),
    ({}, "numba.config.THREADING_LAYER = 'omp'", ["omp", "omp"]),          # chosen in code
])
def test_the_threading_layer_is_chosen_when_an_entry_point_runs(env, before, expected):
    out = run_python(LAYER_AFTER_A_CALL.format(before=before), env=env,
                     drop=("NUMBA_THREADING_LAYER", "KRYPTONREF_THREADING_LAYER")).split()
    assert out[0] == expected[0]
    if expected[1] is not None:
        assert out[1] == expected[1]


def test_configure_checks_its_arguments():
    with pytest.raises(TypeError, match="unknown setting 'speed'"):
        kr.runtime.configure(speed=True)
    with pytest.raises(ValueError, match="threading_layer must be one of"):
        kr.runtime.configure(threading_layer="fast")


def test_settings_are_read_at_call_time(monkeypatch):
    monkeypatch.setenv("KRYPTONREF_MALLOC_TUNING", "0")
    assert kr.runtime.settings().malloc_tuning is False
    monkeypatch.setenv("KRYPTONREF_MALLOC_TUNING", "1")
    assert kr.runtime.settings().malloc_tuning is True
    kr.runtime.configure(malloc_tuning=False)
    try:
        assert kr.runtime.settings().malloc_tuning is False
    finally:
        kr.runtime.configure(malloc_tuning=None)
    assert kr.runtime.settings().malloc_tuning is True


COMMAND_PROCESS = textwrap.dedent("""
    import os, sys, types
    {before}
    fake = types.ModuleType("kryptonref.cli")
    fake.main = lambda: print(os.environ.get("OPENBLAS_THREAD_TIMEOUT"),
                              "numpy" in sys.modules) or 0
    sys.modules["kryptonref.cli"] = fake
    from kryptonref.__main__ import console
    console()
""")


@pytest.mark.parametrize("before, env, expected", [
    ("", {}, ["18", "False"]),                                  # set before NumPy loads
    ("", {"OPENBLAS_THREAD_TIMEOUT": "7"}, ["7", "False"]),     # the user's value wins
    ("import numpy", {}, ["None", "True"]),                     # too late: OpenBLAS read it
])
def test_the_command_sets_openblas_thread_timeout_before_numpy(before, env, expected):
    out = run_python(COMMAND_PROCESS.format(before=before), env=env,
                     drop=("OPENBLAS_THREAD_TIMEOUT",))
    assert out.split() == expected


THREADS = textwrap.dedent("""
    import threading
    import numpy as np
    import kryptonref as kr

    model = kr.zoo("demo_resnet", image_size=40)
    image = np.random.default_rng(0).standard_normal((3, 40, 40)).astype(np.float32)
    want = kr.occlusion(model, image, patch=8, stride=4).heatmap
    want_full = model.forward(image[None])
    bad = []

    def work():
        for _ in range(3):
            if not np.array_equal(kr.occlusion(model, image, patch=8, stride=4).heatmap, want):
                bad.append("occlusion")
            if not np.array_equal(model.forward(image[None]), want_full):
                bad.append("forward")

    threads = [threading.Thread(target=work) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    print("different results:", bad)
""")


def test_occlusion_from_several_threads_at_once():
    """Numba's workqueue layer aborts the process on concurrent parallel launches: the
    entry points' lock makes calls queue up (a crash would kill pytest: a subprocess)."""
    assert "different results: []" in run_python(THREADS, drop=("NUMBA_THREADING_LAYER",))



SCRIPT = textwrap.dedent("""
    import os
    import resource
    import numpy as np
    from kryptonref._memory import retained_memory

    def faults():
        return resource.getrusage(resource.RUSAGE_SELF).ru_minflt

    size = int(os.environ["BLOCK_MB"]) << 20
    with retained_memory(os.environ["KRYPTONREF_MALLOC_TUNING"] != "0"):
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


def test_a_job_with_malloc_tuning_off_leaves_the_allocator_alone(monkeypatch):
    from kryptonref import _memory

    class FakeLibc:
        def malloc_trim(self, pad):
            raise AssertionError("trimmed")

        def mallopt(self, option, value):
            raise AssertionError("mallopt called")

    monkeypatch.setitem(_memory._STATE, "checked", True)
    monkeypatch.setitem(_memory._STATE, "libc", FakeLibc())
    monkeypatch.setenv("KRYPTONREF_MALLOC_TUNING", "0")
    with kr.runtime.job():
        pass


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
    monkeypatch.setattr(_memory, "_JOBS", _memory.WhileJobsRun())
    first, second = _memory.retained_memory(), _memory.retained_memory()
    first.__enter__()
    second.__enter__()
    first.__exit__(None, None, None)   # the first job ends while the second runs
    assert trims == []
    second.__exit__(None, None, None)
    assert trims == [0] and _memory._JOBS.jobs == 0
    assert mmap_max == [0, _memory.DEFAULT_MMAP_MAX]  # mapping off while any job runs


def test_no_writable_kernel_cache_means_no_disk_cache_not_a_failed_import(monkeypatch):
    """With site-packages and $HOME read-only, Numba refuses cache=True kernels at
    import; kryptonref then compiles them without the disk cache, with one warning."""
    from numba.core import caching

    from kryptonref import _numba

    def read_only(self):
        raise PermissionError(13, "Permission denied", self.get_cache_path())
    for locator in caching.CacheImpl._locator_classes:
        monkeypatch.setattr(locator, "ensure_cache_path", read_only)
    assert not _numba.disk_cache_available()
    with pytest.warns(RuntimeWarning, match="no writable folder for Numba's kernel cache"):
        options = _numba.kernel_options()
    assert options["cache"] is False

    @_numba.njit(**options)
    def twice(x):
        return 2 * x
    assert twice(21) == 42            # compiles and runs without a cache


def test_a_writable_kernel_cache_is_used():
    from kryptonref import _numba
    assert _numba.disk_cache_available() and _numba.KERNEL["cache"] is True


BLAS_THREADS = textwrap.dedent("""
    import kryptonref as kr
    from threadpoolctl import threadpool_info
    import scipy.linalg.cython_blas

    def blas_threads():
        return sorted(lib["num_threads"] for lib in threadpool_info() if lib["user_api"] == "blas")

    before = blas_threads()
    during = kr.runtime.entry_point(blas_threads)()
    print(before, during, blas_threads())
""")


@pytest.mark.parametrize("env, limited", [({}, True), ({"KRYPTONREF_SINGLE_THREAD_BLAS": "0"}, False)])
def test_blas_runs_on_one_thread_while_a_job_runs_and_gets_its_threads_back(env, limited):
    """kryptonref splits its GEMMs over Numba's threads itself (layers.blas.matmul)."""
    before, during, after = run_python(
        BLAS_THREADS, env={"OPENBLAS_NUM_THREADS": "2", **env},
        drop=("KRYPTONREF_SINGLE_THREAD_BLAS",)).replace(", ", ",").split()
    assert before == after == "[2,2]" or before == after == "[2]"
    assert during == (before.replace("2", "1") if limited else before)


def test_overlapping_jobs_give_blas_its_threads_back_when_the_last_one_ends(monkeypatch):
    from kryptonref import _blas_threads

    calls = []

    class FakeLimiter:
        def restore_original_limits(self):
            calls.append("restore")

    class FakeController:
        def limit(self, limits, user_api):
            calls.append((limits, user_api))
            return FakeLimiter()

    monkeypatch.setitem(_blas_threads._STATE, "controller", FakeController())
    monkeypatch.setattr(_blas_threads, "_JOBS", _blas_threads.WhileJobsRun())
    first, second = _blas_threads.single_thread_blas(), _blas_threads.single_thread_blas()
    first.__enter__()
    second.__enter__()
    first.__exit__(None, None, None)
    assert calls == [(1, "blas")]
    second.__exit__(None, None, None)
    assert calls == [(1, "blas"), "restore"] and _blas_threads._JOBS.jobs == 0
