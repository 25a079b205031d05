"""``fit()``: the whole transfer job in one call, with defaults measured to reach the ceiling.

The rules (``docs/transfer_quality.rst`` has the measurements behind each):

1. **Validation.** Without ``validation_data``, a seeded, stratified ``validation_split`` of
   the training data is held out (folders are split by
   :func:`~transferkit.data.from_directory`; multi-hot labels by iterative
   stratification, keeping every label in training), and the decision says so.
2. **Head.** Adam at the learning-rate finder's suggestion on cached features (unless
   ``learning_rate`` is given), a cosine schedule with warmup, an epoch budget of about
   :data:`HEAD_STEPS` optimizer steps, early stopping on the validation loss with the best
   epoch's weights restored.
3. **Unfreeze** the whole backbone; BatchNormalization stays frozen (inference mode).
4. **Fine-tune** with Adam at the head's rate times :data:`FINE_TUNE_RATE_FACTOR`, spread
   over the backbone's blocks by :data:`DISCRIMINATIVE_SPREAD` (1: one rate for all), a
   cosine schedule with warmup (the warmup spares the pretrained features the first large
   steps), an epoch budget of about :data:`FINE_TUNE_STEPS` steps (``epochs`` overrides it),
   early stopping on the validation loss with the best weights restored.

Budgets count optimizer steps, not epochs, so they scale with the data: a small dataset
gets more epochs, a large one fewer. Every decision is recorded in
``clf.history.decisions`` (saved with the history and in checkpoints) and printed, one line
each, when ``verbose`` is not 0. With ``checkpoint_dir``, the finder's suggestion is stored
in ``fit.json`` there, so a resumed run trains at the rate the interrupted one found.
"""

from __future__ import annotations

import functools
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
from transferkit.data import inputs as _inputs
from transferkit.errors import DataError
from transferkit.history import Stage
from transferkit.inference import thresholds as _multi_label
from transferkit.model import class_weights as _class_weights
from transferkit.model.class_weights import ClassWeight
from transferkit.training import lr_finder, schedules
from transferkit.training import stages as _stages
from transferkit.training.options import CacheOptions, StageOptions, Verbose

if TYPE_CHECKING:
    from transferkit.classifier import TransferClassifier
    from transferkit.history import TrainingHistory

__all__ = ["FitMethods"]

#: Optimizer steps the head trains for, at most (early stopping may end it sooner).
HEAD_STEPS = 150
#: Optimizer steps fine-tuning trains for, at most, unless ``epochs`` is given.
FINE_TUNE_STEPS = 80
#: Fewest epochs a budget comes to; most for the head and for fine-tuning.
MIN_EPOCHS, MAX_HEAD_EPOCHS, MAX_FINE_TUNE_EPOCHS = 3, 100, 30
#: Fine-tuning's peak rate (the head's, with discriminative rates) over the head stage's.
FINE_TUNE_RATE_FACTOR = 1.0
#: The lowest backbone block fine-tunes this many times slower than the head (1: uniform).
DISCRIMINATIVE_SPREAD = 1.0
#: Early-stopping patience: this fraction of the stage's epoch budget, at least MIN_PATIENCE.
PATIENCE_FRACTION, MIN_PATIENCE = 0.5, 3
#: Where fit() keeps its own state (the finder's suggestion) in ``checkpoint_dir``.
FIT_STATE = "fit.json"


def stage_epochs(steps: int, steps_per_epoch: int, most: int) -> int:
    """Epochs that make about ``steps`` optimizer steps, between MIN_EPOCHS and ``most``."""
    return min(max(math.ceil(steps / steps_per_epoch), MIN_EPOCHS), most)


def patience(epochs: int) -> int:
    """Early-stopping patience for a stage of ``epochs`` epochs."""
    return max(MIN_PATIENCE, math.ceil(PATIENCE_FRACTION * epochs))


def split_validation(
    images: np.ndarray, labels: np.ndarray, fraction: float, seed: int
) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """A stratified, seeded split: ``fraction`` of each class (at least one image) held out.

    Multi-hot labels are split by iterative stratification, which keeps every label in
    training (see :func:`transferkit.inference.thresholds.held_out_rows`).

    Args:
        images: the images.
        labels: their integer labels, or multi-hot rows.
        fraction: the fraction of each class to hold out, in (0, 1).
        seed: the seed of the random choice.

    Returns:
        ``((train images, train labels), (validation images, validation labels))``; the
        training part in random order, the validation part in the original order.

    Raises:
        DataError: a class has fewer than two images, so none can be held out.
    """
    rng = np.random.default_rng(seed)
    if labels.ndim == 2:
        return _parts(images, labels, _multi_label.held_out_rows(labels, fraction, seed), rng)
    held: list[np.ndarray] = []
    for label in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == label))
        if len(members) < 2:
            msg = (
                f"Class {int(label)} has {len(members)} image, too few to hold one out for "
                "validation. Pass validation_data, or give every class at least 2 images. "
                f"Received: {len(members)} image of class {int(label)}"
            )
            raise DataError(msg)
        held.append(members[: max(1, round(fraction * len(members)))])
    return _parts(images, labels, np.sort(np.concatenate(held)), rng)


