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
   **Linear probe.** With at most :data:`~transferkit.training.fit_choices.PROBE_MAX_IMAGES`
   training images, the head is then refitted as L2-regularized logistic regression on the
   same frozen features (:mod:`~transferkit.training.linear_probe`: full-batch L-BFGS, the
   strength chosen by the held-out log-loss, on the validation split or, when it holds
   fewer than 5 images of a class, by cross-validation). That is the head alone fit()
   falls back to (step 6): the minibatch head with early stopping on a few validation
   images is not regularized. Fine-tuning starts from the minibatch head, whose larger
   weights pass the backbone larger gradients (from the probe it measured worse).
3. **Unfreeze** the whole backbone; BatchNormalization stays frozen (inference mode).
4. **Fine-tuning's rate is raced** (:mod:`~transferkit.training.rate_race`): each of the
   head's rate times :data:`~transferkit.training.fit_choices.RACE_FACTORS` trains a short
   run from the minibatch head's weights (Adam, cosine with warmup, the same batches,
   :data:`~transferkit.training.fit_choices.RACE_FRACTION` of fine-tuning's steps), is
   scored on the validation data (metric, then loss; a diverged run scores lowest), and
   every weight is put back; the best rate wins (the lower of equal ones). The head's rate
   is no sure guide to fine-tuning's: the best fine-tuning rate was near it on digits and
   several times above it on another task and backbone family (issue 21).
5. **Fine-tune** at the race's rate with Adam, one rate for every block (discriminative
   spreads measured worse on the benchmark), a cosine schedule with warmup (the warmup
   spares the pretrained features the first large steps), an epoch budget of about
   :data:`FINE_TUNE_STEPS` steps (``epochs`` overrides it), early stopping on the validation
   loss with the best weights restored, from the minibatch head's weights.

6. **Never worse than the head alone.** The validation score of the head alone (the probe
   on small data) is kept; fine-tuning's weights stay only if they beat it (accuracy, or AUC
   for multi-label, then the loss), else the head alone's weights come back and the
   backbone is frozen again.

Budgets count optimizer steps, not epochs, so they scale with the data: a small dataset
gets more epochs, a large one fewer. Every decision is recorded in
``clf.history.decisions`` (saved with the history and in checkpoints) and printed, one line
each, when ``verbose`` is not 0. With ``checkpoint_dir``, the finder's suggestion and the
race's candidates and winner are stored in ``fit.json`` there (by process 0), so a resumed
run trains at the rates the interrupted one chose without racing again.

:func:`fit` drives the classifier through its public methods only (``find_learning_rate``,
``fit_head``, ``unfreeze``, ``fine_tune``), as :class:`Trainable` states; the probe and the
race (:mod:`~transferkit.training.fit_choices`) read its public ``model``, ``backbone``,
``config`` and ``strategy`` and change nothing but the model's weights. The classifier keeps
owning its state, and this module keeps the policy.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence
from typing import Any, Protocol

import keras
import numpy as np
import tensorflow as tf

from transferkit import _backend, _validation
from transferkit.data import from_directory, resolve
from transferkit.data import inputs as _inputs
from transferkit.data.splits import as_arrays, split_validation
from transferkit.history import TrainingHistory
from transferkit.model import class_weights as _class_weights
from transferkit.model.class_weights import ClassWeight
from transferkit.model.protocol import ClassifierLike
from transferkit.training import fit_choices, schedules
from transferkit.training.options import Verbose
from transferkit.training.regularization import Regularization

__all__ = ["Trainable", "fit", "patience", "stage_epochs"]

