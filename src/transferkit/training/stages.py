"""The stage runner shared by ``fit_head`` and ``fine_tune``: one training call, made safe.

Every stage does the same things in the same order: pick the optimizer, open the checkpoint
run (restoring what it saved), compile (a change of ``trainable`` only counts after
``compile``), train on the full model or on cached features, and report the history and
whether training diverged. The classifier resolves the data and passes what a stage needs
as a :class:`Target`; it keeps the :class:`Outcome`.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from transferkit import _backend
from transferkit.backbones.spec import Backbone
from transferkit.data import inputs as _inputs
from transferkit.data.image_files import undecodable_files_named
from transferkit.errors import InvalidArgumentError, TrainingDivergedError, TransferkitWarning
from transferkit.history import Stage, TrainingHistory
from transferkit.model import class_weights as _class_weights
from transferkit.model.compile import compile_model
from transferkit.model.config import ClassifierConfig
from transferkit.training import checkpoints as _checkpoints
from transferkit.training import discriminative, schedules
from transferkit.training import features as _features
from transferkit.training import regularization as _regularization
from transferkit.training.options import CacheOptions, OptimizerFactory, StageOptions

__all__ = ["Outcome", "Target", "run"]


@dataclass(frozen=True)
class Target:
    """What a stage trains: the classifier's model and the facts about it, read-only.

    Attributes:
        model: the classifier's Keras model.
        backbone: the backbone nested in it.
        spec: the backbone's spec (its blocks, for discriminative rates).
        config: the classifier's settings (classes, labels: the loss and metrics).
        strategy: the ``tf.distribute.Strategy`` the model lives under, or None.
        unfrozen_from: the first trainable block, or None while the backbone is frozen.
    """

    model: keras.Model
    backbone: keras.Model
    spec: Backbone
    config: ClassifierConfig
    strategy: Any
    unfrozen_from: int | None


@dataclass(frozen=True)
class Outcome:
    """What a stage leaves: the history to keep, and the error to raise if it diverged."""

    history: TrainingHistory
    diverged: TrainingDivergedError | None


def run(
    target: Target,
    stage: Stage,
    train: _inputs.TrainingData,
    validation: tf.data.Dataset | None,
    options: StageOptions,
    *,
    history: TrainingHistory,
    default_optimizer: OptimizerFactory,
    default_rate: float,
    cache: CacheOptions | None = None,
) -> Outcome:
    """Runs one training stage and returns the history to keep.

    Args:
        target: the model to train and the facts about it.
        stage: ``"head"`` or ``"fine_tune"``.
        train: the resolved training data.
        validation: the resolved validation batches, or None.
        options: the stage's validated options.
        history: the classifier's history so far (epochs are appended to it).
        default_optimizer: makes the optimizer when the user gave none.
        default_rate: its learning rate when the user gave none.
        cache: feature caching for the head stage; None trains the full model.
    """
    _backend.check_strategy_can_train(target.strategy)
    cache = _check_regularization(options, validation, cache)
    if options.class_weight != "balanced":  # a dict is checked before any work
        _class_weights_for(target.config, options.class_weight, None)
    batches = train.in_order()  # one pass, for step counts, caching and file names
    optimizer = _optimizer(target, options, default_optimizer, default_rate, batches)
    safe, history = _open_run(target, stage, optimizer, validation, options, cache, history)
    if safe.run is not None and safe.run.finished:
        safe.restore_random_state(target.model)  # as the finished run left it, for what follows
        return Outcome(history, None)
    fit = _Fit(target, options, safe, optimizer, history.next_epoch, validation)
    # A file damaged mid-way stops the run with a DataError naming it (checkpoints stay).
    with undecodable_files_named(batches, validation), _backend.local_batches():
        if cache is None or not cache.enabled:
            keras_history, weights = fit.full(train)
        else:
            keras_history, weights = fit.cached(batches, cache)
    history.append(
        stage,
        *safe.kept(keras_history.epoch, keras_history.history),
        class_weights=fit.record(weights),
    )
    return Outcome(history, safe.divergence())


class _Fit:
    """The two ways of training a stage, which share everything but the data they fit on."""

    def __init__(
        self,
        target: Target,
        options: StageOptions,
        safe: _checkpoints.SafeRun,
        optimizer: keras.optimizers.Optimizer,
        start: int,
        validation: tf.data.Dataset | None,
    ) -> None:
        self.target, self.options, self.safe, self.optimizer = target, options, safe, optimizer
        self.start = start  # after the epochs a resumed run already trained
        self.epochs = options.epochs - safe.completed
        self.validation = validation
        self.regularization = options.regularization

    def callbacks(self, evaluate: Callable[[], float]) -> list[keras.callbacks.Callback]:
        """The user's and the safe run's callbacks, with the regularizers' in their places.

        The EMA swap goes first (every other callback sees the averaged weights at an
        epoch's end); the soup after early stopping (it replaces the best epoch's weights)
        and before the checkpoint (which then saves the soup).
        """
        safe, size = self.safe, self.regularization.soup
        first = [_regularization.EmaWeights(self.optimizer)] if self._ema else []
        guards = [callback for callback in safe.callbacks if callback is not safe.checkpoint]
        soup = [_regularization.EpochSoup(size, evaluate, lambda: safe.guard.diverged)]
        last = [] if safe.checkpoint is None else [safe.checkpoint]
        return [*first, *self.options.callbacks, *guards, *(soup if size > 1 else []), *last]

    @property
    def _ema(self) -> bool:
        return _regularization.uses_ema(self.optimizer)

    def full(
        self, train: _inputs.TrainingData
    ) -> tuple[keras.callbacks.History, _class_weights.ClassWeights | None]:
        """Trains the whole model, reading the images every epoch."""
        labels = _labels(train.in_order()) if self.options.class_weight == "balanced" else None
        weights = self._compile([self.target.model], labels)
        epoch_data, steps = train.epochs(
            seed=self.safe.shuffle_seed, first_epoch=self.start, epochs=self.epochs
        )
        epoch_data = _regularization.mix_batches(
            epoch_data, self.regularization, self.target.config
        )
        model, validation = self.target.model, self.validation
        self.safe.restore_random_state(model)
        keras_history = model.fit(
            epoch_data,
            validation_data=self.validation,
            initial_epoch=self.start,
            epochs=self.start + self.epochs,
            steps_per_epoch=steps,
            shuffle=False,  # arrays are shuffled in the pipeline; datasets keep their order
            callbacks=self.callbacks(lambda: _loss(model.evaluate(validation, verbose=0))),
            verbose=self.options.verbose,
        )
        return keras_history, weights

    def cached(
        self, batches: tf.data.Dataset, cache: CacheOptions
    ) -> tuple[keras.callbacks.History, _class_weights.ClassWeights | None]:
        """Trains the head on the backbone's features, computed once up front."""
        target = self.target
        augment = any(layer.name == "augmentation" for layer in target.model.layers)
        with (
            _backend.scope(target.strategy),
            _features.cache_features(
                target.model,
                target.backbone,
                batches,
                self.validation,
                views=min(cache.augmented_views, self.options.epochs) if augment else 1,
                augment=augment,
                memory_limit=cache.memory_limit,
                jit_compile=self.options.jit_compile,
            ) as features,
        ):
            balanced = self.options.class_weight == "balanced"
            # The same optimizer object for both, so a callback that changes
            # callback.model.optimizer (ReduceLROnPlateau) changes the head's.
            weights = self._compile(
                [target.model, features.head], features.train.targets[0] if balanced else None
            )
            # Only now: caching augmented the images from the state the run started with.
            self.safe.restore_random_state(target.model)
            head, cached = features.head, features.validation
            keras_history = features.fit(
                target.model,
                initial_epoch=self.start,
                epochs=self.epochs,
                callbacks=self.callbacks(
                    lambda: _loss(head.evaluate(cached and cached.dataset(), verbose=0))
                ),
                verbose=self.options.verbose,
                seed=self.safe.shuffle_seed,
                transform=lambda batches: _regularization.mix_batches(
                    batches, self.regularization, target.config, features=True
                ),
            )
        return keras_history, weights

    def record(self, weights: _class_weights.ClassWeights | None) -> dict[str, Any] | None:
        """What the history records of the class weights (the checkpoint already has it)."""
        return None if weights is None else weights.describe(self.target.config.class_names)

    def _compile(
        self, models: list[keras.Model], labels: np.ndarray | None
    ) -> _class_weights.ClassWeights | None:
        # compile() again at every stage: a change of `trainable` only counts after it.
        weights = _class_weights_for(self.target.config, self.options.class_weight, labels)
        for model in models:
            compile_model(
                model,
                self.target.config,
                self.optimizer,
                strategy=self.target.strategy,
                jit_compile=self.options.jit_compile,
                class_weights=weights,
                label_smoothing=self.regularization.label_smoothing,
                soft_targets=self.regularization.soft_targets,
            )
        if self.safe.checkpoint is not None:
            self.safe.checkpoint.class_weights = self.record(weights)
        return weights


