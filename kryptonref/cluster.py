"""Dask clusters for :func:`kryptonref.explain_many`: local clusters laid out for
occlusion (one image at a time per worker process, Numba/BLAS threads set before the
process starts), the model's delivery as a worker plugin, the caller's environment kept.

Needs the ``dask`` extra; imports ``distributed`` only when a function runs.
"""
from __future__ import annotations

import contextlib
import os
import pickle
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, cast

from . import validate

if TYPE_CHECKING:
    from distributed import Client

    from .model import Model

__all__ = ["cluster_layout", "usable_cores", "local_cluster", "release", "plugin_name",
           "preserved_environ", "DEFAULT_THREADS", "THREAD_VARIABLES"]

#: Numba/BLAS threads per worker process by default: one worker per core measured 1.3-1.6x
#: the throughput of half as many two-threaded ones (``docs/scaling.md``, Threads).
DEFAULT_THREADS = 1
#: Environment variables that carry the thread count to worker processes.
THREAD_VARIABLES = ("NUMBA_NUM_THREADS", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS",
                    "MKL_NUM_THREADS")


def distributed_module() -> Any:
    """``distributed``, or ImportError naming the extra."""
    from ._optional import optional_module
    return optional_module("distributed", "explain_many", "dask", "dask.distributed")


def plugin_name(key: str) -> str:
    """The worker plugin's name for a model digest."""
    return f"kryptonref-model-{key}"


def cluster_layout(device: str = "cpu", workers: int | None = None, threads: int | None = None,
                   cores: int | None = None,
                   gpus: list[str] | None = None) -> list[dict[str, Any]]:
    """The worker processes a local cluster starts: a list of ``{"env": ..., "nthreads": 1}``.

    ``device="cpu"``: ``workers`` processes (default ``cores // threads``, ``cores``
    by default :func:`usable_cores`), each
    running one image at a time with ``threads`` Numba/BLAS threads (default 1).
    ``device="cuda"``: one worker per GPU (``gpus``: default the visible ones),
    each with its own ``CUDA_VISIBLE_DEVICES``.
    """
    cores = usable_cores() if cores is None else validate.positive_int(cores, "cores")
    threads = DEFAULT_THREADS if threads is None else validate.positive_int(threads, "threads")
    threads = min(threads, cores)
    base = {name: str(threads) for name in THREAD_VARIABLES}
    if device == "cuda":
        if gpus is None:
            gpus = _visible_gpus()
        if not gpus:
            raise ValueError("device='cuda' needs a GPU; none is visible")
        if workers is not None and validate.positive_int(workers, "workers") != len(gpus):
            raise ValueError(f"device='cuda' runs one worker per GPU ({len(gpus)}), "
                             f"got workers={workers}")
        return [{"env": dict(base, CUDA_VISIBLE_DEVICES=str(g)), "nthreads": 1} for g in gpus]
    workers = max(1, cores // threads) if workers is None else validate.positive_int(
        workers, "workers")
    return [{"env": dict(base), "nthreads": 1} for _ in range(workers)]