#: Optimizer steps the head trains for, at most (early stopping may end it sooner).
HEAD_STEPS = 150
#: Optimizer steps fine-tuning trains for, at most, unless ``epochs`` is given.
FINE_TUNE_STEPS = 80
#: Fewest epochs a budget comes to; most for the head and for fine-tuning.
MIN_EPOCHS, MAX_HEAD_EPOCHS, MAX_FINE_TUNE_EPOCHS = 3, 100, 30
#: Early-stopping patience: this fraction of the stage's epoch budget, at least MIN_PATIENCE.
PATIENCE_FRACTION, MIN_PATIENCE = 0.5, 3
#: Where fit() keeps its own state (the finder's suggestion, the race) in ``checkpoint_dir``.
FIT_STATE = fit_choices.FitState.NAME
#: Fewest validation images of a class (positives of a label) that fine-tuning is judged on;
#: with fewer, fit() keeps the linear probe and does not fine-tune.
MIN_VALIDATION_TO_FINE_TUNE = 2


class Trainable(ClassifierLike, Protocol):
    """The public face of a classifier that :func:`fit` drives."""

    history: TrainingHistory

    @property
    def fit_head(self) -> Callable[..., TrainingHistory]:
        """Stage one."""

    @property
    def fine_tune(self) -> Callable[..., TrainingHistory]:
        """Stage two."""

    @property
    def find_learning_rate(self) -> Callable[..., Any]:
        """The learning-rate finder."""

    @property
    def unfreeze(self) -> Callable[..., Any]:
        """Unfreezes the backbone from a block on."""

    @property
    def freeze(self) -> Callable[..., Any]:
        """Freezes the whole backbone."""

    @property
    def evaluate(self) -> Callable[..., dict[str, float]]:
        """Loss and metrics on labeled data."""


def stage_epochs(steps: int, steps_per_epoch: int, most: int) -> int:
    """Epochs that make about ``steps`` optimizer steps, between MIN_EPOCHS and ``most``."""
    return min(max(math.ceil(steps / steps_per_epoch), MIN_EPOCHS), most)


def patience(epochs: int) -> int:
    """Early-stopping patience for a stage of ``epochs`` epochs."""
    return max(MIN_PATIENCE, math.ceil(PATIENCE_FRACTION * epochs))


def fit(
    classifier: Trainable,
    data: _inputs.LabeledData,
    *,
    validation_data: _inputs.LabeledData | None,
    epochs: int | None,
    validation_split: float,
    learning_rate: float | None,
    batch_size: int,
    callbacks: Sequence[keras.callbacks.Callback] | None,
    verbose: Verbose,
    seed: int,
    checkpoint_dir: str | os.PathLike[str] | None,
    class_weight: ClassWeight,
    regularization: Regularization | None = None,
) -> TrainingHistory:
    """Runs :meth:`transferkit.TransferClassifier.fit`; its arguments are documented there."""
    if epochs is not None:
        epochs = _validation.positive_int("epochs", epochs)
    fraction = _validation.fraction("validation_split", validation_split)
    if learning_rate is not None:
        learning_rate = _validation.positive_float("learning_rate", learning_rate)
    batch_size = _validation.positive_int("batch_size", batch_size)
    seed = _validation.non_negative_int("seed", seed)
    _validation.choice("verbose", verbose, ("auto", 0, 1, 2))
    class_weight = _class_weights.check(class_weight)
    regularization = Regularization.check(regularization)

    decide = _Decisions(classifier, verbose)
    train, validation = _split(
        classifier, data, validation_data, fraction, seed, batch_size, decide
    )
    steps = _steps_per_epoch(classifier, train, batch_size)
    common: dict[str, Any] = {
        "validation_data": validation,
        "batch_size": batch_size,
        "callbacks": callbacks,
        "verbose": verbose,
        "checkpoint_dir": checkpoint_dir,
        "class_weight": class_weight,
        "regularization": regularization,
    }
    head_rate = _train_head(classifier, train, learning_rate, checkpoint_dir, steps, common, decide)
    # Never worse than the head alone (the probe, on small data): fine-tuning's weights are
    # kept only if they score better.
    head_score, head_weights, rarest = fit_choices.probe_head(
        classifier, train, validation, batch_size=batch_size, steps_per_epoch=steps,
        class_weight=class_weight, score=lambda: _score(classifier, validation, batch_size),
        decide=decide,
    )  # fmt: skip
    if rarest is not None and rarest < MIN_VALIDATION_TO_FINE_TUNE:
        # One validation image a class cannot tell a good fine-tune from a destructive one.
        classifier.model.set_weights(head_weights)
        decide("kept", "head", f"fine-tuning skipped: {rarest} validation image(s) in a class")
        return classifier.history
    _fine_tune(classifier, train, head_rate, epochs, steps, common, decide, seed)
    tuned_score = _score(classifier, validation, batch_size)
    if tuned_score > head_score:
        decide("kept", "fine_tuned", f"validation {_show(tuned_score)} > head {_show(head_score)}")
    else:
        classifier.model.set_weights(head_weights)
        classifier.freeze()
        decide("kept", "head", f"validation head {_show(head_score)} >= {_show(tuned_score)}")
    return classifier.history


