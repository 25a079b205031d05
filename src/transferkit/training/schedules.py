"""Learning-rate schedules for both training stages: constant, one-cycle and cosine with warmup.

A schedule is chosen by name (``schedule="one_cycle"`` in
:meth:`~transferkit.TransferClassifier.fit_head` and
:meth:`~transferkit.TransferClassifier.fine_tune`) and spans the whole call: it needs the
number of optimizer steps, ``epochs * steps per epoch`` (see :func:`steps_per_epoch`). The
learning rate given to the stage is the schedule's peak.

``"constant"``
    The rate, every step (the reference recipe's, and the default).
``"cosine"``
    Keras' own :class:`keras.optimizers.schedules.CosineDecay` with warmup: a linear rise
    from ``rate / 25`` to ``rate`` over the first 5% of the steps (at least one step), then a
    cosine decay to 0 at the last step.
``"one_cycle"``
    :class:`OneCycle` (Smith's one-cycle policy as fastai's ``fit_one_cycle`` runs it, which
    Keras lacks): a cosine rise from ``rate / 25`` to ``rate`` over the first 25% of the
    steps, then a cosine fall to ``rate / 25 / 1e5``.

Both schedules are functions of the optimizer's ``iterations``, which checkpoints save and
restore, so a resumed run continues the schedule exactly where the interrupted one stopped.
"""

from __future__ import annotations

import math
from typing import Any, Literal

import keras
import tensorflow as tf

from transferkit import _validation
from transferkit.errors import DataError

__all__ = ["SCHEDULES", "OneCycle", "Schedule", "make_schedule", "steps_per_epoch"]

#: A learning-rate schedule by name.
Schedule = Literal["constant", "one_cycle", "cosine"]
#: The names :func:`make_schedule` accepts.
SCHEDULES: tuple[str, ...] = ("constant", "one_cycle", "cosine")

# fastai's fit_one_cycle defaults: start at max/25, end at max/25/1e5, peak after 25%.
_DIV = 25.0
_DIV_FINAL = 1e5
_ONE_CYCLE_WARMUP = 0.25
# A short linear warmup (5% of the steps, as in timm's recipes) before the cosine decay.
_COSINE_WARMUP = 0.05


@keras.saving.register_keras_serializable(package="transferkit")
class OneCycle(keras.optimizers.schedules.LearningRateSchedule):
    """The one-cycle policy: a cosine rise to ``max_learning_rate``, then a cosine fall.

    At step ``s`` of ``total_steps`` with ``w = round(warmup_fraction * total_steps)``
    warmup steps (at least 1 while ``total_steps > 1``)::

        s < w:  rate = anneal(max / div, max, s / w)
        s >= w: rate = anneal(max, max / div / div_final, (s - w) / (total_steps - w))
        anneal(a, b, p) = b + (a - b) * (1 + cos(pi * p)) / 2

    Steps past ``total_steps`` keep the final rate. The defaults are fastai's
    ``fit_one_cycle``'s (``div=25``, ``div_final=1e5``, ``pct_start=0.25``).

    Args:
        max_learning_rate: float. The peak rate.
        total_steps: int. Optimizer steps in the whole cycle.
        warmup_fraction: float. The fraction of the steps spent rising, in [0, 1).
            Defaults to 0.25.
        div: float. The starting rate is ``max_learning_rate / div``. Defaults to 25.
        div_final: float. The final rate is ``max_learning_rate / div / div_final``.
            Defaults to 1e5.
        name: str. The schedule's name. Defaults to ``"OneCycle"``.

    Example:
        >>> from transferkit.training.schedules import OneCycle
        >>> schedule = OneCycle(1e-3, total_steps=100)
        >>> round(float(schedule(0)), 8), round(float(schedule(25)), 8)
        (4e-05, 0.001)
    """

    def __init__(
        self,
        max_learning_rate: float,
        total_steps: int,
        warmup_fraction: float = _ONE_CYCLE_WARMUP,
        div: float = _DIV,
        div_final: float = _DIV_FINAL,
        name: str = "OneCycle",
    ) -> None:
        super().__init__()
        self.max_learning_rate = _validation.positive_float("max_learning_rate", max_learning_rate)
        self.total_steps = _validation.positive_int("total_steps", total_steps)
        self.warmup_fraction = _validation.fraction(
            "warmup_fraction", warmup_fraction, low_inclusive=True
        )
        self.div = _validation.positive_float("div", div)
        self.div_final = _validation.positive_float("div_final", div_final)
        self.name = name

    @property
    def warmup_steps(self) -> int:
        """The number of steps spent rising (at least 1 when there are 2 steps or more)."""
        if self.total_steps < 2:
            return 0
        steps = round(self.warmup_fraction * self.total_steps)
        return min(max(steps, 1), self.total_steps - 1)

    def __call__(self, step: Any) -> Any:
        """The rate at an optimizer step (a scalar tensor)."""
        ops = keras.ops
        peak = self.max_learning_rate
        step = ops.minimum(ops.cast(step, "float32"), float(self.total_steps))
        warmup = float(self.warmup_steps)
        start = peak / self.div
        end = start / self.div_final
        rising = _anneal(start, peak, step / max(warmup, 1.0))
        falling = _anneal(peak, end, (step - warmup) / max(self.total_steps - warmup, 1.0))
        return ops.where(step < warmup, rising, falling)

    def get_config(self) -> dict[str, Any]:
        """The constructor arguments."""
        return {
            "max_learning_rate": self.max_learning_rate,
            "total_steps": self.total_steps,
            "warmup_fraction": self.warmup_fraction,
            "div": self.div,
            "div_final": self.div_final,
            "name": self.name,
        }


