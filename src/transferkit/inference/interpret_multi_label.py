"""Where a multi-label classifier is wrong: per-class reports, 2x2 confusions, top losses.

A multi-label classifier answers one yes/no question per class, at each class's threshold
(:attr:`~transferkit.TransferClassifier.thresholds`). So its interpretation counts, per
class, the true positives, false positives, false negatives and true negatives (the
layout of scikit-learn's ``multilabel_confusion_matrix``), and its report is
scikit-learn's ``classification_report`` on multi-hot targets, with micro, macro,
weighted and samples averages. An image's loss is its binary cross-entropy averaged over
the classes, as training computes it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import keras
import numpy as np

from transferkit import _validation
from transferkit.data import resolve
from transferkit.data.inputs import check_multi_hot
from transferkit.errors import DataError, InvalidArgumentError
from transferkit.inference import thresholds as _multi_label
from transferkit.inference import tta as _tta
from transferkit.inference.calibration import RELIABILITY_BINS, Reliability, reliability
from transferkit.inference.interpret_common import (
    MAX_PLOTTED,
    InterpretationBase,
    TopImages,
    class_rows,
    pairs,
    ratio,
    report_table,
    scores,
)
from transferkit.model import graph as _graph
from transferkit.model.compile import multi_label_metrics
from transferkit.model.protocol import ClassifierLike

if TYPE_CHECKING:
    import os
    from pathlib import Path

__all__ = ["MultiLabelInterpretation", "MultiLabelTopLoss", "interpret_multi_label"]

_AVERAGES = ("micro avg", "macro avg", "weighted avg", "samples avg")


@dataclass(frozen=True)
class MultiLabelTopLoss:
    """One image among the highest losses of a multi-label classifier.

    Attributes:
        index: its position in the data (the order batches came in).
        loss: its binary cross-entropy, averaged over the classes.
        labels: its true class names, in class order.
        predicted: the class names predicted at the thresholds, in class order.
        probabilities: each class name's predicted probability.
        path: its image file when the data was a folder or a CSV table, else None.
    """

    index: int
    loss: float
    labels: tuple[str, ...]
    predicted: tuple[str, ...]
    probabilities: dict[str, float] = field(default_factory=dict)
    path: str | None = None


class MultiLabelInterpretation(InterpretationBase):
    """A multi-label classifier's predictions on labeled data, and what they say.

    Made by :func:`~transferkit.interpret.interpret` (or
    :meth:`~transferkit.TransferClassifier.interpret`) for a multi-label classifier; the
    constructor takes the arrays of one prediction pass.

    Args:
        class_names: the class names, in column order.
        targets: multi-hot array ``(n, num_classes)`` of zeros and ones.
        logits: float array ``(n, num_classes)``. The logit of each class's predicted
            probability (with test-time augmentation, of its mean over the views).
        thresholds: the probability at which each class is predicted, one per class or
            one for all. Defaults to 0.5.
        paths: the image file of each example, or None.
        views: how many test-time augmentation views were averaged. Defaults to 1.
        top_images: the raw pixels of the highest-loss examples, by index (at most
            :data:`~transferkit.interpret.MAX_PLOTTED`), for :meth:`plot_top_losses`.
            Defaults to none.

    Attributes:
        class_names: tuple of str.
        targets: the true answers, int64 array ``(n, num_classes)`` of zeros and ones.
        logits: float64 array ``(n, num_classes)``.
        probabilities: each class's probability, float32 array ``(n, num_classes)``.
        thresholds: tuple of one float per class.
        predictions: the answers at the thresholds, bool array ``(n, num_classes)``.
        losses: the loss of each example, float64 array ``(n,)``.
        paths: tuple of file paths, or None.
        views: int.

    Example:
        >>> import numpy as np
        >>> result = MultiLabelInterpretation(
        ...     class_names=["cat", "dog"],
        ...     targets=np.array([[1, 0], [0, 1], [0, 1]]),
        ...     logits=np.array([[2.0, -1.0], [1.0, -2.0], [1.5, 3.0]]),
        ... )
        >>> result.confusion_matrices.tolist()  # per class [[TN, FP], [FN, TP]]
        [[[0, 2], [0, 1]], [[1, 0], [1, 1]]]
        >>> result.most_confused()
        [('dog', 'cat', 1)]
        >>> result.report()["dog"]["recall"]
        0.5
        >>> result.exact_match
        0.3333333333333333
    """

    def __init__(
        self,
        *,
        class_names: Sequence[str],
        targets: np.ndarray,
        logits: np.ndarray,
        thresholds: float | Sequence[float] = _multi_label.DEFAULT_THRESHOLD,
        paths: Sequence[str] | None = None,
        views: int = 1,
        top_images: dict[int, np.ndarray] | None = None,
    ) -> None:
        self.class_names = tuple(class_names)
        self.logits = np.asarray(logits, np.float64)
        truth = np.asarray(targets)
        shape = (len(self.logits), len(self.class_names))
        if self.logits.shape != shape or truth.shape != shape:
            msg = (
                "targets and logits must have one row per example and one column per class. "
                f"Received: targets of shape {truth.shape} and logits of shape "
                f"{self.logits.shape} for {len(self.class_names)} classes"
            )
            raise InvalidArgumentError(msg)
        check_multi_hot(truth, len(self.class_names), "the")
        self.targets = truth.astype(np.int64)
        self.thresholds = _multi_label.check_thresholds(thresholds, len(self.class_names))
        # log sigmoid(z) without overflow: the probability of "yes"
        self.probabilities = np.exp(-np.logaddexp(0.0, -self.logits)).astype(np.float32)
        # Compared in float64, as predict_labels() compares predict()'s float32 output.
        self.predictions = self.probabilities.astype(np.float64) >= np.asarray(self.thresholds)
        self.losses = _losses(self.targets, self.logits)
        self.paths = None if paths is None else tuple(str(p) for p in paths)
        self.views = views
        self._top_images = dict(top_images or {})

    # ------------------------------------------------------------------ numbers

    @property
    def exact_match(self) -> float:
        """The fraction of images whose predicted set of classes is exactly the true one."""
        if not len(self.targets):
            return 0.0
        return float(np.mean(np.all(self.predictions == (self.targets == 1), axis=1)))

    @property
    def confusion_matrices(self) -> np.ndarray:
        """Per-class counts, int64 ``(num_classes, 2, 2)``: ``[[TN, FP], [FN, TP]]``.

        The layout of scikit-learn's ``multilabel_confusion_matrix``: for each class, rows
        are the true answer (no, yes) and columns the predicted one.
        """
        truth = self.targets == 1
        predicted = self.predictions
        counts = [
            ~truth & ~predicted,
            ~truth & predicted,
            truth & ~predicted,
            truth & predicted,
        ]
        return np.stack([c.sum(axis=0) for c in counts], axis=-1).reshape(-1, 2, 2)

    def report(self) -> dict[str, Any]:
        """Precision, recall, F1 and support per class, with four averages.

        Returns:
            A dict in the layout of scikit-learn's ``classification_report(targets,
            predictions, output_dict=True, zero_division=0)`` on multi-hot rows: one entry
            per class name (``{"precision", "recall", "f1-score", "support"}``), then
            ``"micro avg"`` (of the counts summed over the classes), ``"macro avg"``,
            ``"weighted avg"`` (by support) and ``"samples avg"`` (of each image's own
            scores). Supports count the true labels.
        """
        matrices = self.confusion_matrices
        tp, fp, fn = matrices[:, 1, 1], matrices[:, 0, 1], matrices[:, 1, 0]
        report, macro, weighted = class_rows(self.class_names, tp, fp, fn)
        total = int(tp.sum() + fn.sum())
        summed = [np.array([counts.sum()]) for counts in (tp, fp, fn)]
        report["micro avg"] = class_rows(["micro avg"], *summed)[0]["micro avg"]
        report["macro avg"] = macro
        report["weighted avg"] = weighted
        truth = self.targets == 1
        hits = (truth & self.predictions).sum(axis=1)
        per_image = [
            ratio(hits, self.predictions.sum(axis=1)),
            ratio(hits, truth.sum(axis=1)),
            ratio(2 * hits, self.predictions.sum(axis=1) + truth.sum(axis=1)),
        ]
        precision, recall, f1 = (float(p.mean()) if len(p) else 0.0 for p in per_image)
        report["samples avg"] = scores(precision, recall, f1, total)
        report["expected_calibration_error"] = self.reliability().expected_calibration_error
        return report

    def reliability(self, bins: int = RELIABILITY_BINS) -> Reliability:
        """How confident each yes/no answer is against how often it is right, all classes.

        Every (image, class) answer at the thresholds counts once, with the probability of
        the answer given (``p`` for a yes, ``1 - p`` for a no); see
        :meth:`transferkit.interpret.Interpretation.reliability`.
        """
        probability = self.probabilities.astype(np.float64)
        answer = self.predictions
        confidence = np.where(answer, probability, 1 - probability)
        correct = answer == (self.targets > 0.5)
        return reliability(confidence, correct, _validation.positive_int("bins", bins))

    def plot_reliability(self, path: str | os.PathLike[str]) -> Path:
        """Draws the reliability diagram; see :func:`transferkit.plot.reliability`."""
        from transferkit import plot

        return plot.reliability(self, path)

    def report_table(self, digits: int = 3) -> str:
        """The report as a text table, laid out like scikit-learn's."""
        return report_table(self.report(), self.class_names, _AVERAGES, digits)

    def scores(self) -> dict[str, float]:
        """The numbers :meth:`~transferkit.TransferClassifier.evaluate` returns.

        ``loss``, and Keras' ``binary_accuracy``, ``macro_f1`` and ``auc`` metrics of a
        multi-label head (at probability 0.5, as in training), fed with :attr:`logits`.
        """
        results = {"loss": self.loss}
        for metric in multi_label_metrics():
            metric.update_state(self.targets.astype(np.float32), self.logits.astype(np.float32))
            results[metric.name] = float(keras.ops.convert_to_numpy(metric.result()))
        return results

    # ------------------------------------------------------------------ mistakes

    def top_losses(self, k: int = 9) -> list[MultiLabelTopLoss]:
        """The ``k`` images with the highest losses, highest first (ties by index).

        Args:
            k: int. How many. Defaults to 9 (fewer if there are fewer images).
        """
        names = self.class_names
        return [
            MultiLabelTopLoss(
                index=int(i),
                loss=float(self.losses[i]),
                labels=tuple(names[j] for j in np.flatnonzero(self.targets[i])),
                predicted=tuple(names[j] for j in np.flatnonzero(self.predictions[i])),
                probabilities={
                    name: float(p) for name, p in zip(names, self.probabilities[i], strict=True)
                },
                path=self._path(i),
            )
            for i in self._top_indices(k)
        ]

    def most_confused(self, min_count: int = 1) -> list[tuple[str, str, int]]:
        """The (missed class, wrongly predicted class, count) pairs, most frequent first.

        A pair counts the images that have the first class but were not given it, and
        were given the second class without having it: the multi-label form of taking one
        class for another. Labels missed or added alone are in :attr:`confusion_matrices`.

        Args:
            min_count: int. Leave out pairs that occur fewer times. Defaults to 1.
        """
        min_count = _validation.positive_int("min_count", min_count)
        truth = self.targets == 1
        missed = (truth & ~self.predictions).astype(np.int64)
        added = (~truth & self.predictions).astype(np.int64)
        together = missed.T @ added  # [t, p]: images missing t and given p
        found = [
            (self.class_names[t], self.class_names[p], int(together[t, p]))
            for t in range(self.num_classes)
            for p in range(self.num_classes)
            if together[t, p] >= min_count
        ]
        return sorted(found, key=lambda pair: -pair[2])  # stable: class order among ties

    # ------------------------------------------------------------------ figures

    def plot_confusion_matrices(self, path: str | os.PathLike[str]) -> Path:
        """Draws each class's 2x2 counts; see :func:`transferkit.plot.confusion_matrices`."""
        from transferkit import plot

        return plot.confusion_matrices(self, path)

    def __repr__(self) -> str:
        return (
            f"MultiLabelInterpretation({len(self)} examples, {self.num_classes} classes, "
            f"exact_match={self.exact_match:.4f}, loss={self.loss:.4f})"
        )


