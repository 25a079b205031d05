"""Photos reach the model the way a viewer shows them, whatever their EXIF orientation.

A camera stores a scene turned or mirrored and records, in the EXIF orientation tag (1 to 8),
how to show it. Each test photo here is one scene (32 high, 64 wide, four colored quadrants)
stored by hand with numpy the way a camera holding it in orientation ``k`` would, written by
Pillow as a JPEG tagged ``k``. Read at the scene's size, every one of them must give the
scene back, on every path that reads files: ``from_directory``, ``from_csv``, ``from_files``
and ``load_images``. JPEG is lossy, so pixels are compared with a tolerance; the quadrants
sit on JPEG's 16-pixel blocks and the files keep full color resolution, so the tolerance can
be tight next to the distance between the colors.
"""

from __future__ import annotations

import io
import struct
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageOps

from images import encode, write_image
from transferkit import data
from transferkit.data.orientation import read_orientation

HEIGHT, WIDTH = 32, 64
COLORS = {"top left": (220, 30, 30), "top right": (30, 200, 40)}
COLORS |= {"bottom left": (40, 50, 230), "bottom right": (230, 220, 40)}
# Per pixel, JPEG's error on these flat blocks (measured: 1); the colors differ by over 150.
TOLERANCE = 6


def scene() -> np.ndarray:
    pixels = np.zeros((HEIGHT, WIDTH, 3), np.uint8)
    half_h, half_w = HEIGHT // 2, WIDTH // 2
    pixels[:half_h, :half_w] = COLORS["top left"]
    pixels[:half_h, half_w:] = COLORS["top right"]
    pixels[half_h:, :half_w] = COLORS["bottom left"]
    pixels[half_h:, half_w:] = COLORS["bottom right"]
    return pixels


# How a viewer shows stored pixels tagged k (the EXIF specification's eight cases).
SHOWN: dict[int, Callable[[np.ndarray], np.ndarray]] = {
    1: lambda p: p,
    2: lambda p: p[:, ::-1],  # mirrored left-right
    3: lambda p: p[::-1, ::-1],  # turned 180 degrees
    4: lambda p: p[::-1, :],  # mirrored top-bottom
    5: lambda p: p.transpose(1, 0, 2),  # mirrored along the main diagonal
    6: lambda p: np.rot90(p, -1),  # turned 90 degrees clockwise
    7: lambda p: p[::-1, ::-1].transpose(1, 0, 2),  # mirrored along the other diagonal
    8: lambda p: np.rot90(p, 1),  # turned 90 degrees counterclockwise
}
# How a camera stores the scene to be shown by SHOWN[k]: the inverse of each.
STORED: dict[int, Callable[[np.ndarray], np.ndarray]] = {
    **{k: SHOWN[k] for k in (1, 2, 3, 4, 5, 7)},  # each is its own inverse
    6: lambda p: np.rot90(p, 1),
    8: lambda p: np.rot90(p, -1),
}
ORIENTATIONS = sorted(SHOWN)


def write_photo(path: Path, orientation: int) -> Path:
    """The scene stored as orientation ``orientation`` says, in a JPEG tagged with it."""
    exif = Image.Exif()
    exif[0x0112] = orientation
    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.fromarray(np.ascontiguousarray(STORED[orientation](scene())))
    image.save(path, "JPEG", exif=exif, quality=95, subsampling=0)
    return path


def assert_shows_the_scene(image: np.ndarray) -> None:
    assert image.shape == (HEIGHT, WIDTH, 3)
    worst = float(np.abs(image.astype(np.float32) - scene()).max())
    assert worst <= TOLERANCE, f"differs from the scene by up to {worst}"


@pytest.fixture
def photos(tmp_path: Path) -> dict[int, Path]:
    return {k: write_photo(tmp_path / "photos" / f"k{k}.jpg", k) for k in ORIENTATIONS}


# ---------------------------------------------------------------------- the test data


@pytest.mark.parametrize("orientation", ORIENTATIONS)
def test_stored_photos_are_the_scene_turned_as_their_tag_says(orientation):
    stored = STORED[orientation](scene())

    np.testing.assert_array_equal(SHOWN[orientation](stored), scene())
    assert stored.shape == ((HEIGHT, WIDTH, 3) if orientation <= 4 else (WIDTH, HEIGHT, 3))


@pytest.mark.parametrize("orientation", ORIENTATIONS)
def test_a_viewer_shows_each_photo_as_the_scene(photos, orientation):
    # Pillow's exif_transpose is what viewers do: an independent check of SHOWN and STORED.
    with Image.open(photos[orientation]) as image:
        shown = np.asarray(ImageOps.exif_transpose(image))

    assert_shows_the_scene(shown)


