"""The files of a folder of class folders, found and checked before any dataset is built.

:func:`list_splits` finds the layout (class folders, or ``train/`` with ``validation/`` and
``test/``), checks every folder and every file in it (see :mod:`transferkit.data.folders`), and
lists the image files of each split with their labels and EXIF orientations, in the order
``keras.utils.image_dataset_from_directory`` lists them.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import NamedTuple

from transferkit.data.folder_splits import ImageFile
from transferkit.data.image_files import PathLike, inspect_file, listing, raise_for_bad_files, show
from transferkit.errors import (
    ClassNamesMismatchError,
    DataError,
    InvalidArgumentError,
    TransferkitWarning,
)

__all__ = ["IMAGE_EXTENSIONS", "Layout", "existing_folder", "layout", "list_splits", "walk"]

#: The file extensions ``image_dataset_from_directory`` reads (any case); others are ignored.
IMAGE_EXTENSIONS = (".bmp", ".gif", ".jpeg", ".jpg", ".png")
_VALIDATION_FOLDERS = ("validation", "val")


class Layout(NamedTuple):
    """The folders of each split: ``train`` is ``root`` itself for plain class folders."""

    root: Path
    train: Path
    validation: Path | None
    test: Path | None


def list_splits(
    layout: Layout, expected: tuple[str, ...] | None
) -> tuple[tuple[str, ...], dict[str, list[ImageFile]]]:
    """Checks every folder, and lists its files with their labels, before building anything."""
    classes = _scan(layout.train)
    names = expected if expected is not None else tuple(sorted(classes))
    _compare_classes(layout.train, tuple(classes), names, "the class names")
    listings = {"train": _labeled(classes, names)}
    for split, folder in (("validation", layout.validation), ("test", layout.test)):
        if folder is not None:
            classes = _scan(folder)
            _compare_classes(folder, tuple(classes), names, f"those of {show(layout.train)}")
            listings[split] = _labeled(classes, names)
    return names, listings


def _labeled(
    classes: Mapping[str, list[tuple[str, int]]], names: tuple[str, ...]
) -> list[ImageFile]:
    # Class by class in label order, as Keras lists them.
    return [
        ImageFile(path, label, orientation)
        for label, name in enumerate(names)
        for path, orientation in classes[name]
    ]


def layout(root: Path) -> Layout:
    """The split folders of ``root``: ``train/`` (with subfolders) marks the recipe's layout."""
    train = root / "train"
    if not (train.is_dir() and any(_subfolders(train))):
        return Layout(root, root, None, None)
    found = [root / name for name in _VALIDATION_FOLDERS if (root / name).is_dir()]
    if len(found) > 1:
        msg = (
            f"{show(root)} has both a validation/ and a val/ folder; keep one. "
            f"Received: path={show(root)}"
        )
        raise DataError(msg)
    test = root / "test"
    return Layout(root, train, found[0] if found else None, test if test.is_dir() else None)


def _subfolders(folder: Path) -> list[Path]:
    # Keras skips hidden folders (.ipynb_checkpoints, .git) when it infers classes.
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def walk(folder: str | Path) -> tuple[list[str], list[Path]]:
    """The image files under ``folder``, in Keras' order, and the other (non-hidden) files."""
    images: list[str] = []
    ignored: list[Path] = []
    # Keras walks folders sorted by path ("a b/" before "a/b/"), then files sorted by name.
    for directory, _, files in sorted(os.walk(folder), key=lambda entry: entry[0]):
        for name in sorted(files):
            if name.lower().endswith(IMAGE_EXTENSIONS):
                images.append(os.path.join(directory, name))
            elif not name.startswith("."):
                ignored.append(Path(directory, name))
    return images, ignored


def _scan(folder: Path) -> dict[str, list[tuple[str, int]]]:
    """Checks a folder of class folders; returns each class's files and their orientations."""
    found: dict[str, list[tuple[str, int]]] = {}
    bad: list[tuple[Path, str]] = []
    ignored: list[Path] = []
    for name in _class_folders(folder):
        # Walked from the path Keras walked, so that file_paths read as they did.
        images, others = walk(os.path.join(os.fspath(folder), name))
        ignored.extend(others)
        found[name] = []
        for image in images:
            problem, orientation = inspect_file(Path(image))
            if problem:
                bad.append((Path(image), problem))
            found[name].append((image, orientation))
    empty = [name for name, files in found.items() if not files]
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
            stacklevel=4,  # the caller of from_directory
        )
    return found


def _class_folders(folder: Path) -> list[str]:
    """The names of the class folders in ``folder``, sorted; at least two of them."""
    classes = _subfolders(folder)
    if not classes:
        loose = walk(folder)[0]
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
    return [class_folder.name for class_folder in classes]


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


def existing_folder(path: PathLike) -> Path:
    """``path`` as a Path, if it names a folder that exists."""
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
