"""Multi-label options: max and avg+max pooling, the focal and the asymmetric loss."""

from __future__ import annotations

import keras
import numpy as np
import pytest

import transferkit as tk
from conftest import TINY_BACKBONE, separable_images
from transferkit.backbones.pooling import AvgMaxPooling2D, pooling_layer
from transferkit.errors import InvalidArgumentError
from transferkit.model import class_weights as cw
from transferkit.model import compile as _compile
from transferkit.model.losses import ClassifierLoss
from transferkit.training.features import FeatureExtractor, FeatureHead

LOGITS = np.array([[2.0, -1.0, 0.3], [-0.5, 0.2, 4.0], [1.5, -3.0, 0.0]], np.float32)
TARGETS = np.array([[1.0, 0.0, 1.0], [0.0, 0.0, 1.0], [1.0, 1.0, 0.0]], np.float32)


def _sigmoid(logits: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-logits.astype(np.float64)))


def _bce(targets: np.ndarray, logits: np.ndarray) -> np.ndarray:
    p = _sigmoid(logits)
    return -(targets * np.log(p) + (1 - targets) * np.log(1 - p))


def _asymmetric(targets: np.ndarray, logits: np.ndarray) -> np.ndarray:
    # Ridnik et al. (2021) with its defaults: gamma+ 0, gamma- 4, probability margin 0.05.
    p = _sigmoid(logits)
    shifted = np.maximum(p - 0.05, 0.0)
    return -(targets * np.log(p) + (1 - targets) * shifted**4 * np.log(1 - shifted))


def _multi_label(pooling: str = "avgmax", loss: str = "crossentropy") -> tk.TransferClassifier:
    return tk.TransferClassifier(
        TINY_BACKBONE, num_classes=3, weights=None, augmentation=None, multi_label=True,
        pooling=pooling, loss=loss,
    )  # fmt: skip


def _multi_hot(labels: np.ndarray) -> np.ndarray:
    # Class c, and class (c + 1) % 3 for even images: two labels on half the images.
    targets = np.eye(3, dtype=np.float32)[labels]
    targets[::2, :] += np.eye(3, dtype=np.float32)[(labels[::2] + 1) % 3]
    return targets


# ---------------------------------------------------------------------- pooling


def test_max_and_avgmax_pooling_are_numpys_max_and_mean():
    feature_map = np.random.default_rng(0).normal(size=(2, 3, 4, 5)).astype(np.float32)

    pooled_max = np.asarray(pooling_layer(4, "max", 0)(feature_map))
    pooled_both = np.asarray(pooling_layer(4, "avgmax", 0)(feature_map))

    np.testing.assert_allclose(pooled_max, feature_map.max(axis=(1, 2)), rtol=1e-6)
    expected = np.concatenate([feature_map.mean(axis=(1, 2)), feature_map.max(axis=(1, 2))], -1)
    np.testing.assert_allclose(pooled_both, expected, rtol=1e-5)
    assert AvgMaxPooling2D().compute_output_shape((None, 3, 4, 5)) == (None, 10)


@pytest.mark.parametrize(
    ("rank", "pooling"), [(3, "max"), (3, "avgmax"), (4, "cls"), (4, "sum")], ids=str
)
def test_a_pooling_that_does_not_fit_the_output_is_refused(rank, pooling):
    with pytest.raises(InvalidArgumentError, match="Received: pooling="):
        pooling_layer(rank, pooling, 1)


def test_cached_features_with_avgmax_pooling_give_the_models_logits():
    clf = _multi_label("avgmax")
    images, _ = separable_images(4)

    features = FeatureExtractor(clf.model, clf.backbone)(images)
    logits = FeatureHead(clf.model)(features)

    assert features.shape == (4, 32)  # 16 channels, averaged and maxed
    np.testing.assert_allclose(
        np.asarray(logits), clf.model.predict(images, verbose=0), rtol=1e-5, atol=1e-6
    )


@pytest.mark.slow
def test_avgmax_asymmetric_classifier_trains_and_round_trips_with_safe_mode(tmp_path):
    clf = _multi_label("avgmax", "asymmetric")
    images, labels = separable_images(24, num_classes=3)

    clf.fit_head((images, _multi_hot(labels)), epochs=2, learning_rate=1e-2, verbose=0)
    clf.save(tmp_path / "multi.keras")
    loaded = tk.load_classifier(tmp_path / "multi.keras")

    assert clf.model.loss.form == "asymmetric"
    assert (loaded.config.pooling, loaded.config.loss) == ("avgmax", "asymmetric")
    np.testing.assert_allclose(loaded.predict(images[:4]), clf.predict(images[:4]), rtol=1e-5)


