"""The Dask worker plugin that carries a model to every worker (imported only by
:mod:`kryptonref.many` when it runs, since it needs ``distributed``)."""
from __future__ import annotations

import pickle

from distributed import WorkerPlugin

__all__ = ["ModelPlugin"]


class ModelPlugin(WorkerPlugin):
    """Carries one model (pickled) to every worker, present and future (restarted ones too).

    Registered under ``kryptonref-model-<sha256>`` (:func:`kryptonref.many.plugin_name`),
    once per cluster; :func:`kryptonref.many.release` removes it.
    """

    idempotent = True

    def __init__(self, key: str, payload: bytes) -> None:
        self.key = key
        self.payload = payload

    def setup(self, worker):
        from . import many
        many._MODELS[self.key] = pickle.loads(self.payload)

    def teardown(self, worker):
        from . import many
        many._MODELS.pop(self.key, None)
        many._WARM.discard(self.key)
