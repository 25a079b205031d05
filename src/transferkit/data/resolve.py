"""One path from what a user passes to labeled batches: training, evaluation, interpretation.

Every public call that takes labeled data (``fit_head``, ``fine_tune``, ``fit``,
``find_learning_rate``, ``evaluate``, ``interpret``, ``tune_thresholds``) resolves it here,
so a folder, a CSV table's dataset, an ``(x, y)`` pair or a ``tf.data.Dataset`` meets the same
checks and the same errors everywhere. Data that carries class names (folders, tables, Keras'
datasets) must have the classifier's, in the same order; a classifier without names is told
the data's (the classifier decides to adopt them).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

import tensorflow as tf

from transferkit.data import inputs as _inputs
from transferkit.data.folders import from_directory
from transferkit.errors import ClassNamesMismatchError, DataError

__all__ = ["Expected", "Labeled", "labeled", "training"]


@dataclass(frozen=True)
class Expected:
    """What the model takes: image size, classes and the kind of labels."""

    image_size: tuple[int, int]
    num_classes: int
    class_names: tuple[str, ...] | None
    multi_label: bool

    def named(self, names: Sequence[str] | None) -> Expected:
        """The same, with class names the data gave (when there were none)."""
        if names is None or self.class_names is not None:
            return self
        return Expected(self.image_size, self.num_classes, tuple(names), self.multi_label)


@dataclass(frozen=True)
class Labeled:
    """Labeled data as ``(images, labels)`` batches, and what it says about itself.

    Attributes:
        dataset: batched, prefetched ``(images, labels)``.
        class_names: the class names the data carries (checked against the classifier's),
            or None.
        file_paths: the image files in the order of the batches, when the data knows them.
    """

    dataset: tf.data.Dataset
    class_names: tuple[str, ...] | None
    file_paths: list[str] | None


def labeled(
    data: _inputs.LabeledData,
    expected: Expected,
    *,
    batch_size: int,
    name: str = "data",
    shuffle: bool = False,
    in_order: bool = False,
) -> Labeled:
    """Any accepted kind of labeled data as checked ``(images, labels)`` batches.

    Args:
        data: a folder path, an ``(x, y)`` pair or a ``tf.data.Dataset``.
        expected: what the model takes.
        batch_size: the batch size for arrays and folders.
        name: what to call the argument in messages.
        shuffle: reshuffle arrays and folders every iteration (no reproducible order).
        in_order: read in a fixed order that file paths can follow: a folder class by
            class and file by file, a CSV table's training set in table order.

    Raises:
        DataError: the data is none of the accepted kinds, or is malformed.
        ClassNamesMismatchError: the data's class names are not the classifier's.
        ImageShapeError: images have the wrong shape.
    """
    if isinstance(data, (str, os.PathLike)):
        data = _folder(data, expected, batch_size, name, shuffle=shuffle and not in_order)
    elif in_order:
        data = getattr(data, "in_table_order", data)  # a table's training set reshuffles
    names = _class_names(data, expected, name)
    dataset = _inputs.as_labeled_dataset(
        data,
        image_size=expected.image_size,
        num_classes=expected.num_classes,
        batch_size=batch_size,
        shuffle=shuffle and not in_order,
        name=name,
        multi_label=expected.multi_label,
    )
    paths = getattr(dataset, "file_paths", None)
    return Labeled(dataset, names, None if paths is None else list(paths))


def training(
    data: _inputs.LabeledData, expected: Expected, *, batch_size: int
) -> tuple[_inputs.TrainingData, tuple[str, ...] | None]:
    """Training data (arrays reshuffled every epoch, datasets as they come), and its names.

    Raises:
        DataError, ClassNamesMismatchError, ImageShapeError: as :func:`labeled` does.
    """
    if isinstance(data, (str, os.PathLike)):
        data = _folder(data, expected, batch_size, "data", shuffle=True)
    names = _class_names(data, expected, "data")
    train = _inputs.as_training_data(
        data,
        image_size=expected.image_size,
        num_classes=expected.num_classes,
        batch_size=batch_size,
        multi_label=expected.multi_label,
    )
    return train, names


def _folder(
    path: str | os.PathLike[str], expected: Expected, batch_size: int, name: str, *, shuffle: bool
) -> tf.data.Dataset:
    names = None if expected.class_names is None else list(expected.class_names)
    folder = from_directory(
        path, expected.image_size, batch_size, seed=None, class_names=names, shuffle=shuffle
    )
    if folder.validation is not None or folder.test is not None:
        msg = (
            f"{name} is a folder of train/ and validation/ (or test/) folders; pass one "
            f"of them, such as {os.path.join(path, 'train')!r} or "
            f"{os.path.join(path, 'validation')!r}, or load them all with "
            f"transferkit.data.from_directory(). Received: {name}={os.fspath(path)!r}"
        )
        raise DataError(msg)
    return folder.train


def _class_names(data: object, expected: Expected, name: str) -> tuple[str, ...] | None:
    # Labels are indices into the class names, so data that names its classes must name
    # the classifier's, in the same order.
    found = getattr(data, "class_names", None)
    if found is None:
        return None
    names = tuple(str(n) for n in found)
    if expected.class_names is None and len(names) == expected.num_classes:
        return names
    if names != expected.class_names:
        have = (
            list(expected.class_names)
            if expected.class_names
            else f"{expected.num_classes} classes"
        )
        msg = (
            f"{name} has the classes {list(names)} but this classifier has {have}; labels "
            "are indices into the class names, so they must be the same names in the same "
            "order (load folders with class_names=clf.class_names). "
            f"Received: {name} with class_names={list(names)}"
        )
        raise ClassNamesMismatchError(msg)
    return names
