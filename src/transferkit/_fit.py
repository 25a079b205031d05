"""``fit()``: the whole transfer job in one call, with defaults measured to reach the ceiling.

The rules (see ``docs/transfer_quality.rst`` for the measurements behind each):

1. **Validation.** Without ``validation_data``, a seeded, stratified ``validation_split`` of
   the training data is held out (arrays and datasets alike), and fit() says so.
2. **Head.** The head trains on cached backbone features at the learning-rate finder's
   suggestion (unless ``learning_rate`` is given), with a cosine schedule, for an epoch
   budget of about :data:`HEAD_STEPS` optimizer steps, stopping early on the validation
   loss with the best epoch's weights restored.
3. **Unfreeze** the whole backbone; BatchNormalization stays frozen (inference mode).
4. **Fine-tune** with Adam at discriminative rates: the head at the head's rate divided by
   :data:`FINE_TUNE_DIVISOR`, the lowest backbone block :data:`DISCRIMINATIVE_SPREAD` times
   lower, geometric in between; cosine schedule; an epoch budget of about
   :data:`FINE_TUNE_STEPS` steps (``epochs`` overrides it); early stopping on the validation
   loss with the best weights restored.

Every decision is recorded in ``clf.history.decisions`` and printed when ``verbose``.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import keras
import numpy as np
import tensorflow as tf

from transferkit import _validation
from transferkit.data import from_directory
from transferkit.discriminative import (
    discriminative_optimizer,
    group_learning_rates,
    trainable_groups,
)
from transferkit.errors import DataError
from transferkit.schedules import make_schedule, steps_per_epoch

if TYPE_CHECKING:
    from transferkit.classifier import TransferClassifier
    from transferkit.history import TrainingHistory

__all__ = ["fit"]

#: Optimizer steps the head trains for (at most; early stopping may end it sooner).
HEAD_STEPS = 400
#: Optimizer steps fine-tuning trains for (at most), when ``epochs`` is not given.
FINE_TUNE_STEPS = 200
#: Fewest and most epochs either stage's budget may come to.
MIN_EPOCHS, MAX_HEAD_EPOCHS, MAX_FINE_TUNE_EPOCHS = 3, 100, 30
#: The fine-tuning head rate is the head stage's rate divided by this.
FINE_TUNE_DIVISOR = 10.0
#: The lowest backbone block fine-tunes this many times slower than the head.
DISCRIMINATIVE_SPREAD = 10.0
#: Early-stopping patience: this fraction of the stage's epoch budget, at least 2 epochs.
PATIENCE_FRACTION = 0.25
_FIT_STATE = "fit.json"


def stage_epochs(steps: int, steps_per_epoch: int, most: int) -> int:
    """Epochs that make about ``steps`` optimizer steps, between MIN_EPOCHS and ``most``."""
    return min(max(math.ceil(steps / steps_per_epoch), MIN_EPOCHS), most)


def patience(epochs: int) -> int:
    """Early-stopping patience for a stage of ``epochs`` epochs."""
    return max(2, math.ceil(PATIENCE_FRACTION * epochs))


def split_validation(
    images: np.ndarray, labels: np.ndarray, fraction: float, seed: int
) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """A stratified, seeded split: ``fraction`` of each class (at least one image) held out.

    Raises:
        DataError: a class has fewer than two images, so none can be held out.
    """
    rng = np.random.default_rng(seed)
    held: list[np.ndarray] = []
    for label in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == label))
        if len(members) < 2:
            msg = (
                f"Class {int(label)} has {len(members)} image, too few to hold one out for "
                "validation. Pass validation_data, or give every class at least 2 images. "
                f"Received: {len(members)} images of class {int(label)}"
            )
            raise DataError(msg)
        held.append(members[: max(1, round(fraction * len(members)))])
    validation = np.sort(np.concatenate(held))
    train = np.setdiff1d(np.arange(len(labels)), validation)
    train = rng.permutation(train)
    return (images[train], labels[train]), (images[validation], labels[validation])


def arrays_of(dataset: tf.data.Dataset) -> tuple[np.ndarray, np.ndarray]:
    """Every ``(images, labels)`` element of a dataset, batched or not, as two arrays."""
    images, labels = [], []
    for x, y in dataset.as_numpy_iterator():
        images.append(np.asarray(x))
        labels.append(np.asarray(y))
    if not images:
        msg = "data holds no images. Received: an empty dataset"
        raise DataError(msg)
    if images[0].ndim == 3:  # unbatched elements
        return np.stack(images), np.asarray(labels)
    return np.concatenate(images), np.concatenate(labels)


class Decisions:
    """Records fit()'s decisions, in order, and prints each one when verbose."""

    def __init__(self, verbose: bool) -> None:
        self.records: list[dict[str, Any]] = []
        self.verbose = verbose

    def add(self, name: str, value: Any, reason: str) -> Any:
        self.records.append({"name": name, "value": value, "reason": reason})
        if self.verbose:
            print(f"fit: {name} = {value!r} ({reason})")
        return value


