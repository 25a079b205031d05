"""``fit()``: the whole job in one call, its decisions recorded, resumable from checkpoints.

Tiny real models (the ``tiny_bn`` backbone of ``conftest.py``) on images whose class is told
by a colour channel. Resuming compares a run interrupted in fine-tuning (a callback raises,
as a crash would) and run again with the same ``checkpoint_dir`` against a run never
interrupted: with data in a fixed order and no dropout, both must end with the same weights.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

import transferkit as tk
from conftest import TINY_BACKBONE, separable_images
from interruptions import InterruptAt, Interrupted
from transferkit.data.splits import split_validation
from transferkit.errors import DataError, InvalidArgumentError
from transferkit.training import fit_choices, linear_probe
from transferkit.training import fit_policy as _fit


def build(num_classes: int = 3) -> tk.TransferClassifier:
    keras.utils.set_random_seed(7)
    return tk.TransferClassifier(
        TINY_BACKBONE, num_classes=num_classes, weights=None, augmentation=None, dropout=0.0
    )


def batches(count: int, seed: int) -> tf.data.Dataset:
    """Batches in a fixed order (no reshuffling), so reruns see the same data."""
    images, labels = separable_images(count, num_classes=3, seed=seed)
    return tf.data.Dataset.from_tensor_slices((images, labels)).batch(4)


# ---------------------------------------------------------------------- rules


@pytest.mark.parametrize(
    ("steps_per_epoch", "expected"), [(1, 100), (13, 24), (64, 5), (1000, _fit.MIN_EPOCHS)]
)
def test_epoch_budget_makes_about_the_steps_between_the_bounds(
    steps_per_epoch: int, expected: int
) -> None:
    assert _fit.stage_epochs(300, steps_per_epoch, most=100) == expected


def test_validation_split_holds_out_the_fraction_of_every_class() -> None:
    images, labels = separable_images(60, num_classes=3, seed=1)
    (train_x, train_y), (val_x, val_y) = split_validation(images, labels, 0.2, seed=3)
    assert np.bincount(val_y).tolist() == [4, 4, 4]
    assert len(train_y) + len(val_y) == 60
    seen = {image.tobytes() for image in train_x}
    assert not any(image.tobytes() in seen for image in val_x)


def test_validation_split_is_the_same_for_the_same_seed() -> None:
    images, labels = separable_images(30, num_classes=3, seed=1)
    first = split_validation(images, labels, 0.2, seed=3)
    again = split_validation(images, labels, 0.2, seed=3)
    other = split_validation(images, labels, 0.2, seed=4)
    np.testing.assert_array_equal(first[1][0], again[1][0])
    assert not np.array_equal(first[1][0], other[1][0])


def test_validation_split_refuses_a_class_of_one_image() -> None:
    images, labels = separable_images(5, num_classes=3, seed=1)
    labels = np.array([0, 0, 1, 1, 2])
    with pytest.raises(DataError, match="Class 2 has 1 image"):
        split_validation(images, labels, 0.2, seed=0)


# ---------------------------------------------------------------------- the whole job


@pytest.fixture(scope="module")
def fitted() -> tuple[tk.TransferClassifier, float]:
    """fit() at its defaults on arrays, without validation data."""
    images, labels = separable_images(60, num_classes=3, seed=2)
    clf = build()
    before = clf.evaluate((images, labels))["accuracy"]
    clf.fit((images, labels), epochs=3, batch_size=4, verbose=0)
    return clf, before


@pytest.mark.slow
def test_fit_runs_the_head_then_fine_tunes_the_whole_backbone(
    fitted: tuple[tk.TransferClassifier, float],
) -> None:
    clf, _ = fitted
    stages = clf.history.stages
    assert stages[0] == "head"
    assert stages[-1] == "fine_tune"
    assert stages == sorted(stages, key=["head", "fine_tune"].index)
    kept = next(d["value"] for d in clf.history.decisions if d["name"] == "kept")
    # The whole backbone stays unfrozen when fine-tuning won; the head alone is frozen again.
    assert clf.unfrozen_from == (0 if kept == "fine_tuned" else None)
    assert _fit.MIN_EPOCHS <= stages.count("head") <= _fit.MAX_HEAD_EPOCHS
    assert stages.count("fine_tune") == 3


@pytest.mark.slow
def test_fit_learns_the_task(fitted: tuple[tk.TransferClassifier, float]) -> None:
    clf, before = fitted
    images, labels = separable_images(60, num_classes=3, seed=9)
    assert before < 0.6
    assert clf.evaluate((images, labels))["accuracy"] >= 0.9


def test_fit_records_every_decision_in_order(
    fitted: tuple[tk.TransferClassifier, float],
) -> None:
    clf, _ = fitted
    decisions = {d["name"]: d for d in clf.history.decisions}
    assert [d["name"] for d in clf.history.decisions] == [
        "validation",
        "head_learning_rate",
        "head_epochs",
        "head_epochs_run",
        "head_probe",
        "unfreeze_from",
        "fine_tune_epochs",
        *["fine_tune_race"] * len(fit_choices.RACE_FACTORS),
        "fine_tune_learning_rate",
        "fine_tune_epochs_run",
        "kept",
    ]
    assert decisions["validation"]["value"] == "12 of 60 images"
    assert "finder" in decisions["head_learning_rate"]["reason"]
    assert decisions["head_epochs_run"]["value"] == clf.history.stages.count("head")
    assert decisions["fine_tune_epochs"] == {
        "name": "fine_tune_epochs",
        "value": 3,
        "reason": "given",
    }
    rate = decisions["head_learning_rate"]["value"]
    raced = [d["value"] for d in clf.history.decisions if d["name"] == "fine_tune_race"]
    assert raced == pytest.approx([rate * factor for factor in fit_choices.RACE_FACTORS])
    assert decisions["fine_tune_learning_rate"]["value"] in raced


def test_fit_keeps_fine_tuning_only_if_it_beat_the_head_on_validation(
    fitted: tuple[tk.TransferClassifier, float],
) -> None:
    clf, _ = fitted
    kept = next(d for d in clf.history.decisions if d["name"] == "kept")
    scores = [
        (float(metric), -float(loss))
        for metric, loss in re.findall(r"metric ([0-9.]+), loss ([0-9.]+)", kept["reason"])
    ]
    assert len(scores) == 2
    if kept["value"] == "fine_tuned":  # "validation (tuned) > head (head)"
        tuned, head = scores
        assert tuned > head
    else:  # "validation head (head) >= (tuned)": the head's weights, backbone frozen again
        head, tuned = scores
        assert head >= tuned
        assert clf.unfrozen_from is None


def test_fit_refits_a_small_datasets_head_as_a_linear_probe(
    fitted: tuple[tk.TransferClassifier, float],
) -> None:
    clf, _ = fitted
    probe = next(d for d in clf.history.decisions if d["name"] == "head_probe")
    assert probe["value"] in linear_probe.L2_GRID
    # 48 training images, 4 of each class in validation: too few to choose by, so k-fold.
    assert probe["reason"].startswith("L2 strength chosen by k-fold log-loss")


def test_fit_decisions_are_saved_with_the_classifier(
    fitted: tuple[tk.TransferClassifier, float], tmp_path: Path
) -> None:
    clf, _ = fitted
    loaded = tk.load_classifier(clf.save(tmp_path / "fitted.keras"))
    assert loaded.history.decisions == clf.history.decisions


@pytest.mark.slow
def test_fit_prints_one_line_per_decision(capsys: pytest.CaptureFixture[str]) -> None:
    images, labels = separable_images(24, num_classes=3, seed=2)
    clf = build()
    clf.fit((images, labels), learning_rate=1e-2, epochs=1, batch_size=4, verbose=2)
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("fit: ")]
    assert len(lines) == len(clf.history.decisions) == 10 + len(fit_choices.RACE_FACTORS)
    assert lines[1] == "fit: head_learning_rate = 0.01 (given)"


def test_fit_rejects_bad_arguments_before_training() -> None:
    clf = build()
    images, labels = separable_images(24, num_classes=3, seed=2)
    with pytest.raises(InvalidArgumentError, match="validation_split"):
        clf.fit((images, labels), validation_split=1.0)
    with pytest.raises(InvalidArgumentError, match="epochs"):
        clf.fit((images, labels), epochs=0)
    assert clf.history.epochs == []
    assert clf.history.decisions == []


# ---------------------------------------------------------------------- resuming


def fit_run(
    checkpoint_dir: Path, callbacks: list[keras.callbacks.Callback] | None = None
) -> tk.TransferClassifier:
    clf = build()
    clf.fit(
        batches(48, seed=5),
        validation_data=batches(24, seed=6),
        epochs=3,
        callbacks=callbacks,
        checkpoint_dir=checkpoint_dir,
        verbose=0,
    )
    return clf


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory: pytest.TempPathFactory) -> tk.TransferClassifier:
    return fit_run(tmp_path_factory.mktemp("uninterrupted"))


@pytest.mark.slow
def test_fit_resumed_mid_fine_tune_ends_as_an_uninterrupted_run(
    uninterrupted: tk.TransferClassifier, tmp_path: Path
) -> None:
    start = uninterrupted.history.fine_tune_start
    assert start is not None
    with pytest.raises(Interrupted):
        fit_run(tmp_path, [InterruptAt(start + 1)])  # one fine-tuning epoch done
    resumed = fit_run(tmp_path)
    assert resumed.history.epochs == uninterrupted.history.epochs
    assert resumed.history.decisions == uninterrupted.history.decisions
    state = json.loads((tmp_path / _fit.FIT_STATE).read_text())  # kept for the rerun
    assert set(state) == {"head_learning_rate", "fine_tune_race"}
    for got, want in zip(
        resumed.model.get_weights(), uninterrupted.model.get_weights(), strict=True
    ):
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-6)


def test_multi_hot_split_holds_out_each_labels_fraction_and_keeps_every_label() -> None:
    rng = np.random.default_rng(0)
    targets = (rng.random((200, 5)) < [0.5, 0.2, 0.05, 0.02, 0.3]).astype(np.float32)
    images = np.arange(200)
    (train_x, train_y), (val_x, val_y) = split_validation(images, targets, 0.2, seed=3)

    assert sorted([*train_x, *val_x]) == list(range(200))
    assert len(val_y) == 40
    np.testing.assert_allclose(val_y.sum(axis=0), 0.2 * targets.sum(axis=0), atol=1.0)
    assert (train_y.sum(axis=0) > 0).all()
    again = split_validation(images, targets, 0.2, seed=3)
    np.testing.assert_array_equal(again[1][0], val_x)


def test_multi_hot_split_keeps_a_label_of_one_image_in_training() -> None:
    targets = np.array([[1, 0, 0], [1, 0, 0], [1, 1, 0], [0, 1, 0], [0, 1, 1], [1, 0, 0]])
    for seed in range(5):
        (_, train_y), (_, val_y) = split_validation(np.arange(6), targets, 0.2, seed)
        assert len(val_y) >= 1
        assert (train_y.sum(axis=0) > 0).all()
    with pytest.raises(DataError, match="too few to hold any out"):
        split_validation(np.arange(2), np.array([[1, 0], [0, 1]]), 0.2, seed=0)


@pytest.mark.slow
def test_fit_keeps_the_probe_without_fine_tuning_when_a_class_has_one_validation_image() -> None:
    images, labels = separable_images(30, num_classes=3, seed=4)
    held_images, held_labels = separable_images(3, num_classes=3, seed=5)  # one of each
    clf = build()
    clf.fit((images, labels), validation_data=(held_images, held_labels), batch_size=8, verbose=0)
    kept = [d for d in clf.history.decisions if d["name"] == "kept"]
    assert [d["value"] for d in kept] == ["head"]
    assert kept[0]["reason"] == "fine-tuning skipped: 1 validation image(s) in a class"
    assert "fine_tune" not in clf.history.stages
    assert clf.unfrozen_from is None
    assert not any(d["name"] == "fine_tune_learning_rate" for d in clf.history.decisions)
