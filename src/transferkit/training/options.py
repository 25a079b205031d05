"""The options of a training stage, checked before any work.

:class:`StageOptions` holds what every stage takes; :class:`CacheOptions` how the head stage
caches backbone features.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal

import keras

from transferkit import _validation
from transferkit.errors import InvalidArgumentError
from transferkit.model import class_weights as _class_weights
from transferkit.training import checkpoints as _training
from transferkit.training import discriminative, schedules
from transferkit.training.regularization import Regularization

__all__ = ["CacheOptions", "JitCompile", "LearningRate", "StageOptions", "Verbose"]

Verbose = Literal["auto"] | int
#: XLA compilation: True, False, or ``"auto"`` (Keras' choice: on GPUs only).
JitCompile = bool | Literal["auto"]
#: Makes a stage's default optimizer from its rate (or schedule) and keyword options.
OptimizerFactory = Callable[..., keras.optimizers.Optimizer]
#: A learning rate, or a ``(low, high)`` pair spread over the backbone's blocks.
LearningRate = float | tuple[float, float]


@dataclass(frozen=True)
class StageOptions:
    """The options every training stage takes, validated.

    Attributes:
        epochs: epochs to train.
        batch_size: the batch size for arrays and folders.
        learning_rate: the default optimizer's rate (the peak of a schedule), a ``(low,
            high)`` pair for discriminative rates, or None for the stage's default.
        optimizer: a user's optimizer, or None for the stage's default.
        schedule: the learning-rate schedule of the default optimizer.
        layer_decay: timm's layer-wise decay of the rates, or None.
        callbacks: the user's Keras callbacks.
        verbose: Keras' progress output.
        jit_compile: XLA compilation.
        early_stopping: a patience in epochs, or None.
        checkpoint_dir: the checkpoint folder, or None.
        class_weight: None, ``"balanced"`` or a dict of class weights (see
            :mod:`transferkit.model.class_weights`).
        regularization: the stage's regularizers (all off by default).
    """

    epochs: int
    batch_size: int
    learning_rate: LearningRate | None
    optimizer: keras.optimizers.Optimizer | None
    callbacks: tuple[keras.callbacks.Callback, ...]
    verbose: Verbose
    jit_compile: JitCompile
    early_stopping: int | None
    checkpoint_dir: str | os.PathLike[str] | None
    schedule: schedules.Schedule = "constant"
    layer_decay: float | None = None
    class_weight: _class_weights.ClassWeight = None
    regularization: Regularization = field(default_factory=Regularization)

    @property
    def discriminative(self) -> bool:
        """Whether the backbone's blocks train at rates of their own."""
        return isinstance(self.learning_rate, tuple) or self.layer_decay is not None

    @classmethod
    def create(
        cls,
        *,
        epochs: object,
        batch_size: object,
        learning_rate: object,
        optimizer: object,
        callbacks: Sequence[keras.callbacks.Callback] | None,
        verbose: Verbose,
        jit_compile: object,
        early_stopping: object,
        checkpoint_dir: str | os.PathLike[str] | None,
        schedule: object = "constant",
        layer_decay: object = None,
        by_block: bool = False,
        class_weight: object = None,
        regularization: object = None,
    ) -> StageOptions:
        """Checks every option; raises on the first invalid one, before any work.

        ``by_block`` allows the options of discriminative rates (fine-tuning only): a
        ``(low, high)`` learning rate and ``layer_decay``.
        """
        rate = _learning_rate(learning_rate, by_block=by_block)
        _validation.choice("schedule", schedule, schedules.SCHEDULES)
        decay = None
        if layer_decay is not None:
            if not by_block:
                msg = (
                    "layer_decay spreads rates over the backbone's blocks, so it is for "
                    f"fine_tune() only. Received: layer_decay={layer_decay!r}"
                )
                raise InvalidArgumentError(msg)
            decay = _validation.fraction("layer_decay", layer_decay, high_inclusive=True)
            if isinstance(rate, tuple):
                msg = (
                    "Pass a (low, high) learning_rate or layer_decay, not both: the pair "
                    "already sets every block's rate. "
                    f"Received: learning_rate={learning_rate!r}, layer_decay={layer_decay!r}"
                )
                raise InvalidArgumentError(msg)
        if optimizer is not None and (schedule != "constant" or decay is not None):
            msg = (
                "schedule and layer_decay configure the default optimizer; with your own "
                "optimizer, give it its schedule instead (learning_rate=a Keras "
                "LearningRateSchedule). "
                f"Received: optimizer={optimizer!r}, schedule={schedule!r}, "
                f"layer_decay={layer_decay!r}"
            )
            raise InvalidArgumentError(msg)
        if optimizer is not None:
            if not isinstance(optimizer, keras.optimizers.Optimizer):
                msg = (
                    "optimizer must be a keras.optimizers.Optimizer. "
                    f"Received: optimizer={optimizer!r}"
                )
                raise InvalidArgumentError(msg)
            if learning_rate is not None:
                msg = (
                    "Pass either optimizer or learning_rate, not both (set the rate on the "
                    f"optimizer). Received: optimizer={optimizer!r}, "
                    f"learning_rate={learning_rate!r}"
                )
                raise InvalidArgumentError(msg)
        regularizers = Regularization.check(regularization)
        if optimizer is not None and regularizers.ema is not None:
            msg = (
                "regularization.ema sets up the default optimizer's weight EMA; with your own "
                "optimizer, create it with use_ema=True (and ema_momentum) instead. "
                f"Received: optimizer={optimizer!r}, regularization={regularization!r}"
            )
            raise InvalidArgumentError(msg)
        _validation.choice("jit_compile", jit_compile, (True, False, "auto"))
        patience = _validation.optional_positive_int(
            "early_stopping",
            early_stopping,
            none_means="train every epoch; for other settings pass a "
            "keras.callbacks.EarlyStopping in callbacks",
        )
        _training.check_checkpoint_dir(checkpoint_dir)
        return cls(
            epochs=_validation.positive_int("epochs", epochs),
            batch_size=_validation.positive_int("batch_size", batch_size),
            learning_rate=rate,
            optimizer=optimizer,
            callbacks=tuple(callbacks or ()),
            verbose=verbose,
            jit_compile=jit_compile,  # type: ignore[arg-type]  # checked above
            early_stopping=patience,
            checkpoint_dir=checkpoint_dir,
            schedule=schedule,  # type: ignore[arg-type]  # checked above
            layer_decay=decay,
            class_weight=_class_weights.check(class_weight),
            regularization=regularizers,
        )


