"""The Zarr store of :func:`kryptonref.explain_many`: layout, identity, reading.

Layout (one group; every array has one chunk per image along axis 0, so that
tasks on different workers never write the same chunk):

``heatmap`` (N, Hy, Wx), the model's dtype
    The occlusion heatmap of each image (NaN until the image is done).
``attribution`` (N, C, H, W), the model's dtype (only with ``attribution=True``)
    Captum's occlusion attribution (:func:`kryptonref.occlusion`).
``label`` (N,) int64, ``probability`` (N,) float64
    The explained class and its probability on the unoccluded image (-1 / NaN
    until done).
``seconds`` (N,) float64, ``macs`` (N,) int64
    Time of the occlusion call on its worker and the multiply-accumulates it performed.
``status`` (N,) int8
    ``0`` pending, ``1`` done, ``2`` failed: the completion flag, written by a
    task **after** its results, so a done image's results are complete.
``error`` (N,) str
    Why an image failed (empty otherwise).
``image`` (N,) str
    The image's absolute path, or its index for in-memory images.

Attributes: ``kryptonref`` (the store format), ``kryptonref_version``, and the
run's identity: ``parameters`` (what changes the results), ``model`` (SHA-256 of
the graph, dtype and weights), ``images`` (count and digest), plus ``quality``
(the declarative quality target's choice, :func:`kryptonref.explain_many`).
"""
from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from .explain import OcclusionResult
    from .model import Model

__all__ = ["PENDING", "DONE", "FAILED", "store_info", "load_result", "model_digest",
           "is_url", "check_location", "open_run", "StoreInfo"]

PENDING, DONE, FAILED = 0, 1, 2
#: The store format (an attribute of the group).
FORMAT = 1
#: The per-image arrays, in the order a task writes them (``status`` last).
RESULT_ARRAYS = ("heatmap", "attribution", "label", "probability", "seconds", "macs")


def _zarr() -> Any:
    from ._optional import optional_module
    return optional_module("zarr", "explaining many images into a Zarr store", "dask")


def is_url(store: object) -> bool:
    """Whether ``store`` names a remote location (``scheme://...``) rather than a local path."""
    return isinstance(store, str) and "://" in store and not store.startswith("file://")


def _local_path(store: os.PathLike[str] | str) -> str:
    store = os.fspath(store)
    return store[len("file://"):] if store.startswith("file://") else store


def check_location(store: os.PathLike[str] | str) -> bool:
    """Refuse a local path that holds something other than a Zarr group (never cleared).

    Returns whether a Zarr group is already there (local paths; remote stores
    are opened to find out).
    """
    if not isinstance(store, (str, os.PathLike)):
        raise TypeError(f"store must be a path or URL string, got {type(store).__name__}")
    if is_url(store):
        try:
            _zarr().open_group(store, mode="r")
        except (FileNotFoundError, KeyError, ValueError):
            return False
        return True
    path = _local_path(store)
    if not os.path.exists(path):
        parent = os.path.dirname(os.path.abspath(path))
        if not os.path.isdir(parent):
            raise FileNotFoundError(f"store: the folder {parent!r} does not exist")
        return False
    if os.path.isdir(path):
        if not os.listdir(path):
            return False
        meta = os.path.join(path, "zarr.json")
        if os.path.isfile(meta):
            try:
                with open(meta) as handle:
                    if json.load(handle).get("node_type") == "group":
                        return True
            except (OSError, ValueError):
                pass
    raise ValueError(f"store {os.fspath(store)!r} exists and is not a Zarr group; "
                     f"refusing to overwrite it (give a new path or remove it)")


def model_digest(model: Model) -> str:
    """SHA-256 of a model's graph (nodes, layers, inputs, shapes), dtype and weights.

    Cached on the model until its weights are replaced (``Model.weights_version``,
    what the backends key their prepared parameters on): hashing VGG16's 550 MB
    takes about a second.
    """
    cached: tuple[object, str] | None = getattr(model, "_kryptonref_digest", None)
    if cached is not None and cached[0] == model.weights_version:
        return cached[1]
    value = _digest(model)
    model._kryptonref_digest = (model.weights_version, value)  # type: ignore[attr-defined]
    return value


