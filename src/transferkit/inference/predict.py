"""Predicting probabilities: a compiled call per batch for small inputs, streaming for large.

A few images (an array, or a few files) go straight through the model's compiled predict
step, batch by batch (``model.predict_on_batch``, traced once and reused across calls): a
single image then costs what the model costs, not the set-up of a dataset and of Keras'
predict loop. Larger inputs stream through ``model.predict`` with its progress bar, so a
folder never sits in memory at once.
"""

from __future__ import annotations

import os

import keras
import numpy as np
import tensorflow as tf

from transferkit import _backend
from transferkit.data import from_files, list_images, load_images
from transferkit.data import inputs as _inputs
from transferkit.data.image_files import undecodable_files_named
from transferkit.inference import tta as _tta
from transferkit.model.graph import Probabilities

__all__ = ["SMALL_BATCHES", "probabilities"]

#: Inputs of at most this many batches take the compiled per-batch path.
SMALL_BATCHES = 8


def probabilities(
    model: keras.Model,
    head: Probabilities,
    images: _inputs.Images,
    *,
    image_size: tuple[int, int],
    batch_size: int,
    verbose: int | str,
    views: int,
    distributed: bool,
) -> np.ndarray:
    """Per-class probabilities (float32) of raw-pixel images; see ``TransferClassifier.predict``.

    Args:
        model: the classifier's model (logits out).
        head: the layer that turns its logits into probabilities.
        images: an array, a tensor, a dataset of images, or an image file or folder.
        image_size: the ``(height, width)`` the model takes.
        batch_size: the batch size.
        verbose: Keras' progress output, for large inputs.
        views: test-time augmentation views to average (1: none).
        distributed: whether the model lives under a ``tf.distribute.Strategy``.
    """
    inputs = _read_files(images, image_size, batch_size)
    if inputs is None:
        inputs = _inputs.as_image_input(images, image_size=image_size, batch_size=batch_size)
    with undecodable_files_named(inputs):
        if views > 1:
            return _tta.predict_probabilities(
                model,
                inputs,
                batch_size=batch_size,
                count=views,
                head=head,
                distributed=distributed,
            )
        # Batch by batch: small inputs skip predict()'s setup, and in a multi-process run
        # every process predicts all of its input (predict() cannot return what spans them).
        local = _is_small(inputs, batch_size) or _backend.data_shard() is not None
        if local and not distributed:
            parts = [
                model.predict_on_batch(np.asarray(batch))
                for batch in _tta.image_batches(inputs, batch_size)
            ]
            logits = np.concatenate(parts) if parts else model.predict(inputs, verbose=0)
        else:
            logits = model.predict(inputs, batch_size=batch_size, verbose=verbose)
    return np.asarray(keras.ops.convert_to_numpy(head(logits)), np.float32)


def _is_small(inputs: np.ndarray | tf.data.Dataset, batch_size: int) -> bool:
    return isinstance(inputs, np.ndarray) and len(inputs) <= SMALL_BATCHES * batch_size


def _read_files(
    images: _inputs.Images, image_size: tuple[int, int], batch_size: int
) -> np.ndarray | tf.data.Dataset | None:
    # A path is listed once: a few files are read at once into an array, a folder of many
    # streams instead (None: not a path).
    if not isinstance(images, (str, os.PathLike)):
        return None
    paths = list_images(images)
    if not paths or len(paths) > batch_size:
        return from_files(paths, image_size, batch_size)
    return load_images(paths, image_size)
