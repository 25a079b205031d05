"""Where a classifier is wrong: confusion matrix, per-class report and top losses.

:func:`interpret` predicts labeled data once, batch by batch, and keeps for every example
its class probabilities, its label and its loss (the training loss, computed from the
logits in float64). Everything an :class:`Interpretation` reports comes from those arrays:
nothing is predicted twice, and the images themselves are not kept, except the
:data:`MAX_PLOTTED` with the highest losses, for :meth:`Interpretation.plot_top_losses`.

The report follows scikit-learn's ``classification_report(output_dict=True)`` layout, with
every class in the report (also those absent from the data) and 0 where a ratio divides by
zero (scikit-learn's ``zero_division=0``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from transferkit import _validation
from transferkit.data import inputs as _inputs
from transferkit.data import resolve
from transferkit.errors import DataError, InvalidArgumentError
from transferkit.inference import interpret_common as _interpret_shared
from transferkit.inference import tta as _tta
from transferkit.inference.calibration import RELIABILITY_BINS, Reliability, reliability
from transferkit.inference.interpret_common import (
    InterpretationBase,
    TopImages,
    class_rows,
    pairs,
    report_table,
)
from transferkit.inference.interpret_multi_label import (
    MultiLabelInterpretation,
    MultiLabelTopLoss,
    interpret_multi_label,
)
from transferkit.model import graph as _graph
from transferkit.model.protocol import ClassifierLike, expected

if TYPE_CHECKING:
    import os
    from pathlib import Path

__all__ = [
    "MAX_PLOTTED",
    "Interpretation",
    "MultiLabelInterpretation",
    "MultiLabelTopLoss",
    "TopLoss",
    "interpret",
]

#: How many of the highest-loss images an interpretation keeps for plotting.
MAX_PLOTTED = _interpret_shared.MAX_PLOTTED
_AVERAGES = ("macro avg", "weighted avg")


@dataclass(frozen=True)
class TopLoss:
    """One example among the highest losses.

    Attributes:
        index: its position in the data (the order batches came in).
        loss: its loss, as training computes it.
        label: its true class name.
        predicted: the predicted class name.
        probability: the probability of the predicted class.
        path: its image file when the data was a folder or a CSV table, else None.
    """

    index: int
    loss: float
    label: str
    predicted: str
    probability: float
    path: str | None = None


class Interpretation(InterpretationBase):
    """Predictions on labeled data, and what they say about the classifier's mistakes.

    Made by :func:`interpret` (or :meth:`~transferkit.TransferClassifier.interpret`); the
    constructor takes the arrays of one prediction pass.

    Args:
        class_names: the class names, in label order.
        labels: int array ``(n,)``. The true class of each example.
        log_probabilities: float array ``(n, num_classes)``. The predicted
            log-probabilities; losses are their negated values at the labels.
        paths: the image file of each example, or None.
        views: how many test-time augmentation views were averaged. Defaults to 1.
        top_images: the raw pixels of the highest-loss examples, by index (at most
            :data:`MAX_PLOTTED`), for :meth:`plot_top_losses`. Defaults to none.

    Attributes:
        class_names: tuple of str.
        labels: the true classes, int array ``(n,)``.
        probabilities: the predicted probabilities, float32 array ``(n, num_classes)``.
        predictions: the predicted classes (the most probable), int array ``(n,)``.
        losses: the loss of each example, float64 array ``(n,)``.
        paths: tuple of file paths, or None.
        views: int.

    Example:
        >>> import numpy as np
        >>> result = Interpretation(
        ...     class_names=["cat", "dog"],
        ...     labels=np.array([0, 1, 1]),
        ...     log_probabilities=np.log([[0.9, 0.1], [0.3, 0.7], [0.6, 0.4]]),
        ... )
        >>> result.confusion_matrix.tolist()
        [[1, 0], [1, 1]]
        >>> result.most_confused()
        [('dog', 'cat', 1)]
        >>> result.report()["dog"]["recall"]
        0.5
        >>> result.top_losses(1)[0].index
        2
    """

    def __init__(
        self,
        *,
        class_names: Sequence[str],
        labels: np.ndarray,
        log_probabilities: np.ndarray,
        paths: Sequence[str] | None = None,
        views: int = 1,
        top_images: dict[int, np.ndarray] | None = None,
    ) -> None:
        self.class_names = tuple(class_names)
        self.labels = np.asarray(labels, dtype=np.int64).reshape(-1)
        log_probs = np.asarray(log_probabilities, dtype=np.float64)
        if log_probs.shape != (len(self.labels), len(self.class_names)):
            msg = (
                "log_probabilities must have one row per label and one column per class. "
                f"Received: shape {log_probs.shape} for {len(self.labels)} labels and "
                f"{len(self.class_names)} classes"
            )
            raise InvalidArgumentError(msg)
        self.probabilities = np.exp(log_probs).astype(np.float32)
        self.predictions = np.argmax(log_probs, axis=-1)
        self.losses = -log_probs[np.arange(len(self.labels)), self.labels]
        self.paths = None if paths is None else tuple(str(p) for p in paths)
        self.views = views
        self._top_images = dict(top_images or {})

    # ------------------------------------------------------------------ numbers

    @property
    def accuracy(self) -> float:
        """The fraction of examples whose predicted class is the true one."""
        return float(np.mean(self.predictions == self.labels)) if len(self.labels) else 0.0

    @property
    def confusion_matrix(self) -> np.ndarray:
        """Counts, int64 ``(num_classes, num_classes)``: rows true, columns predicted."""
        matrix = np.zeros((self.num_classes, self.num_classes), dtype=np.int64)
        np.add.at(matrix, (self.labels, self.predictions), 1)
        return matrix

    def report(self) -> dict[str, Any]:
        """Precision, recall, F1 and support per class, with accuracy and averages.

        Returns:
            A dict in scikit-learn's ``classification_report(output_dict=True)`` layout:
            one entry per class name (``{"precision", "recall", "f1-score",
            "support"}``), then ``"accuracy"``, ``"macro avg"`` and ``"weighted avg"``;
            last, ``"expected_calibration_error"`` (see :meth:`reliability`).
        """
        matrix = self.confusion_matrix
        true_positives = np.diag(matrix)
        report, macro, weighted = class_rows(
            self.class_names,
            true_positives,
            matrix.sum(axis=0) - true_positives,
            matrix.sum(axis=1) - true_positives,
        )
        report["accuracy"] = self.accuracy
        report["macro avg"] = macro
        report["weighted avg"] = weighted
        report["expected_calibration_error"] = self.reliability().expected_calibration_error
        return report

    def reliability(self, bins: int = RELIABILITY_BINS) -> Reliability:
        """How the confidence in each predicted class compares with how often it is right.

        The predictions binned by their probability (equal-width bins); each bin's accuracy
        against its mean confidence, and the expected calibration error (ECE) they give. See
        :meth:`~transferkit.TransferClassifier.calibrate`.
        """
        confidence = self.probabilities.astype(np.float64).max(axis=1)
        correct = self.predictions == self.labels
        return reliability(confidence, correct, _validation.positive_int("bins", bins))

    def report_table(self, digits: int = 3) -> str:
        """The report as a text table, laid out like scikit-learn's."""
        return report_table(self.report(), self.class_names, _AVERAGES, digits, "accuracy")

    def scores(self) -> dict[str, float]:
        """The numbers :meth:`~transferkit.TransferClassifier.evaluate` returns."""
        return {"loss": self.loss, "accuracy": self.accuracy}

    # ------------------------------------------------------------------ mistakes

    def top_losses(self, k: int = 9) -> list[TopLoss]:
        """The ``k`` examples with the highest losses, highest first (ties by index).

        Args:
            k: int. How many. Defaults to 9 (fewer if there are fewer examples).
        """
        return [
            TopLoss(
                index=int(i),
                loss=float(self.losses[i]),
                label=self.class_names[self.labels[i]],
                predicted=self.class_names[self.predictions[i]],
                probability=float(self.probabilities[i, self.predictions[i]]),
                path=self._path(i),
            )
            for i in self._top_indices(k)
        ]

    def most_confused(self, min_count: int = 1) -> list[tuple[str, str, int]]:
        """The (true class, predicted class, count) pairs of mistakes, most frequent first.

        Args:
            min_count: int. Leave out pairs that occur fewer times. Defaults to 1.
        """
        min_count = _validation.positive_int("min_count", min_count)
        matrix = self.confusion_matrix
        pairs = [
            (self.class_names[t], self.class_names[p], int(matrix[t, p]))
            for t in range(self.num_classes)
            for p in range(self.num_classes)
            if t != p and matrix[t, p] >= min_count
        ]
        return sorted(pairs, key=lambda pair: -pair[2])  # stable: class order among ties

    # ------------------------------------------------------------------ figures

    def plot_confusion_matrix(
        self, path: str | os.PathLike[str], *, normalize: bool = False
    ) -> Path:
        """Draws the confusion matrix; see :func:`transferkit.plot.confusion_matrix`."""
        from transferkit import plot

        return plot.confusion_matrix(self, path, normalize=normalize)

    def plot_reliability(self, path: str | os.PathLike[str]) -> Path:
        """Draws the reliability diagram; see :func:`transferkit.plot.reliability`."""
        from transferkit import plot

        return plot.reliability(self, path)

    def __repr__(self) -> str:
        return (
            f"Interpretation({len(self)} examples, {self.num_classes} classes, "
            f"accuracy={self.accuracy:.4f}, loss={self.loss:.4f})"
        )


