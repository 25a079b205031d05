"""The backbone runs in inference mode at every stage, for every family of built-in backbones.

Keras 3 lets ``fit``'s ``training=True`` override a ``training=False`` recorded in a functional
graph (keras-team/keras#20285), which switched Dropout and stochastic depth inside EfficientNet
and EfficientNetV2 on during head training. These tests measure the pooled features under
``training=True`` (what ``fit`` runs) against ``training=False`` on one backbone per family.
"""

from __future__ import annotations

import keras
import numpy as np
import pytest

import transferkit as tk
from transferkit.backbones.builtin import BUILTIN_BACKBONES
from transferkit.training import features as _features

# One backbone of every family, at its smallest accepted size.
FAMILY_REPRESENTATIVES = [
    "mobilenet_v2",
    "efficientnet_b0",
    "efficientnet_v2_b0",
    "resnet50",
    "resnet50_v2",
    "convnext_tiny",
    "densenet121",
    "inception_v3",
    "xception",
    "vgg16",
    "nasnet_mobile",
]


def test_every_family_has_a_representative() -> None:
    families = {spec.family for spec in BUILTIN_BACKBONES}  # keras.applications
    assert families == {tk.get_backbone(name).family for name in FAMILY_REPRESENTATIVES}


def pooled_model(clf: tk.TransferClassifier) -> keras.Model:
    return keras.Model(clf.model.input, clf.model.get_layer("pooling").output)


@pytest.mark.slow
@pytest.mark.parametrize("name", FAMILY_REPRESENTATIVES)
def test_backbone_features_ignore_training_true_frozen_and_unfrozen(name: str) -> None:
    spec = tk.get_backbone(name)
    size = max(spec.min_image_size, 32)
    clf = tk.TransferClassifier(
        name, num_classes=3, image_size=size, weights=None, augmentation=None, dropout=0.0
    )
    x = np.random.default_rng(0).integers(0, 256, (4, size, size, 3)).astype("float32")
    pooled = pooled_model(clf)
    inference = keras.ops.convert_to_numpy(pooled(x, training=False))
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(pooled(x, training=True)), inference)
    # The cached head trains on exactly what the full pass computes.
    extractor = _features.FeatureExtractor(clf.model, clf.backbone)
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(extractor(x)), inference, rtol=1e-5, atol=1e-5
    )
    # Unfrozen, the backbone's own Dropout stays off too (the recipe's base(x, training=False)).
    clf.unfreeze(len(clf.backbone.layers) // 2)
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(pooled(x, training=True)), inference)


def test_keras_alone_runs_efficientnet_dropout_under_training_true() -> None:
    # The behaviour transferkit guards against: a canary that fails once Keras changes it.
    backbone = keras.applications.EfficientNetB0(
        include_top=False, weights=None, input_shape=(32, 32, 3)
    )
    inputs = keras.Input((32, 32, 3))
    model = keras.Model(inputs, backbone(inputs, training=False))
    x = np.random.default_rng(0).uniform(0, 255, (2, 32, 32, 3)).astype("float32")
    trained = keras.ops.convert_to_numpy(model(x, training=True))
    inferred = keras.ops.convert_to_numpy(model(x, training=False))
    assert np.abs(trained - inferred).max() > 1e-3


@pytest.mark.slow
def test_cached_and_full_head_training_agree_on_efficientnet(tmp_path) -> None:
    def trained(cache: bool) -> np.ndarray:
        keras.utils.set_random_seed(7)
        clf = tk.TransferClassifier(
            "efficientnet_b0",
            num_classes=2,
            image_size=32,
            weights=None,
            augmentation=None,
            dropout=0.0,
        )
        rng = np.random.default_rng(1)
        x = rng.integers(0, 256, (16, 32, 32, 3)).astype("uint8")
        y = (np.arange(16) % 2).astype("int32")
        clf.fit_head(
            (x, y), epochs=2, batch_size=16, cache_features=cache, verbose=0, learning_rate=1e-2
        )
        return np.asarray(clf.model.get_layer("logits").get_weights()[0])

    np.testing.assert_allclose(trained(True), trained(False), rtol=1e-4, atol=1e-6)
