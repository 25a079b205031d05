"""Test-time augmentation and streaming prediction in log-probabilities.

``tta`` names how many views of each image are predicted; their probabilities are averaged.
The views come in a fixed order, and ``tta=n`` takes the first ``n``:

1. the image itself;
2. its horizontal mirror image (``tta=True`` is these two);
3. the central crop of 87.5% of the height and width, resized back to the input size;
4. that crop mirrored;
5. to 12. the four corner crops of the same size (top left, top right, bottom left,
   bottom right), each followed by its mirror image.

Views 3 to 12 are the classic ten-crop evaluation (five crops and their mirrors), at the
87.5% scale that ImageNet evaluation crops 224 pixels out of 256. Every view is
deterministic, so predictions are reproducible.

Predictions are kept as float64 log-probabilities, computed from the logits by the
classifier's own :class:`~transferkit.model.graph.Probabilities` layer as training's losses
compute them (cross-entropy with ``from_logits=True``), so per-example losses match
``evaluate`` and survive probabilities that round to 1 in float32. A multi-label head's
classes are averaged one by one: each class's mean probability over the views.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from transferkit._validation import as_int
from transferkit.errors import InvalidArgumentError
from transferkit.model.graph import Probabilities

__all__ = [
    "MAX_VIEWS",
    "average_views",
    "image_batches",
    "predict_batch",
    "predict_probabilities",
    "probabilities",
    "view_count",
    "views",
]

#: The most views ``tta`` can ask for.
MAX_VIEWS = 12
_CROP_FRACTION = 0.875
# (top, left) of each crop as a fraction of the room left around it: center, then corners.
_CROP_ORIGINS = ((0.5, 0.5), (0.0, 0.0), (0.0, 1.0), (1.0, 0.0), (1.0, 1.0))


def view_count(tta: object) -> int:
    """The number of views ``tta`` asks for: False is 1, True is 2, an int is itself.

    Raises:
        InvalidArgumentError: ``tta`` is neither a bool nor an int from 1 to 12.
    """
    if isinstance(tta, bool):
        return 2 if tta else 1
    number = as_int(tta)
    if number is not None and 1 <= number <= MAX_VIEWS:
        return number
    msg = (
        "tta must be False (no augmentation), True (the image and its mirror image) or the "
        f"number of views to average, from 1 to {MAX_VIEWS}. Received: tta={tta!r}"
    )
    raise InvalidArgumentError(msg)


def views(images: Any, count: int) -> Any:
    """The first ``count`` views of each image, image by image.

    Args:
        images: raw pixels of shape ``(batch, height, width, 3)``.
        count: views per image, 1 to :data:`MAX_VIEWS`.

    Returns:
        A tensor of shape ``(batch * count, height, width, 3)``: the views of the first
        image, then those of the second, and so on.
    """
    images = keras.ops.cast(images, "float32")
    if count == 1:
        return images
    height, width = int(images.shape[1]), int(images.shape[2])
    crop_height = max(1, round(height * _CROP_FRACTION))
    crop_width = max(1, round(width * _CROP_FRACTION))
    bases = [images]
    for top, left in _CROP_ORIGINS:
        if len(bases) * 2 >= count:
            break
        row = round((height - crop_height) * top)
        column = round((width - crop_width) * left)
        crop = images[:, row : row + crop_height, column : column + crop_width, :]
        bases.append(keras.ops.image.resize(crop, (height, width), interpolation="bilinear"))
    stacked = []
    for base in bases:
        stacked.extend([base, keras.ops.flip(base, axis=2)])
    return keras.ops.reshape(
        keras.ops.stack(stacked[:count], axis=1), (-1, height, width, images.shape[3])
    )


def average_views(log_probs: np.ndarray, count: int) -> np.ndarray:
    """The log of the mean probability over each image's ``count`` consecutive views.

    Any trailing shape is averaged element by element: a multi-label head's
    ``(num_classes, 2)`` per view averages each class's yes and no probabilities.
    """
    if count == 1:
        return log_probs
    grouped = log_probs.reshape(-1, count, *log_probs.shape[1:])
    peak = grouped.max(axis=1, keepdims=True)
    mean = np.exp(grouped - peak).mean(axis=1, keepdims=True)
    return np.asarray((peak + np.log(mean))[:, 0])


def predict_batch(
    model: keras.Model,
    images: Any,
    *,
    count: int,
    head: Probabilities,
    distributed: bool = False,
) -> np.ndarray:
    """The log-probabilities of one batch of images, averaged over ``count`` views.

    Args:
        model: the classifier's Keras model (raw pixels in, logits out).
        images: raw pixels of shape ``(batch, height, width, 3)``.
        count: views per image.
        head: the classifier's :class:`~transferkit.model.graph.Probabilities` layer; its
            ``log_probabilities`` give the shape of the result.
        distributed: whether the model lives under a ``tf.distribute`` strategy; then the
            batch goes through ``model.predict``, which splits it across the replicas.
    """
    inputs = views(images, count)
    if distributed:
        logits = model.predict(inputs, batch_size=int(inputs.shape[0]), verbose=0)
    else:
        logits = model.predict_on_batch(inputs)
    log_probs = keras.ops.convert_to_numpy(head.log_probabilities(logits))
    return average_views(np.asarray(log_probs, np.float64), count)


def probabilities(log_probs: np.ndarray, head: Probabilities) -> np.ndarray:
    """What ``predict`` returns (float32) for log-probabilities from :func:`predict_batch`."""
    chosen = log_probs[..., 1] if head.multi_label else log_probs  # a class's "yes"
    return np.asarray(np.exp(chosen), dtype=np.float32)


def image_batches(data: tf.data.Dataset | np.ndarray, batch_size: int) -> Iterator[Any]:
    """The image batches of an array (sliced) or a dataset (labels dropped)."""
    if isinstance(data, tf.data.Dataset):
        for element in data:
            yield element[0] if isinstance(element, tuple) else element
        return
    for start in range(0, len(data), batch_size):
        yield data[start : start + batch_size]


def predict_probabilities(
    model: keras.Model,
    inputs: tf.data.Dataset | np.ndarray,
    *,
    batch_size: int,
    count: int,
    head: Probabilities,
    distributed: bool = False,
) -> np.ndarray:
    """Probabilities (float32) averaged over ``count`` views, read batch by batch."""
    parts = [
        predict_batch(model, batch, count=count, head=head, distributed=distributed)
        for batch in image_batches(inputs, batch_size)
    ]
    if not parts:
        columns = 2 if head.binary else int(model.output_shape[-1])
        return np.zeros((0, columns), np.float32)
    return probabilities(np.concatenate(parts), head)
