"""Backends: where the engine's arrays live and which kernels compute on them.

``device=`` arguments name a backend: ``"cpu"`` (:mod:`.cpu`: NumPy, Numba and
BLAS) or ``"cuda"`` (:mod:`.cuda`: numba-cuda kernels on a GPU, extra
``kryptonref[cuda]``). The interface every backend implements is
:class:`~.base.Backend`; :func:`register_backend` adds one. Backend modules
are imported on first use, so the CPU path never imports numba-cuda.
"""
from __future__ import annotations

import importlib

from .base import Backend, KernelBackend

__all__ = ["Backend", "KernelBackend", "DEVICES", "get_backend", "register_backend"]

#: ``device`` name -> ``"module:class"`` of its backend.
_FACTORIES = {"cpu": "kryptonref.backends.cpu:CPUBackend",
              "cuda": "kryptonref.backends.cuda:CUDABackend"}
#: Backends made so far (one per device, made on first use).
_BACKENDS: dict = {}

#: Devices accepted by ``device=`` arguments.
DEVICES = tuple(_FACTORIES)


def register_backend(name, factory):
    """Make ``device=name`` use the backend ``factory()`` builds (a :class:`Backend`).

    ``factory`` is a callable or a ``"module:attribute"`` string imported on first use.
    """
    global DEVICES
    _FACTORIES[str(name)] = factory
    _BACKENDS.pop(name, None)
    DEVICES = tuple(_FACTORIES)


def _factory(name):
    factory = _FACTORIES[name]
    if isinstance(factory, str):
        module_name, _, attribute = factory.partition(":")
        # (kryptonref._cuda names the extra to install when numba-cuda is missing)
        factory = getattr(importlib.import_module(module_name), attribute)
    return factory


def get_backend(device):
    """The backend object for ``device`` (``"cpu"`` or ``"cuda"``).

    Raises
    ------
    ValueError
        For an unknown device name.
    ImportError
        For ``"cuda"`` without numba-cuda installed (extra ``kryptonref[cuda]``).
    RuntimeError
        For ``"cuda"`` when no usable GPU (or CUDA driver) is found.
    """
    if not isinstance(device, str) or device not in _FACTORIES:
        raise ValueError(f"device must be one of {DEVICES}, got {device!r}")
    if device not in _BACKENDS:
        _BACKENDS[device] = _factory(device)()
    return _BACKENDS[device]
