"""Calibration: temperature scaling, and how far confidences are from accuracies.

Guo et al. (2017), "On calibration of modern neural networks": dividing the logits by one
temperature, fitted on validation data by minimizing the negative log-likelihood, leaves the
predicted classes as they are and makes the probabilities mean what they say. The expected
calibration error (ECE) is the gap between confidence and accuracy, averaged over equal-width
confidence bins weighted by how many predictions fall in each.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import keras
import numpy as np

from transferkit.errors import DataError

__all__ = [
    "RELIABILITY_BINS",
    "Reliability",
    "fit_temperature",
    "logits_and_targets",
    "reliability",
]

#: The number of equal-width confidence bins of the ECE and the reliability diagram.
RELIABILITY_BINS = 15
# The inverse temperatures searched: temperatures from 0.05 to 20.
_LOWEST, _HIGHEST = 0.05, 20.0
_GOLDEN = (math.sqrt(5) - 1) / 2


def logits_and_targets(model: keras.Model, dataset: Any) -> tuple[np.ndarray, np.ndarray]:
    """A model's float64 logits and the targets of labeled batches, in one pass over them."""
    logits, targets = [], []
    for images, labels, *_ in dataset:
        output = model(images, training=False)  # eager: no retracing for a short last batch
        logits.append(np.asarray(keras.ops.convert_to_numpy(output), np.float64))
        targets.append(np.asarray(labels))
    if not logits:
        msg = "The data holds no images to calibrate on. Received: 0 images"
        raise DataError(msg)
    return np.concatenate(logits), np.concatenate(targets)


def negative_log_likelihood(
    logits: np.ndarray, targets: np.ndarray, *, binary: bool, multi_label: bool
) -> float:
    """The mean cross-entropy of logits against targets, as training computes it."""
    if multi_label or binary:
        truth = targets.reshape(logits.shape).astype(np.float64)
        # log(1 + exp(-|z|)) + max(z, 0) - z * y: binary cross-entropy on logits, stably.
        losses = np.logaddexp(0.0, -np.abs(logits)) + np.maximum(logits, 0) - logits * truth
        return float(losses.mean())
    shifted = logits - logits.max(axis=1, keepdims=True)
    log_norm = np.log(np.exp(shifted).sum(axis=1))
    chosen = shifted[np.arange(len(targets)), targets.astype(np.int64)]
    return float((log_norm - chosen).mean())


def fit_temperature(
    logits: np.ndarray, targets: np.ndarray, *, binary: bool, multi_label: bool
) -> float:
    """The temperature that minimizes the validation negative log-likelihood.

    The likelihood is convex in the inverse temperature, so a golden-section search over it
    finds the minimum; 60 steps narrow the interval far below any meaningful digit.
    """

    def loss(inverse: float) -> float:
        return negative_log_likelihood(
            logits * inverse, targets, binary=binary, multi_label=multi_label
        )

    low, high = 1 / _HIGHEST, 1 / _LOWEST
    for _ in range(60):
        left, right = high - _GOLDEN * (high - low), low + _GOLDEN * (high - low)
        if loss(left) <= loss(right):
            high = right
        else:
            low = left
    return float(1 / ((low + high) / 2))


@dataclass(frozen=True)
class Reliability:
    """A reliability diagram's bins, and the expected calibration error they give.

    Attributes:
        edges: the ``bins + 1`` bin edges over the confidence in [0, 1].
        counts: the predictions in each bin.
        confidence: the mean confidence of each bin (0 where it is empty).
        accuracy: the fraction of correct predictions in each bin (0 where it is empty).
        expected_calibration_error: the count-weighted mean of ``|accuracy - confidence|``.
    """

    edges: np.ndarray
    counts: np.ndarray
    confidence: np.ndarray
    accuracy: np.ndarray
    expected_calibration_error: float


def reliability(
    confidence: np.ndarray, correct: np.ndarray, bins: int = RELIABILITY_BINS
) -> Reliability:
    """Bins predictions by confidence; each bin's accuracy against its mean confidence."""
    confidence = np.asarray(confidence, np.float64).ravel()
    correct = np.asarray(correct, np.float64).ravel()
    edges = np.linspace(0.0, 1.0, bins + 1)
    # Bins are (low, high], the first [0, high], as in Guo et al.
    which = np.clip(np.searchsorted(edges, confidence, side="left") - 1, 0, bins - 1)
    counts = np.bincount(which, minlength=bins)
    safe = np.maximum(counts, 1)
    mean_confidence = np.bincount(which, weights=confidence, minlength=bins) / safe
    accuracy = np.bincount(which, weights=correct, minlength=bins) / safe
    total = max(len(confidence), 1)
    ece = float(np.sum(counts / total * np.abs(accuracy - mean_confidence)))
    return Reliability(edges, counts, mean_confidence, accuracy, ece)
