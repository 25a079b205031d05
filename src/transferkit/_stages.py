"""The stage runner shared by ``fit_head`` and ``fine_tune``: one training call, made safe.

Every stage does the same things in the same order: validate its options before any work,
turn the data into datasets, pick the optimizer, open the checkpoint run (restoring what it
saved), compile (a change of ``trainable`` only counts after ``compile``), train on the full
model or on cached features, record the history and raise if training diverged.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import keras
import tensorflow as tf

from transferkit import _features, _inputs, _training, _validation
from transferkit.data import from_directory
from transferkit.errors import ClassNamesMismatchError, DataError, InvalidArgumentError
from transferkit.history import Stage, TrainingHistory

if TYPE_CHECKING:
    from transferkit.classifier import TransferClassifier

__all__ = [
    "CacheOptions",
    "JitCompile",
    "StageOptions",
    "Verbose",
    "compile_model",
    "labeled_data",
    "run",
    "training_data",
]

Verbose = Literal["auto"] | int
#: XLA compilation: True, False, or ``"auto"`` (Keras' choice: on GPUs only).
JitCompile = bool | Literal["auto"]
OptimizerFactory = Callable[[float], keras.optimizers.Optimizer]


@dataclass(frozen=True)
class StageOptions:
    """The options every training stage takes, validated.

    Attributes:
        epochs: epochs to train.
        batch_size: the batch size for arrays and folders.
        learning_rate: the default optimizer's rate, or None for the stage's default.
        optimizer: a user's optimizer, or None for the stage's default.
        callbacks: the user's Keras callbacks.
        verbose: Keras' progress output.
        jit_compile: XLA compilation.
        early_stopping: a patience in epochs, or None.
        checkpoint_dir: the checkpoint folder, or None.
    """

    epochs: int
    batch_size: int
    learning_rate: float | None
    optimizer: keras.optimizers.Optimizer | None
    callbacks: tuple[keras.callbacks.Callback, ...]
    verbose: Verbose
    jit_compile: JitCompile
    early_stopping: int | None
    checkpoint_dir: str | os.PathLike[str] | None

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
    ) -> StageOptions:
        """Checks every option; raises on the first invalid one, before any work."""
        rate = None
        if learning_rate is not None:
            rate = _validation.positive_float("learning_rate", learning_rate)
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
        )


@dataclass(frozen=True)
class CacheOptions:
    """How the head stage caches backbone features (see :mod:`transferkit._features`).

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


def run(
    clf: TransferClassifier,
    stage: Stage,
    data: _inputs.LabeledData,
    validation_data: _inputs.LabeledData | None,
    options: StageOptions,
    *,
    default_optimizer: OptimizerFactory,
    default_rate: float,
    cache: CacheOptions | None = None,
) -> TrainingHistory:
    """Runs one training stage on ``clf`` and returns its updated history.

    Args:
        clf: the classifier, already frozen or unfrozen as the stage needs.
        stage: ``"head"`` or ``"fine_tune"``.
        data: the training data.
        validation_data: the validation data, or None.
        options: the stage's validated options.
        default_optimizer: makes the optimizer when the user gave none.
        default_rate: its learning rate when the user gave none.
        cache: feature caching for the head stage; None trains the full model.
    """
    _training.check_strategy_can_train(clf.strategy)
    train = training_data(clf, data, options.batch_size)
    validation = None
    if validation_data is not None:
        validation = labeled_data(clf, validation_data, options.batch_size, name="validation_data")
    optimizer = _optimizer(clf, options, default_optimizer, default_rate)
    safe = _safe_run(clf, stage, optimizer, validation, options, cache)
    if safe.run is not None and safe.run.finished:
        safe.restore_random_state(clf.model)  # as the finished run left it, for what follows
        return clf.history
    # compile() again at every stage: a change of `trainable` only counts after it.
    compile_model(clf, optimizer, jit_compile=options.jit_compile)
    start = clf.history.next_epoch  # after the epochs a resumed run already trained
    epochs = options.epochs - safe.completed
    callbacks = [*options.callbacks, *safe.callbacks]
    if cache is None or not cache.enabled:
        epoch_data, steps = train.epochs(seed=safe.shuffle_seed, first_epoch=start, epochs=epochs)
        safe.restore_random_state(clf.model)
        keras_history = clf.model.fit(
            epoch_data,
            validation_data=validation,
            initial_epoch=start,
            epochs=start + epochs,
            steps_per_epoch=steps,
            shuffle=False,  # arrays are shuffled in the pipeline; datasets keep their order
            callbacks=callbacks,
            verbose=options.verbose,
        )
    else:
        augment = any(layer.name == "augmentation" for layer in clf.model.layers)
        with (
            _scope(clf),
            _features.cache_features(
                clf.model,
                clf.backbone,
                train.in_order(),
                validation,
                views=min(cache.augmented_views, options.epochs) if augment else 1,
                augment=augment,
                memory_limit=cache.memory_limit,
                jit_compile=options.jit_compile,
            ) as cached,
        ):
            # Same optimizer object as the full model's, so a callback that changes
            # callback.model.optimizer (ReduceLROnPlateau) changes the head's.
            compile_model(clf, optimizer, model=cached.head, jit_compile=options.jit_compile)
            # Only now: caching augmented the images from the state the run started with.
            safe.restore_random_state(clf.model)
            keras_history = cached.fit(
                clf.model,
                initial_epoch=start,
                epochs=epochs,
                callbacks=callbacks,
                verbose=options.verbose,
                seed=safe.shuffle_seed,
            )
    clf.history.append(stage, *safe.kept(keras_history.epoch, keras_history.history))
    safe.raise_if_diverged()
    return clf.history


