"""Multi-label heads: per-class thresholds, and choosing them on data.

A multi-label classifier has one logit per class and answers each class's yes/no question
on its own: probabilities are independent sigmoids and an image gets every class whose
probability reaches the class's threshold (0.5 unless tuned).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any, Literal

import keras
import numpy as np

from transferkit import _validation
from transferkit.errors import DataError, InvalidArgumentError, TransferkitWarning

__all__ = [
    "DEFAULT_THRESHOLD",
    "ThresholdMetric",
    "check_thresholds",
    "labels_above",
    "probabilities_and_targets",
    "tune_thresholds",
]

DEFAULT_THRESHOLD = 0.5
#: What :func:`tune_thresholds` maximizes for each class.
ThresholdMetric = Literal["f1", "accuracy"]
_METRICS = ("f1", "accuracy")


def check_thresholds(value: object, num_classes: int) -> tuple[float, ...]:
    """Returns thresholds as one float per class; a single number applies to every class.

    Raises:
        InvalidArgumentError: a threshold is outside [0, 1], or the count is wrong.
    """
    values: Sequence[object]
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        values = [value] * num_classes
    elif isinstance(value, (Sequence, np.ndarray)) and not isinstance(value, (str, bytes)):
        values = list(value)
    else:
        values = []
    if len(values) != num_classes:
        msg = (
            f"thresholds must be a number in [0, 1] or one per class ({num_classes}). "
            f"Received: thresholds={value!r}"
        )
        raise InvalidArgumentError(msg)
    return tuple(
        _validation.fraction("thresholds", v, low_inclusive=True, high_inclusive=True)
        for v in values
    )


def labels_above(
    probabilities: np.ndarray, thresholds: Sequence[float], class_names: Sequence[str] | None
) -> list[list[str]] | list[list[int]]:
    """Every class whose probability reaches its threshold, for each image, in class order."""
    chosen = np.asarray(probabilities, np.float64) >= np.asarray(thresholds, np.float64)
    if class_names is None:
        return [[int(k) for k in np.flatnonzero(row)] for row in chosen]
    return [[class_names[int(k)] for k in np.flatnonzero(row)] for row in chosen]


def tune_thresholds(
    probabilities: np.ndarray,
    targets: np.ndarray,
    *,
    metric: ThresholdMetric = "f1",
    class_names: Sequence[str] | None = None,
) -> tuple[float, ...]:
    """The threshold of each class that maximizes ``metric`` on labeled data.

    Every distinct way of cutting a class's sorted probabilities is tried; the threshold
    is the midpoint between the two probabilities of the best cut, so it does not sit on a
    validation image. Among equally good cuts the one nearest 0.5 wins. A class with no
    positive (or no negative) image keeps 0.5, with a warning: there is nothing to tune on.

    Args:
        probabilities: float array ``(n, num_classes)`` of predicted probabilities.
        targets: multi-hot array ``(n, num_classes)``.
        metric: ``"f1"`` (the class's F1 score) or ``"accuracy"`` (its yes/no accuracy).
        class_names: for messages.

    Returns:
        One threshold per class.
    """
    _validation.choice("metric", metric, _METRICS)
    scores = np.asarray(probabilities, np.float64)
    truth = np.asarray(targets, np.float64) > 0.5
    if scores.shape != truth.shape or scores.ndim != 2 or not len(scores):
        msg = (
            "tune_thresholds needs multi-hot targets with one column per class for at "
            f"least one image. Received: probabilities of shape {scores.shape}, targets of "
            f"shape {truth.shape}"
        )
        raise DataError(msg)
    thresholds = []
    untunable = []
    for k in range(scores.shape[1]):
        positives = int(truth[:, k].sum())
        if positives in (0, len(truth)):
            untunable.append(class_names[k] if class_names is not None else k)
            thresholds.append(DEFAULT_THRESHOLD)
            continue
        thresholds.append(_best_cut(scores[:, k], truth[:, k], metric))
    if untunable:
        warnings.warn(
            f"Classes {untunable} are on none (or all) of the {len(truth)} images, so their "
            f"thresholds stay at {DEFAULT_THRESHOLD}; tune on data with both answers.",
            TransferkitWarning,
            stacklevel=3,
        )
    return tuple(thresholds)


def _best_cut(scores: np.ndarray, truth: np.ndarray, metric: str) -> float:
    order = np.argsort(-scores, kind="stable")
    ranked, hits = scores[order], truth[order]
    # Cut i predicts the i highest-scoring images positive; only cuts between two
    # different scores can be made by a threshold.
    true_positives = np.concatenate([[0], np.cumsum(hits)])
    false_positives = np.arange(len(ranked) + 1) - true_positives
    positives = true_positives[-1]
    cuts = np.concatenate([[0], np.flatnonzero(np.diff(ranked) < 0) + 1, [len(ranked)]])
    tp, fp = true_positives[cuts], false_positives[cuts]
    if metric == "f1":
        value = 2 * tp / np.maximum(2 * tp + fp + (positives - tp), 1)
    else:
        value = (tp + (len(ranked) - positives - fp)) / len(ranked)
    above = np.concatenate([[1.0], ranked])[cuts]  # the lowest score predicted positive
    below = np.concatenate([ranked, [0.0]])[cuts]  # the highest score predicted negative
    candidates = (above + below) / 2
    best = np.flatnonzero(value >= value.max() - 1e-12)
    return float(candidates[best[np.argmin(np.abs(candidates[best] - DEFAULT_THRESHOLD))]])


def probabilities_and_targets(
    model: keras.Model, probabilities: keras.layers.Layer, dataset: Any
) -> tuple[np.ndarray, np.ndarray]:
    """A model's probabilities and the targets of labeled batches, in one pass over them.

    One pass keeps each image's probabilities with its own targets, whatever the dataset's
    order (a dataset that reshuffles would pair them wrongly over two passes).
    """
    predicted, targets = [], []
    for images, labels, *_ in dataset:
        logits = model(images, training=False)  # eager: no retracing for a short last batch
        predicted.append(keras.ops.convert_to_numpy(probabilities(logits)))
        targets.append(np.asarray(labels))
    return np.concatenate(predicted), np.concatenate(targets)
