"""Regularizers of a training stage: label smoothing, weight EMA, MixUp, CutMix, a greedy soup.

:class:`Regularization` is one frozen, validated value that ``fit_head``, ``fine_tune`` and
``fit`` take as ``regularization=``; every option is off by default. Each acts on training
alone, never on what the model computes at inference or on what a saved file holds:

* **Label smoothing** is part of the stage's loss
  (:class:`~transferkit.model.losses.ClassifierLoss`), so the training and the validation
  loss of the stage are both smoothed.
* **Weight EMA** is Keras' own (``use_ema=True`` on the stage's optimizer, ``ema_momentum``).
  :class:`EmaWeights` puts the averaged weights into the model wherever it is read during
  the stage: for validation and at every epoch's end. So the validation loss, early
  stopping, checkpoints, the soup and the user's callbacks all see the EMA weights, and the
  model keeps them at the end (Keras' ``finalize_variable_values``), or early stopping's best
  epoch's EMA weights. Training itself goes on from the raw weights.
* **MixUp** and **CutMix** are Keras' layers (``keras.layers.MixUp``, ``keras.layers.CutMix``)
  mapped over the training batches in the ``tf.data`` pipeline only (:func:`mix_batches`);
  labels become rows of class probabilities, mixed as the images are. On cached features
  (the head stage's default) MixUp mixes the feature vectors; CutMix needs images, so a head
  stage with CutMix trains on the full model instead (with a warning).
* **Greedy soup** (Wortsman et al., 2022): :class:`EpochSoup` keeps the weights of the
  ``soup`` epochs with the lowest validation loss; at the end, starting from the best one,
  each next-best epoch joins the average if the validation loss of the average does not get
  worse. The model keeps the average (never worse on validation than the best epoch, which
  early stopping would keep).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from transferkit import _validation
from transferkit.errors import InvalidArgumentError
from transferkit.model.config import ClassifierConfig

__all__ = ["EmaWeights", "EpochSoup", "Regularization", "mix_batches", "uses_ema"]


@dataclass(frozen=True)
class Regularization:
    """The regularizers of a training stage; every one is off by default.

    Args:
        label_smoothing: float in [0, 1). Smooths the targets: ``(1 - e) * one_hot + e / k``
            for ``k`` softmax classes, ``t * (1 - e) + e / 2`` for sigmoid heads. Defaults
            to 0.
        ema: float in (0, 1), or None. The momentum of an exponential moving average of the
            weights (Keras' ``use_ema=True, ema_momentum=ema``, for example 0.99); the
            stage validates on, and keeps, the averaged weights. Not with your own
            ``optimizer`` (give it ``use_ema=True`` instead). Defaults to None.
        mixup: float in [0, 1]. MixUp's ``alpha`` (``keras.layers.MixUp``; 0.2 is Keras'
            default); 0 is off. Defaults to 0.
        cutmix: float in [0, 1]. CutMix's ``factor`` (``keras.layers.CutMix``; 1.0 is
            Keras' default); 0 is off. Not with ``mixup``. Defaults to 0.
        soup: int. Average the weights of up to that many best epochs (by validation loss)
            greedily; 0 (or 1) is off. Needs validation data. Defaults to 0.

    Raises:
        InvalidArgumentError: a value is out of range, or MixUp and CutMix are both on.

    Example:
        >>> import transferkit as tk
        >>> tk.Regularization(label_smoothing=0.1, ema=0.99).active
        True
    """

    label_smoothing: float = 0.0
    ema: float | None = None
    mixup: float = 0.0
    cutmix: float = 0.0
    soup: int = 0

    def __post_init__(self) -> None:
        # Frozen: each checked value is stored back through object.__setattr__.
        checked = {
            "label_smoothing": _validation.fraction(
                "label_smoothing", self.label_smoothing, low_inclusive=True
            ),
            "ema": None if self.ema is None else _validation.fraction("ema", self.ema),
            "mixup": _validation.fraction(
                "mixup", self.mixup, low_inclusive=True, high_inclusive=True
            ),
            "cutmix": _validation.fraction(
                "cutmix", self.cutmix, low_inclusive=True, high_inclusive=True
            ),
            "soup": _validation.non_negative_int("soup", self.soup),
        }
        if checked["mixup"] and checked["cutmix"]:
            msg = (
                "Pass mixup or cutmix, not both: each batch is mixed one way. "
                f"Received: mixup={self.mixup!r}, cutmix={self.cutmix!r}"
            )
            raise InvalidArgumentError(msg)
        for name, value in checked.items():
            object.__setattr__(self, name, value)

    @classmethod
    def check(cls, value: object) -> Regularization:
        """``value`` if it is a :class:`Regularization`; None gives the default (all off)."""
        if value is None:
            return cls()
        if not isinstance(value, Regularization):
            msg = (
                "regularization must be a transferkit.Regularization or None. "
                f"Received: regularization={value!r}"
            )
            raise InvalidArgumentError(msg)
        return value

    @property
    def active(self) -> bool:
        """Whether any regularizer is on."""
        return self != Regularization()

    @property
    def soft_targets(self) -> bool:
        """Whether training batches carry mixed targets (MixUp or CutMix)."""
        return bool(self.mixup or self.cutmix)

    @property
    def optimizer_options(self) -> dict[str, Any]:
        """Keyword arguments for the stage's default Keras optimizer (its EMA)."""
        return {} if self.ema is None else {"use_ema": True, "ema_momentum": self.ema}

    def describe(self) -> dict[str, Any] | None:
        """A JSON-ready record (for checkpoints): None when every regularizer is off."""
        return None if not self.active else dict(vars(self))


