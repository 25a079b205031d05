"""Which files TensorFlow can decode as images, found cheaply, and messages that name them.

:func:`inspect_file` reads the first 32 bytes and the last KiB of a file (the format's
signature and its end marker) and decodes only files that look cut short, or whose format has
no end marker (BMP, WebP, JPEG XL, some of whose variants TensorFlow cannot decode). While a
JPEG is open it also reads its EXIF orientation (:mod:`transferkit.data.orientation`), which
:func:`decode` applies, so every path that reads image files shows them the way up a viewer
does. See :mod:`transferkit.data.folders` for what the check misses, and
:doc:`/performance` for what it costs.
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Union

import tensorflow as tf

from transferkit.data.orientation import UPRIGHT, read_orientation, upright
from transferkit.errors import DataError

__all__ = [
    "bad_files",
    "check_file",
    "checked_files",
    "decode",
    "decode_problem",
    "inspect_file",
    "listing",
    "raise_for_bad_files",
    "relative",
    "show",
    "undecodable_files_named",
]

_HEAD_BYTES = 32
_TAIL_BYTES = 1024
# TensorFlow's op errors start with the function node and end with the op's name.
_OP_ERROR_NOISE = re.compile(r"^\{\{[^}]*\}\}\s*|\s*\[Op:\w+\]$")
_KIND_LABELS = {"jpeg": "JPEG", "png": "PNG", "gif": "GIF", "bmp": "BMP", "webp": "WebP"}
_MAX_LISTED = 10

PathLike = Union[str, "os.PathLike[str]"]


def check_file(path: Path) -> str | None:
    """Why TensorFlow cannot decode ``path`` as an image, or None if it can."""
    return inspect_file(path)[0]


def inspect_file(path: Path) -> tuple[str | None, int]:
    """Why TensorFlow cannot decode ``path`` (None if it can), and its EXIF orientation."""
    try:
        size = path.stat().st_size
        with path.open("rb") as file:
            head = file.read(_HEAD_BYTES)
            kind = _sniff(head)
            # Exif comes first in a JPEG: it is mostly in the block the buffer already holds.
            orientation = read_orientation(file) if kind == "jpeg" else UPRIGHT
            file.seek(max(size - _TAIL_BYTES, 0))
            tail = file.read()
    except OSError as exc:
        return f"unreadable: {exc.strerror or exc}", UPRIGHT
    return _problem(path, head, kind, tail), orientation


def _problem(path: Path, head: bytes, kind: str | None, tail: bytes) -> str | None:
    if not head:
        return "empty file"
    if kind is None:
        return "not a JPEG, PNG, GIF, BMP, WebP or JPEG XL image"
    if _looks_complete(kind, tail):
        return None
    # No end marker to see (or it is missing: valid files may carry trailing bytes): decode.
    problem = decode_problem(path)
    if problem is None:
        return None
    if kind in ("jpeg", "png", "gif"):
        return f"truncated or corrupt {kind.upper()}"
    return f"{_KIND_LABELS.get(kind, kind.upper())} that TensorFlow cannot decode: {problem}"


def checked_files(paths: Iterable[PathLike]) -> tuple[list[Path], list[int]]:
    """The files, checked as :func:`inspect_file` does, and their EXIF orientations.

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
    found = [inspect_file(f) for f in files]
    raise_for_bad_files([(f, bad) for f, (bad, _) in zip(files, found, strict=True) if bad], None)
    return files, [orientation for _, orientation in found]


def decode(path: tf.Tensor, orientation: tf.Tensor, size: tuple[int, int]) -> tf.Tensor:
    """An image file's pixels as every dataset gives them: RGB, upright, resized (float32).

    Decoded as Keras' ``image_dataset_from_directory`` decodes (so pixels match what models
    trained on such datasets saw), turned by its EXIF orientation before the bilinear resize
    (so the aspect ratio squeezed is the one a viewer shows).
    """
    image = tf.io.decode_image(tf.io.read_file(path), channels=3, expand_animations=False)
    resized = tf.image.resize(upright(image, orientation), size, method="bilinear")
    resized.set_shape((*size, 3))
    return resized


