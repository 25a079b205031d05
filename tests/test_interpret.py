"""transferkit.interpret: one prediction pass, scikit-learn's report, top losses, figures, TTA."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image
from sklearn.metrics import classification_report
from sklearn.metrics import confusion_matrix as sklearn_confusion_matrix

import transferkit as tk
from conftest import TINY_BACKBONE, separable_images
from images import write_class_folders
from transferkit.errors import ClassNamesMismatchError, DataError, InvalidArgumentError
from transferkit.inference import tta as _tta
from transferkit.interpret import MAX_PLOTTED, Interpretation, interpret

NAMES = ["red", "green", "blue"]


@pytest.fixture(scope="module")
def trained() -> tuple[tk.TransferClassifier, np.ndarray, np.ndarray]:
    """A 3-class tiny classifier trained just enough to be right and wrong on some images."""
    tf.keras.utils.set_random_seed(7)
    x, y = separable_images(48, num_classes=3, seed=3)
    clf = tk.TransferClassifier(TINY_BACKBONE, class_names=NAMES, weights=None, augmentation=None)
    clf.fit_head((x, y), epochs=2, learning_rate=3e-3, verbose=0)
    return clf, x, y


@pytest.fixture(scope="module")
def binary() -> tuple[tk.TransferClassifier, np.ndarray, np.ndarray]:
    tf.keras.utils.set_random_seed(8)
    x, y = separable_images(32, num_classes=2, seed=4)
    clf = tk.TransferClassifier(TINY_BACKBONE, num_classes=2, weights=None, augmentation=None)
    clf.fit_head((x, y), epochs=2, learning_rate=3e-3, verbose=0)
    return clf, x, y


def _interpretation(labels, probabilities, names=None) -> Interpretation:
    probabilities = np.asarray(probabilities, np.float64)
    names = names or [f"c{i}" for i in range(probabilities.shape[1])]
    return Interpretation(
        class_names=names, labels=np.asarray(labels), log_probabilities=np.log(probabilities)
    )


# ---------------------------------------------------------------- numbers against scikit-learn


@st.composite
def predictions(draw: st.DrawFn) -> tuple[np.ndarray, np.ndarray]:
    classes = draw(st.integers(2, 5))
    count = draw(st.integers(1, 40))
    labels = np.array(draw(st.lists(st.integers(0, classes - 1), min_size=count, max_size=count)))
    logits = np.array(
        draw(st.lists(st.floats(-5, 5), min_size=count * classes, max_size=count * classes))
    ).reshape(count, classes)
    probabilities = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    return labels, probabilities


@given(predictions())
def test_report_is_scikit_learns_classification_report(case) -> None:
    labels, probabilities = case
    result = _interpretation(labels, probabilities)
    expected = classification_report(
        labels,
        np.log(probabilities).argmax(axis=1),  # what the interpretation is given, ties included
        labels=range(result.num_classes),
        target_names=list(result.class_names),
        output_dict=True,
        zero_division=0,
    )
    report = result.report()
    assert 0.0 <= report.pop("expected_calibration_error") <= 1.0  # beyond scikit-learn's
    assert list(report) == list(expected)
    for key, value in expected.items():
        if isinstance(value, dict):
            assert list(report[key]) == list(value)
            assert report[key] == pytest.approx(value, abs=1e-12), key
        else:
            assert report[key] == pytest.approx(value, abs=1e-12), key


@given(predictions())
def test_confusion_matrix_is_scikit_learns(case) -> None:
    labels, probabilities = case
    result = _interpretation(labels, probabilities)
    expected = sklearn_confusion_matrix(
        labels, np.log(probabilities).argmax(axis=1), labels=range(result.num_classes)
    )
    np.testing.assert_array_equal(result.confusion_matrix, expected)


def test_most_confused_lists_mistakes_by_count_then_class_order() -> None:
    # true 0 predicted 1 twice; true 2 predicted 0 twice; true 1 predicted 2 once.
    labels = [0, 0, 2, 2, 1, 0, 1]
    predicted = [1, 1, 0, 0, 2, 0, 1]
    result = _interpretation(labels, np.eye(3)[predicted] * 0.98 + 0.01)
    assert result.most_confused() == [("c0", "c1", 2), ("c2", "c0", 2), ("c1", "c2", 1)]
    assert result.most_confused(min_count=2) == [("c0", "c1", 2), ("c2", "c0", 2)]


def test_top_losses_are_the_highest_first_with_ties_by_index() -> None:
    probabilities = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.2, 0.8], [0.5, 0.5]])
    result = _interpretation([0, 0, 1, 0, 1], probabilities, names=["a", "b"])
    top = result.top_losses(3)
    assert [t.index for t in top] == [1, 3, 2]  # -log 0.2 twice (index order), then -log 0.4
    assert top[0].loss == pytest.approx(-np.log(0.2))
    assert (top[0].label, top[0].predicted, top[0].probability) == ("a", "b", pytest.approx(0.8))
    assert top[0].path is None
    assert len(result.top_losses(100)) == 5


def test_report_table_prints_every_class_and_the_averages() -> None:
    result = _interpretation([0, 1, 1], [[0.9, 0.1], [0.3, 0.7], [0.6, 0.4]], ["cat", "dog"])
    lines = result.report_table(digits=2).splitlines()
    assert lines[0].split() == ["precision", "recall", "f1-score", "support"]
    assert lines[2].split() == ["cat", "0.50", "1.00", "0.67", "1"]
    assert lines[3].split() == ["dog", "1.00", "0.50", "0.67", "2"]
    assert lines[5].split() == ["accuracy", "0.67", "3"]
    assert lines[6].split()[:2] == ["macro", "avg"]


# ---------------------------------------------------------------- one pass over real predictions


@pytest.mark.slow
def test_interpret_agrees_with_predict_and_evaluate(trained) -> None:
    clf, x, y = trained
    result = interpret(clf, (x, y), batch_size=10)
    np.testing.assert_allclose(result.probabilities, clf.predict(x), atol=1e-6)
    np.testing.assert_array_equal(result.labels, y)
    evaluated = clf.evaluate((x, y))
    assert result.loss == pytest.approx(evaluated["loss"], rel=1e-5)
    assert result.accuracy == pytest.approx(evaluated["accuracy"])
    assert result.class_names == tuple(NAMES)
    assert 0 < result.accuracy < 1  # some right and some wrong, so the test means something


@pytest.mark.slow
def test_binary_losses_are_the_training_loss_per_example(binary) -> None:
    clf, x, y = binary
    result = interpret(clf, (x, y))
    logits = clf.model.predict(x, verbose=0)[:, 0].astype(np.float64)
    expected = np.where(y == 1, np.logaddexp(0, -logits), np.logaddexp(0, logits))
    np.testing.assert_allclose(result.losses, expected, rtol=1e-6)
    assert result.loss == pytest.approx(clf.evaluate((x, y))["loss"], rel=1e-5)
    np.testing.assert_array_equal(result.predictions, (logits > 0).astype(int))


def test_interpret_reads_a_dataset_once(trained) -> None:
    clf, x, y = trained
    reads = []

    def generate():
        reads.append(1)
        for start in range(0, len(x), 16):
            yield x[start : start + 16].astype(np.float32), y[start : start + 16]

    dataset = tf.data.Dataset.from_generator(
        generate,
        output_signature=(
            tf.TensorSpec((None, 32, 32, 3), tf.float32),
            tf.TensorSpec((None,), tf.int32),
        ),
    )
    result = interpret(clf, dataset)
    assert len(reads) == 1
    assert len(result) == len(x)
    np.testing.assert_allclose(result.probabilities, clf.predict(x), atol=1e-6)


def test_top_loss_images_are_the_images_at_those_indices(trained) -> None:
    clf, x, y = trained
    x, y = np.concatenate([x, x[::-1]]), np.concatenate([y, y[::-1]])  # more than are kept
    result = interpret(clf, (x, y), batch_size=7)  # the kept images cross batch borders
    top = result.top_losses(MAX_PLOTTED)
    np.testing.assert_array_equal(result.top_loss_images(MAX_PLOTTED), x[[t.index for t in top]])
    with pytest.raises(InvalidArgumentError, match=f"at most {MAX_PLOTTED}"):
        result.top_loss_images(MAX_PLOTTED + 1)


def test_a_folder_gives_file_paths_in_a_fixed_order(trained, tmp_path: Path) -> None:
    clf, _, _ = trained
    root = write_class_folders(tmp_path / "data", {"red": 4, "green": 3, "blue": 2})
    result = interpret(clf, root, batch_size=4)
    assert result.paths is not None
    assert len(result.paths) == 9
    # Class by class in the classifier's order, files sorted; labels follow the folders.
    assert [Path(p).parent.name for p in result.paths] == [NAMES[k] for k in result.labels]
    assert list(result.labels) == [0] * 4 + [1] * 3 + [2] * 2
    for top in result.top_losses(3):
        assert top.path == result.paths[top.index]
        pixels = np.asarray(Image.open(top.path).convert("RGB"))
        np.testing.assert_allclose(clf.predict(pixels)[0], result.probabilities[top.index], 1e-5)


def test_folder_classes_must_be_the_classifiers(trained, tmp_path: Path) -> None:
    clf, _, _ = trained
    root = write_class_folders(tmp_path / "data", {"red": 2, "green": 2, "purple": 2})
    with pytest.raises(ClassNamesMismatchError):
        interpret(clf, root)


def test_dataset_labels_outside_the_classes_are_a_data_error(trained) -> None:
    clf, x, _ = trained
    dataset = tf.data.Dataset.from_tensor_slices((x[:4], np.array([0, 1, 2, 3]))).batch(4)
    with pytest.raises(DataError, match=r"\[0, 2\]"):
        interpret(clf, dataset)


@pytest.mark.parametrize(
    ("argument", "value"), [("batch_size", 0), ("tta", 0), ("tta", 13), ("tta", 1.5)]
)
def test_bad_arguments_raise_before_predicting(trained, argument: str, value: object) -> None:
    clf, x, y = trained
    with pytest.raises(InvalidArgumentError, match=f"Received: {argument}="):
        interpret(clf, (x, y), **{argument: value})


# ---------------------------------------------------------------- test-time augmentation


def test_tta_averages_the_probabilities_of_the_image_and_its_mirror(trained) -> None:
    clf, x, y = trained
    result = interpret(clf, (x, y), tta=True)
    expected = (clf.predict(x) + clf.predict(x[:, :, ::-1, :])) / 2
    np.testing.assert_allclose(result.probabilities, expected, atol=1e-6)
    assert result.views == 2
    assert result.losses == pytest.approx(-np.log(expected[np.arange(len(y)), y]), rel=1e-5)


def test_views_come_in_the_documented_order() -> None:
    image = np.random.default_rng(0).integers(0, 256, (1, 16, 16, 3)).astype(np.float32)
    views = np.asarray(_tta.views(image, _tta.MAX_VIEWS))
    assert views.shape == (12, 16, 16, 3)
    np.testing.assert_array_equal(views[0], image[0])
    np.testing.assert_array_equal(views[1], image[0, :, ::-1])
    center = np.asarray(tf.image.resize(image[:, 1:15, 1:15], (16, 16)))[0]  # 14 = 87.5% of 16
    top_left = np.asarray(tf.image.resize(image[:, :14, :14], (16, 16)))[0]
    bottom_right = np.asarray(tf.image.resize(image[:, 2:, 2:], (16, 16)))[0]
    np.testing.assert_allclose(views[2], center, atol=1e-3)
    np.testing.assert_allclose(views[3], center[:, ::-1], atol=1e-3)
    np.testing.assert_allclose(views[4], top_left, atol=1e-3)
    np.testing.assert_allclose(views[10], bottom_right, atol=1e-3)
    np.testing.assert_allclose(views[11], bottom_right[:, ::-1], atol=1e-3)
    np.testing.assert_array_equal(np.asarray(_tta.views(image, 3)), views[:3])


def test_view_count_reads_bools_and_ints() -> None:
    assert [_tta.view_count(v) for v in (False, True, 1, 5, np.int64(12))] == [1, 2, 1, 5, 12]


# ---------------------------------------------------------------- figures


def _png(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        assert image.format == "PNG"
        return np.asarray(image.convert("RGB"))


def test_confusion_matrix_figure_is_written(trained, tmp_path: Path) -> None:
    clf, x, y = trained
    result = interpret(clf, (x, y))
    counts = _png(result.plot_confusion_matrix(tmp_path / "counts.png"))
    fractions = _png(result.plot_confusion_matrix(tmp_path / "rows.png", normalize=True))
    assert counts.shape[0] > 200
    assert counts.shape == fractions.shape
    assert not np.array_equal(counts, fractions)  # the cell texts differ


def test_top_losses_figure_draws_k_images(trained, tmp_path: Path) -> None:
    clf, x, y = trained
    result = interpret(clf, (x, y))
    four = _png(result.plot_top_losses(4, tmp_path / "four.png"))
    nine = _png(result.plot_top_losses(9, tmp_path / "nine.png"))
    assert nine.shape[0] > four.shape[0]
    assert nine.shape[1] > four.shape[1]  # 3x3 against 2x2


def test_the_classifier_methods_take_tta(trained) -> None:
    clf, x, y = trained
    mirrored = (clf.predict(x) + clf.predict(x[:, :, ::-1, :])) / 2
    np.testing.assert_allclose(clf.predict(x, tta=True), mirrored, atol=1e-6)
    np.testing.assert_allclose(clf.predict(x, tta=1), clf.predict(x), atol=1e-6)
    result = clf.interpret((x, y), tta=4)
    assert result.views == 4
    evaluated = clf.evaluate((x, y), tta=4)
    assert evaluated == {"loss": result.loss, "accuracy": result.accuracy}
    with pytest.raises(InvalidArgumentError, match="tta="):
        clf.predict(x, tta=-1)
