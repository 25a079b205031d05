"""Datasets from listed class folders, split into training, validation and test.

:class:`FolderLoader` builds the datasets ``keras.utils.image_dataset_from_directory`` builds
(same order of files, same seeded shuffles and splits, same decoding), from a listing that
:mod:`transferkit.data.folders` has already checked; it carries each file's EXIF orientation
into the decoding, which Keras' loader cannot. :func:`split_counts` checks a split before it
is made, for a clear message.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import tensorflow as tf

from transferkit.data.image_files import decode, show
from transferkit.errors import DataError

__all__ = ["FolderLoader", "ImageFile", "batched", "carve_test", "split_counts"]

# Keras' shuffle buffer for unbatched folder datasets; the same seed then gives the same order.
_SHUFFLE_BUFFER = 1024


class ImageFile(NamedTuple):
    """A listed image file: its path, its class index and its EXIF orientation."""

    path: str
    label: int
    orientation: int


def split_size(fraction: float, total: int, name: str, folder: Path) -> int:
    # Keras' rule (int(fraction * n) images held out), checked here for a clear message.
    held_out = int(fraction * total)
    if held_out == 0 or held_out == total:
        side = "none" if held_out == 0 else "all"
        msg = (
            f"{name}={fraction} of the {total} images in {show(folder)} holds out {side} "
            f"of them; each side of the split needs at least one image. "
            f"Received: {name}={fraction}"
        )
        raise DataError(msg)
    return held_out


def split_counts(
    folder_sizes: dict[str, int],
    validation_split: float | None,
    test_split: float | None,
    validation_source: Path,
) -> dict[str, int]:
    """How many images each split holds, checked before any split is made."""
    counts = dict(folder_sizes)
    if validation_split is not None:
        held_out = split_size(
            validation_split, counts["train"], "validation_split", validation_source
        )
        counts["train"] -= held_out
        counts["validation"] = held_out
    if test_split is not None:
        test_size = split_size(test_split, counts["validation"], "test_split", validation_source)
        counts["validation"] -= test_size
        counts["test"] = test_size
    return {split: counts[split] for split in ("train", "validation", "test") if split in counts}


class FolderLoader:
    """Makes one split's datasets as ``image_dataset_from_directory`` does, upright."""

    def __init__(self, size: tuple[int, int], seed: int) -> None:
        self._size = size
        self._seed = seed

    def __call__(
        self,
        files: Sequence[ImageFile],
        *,
        shuffle: bool = True,
        validation_split: float | None = None,
    ) -> Any:
        """The files' dataset, or its (training, validation) halves with a validation split.

        With ``shuffle``, the files are shuffled once with the seed (numpy's legacy
        generator, as Keras does), which also picks the validation half (the last
        ``int(validation_split * n)`` files); the training half is reshuffled every epoch.
        Without it, the files come in their listed order.
        """
        ordered = list(files)
        if shuffle:
            # Keras' legacy generator, so a seed picks the split it picked before.
            np.random.RandomState(self._seed).shuffle(ordered)
        if validation_split is None:
            return self._dataset(ordered, shuffle=shuffle)
        held_out = int(validation_split * len(ordered))
        return (
            self._dataset(ordered[:-held_out], shuffle=shuffle),
            self._dataset(ordered[-held_out:], shuffle=False),
        )

    def _dataset(self, files: list[ImageFile], *, shuffle: bool) -> Any:
        paths = [file.path for file in files]
        labels = np.array([file.label for file in files], np.int32)
        orientations = np.array([file.orientation for file in files], np.int32)
        dataset = tf.data.Dataset.from_tensor_slices((paths, labels, orientations))
        if shuffle:
            dataset = dataset.shuffle(_SHUFFLE_BUFFER, seed=self._seed)
        size = self._size
        dataset = dataset.map(
            lambda path, label, orientation: (decode(path, orientation, size), label),
            num_parallel_calls=tf.data.AUTOTUNE,
        )
        dataset.file_paths = paths  # for naming a file that fails to decode
        return dataset


def carve_test(validation: Any, test_size: int) -> tuple[Any, Any]:
    """Splits a validation dataset into validation and test datasets that share no image."""
    # The validation half comes in a fixed (seeded) order and is never reshuffled, so
    # take/skip split it once.
    files = validation.file_paths
    remaining, test = validation.skip(test_size), validation.take(test_size)
    remaining.file_paths = test.file_paths = files  # each holds some of them
    return remaining, test


def batched(dataset: tf.data.Dataset, batch_size: int, names: tuple[str, ...]) -> Any:
    """The dataset batched and prefetched, carrying the class names."""
    result = dataset.batch(batch_size).prefetch(tf.data.AUTOTUNE)
    result.class_names = list(names)
    result.file_paths = dataset.file_paths  # for naming a file that fails to decode
    return result
