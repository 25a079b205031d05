"""The freezing invariants, measured on real weights after every step of generated stage sequences.

1. After fit_head: no backbone variable changed at all, BatchNorm moving statistics included.
2. After unfreeze(k): layers before k are frozen; layers from k on are trainable except
   BatchNormalization, which never is; model.trainable_weights is exactly the head's weights
   plus those of the unfrozen non-BN layers.
3. After fine_tune: frozen layers and every BN layer's moving mean/variance, gamma and beta are
   bit-identical; unfrozen layers changed.
4. predict is deterministic and identical before and after save/load.

Plus the Keras 3 pitfall (keras-team/keras#20285) shown side by side: the plain recipe's BN
statistics drift once the base is trainable; transferkit's don't.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import keras
import numpy as np
import pytest
from hypothesis import given, settings

import transferkit as tk
from conftest import TINY_BACKBONE, separable_images, tiny_bn_backbone
from strategies import stage_sequences
from transferkit.errors import NotUnfrozenError

TINY_SIZE = 16
MOBILENET_SIZE = 32
BN_VARIABLES = ("gamma", "beta", "moving_mean", "moving_variance")


def snapshot(model: keras.Model) -> dict[str, np.ndarray]:
    """Every variable of a model, trainable or not, copied to numpy."""
    return {variable.path: np.array(variable.numpy(), copy=True) for variable in model.weights}


def changed_paths(before: dict[str, np.ndarray], after: dict[str, np.ndarray]) -> set[str]:
    assert before.keys() == after.keys()
    return {path for path in before if not np.array_equal(before[path], after[path])}


def layer_paths(layer: keras.layers.Layer) -> set[str]:
    return {variable.path for variable in layer.weights}


def is_batch_norm(layer: keras.layers.Layer) -> bool:
    return isinstance(layer, keras.layers.BatchNormalization)


def assert_unfreeze_invariant(clf: tk.TransferClassifier, index: int) -> None:
    layers = clf.backbone.layers
    for position, layer in enumerate(layers):
        expected = position >= index and not is_batch_norm(layer)
        assert layer.trainable is expected, (position, layer.name)
    expected_ids = {id(w) for layer in clf.head_layers for w in layer.weights}
    for layer in layers[index:]:
        if not is_batch_norm(layer):
            expected_ids |= {id(w) for w in layer.weights}
    assert {id(w) for w in clf.model.trainable_weights} == expected_ids


def assert_fine_tune_invariant(
    clf: tk.TransferClassifier, before: dict[str, np.ndarray], after: dict[str, np.ndarray]
) -> None:
    index = clf.unfrozen_from
    assert index is not None
    changed = changed_paths(before, after)
    for position, layer in enumerate(clf.backbone.layers):
        paths = layer_paths(layer)
        if position < index or is_batch_norm(layer):
            assert not paths & changed, f"frozen layer {position} ({layer.name}) changed"
        elif paths:
            assert paths & changed, f"unfrozen layer {position} ({layer.name}) did not change"
    for layer in clf.backbone.layers:
        if is_batch_norm(layer):
            for name in BN_VARIABLES:
                path = getattr(layer, name).path
                np.testing.assert_array_equal(before[path], after[path])


def assert_predict_round_trips(clf: tk.TransferClassifier, images: np.ndarray) -> None:
    first = clf.predict(images)
    np.testing.assert_array_equal(first, clf.predict(images))
    with tempfile.TemporaryDirectory() as folder:
        path = clf.save(Path(folder) / "model.keras")
        loaded = tk.load_classifier(path)
    np.testing.assert_array_equal(first, loaded.predict(images))
    assert loaded.unfrozen_from == clf.unfrozen_from
    assert [layer.trainable for layer in loaded.backbone.layers] == [
        layer.trainable for layer in clf.backbone.layers
    ]


def run_sequence(
    clf: tk.TransferClassifier, steps: list[tuple], data: tuple[np.ndarray, np.ndarray]
) -> None:
    for step in steps:
        before = snapshot(clf.backbone)
        if step[0] == "fit_head":
            clf.fit_head(data, epochs=1, batch_size=8, learning_rate=1e-2, verbose=0)
            assert changed_paths(before, snapshot(clf.backbone)) == set()
            assert not any(layer.trainable for layer in clf.backbone.layers)
            assert clf.unfrozen_from is None
        elif step[0] == "unfreeze":
            clf.unfreeze(step[1])
            index = 0 if step[1] is None else step[1] % len(clf.backbone.layers)
            assert clf.unfrozen_from == index
            assert_unfreeze_invariant(clf, index)
            assert changed_paths(before, snapshot(clf.backbone)) == set()
        elif clf.unfrozen_from is None:
            with pytest.raises(NotUnfrozenError):
                clf.fine_tune(data, epochs=1, batch_size=8, verbose=0)
            assert changed_paths(before, snapshot(clf.backbone)) == set()
        else:
            clf.fine_tune(data, epochs=1, batch_size=8, learning_rate=1e-3, verbose=0)
            assert_fine_tune_invariant(clf, before, snapshot(clf.backbone))
            assert_unfreeze_invariant(clf, clf.unfrozen_from)


TINY_LAYER_COUNT = len(tiny_bn_backbone(input_shape=(TINY_SIZE, TINY_SIZE, 3)).layers)


@pytest.mark.slow
@given(steps=stage_sequences(TINY_LAYER_COUNT))
def test_invariants_hold_on_a_tiny_batchnorm_backbone(steps: list[tuple]) -> None:
    data = separable_images(16, size=TINY_SIZE)
    clf = tk.TransferClassifier(
        TINY_BACKBONE, num_classes=2, image_size=TINY_SIZE, weights=None, augmentation=None
    )
    run_sequence(clf, steps, data)
    assert_predict_round_trips(clf, data[0][:4])


@pytest.mark.slow
@given(steps=stage_sequences(TINY_LAYER_COUNT))
def test_invariants_hold_for_multiclass_heads_with_augmentation(steps: list[tuple]) -> None:
    data = separable_images(16, size=TINY_SIZE, num_classes=3)
    clf = tk.TransferClassifier(TINY_BACKBONE, num_classes=3, image_size=TINY_SIZE, weights=None)
    run_sequence(clf, steps, data)
    assert_predict_round_trips(clf, data[0][:4])


MOBILENET_LAYER_COUNT = 154


@pytest.fixture(scope="module")
def mobilenet_weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """MobileNetV2 weights whose BN statistics match real activations, like trained ones.

    With random weights and BN at mean 0 / variance 1, activations blow up and saturate
    ReLU6, so whole layers get exactly zero gradient and could not show that unfrozen
    layers train. One training-mode pass with momentum 0 sets every moving statistic to the
    batch statistic of its real input.
    """
    backbone = tk.get_backbone("mobilenet_v2").build(MOBILENET_SIZE, weights=None)
    norms = [layer for layer in backbone.layers if is_batch_norm(layer)]
    for layer in norms:
        layer.momentum = 0.0
    images = separable_images(16, size=MOBILENET_SIZE)[0].astype("float32") / 127.5 - 1
    backbone(images, training=True)
    path = tmp_path_factory.mktemp("weights") / "mobilenet_v2.weights.h5"
    backbone.save_weights(path)
    return path


@settings(max_examples=2)
@given(steps=stage_sequences(MOBILENET_LAYER_COUNT, max_steps=3))
@pytest.mark.slow
def test_invariants_hold_on_mobilenet_v2(steps: list[tuple], mobilenet_weights: Path) -> None:
    data = separable_images(8, size=MOBILENET_SIZE)
    clf = tk.TransferClassifier(
        "mobilenet_v2", num_classes=2, image_size=MOBILENET_SIZE, weights=mobilenet_weights
    )
    assert len(clf.backbone.layers) == MOBILENET_LAYER_COUNT
    run_sequence(clf, steps, data)
    assert_predict_round_trips(clf, data[0][:2])


@pytest.mark.slow
def test_the_recipe_from_layer_100_on_mobilenet_v2_keeps_invariants(
    mobilenet_weights: Path,
) -> None:
    data = separable_images(8, size=MOBILENET_SIZE)
    clf = tk.TransferClassifier(
        "mobilenet_v2", num_classes=2, image_size=MOBILENET_SIZE, weights=mobilenet_weights
    )
    run_sequence(clf, [("fit_head",), ("unfreeze", 100), ("fine_tune",)], data)
    frozen_norms = [layer for layer in clf.backbone.layers[100:] if is_batch_norm(layer)]
    assert frozen_norms, "the recipe's top 54 layers include BatchNormalization layers"


# ------------------------------------------------------------- keras-team/keras#20285


def plain_recipe_batch_norm_drift(data: tuple[np.ndarray, np.ndarray]) -> float:
    """The tutorial's fine-tuning in plain Keras: base(x, training=False), base.trainable=True."""
    base = tiny_bn_backbone(input_shape=(TINY_SIZE, TINY_SIZE, 3))
    inputs = keras.Input((TINY_SIZE, TINY_SIZE, 3))
    x = keras.layers.Rescaling(1 / 127.5, offset=-1)(inputs)
    x = base(x, training=False)
    x = keras.layers.GlobalAveragePooling2D()(x)
    model = keras.Model(inputs, keras.layers.Dense(1)(x))
    base.trainable = True
    model.compile(keras.optimizers.RMSprop(1e-5), keras.losses.BinaryCrossentropy(from_logits=True))
    before = snapshot(base)
    model.fit(*data, epochs=1, batch_size=8, verbose=0)
    after = snapshot(base)
    moving = [p for p in before if "moving_" in p]
    return max(float(np.abs(before[p] - after[p]).max()) for p in moving)


def transferkit_batch_norm_drift(data: tuple[np.ndarray, np.ndarray]) -> float:
    clf = tk.TransferClassifier(
        TINY_BACKBONE, num_classes=2, image_size=TINY_SIZE, weights=None, augmentation=None
    )
    clf.fit_head(data, epochs=1, batch_size=8, verbose=0)
    clf.unfreeze(None)
    before = snapshot(clf.backbone)
    clf.fine_tune(data, epochs=1, batch_size=8, verbose=0)
    after = snapshot(clf.backbone)
    moving = [p for p in before if "moving_" in p]
    return max(float(np.abs(before[p] - after[p]).max()) for p in moving)


@pytest.mark.slow
def test_plain_keras_recipe_drifts_batch_norm_statistics_and_transferkit_does_not() -> None:
    data = separable_images(16, size=TINY_SIZE)
    # If this first assertion fails, Keras fixed #20285: revisit the docs' Concepts page.
    assert plain_recipe_batch_norm_drift(data) > 1e-4
    assert transferkit_batch_norm_drift(data) == 0.0