def _digest(model: Model) -> str:
    digest = hashlib.sha256()
    graph = model.graph
    digest.update(repr((graph.input_name, graph.input_shape, graph.output,
                        str(np.dtype(model.dtype)))).encode())
    for name in graph.order:
        node = graph.nodes[name]
        digest.update(repr((node.name, node.layer, tuple(node.inputs))).encode())
        for pname, value in sorted(model.params.get(name, {}).items()):
            digest.update(pname.encode())
            digest.update(np.ascontiguousarray(value).tobytes())
    return digest.hexdigest()


def _differences(stored: dict[str, Any], wanted: dict[str, Any]) -> list[str]:
    """One line per difference between a stored identity and the wanted one."""
    lines = []
    for key in ("parameters",):
        old, new = stored.get(key, {}), wanted[key]
        for name in sorted(set(old) | set(new)):
            if old.get(name) != new.get(name):
                lines.append(f"{name}: store has {old.get(name)!r}, this run {new.get(name)!r}")
    if stored.get("model") != wanted["model"]:
        lines.append(f"model: store has SHA-256 {str(stored.get('model'))[:12]}..., this run "
                     f"{wanted['model'][:12]}... (graph, dtype or weights differ)")
    old, new = stored.get("images", {}), wanted["images"]
    if old.get("count") != new["count"]:
        lines.append(f"images: store has {old.get('count')}, this run {new['count']}")
    elif old.get("digest") != new["digest"]:
        lines.append("images: the same count but different images (paths or pixels)")
    return lines


def open_run(store: os.PathLike[str] | str, identity: dict[str, Any],
             shapes: dict[str, Any], identifiers: Sequence[str]) -> Any:
    """Create the store's layout, or open an existing one with the same identity.

    Parameters
    ----------
    store : str or os.PathLike
        Local path or URL.
    identity : dict
        ``parameters``, ``model``, ``images`` (JSON-ready).
    shapes : dict
        ``heatmap``: (Hy, Wx); ``attribution``: (C, H, W) or None; ``dtype``;
        ``input_shape``: the model's (C, H, W).
    identifiers : list of str
        Per image: its path or index.

    Returns
    -------
    zarr.Group

    Raises
    ------
    ValueError
        Listing every difference when the store holds another run.
    """
    zarr = _zarr()
    exists = check_location(store)
    target = store if is_url(store) else _local_path(store)
    if exists:
        group = zarr.open_group(target, mode="r+")
        attrs = dict(group.attrs)
        if attrs.get("kryptonref") != FORMAT:
            raise ValueError(f"store {os.fspath(store)!r} is a Zarr group that kryptonref did "
                             f"not write; refusing to use it")
        if attrs.get("complete_layout"):
            lines = _differences(attrs, identity)
            if lines:
                raise ValueError(f"store {os.fspath(store)!r} holds another run; differences:\n  "
                                 + "\n  ".join(lines)
                                 + "\n(use a new store, or rerun with the stored settings)")
            return group
    # A new store, or one whose creation was interrupted (ours, no results yet): lay it out.
    group = zarr.open_group(target, mode="w")
    group.attrs.update({"kryptonref": FORMAT})
    n = identity["images"]["count"]
    dtype = np.dtype(shapes["dtype"]).str
    group.create_array("heatmap", shape=(n,) + tuple(shapes["heatmap"]),
                       chunks=(1,) + tuple(shapes["heatmap"]), dtype=dtype, fill_value=np.nan)
    if shapes.get("attribution") is not None:
        group.create_array("attribution", shape=(n,) + tuple(shapes["attribution"]),
                           chunks=(1,) + tuple(shapes["attribution"]), dtype=dtype,
                           fill_value=np.nan)
    for name, kind, fill in (("label", "int64", -1), ("probability", "float64", np.nan),
                             ("seconds", "float64", np.nan), ("macs", "int64", -1),
                             ("status", "int8", PENDING)):
        group.create_array(name, shape=(n,), chunks=(1,), dtype=kind, fill_value=fill)
    group.create_array("error", shape=(n,), chunks=(1,), dtype=str)
    ids = group.create_array("image", shape=(n,), chunks=(max(1, min(n, 4096)),), dtype=str)
    ids[:] = np.array(identifiers, dtype=object)
    from . import __version__
    group.attrs.update(dict(identity, kryptonref_version=__version__, quality=None,
                            input_shape=list(shapes["input_shape"]), complete_layout=True))
    return group


