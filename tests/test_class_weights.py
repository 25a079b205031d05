"""Class weights: resolving class_weight, and the weighted loss against hand computations."""

from __future__ import annotations

import keras
import numpy as np
import pytest
from sklearn.utils.class_weight import compute_class_weight

from transferkit.errors import DataError, InvalidArgumentError
from transferkit.model import class_weights as cw

NAMES = ("cat", "dog", "fox")


def _softmax(logits: np.ndarray) -> np.ndarray:
    shifted = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return shifted / shifted.sum(axis=-1, keepdims=True)


def _sigmoid(logits: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-logits))


# ---------------------------------------------------------------------- resolving


def test_balanced_is_scikit_learns_rule():
    labels = np.array([0] * 50 + [1] * 5 + [2] * 20)
    counts = cw.label_counts(labels, 3, multi_label=False)

    weights = cw.resolve(
        "balanced", class_names=NAMES, num_classes=3, multi_label=False, counts=counts
    )

    expected = compute_class_weight("balanced", classes=np.arange(3), y=labels)
    assert weights is not None
    assert weights.positive == pytest.approx(expected)
    assert weights.negative is None


def test_dict_keys_may_be_names_or_indices_and_unnamed_classes_weigh_one():
    weights = cw.resolve({"fox": 3.0, 1: 0.5}, class_names=NAMES, num_classes=3, multi_label=False)

    assert weights is not None
    assert weights.positive == (1.0, 0.5, 3.0)
    assert weights.describe(NAMES) == {"positive": {"cat": 1.0, "dog": 0.5, "fox": 3.0}}


def test_multi_label_balanced_weighs_each_labels_positives_against_its_negatives():
    targets = np.array([[1, 0, 1], [1, 0, 0], [1, 1, 0], [0, 0, 1]], np.float32)
    counts = cw.label_counts(targets, 3, multi_label=True)

    weights = cw.resolve(
        "balanced", class_names=NAMES, num_classes=3, multi_label=True, counts=counts
    )

    # label k is a two-class problem: n / (2 * positives), n / (2 * negatives)
    assert weights is not None
    assert weights.positive == pytest.approx((4 / 6, 4 / 2, 4 / 4))
    assert weights.negative == pytest.approx((4 / 2, 4 / 6, 4 / 4))
    for k in range(3):
        expected = compute_class_weight("balanced", classes=np.arange(2), y=targets[:, k])
        assert (weights.negative[k], weights.positive[k]) == pytest.approx(expected)


def test_multi_label_dict_weighs_positives_only():
    weights = cw.resolve({"dog": 4.0}, class_names=NAMES, num_classes=3, multi_label=True)

    assert weights is not None
    assert weights.positive == (1.0, 4.0, 1.0)
    assert weights.negative == (1.0, 1.0, 1.0)


@pytest.mark.parametrize(
    ("class_weight", "message"),
    [
        ("balance", "must be None, 'balanced' or a non-empty dict"),
        ({}, "non-empty dict"),
        ([1.0, 2.0], "non-empty dict"),
        ({"cat": 0.0}, r"class_weight\['cat'\] must be a positive number"),
        ({"cat": float("nan")}, "must be a positive number"),
        ({1.5: 2.0}, "keys must be class names"),
        ({"wolf": 2.0}, r"unknown class 'wolf' \(the class names are \['cat', 'dog', 'fox'\]\)"),
        ({3: 2.0}, "class index 3, outside 0-2"),
        ({"dog": 2.0, 1: 3.0}, r"names class 1 twice \('dog' and 1\)"),
    ],
)
def test_bad_class_weights_are_refused_with_the_value_received(class_weight, message):
    with pytest.raises(InvalidArgumentError, match=message) as raised:
        cw.resolve(class_weight, class_names=NAMES, num_classes=3, multi_label=False)

    assert "Received: " in str(raised.value)