def decode_problem(path: Path) -> str | None:
    """What ``tf.io.decode_image`` says about ``path``, as the training datasets call it."""
    try:
        tf.io.decode_image(tf.io.read_file(os.fspath(path)), channels=3, expand_animations=False)
    except tf.errors.OpError as exc:
        return _OP_ERROR_NOISE.sub("", exc.message.strip()) or type(exc).__name__
    return None


def _sniff(head: bytes) -> str | None:
    # The signatures tf.io.decode_image recognizes; it tells formats by content, not name.
    if head.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if head.startswith((b"GIF87a", b"GIF89a")):
        return "gif"
    if head.startswith(b"BM"):
        return "bmp"
    if head.startswith(b"RIFF") and head[8:12] == b"WEBP":
        return "webp"
    if head.startswith((b"\xff\x0a", b"\x00\x00\x00\x0cJXL ")):
        return "jpeg xl"
    return None


def _looks_complete(kind: str, tail: bytes) -> bool:
    if kind == "jpeg":
        return b"\xff\xd9" in tail  # end-of-image marker
    if kind == "png":
        return b"IEND" in tail
    if kind == "gif":
        return tail.rstrip(b"\x00").endswith(b";")  # trailer byte
    return False  # BMP, WebP, JPEG XL: no end marker, and variants TensorFlow cannot decode


def raise_for_bad_files(bad: list[tuple[Path, str]], folder: Path | None) -> None:
    """Raises a DataError that names the bad files, if there are any."""
    if not bad:
        return
    received = show(folder) if folder else bad_files(bad, None, count=False)
    msg = (
        f"{bad_files(bad, folder)}. Delete or move them and run again (every file is checked "
        "before training so that a bad one cannot stop an epoch halfway). "
        f"Received: path={received}"
    )
    raise DataError(msg)


def bad_files(bad: list[tuple[Path, str]], folder: Path | None, *, count: bool = True) -> str:
    """The bad files and their problems, as a message names them."""
    shown = ", ".join(f"{relative(f, folder)} ({problem})" for f, problem in bad[:_MAX_LISTED])
    more = f" and {len(bad) - _MAX_LISTED} more" if len(bad) > _MAX_LISTED else ""
    if not count:
        return shown + more
    where = f" in {show(folder)}" if folder is not None else ""
    return f"{len(bad)} files{where} cannot be decoded as images: {shown}{more}"


@contextlib.contextmanager
def undecodable_files_named(*datasets: object) -> Iterator[None]:
    """Turns a decoder error raised while ``datasets`` are read into a DataError naming files.

    A file damaged in its middle passes :func:`check_images` and fails only when it is
    decoded, mid-epoch, with an error that names no file. On that error, this decodes the
    files the datasets were made from (their ``file_paths``, as this module and Keras set
    them) and raises a :class:`~transferkit.errors.DataError` naming the bad ones. Any other
    error, or one with no bad file to name, passes through unchanged.
    """
    try:
        yield
    except tf.errors.InvalidArgumentError as exc:
        files = dict.fromkeys(
            Path(f) for dataset in datasets for f in getattr(dataset, "file_paths", None) or ()
        )
        bad = [(f, problem) for f in files if (problem := decode_problem(f))]
        if not bad:
            raise
        msg = (
            f"{bad_files(bad, None)}. They passed the check before reading started (damage in "
            "the middle of a file shows only when it is decoded). Delete or move them and run "
            "again; with checkpoint_dir, training resumes from the last finished epoch. "
            f"Received: {bad_files(bad, None, count=False)}"
        )
        raise DataError(msg) from exc


# ---------------------------------------------------------------------- messages


def show(path: Path) -> str:
    """A path as a message quotes it."""
    return repr(os.fspath(path))


def relative(path: Path, folder: Path | None) -> str:
    """A path relative to the folder it was found in, when there is one."""
    if folder is None:
        return os.fspath(path)
    return path.relative_to(folder).as_posix()


def listing(paths: Sequence[Path], folder: Path | None = None) -> str:
    """The first few paths, and how many more there are."""
    shown = ", ".join(relative(p, folder) for p in paths[:_MAX_LISTED])
    more = f" and {len(paths) - _MAX_LISTED} more" if len(paths) > _MAX_LISTED else ""
    return shown + more
