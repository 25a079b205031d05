"""The upfront file check agrees with the decoder, and a file damaged in its middle is named.

Every format the check accepts is written for real (Pillow for JPEG, PNG, GIF, BMP and WebP in
several modes; JPEG XL from bytes written by libjxl's ``cjxl``), whole and cut short, and the
check must accept exactly the files ``tf.io.decode_image`` decodes as the training datasets
call it.
"""

from __future__ import annotations

import io
import zlib
from pathlib import Path
from typing import Any

import keras
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

import transferkit as tk
from conftest import TINY_BACKBONE
from images import write_class_folders
from transferkit import data
from transferkit.data.image_files import undecodable_files_named
from transferkit.errors import DataError

# An 8x8 image (red 200, green 120 in the top half), written by `cjxl in.png out.jxl -d 0`:
# the bare codestream, and the same in the ISO BMFF container (`--container=1`).
JXL_CODESTREAM = (
    b"\xff\nA@@q!\x08\x02\x01\x00t\x00K\x18\x8b\x15\xc2\t\xe2mW\xe1\x17\x08\x01\xa0\x90\xfax"
    b"\xd2\x8a\x9f\x0c\x00\x00\x00@\x00\x00\x00\x00"
)
JXL_CONTAINER = (
    b"\x00\x00\x00\x0cJXL \r\n\x87\n\x00\x00\x00\x14ftypjxl \x00\x00\x00\x00jxl \x00\x00\x002"
    b"jxlc" + JXL_CODESTREAM
)
_PIXELS = np.random.default_rng(0).integers(0, 256, (16, 16, 3)).astype(np.uint8)


def _pillow(format_: str, mode: str = "RGB", **options: object) -> bytes:
    image = Image.fromarray(_PIXELS).convert(mode)
    buffer = io.BytesIO()
    if options.pop("animated", False):
        second = Image.fromarray(255 - _PIXELS).convert(mode)
        image.save(buffer, format_, save_all=True, append_images=[second], **options)
    else:
        image.save(buffer, format_, **options)
    return buffer.getvalue()


FILES = {
    "jpeg-rgb": lambda: _pillow("JPEG"),
    "jpeg-gray": lambda: _pillow("JPEG", "L"),
    "jpeg-cmyk": lambda: _pillow("JPEG", "CMYK"),
    "jpeg-progressive": lambda: _pillow("JPEG", progressive=True),
    "png-rgb": lambda: _pillow("PNG"),
    "png-rgba": lambda: _pillow("PNG", "RGBA"),
    "png-palette": lambda: _pillow("PNG", "P"),
    "png-1bit": lambda: _pillow("PNG", "1"),
    "png-animated": lambda: _pillow("PNG", animated=True),
    "gif": lambda: _pillow("GIF"),
    "gif-animated": lambda: _pillow("GIF", animated=True),
    "bmp-rgb": lambda: _pillow("BMP"),
    "bmp-palette": lambda: _pillow("BMP", "P"),
    "bmp-rgba": lambda: _pillow("BMP", "RGBA"),
    "bmp-1bit": lambda: _pillow("BMP", "1"),  # TensorFlow cannot decode it
    "webp-lossy": lambda: _pillow("WEBP"),
    "webp-lossless": lambda: _pillow("WEBP", lossless=True),
    "webp-rgba": lambda: _pillow("WEBP", "RGBA"),
    "webp-animated": lambda: _pillow("WEBP", animated=True),  # TensorFlow cannot decode it
    "jxl": lambda: JXL_CODESTREAM,
    "jxl-container": lambda: JXL_CONTAINER,
}


def decodes(path: Path) -> bool:
    try:
        tf.io.decode_image(tf.io.read_file(str(path)), channels=3, expand_animations=False)
    except tf.errors.OpError:
        return False
    return True


def accepted(path: Path) -> bool:
    try:
        data.check_images([path])
    except DataError:
        return False
    return True


@pytest.mark.parametrize("cut", [None, 0.5, 0.9], ids=["whole", "half", "most"])
@pytest.mark.parametrize("kind", sorted(FILES))
def test_the_check_accepts_exactly_what_tensorflow_decodes(tmp_path, kind, cut):
    blob = FILES[kind]()
    path = tmp_path / "image.png"  # the content decides, as for tf.io.decode_image
    path.write_bytes(blob if cut is None else blob[: int(len(blob) * cut)])

    assert accepted(path) == decodes(path)


def test_files_tensorflow_cannot_decode_are_named_with_the_decoders_reason(tmp_path):
    (tmp_path / "a.bmp").write_bytes(_pillow("BMP", "1"))
    (tmp_path / "b.png").write_bytes(_pillow("WEBP", animated=True))

    with pytest.raises(DataError) as error:
        data.check_images([tmp_path / "a.bmp", tmp_path / "b.png"])

    message = str(error.value)
    assert "2 files cannot be decoded as images" in message
    assert "a.bmp (BMP that TensorFlow cannot decode: Number of channels" in message
    assert "b.png (WebP that TensorFlow cannot decode: WebP Animation" in message


def test_a_jpeg_xl_file_is_read_with_its_pixels(tmp_path):
    write_class_folders(tmp_path, {"a": 2, "b": 2}, size=8)
    (tmp_path / "a" / "xl.jpg").write_bytes(JXL_CONTAINER)

    train = data.from_directory(tmp_path, 8, batch_size=8, seed=1).train
    images = np.concatenate([x for x, _ in train.as_numpy_iterator()])

    expected = np.zeros((8, 8, 3), np.float32)
    expected[..., 0] = 200
    expected[:4, :, 1] = 120
    assert any(np.array_equal(image, expected) for image in images)