def write_result(group: Any, index: int, result: OcclusionResult, attribution: bool) -> None:
    """Write one image's results, then its ``status`` (done): the completion flag last."""
    group["heatmap"][index] = result.heatmap
    if attribution and "attribution" in group:
        group["attribution"][index] = result.attribution
    group["label"][index] = result.label
    group["probability"][index] = result.probability
    group["seconds"][index] = result.seconds
    group["macs"][index] = result.macs
    group["error"][index] = ""
    group["status"][index] = DONE


def write_failure(group: Any, index: int, message: object) -> None:
    """Record an image as failed, with its error."""
    group["error"][index] = str(message)[:2000]
    group["status"][index] = FAILED


class StoreInfo(dict[str, Any]):
    """What :func:`store_info` returns: a dict with attribute access."""

    __getattr__ = dict.__getitem__


def _open_read(path: os.PathLike[str] | str) -> Any:
    zarr = _zarr()
    if not is_url(path):
        path = _local_path(path)
        if not os.path.exists(path):
            raise FileNotFoundError(f"no such store: {path!r}")
    try:
        group = zarr.open_group(path, mode="r")
    except (FileNotFoundError, KeyError, ValueError) as err:
        raise ValueError(f"{os.fspath(path)!r} is not a Zarr group: {err}") from None
    if group.attrs.get("kryptonref") != FORMAT:
        raise ValueError(f"{os.fspath(path)!r} is not a kryptonref store")
    return group


def store_info(path: os.PathLike[str] | str) -> StoreInfo:
    """Summary of a store: counts by status, the run's identity and quality choice.

    Returns
    -------
    StoreInfo
        ``total``, ``done``, ``failed``, ``pending``, ``parameters``, ``model``,
        ``images``, ``quality``, ``version``, ``errors`` (``{index: message}``).
    """
    group = _open_read(path)
    attrs = dict(group.attrs)
    status = group["status"][:] if "status" in group else np.zeros(0, np.int8)
    failed = np.flatnonzero(status == FAILED)
    errors = {int(i): str(group["error"][int(i)]) for i in failed}
    return StoreInfo(total=int(status.size), done=int((status == DONE).sum()),
                     failed=int(failed.size), pending=int((status == PENDING).sum()),
                     parameters=attrs.get("parameters"), model=attrs.get("model"),
                     images=attrs.get("images"), quality=attrs.get("quality"),
                     version=attrs.get("kryptonref_version"), errors=errors)


def load_result(path: os.PathLike[str] | str, index: int) -> dict[str, Any]:
    """One image's stored results as a dict.

    Returns
    -------
    dict
        ``status`` ("pending", "done" or "failed"), ``image`` (path or index),
        ``heatmap``, ``label``, ``probability``, ``seconds``, ``macs``, ``error``,
        ``attribution`` (or None), ``parameters``, ``input_shape`` (the model's).
    """
    group = _open_read(path)
    n = group["status"].shape[0]
    if isinstance(index, (bool, np.bool_)) or not isinstance(index, (int, np.integer)) \
            or not -n <= index < n:
        raise ValueError(f"index must be an integer in 0..{n - 1}, got {index!r}")
    index = int(index) % n
    status = int(group["status"][index])
    return {"status": ("pending", "done", "failed")[status], "index": index,
            "image": str(group["image"][index]), "heatmap": group["heatmap"][index],
            "label": int(group["label"][index]),
            "probability": float(group["probability"][index]),
            "seconds": float(group["seconds"][index]), "macs": int(group["macs"][index]),
            "error": str(group["error"][index]),
            "attribution": group["attribution"][index] if "attribution" in group else None,
            "parameters": dict(group.attrs).get("parameters"),
            "input_shape": dict(group.attrs).get("input_shape")}