def uses_ema(optimizer: keras.optimizers.Optimizer) -> bool:
    """Whether the optimizer (or one of a ``MultiOptimizer``'s) keeps a weight EMA."""
    inner = getattr(optimizer, "optimizers", None)
    if inner is not None:
        return any(uses_ema(part) for part in inner)
    return bool(getattr(optimizer, "use_ema", False))


# ---------------------------------------------------------------------- MixUp and CutMix


def _label_kind(config: ClassifierConfig) -> str:
    if config.multi_label:
        return "multi_label"
    return "binary" if config.num_classes == 2 else "sparse"


def mix_batches(
    dataset: tf.data.Dataset,
    regularization: Regularization,
    config: ClassifierConfig,
    *,
    features: bool = False,
) -> tf.data.Dataset:
    """Maps MixUp or CutMix over training batches of ``(images, labels[, sample_weights])``.

    Labels become float rows mixed as the images are: one-hot rows for a softmax head, a
    column of 0/1 for a binary head, multi-hot rows for multi-label. Sample weights stay
    with their batch position.

    Args:
        dataset: the training batches (never validation: they stay as they are).
        regularization: MixUp's alpha or CutMix's factor.
        config: the classifier's settings (its classes and kind of labels).
        features: whether the batches hold pooled feature vectors ``(batch, channels)``
            (cached features; MixUp only) rather than images.

    Returns:
        The mapped dataset, or ``dataset`` itself when neither is on.
    """
    if not regularization.soft_targets:
        return dataset
    if features and regularization.cutmix:
        msg = "CutMix cuts patches out of images; cached feature vectors have none."
        raise InvalidArgumentError(msg)
    layer: keras.layers.Layer = (
        keras.layers.MixUp(alpha=regularization.mixup)
        if regularization.mixup
        else keras.layers.CutMix(factor=regularization.cutmix)
    )
    kind, units = _label_kind(config), config.num_classes

    def mix(images: tf.Tensor, labels: tf.Tensor, *rest: tf.Tensor) -> tuple[tf.Tensor, ...]:
        if kind == "sparse":
            dense = tf.one_hot(tf.cast(tf.reshape(labels, [-1]), tf.int32), units)
        else:
            dense = tf.reshape(tf.cast(labels, tf.float32), [tf.shape(labels)[0], -1])
        # A feature vector is mixed as a 1x1 image with that many channels.
        inputs = tf.reshape(images, [-1, 1, 1, images.shape[-1]]) if features else images
        mixed = layer({"images": inputs, "labels": dense})
        out = tf.reshape(mixed["images"], tf.shape(images)) if features else mixed["images"]
        return (out, mixed["labels"], *rest)

    return dataset.map(mix, num_parallel_calls=tf.data.AUTOTUNE)


# ---------------------------------------------------------------------- EMA


