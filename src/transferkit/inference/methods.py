"""What a trained classifier does: predict, label, evaluate, interpret, save and export.

:class:`Inference` holds these methods of :class:`~transferkit.TransferClassifier` (which
inherits them), so that ``classifier.py`` keeps the recipe: building, freezing and the
training stages.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

import keras
import numpy as np

from transferkit import _validation
from transferkit.data import inputs as _inputs
from transferkit.errors import InvalidArgumentError
from transferkit.inference import interpret as _interpret
from transferkit.inference import thresholds as _multi_label
from transferkit.inference import tta as _tta
from transferkit.inference.thresholds import ThresholdMetric
from transferkit.model import class_weights as _class_weights
from transferkit.serving import saving as _persistence
from transferkit.serving.export import ExportFormat, Quantization, export_classifier
from transferkit.training import checkpoints as _training
from transferkit.training import stages as _stages
from transferkit.training.options import Verbose

if TYPE_CHECKING:
    from transferkit.classifier import TransferClassifier

__all__ = ["Inference"]


class Inference:
    """Inference methods of :class:`~transferkit.TransferClassifier` (a mixin)."""

    def predict(  # type: ignore[misc]  # self: a mixin's subclass
        self: TransferClassifier,
        images: _inputs.Images,
        *,
        batch_size: int = 32,
        verbose: Verbose = 0,
        tta: bool | int = False,
    ) -> np.ndarray:
        """Per-class probabilities for raw-pixel images.

        With ``tta`` (test-time augmentation), the probabilities of several views of each
        image are averaged: ``True`` is the image and its horizontal mirror image; an int
        ``n`` (up to 12) takes the first ``n`` of: the image, its mirror image, the central
        crop of 87.5% of the height and width (resized back), that crop mirrored, then the
        four corner crops of that size, each followed by its mirror image (the ten-crop
        evaluation). It costs one forward pass per view.

        Args:
            images: a numpy array or tensor of shape ``(n, height, width, 3)`` (or one
                image of shape ``(height, width, 3)``), a ``tf.data.Dataset`` of image
                batches (``(images, labels)`` batches are accepted; labels are ignored), or
                the path of an image file or of a folder (its image files, recursively, in
                sorted order; see :func:`transferkit.data.list_images`).
            batch_size: int. Batch size for arrays. Defaults to 32.
            verbose: Keras' progress output. Defaults to 0 (silent).
            tta: bool or int. The views to average (see above); False for none.
                Defaults to False.

        Returns:
            A float32 array of shape ``(n, num_classes)`` whose rows sum to 1; for a
            multi-label classifier, each class's own probability (rows need not sum to 1).
        """
        batch_size = _validation.positive_int("batch_size", batch_size)
        views = self._tta_views(tta)
        inputs = _inputs.as_image_input(images, image_size=self.image_size, batch_size=batch_size)
        with _inputs.naming_undecodable_files(inputs):
            if views > 1:
                return _tta.predict_probabilities(
                    self.model,
                    inputs,
                    batch_size=batch_size,
                    count=views,
                    head=self._probabilities,
                    distributed=self._strategy is not None,
                )
            logits = self.model.predict(inputs, batch_size=batch_size, verbose=verbose)
        return np.asarray(keras.ops.convert_to_numpy(self._probabilities(logits)), np.float32)

    def predict_labels(  # type: ignore[misc]  # self: a mixin's subclass
        self: TransferClassifier,
        images: _inputs.Images,
        *,
        batch_size: int = 32,
        tta: bool | int = False,
    ) -> list[str] | list[int] | list[list[str]] | list[list[int]]:
        """The most probable class of each image; for multi-label, every class above threshold.

        Args:
            images: as for :meth:`predict`.
            batch_size: int. Batch size for arrays. Defaults to 32.
            tta: bool or int. Test-time augmentation, as for :meth:`predict`.
                Defaults to False.

        Returns:
            Class names when the classifier has them, class indices otherwise; for a
            multi-label classifier, a list of them per image: the classes whose probability
            reaches their :attr:`thresholds`, in class order (possibly none).
        """
        probabilities = self.predict(images, batch_size=batch_size, tta=tta)
        if self._thresholds is not None:
            return _multi_label.labels_above(probabilities, self._thresholds, self.class_names)
        indices = [int(i) for i in np.argmax(probabilities, -1)]
        names = self.class_names
        return indices if names is None else [names[i] for i in indices]

    def tune_thresholds(  # type: ignore[misc]  # self: a mixin's subclass
        self: TransferClassifier,
        validation_data: _inputs.LabeledData,
        *,
        metric: ThresholdMetric = "f1",
        batch_size: int = 32,
    ) -> tuple[float, ...]:
        """Picks each class's threshold on labeled data, and sets :attr:`thresholds`.

        For each class, every cut of the images' sorted probabilities is tried and the
        threshold is set halfway between the two probabilities of the best cut (the one
        nearest 0.5 among equally good ones). A class that no image (or every image) has
        keeps 0.5, with a warning. Tune on validation data, not on the training data.

        Args:
            validation_data: multi-label data, in any form :meth:`fit_head` takes.
            metric: ``"f1"`` (each class's F1 score) or ``"accuracy"`` (its yes/no
                accuracy). Defaults to ``"f1"``.
            batch_size: int. Batch size for arrays. Defaults to 32.

        Returns:
            The new thresholds, one per class.

        Raises:
            InvalidArgumentError: the classifier is not multi-label, or an argument is
                invalid.
        """
        _validation.choice("metric", metric, ("f1", "accuracy"))
        batch_size = _validation.positive_int("batch_size", batch_size)
        if not self.multi_label:
            msg = (
                "tune_thresholds() is for multi-label classifiers; a single-label one "
                "predicts its most probable class. Build it with multi_label=True."
            )
            raise InvalidArgumentError(msg)
        dataset = _stages.labeled_data(
            self, validation_data, batch_size, shuffle=False, name="validation_data"
        )
        probabilities, targets = _multi_label.probabilities_and_targets(
            self.model, self._probabilities, dataset
        )
        thresholds = _multi_label.tune_thresholds(
            probabilities, targets, metric=metric, class_names=self.class_names
        )
        self._thresholds = thresholds
        return thresholds

    def evaluate(  # type: ignore[misc]  # self: a mixin's subclass
        self: TransferClassifier,
        data: _inputs.LabeledData,
        *,
        batch_size: int = 32,
        verbose: Verbose = 0,
        tta: bool | int = False,
    ) -> dict[str, float]:
        """Loss and accuracy on labeled data.

        Args:
            data: as for :meth:`fit_head`.
            batch_size: int. Batch size for arrays. Defaults to 32.
            verbose: Keras' progress output. Defaults to 0 (silent).
            tta: bool or int. Test-time augmentation, as for :meth:`predict`: the same
                numbers, of the averaged probabilities. Defaults to False.

        Returns:
            ``{"loss": ..., "accuracy": ...}``; for a multi-label classifier
            ``{"loss", "binary_accuracy", "macro_f1", "auc"}``. The loss is never weighted
            by the ``class_weight`` of training.

        Raises:
            UnsupportedStrategyError: the strategy is a MultiWorkerMirroredStrategy over
                several workers, which Keras 3 cannot evaluate under.
        """
        batch_size = _validation.positive_int("batch_size", batch_size)
        if self._tta_views(tta) > 1:
            return self.interpret(data, batch_size=batch_size, tta=tta).scores()
        _training.check_strategy_can_train(self._strategy)
        dataset = _stages.labeled_data(self, data, batch_size, shuffle=False, name="data")
        if not self.model.compiled or isinstance(
            self.model.loss, _class_weights.ClassWeightedCrossentropy
        ):
            # Keep the optimizer of a compiled model (and its state) for later training.
            _stages.compile_model(self, getattr(self.model, "optimizer", None))
        with _inputs.naming_undecodable_files(dataset):
            results = self.model.evaluate(dataset, verbose=verbose, return_dict=True)
        return {name: float(value) for name, value in results.items()}

    def interpret(  # type: ignore[misc]  # self: a mixin's subclass
        self: TransferClassifier,
        data: _inputs.LabeledData,
        *,
        batch_size: int = 32,
        tta: bool | int = False,
    ) -> _interpret.Interpretation | _interpret.MultiLabelInterpretation:
        """Where the classifier is wrong on labeled data: confusion matrix, report, top losses.

        One prediction pass over the data, batch by batch; see
        :func:`transferkit.interpret.interpret`. A multi-label classifier gets per-class
        reports and 2x2 confusion counts at its :attr:`thresholds`.

        Args:
            data: as for :meth:`evaluate`.
            batch_size: int. Batch size for arrays and folders. Defaults to 32.
            tta: bool or int. Test-time augmentation, as for :meth:`predict`.
                Defaults to False.

        Returns:
            An :class:`~transferkit.interpret.Interpretation`; for a multi-label classifier
            a :class:`~transferkit.interpret.MultiLabelInterpretation`.
        """
        return _interpret.interpret(self, data, batch_size=batch_size, tta=tta)

    def _tta_views(  # type: ignore[misc]  # self: a mixin's subclass
        self: TransferClassifier,
        tta: object,
    ) -> int:
        return _tta.view_count(tta)

    def save(  # type: ignore[misc]  # self: a mixin's subclass
        self: TransferClassifier, path: str | os.PathLike[str]
    ) -> Path:
        """Saves model, class names, backbone, freezing state and history to one file.

        The file is a Keras ``.keras`` archive (it loads with
        ``keras.saving.load_model(path, safe_mode=True)`` once transferkit is imported) with
        transferkit's metadata added, including the backbone's facts, so it also loads
        where the backbone's name is not registered. It is written to a temporary file
        next to ``path`` and renamed over it, so an interrupted save never leaves a broken
        file behind.

        Args:
            path: where to write; must end in ``.keras``.

        Returns:
            The path written.
        """
        return _persistence.write(self, path)

    def export(  # type: ignore[misc]  # self: a mixin's subclass
        self: TransferClassifier,
        path: str | os.PathLike[str],
        *,
        format: ExportFormat = "saved_model",
        quantize: Quantization = None,
    ) -> Path:
        """Writes the model for serving: a TensorFlow SavedModel folder or a TFLite file.

        Either takes raw uint8 images ``(batch, height, width, 3)`` and returns the
        probabilities :meth:`predict` returns (preprocessing inside, augmentation and
        dropout off), under the ``serving_default`` signature: input ``images``, output
        ``probabilities``. Written under a temporary name and renamed into place, like
        :meth:`save`. See :mod:`transferkit.export`.

        Args:
            path: the SavedModel folder to create, or a file name ending in ``.tflite``.
            format: ``"saved_model"`` (TensorFlow Serving, ``tf.saved_model.load``) or
                ``"tflite"``. Defaults to ``"saved_model"``.
            quantize: None, or ``"dynamic_range"`` for int8 TFLite weights.
                Defaults to None.

        Returns:
            The path written.

        Raises:
            InvalidArgumentError: an argument is invalid, or ``path`` is a folder that is
                not an earlier SavedModel.
        """
        return export_classifier(self, path, format=format, quantize=quantize)
