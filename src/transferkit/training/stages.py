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
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import keras
import numpy as np
import tensorflow as tf

from transferkit.data import from_directory
from transferkit.data import inputs as _inputs
from transferkit.errors import ClassNamesMismatchError, DataError, InvalidArgumentError
from transferkit.history import Stage, TrainingHistory
from transferkit.inference import thresholds as _multi_label
from transferkit.model import class_weights as _class_weights
from transferkit.training import checkpoints as _training
from transferkit.training import discriminative, schedules
from transferkit.training import features as _features
from transferkit.training.options import CacheOptions, JitCompile, OptimizerFactory, StageOptions

if TYPE_CHECKING:
    from transferkit.classifier import TransferClassifier

__all__ = [
    "compile_model",
    "labeled_data",
    "loss",
    "run",
    "training_data",
]


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
    training = training_data(clf, data, options.batch_size)
    train = training.in_order()  # one pass; fit gets every epoch in its order below
    validation = None
    if validation_data is not None:
        validation = labeled_data(clf, validation_data, options.batch_size, name="validation_data")
    # A dict of weights is checked now; "balanced" needs the labels, read once below.
    weights = _resolve_class_weights(clf, options.class_weight, None)
    optimizer = _optimizer(clf, options, default_optimizer, default_rate, train)
    safe = _safe_run(clf, stage, optimizer, validation, options, cache)
    if safe.run is not None and safe.run.finished:
        safe.restore_random_state(clf.model)  # as the finished run left it, for what follows
        return clf.history
    start = clf.history.next_epoch  # after the epochs a resumed run already trained
    epochs = options.epochs - safe.completed
    callbacks = [*options.callbacks, *safe.callbacks]
    # A file damaged mid-way stops the run with a DataError naming it (checkpoints stay).
    with _inputs.naming_undecodable_files(train, validation):
        if cache is None or not cache.enabled:
            if options.class_weight == "balanced":
                weights = _resolve_class_weights(clf, "balanced", _dataset_labels(train))
            # compile() again at every stage: a change of `trainable` only counts after it.
            compile_model(clf, optimizer, jit_compile=options.jit_compile, class_weights=weights)
            described = _record_class_weights(clf, safe, weights)
            epoch_data, steps = training.epochs(
                seed=safe.shuffle_seed, first_epoch=start, epochs=epochs
            )
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
                    train,
                    validation,
                    views=min(cache.augmented_views, options.epochs) if augment else 1,
                    augment=augment,
                    memory_limit=cache.memory_limit,
                    jit_compile=options.jit_compile,
                ) as cached,
            ):
                if options.class_weight == "balanced":  # the cached labels: no second pass
                    weights = _resolve_class_weights(clf, "balanced", cached.train.targets[0])
                # Same optimizer object as the full model's, so a callback that changes
                # callback.model.optimizer (ReduceLROnPlateau) changes the head's.
                for model in (clf.model, cached.head):
                    compile_model(
                        clf,
                        optimizer,
                        model=model,
                        jit_compile=options.jit_compile,
                        class_weights=weights,
                    )
                described = _record_class_weights(clf, safe, weights)
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
    clf.history.append(
        stage, *safe.kept(keras_history.epoch, keras_history.history), class_weights=described
    )
    safe.raise_if_diverged()
    return clf.history


def compile_model(
    clf: TransferClassifier,
    optimizer: keras.optimizers.Optimizer | None = None,
    *,
    model: keras.Model | None = None,
    jit_compile: JitCompile = "auto",
    class_weights: _class_weights.ClassWeights | None = None,
) -> None:
    """Compiles ``model`` (the classifier's by default) with the classifier's loss and metrics.

    The loss is cross-entropy on the logits (sparse, binary, or per class for multi-label),
    weighted by ``class_weights`` when given.
    """
    with _scope(clf):
        if optimizer is None:
            optimizer = keras.optimizers.Adam(clf._head_learning_rate)
        if clf.multi_label:
            metrics = _multi_label.metrics()
        elif clf.is_binary:
            metrics = [keras.metrics.BinaryAccuracy(threshold=0.0, name="accuracy")]
        else:
            metrics = [keras.metrics.SparseCategoricalAccuracy(name="accuracy")]
        (model or clf.model).compile(
            optimizer=optimizer,
            loss=loss(clf, class_weights),
            metrics=metrics,
            jit_compile=jit_compile,
        )