def interpret_multi_label(
    classifier: ClassifierLike, labeled: resolve.Labeled, names: list[str], *, views: int
) -> MultiLabelInterpretation:
    """One prediction pass of a multi-label classifier over labeled data (see ``interpret``)."""
    head = _graph.Probabilities(binary=False, multi_label=True, temperature=classifier.temperature)
    distributed = classifier.strategy is not None
    logits, targets = [], []
    kept = TopImages(MAX_PLOTTED)
    seen = 0
    for images, batch_targets in pairs(labeled.dataset):
        log_probs = _tta.predict_batch(
            classifier.model, images, count=views, head=head, distributed=distributed
        )
        truth = np.asarray(batch_targets)
        check_multi_hot(truth, classifier.num_classes, "data")
        # The logit of the (mean) probability: log p - log(1 - p).
        batch_logits = log_probs[..., 1] - log_probs[..., 0]
        logits.append(batch_logits)
        targets.append(truth)
        kept.update(_losses(truth, batch_logits), seen, images)
        seen += len(truth)
    if seen == 0:
        msg = "data holds no images. Received: data with 0 images"
        raise DataError(msg)
    return MultiLabelInterpretation(
        class_names=names,
        targets=np.concatenate(targets),
        logits=np.concatenate(logits),
        thresholds=classifier.thresholds or _multi_label.DEFAULT_THRESHOLD,
        paths=labeled.file_paths,
        views=views,
        top_images=kept.images(),
    )


def _losses(targets: np.ndarray, logits: np.ndarray) -> np.ndarray:
    # Binary cross-entropy from logits, averaged over the classes as Keras' loss does:
    # softplus(-z) for a yes, softplus(z) for a no.
    return np.asarray(np.logaddexp(0.0, np.where(targets == 1, -logits, logits)).mean(axis=1))