# ---------------------------------------------------------------------- damage in the middle


def damaged_png(path: Path) -> Path:
    """A PNG whose image data is damaged in the middle: its signature and IEND are intact."""
    blob = bytearray(_pillow("PNG"))
    start = blob.index(b"IDAT") + 4
    length = int.from_bytes(blob[start - 8 : start - 4], "big")
    middle = start + length // 2
    blob[middle : middle + 8] = bytes(8)
    crc = zlib.crc32(blob[start - 4 : start + length])  # a valid chunk CRC over bad data
    blob[start + length : start + length + 4] = crc.to_bytes(4, "big")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(bytes(blob))
    return path


def test_damage_in_the_middle_passes_the_check_and_fails_the_decoder(tmp_path):
    path = damaged_png(tmp_path / "damaged.png")

    assert accepted(path)
    assert not decodes(path)


def test_reading_a_damaged_file_mid_epoch_is_an_error_naming_it(tmp_path):
    write_class_folders(tmp_path, {"a": 3, "b": 3}, size=16)
    damaged_png(tmp_path / "b" / "damaged.png")
    folder = data.from_directory(tmp_path, 16, batch_size=2)

    with pytest.raises(DataError) as error:  # noqa: SIM117 (raises stays outside)
        with undecodable_files_named(folder.train):
            list(folder.train)

    message = str(error.value)
    assert message.startswith("1 files cannot be decoded as images: ")
    assert f"{tmp_path / 'b' / 'damaged.png'} (" in message
    assert "with checkpoint_dir, training resumes" in message
    assert isinstance(error.value.__cause__, tf.errors.InvalidArgumentError)


def test_predicting_a_damaged_file_is_an_error_naming_it(tmp_path):
    path = damaged_png(tmp_path / "damaged.png")
    images = data.from_files([path], 16)

    with pytest.raises(DataError, match=r"damaged\.png"):  # noqa: SIM117 (raises is outside)
        with undecodable_files_named(images):
            list(images)


def test_load_images_names_a_damaged_file(tmp_path):
    path = damaged_png(tmp_path / "damaged.png")

    with pytest.raises(DataError, match=r"^1 files cannot be decoded as images: .*damaged\.png \("):
        data.load_images([path], 16)


def test_other_errors_pass_through_unchanged(tmp_path):
    write_class_folders(tmp_path, {"a": 2, "b": 2}, size=16)
    folder = data.from_directory(tmp_path, 16)

    with pytest.raises(tf.errors.InvalidArgumentError, match="not a file problem"):  # noqa: SIM117
        with undecodable_files_named(folder.train):
            raise tf.errors.InvalidArgumentError(None, None, "not a file problem")


# ---------------------------------------------------------------------- through the classifier


class DamageAfterFirstEpoch(keras.callbacks.Callback):
    """Stands for a disk that damages a file while training runs: after epoch 0."""

    def __init__(self, path: Path) -> None:
        super().__init__()
        self.path = path

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        if epoch == 0:
            damaged_png(self.path)


class EpochRecorder(keras.callbacks.Callback):
    def __init__(self) -> None:
        super().__init__()
        self.epochs: list[int] = []

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        self.epochs.append(epoch)


def tiny_classifier() -> tk.TransferClassifier:
    return tk.TransferClassifier(TINY_BACKBONE, class_names=["a", "b"], image_size=16, weights=None)


@pytest.mark.slow
def test_a_file_damaged_mid_training_stops_it_naming_the_file_and_the_run_resumes(tmp_path):
    folder = write_class_folders(tmp_path / "data", {"a": 4, "b": 4}, size=16)
    victim = folder / "b" / "b1.png"
    original = victim.read_bytes()
    options = {"epochs": 3, "batch_size": 4, "cache_features": False, "verbose": 0}
    checkpoints = tmp_path / "checkpoints"

    with pytest.raises(DataError, match=r"b/b1\.png \(.*with checkpoint_dir, training resumes"):
        tiny_classifier().fit_head(
            folder, checkpoint_dir=checkpoints, callbacks=[DamageAfterFirstEpoch(victim)], **options
        )

    victim.write_bytes(original)  # the user replaces the file and runs the same call again
    recorder = EpochRecorder()
    history = tiny_classifier().fit_head(
        folder, checkpoint_dir=checkpoints, callbacks=[recorder], **options
    )

    assert recorder.epochs == [1, 2]  # epoch 0, finished before the damage, is not lost
    assert history.epochs == [0, 1, 2]


def test_a_damaged_file_met_while_caching_features_is_named(tmp_path):
    folder = write_class_folders(tmp_path / "data", {"a": 3, "b": 3}, size=16)
    damaged_png(folder / "a" / "a2.png")

    with pytest.raises(DataError, match=r"a/a2\.png \("):
        tiny_classifier().fit_head(folder, epochs=1, batch_size=4, verbose=0)


def test_evaluate_and_predict_name_a_damaged_file(tmp_path):
    folder = write_class_folders(tmp_path / "data", {"a": 3, "b": 3}, size=16)
    damaged_png(folder / "b" / "b0.png")
    clf = tiny_classifier()

    with pytest.raises(DataError, match=r"b/b0\.png \("):
        clf.evaluate(folder)
    with pytest.raises(DataError, match=r"b/b0\.png \("):
        clf.predict(folder / "b")
