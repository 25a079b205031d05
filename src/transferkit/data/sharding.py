"""Each process's share of every global training batch, in a multi-process run.

Under a ``keras.distribution.DataParallel`` that spans processes (JAX), every process runs the
same script on the same data, and a global batch of ``batch_size`` rows is cut into as many
equal, consecutive slices as there are processes: process ``i`` trains on slice ``i`` (what
Keras' own sharding does, ``rebatch`` then ``shard``). Cutting the *row indices* before any
image is read means a process reads only its share. Every process must take the same number
of steps, so a last, partial global batch is dropped. In a single process nothing changes.
"""

from __future__ import annotations

from collections.abc import Callable

import tensorflow as tf

from transferkit import _backend
from transferkit.errors import DataError, InvalidArgumentError

__all__ = ["row_batcher", "share_of_batches", "steps_per_epoch"]


def _local_size(batch_size: int, processes: int) -> int:
    if batch_size % processes:
        msg = (
            f"batch_size is the global batch, cut into equal shares for the {processes} "
            f"processes of this run, so it must be a multiple of {processes}. "
            f"Received: batch_size={batch_size}"
        )
        raise InvalidArgumentError(msg)
    return batch_size // processes


def steps_per_epoch(count: int, batch_size: int) -> int:
    """Optimizer steps in one pass over ``count`` rows (whole global batches only, when cut).

    Raises:
        InvalidArgumentError: ``batch_size`` does not divide among the processes.
        DataError: there are fewer rows than one global batch in a multi-process run.
    """
    shard = _backend.data_shard()
    if shard is None:
        return -(-count // batch_size)
    _local_size(batch_size, shard[1])
    if count < batch_size:
        msg = (
            f"A multi-process run trains on whole global batches of batch_size rows, and "
            f"there are fewer rows than one. Lower batch_size or add data. "
            f"Received: {count} rows, batch_size={batch_size}, {shard[1]} processes"
        )
        raise DataError(msg)
    return count // batch_size


def row_batcher(batch_size: int) -> Callable[[tf.data.Dataset], tf.data.Dataset]:
    """Batches row indices: whole batches alone, this process's share of each when cut.

    Asked once, outside any ``tf.data`` function (autograph would rewrite the question).
    """
    shard = _backend.data_shard()
    if shard is None:
        return lambda rows: rows.batch(batch_size)
    index, processes = shard
    local = _local_size(batch_size, processes)

    def share(rows: tf.data.Dataset) -> tf.data.Dataset:
        global_batches = rows.batch(batch_size, drop_remainder=True)
        return global_batches.map(lambda batch: batch[index * local : (index + 1) * local])

    return share


def share_of_batches(dataset: tf.data.Dataset, batch_size: int) -> tf.data.Dataset:
    """A batched dataset's global batches of ``batch_size``, this process's share of each.

    For a dataset the user built (or a folder's): every process reads it whole, in the same
    order (seed its shuffle), and keeps its slice; arrays and cached features are cut by
    :func:`row_batcher` before they are read instead.
    """
    shard = _backend.data_shard()
    if shard is None:
        return dataset
    index, processes = shard
    local = _local_size(batch_size, processes)
    rows = dataset.unbatch().batch(batch_size, drop_remainder=True)
    return rows.map(lambda *parts: tuple(p[index * local : (index + 1) * local] for p in parts))