def _parts(
    images: np.ndarray, labels: np.ndarray, validation: np.ndarray, rng: np.random.Generator
) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    train = rng.permutation(np.setdiff1d(np.arange(len(labels)), validation))
    return (images[train], labels[train]), (images[validation], labels[validation])


def _arrays(dataset: tf.data.Dataset) -> tuple[np.ndarray, np.ndarray]:
    """Every ``(images, labels)`` element of a dataset, batched or not, as two arrays."""
    images, labels = [], []
    for element in dataset.as_numpy_iterator():
        images.append(np.asarray(element[0]))
        labels.append(np.asarray(element[1]))
    if not images:
        msg = "data holds no images. Received: an empty dataset"
        raise DataError(msg)
    if images[0].ndim == 3:  # unbatched elements
        return np.stack(images), np.asarray(labels)
    return np.concatenate(images), np.concatenate(labels)


def _decide(clf: TransferClassifier, verbose: Verbose, name: str, value: Any, reason: str) -> None:
    """Records a decision in the classifier's history; prints it unless verbose is 0."""
    clf.history.decide(name, value, reason)
    if verbose != 0:
        print(f"fit: {name} = {value!r} ({reason})", flush=True)


def _split(
    clf: TransferClassifier,
    data: _inputs.LabeledData,
    validation_data: _inputs.LabeledData | None,
    fraction: float,
    seed: int,
    batch_size: int,
    verbose: Verbose,
) -> tuple[tf.data.Dataset, tf.data.Dataset]:
    """The training and validation batches, holding a validation split out if need be."""
    if validation_data is None and isinstance(data, (str, os.PathLike)):
        names = clf.class_names
        folder = from_directory(data, clf.image_size, batch_size, seed=seed, class_names=names)
        if folder.validation is None:  # one folder per class: split it
            folder = from_directory(
                data,
                clf.image_size,
                batch_size,
                validation_split=fraction,
                seed=seed,
                class_names=names,
            )
            _decide(
                clf,
                verbose,
                "validation",
                f"{fraction:g} of {os.fspath(data)!r}",
                f"no validation_data: held out a seeded split (seed {seed})",
            )
        else:
            _decide(clf, verbose, "validation", "validation/", "the folder's validation/ images")
        data, validation_data = folder.train, folder.validation
    elif validation_data is None:
        if isinstance(data, tf.data.Dataset):
            images, labels = _arrays(data)  # the split needs every label: read it once
        elif isinstance(data, (tuple, list)) and len(data) == 2:
            images, labels = np.asarray(data[0]), np.asarray(data[1])
        else:  # not labeled data: let the usual check say what is wrong
            _stages.labeled_data(clf, data, batch_size, shuffle=True, name="data")
            raise AssertionError  # pragma: no cover  # the check above raises
        data, validation_data = split_validation(images, labels, fraction, seed)
        _decide(
            clf,
            verbose,
            "validation",
            f"{len(validation_data[1])} of {len(labels)} images",
            f"no validation_data: held out {fraction:g} of each "
            f"{'label, iteratively stratified' if clf.multi_label else 'class'} (seed {seed})",
        )
    else:
        _decide(clf, verbose, "validation", "validation_data", "given")
    return (
        _stages.labeled_data(clf, data, batch_size, shuffle=True, name="data"),
        _stages.labeled_data(
            clf, validation_data, batch_size, shuffle=False, name="validation_data"
        ),
    )


def _head_rate(
    clf: TransferClassifier,
    train: tf.data.Dataset,
    learning_rate: float | None,
    checkpoint_dir: str | os.PathLike[str] | None,
) -> tuple[float, str]:
    if learning_rate is not None:
        return learning_rate, "given"
    state_file = None if checkpoint_dir is None else Path(checkpoint_dir) / FIT_STATE
    if state_file is not None and state_file.is_file():
        rate = float(json.loads(state_file.read_text())["head_learning_rate"])
        return rate, f"learning-rate finder, as found before in {FIT_STATE}"
    rate = float(clf.find_learning_rate(train, stage="head").suggestion)
    if state_file is not None:
        state_file.parent.mkdir(parents=True, exist_ok=True)
        partial = state_file.with_name(f".partial-{FIT_STATE}")
        partial.write_text(json.dumps({"head_learning_rate": rate}))
        os.replace(partial, state_file)
    return rate, "learning-rate finder (valley) on the head"