def compile_model(
    clf: TransferClassifier,
    optimizer: keras.optimizers.Optimizer | None = None,
    *,
    model: keras.Model | None = None,
    jit_compile: JitCompile = "auto",
) -> None:
    """Compiles ``model`` (the classifier's by default) with the classifier's loss and metric."""
    with _scope(clf):
        if optimizer is None:
            optimizer = keras.optimizers.Adam(clf._head_learning_rate)
        if clf.is_binary:
            loss: keras.losses.Loss = keras.losses.BinaryCrossentropy(from_logits=True)
            accuracy: keras.metrics.Metric = keras.metrics.BinaryAccuracy(
                threshold=0.0, name="accuracy"
            )
        else:
            loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
            accuracy = keras.metrics.SparseCategoricalAccuracy(name="accuracy")
        (model or clf.model).compile(
            optimizer=optimizer, loss=loss, metrics=[accuracy], jit_compile=jit_compile
        )


def labeled_data(
    clf: TransferClassifier, data: _inputs.LabeledData, batch_size: int, *, name: str
) -> tf.data.Dataset:
    """Any accepted kind of labeled data as a dataset of ``(images, labels)`` batches."""
    if isinstance(data, (str, os.PathLike)):
        data = _from_folder(clf, data, batch_size, name)
    _check_class_names(clf, getattr(data, "class_names", None), name)
    return _inputs.as_labeled_dataset(
        data,
        image_size=clf.image_size,
        num_classes=clf.num_classes,
        batch_size=batch_size,
        name=name,
    )


def training_data(
    clf: TransferClassifier, data: _inputs.LabeledData, batch_size: int
) -> _inputs.TrainingData:
    """Training data: arrays reshuffled every epoch, datasets (and folders) as they come."""
    if isinstance(data, (str, os.PathLike)):
        data = _from_folder(clf, data, batch_size, "data")
    _check_class_names(clf, getattr(data, "class_names", None), "data")
    return _inputs.as_training_data(
        data, image_size=clf.image_size, num_classes=clf.num_classes, batch_size=batch_size
    )


# ---------------------------------------------------------------------- helpers


def _scope(clf: TransferClassifier) -> contextlib.AbstractContextManager[Any]:
    return clf.strategy.scope() if clf.strategy is not None else contextlib.nullcontext()