@pytest.mark.parametrize("pooling", ["max", "avgmax"])
def test_grad_cam_reads_through_max_pooling(pooling):
    clf = _multi_label(pooling)
    images, _ = separable_images(2)

    heatmaps = tk.grad_cam(clf, images, class_index=0)

    assert heatmaps.shape == (2, 32, 32)
    assert heatmaps.min() >= 0.0
    assert heatmaps.max() <= 1.0


# ---------------------------------------------------------------------- losses


def test_focal_loss_is_keras_binary_focal_crossentropy():
    loss = ClassifierLoss("multi_label", form="focal")

    keras_focal = keras.losses.BinaryFocalCrossentropy(from_logits=True, gamma=2.0)
    p = _sigmoid(LOGITS)
    p_t = TARGETS * p + (1 - TARGETS) * (1 - p)
    expected = ((1 - p_t) ** 2 * _bce(TARGETS, LOGITS)).mean(axis=-1).mean()
    assert float(loss(TARGETS, LOGITS)) == pytest.approx(expected, rel=1e-5)
    assert float(loss(TARGETS, LOGITS)) == pytest.approx(float(keras_focal(TARGETS, LOGITS)))


def test_asymmetric_loss_is_the_papers_formula():
    loss = ClassifierLoss("multi_label", form="asymmetric")

    expected = _asymmetric(TARGETS, LOGITS).mean(axis=-1).mean()
    assert float(loss(TARGETS, LOGITS)) == pytest.approx(expected, rel=1e-5)


def test_asymmetric_loss_without_focusing_or_margin_is_binary_cross_entropy():
    loss = ClassifierLoss(
        "multi_label", form="asymmetric", gamma_positive=0.0, gamma_negative=0.0, margin=0.0
    )

    assert float(loss(TARGETS, LOGITS)) == pytest.approx(_bce(TARGETS, LOGITS).mean(), rel=1e-5)


@pytest.mark.parametrize("form", ["crossentropy", "asymmetric"])
def test_class_weights_weigh_each_classes_terms(form):
    config = _multi_label(loss=form).config
    weights = cw.ClassWeights((2.0, 1.0, 0.5), (1.0, 3.0, 1.0))

    loss = _compile.loss(config, weights)

    terms = _bce(TARGETS, LOGITS) if form == "crossentropy" else _asymmetric(TARGETS, LOGITS)
    scale = TARGETS * np.array([2.0, 1.0, 0.5]) + (1 - TARGETS) * np.array([1.0, 3.0, 1.0])
    expected = (terms * scale).mean(axis=-1).mean()
    assert float(loss(TARGETS, LOGITS)) == pytest.approx(expected, rel=1e-5)
    assert isinstance(loss, cw.ClassWeightedCrossentropy) == (form == "crossentropy")


def test_focal_loss_of_a_binary_head_reads_the_one_logit():
    clf = tk.TransferClassifier(TINY_BACKBONE, num_classes=2, weights=None, loss="focal")
    logits = np.array([[1.0], [-2.0], [0.5]], np.float32)
    labels = np.array([1, 0, 0])

    value = float(_compile.loss(clf.config)(labels, logits))

    keras_focal = keras.losses.BinaryFocalCrossentropy(from_logits=True, gamma=2.0)
    assert value == pytest.approx(float(keras_focal(labels[:, None].astype("float32"), logits)))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"num_classes": 3, "loss": "focal"}, "is for sigmoid heads"),
        ({"num_classes": 3, "loss": "asymmetric"}, "is for sigmoid heads"),
        ({"num_classes": 3, "multi_label": True, "loss": "bce"}, "loss must be one of"),
    ],
    ids=["focal-softmax", "asymmetric-softmax", "unknown"],
)
def test_a_loss_that_does_not_fit_the_head_is_refused_before_building(kwargs, message):
    with pytest.raises(InvalidArgumentError, match=message):
        tk.TransferClassifier(TINY_BACKBONE, weights=None, **kwargs)


def test_classifier_loss_round_trips_through_keras_serialization():
    loss = ClassifierLoss("multi_label", form="asymmetric", positive=[2.0, 1.0], margin=0.1)

    rebuilt = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(loss))

    assert isinstance(rebuilt, ClassifierLoss)
    assert rebuilt.get_config() == loss.get_config()


def test_soft_rows_and_class_indices_give_the_same_softmax_loss_and_accuracy():
    logits = LOGITS
    labels = np.array([0, 2, 1])
    rows = np.eye(3, dtype=np.float32)[labels]
    loss = ClassifierLoss("sparse", label_smoothing=0.1)

    assert float(loss(rows, logits)) == pytest.approx(float(loss(labels, logits)), rel=1e-6)
    on_rows, on_indices = _compile.MixedAccuracy(), _compile.MixedAccuracy()
    on_rows.update_state(rows, logits)
    on_indices.update_state(labels, logits)
    assert float(on_rows.result()) == float(on_indices.result()) == pytest.approx(2 / 3)
