"""Multi-label heads' pieces: metrics on logits, thresholds and tuning them."""

from __future__ import annotations

import keras
import numpy as np
import pytest
from sklearn.metrics import f1_score, roc_auc_score

from transferkit.data.inputs import check_multi_hot
from transferkit.errors import DataError, InvalidArgumentError, TransferkitWarning
from transferkit.inference import thresholds as ml
from transferkit.model.compile import SigmoidF1Score, multi_label_metrics


def _sigmoid(logits: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-logits))


def test_metrics_on_logits_agree_with_scikit_learn_on_probabilities():
    rng = np.random.default_rng(0)
    targets = (rng.random((200, 3)) < [0.5, 0.2, 0.7]).astype(np.float32)
    logits = (2.0 * targets - 1.0 + rng.normal(0, 1.2, targets.shape)).astype(np.float32)
    probabilities = _sigmoid(logits)

    results = {}
    for metric in multi_label_metrics():
        metric.update_state(targets, logits)
        results[metric.name] = float(metric.result())

    assert results["binary_accuracy"] == pytest.approx(np.mean((probabilities > 0.5) == targets))
    assert results["macro_f1"] == pytest.approx(
        f1_score(targets, probabilities > 0.5, average="macro"), rel=1e-5
    )
    # Keras' AUC integrates over 200 thresholds, scikit-learn's is exact.
    assert results["auc"] == pytest.approx(roc_auc_score(targets, probabilities), abs=5e-3)


def test_sigmoid_f1_round_trips_through_keras_serialization():
    metric = SigmoidF1Score(average="macro", threshold=0.5, name="macro_f1")

    rebuilt = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(metric))

    assert isinstance(rebuilt, SigmoidF1Score)
    assert rebuilt.average == "macro"


def test_labels_above_uses_each_classes_threshold():
    probabilities = np.array([[0.9, 0.3, 0.6], [0.2, 0.25, 0.1], [0.5, 0.7, 0.59]])

    labels = ml.labels_above(probabilities, (0.5, 0.25, 0.6), ["cat", "dog", "fox"])

    assert labels == [["cat", "dog", "fox"], ["dog"], ["cat", "dog"]]
    assert ml.labels_above(probabilities, (0.95, 0.95, 0.95), None) == [[], [], []]


def test_tuned_threshold_separates_a_separable_class_halfway():
    # class 0: positives 0.3-0.4, negatives 0.1-0.2, so 0.5 finds none of them
    probabilities = np.array([[0.4, 0.9], [0.35, 0.8], [0.3, 0.1], [0.2, 0.7], [0.1, 0.2]])
    targets = np.array([[1, 1], [1, 1], [1, 0], [0, 0], [0, 0]])

    thresholds = ml.tune_thresholds(probabilities, targets)

    assert thresholds[0] == pytest.approx(0.25)
    assert thresholds[1] == pytest.approx(0.75)


@pytest.mark.parametrize("metric", ["f1", "accuracy"])
def test_tuned_thresholds_beat_every_threshold_on_a_fine_grid(metric):
    rng = np.random.default_rng(1)
    targets = (rng.random((300, 4)) < [0.1, 0.3, 0.5, 0.8]).astype(int)
    probabilities = np.clip(0.35 * targets + rng.normal(0.3, 0.2, targets.shape), 0, 1)

    def score(k: int, threshold: float) -> float:
        predicted = probabilities[:, k] >= threshold
        truth = targets[:, k] == 1
        if metric == "f1":  # 2 TP / (2 TP + FP + FN), by hand: scikit-learn's is slow here
            tp = np.sum(predicted & truth)
            return float(2 * tp / max(2 * tp + np.sum(predicted != truth), 1))
        return float(np.mean(predicted == targets[:, k]))

    thresholds = ml.tune_thresholds(probabilities, targets, metric=metric)

    for k, threshold in enumerate(thresholds):
        best_on_grid = max(score(k, t) for t in np.linspace(0, 1, 401))
        assert score(k, threshold) >= best_on_grid - 1e-12
        assert score(k, threshold) >= score(k, 0.5)


def test_a_class_without_positives_keeps_the_default_with_a_warning():
    probabilities = np.array([[0.9, 0.2], [0.1, 0.3]])
    targets = np.array([[1, 0], [0, 0]])

    with pytest.warns(TransferkitWarning, match=r"Classes \['fox'\] are on none"):
        thresholds = ml.tune_thresholds(probabilities, targets, class_names=["cat", "fox"])

    assert thresholds[1] == 0.5


def test_bad_thresholds_and_targets_are_refused():
    assert ml.check_thresholds(0.3, 2) == (0.3, 0.3)
    with pytest.raises(InvalidArgumentError, match=r"one per class \(3\)"):
        ml.check_thresholds([0.5, 0.5], 3)
    with pytest.raises(InvalidArgumentError, match=r"Received: thresholds=1\.5"):
        ml.check_thresholds([0.5, 1.5], 2)
    with pytest.raises(InvalidArgumentError, match="Received: metric='auc'"):
        ml.tune_thresholds(np.zeros((2, 2)), np.zeros((2, 2)), metric="auc")
    with pytest.raises(DataError, match=r"targets of shape \(2,\)"):
        ml.tune_thresholds(np.zeros((2, 2)), np.zeros(2))
    with pytest.raises(DataError, match=r"rows of 3 zeros and ones"):
        check_multi_hot(np.array([0, 2, 1]), 3, "train")
