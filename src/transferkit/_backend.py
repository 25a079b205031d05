"""What depends on the backend or on ``tf.distribute``: one small module, so the rest need not.

Model-side code uses ``keras.ops`` and runs on every Keras backend; ``tf.data`` is the input
pipeline on all of them. What only one backend can do lives here:

* ``tf.distribute``: the classifier may live under a ``tf.distribute.Strategy`` (TensorFlow
  only): its variables, and those of every optimizer that trains them, must then be created
  in the strategy's scope, and Keras 3 cannot train under every strategy.
* Gradients with respect to inputs (Grad-CAM): ``tf.GradientTape`` or ``jax.grad``.
* Which process of a multi-process run this is (``keras.distribution`` on JAX), so that
  files and printed decisions are written once, by process 0, and which share of every
  global training batch it feeds (:func:`data_shard`, :func:`local_batches`).

A backend not named here gets a clear error from what it cannot do, never a wrong answer.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from transferkit.errors import UnsupportedBackendError, UnsupportedStrategyError

__all__ = [
    "check_strategy_can_train",
    "data_shard",
    "distribute_from_environment",
    "gather_from_processes",
    "gradients",
    "is_process_zero",
    "local_batches",
    "name",
    "process_count",
    "process_index",
    "scope",
]

_TENSORFLOW = "tensorflow"
_JAX = "jax"


def name() -> str:
    """The Keras backend in use (``keras.backend.backend()``): ``"tensorflow"``, ``"jax"``..."""
    return str(keras.backend.backend())


def scope(strategy: tf.distribute.Strategy | None) -> contextlib.AbstractContextManager[Any]:
    """The strategy's scope, or a context that does nothing when there is no strategy.

    Raises:
        UnsupportedStrategyError: a strategy is given while the backend is not TensorFlow.
    """
    if strategy is None:
        return contextlib.nullcontext()
    if name() != _TENSORFLOW:
        msg = (
            f"strategy= takes a tf.distribute.Strategy, which only the TensorFlow backend can "
            f"use; this process runs Keras on {name()!r}. Leave strategy=None and distribute "
            "the Keras way: keras.distribution.set_distribution("
            "keras.distribution.DataParallel()) before building the classifier (see "
            "docs/distributed.rst), or set KERAS_BACKEND=tensorflow. "
            f"Received: strategy={type(strategy).__name__}, backend={name()!r}"
        )
        raise UnsupportedStrategyError(msg)
    scoped: contextlib.AbstractContextManager[Any] = strategy.scope()
    return scoped


def gradients(
    function: Callable[..., tuple[Any, Any]], inputs: Sequence[Any]
) -> tuple[list[Any], Any]:
    """The gradients of a scalar function with respect to its inputs, on this backend.

    Args:
        function: takes the inputs as positional arguments and returns ``(value, aux)``:
            a scalar to differentiate and anything else to hand back unchanged.
        inputs: the tensors (or arrays) to differentiate with respect to.

    Returns:
        ``(gradients, aux)``: one gradient per input, shaped like it, and ``function``'s aux.

    Raises:
        UnsupportedBackendError: the backend is neither TensorFlow nor JAX.
    """
    if name() == _TENSORFLOW:
        tensors = [tf.convert_to_tensor(x) for x in inputs]
        with tf.GradientTape() as tape:
            for tensor in tensors:
                tape.watch(tensor)
            value, aux = function(*tensors)
        return list(tape.gradient(value, tensors)), aux
    if name() == _JAX:
        import jax  # installed wherever Keras runs on JAX

        grads, aux = jax.grad(lambda args: function(*args), has_aux=True)(list(inputs))
        return list(grads), aux
    msg = (
        "Gradients with respect to inputs (Grad-CAM) are implemented for the TensorFlow and "
        f"JAX backends only; set KERAS_BACKEND=tensorflow or jax. Received: backend={name()!r}"
    )
    raise UnsupportedBackendError(msg)


def process_index() -> int:
    """This process's index in a multi-process ``keras.distribution`` run (0 when alone).

    On JAX it is ``jax.process_index()``. On TensorFlow it is 0: multi-worker training is
    refused there (see :func:`check_strategy_can_train`).
    """
    if name() == _JAX:
        import jax

        return int(jax.process_index())
    return 0


def process_count() -> int:
    """How many processes the run has (``jax.process_count()`` on JAX; 1 elsewhere)."""
    if name() == _JAX:
        import jax

        return int(jax.process_count())
    return 1


def is_process_zero() -> bool:
    """Whether this process writes files and prints decisions (it is process 0)."""
    return process_index() == 0


def data_shard() -> tuple[int, int] | None:
    """``(process index, process count)`` when this process feeds its share of every batch.

    That is a ``keras.distribution`` distribution over several processes (JAX). transferkit
    then cuts every global training batch itself, before the images are read, and feeds
    Keras this process's share (see :func:`local_batches`); evaluation and prediction run
    on every process over all the data. None in a single process.

    Raises:
        UnsupportedStrategyError: the distribution spans processes but is not data-parallel.
    """
    if name() != _JAX or process_count() == 1:
        return None
    distribution = keras.distribution.distribution()
    if distribution is None:
        return None
    if not isinstance(distribution, keras.distribution.DataParallel):
        msg = (
            "transferkit trains across processes data-parallel only: every process holds the "
            "whole model and reads its share of each batch. Use "
            "keras.distribution.set_distribution(keras.distribution.DataParallel()). "
            f"Received: distribution={type(distribution).__name__} over "
            f"{process_count()} processes"
        )
        raise UnsupportedStrategyError(msg)
    return process_index(), process_count()


def gather_from_processes(array: np.ndarray) -> np.ndarray:
    """Every process's ``array`` (the same shape on each), stacked in process order (JAX)."""
    from jax.experimental import multihost_utils

    return np.asarray(multihost_utils.process_allgather(array, tiled=False))