def _learning_rate(value: object, *, by_block: bool) -> LearningRate | None:
    if value is None:
        return None
    if by_block and isinstance(value, (tuple, list)):
        return discriminative.check_rate_pair(value)
    if isinstance(value, (tuple, list)):
        msg = (
            "A (low, high) learning_rate spreads rates over the backbone's blocks, so it is "
            f"for fine_tune() only; pass one rate. Received: learning_rate={value!r}"
        )
        raise InvalidArgumentError(msg)
    return _validation.positive_float("learning_rate", value)


@dataclass(frozen=True)
class CacheOptions:
    """How the head stage caches backbone features (see :mod:`transferkit.training.features`).

    Attributes:
        enabled: train the head on cached features rather than the full model.
        augmented_views: augmented copies of each training image to cache.
        memory_limit: bytes of features held in memory before the rest go to disk.
    """

    enabled: bool
    augmented_views: int
    memory_limit: int

    @classmethod
    def create(
        cls, *, cache_features: object, augmented_views: object, feature_memory_limit: object
    ) -> CacheOptions:
        """Checks the caching options."""
        _validation.choice("cache_features", cache_features, (True, False))
        return cls(
            enabled=bool(cache_features),
            augmented_views=_validation.positive_int("augmented_views", augmented_views),
            memory_limit=_validation.non_negative_int("feature_memory_limit", feature_memory_limit),
        )