def loss(
    clf: TransferClassifier, class_weights: _class_weights.ClassWeights | None = None
) -> keras.losses.Loss:
    """The classifier's training loss: cross-entropy on the logits, optionally class-weighted.

    Sparse categorical for one logit per class, binary for the one logit of two classes, and
    per class (sigmoid) for multi-label classifiers.
    """
    kind: _class_weights.Kind = (
        "multi_label" if clf.multi_label else "binary" if clf.is_binary else "sparse"
    )
    return _class_weights.make_loss(kind, class_weights)


def labeled_data(
    clf: TransferClassifier,
    data: _inputs.LabeledData,
    batch_size: int,
    *,
    shuffle: bool = False,
    name: str,
) -> tf.data.Dataset:
    """Any accepted kind of labeled data as a dataset of ``(images, labels)`` batches.

    ``shuffle`` reshuffles arrays every iteration, in no reproducible order; training
    stages use :func:`training_data` instead.
    """
    if isinstance(data, (str, os.PathLike)):
        data = _from_folder(clf, data, batch_size, name)
    _check_class_names(clf, getattr(data, "class_names", None), name)
    return _inputs.as_labeled_dataset(
        data,
        image_size=clf.image_size,
        num_classes=clf.num_classes,
        batch_size=batch_size,
        shuffle=shuffle,
        name=name,
        multi_label=clf.multi_label,
    )


def training_data(
    clf: TransferClassifier, data: _inputs.LabeledData, batch_size: int
) -> _inputs.TrainingData:
    """Training data: arrays reshuffled every epoch, datasets (and folders) as they come."""
    if isinstance(data, (str, os.PathLike)):
        data = _from_folder(clf, data, batch_size, "data")
    _check_class_names(clf, getattr(data, "class_names", None), "data")
    return _inputs.as_training_data(
        data,
        image_size=clf.image_size,
        num_classes=clf.num_classes,
        batch_size=batch_size,
        multi_label=clf.multi_label,
    )


# ---------------------------------------------------------------------- helpers


def _resolve_class_weights(
    clf: TransferClassifier, class_weight: _class_weights.ClassWeight, labels: np.ndarray | None
) -> _class_weights.ClassWeights | None:
    if class_weight == "balanced" and labels is None:
        return None  # resolved once the labels are read
    counts = None
    if labels is not None:
        counts = _class_weights.label_counts(labels, clf.num_classes, multi_label=clf.multi_label)
    return _class_weights.resolve(
        class_weight,
        class_names=clf.class_names,
        num_classes=clf.num_classes,
        multi_label=clf.multi_label,
        counts=counts,
    )


def _record_class_weights(
    clf: TransferClassifier,
    safe: _training.SafeRun,
    weights: _class_weights.ClassWeights | None,
) -> dict[str, Any] | None:
    # What the history records for this run's epochs; the checkpoint writes it too.
    described = None if weights is None else weights.describe(clf.class_names)
    if safe.checkpoint is not None:
        safe.checkpoint.class_weights = described
    return described


def _dataset_labels(dataset: tf.data.Dataset) -> np.ndarray:
    # One pass over the data, for class_weight="balanced" without cached features.
    return np.concatenate([np.asarray(batch[1]) for batch in dataset])


def _scope(clf: TransferClassifier) -> contextlib.AbstractContextManager[Any]:
    return clf.strategy.scope() if clf.strategy is not None else contextlib.nullcontext()


def _optimizer(
    clf: TransferClassifier,
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
            return default(schedules.make_schedule(options.schedule, peak, total_steps))

        # Its variables (the step counter, moments) must live under the model's strategy.
        with _scope(clf):
            if not options.discriminative and not isinstance(rate, tuple):
                return make(rate)
            # One optimizer per block of the unfrozen backbone (fine-tuning only).
            layout = clf.spec.layout_of(clf.backbone)
            groups = discriminative.trainable_groups(
                clf.backbone, clf.unfrozen_from or 0, layout=layout
            )
            rates = discriminative.group_learning_rates(
                len(groups) + 1, rate, layer_decay=options.layer_decay
            )
            return discriminative.discriminative_optimizer(groups, rates, make)
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
        "schedule": options.schedule,
        "layer_decay": options.layer_decay,
        **{f"classifier.{key}": value for key, value in clf.config.to_dict().items()},
        "unfrozen_from": clf.unfrozen_from,
        "optimizer": type(optimizer).__name__,
        **_optimizer_settings(optimizer),
        "cache_features": None if cache is None else cache.enabled,
        "augmented_views": None if cache is None else cache.augmented_views,
        "class_weight": _describe(options.class_weight),
    }
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
