"""Exporting a classifier for serving: a TensorFlow SavedModel or a TFLite flatbuffer.

Both artifacts take what :meth:`~transferkit.TransferClassifier.predict` takes, raw uint8
RGB pixels of the classifier's size, shape ``(batch, height, width, 3)``, and return what it
returns, class probabilities of shape ``(batch, num_classes)`` (for two classes
``[1 - p, p]`` with ``p`` the sigmoid of the single logit; a softmax otherwise; each class's
own sigmoid for a multi-label classifier, whose signature also has the output ``labels``:
which probabilities reach the classifier's thresholds, fixed at export). The
preprocessing is inside; augmentation and dropout run in inference mode, so the output is
deterministic. Nothing else is needed to serve them: no transferkit, no Keras.

* ``"saved_model"``: a SavedModel folder whose ``serving_default`` signature (also
  reachable as the ``serve`` method of ``tf.saved_model.load(path)``) maps the input
  ``images`` to the output ``probabilities``, ready for TensorFlow Serving.
* ``"tflite"``: a ``.tflite`` flatbuffer converted from that SavedModel, with the same
  ``serving_default`` signature; ``quantize="dynamic_range"`` stores the weights as int8
  (a smaller file; the outputs move slightly, so compare them with ``predict`` on your own
  images before shipping).

Use :meth:`TransferClassifier.export <transferkit.TransferClassifier.export>` or the
``transferkit export`` command; :func:`export_classifier` is what both call::

    path = clf.export("cats_dogs_model")                  # a SavedModel folder
    served = tf.saved_model.load(path)
    served.serve(images)["probabilities"]                 # images: uint8 (n, h, w, 3)
    clf.export("cats_dogs.tflite", format="tflite", quantize="dynamic_range")
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import keras
import tensorflow as tf

from transferkit.errors import InvalidArgumentError

if TYPE_CHECKING:
    from transferkit.classifier import TransferClassifier

__all__ = [
    "INPUT_NAME",
    "LABELS_NAME",
    "OUTPUT_NAME",
    "SIGNATURE_KEY",
    "ExportFormat",
    "Quantization",
    "export_classifier",
]

#: ``"saved_model"`` (a folder) or ``"tflite"`` (a ``.tflite`` file).
ExportFormat = Literal["saved_model", "tflite"]
#: None (float weights) or ``"dynamic_range"`` (int8 weights; TFLite only).
Quantization = Literal["dynamic_range"] | None

#: The name of the serving signature.
SIGNATURE_KEY = "serving_default"
#: The name of the signature's input (uint8 images of shape ``(batch, height, width, 3)``).
INPUT_NAME = "images"
#: The name of the signature's output (probabilities of shape ``(batch, num_classes)``).
OUTPUT_NAME = "probabilities"
#: The name of the second output that multi-label classifiers have (booleans of shape
#: ``(batch, num_classes)`` that say which probabilities reach the classifier's thresholds).
LABELS_NAME = "labels"

_FORMATS = ("saved_model", "tflite")
_QUANTIZATIONS = (None, "dynamic_range")


def export_classifier(
    classifier: TransferClassifier,
    path: str | os.PathLike[str],
    *,
    format: ExportFormat = "saved_model",
    quantize: Quantization = None,
) -> Path:
    """Writes a classifier as a SavedModel folder or a TFLite file, for serving.

    The artifact is written next to ``path`` under a temporary name and renamed into
    place, so an interrupted export never leaves a half-written artifact at ``path``. An
    existing artifact at ``path`` is replaced; a folder that is not a SavedModel is never
    touched.

    Args:
        classifier: the :class:`~transferkit.TransferClassifier` to export.
        path: for ``"saved_model"``, the folder to create; for ``"tflite"``, a file name
            ending in ``.tflite``.
        format: ``"saved_model"`` or ``"tflite"``. Defaults to ``"saved_model"``.
        quantize: None, or ``"dynamic_range"`` to store TFLite weights as int8.
            Defaults to None.

    Returns:
        The path written.

    Raises:
        InvalidArgumentError: an argument is invalid, or ``path`` holds something that
            the export must not replace.
    """
    target = _check_arguments(path, format, quantize)
    if format == "saved_model":
        _write_saved_model(classifier, target)
    else:
        _write_tflite(classifier, target, quantize)
    return target


def _check_arguments(path: object, format: object, quantize: object) -> Path:
    # Everything is checked before the (slow) tracing and conversion start.
    if format not in _FORMATS:
        msg = f"format must be 'saved_model' or 'tflite'. Received: format={format!r}"
        raise InvalidArgumentError(msg)
    if quantize not in _QUANTIZATIONS:
        msg = f"quantize must be None or 'dynamic_range'. Received: quantize={quantize!r}"
        raise InvalidArgumentError(msg)
    if quantize is not None and format != "tflite":
        msg = (
            "Quantization applies to TFLite exports only; pass format='tflite' or leave "
            f"quantize out. Received: format={format!r}, quantize={quantize!r}"
        )
        raise InvalidArgumentError(msg)
    if not isinstance(path, (str, os.PathLike)):
        msg = f"path must be a file or folder path. Received: path={path!r}"
        raise InvalidArgumentError(msg)
    target = Path(path)
    if not target.parent.is_dir():
        msg = f"The folder to export into does not exist. Received: path={os.fspath(path)!r}"
        raise InvalidArgumentError(msg)
    if format == "tflite":
        if target.suffix != ".tflite":
            msg = f"A TFLite file name must end in '.tflite'. Received: path={os.fspath(path)!r}"
            raise InvalidArgumentError(msg)
        if target.is_dir():
            msg = f"path is a folder; give a file name. Received: path={os.fspath(path)!r}"
            raise InvalidArgumentError(msg)
        return target
    if target.exists() and not target.is_dir():
        msg = f"A SavedModel is a folder, but path is a file. Received: path={os.fspath(path)!r}"
        raise InvalidArgumentError(msg)
    if target.is_dir() and any(target.iterdir()) and not (target / "saved_model.pb").is_file():
        msg = (
            "path is a folder that is not a SavedModel; export() replaces only an earlier "
            "SavedModel. Give a new folder name. "
            f"Received: path={os.fspath(path)!r}"
        )
        raise InvalidArgumentError(msg)
    return target


def _serving_archive(classifier: TransferClassifier) -> keras.export.ExportArchive:
    model = classifier.model
    probabilities = classifier._probabilities  # the layer predict() uses
    height, width = classifier.image_size

    thresholds = classifier.thresholds

    def serve(images: Any) -> dict[str, Any]:
        # training=False: augmentation and dropout off, BatchNormalization on its statistics.
        logits = model(keras.ops.cast(images, "float32"), training=False)
        outputs = {OUTPUT_NAME: probabilities(logits)}
        if thresholds is not None:  # multi-label: each class's answer at its threshold
            outputs[LABELS_NAME] = keras.ops.greater_equal(
                outputs[OUTPUT_NAME], keras.ops.convert_to_tensor(thresholds, "float32")
            )
        return outputs

    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint(
        "serve",
        serve,
        input_signature=[tf.TensorSpec((None, height, width, 3), tf.uint8, name=INPUT_NAME)],
    )
    return archive


def _write_saved_model(classifier: TransferClassifier, target: Path) -> None:
    temporary = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        # The first endpoint is also saved as the "serving_default" signature.
        _serving_archive(classifier).write_out(os.fspath(temporary), verbose=False)
        if target.exists():
            # Two renames: the path holds the old SavedModel or the new one, never a mix.
            retired = target.with_name(f".{target.name}-old-{uuid.uuid4().hex[:8]}")
            os.replace(target, retired)
            os.replace(temporary, target)
            shutil.rmtree(retired, ignore_errors=True)
        else:
            os.replace(temporary, target)
    except BaseException:
        shutil.rmtree(temporary, ignore_errors=True)
        raise


def _write_tflite(classifier: TransferClassifier, target: Path, quantize: Quantization) -> None:
    with tempfile.TemporaryDirectory(prefix="transferkit-export-") as folder:
        _serving_archive(classifier).write_out(folder, verbose=False)
        converter = tf.lite.TFLiteConverter.from_saved_model(folder, signature_keys=[SIGNATURE_KEY])
        if quantize == "dynamic_range":
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
        flatbuffer = converter.convert()
    descriptor, temporary = tempfile.mkstemp(
        suffix=".tflite", prefix=f".{target.stem}-", dir=target.parent
    )
    try:
        with os.fdopen(descriptor, "wb") as file:
            file.write(flatbuffer)
        os.replace(temporary, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.remove(temporary)
        raise
