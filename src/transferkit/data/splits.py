"""Holding validation images out of training data: stratified by class, or by label.

Single-label data keeps the share of every class; multi-hot data is split by iterative
stratification, which keeps every label in training.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from transferkit.errors import DataError

__all__ = ["as_arrays", "held_out_rows", "split_validation"]


def split_validation(
    images: np.ndarray, labels: np.ndarray, fraction: float, seed: int
) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """A stratified, seeded split: ``fraction`` of each class (at least one image) held out.

    Multi-hot labels are split by iterative stratification, which keeps every label in
    training (see :func:`held_out_rows`).

    Args:
        images: the images.
        labels: their integer labels, or multi-hot rows.
        fraction: the fraction of each class to hold out, in (0, 1).
        seed: the seed of the random choice.

    Returns:
        ``((train images, train labels), (validation images, validation labels))``; the
        training part in random order, the validation part in the original order.

    Raises:
        DataError: a class has fewer than two images, so none can be held out.
    """
    rng = np.random.default_rng(seed)
    if labels.ndim == 2:
        return _parts(images, labels, held_out_rows(labels, fraction, seed), rng)
    held: list[np.ndarray] = []
    for label in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == label))
        if len(members) < 2:
            msg = (
                f"Class {int(label)} has {len(members)} image, too few to hold one out for "
                "validation. Pass validation_data, or give every class at least 2 images. "
                f"Received: {len(members)} image of class {int(label)}"
            )
            raise DataError(msg)
        held.append(members[: max(1, round(fraction * len(members)))])
    return _parts(images, labels, np.sort(np.concatenate(held)), rng)


def _parts(
    images: np.ndarray, labels: np.ndarray, validation: np.ndarray, rng: np.random.Generator
) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    train = rng.permutation(np.setdiff1d(np.arange(len(labels)), validation))
    return (images[train], labels[train]), (images[validation], labels[validation])


def as_arrays(dataset: tf.data.Dataset) -> tuple[np.ndarray, np.ndarray]:
    """Every ``(images, labels)`` element of a dataset, batched or not, as two arrays."""
    images, labels = [], []
    for element in dataset.as_numpy_iterator():
        images.append(np.asarray(element[0]))
        labels.append(np.asarray(element[1]))
    if not images:
        msg = "data holds no images. Received: an empty dataset"
        raise DataError(msg)
    if images[0].ndim == 3:  # unbatched elements
        return np.stack(images), np.asarray(labels)
    return np.concatenate(images), np.concatenate(labels)


def held_out_rows(targets: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """The rows of multi-hot targets to hold out for validation, by iterative stratification.

    Sechidis, Tsoumakas and Vlahavas' iterative stratification (2011), for two folds: the
    rarest label left is dealt first, each of its images to the fold that still wants the
    most of that label (``fraction`` of it for validation), ties going to the fold with the
    most room left, then at random (seeded). Rows without labels fill the remaining room.
    Afterwards every label the data has is made to appear in training, moving one image
    back from validation where needed.

    Args:
        targets: multi-hot array ``(n, num_classes)``.
        fraction: the fraction to hold out, in (0, 1).
        seed: the seed of the random choices.

    Returns:
        The held-out row indices, sorted.

    Raises:
        DataError: no image can be held out without taking a label out of training.
    """
    truth = np.asarray(targets) > 0.5
    rng = np.random.default_rng(seed)
    count = len(truth)
    held = max(1, round(fraction * count))
    room = np.array([count - held, held], np.float64)  # fold 0 trains, fold 1 validates
    wanted = np.stack([truth.sum(axis=0) * (1 - fraction), truth.sum(axis=0) * fraction])
    fold = np.full(count, -1)

    def deal(row: int, label: int | None) -> None:
        want = wanted[:, label] if label is not None else room
        choice = int(np.argmax(want)) if want[0] != want[1] else None
        if choice is None:
            choice = int(np.argmax(room)) if room[0] != room[1] else int(rng.integers(2))
        fold[row] = choice
        wanted[choice] -= truth[row]
        room[choice] -= 1

    while (left := fold < 0).any():
        per_label = truth[left].sum(axis=0)
        if not per_label.any():  # only rows without labels are left
            for row in rng.permutation(np.flatnonzero(left)):
                deal(int(row), None)
            break
        label = int(np.argmin(np.where(per_label > 0, per_label, count + 1)))
        for row in rng.permutation(np.flatnonzero(left & truth[:, label])):
            deal(int(row), label)
    for column in np.flatnonzero(truth.any(axis=0)):
        if not (truth[:, column] & (fold == 0)).any():
            fold[rng.choice(np.flatnonzero(truth[:, column]))] = 0
    if not (fold == 1).any():
        # Hold out one image whose every label has another image in training.
        in_training = truth[fold == 0].sum(axis=0)
        spare = [r for r in range(count) if (in_training[truth[r]] > 1).all()]
        if not spare:
            msg = (
                f"{count} images are too few to hold any out for validation while keeping "
                "every label in training. Pass validation_data, or give every label at "
                f"least 2 images. Received: {count} images"
            )
            raise DataError(msg)
        fold[rng.choice(spare)] = 1
    return np.flatnonzero(fold == 1)
