"""A classifier's files: the ``.keras`` archive it is saved in, and exports for serving."""

from __future__ import annotations

import os
from pathlib import Path

from transferkit.classifier.state import ClassifierState
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
    ) -> Path:
        """Writes the model for serving: a TensorFlow SavedModel folder or a TFLite file.

        It takes raw uint8 images ``(batch, height, width, 3)`` and returns what
        :meth:`predict` returns (preprocessing inside, augmentation and dropout off) under
        the ``serving_default`` signature (input ``images``, output ``probabilities``). It
        is written under a temporary name and renamed, as :meth:`save` does; see
        :mod:`transferkit.export`.

        Args:
            path: the SavedModel folder to create, or a file name ending in ``.tflite``.
            format: ``"saved_model"`` or ``"tflite"``. Defaults to ``"saved_model"``.
            quantize: None, or ``"dynamic_range"`` for int8 TFLite weights.

        Returns:
            The path written.

        Raises:
            InvalidArgumentError: an argument is invalid, or ``path`` is a folder that is not
                an earlier SavedModel.
        """
        return exporting.export_classifier(self, path, format=format, quantize=quantize)
