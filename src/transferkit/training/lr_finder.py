"""The learning-rate finder: a short sweep of exponentially growing rates, and a suggestion.

Leslie Smith's range test as fastai's ``lr_find`` runs it: train for ``steps`` batches while
the learning rate grows exponentially from ``min_lr`` to ``max_lr``, record the exponentially
smoothed training loss after each batch, and stop once it diverges (more than 4 times the best
smoothed loss, or not finite). The loss falls slowly at tiny rates, fast at good ones, and
blows up at rates too high; the suggestion is picked from the stretch where it falls.

**The suggestion rule** is fastai's default, *valley*: leave out the first tenth of the planned
steps (the smoothing is still warming up) and the last five recorded (where it diverges); find
the longest valley, the longest sequence of points along which the smoothed loss keeps
decreasing (not necessarily adjacent points: fastai's longest decreasing subsequence, which
shrugs off noise); suggest the rate halfway along it, in steps (the geometric middle of its
rates). That is well below the rate where the loss bottoms out (which is already too high to
train at) and well above the flat start. Should the loss never decrease, the suggestion is a
tenth of the rate at the lowest loss (fastai's older *minimum* rule).

:func:`find_learning_rate` takes the pieces it needs (a model, batches, a loss, an optimizer
maker); :meth:`transferkit.TransferClassifier.find_learning_rate` passes a classifier's: for
the head stage its head on cached backbone features (the backbone runs once over the data, as
in ``fit_head``), with Adam; for fine-tuning its full model with RMSprop, the stages' default
optimizers. Every variable of the model (weights, BatchNormalization statistics,
random-generator states) is put back exactly as it was, and the model's own compiled optimizer is
never touched: the sweep trains a wrapper of the model, compiled with an optimizer of its own.
"""

from __future__ import annotations

import contextlib
import math
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from transferkit import _backend, _validation
from transferkit.errors import InvalidArgumentError, NotUnfrozenError
from transferkit.history import Stage
from transferkit.model.compile import loss
from transferkit.training import features as _features
from transferkit.training.stages import Target

__all__ = [
    "LearningRateFinderResult",
    "find_learning_rate",
    "suggest_learning_rate",
]

#: The sweep stops once the smoothed loss exceeds this many times the best one (fastai's 4).
DIVERGENCE_FACTOR = 4.0
#: The exponential smoothing of the loss (fastai's 0.98), debiased as in Adam.
SMOOTHING = 0.98
_MIN_STEPS = 10
_SKIP_END = 5  # fastai leaves out the last 5 points: where the loss takes off


@dataclass(frozen=True)
class LearningRateFinderResult:
    """What a learning-rate sweep tried, what it saw, and the rate it suggests.

    Attributes:
        learning_rates: the rate of each step trained, growing exponentially.
        losses: the smoothed training loss after each of those steps.
        suggestion: the suggested learning rate (see :mod:`transferkit.lr_finder` for the
            rule).
        stopped_early: whether the sweep stopped before its last step because the loss
            diverged.
    """

    learning_rates: tuple[float, ...]
    losses: tuple[float, ...]
    suggestion: float
    stopped_early: bool

    def plot(self, path: str | os.PathLike[str]) -> Path:
        """Draws the smoothed loss against the learning rate (log scale), marking the suggestion.

        Needs matplotlib (``pip install "transferkit[plot]"``); see
        :func:`transferkit.plot.learning_rates`.

        Args:
            path: the image file to write; the suffix picks the format (``.png``, ``.svg``).

        Returns:
            The path written.
        """
        from transferkit import plot  # imports matplotlib, and only when asked to draw

        return plot.learning_rates(self, path)


