"""Photos the right way up: the EXIF orientation of a JPEG, read cheaply and applied in TF.

A camera or phone stores the pixels as the sensor saw them and records how to turn them for
display in the EXIF orientation tag (values 1 to 8). Viewers apply it; ``tf.io.decode_image``
does not, so without this a portrait photo reaches the model on its side.

:func:`read_orientation` is a small pure-Python parser that walks a JPEG's segments up to its
pixels and reads tag 0x0112 of the first IFD in the APP1 ``Exif`` segment. The upfront file
check calls it while it has the file open, so finding the orientation costs no decode and no
extra file opening. :func:`upright` then turns the decoded pixels inside the ``tf.data`` map,
before they are resized; an image without the tag (orientation 1) goes through unchanged.

Only JPEG files are read for the tag: it is where cameras and phones write it. A tag that is
missing, malformed or out of range counts as 1 (as stored), as viewers treat it.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from typing import BinaryIO

import tensorflow as tf

__all__ = ["UPRIGHT", "read_orientation", "upright"]

#: The orientation of an image stored the way it is shown (or carrying no tag).
UPRIGHT = 1

_EXIF_HEADER = b"Exif\x00\x00"
_ORIENTATION_TAG = 0x0112
_SHORT = 3  # the TIFF type of the orientation tag
_APP1, _START_OF_SCAN, _END_OF_IMAGE = 0xE1, 0xDA, 0xD9
# Markers that stand alone, without a length: TEM and the restart markers.
_STANDALONE = frozenset({0x01, *range(0xD0, 0xD8)})
_MAX_SEGMENTS = 64  # segments before the pixels; a real file has fewer than 20
_PREFIX_BYTES = 1024  # of an APP1 segment, read first

# Displaying orientation k = flip left-right (when FLIPPED[k]), then QUARTER_TURNS[k]
# counterclockwise turns, as tf.image.rot90 and np.rot90 turn (index 0 is unused).
_FLIPPED = (False, False, True, False, True, True, False, True, False)
_QUARTER_TURNS = (0, 0, 0, 2, 2, 1, 3, 3, 1)


def read_orientation(file: BinaryIO) -> int:
    """The EXIF orientation of an open JPEG file, from 1 to 8 (1 when it has none).

    Args:
        file: a JPEG file opened in binary mode. Its position is changed.

    Returns:
        The orientation tag's value, or 1 (upright) when the file has no Exif segment, no
        orientation tag, or one that is malformed or outside 1 to 8.
    """
    try:
        for length in _app1_segments(file):
            # The first IFD is near the start of a segment that thumbnails make long.
            prefix = file.read(min(length, _PREFIX_BYTES))
            if not prefix.startswith(_EXIF_HEADER):
                continue  # another APP1 (XMP): the Exif one may follow
            found = _orientation_in_tiff(prefix[len(_EXIF_HEADER) :])
            if found is None and len(prefix) < length:
                rest = file.read(length - len(prefix))
                found = _orientation_in_tiff(prefix[len(_EXIF_HEADER) :] + rest)
            return found or UPRIGHT
    except OSError:
        pass
    return UPRIGHT


def upright(image: tf.Tensor, orientation: tf.Tensor) -> tf.Tensor:
    """Turns decoded pixels the way their EXIF orientation says a viewer shows them.

    Args:
        image: a decoded image, ``(height, width, channels)``.
        orientation: int scalar tensor, the EXIF orientation (1 to 8) of its file.

    Returns:
        The image as a viewer shows it: the same tensor for orientation 1, else flipped
        and turned (height and width swap for orientations 5 to 8).
    """
    orientation = tf.cast(orientation, tf.int32)

    def turned() -> tf.Tensor:
        flipped = tf.cond(
            tf.gather(_FLIPPED, orientation),
            lambda: tf.image.flip_left_right(image),
            lambda: image,
        )
        return tf.image.rot90(flipped, tf.gather(_QUARTER_TURNS, orientation))

    return tf.cond(orientation > UPRIGHT, turned, lambda: image)


def _app1_segments(file: BinaryIO) -> Iterator[int]:
    """Places ``file`` at each APP1 segment before the pixels in turn, yielding its length."""
    file.seek(2)  # past the start-of-image marker, which the check has seen
    for _ in range(_MAX_SEGMENTS):
        marker = _next_marker(file)
        if marker is None or marker in (_START_OF_SCAN, _END_OF_IMAGE):
            return
        if marker in _STANDALONE:
            continue
        size = file.read(2)
        if len(size) < 2 or int.from_bytes(size, "big") < 2:
            return
        length = int.from_bytes(size, "big") - 2
        end = file.tell() + length
        if marker == _APP1:
            yield length
        file.seek(end)


def _next_marker(file: BinaryIO) -> int | None:
    if file.read(1) != b"\xff":
        return None  # not at a marker: the file is not what its signature says
    byte = file.read(1)
    while byte == b"\xff":  # fill bytes may pad a marker
        byte = file.read(1)
    return byte[0] if byte else None


def _orientation_in_tiff(tiff: bytes) -> int | None:
    """The orientation in the first IFD of TIFF data; None if the data ends before it does."""
    if len(tiff) < 8:
        return None
    order = {b"II": "<", b"MM": ">"}.get(tiff[:2])
    if order is None:
        return UPRIGHT
    magic, first_ifd = struct.unpack_from(order + "HI", tiff, 2)
    if magic != 42:
        return UPRIGHT
    if first_ifd + 2 > len(tiff):
        return None
    (entries,) = struct.unpack_from(order + "H", tiff, first_ifd)
    for start in range(first_ifd + 2, first_ifd + 2 + 12 * entries, 12):
        if start + 12 > len(tiff):
            return None
        tag, kind, count = struct.unpack_from(order + "HHI", tiff, start)
        if tag == _ORIENTATION_TAG:
            (value,) = struct.unpack_from(order + "H", tiff, start + 8)
            valid = kind == _SHORT and count == 1 and UPRIGHT <= value <= 8
            return value if valid else UPRIGHT
    return UPRIGHT
