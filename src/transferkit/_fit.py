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

import numpy as np
import tensorflow as tf

from transferkit import _validation
from transferkit.errors import DataError

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
    raise NotImplementedError  # filled in once the rules are measured
