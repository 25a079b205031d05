"""A race of learning rates: short runs from the same weights, each scored on validation data.

The learning-rate finder sweeps the head, where a sweep is cheap, but the rate that matters is
fine-tuning's, and the head's rate says little about it: on digits the best fine-tuning rate
was near the head finder's suggestion, on other images and another backbone family 3 to 20
times above it. :func:`race` measures it on the fine-tuning stage itself: each candidate
trains a short run of its own (Adam, a cosine schedule with warmup over the run's steps, the
same batches in the same order for every candidate) from the current weights, and is scored
on the validation data by the classifier's metric (accuracy, or AUC for multi-label), then
the loss. A run that diverges scores lowest. Every variable of the model (weights,
BatchNormalization statistics, random-generator states) is put back exactly between
candidates and at the end, and the model's own compiled optimizer is never touched: each run
trains a wrapper of the model with an optimizer of its own, as the finder does.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import keras
import tensorflow as tf

from transferkit import _backend, _validation
from transferkit.errors import InvalidArgumentError
from transferkit.model.compile import compile_model
from transferkit.model.config import ClassifierConfig
from transferkit.training import schedules
from transferkit.training.lr_finder import TrainingWrapper, restored

__all__ = ["RaceResult", "Score", "race"]

#: A validation score: the metric, then the negated loss; higher is better in both.
Score = tuple[float, float]
_DIVERGED: Score = (-math.inf, -math.inf)


@dataclass(frozen=True)
class RaceResult:
    """The rates a race tried, each one's validation score, and the winner.

    Attributes:
        rates: the candidate rates, in the order given.
        scores: each candidate's validation ``(metric, -loss)``; ``(-inf, -inf)`` if its
            run diverged.
        best: the winning rate: the best score, the lower rate of equal ones.
        steps: the optimizer steps each candidate trained.
    """

    rates: tuple[float, ...]
    scores: tuple[Score, ...]
    best: float
    steps: int


def race(
    model: keras.Model,
    train: tf.data.Dataset,
    validation: tf.data.Dataset,
    *,
    config: ClassifierConfig,
    rates: Sequence[float],
    steps: int,
    strategy: object = None,
) -> RaceResult:
    """Trains each rate for ``steps`` steps from the current weights; changes nothing.

    Args:
        model: the model to train, with the layers to train already trainable.
        train: batches of ``(images, targets)``, at least ``steps`` of them (the same
            batches, in the same order, for every candidate).
        validation: the batches that score each candidate.
        config: the classifier's settings: its loss and metrics.
        rates: the candidate peak learning rates.
        steps: optimizer steps per candidate.
        strategy: the ``tf.distribute.Strategy`` the model lives under, or None.

    Returns:
        The :class:`RaceResult`.

    Raises:
        InvalidArgumentError: no rates, a rate not positive, or ``steps`` not positive.
    """
    candidates = tuple(_validation.positive_float("rates", rate) for rate in rates)
    if not candidates:
        msg = f"A race needs at least one rate. Received: rates={list(rates)!r}"
        raise InvalidArgumentError(msg)
    steps = _validation.positive_int("steps", steps)
    metric = "auc" if config.multi_label else "accuracy"
    with _backend.scope(strategy), restored(model.variables), _backend.local_batches():
        runner = _Runner(model, config, steps, strategy)
        scores = tuple(runner.score(train, validation, rate, metric) for rate in candidates)
    # The best score; among equal ones the lowest rate, the gentler change to the weights.
    best = max(zip(scores, candidates, strict=True), key=lambda pair: (pair[0], -pair[1]))[1]
    return RaceResult(candidates, scores, best, steps)


class _PeakSchedule(keras.optimizers.schedules.LearningRateSchedule):
    """A cosine schedule of peak 1, times a variable peak: one compiled step for every rate.

    The peak is a variable of the optimizer itself, so that every backend's compiled step
    reads its current value (JAX passes the optimizer's variables in as state).
    """

    def __init__(self, steps: int) -> None:
        self.shape = schedules.make_schedule("cosine", 1.0, steps)
        self.peak: keras.Variable | None = None

    def __call__(self, step: Any) -> Any:
        """The rate at ``step``."""
        shape = self.shape(step) if callable(self.shape) else self.shape
        return keras.ops.multiply(shape, keras.ops.cast(self.peak, "float32"))


class _Runner:
    """One wrapper of the model, compiled once; each candidate starts from the same state."""

    def __init__(
        self, model: keras.Model, config: ClassifierConfig, steps: int, strategy: object
    ) -> None:
        self.model, self.steps = model, steps
        self.wrapper = TrainingWrapper(model)
        schedule = _PeakSchedule(steps)
        self.optimizer = keras.optimizers.Adam(schedule)
        compile_model(self.wrapper, config, self.optimizer, strategy=strategy)
        self.optimizer.build(self.wrapper.trainable_variables)
        self.peak = self.optimizer.add_variable((), dtype="float32", name="race_peak")
        schedule.peak = self.peak

    def score(
        self, train: tf.data.Dataset, validation: tf.data.Dataset, rate: float, metric: str
    ) -> Score:
        """Trains ``steps`` steps at peak ``rate`` from the current state, scores, restores."""
        self.peak.assign(rate)
        with restored(self.model.variables), restored(self.optimizer.variables):
            history = self.wrapper.fit(
                train, epochs=1, steps_per_epoch=self.steps, shuffle=False, verbose=0
            )
            if not all(math.isfinite(loss) for loss in history.history["loss"]):
                return _DIVERGED
            results = self.wrapper.evaluate(validation, verbose=0, return_dict=True)
        score = (float(results[metric]), -float(results["loss"]))
        return score if all(math.isfinite(value) for value in score) else _DIVERGED
