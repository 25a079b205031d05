"""Discriminative learning rates: block grouping, per-group rates, and the optimizer's steps."""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

import transferkit as tk
from conftest import TINY_BACKBONE, separable_images
from transferkit.discriminative import (
    block_groups,
    chunk_groups,
    discriminative_optimizer,
    group_learning_rates,
    trainable_groups,
)
from transferkit.errors import InvalidArgumentError

RATES = [1e-3, 1e-2, 3e-2, 1e-1, 3e-1]  # four tiny_bn groups, then the head


def _named_layers(names: list[str]) -> list[keras.layers.Layer]:
    return [keras.layers.Dense(1, name=name) for name in names]


def _names(groups: list[list[keras.layers.Layer]]) -> list[list[str]]:
    return [[layer.name for layer in group] for group in groups]


def test_block_groups_follow_block_names_with_the_stem_first_and_the_top_last() -> None:
    layers = _named_layers(
        ["Conv1", "bn_Conv1", "block_1_expand", "block_1_project", "add", "block_2_expand",
         "block_2_project", "Conv_1", "out_relu"]
    )  # fmt: skip
    assert _names(block_groups(layers, 0)) == [
        ["Conv1", "bn_Conv1", "block_1_expand", "block_1_project"],
        ["add", "block_2_expand", "block_2_project"],
        ["Conv_1", "out_relu"],
    ]


def test_block_groups_leave_out_the_frozen_layers() -> None:
    layers = _named_layers(["stem", "conv2_block1_1_conv", "conv2_block1_out",
                            "conv2_block2_1_conv", "conv3_block1_1_conv", "post_bn"])  # fmt: skip
    assert _names(block_groups(layers, 2)) == [
        ["conv2_block1_out"],
        ["conv2_block2_1_conv"],
        ["conv3_block1_1_conv"],
        ["post_bn"],
    ]


def test_block_groups_fall_back_to_equal_chunks_without_block_names() -> None:
    clf = tk.TransferClassifier(TINY_BACKBONE, num_classes=2, weights=None)
    groups = _names(block_groups(clf.backbone.layers, 0))
    assert groups == _names(chunk_groups(clf.backbone.layers, 0))
    assert groups == [["conv1", "bn1"], ["conv2", "bn2"], ["dwconv3", "bn3"], ["conv4", "bn4"]]


def test_block_groups_split_mobilenet_v2_into_its_blocks() -> None:
    backbone = keras.applications.MobileNetV2(
        input_shape=(32, 32, 3), alpha=0.35, include_top=False, weights=None
    )
    groups = block_groups(backbone.layers, 0)
    firsts = [group[0].name for group in groups]
    assert len(groups) == 18  # expanded_conv (with the stem), block_1 ... block_16, the top
    assert firsts[0] == backbone.layers[0].name  # the input and stem join expanded_conv
    assert [name.split("_")[1] for name in firsts[1:-1]] == [str(i) for i in range(1, 17)]
    assert firsts[-1] == "Conv_1"
    # Every layer from the first unfrozen one on is in exactly one group, in order.
    flat = [layer for group in block_groups(backbone.layers, 100) for layer in group]
    assert flat == backbone.layers[100:]


def test_geometric_rates_go_from_low_to_high() -> None:
    rates = group_learning_rates(5, (1e-5, 1e-1))
    np.testing.assert_allclose(rates, [1e-5, 1e-4, 1e-3, 1e-2, 1e-1], rtol=1e-12)


def test_layer_decay_is_timms_rate_times_decay_to_the_distance_from_the_head() -> None:
    rates = group_learning_rates(4, 1e-3, layer_decay=0.8)
    np.testing.assert_allclose(rates, [1e-3 * 0.8**3, 1e-3 * 0.8**2, 1e-3 * 0.8, 1e-3])


def test_a_single_rate_without_decay_is_the_same_for_every_group() -> None:
    assert group_learning_rates(3, 2e-4) == [2e-4] * 3


@pytest.mark.parametrize(
    ("learning_rate", "layer_decay", "match"),
    [
        ((1e-3, 1e-5), None, "low must not exceed high"),
        ((1e-5, 1e-3), 0.8, "not both"),
        ((1e-5,), None, r"\(low, high\) pair"),
        (1e-3, 1.5, "layer_decay"),
        (-1.0, None, "learning_rate"),
    ],
)
def test_invalid_rates_are_refused(
    learning_rate: object, layer_decay: float | None, match: str
) -> None:
    with pytest.raises(InvalidArgumentError, match=match):
        group_learning_rates(3, learning_rate, layer_decay=layer_decay)  # type: ignore[arg-type]


# ---------------------------------------------------------------------- the optimizer's steps


def _unfrozen_tiny() -> tuple[tk.TransferClassifier, list[list[keras.Variable]]]:
    # No dropout and no augmentation: a step is deterministic, so it can be checked exactly.
    clf = tk.TransferClassifier(
        TINY_BACKBONE, num_classes=3, weights=None, dropout=0.0, augmentation=None
    )
    clf.unfreeze(None)
    return clf, trainable_groups(clf.backbone, 0)


