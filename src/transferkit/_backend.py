"""What depends on the backend or on ``tf.distribute``: one small module, so the rest need not.

The classifier may live under a ``tf.distribute.Strategy``: its variables, and those of every
optimizer that trains them, must then be created in the strategy's scope, and Keras 3 cannot
train under every strategy.
"""

from __future__ import annotations

import contextlib
from typing import Any

import tensorflow as tf

from transferkit.errors import UnsupportedStrategyError

__all__ = ["check_strategy_can_train", "scope"]


def scope(strategy: tf.distribute.Strategy | None) -> contextlib.AbstractContextManager[Any]:
    """The strategy's scope, or a context that does nothing when there is no strategy."""
    return strategy.scope() if strategy is not None else contextlib.nullcontext()


def check_strategy_can_train(strategy: tf.distribute.Strategy | None) -> None:
    """Raises where Keras 3 cannot run ``fit``/``evaluate``: several-worker MWMS.

    Keras 3's TensorFlow trainer reduces whole data batches and scalar metrics with
    ``strategy.reduce`` in ways ``MultiWorkerMirroredStrategy`` rejects once there is more
    than one worker (measured on Keras 3.15 / TF 2.21; tensorflow/tensorflow#72388), so the
    error is raised here, before any work, with what to do instead.
    """
    if not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return
    cluster = strategy.cluster_resolver.cluster_spec()
    workers = sum(cluster.num_tasks(job) for job in cluster.jobs if job in ("chief", "worker"))
    if workers > 1:
        msg = (
            "Keras 3 cannot train or evaluate under a MultiWorkerMirroredStrategy that spans "
            "several workers: its fit() and evaluate() fail inside Keras "
            "(tensorflow/tensorflow#72388). Train on one machine with MirroredStrategy over "
            "its GPUs; predict(), save() and export() do work under this strategy. "
            f"Received: strategy=MultiWorkerMirroredStrategy with {workers} workers"
        )
        raise UnsupportedStrategyError(msg)