def _loss(results: Any) -> float:
    # Keras' evaluate gives the loss alone, or the loss first and then the metrics.
    return float(results[0] if isinstance(results, list) else results)


def _check_regularization(
    options: StageOptions, validation: tf.data.Dataset | None, cache: CacheOptions | None
) -> CacheOptions | None:
    """Refuses a soup without validation data; turns caching off for CutMix (with a warning)."""
    regularization = options.regularization
    if regularization.soup > 1 and validation is None:
        msg = (
            "regularization.soup averages the best epochs by their validation loss, so it "
            f"needs validation_data. Received: soup={regularization.soup}, validation_data=None"
        )
        raise InvalidArgumentError(msg)
    if regularization.cutmix and cache is not None and cache.enabled:
        warnings.warn(
            "CutMix mixes patches of images, and cached features have none: the head "
            "stage trains on the full model (as cache_features=False), reading the images "
            "every epoch.",
            TransferkitWarning,
            stacklevel=5,  # the user's fit_head call
        )
        return replace(cache, enabled=False)
    return cache


def _class_weights_for(
    config: ClassifierConfig, class_weight: _class_weights.ClassWeight, labels: np.ndarray | None
) -> _class_weights.ClassWeights | None:
    counts = None
    if labels is not None:  # "balanced" counts the training labels
        counts = _class_weights.label_counts(
            labels, config.num_classes, multi_label=config.multi_label
        )
    return _class_weights.resolve(
        class_weight,
        class_names=config.class_names,
        num_classes=config.num_classes,
        multi_label=config.multi_label,
        counts=counts,
    )


