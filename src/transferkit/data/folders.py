"""Labeled image datasets from folders: one subfolder of images per class.

:func:`from_directory` wraps ``keras.utils.image_dataset_from_directory`` (integer labels,
RGB, bilinear resizing) and adds what the reference recipe does by hand: the ``train/`` and
``validation/`` layout, a test set carved out of the validation images, and prefetching.

Every file is checked before any dataset is built, so a bad file fails at once with its name
instead of stopping an epoch halfway with a decoder error. The check is cheap: it reads the
first 32 bytes and the last KiB of each file (the format's signature and its end marker) and
decodes only the files that look cut short: 0.26 s for 3,000 JPEGs of 90 KiB, where decoding
them all once takes about 20 s. BMP, WebP and JPEG XL files, whose end cannot be checked that
way (and some of whose variants TensorFlow cannot decode: 1-bit BMPs, animated WebPs), are
decoded in full. So the check accepts exactly what ``tf.io.decode_image`` decodes, except a
file damaged in its middle behind an intact end marker: it passes the check, and reading it
mid-epoch stops training with a :class:`~transferkit.errors.DataError` that names it (the
last checkpoint is kept, see :doc:`/howto/from_folder`). Files that fail the check are an
error, not skipped: training on silently fewer images hides the problem.

Grayscale, palette and RGBA images are converted to RGB when they are decoded (RGBA by
dropping the alpha channel), so a folder may mix them.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Union

import numpy as np
import tensorflow as tf

from transferkit import _validation
from transferkit.data.folder_splits import FolderLoader, batched, split_counts
from transferkit.data.image_files import check_file, listing, raise_for_bad_files, show
from transferkit.errors import (
    ClassNamesMismatchError,
    DataError,
    InvalidArgumentError,
    TransferkitWarning,
)

__all__ = [
    "IMAGE_EXTENSIONS",
    "DirectoryData",
    "check_images",
    "from_directory",
    "from_files",
    "list_images",
    "load_images",
]

#: The file extensions ``image_dataset_from_directory`` reads (any case); others are ignored.
IMAGE_EXTENSIONS = (".bmp", ".gif", ".jpeg", ".jpg", ".png")
_VALIDATION_FOLDERS = ("validation", "val")

PathLike = Union[str, "os.PathLike[str]"]


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
    (subfolders of class folders included) and resized to ``image_size`` without keeping
    the aspect ratio; other files are ignored with a warning. Labels are class indices in
    the order of ``class_names`` (by default the sorted folder names).

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
    size = _validation.image_size(image_size)
    batch_size = _validation.positive_int("batch_size", batch_size)
    if validation_split is not None:
        validation_split = _validation.fraction("validation_split", validation_split)
    if test_split is not None:
        test_split = _validation.fraction("test_split", test_split)
    if seed is not None:
        if _validation.as_int(seed) is None:
            msg = f"seed must be an int or None. Received: seed={seed!r}"
            raise InvalidArgumentError(msg)
        seed = _validation.as_int(seed)
    _validation.choice("shuffle", shuffle, (True, False))
    expected = _validation.class_names(class_names)
    root = _existing_folder(path)
    if seed is None:
        # Keras needs one seed for both halves of a split; pick it once.
        seed = int(np.random.default_rng().integers(2**31))

    train_folder, validation_folder, test_folder = _layout(root)
    if validation_folder is not None and validation_split is not None:
        msg = (
            f"{show(root)} has a {validation_folder.name}/ folder, which is the validation "
            "set; leave validation_split out. "
            f"Received: path={show(root)}, validation_split={validation_split}"
        )
        raise InvalidArgumentError(msg)
    if test_folder is not None and test_split is not None:
        msg = (
            f"{show(root)} has a test/ folder, which is the test set; leave test_split out. "
            f"Received: path={show(root)}, test_split={test_split}"
        )
        raise InvalidArgumentError(msg)
    if test_split is not None and validation_folder is None and validation_split is None:
        msg = (
            "test_split moves part of the validation images into a test set, but there is "
            "no validation set: pass validation_split too, or add a validation/ folder. "
            f"Received: path={show(root)}, test_split={test_split}"
        )
        raise InvalidArgumentError(msg)

    # Check every folder, and the size of every split, before building anything.
    class_counts = _scan(train_folder)
    names = expected if expected is not None else tuple(sorted(class_counts))
    _compare_classes(train_folder, tuple(class_counts), names, "the class names")
    folder_sizes = {"train": sum(class_counts.values())}
    for split, folder in (("validation", validation_folder), ("test", test_folder)):
        if folder is not None:
            class_counts = _scan(folder)
            _compare_classes(folder, tuple(class_counts), names, f"those of {show(train_folder)}")
            folder_sizes[split] = sum(class_counts.values())
    counts = split_counts(
        folder_sizes, validation_split, test_split, validation_folder or train_folder
    )

    load = FolderLoader(size, names, seed)
    validation = test = None
    if validation_split is not None:
        train, validation = load(train_folder, validation_split=validation_split)
        if test_split is not None:
            # Keras' validation half comes in a fixed (seeded) order and is never
            # reshuffled, so take/skip split it once: validation and test share no image.
            files = validation.file_paths
            validation, test = validation.skip(counts["test"]), validation.take(counts["test"])
            validation.file_paths = test.file_paths = files  # each holds some of them
    else:
        train = load(train_folder, shuffle=shuffle)
        if validation_folder is not None and test_split is not None:
            validation, test = load(validation_folder, validation_split=test_split)
        elif validation_folder is not None:
            validation = load(validation_folder, shuffle=False)
    if test_folder is not None:
        test = load(test_folder, shuffle=False)
    return DirectoryData(
        train=batched(train, batch_size, names),
        validation=None if validation is None else batched(validation, batch_size, names),
        test=None if test is None else batched(test, batch_size, names),
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
    return sorted(_walk(target)[0])


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
    files = [Path(p) for p in paths]
    if not files:
        msg = "No image files were given. Received: paths=[]"
        raise DataError(msg)
    missing = [f for f in files if not f.is_file()]
    if missing:
        msg = f"No such image file: {listing(missing)}. Received: paths={listing(missing)}"
        raise DataError(msg)
    raise_for_bad_files([(f, problem) for f in files if (problem := check_file(f))], None)
    return files


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
    files = [os.fspath(f) for f in check_images(paths)]
    dataset = tf.data.Dataset.from_tensor_slices(files).map(
        lambda path: _decode(path, size), num_parallel_calls=tf.data.AUTOTUNE
    )
    batched = dataset.batch(batch).prefetch(tf.data.AUTOTUNE)
    batched.file_paths = files
    return batched


def load_images(paths: Iterable[PathLike], image_size: int | Sequence[int]) -> np.ndarray:
    """Reads image files into one batch of raw pixels, as :func:`from_directory` does.

    Images are decoded to RGB and resized (bilinear, aspect ratio not kept) exactly as
    the training datasets are, so a classifier sees the same pixels at prediction time.
    The whole batch is in memory at once: for many files, :func:`from_files` streams them.

    Args:
        paths: image files (any of the formats TensorFlow decodes: JPEG, PNG, GIF, BMP,
            WebP).
        image_size: int or ``(height, width)``. The size images are resized to.

    Returns:
        A float32 array of shape ``(n, height, width, 3)`` with pixels in 0-255.

    Raises:
        DataError: there are no paths, a file does not exist, or files cannot be decoded
            as images (all of them are named).
    """
    size = _validation.image_size(image_size)
    files = check_images(paths)
    return np.stack([np.asarray(_decode(tf.constant(os.fspath(f)), size)) for f in files])


def _decode(path: tf.Tensor, size: tuple[int, int]) -> tf.Tensor:
    # What image_dataset_from_directory does to each file, so pixels match training's.
    image = tf.io.decode_image(tf.io.read_file(path), channels=3, expand_animations=False)
    resized = tf.image.resize(image, size, method="bilinear")
    resized.set_shape((*size, 3))
    return resized


# ---------------------------------------------------------------------- layout and checks


def _layout(root: Path) -> tuple[Path, Path | None, Path | None]:
    train = root / "train"
    if not (train.is_dir() and any(_subfolders(train))):
        return root, None, None
    found = [root / name for name in _VALIDATION_FOLDERS if (root / name).is_dir()]
    if len(found) > 1:
        msg = (
            f"{show(root)} has both a validation/ and a val/ folder; keep one. "
            f"Received: path={show(root)}"
        )
        raise DataError(msg)
    test = root / "test"
    return train, found[0] if found else None, test if test.is_dir() else None


def _subfolders(folder: Path) -> list[Path]:
    # Keras skips hidden folders (.ipynb_checkpoints, .git) when it infers classes.
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def _walk(folder: Path) -> tuple[list[Path], list[Path]]:
    """The image files under ``folder`` and the other (non-hidden) files Keras ignores."""
    images: list[Path] = []
    ignored: list[Path] = []
    for directory, subfolders, files in os.walk(folder):
        subfolders.sort()  # walk in sorted order, so messages list files predictably
        for name in sorted(files):
            file = Path(directory) / name
            if name.lower().endswith(IMAGE_EXTENSIONS):
                images.append(file)
            elif not name.startswith("."):
                ignored.append(file)
    return images, ignored


def _scan(folder: Path) -> dict[str, int]:
    """Checks a folder of class folders; returns the number of images in each class."""
    classes = _subfolders(folder)
    if not classes:
        loose = _walk(folder)[0]
        hint = f" It holds {len(loose)} images directly." if loose else ""
        msg = (
            f"{show(folder)} has no class subfolders. Put the images of each class in a "
            f"subfolder named for the class ({show(folder / 'cat' / '1.jpg')}, "
            f"{show(folder / 'dog' / '1.jpg')}).{hint} Received: path={show(folder)}"
        )
        raise DataError(msg)
    if len(classes) == 1:
        msg = (
            f"{show(folder)} has only one class subfolder ({classes[0].name!r}); a classifier "
            f"needs at least two classes. Received: path={show(folder)}"
        )
        raise DataError(msg)
    counts: dict[str, int] = {}
    empty: list[str] = []
    bad: list[tuple[Path, str]] = []
    ignored: list[Path] = []
    for class_folder in classes:
        images, others = _walk(class_folder)
        counts[class_folder.name] = len(images)
        if not images:
            empty.append(class_folder.name)
        ignored.extend(others)
        bad.extend((f, problem) for f in images if (problem := check_file(f)))
    if empty:
        msg = (
            f"Class folders with no images in {show(folder)}: "
            f"{', '.join(repr(name) for name in empty)}. Only {_extensions()} files are "
            f"read; add images or remove the folders. Received: path={show(folder)}"
        )
        raise DataError(msg)
    raise_for_bad_files(bad, folder)
    if ignored:
        warnings.warn(
            f"{len(ignored)} files in {show(folder)} are ignored: only {_extensions()} files "
            f"are read. Ignored: {listing(ignored, folder)}",
            TransferkitWarning,
            stacklevel=3,
        )
    return counts


def _compare_classes(
    folder: Path, found: tuple[str, ...], expected: tuple[str, ...], what: str
) -> None:
    if set(found) == set(expected):
        return
    missing = [name for name in expected if name not in found]
    unexpected = [name for name in found if name not in expected]
    details = "; ".join(
        part
        for part in (
            f"missing {missing}" if missing else "",
            f"unexpected {unexpected}" if unexpected else "",
        )
        if part
    )
    msg = (
        f"The class folders of {show(folder)} are {sorted(found)}, which differ from "
        f"{what} {list(expected)}: {details}. Received: path={show(folder)}"
    )
    raise ClassNamesMismatchError(msg)


def _existing_folder(path: PathLike) -> Path:
    if isinstance(path, bytes) or not isinstance(path, (str, os.PathLike)):
        msg = f"path must be a folder path (str or os.PathLike). Received: path={path!r}"
        raise InvalidArgumentError(msg)
    folder = Path(path)
    if not folder.exists():
        msg = f"No such folder: {show(folder)}. Received: path={show(folder)}"
        raise DataError(msg)
    if not folder.is_dir():
        msg = (
            f"{show(folder)} is a file; pass a folder with one subfolder of images per "
            f"class. Received: path={show(folder)}"
        )
        raise DataError(msg)
    return folder


def _extensions() -> str:
    return ", ".join(IMAGE_EXTENSIONS)
