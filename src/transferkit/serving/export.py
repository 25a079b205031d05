"""Exporting a classifier for serving: a TensorFlow SavedModel, a TFLite flatbuffer or ONNX.

Every artifact takes what :meth:`~transferkit.TransferClassifier.predict` takes, raw uint8
RGB pixels of the classifier's size, shape ``(batch, height, width, 3)``, and returns what it
returns, class probabilities of shape ``(batch, num_classes)`` (for two classes
``[1 - p, p]`` with ``p`` the sigmoid of the single logit; a softmax otherwise; each class's
own sigmoid for a multi-label classifier, whose artifacts also have the output ``labels``:
which probabilities reach the classifier's thresholds, fixed at export). The
preprocessing is inside; augmentation and dropout run in inference mode, so the output is
deterministic. Nothing else is needed to serve them: no transferkit, no Keras.

* ``"saved_model"``: a SavedModel folder whose ``serving_default`` signature (also
  reachable as the ``serve`` method of ``tf.saved_model.load(path)``) maps the input
  ``images`` to the output ``probabilities``, ready for TensorFlow Serving.
* ``"tflite"``: a ``.tflite`` flatbuffer converted from that SavedModel, with the same
  ``serving_default`` signature. ``quantize="dynamic_range"`` stores the weights as int8;
  ``quantize="int8"`` makes weights *and* activations int8 (full-integer quantization),
  calibrated on ``representative_data``: its input is then quantized with scale 1 and zero
  point 0, so it still takes the raw uint8 pixels, and ``integer_output=True`` makes its
  probabilities uint8 too (an all-integer model for NPUs and the Edge TPU; read the scale
  and zero point from the output's quantization parameters). Quantized outputs move
  slightly: compare them with ``predict`` on your own images before shipping.
* ``"onnx"``: a ``.onnx`` file written by Keras' own exporter (``tf2onnx`` on the
  TensorFlow backend, which must be installed with ``onnx``), with the input ``images``
  and the output ``probabilities``, for ONNX Runtime.

Use :meth:`TransferClassifier.export <transferkit.TransferClassifier.export>` or the
``transferkit export`` command; :func:`export_classifier` is what both call::

    path = clf.export("cats_dogs_model")                  # a SavedModel folder
    served = tf.saved_model.load(path)
    served.serve(images)["probabilities"]                 # images: uint8 (n, h, w, 3)
    clf.export("cats_dogs.tflite", format="tflite", quantize="dynamic_range")
    clf.export("cats_dogs_int8.tflite", format="tflite", quantize="int8",
               representative_data=train_images[:300])
    clf.export("cats_dogs.onnx", format="onnx")
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import shutil
import tempfile
import uuid
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import keras
import numpy as np
import tensorflow as tf

from transferkit import _backend
from transferkit.data import inputs as _inputs
from transferkit.errors import (
    DataError,
    ImageShapeError,
    InvalidArgumentError,
    MissingDependencyError,
)
from transferkit.model.graph import Probabilities

if TYPE_CHECKING:
    from transferkit.model.protocol import ClassifierLike

__all__ = [
    "CALIBRATION_IMAGES",
    "INPUT_NAME",
    "LABELS_NAME",
    "OUTPUT_NAME",
    "SIGNATURE_KEY",
    "ExportFormat",
    "Quantization",
    "export_classifier",
]

#: ``"saved_model"`` (a folder), ``"tflite"`` (a ``.tflite`` file) or ``"onnx"`` (``.onnx``).
ExportFormat = Literal["saved_model", "tflite", "onnx"]
#: None (float), ``"dynamic_range"`` (int8 weights) or ``"int8"`` (int8 weights and
#: activations, calibrated on representative images); TFLite only.
Quantization = Literal["dynamic_range", "int8"] | None

#: The name of the serving signature.
SIGNATURE_KEY = "serving_default"
#: The name of the signature's input (uint8 images of shape ``(batch, height, width, 3)``).
INPUT_NAME = "images"
#: The name of the signature's output (probabilities of shape ``(batch, num_classes)``).
OUTPUT_NAME = "probabilities"
#: The name of the second output that multi-label classifiers have (booleans of shape
#: ``(batch, num_classes)`` that say which probabilities reach the classifier's thresholds).
LABELS_NAME = "labels"
#: The most representative images ``quantize="int8"`` calibrates on (the TFLite guide's
#: "a few hundred"); more take longer and change the ranges little.
CALIBRATION_IMAGES = 300

_FORMATS = ("saved_model", "tflite", "onnx")
_QUANTIZATIONS = (None, "dynamic_range", "int8")
_SUFFIXES = {"tflite": ".tflite", "onnx": ".onnx"}
_CALIBRATION_BATCH = 32


def export_classifier(
    classifier: ClassifierLike,
    path: str | os.PathLike[str],
    *,
    format: ExportFormat = "saved_model",
    quantize: Quantization = None,
    representative_data: _inputs.Images | None = None,
    integer_output: bool = False,
) -> Path:
    """Writes a classifier as a SavedModel folder, a TFLite file or an ONNX file, for serving.

    The artifact is written next to ``path`` under a temporary name and renamed into
    place, so an interrupted export never leaves a half-written artifact at ``path``. An
    existing artifact at ``path`` is replaced; a folder that is not a SavedModel is never
    touched.

    Args:
        classifier: the :class:`~transferkit.TransferClassifier` to export.
        path: for ``"saved_model"``, the folder to create; for ``"tflite"`` and
            ``"onnx"``, a file name ending in ``.tflite`` or ``.onnx``.
        format: ``"saved_model"``, ``"tflite"`` or ``"onnx"``. Defaults to
            ``"saved_model"``.
        quantize: None; ``"dynamic_range"`` to store TFLite weights as int8; or
            ``"int8"`` for int8 weights and activations (full-integer TFLite), calibrated
            on ``representative_data``. Defaults to None.
        representative_data: with ``quantize="int8"`` only, and needed there: raw-pixel
            images like the ones the model will see (training images are best), as an
            array, a ``tf.data.Dataset`` of images or of ``(images, labels)`` batches, or
            the path of an image folder. At most :data:`CALIBRATION_IMAGES` are used:
            evenly spaced through an array, the first ones of a dataset. Defaults to None.
        integer_output: bool. With ``quantize="int8"`` only: return the probabilities as
            uint8 (dequantize with the output's scale and zero point) instead of float32,
            for accelerators that take integer tensors only. Defaults to False.

    Returns:
        The path written.

    Raises:
        InvalidArgumentError: an argument is invalid; ``path`` holds something that the
            export must not replace; ``"onnx"`` or ``"int8"`` for a mixed-precision
            classifier; or Keras' ONNX exporter wrote a file that cannot be served as the
            others (EfficientNet and ConvNeXt backbones, with tf2onnx 1.17).
        ImageShapeError: ``representative_data`` are not images of the classifier's size.
        DataError: ``representative_data`` holds no images, or no pixel values.
        MissingDependencyError: ``format="onnx"`` without ``tf2onnx`` and ``onnx``.
        UnsupportedBackendError: Keras runs on another backend than TensorFlow.
    """
    _check_options(format, quantize, representative_data, integer_output)
    _backend.require_tensorflow(f"Exporting to {format!r}")
    _check_float32(classifier, format, quantize)
    target = _check_path(path, format)
    if format == "saved_model":
        _write_saved_model(classifier, target)
    elif format == "onnx":
        _write_onnx(classifier, target)
    elif quantize == "int8":
        calibration = _calibration_images(representative_data, classifier.image_size)
        flatbuffer = _int8_flatbuffer(classifier, calibration, integer_output)
        _write_file(flatbuffer, target)
    else:
        _write_file(_float_flatbuffer(classifier, quantize), target)
    return target


# ---------------------------------------------------------------------- checks
# Everything is checked before the (slow) tracing and conversion start.


def _check_options(
    format: object, quantize: object, representative_data: object, integer_output: object
) -> None:
    if format not in _FORMATS:
        msg = f"format must be 'saved_model', 'tflite' or 'onnx'. Received: format={format!r}"
        raise InvalidArgumentError(msg)
    if quantize not in _QUANTIZATIONS:
        msg = f"quantize must be None, 'dynamic_range' or 'int8'. Received: quantize={quantize!r}"
        raise InvalidArgumentError(msg)
    if quantize is not None and format != "tflite":
        msg = (
            "Quantization applies to TFLite exports only; pass format='tflite' or leave "
            f"quantize out. Received: format={format!r}, quantize={quantize!r}"
        )
        raise InvalidArgumentError(msg)
    if quantize == "int8" and representative_data is None:
        msg = (
            "quantize='int8' calibrates the activations' int8 ranges on images like the ones "
            "the model will see: pass representative_data= (a few hundred training images, "
            "as an array, a tf.data.Dataset or an image folder). "
            "Received: representative_data=None"
        )
        raise InvalidArgumentError(msg)
    if quantize != "int8" and representative_data is not None:
        msg = (
            "representative_data calibrates quantize='int8' only; pass quantize='int8' or "
            f"leave representative_data out. Received: quantize={quantize!r}"
        )
        raise InvalidArgumentError(msg)
    if not isinstance(integer_output, bool):
        msg = f"integer_output must be True or False. Received: integer_output={integer_output!r}"
        raise InvalidArgumentError(msg)
    if integer_output and quantize != "int8":
        msg = (
            "integer_output=True gives the uint8 outputs of a full-integer model; pass "
            f"quantize='int8' too. Received: quantize={quantize!r}"
        )
        raise InvalidArgumentError(msg)
    if format == "onnx":
        _check_onnx_installed()


def _check_float32(classifier: ClassifierLike, format: str, quantize: Quantization) -> None:
    # Measured: the int8 converter has no kernel for a float16 division; tf2onnx maps no
    # bfloat16 (and Keras' exporter asks for float32).
    policy = classifier.config.dtype_policy
    if policy is not None and (quantize == "int8" or format == "onnx"):
        wanted = "quantize='int8'" if quantize == "int8" else "format='onnx'"
        msg = (
            f"{wanted} needs a float32 classifier. Build one with dtype_policy=None and the "
            "same settings, copy the weights (float32_clf.model.set_weights("
            "clf.model.get_weights())) and export it. "
            f"Received: a classifier with dtype_policy={policy!r}"
        )
        raise InvalidArgumentError(msg)


def _check_onnx_installed() -> None:
    missing = [name for name in ("tf2onnx", "onnx") if importlib.util.find_spec(name) is None]
    if missing:
        msg = (
            "format='onnx' converts with Keras' exporter, which needs tf2onnx and onnx on the "
            "TensorFlow backend: pip install tf2onnx onnx (and onnxruntime to run the file). "
            f"Received: format='onnx' without {' and '.join(missing)}"
        )
        raise MissingDependencyError(msg)


def _check_path(path: object, format: str) -> Path:
    if not isinstance(path, (str, os.PathLike)):
        msg = f"path must be a file or folder path. Received: path={path!r}"
        raise InvalidArgumentError(msg)
    target = Path(path)
    shown = os.fspath(path)
    if not target.parent.is_dir():
        msg = f"The folder to export into does not exist. Received: path={shown!r}"
        raise InvalidArgumentError(msg)
    if format in _SUFFIXES:
        suffix = _SUFFIXES[format]
        if target.suffix != suffix:
            msg = f"A {format} file name must end in {suffix!r}. Received: path={shown!r}"
            raise InvalidArgumentError(msg)
        if target.is_dir():
            msg = f"path is a folder; give a file name. Received: path={shown!r}"
            raise InvalidArgumentError(msg)
        return target
    if target.exists() and not target.is_dir():
        msg = f"A SavedModel is a folder, but path is a file. Received: path={shown!r}"
        raise InvalidArgumentError(msg)
    if target.is_dir() and any(target.iterdir()) and not (target / "saved_model.pb").is_file():
        msg = (
            "path is a folder that is not a SavedModel; export() replaces only an earlier "
            f"SavedModel. Give a new folder name. Received: path={shown!r}"
        )
        raise InvalidArgumentError(msg)
    return target


def _calibration_images(data: Any, image_size: tuple[int, int]) -> np.ndarray:
    """At most CALIBRATION_IMAGES float32 images of ``data``, checked as predict checks them."""
    try:
        images = _inputs.as_image_input(data, image_size=image_size, batch_size=_CALIBRATION_BATCH)
        if isinstance(images, tf.data.Dataset):
            batches, count = [], 0
            for batch in images.as_numpy_iterator():
                batches.append(batch)
                count += len(batch)
                if count >= CALIBRATION_IMAGES:
                    break
            array = np.concatenate(batches)[:CALIBRATION_IMAGES] if batches else np.empty(0)
        else:
            spaced = np.linspace(0, len(images) - 1, min(len(images), CALIBRATION_IMAGES))
            array = np.asarray(images)[spaced.round().astype(int)]
    except (ImageShapeError, DataError) as exc:
        msg = f"representative_data: {exc}"
        raise type(exc)(msg) from exc
    if len(array) == 0:
        msg = "representative_data holds no images. Received: 0 images"
        raise DataError(msg)
    return array.astype(np.float32)


# ---------------------------------------------------------------------- the serving model


class _Serving(keras.Model):
    """Raw pixels in, the probabilities ``predict`` gives (and multi-label answers) out."""

    def __init__(self, classifier: ClassifierLike, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.classifier_model = classifier.model
        # The layer predict() uses, built from the classifier's public attributes.
        self.probabilities = Probabilities(
            classifier.is_binary, classifier.multi_label, classifier.temperature
        )
        self.thresholds = classifier.thresholds

    def build(self, input_shape: Any) -> None:
        """Nothing to build: the classifier's model is built."""

    def call(self, images: Any) -> dict[str, Any]:
        """The outputs for a batch of raw-pixel images (uint8 or float32)."""
        # training=False: augmentation and dropout off, BatchNormalization on its statistics.
        logits = self.classifier_model(keras.ops.cast(images, "float32"), training=False)
        outputs = {OUTPUT_NAME: self.probabilities(logits)}
        if self.thresholds is not None:  # multi-label: each class's answer at its threshold
            outputs[LABELS_NAME] = keras.ops.greater_equal(
                outputs[OUTPUT_NAME], keras.ops.convert_to_tensor(self.thresholds, "float32")
            )
        return outputs


def _serving(classifier: ClassifierLike, dtype: tf.DType) -> tuple[_Serving, tf.TensorSpec]:
    """The serving model, built, and the spec of its input."""
    height, width = classifier.image_size
    serving = _Serving(classifier, name="serving")
    serving.build((None, height, width, 3))
    return serving, tf.TensorSpec((None, height, width, 3), dtype, name=INPUT_NAME)


def _serving_archive(classifier: ClassifierLike, dtype: tf.DType = tf.uint8) -> Any:
    serving, spec = _serving(classifier, dtype)
    archive = keras.export.ExportArchive()
    archive.track(serving)
    # The first endpoint is also saved as the "serving_default" signature.
    archive.add_endpoint("serve", serving.call, input_signature=[spec])
    return archive


# ---------------------------------------------------------------------- writers


def _write_saved_model(classifier: ClassifierLike, target: Path) -> None:
    temporary = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
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


def _converter(archive: Any, folder: str) -> tf.lite.TFLiteConverter:
    archive.write_out(folder, verbose=False)
    return tf.lite.TFLiteConverter.from_saved_model(folder, signature_keys=[SIGNATURE_KEY])


def _float_flatbuffer(classifier: ClassifierLike, quantize: Quantization) -> bytes:
    with tempfile.TemporaryDirectory(prefix="transferkit-export-") as folder:
        converter = _converter(_serving_archive(classifier), folder)
        if quantize == "dynamic_range":
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
        return bytes(converter.convert())


def _int8_flatbuffer(
    classifier: ClassifierLike, calibration: np.ndarray, integer_output: bool
) -> bytes:
    """Full-integer TFLite: int8 kernels only, uint8 pixels in, float32 or uint8 out."""
    # The SavedModel takes float32 pixels so that the converter quantizes the input itself:
    # as uint8 with the calibrated range, pinned to [0, 255] by the anchor image below, that
    # is scale 1 and zero point 0, so the uint8 input takes raw pixels unchanged.
    anchor = calibration[:1].copy()
    anchor[0, 0, 0, :] = 255.0

    def representative_dataset() -> Iterator[dict[str, np.ndarray]]:
        yield {INPUT_NAME: anchor}
        for start in range(0, len(calibration), _CALIBRATION_BATCH):
            yield {INPUT_NAME: calibration[start : start + _CALIBRATION_BATCH]}

    with tempfile.TemporaryDirectory(prefix="transferkit-export-") as folder:
        converter = _converter(_serving_archive(classifier, tf.float32), folder)
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = representative_dataset
        # Int8 kernels only: conversion fails rather than leave a float operation behind.
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = tf.uint8
        converter.inference_output_type = tf.uint8 if integer_output else tf.float32
        return bytes(converter.convert())


def _write_onnx(classifier: ClassifierLike, target: Path) -> None:
    serving, spec = _serving(classifier, tf.uint8)
    descriptor, temporary = tempfile.mkstemp(
        suffix=".onnx", prefix=f".{target.stem}-", dir=target.parent
    )
    os.close(descriptor)
    try:
        with warnings.catch_warnings():
            # Keras' numpy 2 patch of tf2onnx reads np.object, which numpy 2 warns about.
            warnings.filterwarnings("ignore", "In the future `np.object`", FutureWarning)
            serving.export(temporary, format="onnx", verbose=False, input_signature=[spec])
        _check_onnx_file(temporary, classifier.spec.name)
        os.replace(temporary, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.remove(temporary)
        raise


def _check_onnx_file(path: str, backbone: str) -> None:
    """Refuses a file the exporter wrote but ONNX Runtime could not serve as the others."""
    import onnx

    model = onnx.load(path)
    extra = [item.name for item in model.graph.input if item.name != INPUT_NAME]
    try:
        onnx.checker.check_model(model)
    except onnx.checker.ValidationError as exc:  # ConvNeXt: a TensorFlow call left in
        problem = f"the file is not valid ONNX: {str(exc).splitlines()[0]}"
        remedy = "Export format='saved_model' or format='tflite' instead"
    else:
        if not extra:
            return
        # tf2onnx leaves tensors that a layer captured (EfficientNet's Normalization) as
        # inputs of the graph; converting the SavedModel folder freezes them.
        problem = f"it left inputs other than {INPUT_NAME!r} in the file: {extra}"
        remedy = (
            "Export format='saved_model' and convert that folder with tf2onnx's command "
            "line (python -m tf2onnx.convert --saved-model PATH --output MODEL.onnx)"
        )
    import tf2onnx

    msg = (
        f"Keras' ONNX exporter (tf2onnx {tf2onnx.__version__}, onnx {onnx.__version__}) "
        f"cannot convert a classifier of this backbone: {problem}. {remedy}. "
        f"Received: format='onnx', backbone={backbone!r}"
    )
    raise InvalidArgumentError(msg)


def _write_file(content: bytes, target: Path) -> None:
    descriptor, temporary = tempfile.mkstemp(
        suffix=target.suffix, prefix=f".{target.stem}-", dir=target.parent
    )
    try:
        with os.fdopen(descriptor, "wb") as file:
            file.write(content)
        os.replace(temporary, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.remove(temporary)
        raise
