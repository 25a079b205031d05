"""Turning what users pass (datasets, arrays, tensors) into batched ``tf.data`` pipelines.

Every check here runs before any training or prediction starts, so bad input fails fast with
a message that names what was expected and what was received.
"""

from __future__ import annotations

import os
import warnings
from typing import Any, Union

import numpy as np
import tensorflow as tf

from transferkit.data import sharding
from transferkit.data.folders import from_files, list_images
from transferkit.errors import DataError, ImageShapeError, TransferkitWarning

__all__ = [
    "Images",
    "LabeledData",
    "TrainingData",
    "as_image_input",
    "as_labeled_dataset",
    "as_training_data",
    "check_multi_hot",
    "epoch_order",
]

#: Labeled data: a ``tf.data.Dataset`` of ``(images, labels)`` batches, an ``(x, y)`` pair,
#: or the path of a folder of class subfolders.
LabeledData = Union[tf.data.Dataset, tuple[Any, Any], str, "os.PathLike[str]"]
#: Images: a numpy array or tensor (one image or a batch), a dataset of images, or the path
#: of an image file or a folder of them.
Images = Union[np.ndarray, tf.Tensor, tf.data.Dataset, str, "os.PathLike[str]"]


def _check_image_shape(shape: tuple[int | None, ...], image_size: tuple[int, int]) -> None:
    height, width = image_size
    if len(shape) != 4:
        msg = (
            "Images must be a batch of shape (batch, height, width, 3). "
            f"Received: images of shape {shape}"
        )
        raise ImageShapeError(msg)
    if shape[3] is not None and shape[3] != 3:
        msg = (
            f"Images must have 3 (RGB) channels; convert grayscale or RGBA images to RGB first. "
            f"Received: images of shape {shape}"
        )
        raise ImageShapeError(msg)
    got = shape[1:3]
    if None not in got and tuple(got) != (height, width):
        msg = (
            f"Images are {got[0]}x{got[1]} but this classifier was built for {height}x{width}. "
            f"Resize them (for instance with keras.layers.Resizing({height}, {width})) or "
            f"build the classifier with image_size=({got[0]}, {got[1]}). "
            f"Received: images of shape {shape}, expected (batch, {height}, {width}, 3)"
        )
        raise ImageShapeError(msg)


def _warn_if_scaled(images: np.ndarray) -> None:
    # A classic mistake: images already divided by 255. The model wants raw 0-255 pixels.
    # All-black images (max 0) are legitimate and say nothing about the scale.
    if np.issubdtype(images.dtype, np.floating) and images.size and 0 < np.max(images) <= 1.0:
        warnings.warn(
            "Images look scaled to [0, 1], but transferkit models take raw pixels in 0-255 and "
            "apply the backbone's preprocessing themselves. Pass the unscaled images.",
            TransferkitWarning,
            stacklevel=4,
        )


def _array_images(images: Any, image_size: tuple[int, int]) -> np.ndarray:
    array = np.asarray(images)
    if array.ndim == 3:
        array = array[np.newaxis]
    if not (np.issubdtype(array.dtype, np.number) or array.dtype == np.bool_):
        msg = f"Images must be numeric pixel values. Received: dtype {array.dtype}"
        raise DataError(msg)
    _check_image_shape(array.shape, image_size)
    _warn_if_scaled(array)
    return array


def _array_labels(labels: Any, count: int, num_classes: int) -> np.ndarray:
    array = np.asarray(labels)
    if array.ndim == 2 and array.shape[1] == 1:
        array = array[:, 0]
    if array.ndim != 1 or array.shape[0] != count:
        msg = (
            f"Labels must be a 1D array of {count} integer class indices, one per image. "
            f"Received: labels of shape {array.shape}"
        )
        raise DataError(msg)
    if not np.issubdtype(array.dtype, np.number) or not np.all(np.equal(np.mod(array, 1), 0)):
        msg = (
            "Labels must be integer class indices (not one-hot, not names). "
            f"Received: labels of dtype {array.dtype}"
        )
        raise DataError(msg)
    if count and (array.min() < 0 or array.max() >= num_classes):
        msg = (
            f"Labels must lie in [0, {num_classes - 1}] for {num_classes} classes. "
            f"Received: labels from {array.min()} to {array.max()}"
        )
        raise DataError(msg)
    return array.astype(np.int32)


def _check_target_kind(spec: tf.TensorSpec, num_classes: int, multi_label: bool, name: str) -> None:
    # Multi-hot rows (batch, num_classes) for a multi-label classifier, class indices otherwise.
    rows = spec.shape.rank == 2 and spec.shape[-1] == num_classes
    if multi_label and not rows:
        msg = (
            f"A multi-label classifier needs multi-hot targets: rows of {num_classes} zeros "
            "and ones (transferkit.data.folders.from_csv makes them). "
            f"Received: {name} with targets of shape {spec.shape}"
        )
        raise DataError(msg)
    if not multi_label and rows and spec.dtype.is_floating:
        msg = (
            f"{name} has rows of {num_classes} float targets (multi-hot or one-hot), but this "
            "classifier is single-label: build it with multi_label=True for multi-hot "
            "targets, or pass class indices (the argmax of one-hot rows). "
            f"Received: {name} with targets of shape {spec.shape}"
        )
        raise DataError(msg)


