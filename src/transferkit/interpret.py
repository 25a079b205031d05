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

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import tensorflow as tf

from transferkit import _inputs, _tta, _validation
from transferkit.data import from_directory
from transferkit.errors import ClassNamesMismatchError, DataError, InvalidArgumentError

if TYPE_CHECKING:
    from transferkit.classifier import TransferClassifier

__all__ = ["MAX_PLOTTED", "Interpretation", "TopLoss", "interpret"]

#: How many of the highest-loss images an :class:`Interpretation` keeps for plotting.
MAX_PLOTTED = 64
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
        path: its image file when the data was a folder, else None.
    """

    index: int
    loss: float
    label: str
    predicted: str
    probability: float
    path: str | None = None


class Interpretation:
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
    def num_classes(self) -> int:
        """The number of classes."""
        return len(self.class_names)

    @property
    def loss(self) -> float:
        """The mean loss, as ``evaluate`` reports it."""
        return float(self.losses.mean()) if len(self.losses) else float("nan")

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
            "support"}``), then ``"accuracy"``, ``"macro avg"`` and ``"weighted avg"``.
        """
        true_positives, false_positives, false_negatives, support = self._class_counts()
        precision = _ratio(true_positives, true_positives + false_positives)
        recall = _ratio(true_positives, true_positives + false_negatives)
        f1 = _ratio(2 * true_positives, 2 * true_positives + false_positives + false_negatives)
        report: dict[str, Any] = {
            name: _scores(precision[i], recall[i], f1[i], int(support[i]))
            for i, name in enumerate(self.class_names)
        }
        total = int(support.sum())
        report["accuracy"] = self.accuracy
        report["macro avg"] = _scores(precision.mean(), recall.mean(), f1.mean(), total)
        weights = support / total if total else np.zeros_like(precision)
        report["weighted avg"] = _scores(
            (precision * weights).sum(), (recall * weights).sum(), (f1 * weights).sum(), total
        )
        return report

    def report_table(self, digits: int = 3) -> str:
        """The report as a text table, laid out like scikit-learn's."""
        digits = _validation.non_negative_int("digits", digits)
        report = self.report()
        rows = [*self.class_names, *_AVERAGES]
        width = max(len("weighted avg"), *(len(name) for name in rows))
        header = f"{'':>{width}}  {'precision':>9}  {'recall':>9}  {'f1-score':>9}  {'support':>9}"
        lines = [header, ""]
        for name in rows:
            if name == _AVERAGES[0]:
                total = report["macro avg"]["support"]
                accuracy = f"{report['accuracy']:.{digits}f}"
                lines += ["", f"{'accuracy':>{width}}  {'':>9}  {'':>9}  {accuracy:>9}  {total:>9}"]
            row = report[name]
            numbers = "  ".join(
                f"{row[key]:>9.{digits}f}" for key in ("precision", "recall", "f1-score")
            )
            lines.append(f"{name:>{width}}  {numbers}  {row['support']:>9}")
        return "\n".join(lines)

    def _class_counts(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        # Per-class one-vs-rest counts; a multi-label interpretation would count each label
        # column the same way and reuse report() unchanged.
        matrix = self.confusion_matrix
        true_positives = np.diag(matrix)
        return (
            true_positives,
            matrix.sum(axis=0) - true_positives,
            matrix.sum(axis=1) - true_positives,
            matrix.sum(axis=1),
        )

    # ------------------------------------------------------------------ mistakes

    def top_losses(self, k: int = 9) -> list[TopLoss]:
        """The ``k`` examples with the highest losses, highest first (ties by index).

        Args:
            k: int. How many. Defaults to 9 (fewer if there are fewer examples).
        """
        k = _validation.positive_int("k", k)
        order = _loss_order(self.losses, np.arange(len(self.losses)))[:k]
        return [
            TopLoss(
                index=int(i),
                loss=float(self.losses[i]),
                label=self.class_names[self.labels[i]],
                predicted=self.class_names[self.predictions[i]],
                probability=float(self.probabilities[i, self.predictions[i]]),
                path=None if self.paths is None else self.paths[i],
            )
            for i in order
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

    def top_loss_images(self, k: int) -> np.ndarray:
        """The raw pixels (uint8) of the ``k`` highest-loss examples, highest first.

        Raises:
            InvalidArgumentError: ``k`` exceeds the images kept (:data:`MAX_PLOTTED`).
        """
        k = _validation.positive_int("k", k)
        top = self.top_losses(k)
        missing = [t.index for t in top if t.index not in self._top_images]
        if missing:
            msg = (
                f"Only the images of the {len(self._top_images)} highest losses are kept "
                f"(at most {MAX_PLOTTED}); ask for fewer. Received: k={k}"
            )
            raise InvalidArgumentError(msg)
        return np.stack([self._top_images[t.index] for t in top])

    # ------------------------------------------------------------------ figures

    def plot_confusion_matrix(
        self, path: str | os.PathLike[str], *, normalize: bool = False
    ) -> Path:
        """Draws the confusion matrix; see :func:`transferkit.plot.confusion_matrix`."""
        from transferkit import plot

        return plot.confusion_matrix(self, path, normalize=normalize)

    def plot_top_losses(self, k: int, path: str | os.PathLike[str]) -> Path:
        """Draws the ``k`` highest-loss images; see :func:`transferkit.plot.top_losses`."""
        from transferkit import plot

        return plot.top_losses(self, k, path)

    def __len__(self) -> int:
        return len(self.labels)

    def __repr__(self) -> str:
        return (
            f"Interpretation({len(self)} examples, {self.num_classes} classes, "
            f"accuracy={self.accuracy:.4f}, loss={self.loss:.4f})"
        )


def interpret(
    classifier: TransferClassifier,
    data: _inputs.LabeledData,
    *,
    batch_size: int = 32,
    tta: bool | int = False,
) -> Interpretation:
    """Predicts labeled data once and returns what the predictions say about mistakes.

    The data is read batch by batch and never held in memory at once; a folder is read in
    a fixed order (class by class, files sorted), and its file paths are kept.

    Args:
        classifier: a :class:`~transferkit.TransferClassifier`.
        data: a ``tf.data.Dataset`` of ``(images, integer labels)`` batches, an ``(x, y)``
            pair of arrays, or the path of a folder with one subfolder of images per
            class, as for :meth:`~transferkit.TransferClassifier.evaluate`.
        batch_size: int. Batch size for arrays and folders. Defaults to 32.
        tta: bool or int. Test-time augmentation: average the probabilities of this many
            views of each image (True: the image and its mirror image; see
            :meth:`~transferkit.TransferClassifier.predict`). Defaults to False.

    Returns:
        An :class:`Interpretation`.

    Raises:
        DataError: the data is malformed, or its labels are not class indices.
        ClassNamesMismatchError: the data's class names are not the classifier's.
    """
    batch_size = _validation.positive_int("batch_size", batch_size)
    count = _tta.view_count(tta)
    dataset, paths, names = _labeled_batches(classifier, data, batch_size)
    binary = classifier.num_classes == 2
    distributed = classifier.strategy is not None
    log_probs, labels = [], []
    kept = _TopImages(MAX_PLOTTED)
    seen = 0
    for images, batch_labels in _pairs(dataset):
        batch = _tta.predict_batch(
            classifier.model, images, count=count, binary=binary, distributed=distributed
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
        paths=paths,
        views=count,
        top_images=kept.images(),
    )


# ---------------------------------------------------------------------- helpers


class _TopImages:
    """The images of the highest losses seen so far, in the order of top_losses()."""

    def __init__(self, size: int) -> None:
        self._size = size
        self._indices = np.zeros(0, np.int64)
        self._losses = np.zeros(0, np.float64)
        self._images: list[np.ndarray] = []

    def update(self, losses: np.ndarray, offset: int, images: Any) -> None:
        indices = np.concatenate([self._indices, offset + np.arange(len(losses))])
        all_losses = np.concatenate([self._losses, losses])
        keep = _loss_order(all_losses, indices)[: self._size]
        pixels = np.asarray(images)
        pool = self._images + [None] * len(losses)  # new images converted only if kept
        self._images = [
            pool[j] if j < len(self._indices) else _uint8(pixels[j - len(self._indices)])
            for j in keep
        ]
        self._indices, self._losses = indices[keep], all_losses[keep]

    def images(self) -> dict[int, np.ndarray]:
        return {int(i): image for i, image in zip(self._indices, self._images, strict=True)}


def _loss_order(losses: np.ndarray, indices: np.ndarray) -> np.ndarray:
    return np.lexsort((indices, -losses))  # highest loss first, then by index


def _uint8(image: np.ndarray) -> np.ndarray:
    return np.clip(np.round(image), 0, 255).astype(np.uint8)


def _ratio(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    numerator = numerator.astype(np.float64)
    safe = np.where(denominator > 0, denominator, 1)
    return np.where(denominator > 0, numerator / safe, 0.0)


def _scores(precision: float, recall: float, f1: float, support: int) -> dict[str, Any]:
    return {
        "precision": float(precision),
        "recall": float(recall),
        "f1-score": float(f1),
        "support": support,
    }


def _labeled_batches(
    classifier: TransferClassifier, data: _inputs.LabeledData, batch_size: int
) -> tuple[tf.data.Dataset, list[str] | None, list[str]]:
    """The data as (images, labels) batches in a fixed order, its file paths, class names."""
    names = list(classifier.class_names or [str(i) for i in range(classifier.num_classes)])
    if isinstance(data, (str, os.PathLike)):
        folder = from_directory(
            data,
            classifier.image_size,
            batch_size,
            class_names=classifier.class_names,
            shuffle=False,
        )
        if folder.validation is not None or folder.test is not None:
            msg = (
                "data is a folder of train/ and validation/ (or test/) folders; pass one of "
                f"them, such as {os.path.join(data, 'validation')!r}. "
                f"Received: data={os.fspath(data)!r}"
            )
            raise DataError(msg)
        dataset = folder.train
    else:
        dataset = _inputs.as_labeled_dataset(
            data,
            image_size=classifier.image_size,
            num_classes=classifier.num_classes,
            batch_size=batch_size,
            shuffle=False,
            name="data",
        )
    found = getattr(data if isinstance(data, tf.data.Dataset) else dataset, "class_names", None)
    if found is not None:
        found = [str(n) for n in found]
        if len(found) != classifier.num_classes or (
            classifier.class_names is not None and found != list(classifier.class_names)
        ):
            msg = (
                f"data has the classes {found} but the classifier has {names}; labels are "
                "indices into the class names, so they must be the same names in the same "
                f"order. Received: data with class_names={found}"
            )
            raise ClassNamesMismatchError(msg)
        names = found
    paths = getattr(dataset, "file_paths", None)
    return dataset, None if paths is None else list(paths), names


def _pairs(dataset: tf.data.Dataset) -> Any:
    for element in dataset:
        yield element[0], element[1]  # a third element (sample weights) is ignored


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