def _anneal(start: Any, end: Any, progress: Any) -> Any:
    # Cosine interpolation from start (progress 0) to end (progress 1).
    cosine = (1.0 + keras.ops.cos(math.pi * progress)) / 2.0
    return end + (start - end) * cosine


def make_schedule(
    schedule: Schedule, learning_rate: float, total_steps: int
) -> float | keras.optimizers.schedules.LearningRateSchedule:
    """The learning rate to give a Keras optimizer for a named schedule.

    Args:
        schedule: ``"constant"``, ``"one_cycle"`` or ``"cosine"`` (see the module).
        learning_rate: float. The constant rate, or the schedule's peak.
        total_steps: int. Optimizer steps the schedule spans (``epochs * steps per epoch``).

    Returns:
        ``learning_rate`` itself for ``"constant"``, else a serializable Keras schedule.

    Raises:
        InvalidArgumentError: an argument is invalid.

    Example:
        >>> from transferkit.training.schedules import make_schedule
        >>> make_schedule("constant", 1e-3, 100)
        0.001
        >>> type(make_schedule("cosine", 1e-3, 100)).__name__
        'CosineDecay'
    """
    _validation.choice("schedule", schedule, SCHEDULES)
    rate = _validation.positive_float("learning_rate", learning_rate)
    steps = _validation.positive_int("total_steps", total_steps)
    if schedule == "constant":
        return rate
    if schedule == "one_cycle":
        return OneCycle(rate, steps)
    # Keras' cosine: warmup_steps of linear rise, then decay_steps of cosine decay.
    warmup = min(max(round(_COSINE_WARMUP * steps), 1), steps - 1) if steps > 1 else 0
    return keras.optimizers.schedules.CosineDecay(
        initial_learning_rate=rate / _DIV,
        decay_steps=steps - warmup,
        alpha=0.0,
        warmup_target=rate if warmup else None,
        warmup_steps=warmup,
    )


def steps_per_epoch(data: tf.data.Dataset | int) -> int:
    """Batches in one epoch of a ``tf.data.Dataset`` of batches, from its cardinality.

    Datasets made by transferkit (from arrays or folders) and by Keras'
    ``image_dataset_from_directory`` know their cardinality. A dataset that does not (after
    ``filter``, or read from a generator) needs it stated with
    ``dataset.apply(tf.data.experimental.assert_cardinality(batches))``.

    Args:
        data: a batched dataset, or an int (returned as it is, once checked).

    Returns:
        The number of batches, at least 1.

    Raises:
        DataError: the dataset is infinite, empty, or its cardinality is unknown.
    """
    if not isinstance(data, tf.data.Dataset):
        return _validation.positive_int("steps_per_epoch", data)
    cardinality = int(data.cardinality())
    if cardinality == tf.data.INFINITE_CARDINALITY:
        msg = (
            "A learning-rate schedule needs epochs of known length, but the dataset repeats "
            "forever. Leave out .repeat(), or use schedule='constant'. "
            "Received: data with infinite cardinality"
        )
        raise DataError(msg)
    if cardinality == tf.data.UNKNOWN_CARDINALITY:
        msg = (
            "A learning-rate schedule needs the number of batches per epoch, and the dataset "
            "does not know it. State it with "
            "dataset.apply(tf.data.experimental.assert_cardinality(batches)), or use "
            "schedule='constant'. Received: data with unknown cardinality"
        )
        raise DataError(msg)
    if cardinality < 1:
        msg = f"The dataset holds no batches. Received: data with cardinality {cardinality}"
        raise DataError(msg)
    return cardinality
