"""What a trained classifier does with images: predict, label, evaluate, interpret."""

from __future__ import annotations

import os  # noqa: F401  # named by inputs.Images and LabeledData, for Sphinx

import numpy as np

from transferkit import _validation
from transferkit.classifier.state import ClassifierState
from transferkit.data import inputs
from transferkit.errors import InvalidArgumentError
from transferkit.inference import calibration, evaluation, predict, thresholds
from transferkit.inference import interpret as interpreting
from transferkit.inference.thresholds import ThresholdMetric
from transferkit.inference.tta import view_count
from transferkit.training.options import Verbose

__all__ = ["InferenceMethods"]


class InferenceMethods:
    """Prediction and evaluation methods of :class:`~transferkit.TransferClassifier`."""

    @property
    def temperature(self: ClassifierState) -> float:
        """The temperature the logits are divided by before the softmax (or sigmoids).

        1 until :meth:`calibrate` fits one; saved with the classifier and used by
        :meth:`predict`, :meth:`evaluate`'s TTA, :meth:`interpret` and the exports.
        """
        return self._probabilities.temperature

    def calibrate(
        self: ClassifierState, validation_data: inputs.LabeledData, *, batch_size: int = 32
    ) -> float:
        """Fits the :attr:`temperature` that makes the probabilities mean what they say.

        Temperature scaling (Guo et al. 2017): one number that divides the logits, fitted by
        minimizing the negative log-likelihood of labeled data. The predicted classes stay
        the same; the probabilities grow more or less confident, so that among images given
        0.8 about 80% are right (``interpret(...).report()`` shows the expected calibration
        error). Multi-label classifiers get one temperature for every class. Fit it on
        validation data, not on the training data, after training.

        Args:
            validation_data: labeled data, in any form :meth:`fit_head` takes.
            batch_size: int. Batch size. Defaults to 32.

        Returns:
            The temperature (also set as :attr:`temperature`).
        """
        labeled = self._labeled(validation_data, batch_size, name="validation_data")
        logits, targets = calibration.logits_and_targets(self.model, labeled.dataset)
        temperature = calibration.fit_temperature(
            logits, targets, binary=self.is_binary, multi_label=self.multi_label
        )
        self._set_temperature(temperature)
        return temperature

    def predict(
        self: ClassifierState,
        images: inputs.Images,
        *,
        batch_size: int = 32,
        verbose: Verbose = 0,
        tta: bool | int = False,
    ) -> np.ndarray:
        """Per-class probabilities for raw-pixel images.

        A few images (an array, or a few files) go through the model's compiled predict step
        batch by batch; more stream through Keras' ``predict``. With ``tta`` (test-time
        augmentation) the probabilities of several views of each image are averaged:
        ``True`` is the image and its mirror image; an int ``n`` (up to 12) takes the first
        ``n`` of: the image, its mirror, the central 87.5% crop, that crop mirrored, then the
        four corner crops, each followed by its mirror (ten-crop). One pass per view.

        Args:
            images: an array or tensor ``(n, height, width, 3)`` (or one image), a
                ``tf.data.Dataset`` of image batches (labels are ignored), or the path of an
                image file or folder (its images, recursively, in sorted order; see
                :func:`transferkit.data.list_images`).
            batch_size: int. Batch size. Defaults to 32.
            verbose: Keras' progress output for large inputs. Defaults to 0 (silent).
            tta: bool or int. The views to average; False for none. Defaults to False.

        Returns:
            A float32 array ``(n, num_classes)`` whose rows sum to 1; for a multi-label
            classifier, each class's own probability.
        """
        return predict.probabilities(
            self.model, self._probabilities, images, image_size=self.image_size,
            batch_size=_validation.positive_int("batch_size", batch_size), verbose=verbose,
            views=view_count(tta), distributed=self.strategy is not None,
        )  # fmt: skip

    def predict_labels(
        self: ClassifierState,
        images: inputs.Images,
        *,
        batch_size: int = 32,
        tta: bool | int = False,
    ) -> list[str] | list[int] | list[list[str]] | list[list[int]]:
        """The most probable class of each image; for multi-label, every class above threshold.

        Args:
            images: as for :meth:`predict`.
            batch_size: int. Batch size. Defaults to 32.
            tta: bool or int. Test-time augmentation, as for :meth:`predict`.

        Returns:
            Class names when the classifier has them, class indices otherwise; for a
            multi-label classifier a list per image of the classes whose probability
            reaches their :attr:`thresholds`, in class order (possibly none).
        """
        probabilities = self.predict(images, batch_size=batch_size, tta=tta)
        if self.thresholds is not None:
            return thresholds.labels_above(probabilities, self.thresholds, self.class_names)
        indices = [int(i) for i in np.argmax(probabilities, -1)]
        names = self.class_names
        return indices if names is None else [names[i] for i in indices]

    def tune_thresholds(
        self: ClassifierState,
        validation_data: inputs.LabeledData,
        *,
        metric: ThresholdMetric = "f1",
        batch_size: int = 32,
    ) -> tuple[float, ...]:
        """Picks each class's threshold on labeled data, and sets :attr:`thresholds`.

        Every cut of each class's sorted probabilities is tried; the threshold lies halfway
        between the two probabilities of the best cut (the one nearest 0.5 among equals). A
        class that no image (or every image) has keeps 0.5, with a warning. Tune on
        validation data, not on the training data.

        Args:
            validation_data: multi-label data, in any form :meth:`fit_head` takes.
            metric: ``"f1"`` (each class's F1 score) or ``"accuracy"`` (its yes/no accuracy).
            batch_size: int. Batch size. Defaults to 32.

        Returns:
            The new thresholds, one per class.

        Raises:
            InvalidArgumentError: the classifier is not multi-label, or an argument is invalid.
        """
        _validation.choice("metric", metric, ("f1", "accuracy"))
        if not self.multi_label:
            msg = (
                "tune_thresholds() is for multi-label classifiers; a single-label one "
                "predicts its most probable class. Build it with multi_label=True."
            )
            raise InvalidArgumentError(msg)
        labeled = self._labeled(validation_data, batch_size, name="validation_data")
        found = thresholds.probabilities_and_targets(
            self.model, self._probabilities, labeled.dataset
        )
        tuned = thresholds.tune_thresholds(*found, metric=metric, class_names=self.class_names)
        self._set_thresholds(tuned)
        return tuned

    def evaluate(
        self: ClassifierState,
        data: inputs.LabeledData,
        *,
        batch_size: int = 32,
        verbose: Verbose = 0,
        tta: bool | int = False,
    ) -> dict[str, float]:
        """Loss and accuracy on labeled data.

        Args:
            data: as for :meth:`fit_head`.
            batch_size: int. Batch size. Defaults to 32.
            verbose: Keras' progress output. Defaults to 0 (silent).
            tta: bool or int. Test-time augmentation, as for :meth:`predict`: the same
                numbers, of the averaged probabilities. Defaults to False.

        Returns:
            ``{"loss", "accuracy"}``; for a multi-label classifier ``{"loss",
            "binary_accuracy", "macro_f1", "auc"}``. The loss is never class-weighted.

        Raises:
            UnsupportedStrategyError: a MultiWorkerMirroredStrategy over several workers.
        """
        if view_count(tta) > 1:
            scores: dict[str, float] = self.interpret(data, batch_size=batch_size, tta=tta).scores()
            return scores
        labeled = self._labeled(data, batch_size)
        return evaluation.evaluate(
            self.model, self.config, labeled.dataset, strategy=self.strategy, verbose=verbose
        )

    def interpret(
        self: ClassifierState,
        data: inputs.LabeledData,
        *,
        batch_size: int = 32,
        tta: bool | int = False,
    ) -> interpreting.Interpretation | interpreting.MultiLabelInterpretation:
        """Where the classifier is wrong on labeled data: confusion matrix, report, top losses.

        One prediction pass, batch by batch (see :func:`transferkit.interpret.interpret`). A
        multi-label classifier gets per-class reports and 2x2 counts at its thresholds.

        Args:
            data: as for :meth:`evaluate`.
            batch_size: int. Batch size. Defaults to 32.
            tta: bool or int. Test-time augmentation, as for :meth:`predict`.

        Returns:
            An :class:`~transferkit.interpret.Interpretation`; for a multi-label classifier
            a :class:`~transferkit.interpret.MultiLabelInterpretation`.
        """
        views = view_count(tta)
        labeled = self._labeled(data, batch_size, in_order=True)
        return interpreting.interpret_labeled(self, labeled, views=views)
