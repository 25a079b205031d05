"""A classifier's files: the ``.keras`` archive it is saved in, and exports for serving."""

from __future__ import annotations

import os
from pathlib import Path

from transferkit.classifier.state import ClassifierState
from transferkit.data import inputs
from transferkit.serving import export as exporting
from transferkit.serving import saving

__all__ = ["FileMethods"]


class FileMethods:
    """:meth:`save` and :meth:`export` of :class:`~transferkit.TransferClassifier`."""

    def save(self: ClassifierState, path: str | os.PathLike[str]) -> Path:
        """Saves model, class names, backbone, freezing state and history to one file.

        A Keras ``.keras`` archive (it loads with ``keras.saving.load_model(path,
        safe_mode=True)`` once transferkit is imported) with transferkit's metadata, the
        backbone's facts included, so it loads where the backbone is not registered. It is
        written under a temporary name and renamed, so an interrupted save breaks nothing.

        Args:
            path: where to write; must end in ``.keras``.

        Returns:
            The path written.
        """
        state = saving.Saved(
            self.model, self.config, self.spec, self.history, self.unfrozen_from,
            self._head_learning_rate, self.thresholds, self.temperature,
        )  # fmt: skip
        return saving.write(state, path)

    def export(
        self: ClassifierState,
        path: str | os.PathLike[str],
        *,
        format: exporting.ExportFormat = "saved_model",
        quantize: exporting.Quantization = None,
        representative_data: inputs.Images | None = None,
        integer_output: bool = False,
    ) -> Path:
        """Writes the model for serving: a TensorFlow SavedModel, a TFLite or an ONNX file.

        It takes raw uint8 images ``(batch, height, width, 3)`` and returns what
        :meth:`predict` returns (preprocessing and the :attr:`temperature` inside,
        augmentation and dropout off), as input ``images`` and output ``probabilities``. It
        is written under a temporary name and renamed, as :meth:`save` does; see
        :mod:`transferkit.export`.

        Args:
            path: the SavedModel folder to create, or a file name ending in ``.tflite`` or
                ``.onnx``.
            format: ``"saved_model"``, ``"tflite"`` or ``"onnx"`` (ONNX needs ``tf2onnx``
                and ``onnx``). Defaults to ``"saved_model"``.
            quantize: None; ``"dynamic_range"`` for int8 TFLite weights; or ``"int8"`` for
                int8 weights and activations, calibrated on ``representative_data``.
            representative_data: with ``quantize="int8"`` only, and needed there: a few
                hundred raw-pixel images like those the model will see, as an array, a
                ``tf.data.Dataset`` of images or ``(images, labels)`` batches, or an image
                folder; at most :data:`transferkit.export.CALIBRATION_IMAGES` are used.
            integer_output: bool. With ``quantize="int8"`` only: uint8 probabilities
                (dequantize with the output's scale and zero point) for accelerators that
                take integer tensors only. Defaults to False.

        Returns:
            The path written.

        Raises:
            InvalidArgumentError: an argument is invalid, ``path`` holds something the export
                must not replace, ONNX or int8 of a mixed-precision classifier, or an ONNX
                file the exporter left unusable.
            ImageShapeError, DataError: ``representative_data`` is not images of the size.
            MissingDependencyError: ONNX without ``tf2onnx`` and ``onnx``.
            UnsupportedBackendError: Keras runs on another backend than TensorFlow.
        """
        return exporting.export_classifier(
            self, path, format=format, quantize=quantize,
            representative_data=representative_data, integer_output=integer_output,
        )  # fmt: skip
