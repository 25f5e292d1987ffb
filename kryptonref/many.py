"""Explaining whole datasets: many images on Dask, into a resumable Zarr store.

:func:`explain_many` runs :func:`kryptonref.occlusion` once per image, each image
one Dask task, and writes the results into a Zarr store
(:mod:`kryptonref.store`). The model reaches each worker once, through a worker
plugin named after its SHA-256; each worker warms its kernels once per model. A
task writes its image's results, then the image's ``status`` (the completion
flag), so a rerun with the same store and settings skips the images done and
retries the failed ones; a worker killed mid-task has its task rerun by Dask,
which rewrites the same chunks. ``docs/scaling.md`` describes the layout, the
thread choice and cluster recipes.

Needs the ``dask`` extra (``pip install 'kryptonref[dask]'``: dask.distributed
and zarr); ``import kryptonref`` imports neither.
"""
from __future__ import annotations

import contextlib
import glob
import hashlib
import json
import os
import time
import uuid
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, Optional, cast
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from . import store as zstore
from . import validate
from .cluster import (DEFAULT_THREADS, _deliver, cluster_layout,
                      distributed_module, local_cluster, plugin_name, preserved_environ,
                      release, usable_cores)

if TYPE_CHECKING:
    from distributed import Client, Future

    from .model import Model

__all__ = ["explain_many", "ManySummary", "resolve_images", "load_source", "explain_task",
           "tune_task", "IMAGE_SUFFIXES", "QUALITY_TAUS", "QUALITY_SAMPLE",
           # from kryptonref.cluster:
           "local_cluster", "cluster_layout", "release", "plugin_name", "usable_cores",
           "DEFAULT_THREADS"]

#: File suffixes a folder or glob of images contributes (``.npy``: a (C, H, W) array).
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".npy")
#: The taus ``quality=`` searches, with drill-down (:func:`kryptonref.tune_drilldown`).
QUALITY_TAUS = (1.0, 0.9, 0.7, 0.5)
#: Images ``quality=`` samples from the dataset by default (a third held out).
QUALITY_SAMPLE = 12
#: Seed of ``quality=``'s sample.
QUALITY_SEED = 0
#: The modes :func:`explain_many` accepts (``"exact"``: incremental inference).
MODES = ("exact", "full", "approximate")


def _distributed() -> Any:
    return distributed_module()