def _dataset_images_spec(dataset: tf.data.Dataset) -> tf.TensorSpec:
    spec = dataset.element_spec
    return spec[0] if isinstance(spec, tuple) else spec


def epoch_order(count: int, seed: int, epoch: tf.Tensor) -> tf.Tensor:
    """The order of ``count`` rows in global epoch ``epoch``: a shuffle by ``(seed, epoch)``.

    Stateless, so the order changes from epoch to epoch, is the same in two runs with the
    same seed, and a resumed run's epoch ``e`` sees the order an uninterrupted one did. (A
    shuffle op under a global seed depends on how many iterations its dataset object made.)
    """
    seed_pair = tf.stack([tf.constant(seed, tf.int64), tf.cast(epoch, tf.int64)])
    return tf.random.experimental.stateless_shuffle(tf.range(count, dtype=tf.int64), seed_pair)


class TrainingData:
    """Training data, and the order its epochs come in.

    Arrays are reshuffled every epoch by :func:`epoch_order`; a dataset keeps the order it
    has (each epoch is one pass over it, however it orders itself). In a multi-process run,
    each process trains on its share of every global batch (:mod:`~transferkit.data.sharding`).

    Args:
        data: a batched, prefetched dataset of ``(images, labels)``, or validated arrays.
        batch_size: the batch size for arrays.
    """

    def __init__(
        self, data: tf.data.Dataset | tuple[np.ndarray, np.ndarray], batch_size: int
    ) -> None:
        self._dataset = data if isinstance(data, tf.data.Dataset) else None
        self._arrays = None
        if not isinstance(data, tf.data.Dataset):
            # One tensor copy of the arrays, read by both pipelines below.
            self._arrays = (tf.convert_to_tensor(data[0]), tf.convert_to_tensor(data[1]))
        self.batch_size = batch_size

    def in_order(self) -> tf.data.Dataset:
        """One pass over the data: arrays in their order, a dataset as it comes."""
        if self._arrays is None:
            return self._dataset
        count = int(self._arrays[1].shape[0])
        return self._gathered(tf.data.Dataset.range(count).batch(self.batch_size))

    def epochs(
        self, *, seed: int, first_epoch: int, epochs: int
    ) -> tuple[tf.data.Dataset, int | None]:
        """The dataset to train ``epochs`` epochs from global epoch ``first_epoch`` on.

        Returns:
            The dataset and the ``steps_per_epoch`` to give ``fit`` (None for a dataset,
            which is iterated once per epoch). Arrays come as one dataset holding every
            epoch, shuffled by ``(seed, epoch)``, which Keras reads on across epochs when
            it is given ``steps_per_epoch``.
        """
        if self._arrays is None:
            return sharding.share_of_batches(self._dataset, self.batch_size), None
        count, batch_size = int(self._arrays[1].shape[0]), self.batch_size
        steps = sharding.steps_per_epoch(count, batch_size)  # checks the batch size first
        batch_rows = sharding.row_batcher(batch_size)

        def batches(epoch: tf.Tensor) -> tf.data.Dataset:
            return batch_rows(tf.data.Dataset.from_tensor_slices(epoch_order(count, seed, epoch)))

        indices = tf.data.Dataset.range(first_epoch, first_epoch + epochs).flat_map(batches)
        return self._gathered(indices), steps

    def _gathered(self, indices: tf.data.Dataset) -> tf.data.Dataset:
        assert self._arrays is not None
        images, labels = self._arrays
        batches = indices.map(lambda rows: (tf.gather(images, rows), tf.gather(labels, rows)))
        return batches.prefetch(tf.data.AUTOTUNE)


def as_training_data(
    data: tf.data.Dataset | tuple[Any, Any],
    *,
    image_size: tuple[int, int],
    num_classes: int,
    batch_size: int,
    name: str = "data",
    multi_label: bool = False,
) -> TrainingData:
    """Validates labeled training data (see :func:`as_labeled_dataset`).

    Raises:
        DataError: the data is none of the accepted kinds, or labels are malformed.
        ImageShapeError: images have the wrong shape.
    """
    if isinstance(data, tf.data.Dataset):
        dataset = as_labeled_dataset(
            data,
            image_size=image_size,
            num_classes=num_classes,
            batch_size=batch_size,
            name=name,
            multi_label=multi_label,
        )
        return TrainingData(dataset, batch_size)
    arrays = _labeled_arrays(data, image_size, num_classes, name, multi_label)
    return TrainingData(arrays, batch_size)