def suggest_learning_rate(
    learning_rates: Sequence[float], losses: Sequence[float], *, planned_steps: int | None = None
) -> float:
    """The valley rule: halfway along the longest decreasing stretch of the smoothed loss.

    Args:
        learning_rates: the rates tried, in order.
        losses: the smoothed loss after each.
        planned_steps: the steps the sweep planned; the first tenth of them are left out.
            Defaults to ``len(losses)``.

    Returns:
        The suggested rate.

    Example:
        >>> from transferkit.training.lr_finder import suggest_learning_rate
        >>> rates = [10.0 ** (k / 4 - 6) for k in range(25)]  # 1e-6 ... 1
        >>> flat, falling, rising = [1.0] * 8, [0.9 - 0.1 * k for k in range(9)], [2.0] * 8
        >>> f"{suggest_learning_rate(rates, flat + falling + rising):.1e}"  # 1e-4.25 ... 1e-2
        '5.6e-04'
    """
    if not learning_rates or len(learning_rates) != len(losses):
        msg = (
            "learning_rates and losses must be equally long and not empty. "
            f"Received: {len(learning_rates)} learning_rates, {len(losses)} losses"
        )
        raise InvalidArgumentError(msg)
    planned = len(losses) if planned_steps is None else planned_steps
    start, end = planned // 10, len(losses) - _SKIP_END
    if end - start < 3:  # too short a sweep to trim
        start, end = 0, len(losses)
    rates, values = list(learning_rates[start:end]), list(losses[start:end])
    first, last = _longest_valley(values)
    if last == first:
        lowest = int(np.nanargmin(np.asarray(values, dtype=float)))
        return float(rates[lowest]) / 10
    return float(rates[(first + last) // 2])


def _longest_valley(losses: Sequence[float]) -> tuple[int, int]:
    # The longest strictly decreasing subsequence, O(n^2) like fastai's (n is ~100). Among
    # equally long ways into a point, the latest start wins: a flat stretch before the descent
    # is not part of the valley.
    count = len(losses)
    length, previous = [1] * count, [-1] * count
    for i in range(count):
        for j in range(i):
            if losses[i] < losses[j] and length[j] + 1 >= length[i]:
                length[i], previous[i] = length[j] + 1, j
    last = int(np.argmax(length))
    first = last
    while previous[first] != -1:
        first = previous[first]
    return first, last


class _Sweep(keras.callbacks.Callback):
    """Records the smoothed loss of each one-batch epoch; stops once it diverges."""

    def __init__(self, rates: Sequence[float]) -> None:
        super().__init__()
        self.rates = rates
        self.losses: list[float] = []
        self.diverged = False
        self._average = 0.0
        self._best = math.inf

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        loss = float((logs or {}).get("loss", math.nan))
        self._average = SMOOTHING * self._average + (1 - SMOOTHING) * loss
        smoothed = self._average / (1 - SMOOTHING ** (epoch + 1))
        self.losses.append(smoothed)
        self._best = min(self._best, smoothed)
        if not math.isfinite(smoothed) or smoothed > DIVERGENCE_FACTOR * self._best:
            self.diverged = True
            self.model.stop_training = True


class TrainingWrapper(keras.Model):
    """Calls the model in training mode; compiled and fit in its place, sharing its layers."""

    def __init__(self, model: keras.Model) -> None:
        super().__init__(dtype=model.dtype_policy, name=f"{model.name}_sweep")
        self.inner = model

    def call(self, inputs: Any, training: bool = False) -> Any:
        """The model's output."""
        return self.inner(inputs, training=training)


def find_learning_rate(
    model: keras.Model,
    data: tf.data.Dataset,
    *,
    loss: keras.losses.Loss,
    make_optimizer: Callable[[Any], keras.optimizers.Optimizer] = keras.optimizers.Adam,
    min_lr: float = 1e-7,
    max_lr: float = 10.0,
    steps: int = 100,
    jit_compile: bool | str = "auto",
) -> LearningRateFinderResult:
    """Sweeps the learning rate over ``steps`` batches and suggests one; changes nothing.

    Step ``i`` (from 0) trains one batch at ``min_lr * (max_lr / min_lr) ** (i / (steps -
    1))`` (Keras' ``ExponentialDecay`` schedule, growing). The model runs in training mode
    (dropout and augmentation on, as in training). Every variable of ``model`` is restored
    afterwards, bit for bit, also if the sweep raises; its compiled optimizer is not used.
    Call it in the model's ``tf.distribute`` strategy scope, if it has one.

    Args:
        model: the model to train (it need not be compiled).
        data: batches of ``(inputs, targets[, sample_weights])``; repeated as needed.
        loss: the training loss.
        make_optimizer: makes the sweep's optimizer from a learning-rate schedule, such as
            ``keras.optimizers.RMSprop``. Defaults to ``keras.optimizers.Adam``.
        min_lr: float. The first rate. Defaults to 1e-7.
        max_lr: float. The last rate, reached only if the loss never diverges.
            Defaults to 10.
        steps: int. Batches to train, at least 10. Defaults to 100.
        jit_compile: XLA compilation, as for Keras' ``compile``. Defaults to ``"auto"``.

    Returns:
        The :class:`LearningRateFinderResult`.

    Raises:
        InvalidArgumentError: an argument is invalid.
    """
    rates = _sweep_rates(min_lr, max_lr, steps)
    min_lr, steps = rates[0], len(rates)
    schedule = keras.optimizers.schedules.ExponentialDecay(
        min_lr, decay_steps=steps - 1, decay_rate=rates[-1] / min_lr
    )
    sweep = _Sweep(rates)
    # Every process sweeps the same batches (a duplicated batch has the same mean loss).
    with restored(model.variables), _backend.local_batches():
        wrapper = TrainingWrapper(model)
        wrapper.compile(optimizer=make_optimizer(schedule), loss=loss, jit_compile=jit_compile)
        # One batch per epoch: an epoch's logged loss is then that batch's loss alone.
        wrapper.fit(
            data.repeat(),
            epochs=steps,
            steps_per_epoch=1,
            shuffle=False,
            callbacks=[sweep],
            verbose=0,
        )
    tried = rates[: len(sweep.losses)]
    return LearningRateFinderResult(
        learning_rates=tuple(tried),
        losses=tuple(sweep.losses),
        suggestion=suggest_learning_rate(tried, sweep.losses, planned_steps=steps),
        stopped_early=sweep.diverged and len(sweep.losses) < steps,
    )


@contextlib.contextmanager
def restored(variables: Sequence[keras.Variable]) -> Iterator[None]:
    # Puts every value back on the way out, also when the sweep raises.
    saved = [variable.numpy() for variable in variables]
    try:
        yield
    finally:
        for variable, value in zip(variables, saved, strict=True):
            variable.assign(value)


def _sweep_rates(min_lr: object, max_lr: object, steps: object) -> list[float]:
    # Checked before any work: the rates of the sweep's steps.
    low = _validation.positive_float("min_lr", min_lr)
    high = _validation.positive_float("max_lr", max_lr)
    if low >= high:
        msg = f"min_lr must be below max_lr. Received: min_lr={min_lr!r}, max_lr={max_lr!r}"
        raise InvalidArgumentError(msg)
    count = _validation.positive_int("steps", steps)
    if count < _MIN_STEPS:
        msg = f"steps must be at least {_MIN_STEPS} for a useful sweep. Received: steps={steps!r}"
        raise InvalidArgumentError(msg)
    return [low * (high / low) ** (i / (count - 1)) for i in range(count)]


def check_sweep(stage: object, min_lr: object, max_lr: object, steps: object) -> None:
    """Checks a stage sweep's arguments, before any data is read.

    Raises:
        InvalidArgumentError: an argument is invalid.
    """
    _validation.choice("stage", stage, ("head", "fine_tune"))
    _sweep_rates(min_lr, max_lr, steps)


def sweep_stage(
    target: Target,
    train: tf.data.Dataset,
    *,
    stage: Stage,
    min_lr: float,
    max_lr: float,
    steps: int,
) -> LearningRateFinderResult:
    """Sweeps the learning rate of one of a classifier's stages; changes nothing.

    What :meth:`transferkit.TransferClassifier.find_learning_rate` runs on the data it
    resolved; its arguments are documented there.

    Raises:
        NotUnfrozenError: a ``"fine_tune"`` sweep with the whole backbone frozen.
    """
    check_sweep(stage, min_lr, max_lr, steps)
    if stage == "fine_tune" and target.unfrozen_from is None:
        msg = (
            "A fine_tune sweep trains the unfrozen backbone, but it is all frozen. Call "
            "clf.unfreeze(from_layer=...) first, or sweep stage='head'. Received: stage='fine_tune'"
        )
        raise NotUnfrozenError(msg)
    _backend.check_strategy_can_train(target.strategy)
    sweep = {"loss": loss(target.config), "min_lr": min_lr, "max_lr": max_lr, "steps": steps}
    model = target.model
    if stage == "fine_tune":
        with _backend.scope(target.strategy):
            return find_learning_rate(
                model, train, make_optimizer=keras.optimizers.RMSprop, **sweep
            )
    augment = any(layer.name == "augmentation" for layer in model.layers)
    with (
        _backend.scope(target.strategy),
        restored(model.variables),  # augmenting the cached images draws random numbers
        _features.cache_features(
            model, target.backbone, train, None, views=1, augment=augment
        ) as cached,
    ):
        epochs = -(-steps // cached.train.steps)  # each reshuffled, as in fit_head
        features = cached.train.dataset(epochs=epochs)
        return find_learning_rate(
            cached.head, features, make_optimizer=keras.optimizers.Adam, **sweep
        )
