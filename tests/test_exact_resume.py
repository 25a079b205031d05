"""A resumed run ends bit-identical to an uninterrupted one, on a backbone whose weights move.

Everything random in training is on here: augmentation, dropout before the logits, arrays
reshuffled every epoch. The unfrozen convolutions of the tiny backbone learn fast at these
rates, so a resume that replays the wrong shuffle or the wrong dropout masks shows up as
weights far apart, not as a difference lost in rounding (see ``test_resumable.py`` for the
bookkeeping of resuming: epochs, history, refused settings).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import keras
import numpy as np
import pytest

import transferkit as tk
from conftest import TINY_BACKBONE, separable_images
from interruptions import InterruptAt, Interrupted
from transferkit.errors import InvalidArgumentError

HEAD_RATE = 1e-2
TUNE_RATE = 1e-2
UNFREEZE_FROM = 1  # every convolution trains (BatchNormalization never does)


def build() -> tk.TransferClassifier:
    keras.utils.set_random_seed(7)
    return tk.TransferClassifier(
        TINY_BACKBONE, num_classes=2, weights=None, augmentation="default", dropout=0.3
    )


DATA = separable_images(32, seed=5)


def script(
    clf: tk.TransferClassifier,
    checkpoint_dir: Path | None,
    *,
    cache_features: bool = False,
    head_callbacks: Sequence[keras.callbacks.Callback] = (),
    tune_callbacks: Sequence[keras.callbacks.Callback] = (),
    fine_tune: bool = True,
) -> tk.TransferClassifier:
    """Two head epochs, then three fine-tuning epochs, on arrays in batches of 8."""
    clf.fit_head(
        DATA,
        epochs=2,
        batch_size=8,
        learning_rate=HEAD_RATE,
        cache_features=cache_features,
        augmented_views=2,
        checkpoint_dir=checkpoint_dir,
        callbacks=list(head_callbacks),
        verbose=0,
    )
    if fine_tune:
        clf.unfreeze(UNFREEZE_FROM)
        clf.fine_tune(
            DATA,
            epochs=3,
            batch_size=8,
            learning_rate=TUNE_RATE,
            checkpoint_dir=checkpoint_dir,
            callbacks=list(tune_callbacks),
            verbose=0,
        )
    return clf


def assert_identical(actual: Sequence[np.ndarray], expected: Sequence[np.ndarray]) -> None:
    assert len(actual) == len(expected)
    for got, want in zip(actual, expected, strict=True):
        np.testing.assert_array_equal(got, want)


@pytest.fixture(scope="module")
def uninterrupted() -> tuple[tk.TransferClassifier, list[np.ndarray]]:
    start = build()
    return script(start, None), start.backbone.get_weights()


def test_the_backbone_really_learns(
    uninterrupted: tuple[tk.TransferClassifier, list[np.ndarray]],
) -> None:
    clf, _ = uninterrupted
    first = build()
    moved = max(
        float(np.max(np.abs(a - b)))
        for a, b in zip(clf.backbone.get_weights(), first.backbone.get_weights(), strict=True)
    )
    assert moved > 1e-2


def test_two_uninterrupted_runs_are_identical(
    uninterrupted: tuple[tk.TransferClassifier, list[np.ndarray]],
) -> None:
    clf, _ = uninterrupted
    assert_identical(script(build(), None).model.get_weights(), clf.model.get_weights())


@pytest.mark.parametrize("killed_at", [2, 3])
def test_fine_tuning_killed_mid_run_resumes_exactly(
    tmp_path: Path, uninterrupted: tuple[tk.TransferClassifier, list[np.ndarray]], killed_at: int
) -> None:
    # Killed as global epoch 2 (fine-tuning epoch 0, nothing of it saved) or 3 begins; the
    # rerun replays the finished head stage from its checkpoint, random state included, and
    # trains the fine-tuning epochs left.
    with pytest.raises(Interrupted):
        script(build(), tmp_path, tune_callbacks=[InterruptAt(killed_at)])
    resumed = script(build(), tmp_path)
    assert resumed.history.epochs == [0, 1, 2, 3, 4]
    clf, _ = uninterrupted
    assert_identical(resumed.model.get_weights(), clf.model.get_weights())


@pytest.mark.parametrize("cache_features", [False, True])
def test_head_stage_killed_mid_run_resumes_exactly(tmp_path: Path, cache_features: bool) -> None:
    reference = script(build(), None, cache_features=cache_features, fine_tune=False)
    with pytest.raises(Interrupted):
        script(
            build(),
            tmp_path,
            cache_features=cache_features,
            head_callbacks=[InterruptAt(1)],
            fine_tune=False,
        )
    resumed = script(build(), tmp_path, cache_features=cache_features, fine_tune=False)
    assert resumed.history.epochs == [0, 1]
    assert_identical(resumed.model.get_weights(), reference.model.get_weights())


def test_resume_on_a_model_with_other_random_layers_is_refused(tmp_path: Path) -> None:
    # Augmentation is not a setting the checkpoint compares, but its random state must fit.
    with pytest.raises(Interrupted):
        script(build(), tmp_path, head_callbacks=[InterruptAt(1)], fine_tune=False)
    keras.utils.set_random_seed(7)
    plain = tk.TransferClassifier(
        TINY_BACKBONE, num_classes=2, weights=None, augmentation=None, dropout=0.3
    )
    with pytest.raises(InvalidArgumentError, match="other augmentation or dropout layers"):
        script(plain, tmp_path, fine_tune=False)
