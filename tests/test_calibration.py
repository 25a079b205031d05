"""Temperature scaling (``calibrate``) and the calibration error that interpretations report."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

import transferkit as tk
from conftest import TINY_BACKBONE, separable_images
from transferkit.inference.calibration import (
    fit_temperature,
    negative_log_likelihood,
    reliability,
)

FIXTURES = Path(__file__).parent / "fixtures"


def _softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


@pytest.mark.parametrize("true_temperature", [0.5, 2.0, 4.0])
def test_fit_temperature_recovers_the_temperature_labels_were_drawn_at(
    true_temperature: float,
) -> None:
    rng = np.random.default_rng(0)
    logits = rng.normal(scale=3.0, size=(4000, 4))
    probabilities = _softmax(logits / true_temperature)
    labels = np.array([rng.choice(4, p=row) for row in probabilities])
    fitted = fit_temperature(logits, labels, binary=False, multi_label=False)
    assert fitted == pytest.approx(true_temperature, rel=0.1)


def test_the_fitted_temperature_minimizes_the_likelihood_it_was_fitted_on() -> None:
    rng = np.random.default_rng(1)
    logits = rng.normal(scale=4.0, size=(300, 1))
    labels = (rng.random(300) < 1 / (1 + np.exp(-logits[:, 0] / 2.5))).astype(np.int64)
    fitted = fit_temperature(logits, labels, binary=True, multi_label=False)
    best = negative_log_likelihood(logits / fitted, labels, binary=True, multi_label=False)
    for other in (fitted * 0.8, fitted * 1.25, 1.0):
        worse = negative_log_likelihood(logits / other, labels, binary=True, multi_label=False)
        assert best <= worse + 1e-9


def test_reliability_bins_and_ece_by_hand() -> None:
    confidence = np.array([0.95, 0.95, 0.65, 0.65, 0.65, 0.65])
    correct = np.array([1, 1, 1, 0, 0, 1])
    bins = reliability(confidence, correct, bins=10)
    assert bins.counts.sum() == 6
    assert bins.counts[9] == 2
    assert bins.counts[6] == 4
    assert bins.accuracy[9] == 1.0
    assert bins.accuracy[6] == 0.5
    # ECE: 2/6 * |1 - 0.95| + 4/6 * |0.5 - 0.65|
    assert bins.expected_calibration_error == pytest.approx(2 / 6 * 0.05 + 4 / 6 * 0.15)


@pytest.fixture(scope="module")
def trained() -> tuple[tk.TransferClassifier, np.ndarray, np.ndarray]:
    tf.keras.utils.set_random_seed(5)
    x, y = separable_images(48, num_classes=3, seed=5)
    clf = tk.TransferClassifier(
        TINY_BACKBONE, class_names=["a", "b", "c"], weights=None, augmentation=None
    )
    clf.fit_head((x, y), epochs=3, learning_rate=3e-2, batch_size=8, verbose=0)
    return clf, x, y


def test_calibrate_sets_a_temperature_that_predict_divides_the_logits_by(
    trained: tuple[tk.TransferClassifier, np.ndarray, np.ndarray],
) -> None:
    clf, x, y = trained
    assert clf.temperature == 1.0
    before = clf.predict(x)
    logits = np.asarray(clf.model.predict_on_batch(x), np.float64)
    temperature = clf.calibrate((x, y), batch_size=8)
    try:
        assert temperature == clf.temperature != 1.0
        after = clf.predict(x)
        np.testing.assert_allclose(after, _softmax(logits / temperature), atol=1e-5)
        assert (after.argmax(axis=1) == before.argmax(axis=1)).all()  # classes stay
        nll = negative_log_likelihood(logits / temperature, y, binary=False, multi_label=False)
        assert nll <= negative_log_likelihood(logits, y, binary=False, multi_label=False)
    finally:
        clf._set_temperature(1.0)


def test_the_temperature_is_saved_and_loaded(
    trained: tuple[tk.TransferClassifier, np.ndarray, np.ndarray], tmp_path: Path
) -> None:
    clf, x, y = trained
    clf.calibrate((x, y), batch_size=8)
    try:
        loaded = tk.load_classifier(clf.save(tmp_path / "calibrated.keras"))
        assert loaded.temperature == clf.temperature
        np.testing.assert_allclose(loaded.predict(x[:4]), clf.predict(x[:4]), atol=1e-6)
    finally:
        clf._set_temperature(1.0)


def test_a_file_from_before_calibration_loads_at_temperature_one() -> None:
    assert tk.load_classifier(FIXTURES / "release-0.1.0-single.keras").temperature == 1.0


def test_interpretations_report_the_expected_calibration_error(
    trained: tuple[tk.TransferClassifier, np.ndarray, np.ndarray], tmp_path: Path
) -> None:
    clf, x, y = trained
    result = clf.interpret((x, y), batch_size=8)
    confidence = result.probabilities.max(axis=1)
    correct = result.predictions == y
    expected = reliability(confidence, correct).expected_calibration_error
    assert result.report()["expected_calibration_error"] == pytest.approx(expected)
    assert result.plot_reliability(tmp_path / "reliability.png").stat().st_size > 0


def test_a_multi_label_classifier_calibrates_one_temperature() -> None:
    tf.keras.utils.set_random_seed(6)
    x, y = separable_images(32, num_classes=2, seed=6)
    targets = np.stack([y == 0, y == 1], axis=1).astype(np.float32)
    clf = tk.TransferClassifier(
        TINY_BACKBONE, class_names=["p", "q"], weights=None, augmentation=None, multi_label=True
    )
    clf.fit_head((x, targets), epochs=2, learning_rate=3e-2, batch_size=8, verbose=0)
    temperature = clf.calibrate((x, targets), batch_size=8)
    logits = np.asarray(clf.model.predict_on_batch(x), np.float64)
    np.testing.assert_allclose(clf.predict(x), 1 / (1 + np.exp(-logits / temperature)), atol=1e-5)
    assert 0.0 <= clf.interpret((x, targets)).report()["expected_calibration_error"] <= 1.0
