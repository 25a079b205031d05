"""Interpretation and test-time augmentation of multi-label classifiers, against scikit-learn."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import keras
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image
from sklearn.metrics import classification_report, multilabel_confusion_matrix

import transferkit as tk
from conftest import TINY_BACKBONE
from images import write_composed_images
from transferkit import data
from transferkit.cli.app import main
from transferkit.errors import DataError, InvalidArgumentError
from transferkit.interpret import MultiLabelInterpretation, MultiLabelTopLoss
from transferkit.training import fit_policy as _fit

NAMES = ["blue", "green", "red"]
THRESHOLDS = (0.45, 0.5, 0.55)


@pytest.fixture(scope="module")
def tagged(tmp_path_factory) -> SimpleNamespace:
    """A multi-label classifier trained a little on composed images from a CSV table."""
    keras.utils.set_random_seed(3)
    root = tmp_path_factory.mktemp("ml_interpret")
    table, label_sets = write_composed_images(root / "photos", 24, seed=2)
    splits = data.from_csv(table, root / "photos", image_size=(16, 32), batch_size=8)
    clf = tk.TransferClassifier(
        TINY_BACKBONE, class_names=NAMES, image_size=(16, 32), weights=None,
        augmentation=None, multi_label=True,
    )  # fmt: skip
    clf.fit_head(splits.train, epochs=2, learning_rate=0.05, verbose=0)
    clf.thresholds = THRESHOLDS
    files = [root / "photos" / f"{i:03d}.png" for i in range(len(label_sets))]
    targets = np.array([[name in labels for name in NAMES] for labels in label_sets], int)
    return SimpleNamespace(
        clf=clf,
        table=table,
        photos=root / "photos",
        train=splits.train,
        images=data.load_images(files, (16, 32)),
        targets=targets,
        model=clf.save(root / "tags.keras"),
    )


def _bce(targets: np.ndarray, probabilities: np.ndarray) -> np.ndarray:
    p = np.asarray(probabilities, np.float64)
    return -np.mean(targets * np.log(p) + (1 - targets) * np.log(1 - p), axis=1)


# ---------------------------------------------------------------- numbers against scikit-learn


@st.composite
def multi_label_predictions(draw: st.DrawFn) -> tuple[np.ndarray, np.ndarray, list[float]]:
    classes = draw(st.integers(2, 4))
    count = draw(st.integers(1, 25))
    cells = count * classes
    targets = np.array(draw(st.lists(st.integers(0, 1), min_size=cells, max_size=cells)))
    logits = np.array(draw(st.lists(st.floats(-4, 4), min_size=cells, max_size=cells)))
    thresholds = draw(st.lists(st.floats(0.05, 0.95), min_size=classes, max_size=classes))
    return targets.reshape(count, classes), logits.reshape(count, classes), thresholds


@given(multi_label_predictions())
def test_report_and_counts_are_scikit_learns(case) -> None:
    targets, logits, thresholds = case
    names = [f"c{i}" for i in range(targets.shape[1])]
    result = MultiLabelInterpretation(
        class_names=names, targets=targets, logits=logits, thresholds=thresholds
    )
    predicted = (1 / (1 + np.exp(-logits))).astype(np.float32) >= np.array(thresholds)

    expected = classification_report(
        targets, predicted, target_names=names, output_dict=True, zero_division=0
    )
    report = result.report()
    assert 0.0 <= report.pop("expected_calibration_error") <= 1.0  # beyond scikit-learn's
    assert list(report) == list(expected)
    for name, row in expected.items():
        assert report[name] == pytest.approx(row, abs=1e-12), name
    np.testing.assert_array_equal(
        result.confusion_matrices, multilabel_confusion_matrix(targets, predicted)
    )
    text = classification_report(targets, predicted, target_names=names, zero_division=0)
    assert result.report_table(digits=2).split() == text.split()


@pytest.mark.slow
def test_interpret_a_csv_table_in_one_pass(tagged) -> None:
    result = tagged.clf.interpret(tagged.train)  # reshuffles itself; read in table order

    assert isinstance(result, MultiLabelInterpretation)
    probabilities = tagged.clf.predict(tagged.images)
    predicted = probabilities.astype(np.float64) >= np.array(THRESHOLDS)
    np.testing.assert_array_equal(result.targets, tagged.targets)
    np.testing.assert_allclose(result.probabilities, probabilities, atol=1e-6)
    np.testing.assert_array_equal(result.predictions, predicted)
    assert 0 < predicted.sum() < predicted.size  # a model both right and wrong
    np.testing.assert_array_equal(
        result.confusion_matrices, multilabel_confusion_matrix(tagged.targets, predicted)
    )
    expected = classification_report(
        tagged.targets, predicted, target_names=NAMES, output_dict=True, zero_division=0
    )
    report = result.report()
    for name, row in expected.items():
        assert report[name] == pytest.approx(row, abs=1e-12), name
    assert result.exact_match == np.mean(np.all(predicted == tagged.targets, axis=1))
    # The loss of each image is its binary cross-entropy; the mean is evaluate()'s loss.
    np.testing.assert_allclose(result.losses, _bce(tagged.targets, probabilities), rtol=1e-5)
    evaluated = tagged.clf.evaluate(tagged.train)
    assert result.scores() == pytest.approx(evaluated, rel=1e-5, abs=1e-6)


def test_top_losses_name_the_files_and_labels_of_the_table_rows(tagged) -> None:
    result = tagged.clf.interpret(tagged.train)
    top = result.top_losses(5)

    assert [row.loss for row in top] == sorted(result.losses, reverse=True)[:5]
    for row in top:
        assert isinstance(row, MultiLabelTopLoss)
        assert Path(row.path) == tagged.photos / f"{row.index:03d}.png"
        truth = tagged.targets[row.index]
        assert row.labels == tuple(n for n, t in zip(NAMES, truth, strict=True) if t)
        assert row.predicted == tuple(np.array(NAMES)[result.predictions[row.index]])
        assert list(row.probabilities) == NAMES
    np.testing.assert_array_equal(
        result.top_loss_images(5), tagged.images[[row.index for row in top]]
    )


def test_most_confused_counts_images_missing_one_class_and_given_another(tagged) -> None:
    result = tagged.clf.interpret((tagged.images, tagged.targets.astype(np.float32)))
    truth, predicted = result.targets == 1, result.predictions
    by_hand = {}
    for t in range(3):
        for p in range(3):
            count = int(np.sum(truth[:, t] & ~predicted[:, t] & predicted[:, p] & ~truth[:, p]))
            if count:
                by_hand[(NAMES[t], NAMES[p])] = count

    found = result.most_confused()

    assert {(t, p): c for t, p, c in found} == by_hand
    assert [c for _, _, c in found] == sorted(by_hand.values(), reverse=True)
    assert result.paths is None


def test_figures_are_written(tagged, tmp_path) -> None:
    result = tagged.clf.interpret(tagged.train)

    for path in (
        result.plot_confusion_matrices(tmp_path / "matrices.png"),
        result.plot_top_losses(4, tmp_path / "top.png"),
    ):
        with Image.open(path) as image:
            assert image.format == "PNG"
            assert image.size[0] > 200


def test_bad_arrays_and_single_labels_are_refused(tagged) -> None:
    with pytest.raises(InvalidArgumentError, match=r"logits of shape \(2, 3\)"):
        MultiLabelInterpretation(
            class_names=NAMES, targets=np.zeros((2, 2)), logits=np.zeros((2, 3))
        )
    with pytest.raises(DataError, match="needs multi-hot targets"):
        tagged.clf.interpret((tagged.images[:4], np.array([0, 1, 2, 0])))


# ---------------------------------------------------------------------- test-time augmentation


def test_tta_averages_each_classes_probability_over_the_views(tagged) -> None:
    clf, images, targets = tagged.clf, tagged.images, tagged.targets
    mirrored = images[:, :, ::-1]
    by_hand = (clf.predict(images) + clf.predict(mirrored)) / 2

    np.testing.assert_allclose(clf.predict(images, tta=True), by_hand, atol=1e-6)
    result = clf.interpret((images, targets.astype(np.float32)), tta=True)
    np.testing.assert_allclose(result.probabilities, by_hand, atol=1e-6)
    np.testing.assert_allclose(result.losses, _bce(targets, by_hand), rtol=1e-4)
    evaluated = clf.evaluate((images, targets.astype(np.float32)), tta=True)
    assert sorted(evaluated) == ["auc", "binary_accuracy", "loss", "macro_f1"]
    assert evaluated["loss"] == pytest.approx(_bce(targets, by_hand).mean(), rel=1e-4)
    expected_labels = [
        [n for n, p, t in zip(NAMES, row, THRESHOLDS, strict=True) if p >= t] for row in by_hand
    ]
    assert clf.predict_labels(images, tta=True) == expected_labels


# ---------------------------------------------------------------------- command line


def test_cli_evaluate_report_of_a_multi_label_model(tagged, tmp_path, capsys) -> None:
    out = tmp_path / "report"
    capsys.readouterr()
    status = main(["evaluate", str(tagged.model), "--csv", str(tagged.table), "--report", str(out)])
    assert status == 0, capsys.readouterr().err
    printed = capsys.readouterr().out.splitlines()

    expected = tk.load_classifier(tagged.model).interpret(tagged.train)
    assert printed[0].split()[::2] == ["auc", "binary_accuracy", "loss", "macro_f1"]
    assert float(printed[0].split()[5]) == pytest.approx(expected.loss, abs=1e-4)
    assert "\n".join(printed[1:]) == expected.report_table()
    content = json.loads((out / "report.json").read_text())
    assert content["report"] == expected.report()
    assert content["confusion_matrices"] == expected.confusion_matrices.tolist()
    assert content["thresholds"] == pytest.approx(THRESHOLDS)
    assert content["exact_match"] == expected.exact_match
    assert content["top_losses"][0]["path"].startswith(str(tagged.photos))
    for name in ("confusion_matrices.png", "top_losses.png"):
        with Image.open(out / name) as image:
            assert image.format == "PNG"


# ---------------------------------------------------------------------- fit() without validation


def test_fit_holds_out_a_stratified_multi_label_split(tagged) -> None:
    clf = tk.TransferClassifier(
        TINY_BACKBONE, class_names=NAMES, image_size=(16, 32), weights=None, multi_label=True
    )
    targets = tagged.targets.astype(np.float32)

    # fit()'s own split (its training is fit's tests' business: too slow to repeat here)
    decide = _fit._Decisions(clf, verbose=0)
    train, validation = _fit._split(clf, (tagged.images, targets), None, 0.2, 0, 8, decide)

    held, kept = validation[1], train[1]
    assert len(held) + len(kept) == 24
    assert 4 <= len(held) <= 6
    assert (kept.sum(axis=0) > 0).all()
    decision = next(d for d in clf.history.decisions if d["name"] == "validation")
    assert decision["value"] == f"{len(held)} of 24 images"
    assert "iteratively stratified" in decision["reason"]