def _one_step(
    clf: tk.TransferClassifier, optimizer: keras.optimizers.Optimizer
) -> tuple[list[np.ndarray], list[np.ndarray], list[np.ndarray]]:
    images, labels = separable_images(16, num_classes=3)
    model = clf.model
    model.compile(optimizer, keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    before = [v.numpy() for v in model.trainable_variables]
    with tf.GradientTape() as tape:
        loss = model.compute_loss(images, labels, model(images, training=True))
    grads = [g.numpy() for g in tape.gradient(loss, model.trainable_variables)]
    model.fit(images, labels, batch_size=16, epochs=1, shuffle=False, verbose=0)
    after = [v.numpy() for v in model.trainable_variables]
    return before, after, grads


def _rate_of(
    variable: keras.Variable, groups: list[list[keras.Variable]], rates: list[float]
) -> float:
    for group, rate in zip(groups, rates, strict=False):
        if any(variable is v for v in group):
            return rate
    return rates[-1]  # the head


@pytest.mark.tensorflow_only(reason="the reference gradient is tf.GradientTape's")
def test_one_sgd_step_moves_each_group_by_its_rate_times_its_gradient() -> None:
    clf, groups = _unfrozen_tiny()
    assert len(groups) == 4
    optimizer = discriminative_optimizer(groups, RATES, keras.optimizers.SGD)
    before, after, grads = _one_step(clf, optimizer)
    for variable, b, a, g in zip(clf.model.trainable_variables, before, after, grads, strict=True):
        step = np.float32(_rate_of(variable, groups, RATES)) * g
        # Within float32 rounding of the weights (2 ulps) and of the gradient (1e-4).
        tolerance = 2 * np.spacing(np.abs(b)) + 1e-4 * np.abs(step)
        assert np.all(np.abs(a - (b - step)) <= tolerance), variable.path
        assert np.abs(step).max() > 100 * np.spacing(np.abs(b)).max(), variable.path


@pytest.mark.tensorflow_only(reason="the reference gradient is tf.GradientTape's")
def test_one_adam_step_moves_each_group_by_its_own_rate() -> None:
    # Adam's first step is rate * g / (|g| + epsilon / sqrt(1 - beta_2)), epsilon / sqrt(1 -
    # beta_2) = 3.2e-6: about the rate wherever |g| >> 3.2e-6, whatever the gradient's scale,
    # which is why rates and not gradients must be scaled.
    clf, groups = _unfrozen_tiny()
    optimizer = discriminative_optimizer(groups, RATES, keras.optimizers.Adam)
    before, after, grads = _one_step(clf, optimizer)
    for variable, b, a, g in zip(clf.model.trainable_variables, before, after, grads, strict=True):
        rate = _rate_of(variable, groups, RATES)
        large = np.abs(g) > 1e-3
        np.testing.assert_allclose(np.abs(b - a)[large], rate, rtol=1e-2, err_msg=variable.path)


@pytest.mark.slow
def test_every_groups_rate_and_state_survive_saving(tmp_path: Path) -> None:
    clf, groups = _unfrozen_tiny()
    optimizer = discriminative_optimizer(groups, RATES, keras.optimizers.Adam)
    _one_step(clf, optimizer)
    clf.model.save_weights(tmp_path / "run.weights.h5")  # what checkpoints write
    clf.model.save(tmp_path / "model.keras")

    fresh, fresh_groups = _unfrozen_tiny()
    fresh_optimizer = discriminative_optimizer(fresh_groups, RATES, keras.optimizers.Adam)
    fresh.model.compile(fresh_optimizer, "mse")
    fresh_optimizer.build(fresh.model.trainable_variables)
    fresh.model.load_weights(tmp_path / "run.weights.h5")
    loaded = keras.saving.load_model(tmp_path / "model.keras", safe_mode=True).optimizer
    for restored in (fresh_optimizer, loaded):
        assert [int(o.iterations) for o in restored.optimizers] == [1] * 5
        rates = [float(o.learning_rate) for o in restored.optimizers]
        np.testing.assert_allclose(rates, RATES, rtol=1e-6)
        assert len(restored.variables) == len(optimizer.variables)
        for saved, back in zip(optimizer.variables, restored.variables, strict=True):
            np.testing.assert_array_equal(saved.numpy(), back.numpy())


def test_reduce_lr_on_plateau_scales_every_group() -> None:
    clf, groups = _unfrozen_tiny()
    optimizer = discriminative_optimizer(groups, RATES, keras.optimizers.SGD)
    images, labels = separable_images(16, num_classes=3)
    clf.model.compile(optimizer, keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    # min_delta so large that no epoch counts as an improvement: it reduces after epoch 2.
    plateau = keras.callbacks.ReduceLROnPlateau("loss", factor=0.5, patience=1, min_delta=1e9)
    clf.model.fit(images, labels, batch_size=16, epochs=2, verbose=0, callbacks=[plateau])
    rates = [float(o.learning_rate) for o in optimizer.optimizers]
    np.testing.assert_allclose(rates, [r / 2 for r in RATES], rtol=1e-6)


def test_discriminative_optimizer_needs_one_rate_per_group_and_the_head() -> None:
    _, groups = _unfrozen_tiny()
    with pytest.raises(InvalidArgumentError, match="4 groups and 4 rates"):
        discriminative_optimizer(groups, RATES[:4], keras.optimizers.SGD)