@dataclass
class ManySummary:
    """What :func:`explain_many` returns.

    Attributes
    ----------
    total : int
        Images in the dataset.
    done : int
        Images explained by this run.
    skipped : int
        Images already done in the store (not recomputed).
    failed : int
        Images that failed in this run (their errors are in the store).
    seconds : float
        Wall time of the call.
    errors : dict
        ``{index: message}`` of this run's failures.
    quality : dict or None
        The quality target's choice (as stored), if ``quality`` was given.
    store : str
    """

    total: int
    done: int
    skipped: int
    failed: int
    seconds: float
    errors: dict[int, str] = field(default_factory=dict)
    quality: Optional[dict[str, Any]] = None
    store: str = ""

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready summary."""
        return {"total": self.total, "done": self.done, "skipped": self.skipped,
                "failed": self.failed, "seconds": self.seconds,
                "errors": {str(k): v for k, v in self.errors.items()},
                "quality": self.quality, "store": self.store}


# -- images -----------------------------------------------------------------------------------
def resolve_images(images: str | os.PathLike[str] | npt.NDArray[Any]
                   | Iterable[str | os.PathLike[str] | npt.NDArray[Any]]
                   ) -> tuple[list[str | npt.NDArray[Any]], list[str], str]:
    """``images`` -> (sources, identifiers, digest).

    A source is an absolute path or a (C, H, W) array; an identifier its path or
    index; the digest covers the paths (not the files' contents: a failed image
    fixed in place is retried), or the pixels of in-memory images.
    """
    digest = hashlib.sha256()
    if isinstance(images, np.ndarray):
        if images.ndim != 4 or images.shape[0] == 0:
            raise ValueError(f"images as an array must have shape (N, C, H, W) with N >= 1, "
                             f"got {images.shape}")
        sources: list[str | npt.NDArray[Any]] = [images[i] for i in range(images.shape[0])]
    elif isinstance(images, (str, os.PathLike)):
        text = os.fspath(images)
        if os.path.isdir(text):
            names = sorted(os.path.join(text, n) for n in os.listdir(text)
                           if n.lower().endswith(IMAGE_SUFFIXES))
            if not names:
                raise ValueError(f"images: no {', '.join(IMAGE_SUFFIXES)} files in {text!r}")
        elif glob.has_magic(text):
            names = sorted(glob.glob(text))
            if not names:
                raise ValueError(f"images: the pattern {text!r} matches no file")
        elif os.path.isfile(text):
            names = [text]
        else:
            raise FileNotFoundError(f"images: {text!r} is neither a folder, a glob nor a file")
        sources = [os.path.abspath(n) for n in names]
    else:
        try:
            items = list(images)
        except TypeError:
            raise TypeError(f"images must be a folder, a glob, a list of paths or arrays, or an "
                            f"array (N, C, H, W); got {type(images).__name__}") from None
        if not items:
            raise ValueError("images is empty")
        sources = []
        for item in items:
            if isinstance(item, (str, os.PathLike)):
                sources.append(os.path.abspath(os.fspath(item)))
            elif isinstance(item, np.ndarray):
                sources.append(item)
            else:
                raise TypeError(f"images: each item must be a path or an array, got "
                                f"{type(item).__name__}")
    identifiers: list[str] = []
    for i, source in enumerate(sources):
        if isinstance(source, str):
            identifiers.append(source)
            digest.update(f"{source}\0".encode())
        else:
            identifiers.append(str(i))
            digest.update(f"{source.shape}{source.dtype}".encode())
            digest.update(np.ascontiguousarray(source).tobytes())
    return sources, identifiers, digest.hexdigest()


def load_source(source: str | npt.NDArray[Any], model: Model) -> npt.NDArray[Any]:
    """One image for ``model``: a PNG/JPEG (resized as :func:`load_image` does), an ``.npy``
    (C, H, W) array, or an array; checked against the model's input shape."""
    shape = model.graph.input_shape
    if isinstance(source, str):
        if source.lower().endswith(".npy"):
            array = np.load(source, allow_pickle=False)
        else:
            from .images import load_image
            array = load_image(source, size=shape[1:])
    else:
        array = source
    return cast("npt.NDArray[Any]", validate.image(np.asarray(array), shape, model.dtype))


# -- the task ---------------------------------------------------------------------------------
#: On a worker: model key -> model, filled by the plugin.
_MODELS: dict[str, Model] = {}
#: On a worker: model keys whose kernels are warm.
_WARM: set[str] = set()
#: On a worker: store -> opened group.
_GROUPS: dict[str, Any] = {}
#: On a worker: the BLAS thread limit applied.
_LIMITED: dict[str, int] = {}


def _limit_threads(threads: int) -> None:
    """Numba's and BLAS's threads in this worker process (BLAS's matter between
    kryptonref's calls; inside one it runs on one thread, ``runtime.single_thread_blas``)."""
    import numba
    from threadpoolctl import threadpool_limits
    numba.set_num_threads(max(1, min(threads, numba.config.NUMBA_NUM_THREADS)))
    if _LIMITED.get("blas") == threads:   # threadpoolctl scans the loaded libraries: once
        return
    _LIMITED["blas"] = threads
    threadpool_limits(threads)


