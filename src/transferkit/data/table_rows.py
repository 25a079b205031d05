"""The rows of a table of image files and labels, read and checked before any file is read.

A row is a file name and its labels. Every problem is found for every row before any file is
read, so one message lists all the rows to fix, with their line numbers (or DataFrame index).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from transferkit.errors import DataError

__all__ = ["Row", "class_names", "existing_files", "parse", "refuse_several_labels"]

_MAX_LISTED = 10


@dataclass(frozen=True)
class Row:
    """One row of a table: where it is, the file it names and its labels."""

    where: str  # "line 3" of a CSV file, "index 7" of a DataFrame
    filename: str
    labels: tuple[str, ...]


def parse(cells: Iterable[tuple[str, object, object]], delimiter: str, source: str) -> list[Row]:
    """The rows of ``(where, file name, labels)`` cells, each with a file and a label."""
    rows: list[Row] = []
    no_file: list[str] = []
    no_label: list[str] = []
    for where, filename, labels in cells:
        name = _cell(filename)
        if isinstance(labels, (list, tuple, np.ndarray)):
            found = [_cell(label) for label in labels]
        else:
            found = _cell(labels).split(delimiter)
        kept = tuple(dict.fromkeys(label.strip() for label in found if label.strip()))
        if not name:
            no_file.append(where)
        if not kept:
            no_label.append(f"{where} ({name})" if name else where)
        rows.append(Row(where, name, kept))
    if not rows:
        msg = f"{source} has no rows. Received: {source}"
        raise DataError(msg)
    if no_file:
        msg = f"Rows of {source} with an empty file name: {_listing(no_file)}. Received: {source}"
        raise DataError(msg)
    if no_label:
        msg = (
            f"Rows of {source} with an empty label cell: {_listing(no_label)}. Every image "
            f"needs at least one label; fill them in or drop the rows. Received: {source}"
        )
        raise DataError(msg)
    seen: dict[str, str] = {}
    repeated = [
        f"{row.filename} ({seen[row.filename]} and {row.where})"
        for row in rows
        if seen.setdefault(row.filename, row.where) != row.where
    ]
    if repeated:
        msg = (
            f"Files listed more than once in {source}: {_listing(repeated)}. Give each image "
            f"one row holding all its labels. Received: {source}"
        )
        raise DataError(msg)
    return rows


def _cell(value: object) -> str:
    # A DataFrame holds NaN (a float) where a CSV cell was empty.
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return ""
    return str(value).strip()


def class_names(
    rows: Sequence[Row], expected: tuple[str, ...] | None, source: str
) -> tuple[str, ...]:
    """The class names: ``expected`` if every label is one of them, else the sorted labels."""
    found = {label for row in rows for label in row.labels}
    if expected is not None:
        # Classes no row has are allowed: a test table need not hold every class.
        unknown = sorted(found - set(expected))
        if unknown:
            msg = (
                f"The labels of {source} include {unknown}, which are not in class_names "
                f"{list(expected)}. Received: class_names={list(expected)}"
            )
            raise DataError(msg)
        return expected
    if len(found) < 2:
        msg = (
            f"{source} has only the label {sorted(found)}; a classifier needs at least two "
            f"classes. Received: {source}"
        )
        raise DataError(msg)
    return tuple(sorted(found))


def refuse_several_labels(rows: Sequence[Row], source: str) -> None:
    """Raises a DataError naming the rows with more than one label, if there are any."""
    several = [
        f"{row.where} ({row.filename}: {' '.join(row.labels)})"
        for row in rows
        if len(row.labels) > 1
    ]
    if several:
        msg = (
            f"Rows of {source} with more than one label: {_listing(several)}, but "
            "multi_label=False. Pass multi_label=True (or None) for multi-label data, or "
            f"check label_delimiter. Received: multi_label=False"
        )
        raise DataError(msg)


def existing_files(rows: Sequence[Row], folder: Path, source: str) -> list[Path]:
    """The rows' files in ``folder``, if they all exist."""
    files = [folder / row.filename for row in rows]
    missing = [
        f"{row.where} ({row.filename})"
        for row, f in zip(rows, files, strict=True)
        if not f.is_file()
    ]
    if missing:
        msg = (
            f"{len(missing)} rows of {source} name files that do not exist in "
            f"{os.fspath(folder)!r}: {_listing(missing)}. Fix the file names or image_dir. "
            f"Received: image_dir={os.fspath(folder)!r}"
        )
        raise DataError(msg)
    return files


def _listing(items: Sequence[str]) -> str:
    more = f" and {len(items) - _MAX_LISTED} more" if len(items) > _MAX_LISTED else ""
    return ", ".join(items[:_MAX_LISTED]) + more