class EmaWeights(keras.callbacks.Callback):
    """Holds the optimizer's EMA weights in the model wherever the model is read mid-stage.

    For validation (``on_test_begin`` to ``on_test_end``) and from each epoch's end to the
    next epoch's start, the model holds the EMA weights
    (``optimizer.finalize_variable_values``); training steps run on the raw weights, put
    back in between. Put it first in the callback list, so that the others (early stopping,
    checkpoints, the soup) see the EMA weights at an epoch's end. At the end of ``fit``,
    Keras itself writes the EMA weights into the model.

    Args:
        optimizer: the stage's optimizer, built with ``use_ema=True``.
    """

    def __init__(self, optimizer: keras.optimizers.Optimizer) -> None:
        super().__init__()
        self._optimizer = optimizer
        self._raw: list[np.ndarray] | None = None

    def _average_in(self) -> None:
        if self._raw is None and self._optimizer.built:
            variables = self.model.trainable_variables
            self._raw = [v.numpy() for v in variables]
            self._optimizer.finalize_variable_values(variables)
            # A copy: on JAX the variable would share the average's buffer, which the next
            # jitted step donates.
            for variable in variables:
                variable.assign(np.array(variable.numpy()))

    def _raw_back(self) -> None:
        if self._raw is not None:
            for variable, value in zip(self.model.trainable_variables, self._raw, strict=True):
                variable.assign(value)
            self._raw = None

    def on_test_begin(self, logs: dict[str, Any] | None = None) -> None:
        """Validates the EMA weights."""
        self._average_in()

    def on_test_end(self, logs: dict[str, Any] | None = None) -> None:
        """Puts the raw weights back for training."""
        self._raw_back()

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        """Shows the EMA weights to the callbacks after this one."""
        self._average_in()

    def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        """Puts the raw weights back for the epoch's training steps."""
        self._raw_back()

    def on_train_end(self, logs: dict[str, Any] | None = None) -> None:
        """Forgets the raw weights: the model keeps the EMA weights."""
        self._raw = None


# ---------------------------------------------------------------------- greedy soup


@dataclass
class SoupResult:
    """What the greedy soup made: the epochs averaged and the validation loss of the average."""

    epochs: list[int]
    loss: float


@dataclass
class _Ingredient:
    loss: float
    epoch: int
    weights: list[np.ndarray] = field(repr=False)


class EpochSoup(keras.callbacks.Callback):
    """Keeps the ``size`` best epochs' weights; averages them greedily when training ends.

    Place it after early stopping (whose best weights it replaces) and before a checkpoint
    (which then saves the soup as the run's final weights).

    Args:
        size: how many of the best epochs to keep (by ``val_loss``).
        evaluate: gives the validation loss of the model's current weights.
        skip: tells, at the end, to leave the weights alone (training diverged).
    """

    def __init__(
        self, size: int, evaluate: Callable[[], float], skip: Callable[[], bool] = lambda: False
    ) -> None:
        super().__init__()
        self.size, self._evaluate, self._skip = size, evaluate, skip
        self._kept: list[_Ingredient] = []
        self.result: SoupResult | None = None

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        """Keeps this epoch's weights if its validation loss is among the best ``size``."""
        value = (logs or {}).get("val_loss")
        if value is None or not math.isfinite(float(value)):
            return
        weights = [v.numpy() for v in self.model.trainable_variables]
        self._kept.append(_Ingredient(float(value), epoch, weights))
        self._kept = sorted(self._kept, key=lambda item: item.loss)[: self.size]

    def on_train_end(self, logs: dict[str, Any] | None = None) -> None:
        """Makes the greedy soup and leaves it in the model."""
        if self._kept and not self._skip():
            self.result = greedy_soup(self.model.trainable_variables, self._kept, self._evaluate)
        self._kept = []


def greedy_soup(
    variables: list[Any], ranked: list[_Ingredient], evaluate: Callable[[], float]
) -> SoupResult:
    """Averages ingredients best-first, keeping each only if the validation loss holds.

    Args:
        variables: the variables the ingredients' weights belong to, in order.
        ranked: the ingredients, best (lowest validation loss) first.
        evaluate: the validation loss of the variables' current values.

    Returns:
        The epochs in the soup and its validation loss; the variables hold the soup.
    """

    def assign(chosen: list[_Ingredient]) -> None:
        for index, variable in enumerate(variables):
            variable.assign(np.mean([item.weights[index] for item in chosen], axis=0))

    chosen, best = [ranked[0]], ranked[0].loss
    for candidate in ranked[1:]:
        assign([*chosen, candidate])
        loss = evaluate()
        if math.isfinite(loss) and loss <= best:
            chosen.append(candidate)
            best = loss
    assign(chosen)
    return SoupResult([item.epoch for item in chosen], best)