def _warm(key: str, model: Model, settings: dict[str, Any]) -> None:
    """Compile (or load from Numba's cache) the kernels, once per model and worker: one
    occlusion of a blank image at a coarse stride, in the run's mode."""
    if key in _WARM:
        return
    from .explain import occlusion
    image = np.zeros(model.graph.input_shape, model.dtype)
    height, width = model.graph.input_shape[1:]
    patch = settings["patch"]
    warm = {k: v for k, v in settings.items()
            if k not in ("drilldown", "r_drill", "coarse_stride", "target_speedup")}
    warm["stride"] = (max(patch[0], height // 4), max(patch[1], width // 4))
    occlusion(model, image, **warm)
    _WARM.add(key)


def _group(store: str) -> Any:
    if store not in _GROUPS:
        zarr = zstore._zarr()
        _GROUPS[store] = zarr.open_group(store, mode="r+")
    return _GROUPS[store]


def explain_task(store: str, index: int, source: str | npt.NDArray[Any], key: str,
                 settings: dict[str, Any], attribution: bool,
                 threads: int) -> tuple[int, int, str]:
    """One image, on a worker: occlusion, results written, then its status.

    Returns ``(index, status, error)``; an error of the image (unreadable,
    wrong size, ...) is recorded as failed, not raised.
    """
    from .explain import occlusion
    _limit_threads(threads)
    model = _MODELS.get(key)
    if model is None:
        raise RuntimeError(f"the model {key[:12]} is not on this worker (plugin missing)")
    group = _group(store)
    try:
        image = load_source(source, model)
        _warm(key, model, settings)
        result = occlusion(model, image, **settings)
    except (ValueError, TypeError, OSError, ImportError, ArithmeticError) as err:
        zstore.write_failure(group, index, f"{type(err).__name__}: {err}")
        return index, zstore.FAILED, f"{type(err).__name__}: {err}"
    zstore.write_result(group, index, result, attribution)
    return index, zstore.DONE, ""


def tune_task(sources: list[str | npt.NDArray[Any]], key: str, quality: float,
              settings: dict[str, Any], threads: int) -> dict[str, Any]:
    """``quality=`` on one worker: :func:`tune_drilldown` over the sample; returns its dict."""
    from .tuning import tune_drilldown
    _limit_threads(threads)
    model = _MODELS[key]
    images = [load_source(s, model) for s in sources]
    tuned = tune_drilldown(model, images, target_ssim=quality, tau=QUALITY_TAUS,
                           **{k: v for k, v in settings.items()
                              if k in ("patch", "stride", "fill", "batch_size", "device")})
    return cast("dict[str, Any]", tuned.to_dict())


# -- progress ---------------------------------------------------------------------------------
def _progress(progress: bool | Callable[[int, int], object] | None, total: int, initial: int
              ) -> tuple[Callable[[int, int], object], Callable[[], object]]:
    """A callable ``(completed, total)`` and a closer."""
    import sys
    if callable(progress):
        return progress, lambda: None
    if progress is None:
        import importlib.util
        progress = importlib.util.find_spec("tqdm") is not None and sys.stderr.isatty()
    if not progress:
        return (lambda completed, total: None), lambda: None
    from ._optional import optional_module
    tqdm = optional_module("tqdm", "progress=True", "progress").tqdm
    bar = tqdm(total=total, initial=initial, unit="image", desc="explain_many")

    def update(completed: int, total: int) -> None:
        bar.update(completed - bar.n)

    return update, bar.close


# -- explain_many -----------------------------------------------------------------------------
def _settings(model: Model, patch: int | tuple[int, int], stride: int | tuple[int, int],
              fill: str | npt.ArrayLike, mode: str, tau: float,
              drilldown: bool | dict[str, Any] | None, batch_size: int | None,
              device: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """kr.occlusion's keyword arguments and the identity's parameters (JSON)."""
    mode = validate.one_of(mode, MODES, "mode")
    tau = validate.tau(tau)
    patch_hw = validate.int_pair(patch, "patch")
    stride_hw = validate.int_pair(stride, "stride")
    validate.patch_fits(patch_hw, model.graph.input_shape[1:])
    if batch_size is not None:
        validate.positive_int(batch_size, "batch_size")
    drill = validate.drilldown_options(drilldown)
    if mode != "approximate" and (tau < 1.0 or drill is not None):
        raise ValueError(f"tau < 1 and drilldown need mode='approximate', got mode={mode!r}")
    if isinstance(fill, str):
        fill_value = validate.one_of(fill, ("mean",), "fill")
    else:
        validate.fill_patch(fill, model.graph.input_shape[0], patch_hw, np.float64)
        fill_value = np.asarray(fill, np.float64).tolist()
    settings = dict(patch=patch_hw, stride=stride_hw, fill=fill, batch_size=batch_size,
                    device=device, mode="incremental" if mode == "exact" else mode)
    if mode == "approximate":
        settings["tau"] = tau
        if drill is not None:
            settings.update(drilldown=True, **drill)
    parameters = dict(patch=list(patch_hw), stride=list(stride_hw), fill=fill_value,
                      mode=mode, tau=tau, drilldown=drill)
    return settings, parameters


def _choice_settings(settings: dict[str, Any], choice: dict[str, Any]) -> dict[str, Any]:
    """kr.occlusion's arguments for a quality choice (exact or approximate)."""
    settings = dict(settings)
    if choice["mode"] == "approximate":
        settings.update(mode="approximate", tau=choice["tau"], drilldown=True,
                        r_drill=choice["r_drill"], coarse_stride=tuple(choice["coarse_stride"]))
    return settings


def _heatmap_shape(model: Model, settings: dict[str, Any]) -> tuple[int, ...]:
    from .engine import patch_positions
    positions = patch_positions(model.graph.input_shape[1:], settings["patch"],
                                settings["stride"])
    return tuple(len(np.unique(positions[:, axis])) for axis in (0, 1))


def _connect(client: Client | str | None, workers: int | None, threads: int | None,
             device: str) -> tuple[Client, bool, int]:
    """(client, owned, threads): the given client, one to a scheduler address, or a new
    local cluster (owned: closed at the end)."""
    distributed = _distributed()
    if client is None:
        new = local_cluster(workers=workers, threads=threads, device=device)
        return new, True, new._kryptonref_threads  # type: ignore[attr-defined,unused-ignore]
    if workers is not None:
        raise ValueError("workers= sizes a new local cluster; it cannot go with client=")
    threads = DEFAULT_THREADS if threads is None else threads
    if isinstance(client, str):
        with preserved_environ():
            return distributed.Client(client), True, threads
    if not isinstance(client, distributed.Client):
        raise TypeError(f"client must be a dask.distributed.Client or a scheduler address, "
                        f"got {type(client).__name__}")
    return client, False, threads


def _close(client: Client, owned: bool) -> None:
    if not owned:
        return
    with preserved_environ(), contextlib.suppress(Exception):
        cluster = client.cluster
        client.close()
        if cluster is not None:
            cluster.close()


def explain_many(model: Model,
                 images: str | os.PathLike[str] | npt.NDArray[Any]
                 | Iterable[str | os.PathLike[str] | npt.NDArray[Any]],
                 store: os.PathLike[str] | str, patch: int | tuple[int, int] = 16,
                 stride: int | tuple[int, int] = 4, fill: str | npt.ArrayLike = 0.0,
                 mode: str = "exact", tau: float = 1.0,
                 drilldown: bool | dict[str, Any] | None = None, quality: float | None = None,
                 device: str = "cpu", client: Client | str | None = None,
                 workers: int | None = None, threads: int | None = None,
                 batch_size: int | None = None,
                 progress: bool | Callable[[int, int], object] | None = None,
                 attribution: bool = False, quality_sample: int = QUALITY_SAMPLE) -> ManySummary:
    """Explain every image of a dataset on Dask, into a resumable Zarr store.

    Each image is one task running :func:`kryptonref.occlusion`; its results go
    to the store (:mod:`kryptonref.store`: ``heatmap``, ``label``,
    ``probability``, ``seconds``, ``macs``, optionally ``attribution``, one chunk
    per image), then its ``status``. Rerunning with the same store and settings
    skips the images done and retries the failed ones; different settings, a
    different model or different images are refused with every difference
    listed, before any cluster starts. An image that cannot be read or has the
    wrong size is recorded as failed (its error in the store); the rest go on.

    Parameters
    ----------
    model : Model
    images : folder, glob, list of paths or (C, H, W) arrays, or array (N, C, H, W)
        A folder contributes its ``.png``, ``.jpg``, ``.jpeg`` and ``.npy`` files,
        sorted by name; PNG/JPEG files are loaded as :func:`kryptonref.images.load_image`
        does at the model's input size; ``.npy`` files hold a (C, H, W) array.
    store : str or os.PathLike
        A local path or a URL (``s3://...``, through fsspec) of a Zarr store; a
        local path holding anything but a Zarr group is refused, never cleared.
    patch, stride, fill, batch_size, device, attribution
        As for :func:`kryptonref.occlusion` (``attribution``: also store Captum's
        attribution, (N, C, H, W); not with drill-down).
    mode : {"exact", "full", "approximate"}
        Exact incremental inference (default), full re-inference, or approximate
        inference with ``tau`` and ``drilldown``.
    tau : float in (0, 1]
    drilldown : None, True or dict
        ``mode="approximate"``: adaptive drill-down; a dict may give ``r_drill``,
        ``coarse_stride`` and ``target_speedup``.
    quality : float in (0, 1], optional
        A declarative target heatmap SSIM instead of ``mode``/``tau``/``drilldown``:
        a seeded random sample of ``quality_sample`` images runs exact on one
        worker, :func:`kryptonref.tune_drilldown` searches tau in
        ``QUALITY_TAUS`` with drill-down (a third of the sample held out), and
        the approximate setting is used only if the search passes and the
        held-out SSIM reaches ``quality``; else the run is exact. The store
        records the choice, the sample and the SSIMs; a rerun reuses them.
    client : dask.distributed.Client or str, optional
        A client, or a scheduler address; by default a local cluster
        (:func:`local_cluster`) started and closed by this call.
    workers, threads : int, optional
        The local cluster's worker processes (default ``cores // threads``) and
        Numba/BLAS threads per worker (default 2); each worker runs one image at
        a time. With ``client``: only ``threads`` applies (set by each task).
    progress : None, bool or callable
        ``None``: a tqdm bar when tqdm is installed and stderr is a terminal;
        ``True``: a bar; a callable: called as ``progress(completed, total)``.
    quality_sample : int
        Images ``quality`` samples (default 12).

    Returns
    -------
    ManySummary

    Raises
    ------
    ValueError
        On bad arguments, or a store holding another run (every difference listed).
    KeyboardInterrupt
        On Ctrl-C, after cancelling the queued tasks and closing its own cluster;
        the images done stay done and a rerun resumes.
    """
    from .model import Model
    start = time.perf_counter()
    if not isinstance(model, Model):
        raise TypeError(f"model must be a kryptonref Model, got {type(model).__name__}")
    if len(model.graph.shapes[model.graph.output]) != 1:
        raise ValueError("explain_many needs a model whose output is a vector of class scores")
    device = validate.one_of(device, ("cpu", "cuda"), "device")
    if quality is not None:
        quality = validate.unit_interval(quality, "quality")
        if mode != "exact" or tau != 1.0 or drilldown is not None:
            raise ValueError("quality= chooses mode, tau and drill-down itself; give quality or "
                             "mode/tau/drilldown, not both")
        quality_sample = validate.positive_int(quality_sample, "quality_sample")
    if not isinstance(attribution, (bool, np.bool_)):
        raise TypeError(f"attribution must be True or False, got {attribution!r}")
    attribution = bool(attribution)
    if threads is not None:
        validate.positive_int(threads, "threads")
    if workers is not None:
        validate.positive_int(workers, "workers")
    settings, parameters = _settings(model, patch, stride, fill, mode, tau, drilldown,
                                     batch_size, device)
    if attribution and (drilldown is not None or quality is not None):
        raise ValueError("attribution=True needs every window occluded: not with drilldown "
                         "or quality")
    parameters.update(attribution=attribution, quality=quality,
                      quality_sample=quality_sample if quality is not None else None)
    if not (progress is None or isinstance(progress, bool) or callable(progress)):
        raise TypeError(f"progress must be None, True, False or a callable, got {progress!r}")

    sources, identifiers, digest = resolve_images(images)
    key = zstore.model_digest(model)
    identity = json.loads(json.dumps({"parameters": parameters, "model": key,
                                      "images": {"count": len(sources), "digest": digest}}))
    if isinstance(images, np.ndarray) and tuple(images.shape[1:]) != model.graph.input_shape:
        raise ValueError(f"images must have shape (N,) + {model.graph.input_shape}, got "
                         f"{images.shape}")
    shapes = {"heatmap": _heatmap_shape(model, settings), "dtype": model.dtype,
              "input_shape": model.graph.input_shape,
              "attribution": model.graph.input_shape if attribution else None}
    group = zstore.open_run(store, identity, shapes, identifiers)
    target = os.fspath(store) if zstore.is_url(store) else os.path.abspath(
        zstore._local_path(store))
    status = group["status"][:]
    todo = [int(i) for i in np.flatnonzero(status != zstore.DONE)]
    skipped = len(sources) - len(todo)
    stored_quality = dict(group.attrs).get("quality")
    summary = ManySummary(total=len(sources), done=0, skipped=skipped, failed=0, seconds=0.0,
                          quality=stored_quality, store=target)
    if not todo:
        summary.seconds = time.perf_counter() - start
        return summary

    report, close_bar = _progress(progress, len(sources), skipped)
    client, owned, threads = _connect(client, workers, threads, device)
    assert not isinstance(client, str)  # for type checkers: _connect returns a Client
    futures: set[Future[Any]] = set()
    run = uuid.uuid4().hex[:8]
    try:
        _deliver(client, key, model)
        if quality is not None:
            if stored_quality is None:
                stored_quality = _tune(client, group, sources, key, quality, quality_sample,
                                       settings, threads, futures)
            summary.quality = stored_quality
            settings = _choice_settings(settings, stored_quality["choice"])
        def submit(i: int) -> Future[tuple[int, int, str]]:
            return client.submit(explain_task, target, i, sources[i], key, settings,
                                 attribution, threads, key=f"kryptonref-{run}-{i}",
                                 pure=False)

        _run_tasks(client, submit, todo, group, summary, report, skipped, futures)
    except BaseException:
        with contextlib.suppress(Exception):
            client.cancel(list(futures))
        raise
    finally:
        close_bar()
        _close(client, owned)
    summary.seconds = time.perf_counter() - start
    return summary


def _window(client: Client) -> int:
    """Tasks kept queued on the cluster: four per worker thread, at least 16."""
    try:
        return cast(int, max(16, 4 * sum(client.nthreads().values())))
    except Exception:  # a scheduler that does not answer: the minimum
        return 16


def _run_tasks(client: Client, submit: Callable[[int], Future[tuple[int, int, str]]],
               todo: list[int], group: Any, summary: ManySummary,
               report: Callable[[int, int], object], skipped: int,
               inflight: set[Future[Any]]) -> None:
    """Submit the images a window at a time and record each as it completes.

    The client polls with short sleeps (so that Ctrl-C lands at once) and keeps
    four tasks per worker thread queued (the window follows workers that join),
    so a long run holds neither every task nor every in-memory image on the
    scheduler at once. ``inflight`` (a set) holds the futures not yet recorded.
    """
    queue = list(reversed(todo))
    completed = skipped
    window, checked = _window(client), time.monotonic()
    while queue or inflight:
        if time.monotonic() - checked > 5.0:
            window, checked = _window(client), time.monotonic()
        while queue and len(inflight) < window:
            inflight.add(submit(queue.pop()))
        finished = [f for f in inflight if f.status in ("finished", "error", "cancelled")]
        if not finished:
            time.sleep(0.05)
            continue
        for future in finished:
            inflight.discard(future)
            state, error = _record(future, group)
            if state == zstore.DONE:
                summary.done += 1
            else:
                summary.failed += 1
                summary.errors[int(cast(str, future.key).rsplit("-", 1)[1])] = error
            completed += 1
            report(completed, summary.total)
            future.release()


def _record(future: Future[Any], group: Any) -> tuple[int, str]:
    """(status, error) of a finished future; a task that raised (a worker that died
    ``allowed-failures + 1`` times: KilledWorker) is recorded failed by the client."""
    if future.status == "finished":
        _, state, error = future.result()
        return state, error
    err = future.exception() if future.status == "error" else "cancelled"
    if isinstance(err, _distributed().KilledWorker):
        error = (f"KilledWorker: the workers running this image died "
                 f"{_allowed_failures()} times")
    else:
        error = f"{type(err).__name__}: {err}"
    zstore.write_failure(group, int(cast(str, future.key).rsplit("-", 1)[1]), error)
    return zstore.FAILED, error


def _allowed_failures() -> int:
    import dask
    return cast(int, dask.config.get("distributed.scheduler.allowed-failures", 3) + 1)


def _tune(client: Client, group: Any, sources: list[str | npt.NDArray[Any]], key: str,
          quality: float, count: int, settings: dict[str, Any], threads: int,
          inflight: set[Future[Any]]) -> dict[str, Any]:
    """Run ``quality=``'s search on one worker; store and return the choice."""
    rng = np.random.default_rng(QUALITY_SEED)
    n = len(sources)
    sample = sorted(int(i) for i in rng.choice(n, size=min(count, n), replace=False))
    future = client.submit(tune_task, [sources[i] for i in sample], key, quality, settings,
                           threads, pure=False)
    inflight.add(future)
    while future.status not in ("finished", "error", "cancelled"):
        time.sleep(0.05)   # short sleeps: Ctrl-C lands
    inflight.discard(future)
    tuned = future.result()
    passes = bool(tuned["reached"]) and tuned["held_out_ssim"] is not None \
        and tuned["held_out_ssim"] >= quality
    choice = ({"mode": "approximate", "tau": tuned["tau"], "r_drill": tuned["r_drill"],
               "coarse_stride": list(tuned["coarse_stride"])} if passes else {"mode": "exact"})
    record: dict[str, Any] = {
        "target": quality, "sample": sample, "choice": choice,
        "reached": bool(tuned["reached"]), "held_out_ssim": tuned["held_out_ssim"],
        "mean_ssim": tuned["mean_ssim"], "lower_ssim": tuned["lower_ssim"],
        "predicted_speedup": tuned["predicted_speedup"], "n_fit": tuned["n_fit"],
        "n_held_out": tuned["n_held_out"]}
    record = json.loads(json.dumps(record))
    group.attrs.update({"quality": record})
    return record
