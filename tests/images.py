"""Writing real image files for tests: class folders, grayscale and RGBA images, bad files."""

from __future__ import annotations

import io
from collections.abc import Mapping
from pathlib import Path

import numpy as np
from PIL import Image

from conftest import separable_images

_FORMATS = {".jpg": "JPEG", ".jpeg": "JPEG", ".png": "PNG", ".gif": "GIF", ".bmp": "BMP"}


def encode(pixels: np.ndarray, suffix: str = ".png", mode: str | None = None) -> bytes:
    """The bytes of an image file holding ``pixels`` (converted to ``mode`` when given)."""
    image = Image.fromarray(pixels)
    if mode == "P":
        image = image.convert("P", palette=Image.Palette.ADAPTIVE)  # exact colors, no dither
    elif mode is not None:
        image = image.convert(mode)
    buffer = io.BytesIO()
    image.save(buffer, _FORMATS[suffix.lower()])
    return buffer.getvalue()


def write_image(
    path: Path, pixels: np.ndarray, suffix: str | None = None, mode: str | None = None
) -> Path:
    """Writes ``pixels`` (uint8, HxWx3 or HxW) as a real image file; returns the path."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(encode(pixels, suffix or path.suffix, mode))
    return path


def write_class_folders(
    root: Path,
    counts: Mapping[str, int],
    size: int = 32,
    suffix: str = ".png",
    seed: int = 0,
) -> Path:
    """Writes ``root/<class>/<i><suffix>`` images whose class is told by their color.

    Class ``k`` (in sorted name order) has bright channel ``k % 3``, as
    ``conftest.separable_images``, so a few epochs can learn it.
    """
    names = sorted(counts)
    total = sum(counts.values())
    pixels, labels = separable_images(max(total * len(names), 1), size, len(names), seed)
    by_class = {k: pixels[labels == k] for k in range(len(names))}
    for index, name in enumerate(names):
        folder = root / name
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(counts[name]):
            write_image(folder / f"{name}{i}{suffix}", by_class[index][i], suffix)
    return root


def write_split_folders(
    root: Path,
    train: Mapping[str, int],
    validation: Mapping[str, int],
    size: int = 32,
    suffix: str = ".png",
) -> Path:
    """Writes the recipe's layout: ``root/train/<class>/`` and ``root/validation/<class>/``."""
    write_class_folders(root / "train", train, size, suffix, seed=1)
    write_class_folders(root / "validation", validation, size, suffix, seed=2)
    return root


def uniform_pixels(value: int | tuple[int, int, int], size: int = 32) -> np.ndarray:
    """A size x size RGB image of one color (kept exactly by any resize)."""
    color = (value, value, value) if isinstance(value, int) else value
    return np.broadcast_to(np.array(color, np.uint8), (size, size, 3)).copy()


def write_truncated_jpeg(path: Path, size: int = 32) -> Path:
    """A JPEG cut short, as an interrupted download leaves it (TensorFlow cannot decode it)."""
    data = encode(np.random.default_rng(0).integers(0, 255, (size, size, 3), np.uint8), ".jpg")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data[: len(data) // 2])
    return path


def write_text_file(path: Path, text: str = "not an image\n") -> Path:
    """A text file (with whatever name it is given, ``.jpg`` included)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


#: The objects of :func:`write_composed_images`: a square whose color names it.
OBJECT_COLORS = {"red": (220, 30, 30), "green": (30, 200, 40), "blue": (40, 50, 230)}


def composed_pixels(left: str, right: str, rng: np.random.Generator, half: int = 16) -> np.ndarray:
    """Two objects side by side: a ``half`` x ``2 * half`` image, one colored square per half."""
    image = rng.integers(0, 50, (half, 2 * half, 3)).astype(np.uint8)
    for offset, name in ((0, left), (half, right)):
        side = int(rng.integers(half - 4, half + 1))
        top, start = rng.integers(0, half - side + 1, 2)
        image[top : top + side, offset + start : offset + start + side] = OBJECT_COLORS[name]
    return image


def write_composed_images(root: Path, count: int, seed: int = 0) -> tuple[Path, list[set[str]]]:
    """Writes ``count`` composed images and ``root/labels.csv`` naming both objects of each.

    Returns:
        The CSV path and each image's label set, in row order.
    """
    rng = np.random.default_rng(seed)
    names = sorted(OBJECT_COLORS)
    rows = ["filename,labels"]
    label_sets = []
    for i in range(count):
        left, right = (names[int(k)] for k in rng.integers(0, len(names), 2))
        write_image(root / f"{i:03d}.png", composed_pixels(left, right, rng))
        labels = sorted({left, right})
        rows.append(f"{i:03d}.png,{' '.join(labels)}")
        label_sets.append(set(labels))
    (root / "labels.csv").write_text("\n".join(rows) + "\n")
    return root / "labels.csv", label_sets