# ---------------------------------------------------------------------- every reading path


@pytest.mark.parametrize("orientation", ORIENTATIONS)
def test_load_images_shows_each_orientation_upright(photos, orientation):
    loaded = data.load_images([photos[orientation]], (HEIGHT, WIDTH))

    assert_shows_the_scene(loaded[0])


def test_from_files_shows_every_photo_upright(photos):
    files = [photos[k] for k in ORIENTATIONS]

    images = np.concatenate(list(data.from_files(files, (HEIGHT, WIDTH), 3).as_numpy_iterator()))

    assert len(images) == len(ORIENTATIONS)
    for image in images:
        assert_shows_the_scene(image)


def test_from_directory_shows_every_photo_upright(tmp_path, photos):
    write_image(tmp_path / "drawings" / "scene.png", scene())

    folder = data.from_directory(tmp_path, (HEIGHT, WIDTH), batch_size=4, validation_split=0.3)
    splits = [folder.train, folder.validation]
    images = np.concatenate([x for split in splits for x, _ in split.as_numpy_iterator()])

    assert len(images) == len(ORIENTATIONS) + 1
    for image in images:
        assert_shows_the_scene(image)


def test_from_csv_shows_every_photo_upright(tmp_path, photos):
    rows = [f"photos/k{k}.jpg,{'cat' if k % 2 else 'dog'}" for k in ORIENTATIONS]
    (tmp_path / "labels.csv").write_text("\n".join(["filename,labels", *rows]) + "\n")

    table = data.from_csv(tmp_path / "labels.csv", tmp_path, image_size=(HEIGHT, WIDTH))
    images = np.concatenate([x for x, _ in table.train.as_numpy_iterator()])

    assert len(images) == len(ORIENTATIONS)
    for image in images:
        assert_shows_the_scene(image)


def test_a_png_without_exif_is_read_unchanged(tmp_path):
    path = write_image(tmp_path / "scene.png", scene())

    np.testing.assert_array_equal(data.load_images([path], (HEIGHT, WIDTH))[0], scene())


# ---------------------------------------------------------------------- the parser


def _jpeg_with_app1(payloads: list[bytes]) -> bytes:
    """A real JPEG with the given APP1 segments inserted after its start-of-image marker."""
    jpeg = encode(scene(), ".jpg")
    segments = b"".join(b"\xff\xe1" + struct.pack(">H", len(p) + 2) + p for p in payloads)
    return jpeg[:2] + segments + jpeg[2:]


def _exif(orientation: int, order: str = "<", ifd_at: int = 8) -> bytes:
    """An Exif payload whose first IFD (at ``ifd_at``) holds the orientation, as a SHORT."""
    mark = b"II" if order == "<" else b"MM"
    tiff = mark + struct.pack(order + "HI", 42, ifd_at) + bytes(ifd_at - 8)
    tiff += struct.pack(order + "H", 1) + struct.pack(order + "HHIHH", 0x0112, 3, 1, orientation, 0)
    return b"Exif\x00\x00" + tiff + bytes(4)


@pytest.mark.parametrize("order", ["<", ">"], ids=["little-endian", "big-endian"])
def test_the_parser_reads_either_byte_order(order):
    assert read_orientation(io.BytesIO(_jpeg_with_app1([_exif(6, order)]))) == 6


def test_the_parser_reads_a_tag_far_into_a_long_exif_segment():
    assert read_orientation(io.BytesIO(_jpeg_with_app1([_exif(3, ifd_at=20_000)]))) == 3


def test_the_parser_skips_an_xmp_segment_before_the_exif_one():
    xmp = b"http://ns.adobe.com/xap/1.0/\x00<x:xmpmeta/>"

    assert read_orientation(io.BytesIO(_jpeg_with_app1([xmp, _exif(8)]))) == 8


@pytest.mark.parametrize(
    "payloads",
    [[], [_exif(0)], [_exif(9)], [_exif(6)[:20]], [b"Exif\x00\x00XX\x00\x2a"]],
    ids=["no-exif", "zero", "nine", "cut-short", "bad-byte-order"],
)
def test_a_missing_or_malformed_tag_counts_as_upright(payloads):
    assert read_orientation(io.BytesIO(_jpeg_with_app1(payloads))) == 1


def test_a_tag_after_the_pixels_is_not_read():
    jpeg = encode(scene(), ".jpg")
    exif = _exif(6)
    late = jpeg[:-2] + b"\xff\xe1" + struct.pack(">H", len(exif) + 2) + exif + jpeg[-2:]

    assert read_orientation(io.BytesIO(late)) == 1