def _load_state(checkpoint_dir: str | os.PathLike[str] | None) -> dict[str, Any]:
    if checkpoint_dir is None:
        return {}
    path = Path(checkpoint_dir) / _FIT_STATE
    return json.loads(path.read_text()) if path.is_file() else {}


def _save_state(checkpoint_dir: str | os.PathLike[str] | None, state: dict[str, Any]) -> None:
    if checkpoint_dir is None:
        return
    folder = Path(checkpoint_dir)
    folder.mkdir(parents=True, exist_ok=True)
    temporary = folder / f".partial-{_FIT_STATE}"
    temporary.write_text(json.dumps(state, indent=1))
    os.replace(temporary, folder / _FIT_STATE)


def _split(
    clf: TransferClassifier,
    data: Any,
    validation_data: Any,
    fraction: float,
    seed: int,
    batch_size: int,
    decisions: Decisions,
) -> tuple[tf.data.Dataset, tf.data.Dataset]:
    """The training and validation datasets, holding a validation split out if need be."""
    if validation_data is not None:
        return (
            clf._labeled(data, batch_size, shuffle=True, name="data"),
            clf._labeled(validation_data, batch_size, shuffle=False, name="validation_data"),
        )
    if isinstance(data, (str, os.PathLike)):
        names = clf.class_names
        folder = from_directory(data, clf.image_size, batch_size, seed=seed, class_names=names)
        if folder.validation is not None:  # train/ and validation/ folders: use its own
            return folder.train, folder.validation
        folder = from_directory(data, clf.image_size, batch_size, validation_split=fraction,
                                seed=seed, class_names=names)
        train, validation = folder.train, folder.validation
        how = f"{fraction:g} of the images in {os.fspath(data)!r}"
    else:
        if isinstance(data, tf.data.Dataset):
            images, labels = arrays_of(data)
        elif isinstance(data, (tuple, list)) and len(data) == 2:
            images, labels = np.asarray(data[0]), np.asarray(data[1])
        else:
            return clf._labeled(data, batch_size, shuffle=True, name="data"), None  # raises
        (x, y), (vx, vy) = split_validation(images, labels, fraction, seed)
        train, validation = (x, y), (vx, vy)
        how = f"{len(vy)} of {len(labels)} images, {fraction:g} of each class"
    decisions.add("validation", "split", f"no validation_data: held out {how} (seed {seed})")
    return (
        clf._labeled(train, batch_size, shuffle=True, name="data"),
        clf._labeled(validation, batch_size, shuffle=False, name="validation_data"),
    )


def _adam(clf: TransferClassifier, rate: Any) -> keras.optimizers.Optimizer:
    with clf._scope():  # its variables must live under the classifier's strategy
        return keras.optimizers.Adam(rate)


def _epochs_run(history: TrainingHistory, stage: str) -> int:
    return sum(1 for s in history.stages if s == stage)


