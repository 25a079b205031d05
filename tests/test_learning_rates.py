"""Learning rates on the classifier: schedules on both stages, discriminative fine-tuning,
the finder, and exact resumes through ``checkpoint_dir`` with all of them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import keras
import numpy as np
import pytest
import tensorflow as tf

import transferkit as tk
from conftest import TINY_BACKBONE, separable_images
from interruptions import InterruptAt, Interrupted
from transferkit.discriminative import group_learning_rates
from transferkit.errors import InvalidArgumentError, NotUnfrozenError
from transferkit.schedules import OneCycle

EPOCHS, BATCHES = 3, 4  # 32 images in batches of 8

# The resume tests fine-tune a classifier whose head was never trained, on purpose.
pytestmark = pytest.mark.filterwarnings("ignore:fine_tune\\(\\) before fit_head")


def build() -> tk.TransferClassifier:
    keras.utils.set_random_seed(7)
    return tk.TransferClassifier(
        TINY_BACKBONE, num_classes=2, weights=None, augmentation=None, dropout=0.0
    )


def data() -> tf.data.Dataset:
    images, labels = separable_images(32, seed=5)
    return tf.data.Dataset.from_tensor_slices((images, labels)).batch(8)


def test_fit_head_one_cycle_ends_at_the_schedules_final_rate() -> None:
    clf = build()
    clf.fit_head(data(), epochs=EPOCHS, learning_rate=1e-2, schedule="one_cycle", verbose=0)
    optimizer = clf.model.optimizer
    assert int(optimizer.iterations) == EPOCHS * BATCHES
    expected = OneCycle(1e-2, EPOCHS * BATCHES)(EPOCHS * BATCHES)
    assert float(optimizer.learning_rate) == pytest.approx(float(expected), rel=1e-6)


def test_fine_tune_with_a_rate_pair_trains_each_block_at_its_own_rate() -> None:
    clf = build()
    clf.fit_head(data(), epochs=1, learning_rate=1e-2, verbose=0)
    clf.unfreeze(None)
    clf.fine_tune(data(), epochs=1, learning_rate=(1e-5, 1e-3), verbose=0)
    optimizer = clf.model.optimizer
    assert isinstance(optimizer, keras.optimizers.MultiOptimizer)
    rates = [float(group.learning_rate) for group in optimizer.optimizers]
    # tiny_bn has no block names: four equal chunks of its layers, then the head.
    np.testing.assert_allclose(rates, group_learning_rates(5, (1e-5, 1e-3)), rtol=1e-6)
    assert all(isinstance(group, keras.optimizers.RMSprop) for group in optimizer.optimizers)


def test_fine_tune_layer_decay_scales_each_block_below_the_head() -> None:
    clf = build()
    clf.unfreeze(-4)  # conv4 (and frozen bn4): one block, then the head
    clf.fine_tune(data(), epochs=1, learning_rate=1e-3, layer_decay=0.5, verbose=0)
    rates = [float(group.learning_rate) for group in clf.model.optimizer.optimizers]
    np.testing.assert_allclose(rates, [5e-4, 1e-3], rtol=1e-6)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"learning_rate": (1e-5, 1e-3)}, "fine_tune\\(\\) only"),
        ({"schedule": "linear"}, "Received: schedule='linear'"),
        ({"schedule": "cosine", "optimizer": keras.optimizers.Adam()}, "give it its schedule"),
    ],
)
def test_fit_head_refuses_rate_options_it_cannot_apply(kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(InvalidArgumentError, match=match):
        build().fit_head(data(), epochs=1, verbose=0, **kwargs)


def test_fine_tune_refuses_a_rate_pair_with_layer_decay() -> None:
    clf = build().unfreeze(None)
    with pytest.raises(InvalidArgumentError, match="not both"):
        clf.fine_tune(data(), learning_rate=(1e-5, 1e-3), layer_decay=0.8)


# ---------------------------------------------------------------------- exact resume


def script(clf: tk.TransferClassifier, folder: Path, callbacks: list[Any]) -> None:
    """Discriminative one-cycle fine-tuning (the head stage is left out to save time)."""
    clf.unfreeze(None)
    clf.fine_tune(
        data(),
        epochs=EPOCHS,
        learning_rate=(1e-4, 1e-2),
        schedule="one_cycle",
        checkpoint_dir=folder,
        callbacks=callbacks,
        verbose=0,
    )


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory: pytest.TempPathFactory) -> tk.TransferClassifier:
    clf = build()
    script(clf, tmp_path_factory.mktemp("whole"), [])
    return clf


def test_resumed_discriminative_one_cycle_ends_as_the_uninterrupted_run(
    uninterrupted: tk.TransferClassifier, tmp_path: Path
) -> None:
    with pytest.raises(Interrupted):
        script(build(), tmp_path, [InterruptAt(1)])  # the second epoch
    resumed = build()
    script(resumed, tmp_path, [])
    assert resumed.history.epochs == uninterrupted.history.epochs == [0, 1, 2]
    groups = zip(
        resumed.model.optimizer.optimizers, uninterrupted.model.optimizer.optimizers, strict=True
    )
    for mine, theirs in groups:  # the step count came back, so the schedule went on
        assert int(mine.iterations) == int(theirs.iterations) == EPOCHS * BATCHES
        assert float(mine.learning_rate) == float(theirs.learning_rate)
    for got, want in zip(
        resumed.model.get_weights(), uninterrupted.model.get_weights(), strict=True
    ):
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-6)


def test_a_checkpoint_made_with_another_schedule_is_refused(tmp_path: Path) -> None:
    clf = build()
    clf.fit_head(data(), epochs=2, schedule="cosine", checkpoint_dir=tmp_path, verbose=0)
    with pytest.raises(InvalidArgumentError, match="schedule: saved 'cosine', now 'one_cycle'"):
        build().fit_head(data(), epochs=2, schedule="one_cycle", checkpoint_dir=tmp_path)


# ---------------------------------------------------------------------- the finder


def test_find_learning_rate_changes_nothing_and_suggests_a_swept_rate() -> None:
    # Part-way through training: a trained head, a compiled optimizer with state, and the
    # random states of dropout and augmentation. Sweeps of both stages leave all of it as it
    # was, bit for bit.
    clf = tk.TransferClassifier(TINY_BACKBONE, num_classes=3, weights=None)
    images, labels = separable_images(48, num_classes=3)
    clf.fit_head((images, labels), epochs=1, batch_size=16, verbose=0)
    optimizer = clf.model.optimizer
    before = [v.numpy() for v in clf.model.variables + optimizer.variables]

    head = clf.find_learning_rate((images, labels), steps=30, batch_size=16)
    clf.unfreeze(-4)
    tune = clf.find_learning_rate((images, labels), stage="fine_tune", steps=12, batch_size=16)

    assert clf.model.optimizer is optimizer
    after = [v.numpy() for v in clf.model.variables + optimizer.variables]
    for old, new in zip(before, after, strict=True):
        np.testing.assert_array_equal(old, new)
    for result, steps in ((head, 30), (tune, 12)):
        assert isinstance(result, tk.LearningRateFinderResult)
        assert len(result.learning_rates) == len(result.losses) <= steps
        assert result.learning_rates[0] <= result.suggestion <= result.learning_rates[-1]


def test_fine_tune_sweep_needs_an_unfrozen_backbone() -> None:
    with pytest.raises(NotUnfrozenError, match="unfreeze"):
        build().find_learning_rate(data(), stage="fine_tune")


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [({"stage": "body"}, "stage"), ({"steps": 3}, "at least 10"), ({"max_lr": -1.0}, "max_lr")],
)
def test_find_learning_rate_refuses_invalid_arguments(kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(InvalidArgumentError, match=match):
        build().find_learning_rate(data(), **kwargs)