def _stage_options(
    *,
    epochs: int,
    learning_rate: float | tuple[float, float],
    batch_size: int,
    callbacks: Sequence[keras.callbacks.Callback] | None,
    verbose: Verbose,
    checkpoint_dir: str | os.PathLike[str] | None,
    class_weight: ClassWeight,
) -> StageOptions:
    return StageOptions.create(
        epochs=epochs,
        batch_size=batch_size,
        learning_rate=learning_rate,
        optimizer=None,
        callbacks=callbacks,
        verbose=verbose,
        jit_compile="auto",
        early_stopping=patience(epochs),
        checkpoint_dir=checkpoint_dir,
        schedule="cosine",
        by_block=True,
        class_weight=class_weight,
    )


def _count(history: TrainingHistory, stage: str) -> int:
    return sum(1 for s in history.stages if s == stage)


class FitMethods:
    """:meth:`fit` and :meth:`find_learning_rate` of :class:`~transferkit.TransferClassifier`.

    A mixin: the classifier inherits them, so that ``classifier.py`` keeps the recipe's own
    stages and this module keeps the measured-defaults path that builds on them.
    """

    def fit(  # type: ignore[misc]  # self: a mixin's subclass
        self: TransferClassifier,
        data: _inputs.LabeledData,
        *,
        validation_data: _inputs.LabeledData | None = None,
        epochs: int | None = None,
        validation_split: float = 0.2,
        learning_rate: float | None = None,
        batch_size: int = 32,
        callbacks: Sequence[keras.callbacks.Callback] | None = None,
        verbose: Verbose = "auto",
        seed: int = 0,
        checkpoint_dir: str | os.PathLike[str] | None = None,
        class_weight: ClassWeight = None,
    ) -> TrainingHistory:
        """The whole job in one call: head, unfreeze, fine-tune, with measured defaults.

        1. Without ``validation_data``, holds out ``validation_split`` of each class
           (seeded; a folder with a ``validation/`` folder uses it; multi-hot labels are
           split by iterative stratification, keeping every label in training).
        2. Trains the head with Adam at the :meth:`find_learning_rate` suggestion, a
           cosine schedule and about 150 optimizer steps, stopping early on the
           validation loss and keeping the best epoch.
        3. Unfreezes the whole backbone (BatchNormalization stays frozen).
        4. Fine-tunes with Adam at the head's rate, a cosine schedule with warmup and
           about 80 optimizer steps, stopping early on the validation loss and keeping
           the best epoch.

        Budgets count optimizer steps, so they scale with the data. Every decision (the
        split, the rates, the layer, the epochs budgeted and run) is recorded in
        ``history.decisions`` and printed, one line each, unless ``verbose=0``. See the
        transfer-quality page of the docs for the measurements behind the defaults;
        :meth:`fit_head` and :meth:`fine_tune` remain for the recipe's fixed settings.

        Args:
            data: as for :meth:`fit_head`.
            validation_data: as for :meth:`fit_head`; None holds a split out of ``data``.
            epochs: int. Fine-tuning epochs, instead of the step budget. Defaults to None.
            validation_split: float in (0, 1). The fraction of each class held out when
                there is no ``validation_data``. Defaults to 0.2.
            learning_rate: float. The head's rate instead of the finder's (fine-tuning's
                follows it). Defaults to None.
            batch_size: int. Batch size for arrays. Defaults to 32.
            callbacks: Keras callbacks, passed to both stages.
            verbose: Keras' progress output, and whether decisions are printed.
            seed: int. Seed of the validation split. Defaults to 0.
            checkpoint_dir: as for :meth:`fit_head`: run the same ``fit`` again with the
                same folder to resume; the finder's suggestion is kept there too.
            class_weight: as for :meth:`fit_head`, in both stages. Defaults to None.

        Returns:
            :attr:`history`, with both stages' epochs and the decisions.

        Raises:
            DataError: a class has too few images to hold one out for validation.
            TrainingDivergedError: as for :meth:`fit_head`.
        """
        if epochs is not None:
            epochs = _validation.positive_int("epochs", epochs)
        fraction = _validation.fraction("validation_split", validation_split)
        if learning_rate is not None:
            learning_rate = _validation.positive_float("learning_rate", learning_rate)
        batch_size = _validation.positive_int("batch_size", batch_size)
        seed = _validation.non_negative_int("seed", seed)
        _validation.choice("verbose", verbose, ("auto", 0, 1, 2))
        class_weight = _class_weights.check(class_weight)

        train, validation = _split(self, data, validation_data, fraction, seed, batch_size, verbose)
        steps = schedules.steps_per_epoch(train)
        options = functools.partial(
            _stage_options,
            batch_size=batch_size,
            callbacks=callbacks,
            verbose=verbose,
            checkpoint_dir=checkpoint_dir,
            class_weight=class_weight,
        )

        head_rate, why = _head_rate(self, train, learning_rate, checkpoint_dir)
        _decide(self, verbose, "head_learning_rate", head_rate, why)
        head_epochs = stage_epochs(HEAD_STEPS, steps, MAX_HEAD_EPOCHS)
        _decide(
            self,
            verbose,
            "head_epochs",
            head_epochs,
            f"about {HEAD_STEPS} steps of {steps} per epoch, cosine, "
            f"early stopping after {patience(head_epochs)} without a lower validation loss",
        )
        self.freeze()
        self._head_learning_rate = head_rate
        _stages.run(
            self,
            "head",
            train,
            validation,
            options(epochs=head_epochs, learning_rate=head_rate),
            default_optimizer=keras.optimizers.Adam,
            default_rate=head_rate,
            cache=CacheOptions.create(
                cache_features=True, augmented_views=1, feature_memory_limit=1 << 30
            ),
        )
        _decide(
            self, verbose, "head_epochs_run", _count(self.history, "head"), "best epoch restored"
        )

        self.unfreeze(None)
        _decide(self, verbose, "unfreeze_from", 0, "the whole backbone, BatchNormalization frozen")
        tune_epochs = epochs or stage_epochs(FINE_TUNE_STEPS, steps, MAX_FINE_TUNE_EPOCHS)
        _decide(
            self,
            verbose,
            "fine_tune_epochs",
            tune_epochs,
            "given"
            if epochs
            else f"about {FINE_TUNE_STEPS} steps of {steps} per epoch, cosine, "
            f"early stopping after {patience(tune_epochs)} without a lower validation loss",
        )
        high = head_rate * FINE_TUNE_RATE_FACTOR
        rates = (high / DISCRIMINATIVE_SPREAD, high)
        # One rate for all needs no optimizer per block.
        tune_rate: float | tuple[float, float] = high if DISCRIMINATIVE_SPREAD == 1 else rates
        _decide(
            self,
            verbose,
            "fine_tune_learning_rate",
            list(rates),
            f"Adam; lowest block to head; the head's rate x {FINE_TUNE_RATE_FACTOR:g}",
        )
        _stages.run(
            self,
            "fine_tune",
            train,
            validation,
            options(epochs=tune_epochs, learning_rate=tune_rate),
            default_optimizer=keras.optimizers.Adam,
            default_rate=high,
        )
        _decide(
            self,
            verbose,
            "fine_tune_epochs_run",
            _count(self.history, "fine_tune"),
            "best epoch restored",
        )
        return self.history

    def find_learning_rate(  # type: ignore[misc]  # self: a mixin's subclass
        self: TransferClassifier,
        data: _inputs.LabeledData,
        *,
        stage: Stage = "head",
        min_lr: float = 1e-7,
        max_lr: float = 10.0,
        steps: int = 100,
        batch_size: int = 32,
    ) -> lr_finder.LearningRateFinderResult:
        """Sweeps learning rates over a few batches and suggests one (fastai's ``lr_find``).

        Trains ``steps`` batches while the rate grows exponentially from ``min_lr`` to
        ``max_lr``, stops early once the smoothed loss diverges, and suggests a rate by
        fastai's valley rule (see :mod:`transferkit.lr_finder`). Every weight, statistic and
        random state of the model, and the compiled optimizer's state, are left exactly as
        they were: nothing is trained for good.

        ``stage="head"`` sweeps Adam on the head as :meth:`fit_head` trains it, on cached
        backbone features (the backbone runs once over the data, so it takes seconds).
        ``stage="fine_tune"`` sweeps RMSprop on the full model as :meth:`fine_tune` trains
        it, one rate for every unfrozen layer; call :meth:`unfreeze` first. With
        discriminative rates, use the suggestion as the head's (``high``) rate.

        Args:
            data: as for :meth:`fit_head`; repeated when it has fewer than ``steps``
                batches.
            stage: ``"head"`` or ``"fine_tune"``. Defaults to ``"head"``.
            min_lr: float. The first rate. Defaults to 1e-7.
            max_lr: float. The last rate. Defaults to 10.
            steps: int. Batches to train, at least 10. Defaults to 100.
            batch_size: int. Batch size for arrays. Defaults to 32.

        Returns:
            A :class:`~transferkit.lr_finder.LearningRateFinderResult`: the rates tried,
            the smoothed losses, the ``suggestion``, and ``plot(path)``.

        Raises:
            NotUnfrozenError: ``stage="fine_tune"`` with the whole backbone frozen.
            InvalidArgumentError: an argument is invalid.
        """
        return lr_finder.sweep_stage(self, data, stage, (min_lr, max_lr, steps, batch_size))