def _labels(dataset: tf.data.Dataset) -> np.ndarray:
    # One pass over the data, for class_weight="balanced" without cached features.
    return np.concatenate([np.asarray(batch[1]) for batch in dataset])


def _optimizer(
    target: Target,
    options: StageOptions,
    default: OptimizerFactory,
    default_rate: float,
    train: tf.data.Dataset,
) -> keras.optimizers.Optimizer:
    optimizer = options.optimizer
    if optimizer is None:
        rate = options.learning_rate or default_rate
        total_steps = 1
        if options.schedule != "constant":  # a schedule spans the call: it needs its length
            total_steps = options.epochs * schedules.steps_per_epoch(train)

        def make(peak: float) -> keras.optimizers.Optimizer:
            return default(
                schedules.make_schedule(options.schedule, peak, total_steps),
                **options.regularization.optimizer_options,
            )

        # Its variables (the step counter, moments) must live under the model's strategy.
        with _backend.scope(target.strategy):
            if not options.discriminative and not isinstance(rate, tuple):
                return make(rate)
            # One optimizer per block of the unfrozen backbone (fine-tuning only).
            groups = discriminative.trainable_groups(
                target.backbone,
                target.unfrozen_from or 0,
                layout=target.spec.layout_of(target.backbone),
            )
            rates = discriminative.group_learning_rates(
                len(groups) + 1, rate, layer_decay=options.layer_decay
            )
            return discriminative.discriminative_optimizer(groups, rates, make)
    # TF records on each variable the strategy it was created under; there is no public getter.
    created_under = getattr(optimizer.iterations.value, "_distribute_strategy", None)
    if target.strategy is not None and created_under is not target.strategy:
        msg = (
            "The optimizer was created outside the classifier's strategy scope, so its "
            "variables cannot be updated by that strategy. Create it inside the scope: "
            "`with clf.strategy.scope(): optimizer = keras.optimizers.Adam(...)`. "
            f"Received: optimizer={optimizer!r}"
        )
        raise InvalidArgumentError(msg)
    return optimizer


