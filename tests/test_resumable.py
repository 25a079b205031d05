"""Safe, resumable training: checkpoints and resume, divergence, early stopping.

"Running again" after an interruption means what a user does: build a new classifier with the
same arguments (or load a save made before the interrupted call) and make the same calls with
the same ``checkpoint_dir``. Training here is deterministic (fixed seeds, no augmentation, no
dropout, data in a fixed order), so a resumed run must end with exactly the weights of a run
that was never interrupted.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import keras
import numpy as np
import pytest
import tensorflow as tf

import transferkit as tk
from conftest import TINY_BACKBONE, separable_images
from interruptions import InterruptAt, Interrupted
from transferkit.errors import InvalidArgumentError, TrainingDivergedError

HEAD_RATE = 1e-2
TUNE_RATE = 1e-3
UNFREEZE_FROM = -4  # conv4 and its BN onwards: BN stays frozen, conv4 trains

# Several tests fine-tune a classifier whose head was never trained, on purpose.
pytestmark = pytest.mark.filterwarnings("ignore:fine_tune\\(\\) before fit_head")


class Recorder(keras.callbacks.Callback):
    """Records each epoch trained and the model's weights at its end."""

    def __init__(self) -> None:
        super().__init__()
        self.epochs: list[int] = []
        self.weights: dict[int, list[np.ndarray]] = {}

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        self.epochs.append(epoch)
        self.weights[epoch] = self.model.get_weights()


def build() -> tk.TransferClassifier:
    keras.utils.set_random_seed(7)
    return tk.TransferClassifier(
        TINY_BACKBONE, num_classes=2, weights=None, augmentation=None, dropout=0.0
    )


def batches(seed: int, flip_labels: bool = False) -> tf.data.Dataset:
    images, labels = separable_images(32, seed=seed)
    if flip_labels:
        labels = 1 - labels
    return tf.data.Dataset.from_tensor_slices((images, labels)).batch(8)


def assert_same_weights(actual: Sequence[np.ndarray], expected: Sequence[np.ndarray]) -> None:
    assert len(actual) == len(expected)
    for got, want in zip(actual, expected, strict=True):
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-6)


def script(
    clf: tk.TransferClassifier,
    checkpoint_dir: Path,
    *,
    head_callbacks: Sequence[keras.callbacks.Callback] = (),
    tune_callbacks: Sequence[keras.callbacks.Callback] = (),
) -> tk.TransferClassifier:
    """A user's training script: two head epochs, then two fine-tuning epochs."""
    data = batches(seed=5)
    clf.fit_head(
        data,
        epochs=2,
        learning_rate=HEAD_RATE,
        checkpoint_dir=checkpoint_dir,
        callbacks=list(head_callbacks),
        verbose=0,
    )
    clf.unfreeze(UNFREEZE_FROM)
    clf.fine_tune(
        data,
        epochs=2,
        learning_rate=TUNE_RATE,
        checkpoint_dir=checkpoint_dir,
        callbacks=list(tune_callbacks),
        verbose=0,
    )
    return clf


# ---------------------------------------------------------------------- resuming one stage


@pytest.fixture(scope="module")
def uninterrupted_head() -> tk.TransferClassifier:
    clf = build()
    clf.fit_head(batches(seed=5), epochs=3, learning_rate=HEAD_RATE, verbose=0)
    return clf