def test_balanced_needs_an_image_of_every_class():
    counts = cw.label_counts(np.array([0, 0, 2]), 3, multi_label=False)

    with pytest.raises(DataError, match=r"none of 3 images has \['dog'\]"):
        cw.resolve("balanced", class_names=NAMES, num_classes=3, multi_label=False, counts=counts)


def test_multi_label_balanced_refuses_a_label_on_every_image():
    counts = cw.label_counts(np.array([[1, 1, 0], [1, 0, 1]]), 3, multi_label=True)

    with pytest.raises(DataError, match=r"every one of 2 images has \['cat'\]"):
        cw.resolve("balanced", class_names=NAMES, num_classes=3, multi_label=True, counts=counts)


# ---------------------------------------------------------------------- the loss, by hand


def test_sparse_weighted_loss_equals_the_hand_computed_mean():
    logits = np.array([[2.0, 0.5, -1.0], [0.1, 0.2, 0.3], [-1.0, 3.0, 0.0]], np.float32)
    labels = np.array([0, 2, 2])
    weights = np.array([1.0, 0.5, 3.0])
    loss = cw.ClassWeightedCrossentropy("sparse", weights.tolist())

    by_hand = np.mean(-np.log(_softmax(logits)[np.arange(3), labels]) * weights[labels])

    assert float(loss(labels, logits)) == pytest.approx(by_hand, rel=1e-5)
    # and it is what Keras' own class_weight (per-sample weights) computes
    keras_loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    assert float(loss(labels, logits)) == pytest.approx(
        float(keras_loss(labels, logits, sample_weight=weights[labels])), rel=1e-5
    )


def test_binary_weighted_loss_equals_the_hand_computed_mean():
    logits = np.array([[1.5], [-0.5], [0.25], [-2.0]], np.float32)
    labels = np.array([1, 0, 0, 1])
    weights = np.array([0.6, 3.0])
    loss = cw.ClassWeightedCrossentropy("binary", weights.tolist())

    p = _sigmoid(logits[:, 0])
    terms = -(labels * np.log(p) + (1 - labels) * np.log(1 - p))
    by_hand = np.mean(terms * weights[labels])

    assert float(loss(labels, logits)) == pytest.approx(by_hand, rel=1e-5)


def test_multi_label_weighted_loss_equals_the_hand_computed_mean():
    logits = np.array([[1.0, -2.0, 0.5], [-0.3, 0.8, 2.0]], np.float32)
    targets = np.array([[1, 0, 1], [0, 1, 0]], np.float32)
    positive, negative = np.array([2.0, 0.5, 1.5]), np.array([0.25, 1.0, 4.0])
    loss = cw.ClassWeightedCrossentropy("multi_label", positive.tolist(), negative.tolist())

    p = _sigmoid(logits)
    terms = -(targets * np.log(p) + (1 - targets) * np.log(1 - p))
    weights = targets * positive + (1 - targets) * negative
    by_hand = np.mean(np.mean(terms * weights, axis=-1))

    assert float(loss(targets, logits)) == pytest.approx(by_hand, rel=1e-5)


def test_unit_weights_give_the_plain_keras_losses():
    logits = np.array([[1.0, -2.0, 0.5], [-0.3, 0.8, 2.0]], np.float32)
    targets = np.array([[1, 0, 1], [0, 1, 0]], np.float32)
    ones = cw.ClassWeights((1.0,) * 3, (1.0,) * 3)

    weighted = cw.make_loss("multi_label", ones)
    plain = cw.make_loss("multi_label", None)

    assert isinstance(plain, keras.losses.BinaryCrossentropy)
    assert float(weighted(targets, logits)) == pytest.approx(float(plain(targets, logits)))


def test_the_loss_round_trips_through_keras_serialization():
    loss = cw.ClassWeightedCrossentropy("multi_label", [2.0, 0.5], [1.0, 3.0])

    rebuilt = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(loss))

    assert isinstance(rebuilt, cw.ClassWeightedCrossentropy)
    assert (rebuilt.kind, rebuilt.positive, rebuilt.negative) == (
        "multi_label",
        [2.0, 0.5],
        [1.0, 3.0],
    )
