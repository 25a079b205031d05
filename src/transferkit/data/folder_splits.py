"""Reading class folders with Keras and splitting them into training, validation and test.

:class:`FolderLoader` calls ``keras.utils.image_dataset_from_directory`` with the settings every
split shares; :func:`split_counts` checks a split before Keras makes it, for a clear message.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import keras
import tensorflow as tf

from transferkit.data.image_files import show
from transferkit.errors import DataError

__all__ = ["FolderLoader", "batched", "quiet_keras", "split_counts"]


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
    """How many images of each class go to training and to validation."""
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
    """Calls ``image_dataset_from_directory`` with the settings every split shares."""

    def __init__(self, size: tuple[int, int], names: tuple[str, ...], seed: int) -> None:
        self._size = size
        self._names = list(names)
        self._seed = seed

    def __call__(
        self, folder: Path, *, shuffle: bool = True, validation_split: float | None = None
    ) -> Any:
        """One of Keras' folder datasets, read quietly, with this loader's settings."""
        with quiet_keras():
            return keras.utils.image_dataset_from_directory(
                os.fspath(folder),
                labels="inferred",
                label_mode="int",
                class_names=self._names,
                color_mode="rgb",
                batch_size=None,  # unbatched, so a test set can be carved out image by image
                image_size=self._size,
                shuffle=shuffle,
                seed=self._seed,
                validation_split=validation_split,
                subset="both" if validation_split is not None else None,
                verbose=False,
            )


@contextlib.contextmanager
def quiet_keras() -> Iterator[None]:
    """Silences Keras' own file counts while a folder is read; ours say it."""
    # Keras prints "Using N files for training." even with verbose=False; our counts say it.
    was_enabled = keras.config.is_interactive_logging_enabled()
    keras.config.disable_interactive_logging()
    try:
        yield
    finally:
        if was_enabled:
            keras.config.enable_interactive_logging()


def batched(dataset: tf.data.Dataset, batch_size: int, names: tuple[str, ...]) -> Any:
    """The dataset batched and prefetched, carrying the class names."""
    result = dataset.batch(batch_size).prefetch(tf.data.AUTOTUNE)
    result.class_names = list(names)
    result.file_paths = dataset.file_paths  # for naming a file that fails to decode
    return result
