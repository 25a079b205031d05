"""Multi-label classifiers and class weights in TransferClassifier, on real models and files."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

import transferkit as tk
from conftest import TINY_BACKBONE, separable_images
from images import OBJECT_COLORS, composed_pixels, write_composed_images
from transferkit import data
from transferkit.errors import DataError, InvalidArgumentError

NAMES = sorted(OBJECT_COLORS)  # blue, green, red


def _multi_label(**kwargs: object) -> tk.TransferClassifier:
    return tk.TransferClassifier(
        TINY_BACKBONE,
        class_names=NAMES,
        image_size=(16, 32),
        weights=None,
        augmentation=None,
        multi_label=True,
        **kwargs,
    )


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def _log_softmax(x: np.ndarray) -> np.ndarray:
    shifted = x - x.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


@pytest.fixture(scope="module")
def learned(tmp_path_factory):
    """A multi-label classifier trained on composed images read from a CSV table."""
    keras.utils.set_random_seed(0)
    root = tmp_path_factory.mktemp("composed")
    table, _ = write_composed_images(root / "train", 96, seed=0)
    splits = data.from_csv(
        table, root / "train", image_size=(16, 32), validation_split=0.25, batch_size=16
    )
    clf = _multi_label()
    clf.fit_head(
        splits.train, validation_data=splits.validation, epochs=40, learning_rate=0.3, verbose=0
    )
    rng = np.random.default_rng(7)  # new images the classifier never saw
    pairs = [(NAMES[int(a)], NAMES[int(b)]) for a, b in rng.integers(0, 3, (40, 2))]
    images = np.stack([composed_pixels(left, right, rng) for left, right in pairs])
    truth = [sorted({left, right}) for left, right in pairs]
    return clf, splits, images, truth, root


# ---------------------------------------------------------------------- multi-label


@pytest.mark.slow
def test_a_multi_label_classifier_learns_both_objects_of_composed_images(learned):
    clf, _, images, truth, _ = learned

    predicted = clf.predict_labels(images)

    exact = np.mean([p == t for p, t in zip(predicted, truth, strict=True)])
    assert exact >= 0.9, (predicted, truth)
    assert any(len(t) == 2 for t in truth)


@pytest.mark.slow
def test_multi_label_probabilities_are_independent_sigmoids_of_the_logits(learned):
    clf, _, images, _, _ = learned

    probabilities = clf.predict(images[:8])
    logits = np.asarray(clf.model.predict(images[:8], verbose=0))

    assert probabilities.shape == (8, 3)
    assert clf.model.output.shape[-1] == 3
    np.testing.assert_allclose(probabilities, _sigmoid(logits), rtol=1e-5, atol=1e-6)
    assert not np.allclose(probabilities.sum(axis=1), 1.0)


@pytest.mark.slow
def test_multi_label_metrics_are_binary_accuracy_macro_f1_and_auc(learned):
    clf, splits, _, _, _ = learned

    results = clf.evaluate(splits.validation)

    assert sorted(results) == ["auc", "binary_accuracy", "loss", "macro_f1"]
    assert sorted(clf.history.metrics) == [
        "auc", "binary_accuracy", "loss", "macro_f1",
        "val_auc", "val_binary_accuracy", "val_loss", "val_macro_f1",
    ]  # fmt: skip
    assert results["auc"] > 0.9


def test_predict_labels_applies_each_classes_threshold(learned):
    clf, _, images, _, _ = learned
    probabilities = clf.predict(images[:6])

    clf.thresholds = (0.0, 1.0, 0.5)
    try:
        labels = clf.predict_labels(images[:6])
    finally:
        clf.thresholds = 0.5

    expected = [["blue", "red"] if p[2] >= 0.5 else ["blue"] for p in probabilities]
    assert labels == expected


def test_tuned_thresholds_round_trip_through_save_and_load(learned, tmp_path):
    clf, splits, images, _, _ = learned
    before = clf.thresholds

    try:
        tuned = clf.tune_thresholds(splits.validation)
        clf.save(tmp_path / "tags.keras")
        loaded = tk.load_classifier(tmp_path / "tags.keras")
        labels = clf.predict_labels(images)
    finally:
        clf.thresholds = before

    assert tuned != (0.5, 0.5, 0.5)
    assert all(0.0 < t < 1.0 for t in tuned)
    assert loaded.multi_label
    assert loaded.thresholds == tuned
    assert loaded.predict_labels(images) == labels


def test_tuned_thresholds_score_at_least_as_well_as_one_half_on_their_data(learned):
    clf, splits, _, _, _ = learned
    targets = np.concatenate([y.numpy() for _, y in splits.validation])
    probabilities = clf.predict(splits.validation)

    def f1(thresholds: tuple[float, ...]) -> list[float]:
        predicted = probabilities >= np.asarray(thresholds)
        tp = (predicted & (targets == 1)).sum(axis=0)
        return list(2 * tp / np.maximum(2 * tp + (predicted != (targets == 1)).sum(axis=0), 1))

    before = clf.thresholds
    try:
        tuned = clf.tune_thresholds(splits.validation)
    finally:
        clf.thresholds = before

    assert all(t >= h for t, h in zip(f1(tuned), f1((0.5,) * 3), strict=True))


def test_export_returns_the_probabilities_and_the_labels_at_the_thresholds(learned, tmp_path):
    clf, _, images, _, _ = learned
    clf.thresholds = (0.3, 0.5, 0.7)
    try:
        served = tf.saved_model.load(str(clf.export(tmp_path / "tags")))
        outputs = served.serve(tf.constant(images[:8].astype(np.uint8)))
        expected = clf.predict(images[:8])
    finally:
        clf.thresholds = 0.5

    np.testing.assert_allclose(outputs["probabilities"].numpy(), expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(outputs["labels"].numpy(), expected >= [0.3, 0.5, 0.7])


def test_targets_of_the_wrong_kind_are_refused_before_training(learned):
    clf, splits, images, _, _ = learned
    single = tk.TransferClassifier(
        TINY_BACKBONE, class_names=NAMES, image_size=(16, 32), weights=None
    )

    with pytest.raises(DataError, match="build it with multi_label=True"):
        single.fit_head(splits.train, epochs=1, verbose=0)
    with pytest.raises(DataError, match="needs multi-hot targets"):
        clf.fit_head((images[:4], np.array([0, 1, 2, 0])), epochs=1, verbose=0)


def test_thresholds_belong_to_multi_label_classifiers_only():
    single = tk.TransferClassifier(TINY_BACKBONE, num_classes=3, weights=None)

    assert single.thresholds is None
    with pytest.raises(InvalidArgumentError, match="Only a multi-label classifier"):
        single.thresholds = 0.4
    with pytest.raises(InvalidArgumentError, match="for multi-label classifiers"):
        single.tune_thresholds(separable_images(8, num_classes=3))
    with pytest.raises(InvalidArgumentError, match="Received: multi_label='yes'"):
        tk.TransferClassifier(TINY_BACKBONE, num_classes=3, weights=None, multi_label="yes")


# ---------------------------------------------------------------------- class weights


def _tiny_batch() -> tuple[np.ndarray, np.ndarray]:
    images, _ = separable_images(6, num_classes=3, seed=3)
    return images, np.array([0, 0, 0, 0, 1, 2])


def _first_loss(clf: tk.TransferClassifier, train: object, **fit: object) -> float:
    clf.fit_head(train, epochs=1, batch_size=6, verbose=0, **fit)
    return clf.history.metrics["loss"][-1]


@pytest.mark.slow
@pytest.mark.parametrize("cache_features", [True, False])
def test_balanced_class_weights_give_the_loss_computed_by_hand(cache_features):
    images, labels = _tiny_batch()
    clf = tk.TransferClassifier(
        TINY_BACKBONE, class_names=["a", "b", "c"], weights=None, augmentation=None, dropout=0.0
    )
    logits = np.asarray(clf.model.predict(images, verbose=0), np.float64)

    loss = _first_loss(
        clf, (images, labels), class_weight="balanced", cache_features=cache_features
    )

    # One batch, one step: the epoch's loss is that batch's, before the update.
    weights = 6 / (3 * np.array([4, 1, 1]))  # n / (k * count)
    cross_entropy = -_log_softmax(logits)[np.arange(6), labels]
    assert loss == pytest.approx(np.mean(weights[labels] * cross_entropy), rel=1e-4)
    assert loss != pytest.approx(np.mean(cross_entropy), rel=1e-2)
    assert clf.history.class_weights[-1] == {
        "positive": {"a": pytest.approx(0.5), "b": pytest.approx(2.0), "c": pytest.approx(2.0)}
    }


def test_multi_label_class_weights_give_the_loss_computed_by_hand():
    images, _ = separable_images(4, num_classes=3, seed=5)
    targets = np.array([[1, 0, 1], [1, 0, 0], [1, 1, 0], [0, 0, 1]], np.float32)
    clf = tk.TransferClassifier(
        TINY_BACKBONE, num_classes=3, weights=None, augmentation=None, dropout=0.0,
        multi_label=True,
    )  # fmt: skip
    logits = np.asarray(clf.model.predict(images, verbose=0), np.float64)

    loss = _first_loss(clf, (images, targets), class_weight={0: 3.0, 2: 0.5})

    p = _sigmoid(logits)
    terms = -(targets * np.log(p) + (1 - targets) * np.log(1 - p))
    weights = np.where(targets == 1, [3.0, 1.0, 0.5], 1.0)  # positives of a class only
    assert loss == pytest.approx(np.mean(weights * terms), rel=1e-4)


def test_unweighted_evaluate_after_weighted_training(learned):
    images, labels = _tiny_batch()
    clf = tk.TransferClassifier(TINY_BACKBONE, num_classes=3, weights=None, dropout=0.0)
    clf.fit_head((images, labels), epochs=1, class_weight={1: 5.0}, verbose=0)
    logits = np.asarray(clf.model.predict(images, verbose=0), np.float64)

    loss = clf.evaluate((images, labels))["loss"]

    assert loss == pytest.approx(np.mean(-_log_softmax(logits)[np.arange(6), labels]), rel=1e-4)


@pytest.mark.slow
def test_class_weight_is_part_of_a_checkpointed_runs_settings(tmp_path):
    images, labels = _tiny_batch()

    def run(class_weight: object) -> tk.TransferClassifier:
        keras.utils.set_random_seed(0)
        clf = tk.TransferClassifier(TINY_BACKBONE, num_classes=3, weights=None)
        clf.fit_head(
            (images, labels), epochs=2, class_weight=class_weight, checkpoint_dir=tmp_path,
            verbose=0,
        )  # fmt: skip
        return clf

    first = run("balanced")
    again = run("balanced")  # finished: restored, not trained again

    assert again.history.to_dict() == first.history.to_dict()
    assert again.history.class_weights[0] is not None
    with pytest.raises(InvalidArgumentError, match="class_weight: saved 'balanced', now None"):
        run(None)


def test_bad_class_weights_are_refused_before_training():
    clf = tk.TransferClassifier(TINY_BACKBONE, class_names=["a", "b", "c"], weights=None)
    images, labels = _tiny_batch()

    with pytest.raises(InvalidArgumentError, match="unknown class 'd'"):
        clf.fit_head((images, labels), class_weight={"d": 2.0}, verbose=0)
    with pytest.raises(InvalidArgumentError, match="Received: class_weight='inverse'"):
        clf.fit_head((images, labels), class_weight="inverse", verbose=0)
    with pytest.raises(DataError, match=r"none of 6 images has \['c'\]"):
        clf.fit_head((images, np.array([0, 0, 1, 1, 0, 1])), class_weight="balanced", verbose=0)
    assert clf.history.epochs == []


MIRRORED_SCRIPT = """
import json

