"""Labeled image datasets from a table: a CSV file (or a pandas DataFrame) of file names and labels.

The table has one row per image: a file name (relative to ``image_dir``, or absolute) and
its labels, separated by ``label_delimiter`` (a space by default: the convention of fastai
and of Kaggle's multi-label sets)::

    filename,labels
    0001.jpg,cat
    0002.jpg,cat dog

When any row has more than one label (or with ``multi_label=True``) the targets are multi-hot
float32 vectors of shape ``(batch, num_classes)``; otherwise they are int32 class indices,
exactly as :func:`transferkit.data.from_directory` gives them. Every row and every file is
checked before any dataset is built, with the same upfront image check as folders.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import tensorflow as tf

from transferkit import _validation
from transferkit.data import table_rows
from transferkit.data.folders import DirectoryData
from transferkit.data.image_files import PathLike, checked_files, decode
from transferkit.errors import DataError, InvalidArgumentError, MissingDependencyError

__all__ = ["from_csv", "from_dataframe"]


def from_csv(
    csv_path: PathLike,
    image_dir: PathLike,
    *,
    image_size: int | Sequence[int],
    filename_column: str = "filename",
    label_column: str = "labels",
    label_delimiter: str = " ",
    validation_split: float | None = None,
    test_split: float | None = None,
    batch_size: int = 32,
    seed: int | None = 0,
    class_names: Sequence[str] | None = None,
    multi_label: bool | None = None,
) -> DirectoryData:
    r"""Loads labeled images listed in a CSV file into batched, prefetched datasets.

    Each row names an image file (relative to ``image_dir``, or absolute) and its labels,
    separated by ``label_delimiter``. Single-label tables give int32 class indices, as
    :func:`~transferkit.data.from_directory` does; a table where any row has more than one
    label (or ``multi_label=True``) gives multi-hot float32 targets of shape
    ``(batch, num_classes)`` for a ``TransferClassifier(..., multi_label=True)``.

    ``validation_split`` holds out that fraction of the rows (picked at random with
    ``seed``) and ``test_split`` moves that fraction of the validation rows into a test set,
    as :func:`~transferkit.data.from_directory` does with folders. Images are decoded to RGB,
    turned the way up a viewer shows them (see :ref:`photos-upright`) and resized to
    ``image_size`` (bilinear, aspect ratio not kept).

    Example:
    >>> import tempfile, pathlib, numpy as np
    >>> from PIL import Image
    >>> folder = pathlib.Path(tempfile.mkdtemp())
    >>> for name in ("a.png", "b.png", "c.png"):
    ...     Image.fromarray(np.zeros((8, 12, 3), np.uint8)).save(folder / name)
    >>> rows = ["filename,labels", "a.png,cat", "b.png,cat dog", "c.png,dog"]
    >>> _ = (folder / "labels.csv").write_text("\n".join(rows))
    >>> table = from_csv(folder / "labels.csv", folder, image_size=(8, 12))
    >>> table.class_names, table.counts
    (('cat', 'dog'), {'train': 3})
    >>> images, targets = next(iter(table.train))
    >>> images.shape, targets.shape
    (TensorShape([3, 8, 12, 3]), TensorShape([3, 2]))

    Args:
        csv_path: the CSV file. Its first line names the columns.
        image_dir: the folder the file names are relative to.
        image_size: int or ``(height, width)``. The size images are resized to (the
            classifier's ``image_size``).
        filename_column: str. The column of file names. Defaults to ``"filename"``.
        label_column: str. The column of labels. Defaults to ``"labels"``.
        label_delimiter: str. What separates the labels of one image. Defaults to a space.
        validation_split: float in (0, 1). Fraction of the rows held out for validation.
            Defaults to None.
        test_split: float in (0, 1). Fraction of the validation rows moved to a test set.
            Defaults to None.
        batch_size: int. Images per batch. Defaults to 32.
        seed: int. Seed of the random split and of the shuffling. Defaults to 0, so the
            same table gives the same split every run.
        class_names: the class names, in label order (a classifier's, to evaluate it on a
            table). Every label in the table must be one of them. Defaults to the sorted
            labels.
        multi_label: bool. True for multi-hot targets, False for class indices (every row
            must then have one label), None to decide from the table: multi-hot when any
            row has more than one label. Defaults to None.

    Returns:
        A :class:`~transferkit.data.DirectoryData` with the ``train``, ``validation`` and
        ``test`` datasets, the class names and the image counts.

    Raises:
        DataError: the file cannot be read, lacks a column (the columns it has are
            listed), has no rows, has rows with an empty file name or label cell, files
            that do not exist or cannot be decoded as images, a file listed twice, fewer
            than two classes, or a split that would hold no images (all such rows are
            listed, with their line numbers).
        InvalidArgumentError: an argument has an invalid value.
    """
    table = _path("csv_path", csv_path)
    settings = _Settings.check(
        image_dir, image_size, filename_column, label_column, label_delimiter,
        validation_split, test_split, batch_size, seed, class_names, multi_label,
    )  # fmt: skip
    if not table.is_file():
        msg = f"No such CSV file: {os.fspath(table)!r}. Received: csv_path={os.fspath(table)!r}"
        raise DataError(msg)
    try:
        with table.open(newline="", encoding="utf-8-sig") as file:
            reader = csv.DictReader(file)
            columns = list(reader.fieldnames or [])
            _require_columns(columns, settings.columns, table.name)
            # Line numbers count the header line, as an editor shows them.
            cells = [
                (f"line {reader.line_num}", row[filename_column], row[label_column])
                for row in reader
            ]
    except (UnicodeDecodeError, csv.Error) as exc:
        shown = os.fspath(table)
        msg = f"{shown!r} is not a readable CSV file: {exc}. Received: csv_path={shown!r}"
        raise DataError(msg) from exc
    return _build(cells, settings, source=os.fspath(table))


def from_dataframe(
    frame: Any,
    image_dir: PathLike,
    *,
    image_size: int | Sequence[int],
    filename_column: str = "filename",
    label_column: str = "labels",
    label_delimiter: str = " ",
    validation_split: float | None = None,
    test_split: float | None = None,
    batch_size: int = 32,
    seed: int | None = 0,
    class_names: Sequence[str] | None = None,
    multi_label: bool | None = None,
) -> DirectoryData:
    """Loads labeled images listed in a pandas DataFrame, as :func:`from_csv` does a file.

    A label cell may be a string (split at ``label_delimiter``) or a list of labels.
    pandas is imported only when this function is called.

    Args:
        frame: a ``pandas.DataFrame`` with a file-name column and a label column.
        image_dir: the folder the file names are relative to.
        image_size: as for :func:`from_csv`.
        filename_column: as for :func:`from_csv`.
        label_column: as for :func:`from_csv`.
        label_delimiter: as for :func:`from_csv`.
        validation_split: as for :func:`from_csv`.
        test_split: as for :func:`from_csv`.
        batch_size: as for :func:`from_csv`.
        seed: as for :func:`from_csv`.
        class_names: as for :func:`from_csv`.
        multi_label: as for :func:`from_csv`.

    Returns:
        A :class:`~transferkit.data.DirectoryData`, as :func:`from_csv` returns.

    Raises:
        MissingDependencyError: pandas is not installed.
        DataError: as for :func:`from_csv` (rows are named by their DataFrame index).
        InvalidArgumentError: ``frame`` is not a DataFrame, or another argument has an
            invalid value.
    """
    try:
        import pandas as pd  # optional dependency, imported on use
    except ImportError as exc:
        msg = "from_dataframe needs pandas; install it with `pip install pandas`."
        raise MissingDependencyError(msg) from exc
    if not isinstance(frame, pd.DataFrame):
        msg = f"frame must be a pandas DataFrame. Received: frame={type(frame).__name__}"
        raise InvalidArgumentError(msg)
    settings = _Settings.check(
        image_dir, image_size, filename_column, label_column, label_delimiter,
        validation_split, test_split, batch_size, seed, class_names, multi_label,
    )  # fmt: skip
    _require_columns([str(c) for c in frame.columns], settings.columns, "frame")
    cells = [
        (f"index {index!r}", filename, labels)
        for index, filename, labels in zip(
            frame.index, frame[filename_column], frame[label_column], strict=True
        )
    ]
    return _build(cells, settings, source="frame")


# ---------------------------------------------------------------------- arguments


@dataclass(frozen=True)
class _Settings:
    folder: Path
    size: tuple[int, int]
    columns: tuple[str, str]  # file names, labels
    delimiter: str
    validation_split: float | None
    test_split: float | None
    batch_size: int
    seed: int
    class_names: tuple[str, ...] | None
    multi_label: bool | None

    @classmethod
    def check(
        cls,
        image_dir: object,
        image_size: object,
        filename_column: object,
        label_column: object,
        label_delimiter: object,
        validation_split: object,
        test_split: object,
        batch_size: object,
        seed: object,
        class_names: object,
        multi_label: object,
    ) -> _Settings:
        size = _validation.image_size(image_size)
        columns = (_text("filename_column", filename_column), _text("label_column", label_column))
        if not isinstance(label_delimiter, str) or not label_delimiter:
            msg = (
                "label_delimiter must be a non-empty string. "
                f"Received: label_delimiter={label_delimiter!r}"
            )
            raise InvalidArgumentError(msg)
        validation = (
            None
            if validation_split is None
            else _validation.fraction("validation_split", validation_split)
        )
        test = None if test_split is None else _validation.fraction("test_split", test_split)
        if test is not None and validation is None:
            msg = (
                "test_split moves part of the validation rows into a test set, but there is "
                f"no validation set: pass validation_split too. Received: test_split={test_split}"
            )
            raise InvalidArgumentError(msg)
        if seed is None:
            chosen = int(np.random.default_rng().integers(2**31))
        elif (number := _validation.as_int(seed)) is None:
            msg = f"seed must be an int or None. Received: seed={seed!r}"
            raise InvalidArgumentError(msg)
        else:
            chosen = number
        if multi_label is not None and not isinstance(multi_label, bool):
            msg = f"multi_label must be True, False or None. Received: multi_label={multi_label!r}"
            raise InvalidArgumentError(msg)
        return cls(
            folder=_image_folder(image_dir),
            size=size,
            columns=columns,
            delimiter=label_delimiter,
            validation_split=validation,
            test_split=test,
            batch_size=_validation.positive_int("batch_size", batch_size),
            seed=chosen,
            class_names=_validation.class_names(class_names),
            multi_label=multi_label,
        )


def _path(name: str, value: object) -> Path:
    if isinstance(value, bytes) or not isinstance(value, (str, os.PathLike)):
        msg = f"{name} must be a path (str or os.PathLike). Received: {name}={value!r}"
        raise InvalidArgumentError(msg)
    return Path(value)


def _text(name: str, value: object) -> str:
    if not isinstance(value, str) or not value:
        msg = f"{name} must be a non-empty string. Received: {name}={value!r}"
        raise InvalidArgumentError(msg)
    return value


def _image_folder(image_dir: object) -> Path:
    folder = _path("image_dir", image_dir)
    if not folder.is_dir():
        msg = (
            f"No such folder: {os.fspath(folder)!r}; image_dir must be the folder the file "
            f"names are relative to. Received: image_dir={os.fspath(folder)!r}"
        )
        raise DataError(msg)
    return folder


def _require_columns(present: list[str], required: Sequence[str], source: str) -> None:
    missing = [column for column in required if column not in present]
    if missing:
        msg = (
            f"{source} has no column {' or '.join(repr(c) for c in missing)}; its columns are "
            f"{present}. Name the columns with filename_column= and label_column=. "
            f"Received: missing columns={missing}"
        )
        raise DataError(msg)


# ---------------------------------------------------------------------- rows and datasets


def _build(
    cells: Sequence[tuple[str, object, object]], settings: _Settings, source: str
) -> DirectoryData:
    rows = table_rows.parse(cells, settings.delimiter, source)
    names = table_rows.class_names(rows, settings.class_names, source)
    multi = settings.multi_label
    if multi is None:
        multi = any(len(row.labels) > 1 for row in rows)
    elif not multi:
        table_rows.refuse_several_labels(rows, source)
    files = table_rows.existing_files(rows, settings.folder, source)
    # The check folders get, before any dataset is built; it finds each photo's orientation.
    orientations = np.array(checked_files(files)[1], np.int32)
    counts = _split_counts(len(rows), settings, source)

    order = np.random.default_rng(settings.seed).permutation(len(rows))
    index = {name: i for i, name in enumerate(names)}
    targets: np.ndarray
    if multi:
        targets = np.zeros((len(rows), len(names)), np.float32)
        for i, row in enumerate(rows):
            targets[i, [index[label] for label in row.labels]] = 1.0
    else:
        targets = np.array([index[row.labels[0]] for row in rows], np.int32)
    columns = (np.array([os.fspath(f) for f in files]), orientations, targets)
    held_out = counts.get("validation", 0) + counts.get("test", 0)
    train_rows = np.sort(order[held_out:])  # table order, shuffled by the pipeline
    validation_rows = np.sort(order[counts.get("test", 0) : held_out])
    test_rows = np.sort(order[: counts.get("test", 0)])

    def dataset(rows_: np.ndarray, *, shuffle: bool) -> Any:
        return _dataset(tuple(c[rows_] for c in columns), names, settings, shuffle=shuffle)

    return DirectoryData(
        train=dataset(train_rows, shuffle=True),
        validation=dataset(validation_rows, shuffle=False) if "validation" in counts else None,
        test=dataset(test_rows, shuffle=False) if "test" in counts else None,
        class_names=names,
        counts=counts,
    )


def _split_counts(total: int, settings: _Settings, source: str) -> dict[str, int]:
    counts = {"train": total}
    for name, fraction, side in (
        ("validation_split", settings.validation_split, "train"),
        ("test_split", settings.test_split, "validation"),
    ):
        if fraction is None:
            continue
        held_out = int(fraction * counts[side])  # Keras' rule, as from_directory uses
        if held_out in (0, counts[side]):
            msg = (
                f"{name}={fraction} of {counts[side]} rows of {source} holds out "
                f"{'none' if held_out == 0 else 'all'} of them; each side of the split needs "
                f"at least one image. Received: {name}={fraction}"
            )
            raise DataError(msg)
        counts[side] -= held_out
        counts["validation" if side == "train" else "test"] = held_out
    return counts


def _dataset(
    columns: tuple[np.ndarray, ...],
    names: tuple[str, ...],
    settings: _Settings,
    *,
    shuffle: bool,
) -> Any:
    """Batches of the rows' images and targets; ``columns`` are paths, orientations, targets."""

    def load(path: tf.Tensor, orientation: tf.Tensor, target: tf.Tensor) -> Any:
        return decode(path, orientation, settings.size), target  # the pixels folders give

    paths = columns[0]
    dataset = tf.data.Dataset.from_tensor_slices(columns)
    if shuffle:
        dataset = dataset.shuffle(len(paths), seed=settings.seed, reshuffle_each_iteration=True)
    dataset = dataset.map(load, num_parallel_calls=tf.data.AUTOTUNE)
    batched = dataset.batch(settings.batch_size).prefetch(tf.data.AUTOTUNE)
    batched.class_names = list(names)
    batched.file_paths = [str(p) for p in paths]  # to name a file damaged mid-way
    if shuffle:  # interpretation reads it in table order, where file_paths name each image
        batched.in_table_order = _dataset(columns, names, settings, shuffle=False)
    return batched