def _open_run(
    target: Target,
    stage: Stage,
    optimizer: keras.optimizers.Optimizer,
    validation: tf.data.Dataset | None,
    options: StageOptions,
    cache: CacheOptions | None,
    history: TrainingHistory,
) -> tuple[_checkpoints.SafeRun, TrainingHistory]:
    # With a checkpoint that has saved epochs, the model, optimizer and history are put
    # back as they were saved before anything trains.
    run = None
    if options.checkpoint_dir is not None:
        run = _checkpoints.open_run(
            options.checkpoint_dir,
            stage=stage,
            history=history,
            settings=_checkpoint_settings(target, stage, optimizer, options, cache),
        )
    safe = _checkpoints.SafeRun(
        stage,
        early_stopping=options.early_stopping,
        monitor="loss" if validation is None else "val_loss",
        run=run,
    )
    if run is not None and run.completed:
        compile_model(target.model, target.config, optimizer, strategy=target.strategy)
        if not optimizer.built:  # its saved state loads only into built variables
            with _backend.scope(target.strategy):
                optimizer.build(target.model.trainable_variables)
        safe.restore_checkpoint(target.model)
        history = run.history
    return safe, history


def _checkpoint_settings(
    target: Target,
    stage: Stage,
    optimizer: keras.optimizers.Optimizer,
    options: StageOptions,
    cache: CacheOptions | None,
) -> dict[str, Any]:
    # Everything that shapes the run's result; a resume with any of it changed is refused.
    settings = {
        "stage": stage,
        "epochs": options.epochs,
        "batch_size": options.batch_size,
        "early_stopping": options.early_stopping,
        "schedule": options.schedule,
        "layer_decay": options.layer_decay,
        **{f"classifier.{key}": value for key, value in target.config.to_dict().items()},
        "unfrozen_from": target.unfrozen_from,
        "optimizer": type(optimizer).__name__,
        **_optimizer_settings(optimizer),
        "cache_features": None if cache is None else cache.enabled,
        "augmented_views": None if cache is None else cache.augmented_views,
        "class_weight": _describe(options.class_weight),
        "regularization": options.regularization.describe(),
    }
    # Settings added since 0.1 are left out at their defaults: older runs still resume.
    for key, default in (("classifier.loss", "crossentropy"), ("regularization", None)):
        if settings[key] == default:
            del settings[key]
    # As JSON gives it back (tuples as lists, numbers as JSON numbers), to compare with a save.
    loaded: dict[str, Any] = json.loads(json.dumps(settings, default=str))
    return loaded


def _optimizer_settings(optimizer: keras.optimizers.Optimizer) -> dict[str, Any]:
    # Every hyperparameter (learning rate or schedule, moments, clipping), one entry each so
    # that a refusal names the one that changed; names are per-process counters, left out.
    # Discriminative rates: each block's optimizer, in order (the head's last).
    if isinstance(optimizer, keras.optimizers.MultiOptimizer):
        return {
            f"optimizer.group{index}.{key}": value
            for index, group in enumerate(optimizer.optimizers)
            for key, value in group.get_config().items()
            if key != "name"
        }
    return {
        f"optimizer.{key}": value for key, value in optimizer.get_config().items() if key != "name"
    }


def _describe(class_weight: _class_weights.ClassWeight) -> Any:
    if class_weight is None or isinstance(class_weight, str):
        return class_weight
    return {str(key): float(value) for key, value in class_weight.items()}