def usable_cores() -> int:
    """The cores this process may run on (its affinity mask, e.g. under ``taskset`` or a
    container's cpuset), else ``os.cpu_count()``."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def _visible_gpus() -> list[str]:
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return [v.strip() for v in visible.split(",") if v.strip()]
    try:
        from numba import cuda
        return [str(i) for i in range(len(cuda.gpus))]
    except Exception:  # no driver, no numba-cuda
        return []


@contextlib.contextmanager
def preserved_environ() -> Iterator[None]:
    """Restore ``os.environ`` on exit: Dask's nanny writes its pre-spawn variables into the
    process that starts workers."""
    saved = dict(os.environ)
    try:
        yield
    finally:
        for name in set(os.environ) - set(saved):
            del os.environ[name]
        for name, value in saved.items():
            if os.environ.get(name) != value:
                os.environ[name] = value


def local_cluster(workers: int | None = None, threads: int | None = None, device: str = "cpu",
                  **kwargs: Any) -> Client:
    """A ``dask.distributed.Client`` on a new local cluster laid out by :func:`cluster_layout`.

    Worker processes run one image at a time (one Dask thread each) with ``threads``
    Numba and BLAS threads, set before each process starts (Dask's
    ``distributed.nanny.pre-spawn-environ``) and again by each task. The caller's
    environment is left as it was. The dashboard takes a free port
    (``client.dashboard_link``). ``kwargs`` go to the cluster (e.g. ``memory_limit``).
    Close the client and its cluster with ``client.close(); client.cluster.close()``.
    """
    distributed = distributed_module()
    import dask
    layout = cluster_layout(device, workers, threads)
    spawn = dict(layout[0]["env"])
    spawn.pop("CUDA_VISIBLE_DEVICES", None)
    if "OPENBLAS_THREAD_TIMEOUT" not in os.environ:
        from .runtime import OPENBLAS_THREAD_TIMEOUT
        spawn["OPENBLAS_THREAD_TIMEOUT"] = OPENBLAS_THREAD_TIMEOUT
    options = dict(dashboard_address=":0", silence_logs=40)
    options.update(kwargs)
    with preserved_environ(), dask.config.set(
            {"distributed.nanny.pre-spawn-environ":
             dict(dask.config.get("distributed.nanny.pre-spawn-environ"), **spawn)}):
        if device == "cuda":
            specs = {i: {"cls": distributed.Nanny,
                         "options": {"nthreads": 1, "env": w["env"],
                                     **{k: v for k, v in kwargs.items()
                                        if k == "memory_limit"}}}
                     for i, w in enumerate(layout)}
            scheduler = {"cls": distributed.Scheduler, "options": {"dashboard_address": ":0"}}
            cluster = distributed.SpecCluster(workers=specs, scheduler=scheduler)
        else:
            cluster = distributed.LocalCluster(n_workers=len(layout), threads_per_worker=1,
                                               processes=True, env=layout[0]["env"], **options)
        client: Client = distributed.Client(cluster)
    _spawn_without_touching_environ(cluster)
    # An attribute of kryptonref's own on the Client (unused-ignore: without distributed
    # installed, Client is Any and the ignore is not needed).
    client._kryptonref_threads = int(  # type: ignore[attr-defined,unused-ignore]
        layout[0]["env"]["NUMBA_NUM_THREADS"])
    return client


def _spawn_without_touching_environ(cluster: object) -> None:
    """Stop the cluster's nannies, which live in this process, from writing their
    pre-spawn variables into ``os.environ`` when they restart a worker (a killed one, say):
    a changed ``NUMBA_NUM_THREADS`` makes Numba refuse every later compilation here. A
    restarted worker still gets its thread settings from the nanny's ``env`` (set as its
    process starts) and from each task (:func:`kryptonref.many` sets Numba's and BLAS's)."""
    for nanny in getattr(cluster, "workers", {}).values():
        if isinstance(getattr(nanny, "pre_spawn_env", None), dict):
            nanny.pre_spawn_env = {}
        process: Any = getattr(nanny, "process", None)
        if isinstance(getattr(process, "pre_spawn_env", None), dict):
            process.pre_spawn_env = {}


def release(client: Client, model: Model | None = None) -> list[str]:
    """Remove kryptonref's model plugins (of ``model``, or all) from a cluster's workers.

    Returns the names removed.
    """
    names = _registered(client)
    if model is not None:
        from .store import model_digest
        names = [n for n in names if n == plugin_name(model_digest(model))]
    for name in names:
        client.unregister_worker_plugin(name)
    return names


def _registered(client: Client) -> list[str]:
    """The names of kryptonref's model plugins the scheduler holds."""
    # a closure: sent by value, the scheduler need not import kryptonref
    def names(dask_scheduler: Any = None) -> list[str]:
        return [n for n in dask_scheduler.worker_plugins
                if n.startswith("kryptonref-model-")]
    return cast("list[str]", client.run_on_scheduler(names))


def _deliver(client: Client, key: str, model: Model) -> bool:
    """Register the model's plugin unless the scheduler has it already (once per cluster).

    Returns whether it was sent.
    """
    if plugin_name(key) in _registered(client):
        return False
    from ._dask_plugin import ModelPlugin
    client.register_plugin(ModelPlugin(key, pickle.dumps(model)), name=plugin_name(key))
    return True
