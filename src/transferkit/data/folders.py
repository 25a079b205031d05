"""Labeled image datasets from folders: one subfolder of images per class.

:func:`from_directory` reads folders as ``keras.utils.image_dataset_from_directory`` does
(integer labels, RGB, bilinear resizing, the same file order, seeded splits and shuffles) and
adds what the reference recipe does by hand: the ``train/`` and ``validation/`` layout, a test
set carved out of the validation images, and prefetching. It lists and reads the files itself,
so that photos come the right way up: each JPEG's EXIF orientation, found by the file check,
is applied before resizing (see :mod:`transferkit.data.orientation`), here and in
:func:`from_files`, :func:`load_images` and the CSV tables alike.

Every file is checked before any dataset is built, so a bad file fails at once with its name
instead of stopping an epoch halfway with a decoder error. The check is cheap, because
decoding every file twice would double the cost of reading a folder: it reads the first 32
bytes and the last KiB of each file (the format's signature and its end marker) and decodes
only the files that look cut short (:doc:`/performance` has the figures). BMP, WebP and JPEG
XL files, whose end cannot be checked that way (and some of whose variants TensorFlow cannot
decode: 1-bit BMPs, animated WebPs), are decoded in full. So the check accepts exactly what
``tf.io.decode_image`` decodes, except a file damaged in its middle behind an intact end
marker: it passes the check, and reading it mid-epoch stops training with a
:class:`~transferkit.errors.DataError` that names it (the last checkpoint is kept, see
:doc:`/howto/from_folder`). Files that fail the check are an error, not skipped: training on
silently fewer images hides the problem.

Grayscale, palette and RGBA images are converted to RGB when they are decoded (RGBA by
dropping the alpha channel), so a folder may mix them.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import tensorflow as tf

from transferkit import _validation
from transferkit.data import class_folders
from transferkit.data.class_folders import IMAGE_EXTENSIONS
from transferkit.data.folder_splits import (
    FolderLoader,
    ImageFile,
    batched,
    carve_test,
    split_counts,
)
from transferkit.data.image_files import (
    PathLike,
    checked_files,
    decode,
    show,
    undecodable_files_named,
)
from transferkit.errors import DataError, InvalidArgumentError

__all__ = [
    "IMAGE_EXTENSIONS",
    "DirectoryData",
    "check_images",
    "from_directory",
    "from_files",
    "list_images",
    "load_images",
]


@dataclass(frozen=True)
class DirectoryData:
    """The splits of a folder of images, as returned by :func:`from_directory`.

    Every dataset yields ``(images, labels)`` batches: float32 raw pixels (0-255) of shape
    ``(batch, height, width, 3)`` and int32 class indices. Each dataset also carries the
    class names as ``dataset.class_names``, as Keras' datasets do, so a classifier can
    check them. With ``shuffle=False``, the train split of the class-folders layout
    (without ``validation_split``) comes in the order of its ``file_paths``.

    Attributes:
        train: the training batches, reshuffled every epoch.
        validation: the validation batches, or None without a validation split.
        test: the test batches, or None without a test split.
        class_names: the class names in label order (label ``i`` is ``class_names[i]``).
        counts: the number of images in each split present, by name
            (``{"train": 2000, "validation": 800, "test": 200}``).
    """

    train: tf.data.Dataset
    validation: tf.data.Dataset | None
    test: tf.data.Dataset | None
    class_names: tuple[str, ...]
    counts: Mapping[str, int]

    @property
    def num_classes(self) -> int:
        """The number of classes."""
        return len(self.class_names)


def from_directory(
    path: PathLike,
    image_size: int | Sequence[int],
    batch_size: int = 32,
    *,
    validation_split: float | None = None,
    test_split: float | None = None,
    seed: int | None = 0,
    class_names: Sequence[str] | None = None,
    shuffle: bool = True,
) -> DirectoryData:
    """Loads labeled images from class subfolders into batched, prefetched datasets.

    Two layouts are read:

    - class folders: ``path/cat/*.jpg``, ``path/dog/*.jpg``. With ``validation_split``,
      that fraction of the images (picked at random with ``seed``) is the validation set.
    - the recipe's splits: ``path/train/<class>/``, with ``path/validation/<class>/`` (or
      ``path/val/``) and optionally ``path/test/<class>/``. This layout is recognized by a
      ``train`` folder that holds subfolders.

    ``test_split`` moves that fraction of the validation images into a test set, as the
    recipe does with a fifth of its validation batches (``test_split=0.2``). The images
    are picked once with ``seed``, so validation and test never share an image; the
    recipe's ``take``/``skip`` on a dataset that reshuffles every epoch lets them overlap.

    Images in ``.bmp``, ``.gif``, ``.jpeg``, ``.jpg`` and ``.png`` files are read
    (subfolders of class folders included), turned the way up a viewer shows them (a JPEG's
    EXIF orientation, see :ref:`photos-upright`) and resized to ``image_size`` without
    keeping the aspect ratio; other files are ignored with a warning. Labels are class
    indices in the order of ``class_names`` (by default the sorted folder names).

    Args:
        path: the folder.
        image_size: int or ``(height, width)``. The size images are resized to (the
            classifier's ``image_size``).
        batch_size: int. Images per batch. Defaults to 32.
        validation_split: float in (0, 1). Fraction of the images held out for validation,
            for the class-folders layout (or a ``train/`` folder without a validation
            folder). Defaults to None.
        test_split: float in (0, 1). Fraction of the validation images moved to a test
            set. Defaults to None.
        seed: int. Seed of the random split and of the shuffling. Defaults to 0, so the
            same folder gives the same split every run; a different split in a later run
            would put training images into its validation set.
        class_names: the expected class names, in label order. The class folders must be
            exactly these. Defaults to the sorted folder names.
        shuffle: bool. Reshuffle the training images every epoch. False reads the class
            folders layout in a fixed order (class by class, files sorted), for evaluation.
            Defaults to True.

    Returns:
        A :class:`DirectoryData` with the ``train``, ``validation`` and ``test`` datasets,
        the class names and the image counts.

    Raises:
        DataError: the folder does not exist; it has fewer than two class folders; a class
            folder has no images; files cannot be decoded as images (all of them are
            named); a split would hold no images.
        ClassNamesMismatchError: the class folders differ between splits or from
            ``class_names``.
        InvalidArgumentError: an argument has an invalid value.
    """
    request = _Request.check(
        image_size, batch_size, validation_split, test_split, seed, class_names, shuffle
    )
    layout = class_folders.layout(class_folders.existing_folder(path))
    _check_split_sources(layout, request)
    names, listings = class_folders.list_splits(layout, request.class_names)
    counts = split_counts(
        {split: len(files) for split, files in listings.items()},
        request.validation_split,
        request.test_split,
        layout.validation or layout.train,
    )
    train, validation, test = _split_datasets(listings, counts, request)
    return DirectoryData(
        train=batched(train, request.batch_size, names),
        validation=None if validation is None else batched(validation, request.batch_size, names),
        test=None if test is None else batched(test, request.batch_size, names),
        class_names=names,
        counts=counts,
    )


def list_images(path: PathLike) -> list[Path]:
    """The image files to read from a path: a folder's, recursively and sorted, or the file.

    Args:
        path: a folder, or one image file.

    Returns:
        The ``.bmp``, ``.gif``, ``.jpeg``, ``.jpg`` and ``.png`` files under a folder
        (hidden files included, as Keras reads them), or ``[path]`` for a file.

    Raises:
        DataError: the path does not exist.
    """
    target = Path(path)
    if target.is_file():
        return [target]
    if not target.exists():
        msg = f"No such file or folder: {show(target)}. Received: path={show(target)}"
        raise DataError(msg)
    return sorted(Path(image) for image in class_folders.walk(target)[0])


def check_images(paths: Iterable[PathLike]) -> list[Path]:
    """Checks that files exist and can be decoded as images, without decoding them.

    This is the cheap check :func:`from_directory` runs on every file (see the module
    documentation); run it over a long list before starting work on it.

    Args:
        paths: image files.

    Returns:
        The paths, as :class:`~pathlib.Path` objects.

    Raises:
        DataError: there are no paths, a file does not exist, or files cannot be decoded
            as images (all of them are named).
    """
    return checked_files(paths)[0]


def from_files(
    paths: Iterable[PathLike], image_size: int | Sequence[int], batch_size: int = 32
) -> tf.data.Dataset:
    """A dataset of image batches read from files as they are needed, in the given order.

    Images are decoded and resized as :func:`load_images` does, a batch at a time while the
    dataset is iterated, so memory holds a few batches whatever the number of files. This is
    what :meth:`~transferkit.TransferClassifier.predict` reads a folder with. Every file is
    checked first, as :func:`check_images` does. The dataset carries the files as
    ``dataset.file_paths``, as Keras' datasets do.

    Args:
        paths: image files (see :func:`load_images`).
        image_size: int or ``(height, width)``. The size images are resized to.
        batch_size: int. Images per batch. Defaults to 32.

    Returns:
        A ``tf.data.Dataset`` of float32 batches of shape ``(batch, height, width, 3)`` with
        pixels in 0-255 (the last batch may be smaller).

    Raises:
        DataError: there are no paths, a file does not exist, or files cannot be decoded
            as images (all of them are named).
    """
    size = _validation.image_size(image_size)
    batch = _validation.positive_int("batch_size", batch_size)
    checked, orientations = checked_files(paths)
    files = [os.fspath(f) for f in checked]
    dataset = tf.data.Dataset.from_tensor_slices((files, np.array(orientations, np.int32))).map(
        lambda path, orientation: decode(path, orientation, size),
        num_parallel_calls=tf.data.AUTOTUNE,
    )
    images = dataset.batch(batch).prefetch(tf.data.AUTOTUNE)
    images.file_paths = files
    return images


def load_images(paths: Iterable[PathLike], image_size: int | Sequence[int]) -> np.ndarray:
    """Reads image files into one batch of raw pixels, as :func:`from_directory` does.

    Images are decoded to RGB, turned the way up their EXIF orientation says, and resized
    (bilinear, aspect ratio not kept) exactly as the training datasets are, so a classifier
    sees the same pixels at prediction time. The whole batch is in memory at once: for many
    files, :func:`from_files` streams them.

    Args:
        paths: image files (any of the formats TensorFlow decodes: JPEG, PNG, GIF, BMP,
            WebP).
        image_size: int or ``(height, width)``. The size images are resized to.

    Returns:
        A float32 array of shape ``(n, height, width, 3)`` with pixels in 0-255.

    Raises:
        DataError: there are no paths, a file does not exist, or files cannot be decoded
            as images (all of them are named, those damaged in their middle too).
    """
    size = _validation.image_size(image_size)
    files, orientations = checked_files(paths)
    # A file damaged in its middle passes the check: name it, as the datasets' readers do.
    with undecodable_files_named(SimpleNamespace(file_paths=files)):
        return np.stack(
            [
                np.asarray(decode(tf.constant(os.fspath(f)), tf.constant(orientation), size))
                for f, orientation in zip(files, orientations, strict=True)
            ]
        )


# ---------------------------------------------------------------------- the steps of from_directory


@dataclass(frozen=True)
class _Request:
    """The arguments of :func:`from_directory`, checked."""

    size: tuple[int, int]
    batch_size: int
    validation_split: float | None
    test_split: float | None
    seed: int
    class_names: tuple[str, ...] | None
    shuffle: bool

    @classmethod
    def check(
        cls,
        image_size: object,
        batch_size: object,
        validation_split: object,
        test_split: object,
        seed: object,
        class_names: object,
        shuffle: object,
    ) -> _Request:
        size = _validation.image_size(image_size)
        batch = _validation.positive_int("batch_size", batch_size)
        validation = (
            None
            if validation_split is None
            else _validation.fraction("validation_split", validation_split)
        )
        test = None if test_split is None else _validation.fraction("test_split", test_split)
        if seed is None:
            # Both halves of a split need the same seed; pick it once.
            chosen = int(np.random.default_rng().integers(2**31))
        elif (number := _validation.as_int(seed)) is None:
            msg = f"seed must be an int or None. Received: seed={seed!r}"
            raise InvalidArgumentError(msg)
        else:
            chosen = number
        _validation.choice("shuffle", shuffle, (True, False))
        expected = _validation.class_names(class_names)
        return cls(size, batch, validation, test, chosen, expected, bool(shuffle))


def _check_split_sources(layout: class_folders.Layout, request: _Request) -> None:
    """Refuses a split argument for a split that a folder already holds, or cannot make."""
    root = show(layout.root)
    if layout.validation is not None and request.validation_split is not None:
        msg = (
            f"{root} has a {layout.validation.name}/ folder, which is the validation set; "
            f"leave validation_split out. "
            f"Received: path={root}, validation_split={request.validation_split}"
        )
        raise InvalidArgumentError(msg)
    if layout.test is not None and request.test_split is not None:
        msg = (
            f"{root} has a test/ folder, which is the test set; leave test_split out. "
            f"Received: path={root}, test_split={request.test_split}"
        )
        raise InvalidArgumentError(msg)
    no_validation = layout.validation is None and request.validation_split is None
    if request.test_split is not None and no_validation:
        msg = (
            "test_split moves part of the validation images into a test set, but there is "
            "no validation set: pass validation_split too, or add a validation/ folder. "
            f"Received: path={root}, test_split={request.test_split}"
        )
        raise InvalidArgumentError(msg)


def _split_datasets(
    listings: Mapping[str, list[ImageFile]], counts: Mapping[str, int], request: _Request
) -> tuple[Any, Any, Any]:
    """The unbatched train, validation and test datasets (None where a split is absent)."""
    load = FolderLoader(request.size, request.seed)
    validation = test = None
    if request.validation_split is not None:
        train, validation = load(listings["train"], validation_split=request.validation_split)
        if request.test_split is not None:
            validation, test = carve_test(validation, counts["test"])
    else:
        train = load(listings["train"], shuffle=request.shuffle)
        if "validation" in listings and request.test_split is not None:
            validation, test = load(listings["validation"], validation_split=request.test_split)
        elif "validation" in listings:
            validation = load(listings["validation"], shuffle=False)
    if "test" in listings:
        test = load(listings["test"], shuffle=False)
    return train, validation, test
