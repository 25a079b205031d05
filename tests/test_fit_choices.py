"""What fit() measures rather than assumes: the linear-probe head and the fine-tuning rate race.

The probe is checked against scikit-learn's logistic regression on small feature sets (the
same optimum at one strength; as good a choice of strength on held-out data) and against
Keras' own losses (it minimizes the head's loss). The race runs on the tiny BatchNorm
backbone of ``conftest.py``: it must score each rate by a real run, pick the best score,
leave the model exactly as it was, and a resumed fit() must reuse the stored choice.
"""

from __future__ import annotations

import json
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import log_loss
from sklearn.preprocessing import StandardScaler

import transferkit as tk
from conftest import TINY_BACKBONE, separable_images
from transferkit.model import class_weights as _class_weights
from transferkit.training import fit_choices, linear_probe, rate_race
from transferkit.training import fit_policy as _fit


def blobs(per_class: int, seed: int, *, classes: int = 3, width: int = 12) -> tuple:
    """Gaussian clusters that overlap: features of a task a linear probe half solves."""
    rng = np.random.default_rng(seed)
    centers = np.random.default_rng(99).normal(size=(classes, width))
    labels = np.repeat(np.arange(classes), per_class)
    features = centers[labels] + 1.5 * rng.normal(size=(len(labels), width))
    order = rng.permutation(len(labels))
    return features[order].astype(np.float32), labels[order]


# ---------------------------------------------------------------------- the probe


def test_probe_at_one_strength_is_scikit_learns_optimum() -> None:
    features, labels = blobs(20, seed=0)
    l2 = 0.1
    kernel, bias = linear_probe.logistic_regression(
        (features, labels), l2=l2, kind="sparse", num_logits=3
    )
    scaler = StandardScaler().fit(features)
    reference = LogisticRegression(C=1 / (l2 * len(labels)), tol=1e-10, max_iter=10_000)
    reference.fit(scaler.transform(features), labels)
    test, _ = blobs(30, seed=1)
    ours = keras.ops.convert_to_numpy(keras.ops.softmax(test @ kernel + bias))
    np.testing.assert_allclose(ours, reference.predict_proba(scaler.transform(test)), atol=1e-4)


def reference_probe(train: tuple, validation: tuple) -> LogisticRegression:
    """scikit-learn's logistic regression, C chosen on validation (accuracy, then loss)."""
    best = None
    for c in 10.0 ** np.arange(-3, 2.01, 0.5):
        model = LogisticRegression(C=c, max_iter=1_000).fit(*train)
        loss = log_loss(validation[1], model.predict_proba(validation[0]), labels=[0, 1, 2])
        score = (model.score(*validation), -loss)
        if best is None or score > best[0]:
            best = (score, model)
    assert best is not None
    return best[1]


@pytest.mark.slow
def test_probe_chooses_a_strength_as_good_as_scikit_learns_on_validation() -> None:
    ours, theirs = [], []
    for seed in range(4):
        train, validation = blobs(10, seed=10 * seed), blobs(10, seed=10 * seed + 1)
        test = blobs(200, seed=10 * seed + 2)
        probe = linear_probe.fit_probe(train, validation, kind="sparse", num_logits=3)
        assert probe.held_out == "validation"
        reference = reference_probe(train, validation)
        accuracy = np.mean(np.argmax(test[0] @ probe.kernel + probe.bias, axis=1) == test[1])
        loss = linear_probe.probe_loss(probe.kernel, probe.bias, test, kind="sparse")
        ours.append((accuracy, loss))
        theirs.append((reference.score(*test), log_loss(test[1], reference.predict_proba(test[0]))))
    (accuracy, loss), (reference_accuracy, reference_loss) = np.mean(ours, 0), np.mean(theirs, 0)
    assert accuracy >= reference_accuracy - 0.02
    assert loss <= reference_loss + 0.01


def test_probe_cross_validates_when_validation_holds_one_image_per_class() -> None:
    train, validation = blobs(4, seed=5), blobs(1, seed=6)
    probe = linear_probe.fit_probe(train, validation, kind="sparse", num_logits=3)
    assert probe.held_out == "k-fold"
    assert probe.l2 in linear_probe.L2_GRID
    assert len(probe.losses) == len(linear_probe.L2_GRID)
    assert probe.l2 == linear_probe.L2_GRID[int(np.argmin(probe.losses))]