@contextlib.contextmanager
def local_batches() -> Iterator[None]:
    """Keras' training and evaluation loops take each process's batches as they come.

    Keras' ``DataParallel`` would otherwise cut every batch again (``auto_shard_dataset``):
    training batches arrive already cut (:func:`data_shard`), and evaluation batches are
    the same whole batches on every process, so that every metric is that of the whole data
    (each row counted once per process changes no mean) and partial last batches need no
    padding. The user's setting comes back on exit.
    """
    if data_shard() is None:
        yield
        return
    distribution = keras.distribution.distribution()
    before = distribution.auto_shard_dataset
    distribution.auto_shard_dataset = False
    try:
        yield
    finally:
        distribution.auto_shard_dataset = before


#: What ``keras.distribution.initialize()`` reads to join a multi-process run.
DISTRIBUTION_VARIABLES = (
    "KERAS_DISTRIBUTION_JOB_ADDRESSES",
    "KERAS_DISTRIBUTION_NUM_PROCESSES",
    "KERAS_DISTRIBUTION_PROCESS_ID",
)


def distribute_from_environment() -> bool:
    """Joins the run the ``KERAS_DISTRIBUTION_*`` variables describe, data-parallel.

    What a script does by hand: ``keras.distribution.initialize()`` then
    ``set_distribution(DataParallel())``. CPU collectives go through gloo unless
    ``JAX_CPU_COLLECTIVES_IMPLEMENTATION`` says otherwise (GPUs use their own).

    Returns:
        Whether the variables were set (and so the process joined a run).

    Raises:
        UnsupportedBackendError: the variables are set but Keras does not run on JAX, or
            some of them are missing.
    """
    given = [variable for variable in DISTRIBUTION_VARIABLES if os.environ.get(variable)]
    if not given:
        return False
    missing = sorted(set(DISTRIBUTION_VARIABLES) - set(given))
    if name() != _JAX or missing:
        msg = (
            "The KERAS_DISTRIBUTION_* variables start a multi-process run, which needs "
            f"KERAS_BACKEND=jax and all of {', '.join(DISTRIBUTION_VARIABLES)}. "
            f"Received: KERAS_BACKEND={name()!r}, missing={missing}"
        )
        raise UnsupportedBackendError(msg)
    import jax

    if "JAX_CPU_COLLECTIVES_IMPLEMENTATION" not in os.environ:
        jax.config.update("jax_cpu_collectives_implementation", "gloo")  # type: ignore[no-untyped-call]
    keras.distribution.initialize()
    keras.distribution.set_distribution(keras.distribution.DataParallel())
    return True


@contextlib.contextmanager
def written_by_process_zero(folder: Path) -> Iterator[Path]:
    """Where this process writes a file that process 0 alone keeps: ``folder``, or scratch.

    Writing a model reads its variables, which in a multi-process JAX run the processes do
    together, so every process must write; the others write into a private folder that is
    deleted on exit.
    """
    if is_process_zero():
        yield folder
        return
    scratch = Path(tempfile.mkdtemp(prefix="transferkit-"))
    try:
        yield scratch
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


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


def require_tensorflow(what: str) -> None:
    """Raises unless Keras runs on TensorFlow: for what only TensorFlow can write.

    Raises:
        UnsupportedBackendError: the backend is another one.
    """
    backend = keras.backend.backend()
    if backend != "tensorflow":
        msg = (
            f"{what} needs Keras' TensorFlow backend: it traces the model into a TensorFlow "
            "graph. Save the classifier (clf.save), load it in a process started with "
            "KERAS_BACKEND=tensorflow and export it there; .keras files load on every "
            f"backend. Received: KERAS_BACKEND={backend!r}"
        )
        raise UnsupportedBackendError(msg)