def fit(
    clf: TransferClassifier,
    data: Any,
    *,
    validation_data: Any = None,
    epochs: int | None = None,
    validation_split: float = 0.2,
    learning_rate: float | None = None,
    batch_size: int = 32,
    callbacks: Sequence[Any] | None = None,
    verbose: Any = "auto",
    seed: int = 0,
    checkpoint_dir: str | os.PathLike[str] | None = None,
) -> TrainingHistory:
    """See :meth:`transferkit.TransferClassifier.fit`."""
    if epochs is not None:
        epochs = _validation.positive_int("epochs", epochs)
    validation_split = _validation.fraction("validation_split", validation_split)
    if learning_rate is not None:
        learning_rate = _validation.positive_float("learning_rate", learning_rate)
    batch_size = _validation.positive_int("batch_size", batch_size)
    seed = _validation.non_negative_int("seed", seed)
    decisions = Decisions(verbose not in (0, False))
    state = _load_state(checkpoint_dir)

    train, validation = _split(clf, data, validation_data, validation_split, seed, batch_size,
                               decisions)
    steps = steps_per_epoch(train)

    # Head: the finder's rate, a cosine schedule, a step budget, early stopping.
    if learning_rate is None:
        if "head_learning_rate" not in state:
            result = clf.find_learning_rate(train, stage="head")
            state["head_learning_rate"] = float(result.suggestion)
            _save_state(checkpoint_dir, state)
        head_rate = decisions.add(
            "head_learning_rate", state["head_learning_rate"], "learning-rate finder suggestion"
        )
    else:
        head_rate = decisions.add("head_learning_rate", learning_rate, "given")
    head_epochs = decisions.add(
        "head_epochs",
        stage_epochs(HEAD_STEPS, steps, MAX_HEAD_EPOCHS),
        f"about {HEAD_STEPS} steps of {steps} per epoch",
    )
    common = {"validation_data": validation, "batch_size": batch_size, "callbacks": callbacks,
              "verbose": verbose, "checkpoint_dir": checkpoint_dir}
    optimizer = _adam(clf, make_schedule("cosine", head_rate, head_epochs * steps))
    clf.fit_head(train, epochs=head_epochs, optimizer=optimizer,
                 early_stopping=patience(head_epochs), **common)
    decisions.add("head_epochs_run", _epochs_run(clf.history, "head"), "early stopping on "
                  "validation loss, best epoch's weights restored")

    # Fine-tune: the whole backbone (BatchNormalization frozen), discriminative rates.
    clf.unfreeze(None)
    decisions.add("unfreeze_from", 0, "the whole backbone, BatchNormalization frozen")
    tune_epochs = epochs or stage_epochs(FINE_TUNE_STEPS, steps, MAX_FINE_TUNE_EPOCHS)
    decisions.add("fine_tune_epochs", tune_epochs, "given" if epochs else
                  f"about {FINE_TUNE_STEPS} steps of {steps} per epoch")
    high = head_rate / FINE_TUNE_DIVISOR
    rates = (high / DISCRIMINATIVE_SPREAD, high)
    decisions.add("fine_tune_learning_rate", list(rates), f"lowest block to head: the head "
                  f"rate / {FINE_TUNE_DIVISOR:g}, spread {DISCRIMINATIVE_SPREAD:g}x")
    groups = trainable_groups(clf.backbone, 0)
    per_group = group_learning_rates(len(groups) + 1, rates)
    total = tune_epochs * steps
    with clf._scope():
        optimizer = discriminative_optimizer(
            groups, per_group, lambda rate: keras.optimizers.Adam(
                make_schedule("cosine", rate, total))
        )
    clf.fine_tune(train, epochs=tune_epochs, optimizer=optimizer,
                  early_stopping=patience(tune_epochs), **common)
    decisions.add("fine_tune_epochs_run", _epochs_run(clf.history, "fine_tune"),
                  "early stopping on validation loss, best epoch's weights restored")
    clf.history.decisions = decisions.records
    return clf.history