@pytest.mark.parametrize(
    ("kind", "num_logits", "class_weight"),
    [
        ("sparse", 3, None),
        ("sparse", 3, "balanced"),
        ("binary", 1, {0: 2.0}),
        ("multi_label", 3, None),
        ("multi_label", 3, "balanced"),
    ],
)
def test_probe_loss_is_the_heads_keras_loss(
    kind: _class_weights.Kind, num_logits: int, class_weight: object
) -> None:
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(16, num_logits)).astype(np.float32)
    if kind == "multi_label":
        targets = (rng.random((16, 3)) < 0.4).astype(np.float32)
    else:
        targets = rng.integers(0, 2 if kind == "binary" else 3, size=16)
    counts = _class_weights.label_counts(
        targets, 2 if kind == "binary" else 3, multi_label=kind == "multi_label"
    )
    weights = _class_weights.resolve(
        class_weight,  # type: ignore[arg-type]
        class_names=None,
        num_classes=2 if kind == "binary" else 3,
        multi_label=kind == "multi_label",
        counts=counts,
    )
    keras_loss = _class_weights.make_loss(kind, weights)
    expected = float(keras_loss(targets.reshape(16, -1) if kind != "sparse" else targets, logits))
    ours = linear_probe.probe_loss(
        np.eye(num_logits),
        np.zeros(num_logits),
        (logits, targets),
        kind=kind,
        class_weights=weights,
    )
    assert ours == pytest.approx(expected, rel=1e-4)


# ---------------------------------------------------------------------- the race


def tiny(num_classes: int = 3) -> tk.TransferClassifier:
    keras.utils.set_random_seed(7)
    return tk.TransferClassifier(
        TINY_BACKBONE, num_classes=num_classes, weights=None, augmentation=None, dropout=0.0
    )


@pytest.mark.slow
def test_race_scores_each_rate_by_a_real_run_picks_the_best_and_changes_nothing() -> None:
    train = separable_images(24, num_classes=3, seed=1)
    validation = separable_images(12, num_classes=3, seed=2)
    clf = tiny()
    clf.fit_head(train, epochs=2, learning_rate=1e-2, batch_size=8, verbose=0)
    clf.unfreeze(None)
    before = [variable.numpy().copy() for variable in clf.model.variables]
    untouched = clf.evaluate(validation)
    batches = tf.data.Dataset.from_tensor_slices(train).batch(8).repeat()
    held = tf.data.Dataset.from_tensor_slices(validation).batch(8)
    rates = (1e-12, 3e-2, 1e4)
    result = rate_race.race(clf.model, batches, held, config=clf.config, rates=rates, steps=6)
    # A rate too small to move anything scores what the model scores now.
    assert result.scores[0] == pytest.approx((untouched["accuracy"], -untouched["loss"]), rel=1e-4)
    assert result.scores[2] < result.scores[1]  # a rate far too high does worse (or diverges)
    assert result.scores[rates.index(result.best)] == max(result.scores)
    for variable, value in zip(clf.model.variables, before, strict=True):
        np.testing.assert_array_equal(variable.numpy(), value)


@pytest.mark.slow
def test_fit_reuses_the_race_stored_in_fit_json(tmp_path: Path) -> None:
    # fit.json as an interrupted run left it: the head's rate and the race's result.
    stored = {
        "head_learning_rate": 1e-2,
        "fine_tune_race": {
            "candidates": [[1e-2 * f, 0.5, 1.0] for f in fit_choices.RACE_FACTORS],
            "best": 1e-2 * fit_choices.RACE_FACTORS[2],
            "steps": 4,
        },
    }
    (tmp_path / _fit.FIT_STATE).write_text(json.dumps(stored))
    clf = tiny()
    images, labels = separable_images(30, num_classes=3, seed=2)
    clf.fit((images, labels), epochs=1, batch_size=8, checkpoint_dir=tmp_path, verbose=0)
    decisions = clf.history.decisions
    raced = [d for d in decisions if d["name"] == "fine_tune_race"]
    assert [d["value"] for d in raced] == [c[0] for c in stored["fine_tune_race"]["candidates"]]
    assert all("(metric 0.5000, loss 1.0000) after 4 steps" in d["reason"] for d in raced)
    chosen = next(d for d in decisions if d["name"] == "fine_tune_learning_rate")
    assert chosen["value"] == stored["fine_tune_race"]["best"]
    assert json.loads((tmp_path / _fit.FIT_STATE).read_text()) == stored