def _optimizer(
    clf: TransferClassifier,
    options: StageOptions,
    default: OptimizerFactory,
    default_rate: float,
) -> keras.optimizers.Optimizer:
    optimizer = options.optimizer
    if optimizer is None:
        # Its variables (the step counter, moments) must live under the model's strategy.
        with _scope(clf):
            return default(options.learning_rate or default_rate)
    # TF records on each variable the strategy it was created under; there is no public getter.
    created_under = getattr(optimizer.iterations.value, "_distribute_strategy", None)
    if clf.strategy is not None and created_under is not clf.strategy:
        msg = (
            "The optimizer was created outside the classifier's strategy scope, so its "
            "variables cannot be updated by that strategy. Create it inside the scope: "
            "`with clf.strategy.scope(): optimizer = keras.optimizers.Adam(...)`. "
            f"Received: optimizer={optimizer!r}"
        )
        raise InvalidArgumentError(msg)
    return optimizer


def _checkpoint_settings(
    clf: TransferClassifier,
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
        **{f"classifier.{key}": value for key, value in clf.config.to_dict().items()},
        "unfrozen_from": clf.unfrozen_from,
        "optimizer": type(optimizer).__name__,
        # Every hyperparameter (learning rate or schedule, moments, clipping), one entry each
        # so that a refusal names the one that changed; the name is a per-process counter.
        **{
            f"optimizer.{key}": value
            for key, value in optimizer.get_config().items()
            if key != "name"
        },
        "cache_features": None if cache is None else cache.enabled,
        "augmented_views": None if cache is None else cache.augmented_views,
    }
    # As JSON gives it back (tuples as lists, numbers as JSON numbers), to compare with a save.
    loaded: dict[str, Any] = json.loads(json.dumps(settings, default=str))
    return loaded


def _safe_run(
    clf: TransferClassifier,
    stage: Stage,
    optimizer: keras.optimizers.Optimizer,
    validation: tf.data.Dataset | None,
    options: StageOptions,
    cache: CacheOptions | None,
) -> _training.SafeRun:
    # With a checkpoint that has saved epochs, the model, optimizer and history are put
    # back as they were saved before anything trains.
    run = None
    if options.checkpoint_dir is not None:
        run = _training.open_run(
            options.checkpoint_dir,
            stage=stage,
            history=clf.history,
            settings=_checkpoint_settings(clf, stage, optimizer, options, cache),
        )
    safe = _training.SafeRun(
        stage,
        early_stopping=options.early_stopping,
        monitor="loss" if validation is None else "val_loss",
        run=run,
    )
    if run is not None and run.completed:
        compile_model(clf, optimizer)
        if not optimizer.built:  # its saved state loads only into built variables
            with _scope(clf):
                optimizer.build(clf.model.trainable_variables)
        safe.restore_checkpoint(clf.model)
        clf.history = run.history
    return safe


def _from_folder(
    clf: TransferClassifier, path: str | os.PathLike[str], batch_size: int, name: str
) -> tf.data.Dataset:
    folder = from_directory(
        path, clf.image_size, batch_size, seed=None, class_names=clf.class_names
    )
    if folder.validation is not None or folder.test is not None:
        msg = (
            f"{name} is a folder of train/ and validation/ (or test/) folders; pass one "
            f"of them, such as {os.path.join(path, 'train')!r}, or load them all with "
            f"transferkit.data.from_directory(). Received: {name}={os.fspath(path)!r}"
        )
        raise DataError(msg)
    return folder.train


def _check_class_names(clf: TransferClassifier, found: Sequence[str] | None, name: str) -> None:
    # Datasets made from folders carry their class names (Keras' do too): labels are
    # indices into them, so they must be the classifier's, in the same order.
    if found is None:
        return
    names = [str(n) for n in found]
    if clf.class_names is None and len(names) == clf.num_classes:
        clf.config = clf.config.with_class_names(names)
    elif names != clf.class_names:
        msg = (
            f"{name} has the classes {names} but this classifier has "
            f"{clf.class_names or f'{clf.num_classes} classes'}; labels are indices into "
            "the class names, so they must be the same names in the same order (load "
            "folders with class_names=clf.class_names). "
            f"Received: {name} with class_names={names}"
        )
        raise ClassNamesMismatchError(msg)