def interpret(
    classifier: ClassifierLike,
    data: _inputs.LabeledData,
    *,
    batch_size: int = 32,
    tta: bool | int = False,
) -> Interpretation | MultiLabelInterpretation:
    """Predicts labeled data once and returns what the predictions say about mistakes.

    The data is read batch by batch and never held in memory at once; a folder is read in
    a fixed order (class by class, files sorted), and its file paths are kept, as are a
    CSV table's (the training set of :func:`transferkit.data.from_csv`, read in table
    order).

    Args:
        classifier: a :class:`~transferkit.TransferClassifier`.
        data: a ``tf.data.Dataset`` of ``(images, labels)`` batches, an ``(x, y)``
            pair of arrays, or the path of a folder with one subfolder of images per
            class, as for :meth:`~transferkit.TransferClassifier.evaluate`. Labels are
            class indices, or multi-hot rows for a multi-label classifier.
        batch_size: int. Batch size for arrays and folders. Defaults to 32.
        tta: bool or int. Test-time augmentation: average the probabilities of this many
            views of each image (True: the image and its mirror image; see
            :meth:`~transferkit.TransferClassifier.predict`). Defaults to False.

    Returns:
        An :class:`Interpretation`; for a multi-label classifier a
        :class:`MultiLabelInterpretation`.

    Raises:
        DataError: the data is malformed, or its labels are not class indices (multi-hot
            rows for a multi-label classifier).
        ClassNamesMismatchError: the data's class names are not the classifier's.
    """
    batch_size = _validation.positive_int("batch_size", batch_size)
    views = _tta.view_count(tta)
    labeled = resolve.labeled(data, expected(classifier), batch_size=batch_size, in_order=True)
    return interpret_labeled(classifier, labeled, views=views)