def _score(classifier: Trainable, validation: Any, batch_size: int) -> tuple[float, float]:
    """The validation score fit() compares: the head's metric, then the loss (lower is better)."""
    results = classifier.evaluate(validation, batch_size=batch_size)
    metric = "auc" if classifier.multi_label else "accuracy"
    return float(results[metric]), -float(results["loss"])


def _show(score: tuple[float, float]) -> str:
    return f"(metric {score[0]:.4f}, loss {-score[1]:.4f})"


class _Decisions:
    """Records each decision in the classifier's history; prints it unless verbose is 0."""

    def __init__(self, classifier: Trainable, verbose: Verbose) -> None:
        self._classifier, self._verbose = classifier, verbose

    def __call__(self, name: str, value: Any, reason: str) -> None:
        self._classifier.history.decide(name, value, reason)
        if self._verbose != 0 and _backend.is_process_zero():  # once in a multi-process run
            print(f"fit: {name} = {value!r} ({reason})", flush=True)

    def stage_run(self, stage: str) -> None:
        count = sum(1 for s in self._classifier.history.stages if s == stage)
        self(f"{stage}_epochs_run", count, "best epoch restored")


def _train_head(
    classifier: Trainable,
    train: Any,
    learning_rate: float | None,
    checkpoint_dir: str | os.PathLike[str] | None,
    steps: int,
    common: dict[str, Any],
    decide: _Decisions,
) -> float:
    head_rate, why = _head_rate(classifier, train, learning_rate, checkpoint_dir, common)
    decide("head_learning_rate", head_rate, why)
    head_epochs = stage_epochs(HEAD_STEPS, steps, MAX_HEAD_EPOCHS)
    decide(
        "head_epochs",
        head_epochs,
        f"about {HEAD_STEPS} steps of {steps} per epoch, cosine, "
        f"early stopping after {patience(head_epochs)} without a lower validation loss",
    )
    classifier.fit_head(
        train,
        epochs=head_epochs,
        learning_rate=head_rate,
        schedule="cosine",
        early_stopping=patience(head_epochs),
        cache_features=True,
        **common,
    )
    decide.stage_run("head")
    return head_rate


def _fine_tune(
    classifier: Trainable,
    train: Any,
    head_rate: float,
    epochs: int | None,
    steps: int,
    common: dict[str, Any],
    decide: _Decisions,
    seed: int,
) -> None:
    classifier.unfreeze(None)
    decide("unfreeze_from", 0, "the whole backbone, BatchNormalization frozen")
    tune_epochs = epochs or stage_epochs(FINE_TUNE_STEPS, steps, MAX_FINE_TUNE_EPOCHS)
    decide(
        "fine_tune_epochs",
        tune_epochs,
        "given"
        if epochs
        else f"about {FINE_TUNE_STEPS} steps of {steps} per epoch, cosine, "
        f"early stopping after {patience(tune_epochs)} without a lower validation loss",
    )
    rate = fit_choices.race_fine_tune_rate(
        classifier, train, common["validation_data"], base_rate=head_rate,
        total_steps=tune_epochs * steps, batch_size=common["batch_size"], seed=seed,
        state=fit_choices.FitState(common["checkpoint_dir"]), decide=decide,
    )  # fmt: skip
    decide(
        "fine_tune_learning_rate",
        rate,
        f"Adam, one rate for every block; the race's best of the head's rate x "
        f"{', '.join(f'{factor:g}' for factor in fit_choices.RACE_FACTORS)}",
    )
    # Adam rather than the recipe's RMSprop; its variables live under the model's strategy.
    with _backend.scope(classifier.strategy):
        schedule = schedules.make_schedule("cosine", rate, tune_epochs * steps)
        optimizer = keras.optimizers.Adam(schedule)
    classifier.fine_tune(
        train,
        epochs=tune_epochs,
        optimizer=optimizer,
        early_stopping=patience(tune_epochs),
        **common,
    )
    decide.stage_run("fine_tune")