@pytest.fixture(scope="module")
def resumed_head(
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[tk.TransferClassifier, Recorder]:
    """Three head epochs interrupted as epoch 2 begins, then run again on a new classifier."""
    checkpoint_dir = tmp_path_factory.mktemp("head")
    with pytest.raises(Interrupted):
        build().fit_head(
            batches(seed=5),
            epochs=3,
            learning_rate=HEAD_RATE,
            checkpoint_dir=checkpoint_dir,
            callbacks=[InterruptAt(2)],
            verbose=0,
        )
    recorder = Recorder()
    clf = build()
    clf.fit_head(
        batches(seed=5),
        epochs=3,
        learning_rate=HEAD_RATE,
        checkpoint_dir=checkpoint_dir,
        callbacks=[recorder],
        verbose=0,
    )
    return clf, recorder


@pytest.mark.slow
def test_resumed_head_stage_trains_only_the_epoch_left(
    resumed_head: tuple[tk.TransferClassifier, Recorder],
) -> None:
    _, recorder = resumed_head
    assert recorder.epochs == [2]


@pytest.mark.slow
def test_resumed_head_stage_history_holds_every_epoch_once(
    resumed_head: tuple[tk.TransferClassifier, Recorder],
    uninterrupted_head: tk.TransferClassifier,
) -> None:
    clf, _ = resumed_head
    assert clf.history.epochs == [0, 1, 2]
    assert clf.history.stages == ["head"] * 3
    np.testing.assert_allclose(
        clf.history.metrics["loss"], uninterrupted_head.history.metrics["loss"], rtol=1e-6
    )


def test_resumed_head_stage_ends_with_the_uninterrupted_weights(
    resumed_head: tuple[tk.TransferClassifier, Recorder],
    uninterrupted_head: tk.TransferClassifier,
) -> None:
    # Equal weights after the resumed epoch need the optimizer's moments restored too.
    clf, _ = resumed_head
    assert_same_weights(clf.model.get_weights(), uninterrupted_head.model.get_weights())


# ---------------------------------------------------------------------- rerunning a script


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> tk.TransferClassifier:
    return script(build(), tmp_path_factory.mktemp("reference"))


@pytest.fixture(scope="module")
def rerun(
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[tk.TransferClassifier, Recorder, Recorder]:
    """The script interrupted in its second fine-tuning epoch, then run again from the top."""
    checkpoint_dir = tmp_path_factory.mktemp("script")
    with pytest.raises(Interrupted):
        script(build(), checkpoint_dir, tune_callbacks=[InterruptAt(3)])
    head, tune = Recorder(), Recorder()
    clf = script(build(), checkpoint_dir, head_callbacks=[head], tune_callbacks=[tune])
    return clf, head, tune


@pytest.mark.slow
def test_rerun_restores_the_finished_head_stage_without_training(
    rerun: tuple[tk.TransferClassifier, Recorder, Recorder],
) -> None:
    _, head, _ = rerun
    assert head.epochs == []


@pytest.mark.slow
def test_rerun_resumes_fine_tuning_at_its_next_epoch(
    rerun: tuple[tk.TransferClassifier, Recorder, Recorder],
) -> None:
    _, _, tune = rerun
    assert tune.epochs == [3]


def test_rerun_history_keeps_global_epochs_and_stages(
    rerun: tuple[tk.TransferClassifier, Recorder, Recorder],
) -> None:
    clf, _, _ = rerun
    assert clf.history.epochs == [0, 1, 2, 3]
    assert clf.history.stages == ["head", "head", "fine_tune", "fine_tune"]
    assert clf.history.fine_tune_start == 2


@pytest.mark.slow
def test_rerun_ends_with_the_uninterrupted_weights(
    rerun: tuple[tk.TransferClassifier, Recorder, Recorder], reference: tk.TransferClassifier
) -> None:
    clf, _, _ = rerun
    assert_same_weights(clf.model.get_weights(), reference.model.get_weights())


@pytest.mark.slow
def test_fine_tuning_resumes_on_a_classifier_loaded_from_a_save(
    tmp_path: Path, reference: tk.TransferClassifier
) -> None:
    clf = build()
    clf.fit_head(batches(seed=5), epochs=2, learning_rate=HEAD_RATE, verbose=0)
    saved = clf.save(tmp_path / "after_head.keras")
    checkpoint_dir = tmp_path / "checkpoints"
    clf.unfreeze(UNFREEZE_FROM)
    with pytest.raises(Interrupted):
        clf.fine_tune(
            batches(seed=5),
            epochs=2,
            learning_rate=TUNE_RATE,
            checkpoint_dir=checkpoint_dir,
            callbacks=[InterruptAt(3)],
            verbose=0,
        )
    loaded = tk.load_classifier(saved).unfreeze(UNFREEZE_FROM)
    recorder = Recorder()
    loaded.fine_tune(
        batches(seed=5),
        epochs=2,
        learning_rate=TUNE_RATE,
        checkpoint_dir=checkpoint_dir,
        callbacks=[recorder],
        verbose=0,
    )
    assert recorder.epochs == [3]
    assert loaded.history.epochs == [0, 1, 2, 3]
    assert_same_weights(loaded.model.get_weights(), reference.model.get_weights())


@pytest.mark.slow
def test_checkpoint_made_with_other_settings_is_refused(tmp_path: Path) -> None:
    build().fit_head(batches(seed=5), epochs=1, checkpoint_dir=tmp_path, verbose=0)
    with pytest.raises(InvalidArgumentError, match=r"other settings \(epochs: saved 1, now 2"):
        build().fit_head(batches(seed=5), epochs=2, checkpoint_dir=tmp_path, verbose=0)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("changed", "first", "second"),
    [
        ("optimizer.learning_rate", {"learning_rate": 1e-2}, {"learning_rate": 1e-3}),
        ("batch_size", {"batch_size": 8}, {"batch_size": 16}),
        ("cache_features", {"cache_features": True}, {"cache_features": False}),
        ("augmented_views", {"augmented_views": 1}, {"augmented_views": 2}),
    ],
)
def test_resume_with_a_changed_setting_is_refused_naming_it(
    tmp_path: Path, changed: str, first: dict[str, Any], second: dict[str, Any]
) -> None:
    data = separable_images(16, seed=5)
    build().fit_head(data, epochs=1, checkpoint_dir=tmp_path, verbose=0, **first)
    with pytest.raises(InvalidArgumentError, match=rf"other settings \({changed}: saved "):
        build().fit_head(data, epochs=1, checkpoint_dir=tmp_path, verbose=0, **second)


# ---------------------------------------------------------------------- divergence


def poisoned_from_epoch(epoch: int) -> tf.data.Dataset:
    """Clean batches until the given epoch, then images holding NaN pixels."""
    images, labels = separable_images(32, seed=5)
    passes = []

    def generate() -> Any:
        bad = len(passes) >= epoch
        passes.append(bad)
        for start in range(0, len(images), 8):
            batch = images[start : start + 8].astype(np.float32)
            if bad:
                batch[:, 0, 0, 0] = np.nan
            yield batch, labels[start : start + 8]

    dataset = tf.data.Dataset.from_generator(
        generate,
        output_signature=(
            tf.TensorSpec((None, 32, 32, 3), tf.float32),
            tf.TensorSpec((None,), tf.int32),
        ),
    )
    return dataset.apply(tf.data.experimental.assert_cardinality(len(images) // 8))


@pytest.fixture(scope="module")
def diverged_at_once() -> dict[str, Any]:
    """fit_head on images holding NaN pixels from the first batch."""
    clf = build()
    before = clf.model.get_weights()
    with pytest.raises(TrainingDivergedError) as caught:
        clf.fit_head(
            poisoned_from_epoch(0),
            epochs=3,
            learning_rate=HEAD_RATE,
            verbose=0,
            cache_features=False,
        )
    return {"clf": clf, "before": before, "error": caught.value}


@pytest.mark.slow
@pytest.mark.tensorflow_only(
    reason="XLA's max (ReLU) drops NaN on JAX, so NaN pixels never reach the loss"
)
def test_nan_loss_raises_training_diverged(diverged_at_once: dict[str, Any]) -> None:
    message = str(diverged_at_once["error"])
    assert "loss became nan at epoch 0, batch 0" in message
    assert "weights from before this training call" in message


@pytest.mark.tensorflow_only(
    reason="XLA's max (ReLU) drops NaN on JAX, so NaN pixels never reach the loss"
)
def test_divergence_in_the_first_epoch_restores_the_starting_weights(
    diverged_at_once: dict[str, Any],
) -> None:
    clf = diverged_at_once["clf"]
    weights = clf.model.get_weights()
    assert all(np.isfinite(w).all() for w in weights)
    assert_same_weights(weights, diverged_at_once["before"])
    assert clf.history.epochs == []


@pytest.mark.slow
@pytest.mark.tensorflow_only(
    reason="XLA's max (ReLU) drops NaN on JAX, so NaN pixels never reach the loss"
)
def test_divergence_keeps_the_weights_from_the_end_of_the_last_finite_epoch() -> None:
    clf, recorder = build(), Recorder()
    with pytest.raises(TrainingDivergedError, match="end of epoch 1"):
        clf.fit_head(
            poisoned_from_epoch(2),
            epochs=4,
            learning_rate=HEAD_RATE,
            callbacks=[recorder],
            verbose=0,
            cache_features=False,
        )
    assert clf.history.epochs == [0, 1]
    assert_same_weights(clf.model.get_weights(), recorder.weights[1])


def test_huge_learning_rate_raises_training_diverged_with_finite_weights() -> None:
    clf = build().unfreeze()
    optimizer = keras.optimizers.SGD(learning_rate=1e30)
    with pytest.raises(TrainingDivergedError):
        clf.fine_tune(batches(seed=5), epochs=3, optimizer=optimizer, verbose=0)
    assert all(np.isfinite(w).all() for w in clf.model.get_weights())


# ---------------------------------------------------------------------- early stopping


def fit_with_early_stopping(
    clf: tk.TransferClassifier, stage: str, *callbacks: keras.callbacks.Callback, **kwargs: Any
) -> None:
    # Validation labels are flipped: the better the head fits the training labels, the
    # higher the validation loss, so the best epoch comes early and training stops.
    fit = clf.fit_head if stage == "head" else clf.fine_tune
    fit(
        batches(seed=5),
        validation_data=batches(seed=6, flip_labels=True),
        epochs=10,
        learning_rate=HEAD_RATE,
        early_stopping=2,
        callbacks=list(callbacks),
        verbose=0,
        **kwargs,
    )


@pytest.fixture(scope="module", params=["head", "fine_tune"])
def early_stopped(request: pytest.FixtureRequest) -> tuple[tk.TransferClassifier, Recorder]:
    clf, recorder = build(), Recorder()
    if request.param == "fine_tune":
        clf.unfreeze(UNFREEZE_FROM)
    fit_with_early_stopping(clf, request.param, recorder)
    return clf, recorder


@pytest.mark.slow
def test_early_stopping_stops_after_its_patience(
    early_stopped: tuple[tk.TransferClassifier, Recorder],
) -> None:
    clf, _ = early_stopped
    val_loss = clf.history.metrics["val_loss"]
    best = int(np.argmin(val_loss))
    assert len(val_loss) == best + 1 + 2 < 10


@pytest.mark.slow
def test_early_stopping_restores_the_best_epoch_weights(
    early_stopped: tuple[tk.TransferClassifier, Recorder],
) -> None:
    clf, recorder = early_stopped
    best = clf.history.epochs[int(np.argmin(clf.history.metrics["val_loss"]))]
    assert best < clf.history.epochs[-1]
    assert_same_weights(clf.model.get_weights(), recorder.weights[best])


@pytest.mark.slow
def test_resumed_early_stopping_keeps_its_patience_and_best_weights(tmp_path: Path) -> None:
    uninterrupted = build()
    fit_with_early_stopping(uninterrupted, "head")
    stop = uninterrupted.history.epochs[-1]  # after the best epoch, within the patience
    with pytest.raises(Interrupted):
        fit_with_early_stopping(build(), "head", InterruptAt(stop), checkpoint_dir=tmp_path)
    resumed = build()
    fit_with_early_stopping(resumed, "head", checkpoint_dir=tmp_path)
    assert resumed.history.epochs == uninterrupted.history.epochs
    assert_same_weights(resumed.model.get_weights(), uninterrupted.model.get_weights())


@pytest.mark.parametrize(
    ("name", "value"),
    [("early_stopping", 0), ("early_stopping", True), ("early_stopping", 1.5)],
)
def test_invalid_early_stopping_is_refused(name: str, value: object) -> None:
    with pytest.raises(InvalidArgumentError, match="early_stopping must be"):
        build().fit_head(batches(seed=5), **{name: value})  # type: ignore[arg-type]


def test_checkpoint_dir_that_is_a_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    with pytest.raises(InvalidArgumentError, match="checkpoint_dir must be a folder"):
        build().fit_head(batches(seed=5), checkpoint_dir=tmp_path / "file")