import tensorflow as tf

cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)

import keras
import numpy as np
from conftest import TINY_BACKBONE, separable_images

import transferkit as tk

strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
images, _ = separable_images(8, num_classes=3, seed=3)
labels = np.array([0, 0, 0, 0, 0, 0, 1, 2])
result = {}
for cache in (True,):  # the default path; the full pass is checked in this process
    keras.utils.set_random_seed(0)
    clf = tk.TransferClassifier(TINY_BACKBONE, num_classes=3, weights=None, augmentation=None,
                                dropout=0.0, strategy=strategy)
    logits = np.asarray(clf.model.predict(images, verbose=0), np.float64)
    clf.fit_head((images, labels), epochs=1, batch_size=8, class_weight="balanced",
                 cache_features=cache, verbose=0)
    shifted = logits - logits.max(axis=1, keepdims=True)
    log_p = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    weights = 8 / (3 * np.array([6, 1, 1]))
    result[str(cache)] = [clf.history.metrics["loss"][-1],
                          float(np.mean(-weights[labels] * log_p[np.arange(8), labels]))]
print(json.dumps(result))
"""


@pytest.mark.slow
def test_class_weights_under_a_mirrored_strategy_give_the_hand_computed_loss():
    tests = Path(__file__).parent
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONPATH": os.pathsep.join(
        [str(tests), os.environ.get("PYTHONPATH", "")])}  # fmt: skip
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(MIRRORED_SCRIPT)],
        capture_output=True, text=True, env=env, timeout=300, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])

    for reported, by_hand in result.values():
        assert reported == pytest.approx(by_hand, rel=1e-4)