def _head_rate(
    classifier: Trainable,
    train: Any,
    learning_rate: float | None,
    checkpoint_dir: str | os.PathLike[str] | None,
    common: dict[str, Any],
) -> tuple[float, str]:
    if learning_rate is not None:
        return learning_rate, "given"
    state = fit_choices.FitState(checkpoint_dir)
    stored = state.get("head_learning_rate")
    if stored is not None:
        return float(stored), f"learning-rate finder, as found before in {FIT_STATE}"
    found = classifier.find_learning_rate(train, stage="head", batch_size=common["batch_size"])
    rate = float(found.suggestion)
    # Every process finds the same rate from the same batches; process 0 alone writes it.
    state.put("head_learning_rate", rate)
    return rate, "learning-rate finder (valley) on the head"


def _split(
    classifier: Trainable,
    data: _inputs.LabeledData,
    validation_data: _inputs.LabeledData | None,
    fraction: float,
    seed: int,
    batch_size: int,
    decide: _Decisions,
) -> tuple[Any, Any]:
    """The training and validation data, holding a validation split out if need be."""
    if validation_data is not None:
        decide("validation", "validation_data", "given")
        return data, validation_data
    if isinstance(data, (str, os.PathLike)):
        return _split_folder(classifier, data, fraction, seed, batch_size, decide)
    if isinstance(data, tf.data.Dataset):
        images, labels = as_arrays(data)  # the split needs every label: read it once
    elif isinstance(data, (tuple, list)) and len(data) == 2:
        images, labels = np.asarray(data[0]), np.asarray(data[1])
    else:  # not labeled data: let the usual check say what is wrong
        resolve.labeled(data, _expected(classifier), batch_size=batch_size)
        raise AssertionError  # pragma: no cover  # the check above raises
    train, validation = split_validation(images, labels, fraction, seed)
    decide(
        "validation",
        f"{len(validation[1])} of {len(labels)} images",
        f"no validation_data: held out {fraction:g} of each "
        f"{'label, iteratively stratified' if classifier.multi_label else 'class'} (seed {seed})",
    )
    return train, validation


def _split_folder(
    classifier: Trainable,
    path: str | os.PathLike[str],
    fraction: float,
    seed: int,
    batch_size: int,
    decide: _Decisions,
) -> tuple[Any, Any]:
    names = classifier.class_names
    size = classifier.image_size
    folder = from_directory(path, size, batch_size, seed=seed, class_names=names)
    if folder.validation is not None:
        decide("validation", "validation/", "the folder's validation/ images")
        return folder.train, folder.validation
    # One folder per class: split it.
    folder = from_directory(
        path, size, batch_size, validation_split=fraction, seed=seed, class_names=names
    )
    decide(
        "validation",
        f"{fraction:g} of {os.fspath(path)!r}",
        f"no validation_data: held out a seeded split (seed {seed})",
    )
    return folder.train, folder.validation


def _steps_per_epoch(classifier: Trainable, train: Any, batch_size: int) -> int:
    if isinstance(train, tuple):  # arrays, batched by fit_head
        return -(-len(train[1]) // batch_size)
    batches = resolve.labeled(train, _expected(classifier), batch_size=batch_size).dataset
    return schedules.steps_per_epoch(batches)


def _expected(classifier: Trainable) -> resolve.Expected:
    names = classifier.class_names
    return resolve.Expected(
        classifier.image_size,
        classifier.num_classes,
        None if names is None else tuple(names),
        classifier.multi_label,
    )