def _labeled_arrays(
    data: object, image_size: tuple[int, int], num_classes: int, name: str, multi_label: bool
) -> tuple[np.ndarray, np.ndarray]:
    if isinstance(data, (tuple, list)) and len(data) == 2:
        images = _array_images(data[0], image_size)
        if multi_label:
            check_multi_hot(np.asarray(data[1]), num_classes, name)
            labels = np.asarray(data[1], np.float32)
            if len(labels) != len(images):
                msg = f"{name} has {len(images)} images but {len(labels)} rows of targets."
                raise DataError(msg)
        else:
            labels = _array_labels(data[1], len(images), num_classes)
        if len(images) == 0:
            msg = f"{name} holds no images. Received: {name} with 0 images"
            raise DataError(msg)
        return images, labels
    msg = (
        f"{name} must be a tf.data.Dataset of (images, labels) batches, an (x, y) pair of "
        f"arrays or the path of a folder of class subfolders. Received: {type(data).__name__}"
    )
    raise DataError(msg)


def as_labeled_dataset(
    data: LabeledData,
    *,
    image_size: tuple[int, int],
    num_classes: int,
    batch_size: int,
    shuffle: bool = False,
    name: str = "data",
    multi_label: bool = False,
) -> tf.data.Dataset:
    """Validates labeled data and returns a batched, prefetched dataset of (images, labels).

    Args:
        data: a dataset of ``(images, labels)`` (batched or not) or an ``(x, y)`` pair.
        image_size: the ``(height, width)`` the model takes.
        num_classes: the number of classes, to check array labels.
        batch_size: the batch size for arrays and unbatched datasets.
        shuffle: reshuffle arrays every iteration, in no reproducible order (datasets keep
            the order they have); training stages use :class:`TrainingData` instead.
        name: what to call the argument in messages.
        multi_label: whether labels are multi-hot rows of ``num_classes`` (float32).

    Raises:
        DataError: the data is none of the accepted kinds, or labels are malformed.
        ImageShapeError: images have the wrong shape.
    """
    if isinstance(data, tf.data.Dataset):
        spec = data.element_spec
        if not isinstance(spec, tuple) or len(spec) not in (2, 3):
            msg = (
                f"{name} must yield (images, labels) pairs. "
                f"Received: a dataset whose elements are {spec}"
            )
            raise DataError(msg)
        if len(spec[0].shape) == 3:
            data = data.batch(batch_size)
        _check_target_kind(data.element_spec[1], num_classes, multi_label, name)
        _check_image_shape(tuple(_dataset_images_spec(data).shape), image_size)
        return _keep_file_paths(data, data.prefetch(tf.data.AUTOTUNE))
    images, labels = _labeled_arrays(data, image_size, num_classes, name, multi_label)
    dataset = tf.data.Dataset.from_tensor_slices((images, labels))
    if shuffle:
        dataset = dataset.shuffle(len(images), reshuffle_each_iteration=True)
    return dataset.batch(batch_size).prefetch(tf.data.AUTOTUNE)


def _keep_file_paths(source: Any, dataset: tf.data.Dataset) -> tf.data.Dataset:
    # A new dataset object drops the attribute; naming_undecodable_files reads it.
    files = getattr(source, "file_paths", None)
    if files is not None:
        dataset.file_paths = files
    return dataset


def as_image_input(
    images: Images, *, image_size: tuple[int, int], batch_size: int
) -> np.ndarray | tf.data.Dataset:
    """Validates images for prediction: an array batch, or a dataset of image batches.

    Datasets of ``(images, labels)`` are accepted; their labels are dropped. A path (an
    image file, or a folder read recursively in sorted order) is read in batches as it is
    needed (:func:`transferkit.data.from_files`), so a folder never sits in memory at once.

    Raises:
        ImageShapeError: images have the wrong shape.
        DataError: images are not pixel values.
    """
    if isinstance(images, tf.data.Dataset):
        spec = images.element_spec
        if isinstance(spec, tuple):
            images = images.map(lambda x, *_: x)
        if len(_dataset_images_spec(images).shape) == 3:
            images = images.batch(batch_size)
        _check_image_shape(tuple(_dataset_images_spec(images).shape), image_size)
        return _keep_file_paths(images, images.prefetch(tf.data.AUTOTUNE))
    if isinstance(images, (str, os.PathLike)):
        return from_files(list_images(images), image_size, batch_size)
    if isinstance(images, bytes) or images is None:
        msg = (
            "images must be a numpy array, a tensor, a tf.data.Dataset of images or the "
            "path of an image file or folder. "
            f"Received: {type(images).__name__}"
        )
        raise DataError(msg)
    return _array_images(images, image_size)


def check_multi_hot(targets: np.ndarray, num_classes: int, name: str) -> None:
    """Checks that ``targets`` are multi-hot rows of ``num_classes`` zeros and ones."""
    array = np.asarray(targets)
    if array.ndim != 2 or array.shape[1] != num_classes or not np.isin(array, (0, 1)).all():
        msg = (
            f"A multi-label classifier needs multi-hot targets: rows of {num_classes} zeros "
            "and ones (transferkit.data.from_csv makes them). "
            f"Received: {name} targets of shape {array.shape}"
        )
        raise DataError(msg)