def interpret_labeled(
    classifier: ClassifierLike, labeled: resolve.Labeled, *, views: int
) -> Interpretation | MultiLabelInterpretation:
    """:func:`interpret` on data already resolved (in a fixed order), with ``views`` views."""
    names = list(
        labeled.class_names or classifier.class_names or map(str, range(classifier.num_classes))
    )
    if classifier.multi_label:
        return interpret_multi_label(classifier, labeled, names, views=views)
    head = _graph.Probabilities(classifier.is_binary, temperature=classifier.temperature)
    distributed = classifier.strategy is not None
    log_probs, labels = [], []
    kept = TopImages(MAX_PLOTTED)
    seen = 0
    for images, batch_labels in pairs(labeled.dataset):
        batch = _tta.predict_batch(
            classifier.model, images, count=views, head=head, distributed=distributed
        )
        truth = _check_labels(batch_labels, classifier.num_classes)
        log_probs.append(batch)
        labels.append(truth)
        kept.update(-batch[np.arange(len(truth)), truth], seen, images)
        seen += len(truth)
    if seen == 0:
        msg = "data holds no images. Received: data with 0 images"
        raise DataError(msg)
    return Interpretation(
        class_names=names,
        labels=np.concatenate(labels),
        log_probabilities=np.concatenate(log_probs),
        paths=labeled.file_paths,
        views=views,
        top_images=kept.images(),
    )


def _check_labels(labels: Any, num_classes: int) -> np.ndarray:
    array = np.asarray(labels)
    if array.ndim == 2 and array.shape[1] == 1:
        array = array[:, 0]
    if array.ndim != 1 or not np.issubdtype(array.dtype, np.number):
        msg = (
            "Labels must be integer class indices, one per image (not one-hot). "
            f"Received: a batch of labels of shape {array.shape} and dtype {array.dtype}"
        )
        raise DataError(msg)
    if len(array) and (array.min() < 0 or array.max() >= num_classes or np.any(array % 1)):
        msg = (
            f"Labels must be integer class indices in [0, {num_classes - 1}]. "
            f"Received: labels from {array.min()} to {array.max()}"
        )
        raise DataError(msg)
    return array.astype(np.int64)
