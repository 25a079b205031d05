"""``fit()``: the whole job in one call, its decisions recorded, resumable from checkpoints.

Tiny real models (the ``tiny_bn`` backbone of ``conftest.py``) on images whose class is told
by a colour channel. Resuming compares a run interrupted in fine-tuning (a callback raises,
as a crash would) and run again with the same ``checkpoint_dir`` against a run never
interrupted: with data in a fixed order and no dropout, both must end with the same weights.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import keras
import numpy as np
import pytest
import tensorflow as tf

import transferkit as tk
from conftest import TINY_BACKBONE, separable_images
from transferkit import _fit
from transferkit.errors import DataError, InvalidArgumentError


class Interrupted(Exception):
    """Stands for a crash in the middle of training."""


class InterruptAt(keras.callbacks.Callback):
    """Raises as the given global epoch begins."""

    def __init__(self, epoch: int) -> None:
        super().__init__()
        self.epoch = epoch

    def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        if epoch == self.epoch:
            raise Interrupted(epoch)


def build(num_classes: int = 3) -> tk.TransferClassifier:
    keras.utils.set_random_seed(7)
    return tk.TransferClassifier(
        TINY_BACKBONE, num_classes=num_classes, weights=None, augmentation=None, dropout=0.0
    )


def batches(count: int, seed: int) -> tf.data.Dataset:
    """Batches in a fixed order (no reshuffling), so reruns see the same data."""
    images, labels = separable_images(count, num_classes=3, seed=seed)
    return tf.data.Dataset.from_tensor_slices((images, labels)).batch(16)


# ---------------------------------------------------------------------- rules


@pytest.mark.parametrize(
    ("steps_per_epoch", "expected"), [(1, 100), (13, 31), (64, 7), (1000, 3)]
)
def test_head_epochs_make_about_the_step_budget(steps_per_epoch: int, expected: int) -> None:
    assert _fit.stage_epochs(_fit.HEAD_STEPS, steps_per_epoch, _fit.MAX_HEAD_EPOCHS) == expected


def test_validation_split_holds_out_the_fraction_of_every_class() -> None:
    images, labels = separable_images(60, num_classes=3, seed=1)
    (train_x, train_y), (val_x, val_y) = _fit.split_validation(images, labels, 0.2, seed=3)
    assert np.bincount(val_y).tolist() == [4, 4, 4]
    assert len(train_y) + len(val_y) == 60
    seen = {image.tobytes() for image in train_x}
    assert not any(image.tobytes() in seen for image in val_x)


def test_validation_split_is_the_same_for_the_same_seed() -> None:
    images, labels = separable_images(30, num_classes=3, seed=1)
    first = _fit.split_validation(images, labels, 0.2, seed=3)
    again = _fit.split_validation(images, labels, 0.2, seed=3)
    other = _fit.split_validation(images, labels, 0.2, seed=4)
    np.testing.assert_array_equal(first[1][0], again[1][0])
    assert not np.array_equal(first[1][0], other[1][0])


def test_validation_split_refuses_a_class_of_one_image() -> None:
    images, labels = separable_images(5, num_classes=3, seed=1)
    labels = np.array([0, 0, 1, 1, 2])
    with pytest.raises(DataError, match="Class 2 has 1 image"):
        _fit.split_validation(images, labels, 0.2, seed=0)
