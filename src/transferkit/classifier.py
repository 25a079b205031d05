"""``TransferClassifier``: the two-stage transfer-learning recipe as one object.

Stage one trains a new head on a frozen backbone (:meth:`TransferClassifier.fit_head`); stage
two unfreezes the top of the backbone (:meth:`TransferClassifier.unfreeze`) and fine-tunes it
at a lower learning rate (:meth:`TransferClassifier.fine_tune`). BatchNormalization layers stay
in inference mode throughout (see :mod:`transferkit._freezing` for why that takes more than
``training=False`` on Keras 3).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import tempfile
import warnings
import zipfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Literal, Union

import keras
import numpy as np
import tensorflow as tf

from transferkit import _features, _freezing, _inputs, _training
from transferkit._registry import get_backbone
from transferkit.augmentation import Augmentation, build_augmentation
from transferkit.backbone import Backbone, ImageSize, Weights
from transferkit.data import from_directory
from transferkit.errors import (
    ClassNamesMismatchError,
    DataError,
    InvalidArgumentError,
    NotUnfrozenError,
    TransferkitWarning,
)
from transferkit.export import ExportFormat, Quantization, export_classifier
from transferkit.history import Stage, TrainingHistory

__all__ = ["TransferClassifier", "load_classifier"]

#: The name of the transferkit metadata entry inside a saved ``.keras`` archive.
METADATA_ENTRY = "transferkit.json"
_METADATA_FORMAT = 1
_HEAD_LEARNING_RATE = 1e-4
_FINE_TUNE_RATE_FACTOR = 0.1

Verbose = Union[Literal["auto"], int]
#: XLA compilation: True, False, or ``"auto"`` (Keras' choice: on GPUs only).
JitCompile = bool | Literal["auto"]
#: A mixed-precision policy for the classifier's layers, or None for float32.
DtypePolicy = Literal["mixed_float16", "mixed_bfloat16", None]
_DTYPE_POLICIES = ("mixed_float16", "mixed_bfloat16", None)


class TransferClassifier:
    """An image classifier made of a pretrained backbone and a new head.

    The Keras graph is the reference recipe's: raw pixels → augmentation (training only) →
    the backbone's preprocessing → backbone → global average pooling → dropout → dense
    logits (one logit for two classes, one per class otherwise). The model takes raw pixels
    (0-255) and every preprocessing step is a serializable layer inside it.

    Args:
        backbone: str or Backbone. A registered name (see
            :func:`~transferkit.list_backbones`) or a :class:`~transferkit.Backbone`.
        num_classes: int. The number of classes (at least 2). Implied by ``class_names``.
        class_names: sequence of str. The class names, in label order.
        image_size: int or ``(height, width)``. Defaults to the backbone's default size.
        weights: ``"imagenet"`` (downloaded once by Keras), None (random initialization) or
            the path of a backbone weights file. Defaults to ``"imagenet"``.
        backbone_kwargs: dict. Forwarded to the backbone constructor (``{"alpha": 0.35}``).
        augmentation: ``"default"`` (``RandomFlip("horizontal")`` and
            ``RandomRotation(0.2)``), None for none, or a list of Keras layers.
            Defaults to ``"default"``.
        dropout: float. Dropout rate before the dense layer, in [0, 1). Defaults to 0.2.
        strategy: a ``tf.distribute.Strategy`` to build and train under, or None. Under a
            strategy, ``batch_size`` (and the batches of a dataset) are global batches,
            split across the replicas. See the distributed training guide.
        dtype_policy: ``"mixed_float16"`` (GPUs), ``"mixed_bfloat16"`` (TPUs, recent CPUs)
            or None for float32. The layers compute in the half type and keep float32
            variables; the dense logits stay float32 for a stable loss. Keras' global policy
            is only changed while the model is built. Defaults to None.

    Attributes:
        model: the Keras model (raw pixels in, logits out).
        backbone: the backbone ``keras.Model`` nested in :attr:`model`.
        spec: the :class:`~transferkit.Backbone` it was built from.
        history: a :class:`~transferkit.TrainingHistory` of both stages.
        dtype_policy: the mixed-precision policy the layers were built with, or None.

    Example:
        >>> import numpy as np
        >>> import transferkit as tk
        >>> clf = tk.TransferClassifier("mobilenet_v2", class_names=["cat", "dog"],
        ...                             image_size=96, weights=None)
        >>> clf.predict(np.zeros((1, 96, 96, 3), "uint8")).shape
        (1, 2)
    """

    def __init__(
        self,
        backbone: str | Backbone,
        *,
        num_classes: int | None = None,
        class_names: Sequence[str] | None = None,
        image_size: ImageSize | None = None,
        weights: Weights = "imagenet",
        backbone_kwargs: dict[str, Any] | None = None,
        augmentation: Augmentation = "default",
        dropout: float = 0.2,
        strategy: tf.distribute.Strategy | None = None,
        dtype_policy: DtypePolicy = None,
    ) -> None:
        # Validate everything before building anything.
        self.spec = backbone if isinstance(backbone, Backbone) else get_backbone(backbone)
        self.class_names, self.num_classes = _resolve_classes(num_classes, class_names)
        self.image_size = self.spec.resolve_image_size(image_size)
        self.spec.check_weights(weights, self.image_size)
        if isinstance(dropout, bool) or not isinstance(dropout, (int, float)):
            msg = f"dropout must be a float in [0, 1). Received: dropout={dropout!r}"
            raise InvalidArgumentError(msg)
        if not 0.0 <= dropout < 1.0:
            msg = f"dropout must be in [0, 1). Received: dropout={dropout!r}"
            raise InvalidArgumentError(msg)
        if backbone_kwargs is not None and not isinstance(backbone_kwargs, dict):
            msg = f"backbone_kwargs must be a dict. Received: backbone_kwargs={backbone_kwargs!r}"
            raise InvalidArgumentError(msg)
        if dtype_policy not in _DTYPE_POLICIES:
            msg = (
                "dtype_policy must be 'mixed_float16', 'mixed_bfloat16' or None (float32). "
                f"Received: dtype_policy={dtype_policy!r}"
            )
            raise InvalidArgumentError(msg)
        self.dtype_policy = dtype_policy
        self._strategy = strategy
        self.history = TrainingHistory()
        self._unfrozen_from: int | None = None
        self._head_learning_rate = _HEAD_LEARNING_RATE

        with self._scope(), _global_dtype_policy(dtype_policy):
            augmentation_model = build_augmentation(augmentation)
            backbone_model = self.spec.build(
                self.image_size, weights=weights, **(backbone_kwargs or {})
            )
            self.model = _build_model(
                self.spec, backbone_model, augmentation_model, self.num_classes, dropout
            )
        self.backbone = backbone_model
        _freezing.freeze(self.backbone)

    # ------------------------------------------------------------------ properties

    @property
    def is_binary(self) -> bool:
        """Whether the head is one logit (two classes) rather than one logit per class."""
        return self.num_classes == 2

    @property
    def unfrozen_from(self) -> int | None:
        """The index of the first trainable backbone layer, or None while it is all frozen."""
        return self._unfrozen_from

    @property
    def strategy(self) -> tf.distribute.Strategy | None:
        """The ``tf.distribute.Strategy`` the model lives under, if any."""
        return self._strategy

    @property
    def head_layers(self) -> list[keras.layers.Layer]:
        """The layers after the backbone (pooling, dropout and the dense logits)."""
        return [self.model.get_layer(name) for name in ("pooling", "dropout", "logits")]

    # ------------------------------------------------------------------ freezing

    def unfreeze(self, from_layer: int | str | None = None) -> TransferClassifier:
        """Makes the backbone trainable from a layer on, BatchNormalization excepted.

        Layers before ``from_layer`` stay frozen; BatchNormalization layers always stay
        frozen (inference mode), so their moving statistics never change. The model is
        recompiled at the next :meth:`fine_tune`, as Keras requires for a change of
        ``trainable`` to take effect.

        Args:
            from_layer: an index into ``clf.backbone.layers`` (negative counts from the top,
                as the recipe's ``100`` of MobileNetV2's 154 layers), a layer name, or None
                to unfreeze the whole backbone.

        Returns:
            The classifier, for chaining.

        Raises:
            UnknownLayerError: the index is out of range or no layer has that name.
        """
        index = _freezing.resolve_layer_index(self.backbone, from_layer)
        _freezing.unfreeze_from(self.backbone, index)
        self._unfrozen_from = index
        return self

    def freeze(self) -> TransferClassifier:
        """Freezes the whole backbone again (as for :meth:`fit_head`)."""
        _freezing.freeze(self.backbone)
        self._unfrozen_from = None
        return self

    # ------------------------------------------------------------------ training

    def fit_head(
        self,
        data: _inputs.LabeledData,
        *,
        validation_data: _inputs.LabeledData | None = None,
        epochs: int = 10,
        learning_rate: float | None = None,
        optimizer: keras.optimizers.Optimizer | None = None,
        batch_size: int = 32,
        callbacks: Sequence[keras.callbacks.Callback] | None = None,
        verbose: Verbose = "auto",
        cache_features: bool = True,
        augmented_views: int = 1,
        feature_memory_limit: int = _features.DEFAULT_MEMORY_LIMIT,
        jit_compile: JitCompile = "auto",
        early_stopping: int | None = None,
        checkpoint_dir: str | os.PathLike[str] | None = None,
    ) -> TrainingHistory:
        """Trains the head on the frozen backbone (stage one of the recipe).

        The whole backbone is frozen first (also if it had been unfrozen), so no backbone
        variable changes, BatchNormalization statistics included.

        By default the backbone runs once, not once per epoch: the pooled features of every
        image are computed up front (backbone in inference mode) and the head's own dropout
        and dense layers are trained on them, for the same epochs, with the same optimizer,
        loss, metrics and history as the full pass. Without augmentation that is exact and
        costs one forward pass over the training and validation data instead of one per
        epoch. With augmentation, each training image is augmented once up front and the
        head trains on that copy every epoch; with ``augmented_views=k``, ``k`` copies are
        computed (at most ``epochs``; each costs one more pass over the training data) and
        epoch ``e`` trains on copy ``e % k``. Validation features are computed once,
        unaugmented, as in the full pass. Fewer distinct augmentations than the full pass's
        one per epoch made no difference to a head on frozen features beyond noise (see the
        performance page for measurements); ``cache_features=False`` gives the full pass.
        Cached features take 4 bytes per feature channel per view (5 KiB per image for
        MobileNetV2): in memory up to ``feature_memory_limit`` bytes, then in a temporary
        folder (``tempfile.gettempdir()``; set ``TMPDIR`` to move it) that is deleted
        afterwards. Images are streamed batch by batch and never held all at once.

        Args:
            data: a ``tf.data.Dataset`` of ``(images, integer labels)`` batches, an
                ``(x, y)`` pair of arrays, or the path of a folder with one subfolder of
                images per class (read with :func:`transferkit.data.from_directory`; a
                classifier without class names takes the folder names). Images are raw
                pixels of the classifier's size. Data that carries class names (folders,
                Keras' datasets) must have the classifier's, in the same order, or
                :class:`~transferkit.errors.ClassNamesMismatchError` is raised.
            validation_data: the same kinds, evaluated after every epoch.
            epochs: int. Epochs to train. Defaults to 10.
            learning_rate: float. Adam's learning rate. Defaults to 1e-4 (the recipe's).
            optimizer: a Keras optimizer to use instead of Adam (then leave
                ``learning_rate`` out).
            batch_size: int. Batch size for arrays. Defaults to 32.
            callbacks: Keras callbacks, passed through to ``fit``. They see the full
                model as ``callback.model`` also when features are cached.
            verbose: Keras' progress output: ``"auto"``, 0, 1 or 2.
            cache_features: bool. Train the head on cached backbone features (see above)
                rather than running the backbone every epoch. Defaults to True.
            augmented_views: int. Augmented copies of each training image to cache when
                the classifier has augmentation. Defaults to 1.
            feature_memory_limit: int. Bytes of cached features to hold in memory before
                writing the rest to disk. Defaults to 1 GiB.
            jit_compile: bool or ``"auto"``. XLA compilation, passed to Keras'
                ``compile``; ``"auto"`` uses it on GPUs only. Defaults to ``"auto"``.
            early_stopping: int. A patience in epochs: stop once the validation loss (the
                training loss without validation data) has not improved for that many
                epochs, and end with the weights of the best epoch (also when training ran
                to the end). :attr:`history` keeps every epoch trained. None (the default)
                trains every epoch.
            checkpoint_dir: str or path. A folder to checkpoint into after every epoch
                (weights, optimizer state, history, early-stopping state). After an
                interruption, make the same calls again with the same folder on a
                classifier built with the same arguments (or loaded from a save made
                before the interrupted call): a run that had finished is restored without
                training, and the interrupted one resumes after its last saved epoch, with
                the same global epoch numbers. Use a new folder to train from scratch.

        Returns:
            :attr:`history`, with this stage's epochs appended.

        Raises:
            TrainingDivergedError: the loss (or the weights) became NaN or infinite. The
                model is left with the weights from the end of the last epoch whose loss
                and weights were finite (or those it started with), and :attr:`history`
                holds the epochs up to that one.
            UnsupportedStrategyError: the strategy is a MultiWorkerMirroredStrategy over
                several workers, which Keras 3 cannot train under.
            InvalidArgumentError: an argument is invalid, or ``checkpoint_dir`` holds a run
                made with other settings.
        """
        _check_positive_int("epochs", epochs)
        _check_positive_int("batch_size", batch_size)
        if learning_rate is not None:
            _check_learning_rate(learning_rate)
        if not isinstance(cache_features, bool):
            msg = (
                f"cache_features must be True or False. Received: cache_features={cache_features!r}"
            )
            raise InvalidArgumentError(msg)
        _check_positive_int("augmented_views", augmented_views)
        if (
            isinstance(feature_memory_limit, bool)
            or not isinstance(feature_memory_limit, int)
            or feature_memory_limit < 0
        ):
            msg = (
                "feature_memory_limit must be a number of bytes (an int, 0 or more). "
                f"Received: feature_memory_limit={feature_memory_limit!r}"
            )
            raise InvalidArgumentError(msg)
        _check_jit_compile(jit_compile)
        _training.check_early_stopping(early_stopping)
        _training.check_checkpoint_dir(checkpoint_dir)
        _training.check_strategy_can_train(self._strategy)
        train = self._labeled(data, batch_size, shuffle=True, name="data")
        validation = self._optional_labeled(validation_data, batch_size)
        optimizer = _choose_optimizer(
            optimizer, learning_rate, default=lambda lr: keras.optimizers.Adam(lr),
            default_rate=_HEAD_LEARNING_RATE,
            strategy=self._strategy,
        )
        if learning_rate is not None:
            self._head_learning_rate = learning_rate
        self.freeze()
        safe = self._safe_run("head", optimizer, validation, epochs, early_stopping, checkpoint_dir)
        if safe.run is not None and safe.run.finished:
            return self.history
        if not cache_features:
            return self._fit(
                "head",
                train,
                validation,
                epochs,
                optimizer,
                callbacks,
                verbose,
                safe,
                jit_compile=jit_compile,
            )
        augment = any(layer.name == "augmentation" for layer in self.model.layers)
        with (
            self._scope(),
            _features.cache_features(
                self.model,
                self.backbone,
                train,
                validation,
                views=min(augmented_views, epochs) if augment else 1,
                augment=augment,
                memory_limit=feature_memory_limit,
                jit_compile=jit_compile,
            ) as cached,
        ):
            return self._fit(
                "head",
                train,
                validation,
                epochs,
                optimizer,
                callbacks,
                verbose,
                safe,
                jit_compile=jit_compile,
                cached=cached,
            )

    def fine_tune(
        self,
        data: _inputs.LabeledData,
        *,
        validation_data: _inputs.LabeledData | None = None,
        epochs: int = 10,
        learning_rate: float | None = None,
        optimizer: keras.optimizers.Optimizer | None = None,
        batch_size: int = 32,
        callbacks: Sequence[keras.callbacks.Callback] | None = None,
        verbose: Verbose = "auto",
        jit_compile: JitCompile = "auto",
        early_stopping: int | None = None,
        checkpoint_dir: str | os.PathLike[str] | None = None,
    ) -> TrainingHistory:
        """Fine-tunes the unfrozen top of the backbone together with the head (stage two).

        Call :meth:`unfreeze` first; fine-tuning with the whole backbone frozen raises
        :class:`~transferkit.errors.NotUnfrozenError` (it would only train the head again).
        Fine-tuning before any :meth:`fit_head` warns: gradients from a random head wreck
        the pretrained features.

        Args:
            data: as for :meth:`fit_head`.
            validation_data: as for :meth:`fit_head`.
            epochs: int. Epochs to train, numbered on from the head stage. Defaults to 10.
            learning_rate: float. RMSprop's learning rate. Defaults to a tenth of the head
                stage's rate (1e-5 with the defaults, as in the recipe).
            optimizer: a Keras optimizer to use instead of RMSprop.
            batch_size: int. Batch size for arrays. Defaults to 32.
            callbacks: Keras callbacks, passed through to ``fit``.
            verbose: Keras' progress output: ``"auto"``, 0, 1 or 2.
            jit_compile: as for :meth:`fit_head`.
            early_stopping: as for :meth:`fit_head`.
            checkpoint_dir: as for :meth:`fit_head`; the folder may be the one the head
                stage used.

        Returns:
            :attr:`history`, with this stage's epochs appended.

        Raises:
            NotUnfrozenError: no backbone layer is unfrozen.
            TrainingDivergedError: as for :meth:`fit_head`.
            UnsupportedStrategyError: as for :meth:`fit_head`.
        """
        if self._unfrozen_from is None:
            msg = (
                "fine_tune() needs part of the backbone unfrozen, but it is all frozen. Call "
                "clf.unfreeze(from_layer=...) first, for instance from_layer=100 for "
                "mobilenet_v2 (the recipe), or from_layer=None for the whole backbone."
            )
            raise NotUnfrozenError(msg)
        _check_positive_int("epochs", epochs)
        _check_positive_int("batch_size", batch_size)
        if learning_rate is not None:
            _check_learning_rate(learning_rate)
        _check_jit_compile(jit_compile)
        _training.check_early_stopping(early_stopping)
        _training.check_checkpoint_dir(checkpoint_dir)
        _training.check_strategy_can_train(self._strategy)
        train = self._labeled(data, batch_size, shuffle=True, name="data")
        validation = self._optional_labeled(validation_data, batch_size)
        optimizer = _choose_optimizer(
            optimizer, learning_rate, default=lambda lr: keras.optimizers.RMSprop(lr),
            default_rate=self._head_learning_rate * _FINE_TUNE_RATE_FACTOR,
            strategy=self._strategy,
        )
        if "head" not in self.history.stages:
            warnings.warn(
                "fine_tune() before fit_head(): the head is still random, and its gradients "
                "will wreck the pretrained features. Train the head first.",
                TransferkitWarning,
                stacklevel=2,
            )
        safe = self._safe_run(
            "fine_tune", optimizer, validation, epochs, early_stopping, checkpoint_dir
        )
        if safe.run is not None and safe.run.finished:
            return self.history
        return self._fit(
            "fine_tune",
            train,
            validation,
            epochs,
            optimizer,
            callbacks,
            verbose,
            safe,
            jit_compile=jit_compile,
        )

    def _fit(
        self,
        stage: Stage,
        train: tf.data.Dataset,
        validation: tf.data.Dataset | None,
        epochs: int,
        optimizer: keras.optimizers.Optimizer,
        callbacks: Sequence[keras.callbacks.Callback] | None,
        verbose: Verbose,
        safe: _training.SafeRun,
        *,
        jit_compile: JitCompile = "auto",
        cached: _features.CachedFeatures | None = None,
    ) -> TrainingHistory:
        # compile() again at every stage: a change of `trainable` only counts after it.
        self._compile(optimizer, jit_compile=jit_compile)
        start = self.history.next_epoch  # after the epochs a resumed run already trained
        epochs -= safe.completed
        all_callbacks = [*(callbacks or []), *safe.callbacks]
        if cached is None:
            keras_history = self.model.fit(
                train,
                validation_data=validation,
                initial_epoch=start,
                epochs=start + epochs,
                shuffle=False,  # arrays were shuffled in the pipeline; datasets keep their order
                callbacks=all_callbacks,
                verbose=verbose,
            )
        else:
            # Same optimizer object as the full model's, so a callback that changes
            # callback.model.optimizer (ReduceLROnPlateau) changes the head's.
            self._compile(optimizer, model=cached.head, jit_compile=jit_compile)
            keras_history = cached.fit(
                self.model,
                initial_epoch=start,
                epochs=epochs,
                callbacks=all_callbacks,
                verbose=verbose,
            )
        self.history.append(stage, *safe.kept(keras_history.epoch, keras_history.history))
        safe.raise_if_diverged()
        return self.history

    def _safe_run(
        self,
        stage: Stage,
        optimizer: keras.optimizers.Optimizer,
        validation: tf.data.Dataset | None,
        epochs: int,
        early_stopping: int | None,
        checkpoint_dir: str | os.PathLike[str] | None,
    ) -> _training.SafeRun:
        # With a checkpoint that has saved epochs, the model, optimizer and history are put
        # back as they were saved before anything trains.
        run = None
        if checkpoint_dir is not None:
            settings = {
                "stage": stage,
                "epochs": epochs,
                "backbone": self.spec.name,
                "num_classes": self.num_classes,
                "class_names": self.class_names,
                "image_size": list(self.image_size),
                "unfrozen_from": self._unfrozen_from,
                "optimizer": type(optimizer).__name__,
                "early_stopping": early_stopping,
            }
            run = _training.open_run(
                checkpoint_dir, stage=stage, history=self.history, settings=settings
            )
        safe = _training.SafeRun(
            stage,
            early_stopping=early_stopping,
            monitor="loss" if validation is None else "val_loss",
            run=run,
        )
        if run is not None and run.completed:
            self._compile(optimizer)
            if not optimizer.built:  # its saved state loads only into built variables
                with self._scope():
                    optimizer.build(self.model.trainable_variables)
            safe.restore_checkpoint(self.model)
            self.history = run.history
        return safe

    def _compile(
        self,
        optimizer: keras.optimizers.Optimizer | None = None,
        *,
        model: keras.Model | None = None,
        jit_compile: JitCompile = "auto",
    ) -> None:
        with self._scope():
            if optimizer is None:
                optimizer = keras.optimizers.Adam(self._head_learning_rate)
            if self.is_binary:
                loss: keras.losses.Loss = keras.losses.BinaryCrossentropy(from_logits=True)
                accuracy: keras.metrics.Metric = keras.metrics.BinaryAccuracy(
                    threshold=0.0, name="accuracy"
                )
            else:
                loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
                accuracy = keras.metrics.SparseCategoricalAccuracy(name="accuracy")
            (model or self.model).compile(
                optimizer=optimizer, loss=loss, metrics=[accuracy], jit_compile=jit_compile
            )

    # ------------------------------------------------------------------ inference

    def predict(
        self, images: _inputs.Images, *, batch_size: int = 32, verbose: Verbose = 0
    ) -> np.ndarray:
        """Per-class probabilities for raw-pixel images.

        Args:
            images: a numpy array or tensor of shape ``(n, height, width, 3)`` (or one
                image of shape ``(height, width, 3)``), a ``tf.data.Dataset`` of image
                batches (``(images, labels)`` batches are accepted; labels are ignored), or
                the path of an image file or of a folder (its image files, recursively, in
                sorted order; see :func:`transferkit.data.list_images`).
            batch_size: int. Batch size for arrays. Defaults to 32.
            verbose: Keras' progress output. Defaults to 0 (silent).

        Returns:
            A float32 array of shape ``(n, num_classes)`` whose rows sum to 1.
        """
        _check_positive_int("batch_size", batch_size)
        inputs = _inputs.as_image_input(
            images, image_size=self.image_size, batch_size=batch_size
        )
        logits = np.asarray(self.model.predict(inputs, batch_size=batch_size, verbose=verbose))
        return _probabilities(logits.astype(np.float32), self.is_binary)

    def predict_labels(
        self, images: _inputs.Images, *, batch_size: int = 32
    ) -> list[str] | list[int]:
        """The most probable class of each image.

        Args:
            images: as for :meth:`predict`.
            batch_size: int. Batch size for arrays. Defaults to 32.

        Returns:
            Class names when the classifier has them, class indices otherwise.
        """
        indices = [int(i) for i in np.argmax(self.predict(images, batch_size=batch_size), -1)]
        if self.class_names is None:
            return indices
        return [self.class_names[i] for i in indices]

    def evaluate(
        self, data: _inputs.LabeledData, *, batch_size: int = 32, verbose: Verbose = 0
    ) -> dict[str, float]:
        """Loss and accuracy on labeled data.

        Args:
            data: as for :meth:`fit_head`.
            batch_size: int. Batch size for arrays. Defaults to 32.
            verbose: Keras' progress output. Defaults to 0 (silent).

        Returns:
            ``{"loss": ..., "accuracy": ...}``.

        Raises:
            UnsupportedStrategyError: the strategy is a MultiWorkerMirroredStrategy over
                several workers, which Keras 3 cannot evaluate under.
        """
        _check_positive_int("batch_size", batch_size)
        _training.check_strategy_can_train(self._strategy)
        dataset = self._labeled(data, batch_size, shuffle=False, name="data")
        if not self.model.compiled:
            self._compile()
        results = self.model.evaluate(dataset, verbose=verbose, return_dict=True)
        return {name: float(value) for name, value in results.items()}

    # ------------------------------------------------------------------ persistence

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Saves model, class names, backbone name, freezing state and history to one file.

        The file is a Keras ``.keras`` archive (it loads with
        ``keras.saving.load_model(path, safe_mode=True)`` once transferkit is imported) with
        transferkit's metadata added. It is written to a temporary file next to ``path``
        and renamed over it, so an interrupted save never leaves a broken file behind.

        Args:
            path: where to write; must end in ``.keras``.

        Returns:
            The path written.
        """
        target = Path(path)
        if target.suffix != ".keras":
            msg = f"The file name must end in '.keras'. Received: path={os.fspath(path)!r}"
            raise InvalidArgumentError(msg)
        if not target.parent.is_dir():
            msg = f"The folder to save into does not exist. Received: path={os.fspath(path)!r}"
            raise InvalidArgumentError(msg)
        descriptor, temporary = tempfile.mkstemp(
            suffix=".keras", prefix=f".{target.stem}-", dir=target.parent
        )
        os.close(descriptor)
        try:
            self.model.save(temporary)
            with zipfile.ZipFile(temporary, "a") as archive:
                archive.writestr(METADATA_ENTRY, json.dumps(self._metadata(), indent=2))
            os.replace(temporary, target)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.remove(temporary)
            raise
        return target

    def export(
        self,
        path: str | os.PathLike[str],
        *,
        format: ExportFormat = "saved_model",
        quantize: Quantization = None,
    ) -> Path:
        """Writes the model for serving: a TensorFlow SavedModel folder or a TFLite file.

        Either takes raw uint8 images ``(batch, height, width, 3)`` and returns the
        probabilities :meth:`predict` returns (preprocessing inside, augmentation and
        dropout off), under the ``serving_default`` signature: input ``images``, output
        ``probabilities``. Written under a temporary name and renamed into place, like
        :meth:`save`. See :mod:`transferkit.export`.

        Args:
            path: the SavedModel folder to create, or a file name ending in ``.tflite``.
            format: ``"saved_model"`` (TensorFlow Serving, ``tf.saved_model.load``) or
                ``"tflite"``. Defaults to ``"saved_model"``.
            quantize: None, or ``"dynamic_range"`` for int8 TFLite weights.
                Defaults to None.

        Returns:
            The path written.

        Raises:
            InvalidArgumentError: an argument is invalid, or ``path`` is a folder that is
                not an earlier SavedModel.
        """
        return export_classifier(self, path, format=format, quantize=quantize)

    def _metadata(self) -> dict[str, Any]:
        from transferkit import __version__

        return {
            "format": _METADATA_FORMAT,
            "transferkit_version": __version__,
            "backbone": self.spec.name,
            "backbone_layer": self.backbone.name,
            "class_names": self.class_names,
            "num_classes": self.num_classes,
            "image_size": list(self.image_size),
            "unfrozen_from": self._unfrozen_from,
            "head_learning_rate": self._head_learning_rate,
            "dtype_policy": self.dtype_policy,
            "history": self.history.to_dict(),
        }

    @classmethod
    def _from_saved(
        cls, model: keras.Model, metadata: dict[str, Any], strategy: tf.distribute.Strategy | None
    ) -> TransferClassifier:
        classifier = cls.__new__(cls)
        classifier.spec = get_backbone(metadata["backbone"])
        classifier.class_names = metadata["class_names"]
        classifier.num_classes = int(metadata["num_classes"])
        classifier.image_size = (int(metadata["image_size"][0]), int(metadata["image_size"][1]))
        classifier._strategy = strategy
        classifier.history = TrainingHistory.from_dict(metadata["history"])
        classifier._head_learning_rate = float(metadata["head_learning_rate"])
        classifier.dtype_policy = metadata.get("dtype_policy")
        classifier.model = model
        classifier.backbone = model.get_layer(metadata["backbone_layer"])
        if metadata["unfrozen_from"] is None:
            classifier.freeze()
        else:
            classifier.unfreeze(int(metadata["unfrozen_from"]))
        return classifier

    # ------------------------------------------------------------------ helpers

    def _scope(self) -> contextlib.AbstractContextManager[Any]:
        return self._strategy.scope() if self._strategy is not None else contextlib.nullcontext()

    def _labeled(
        self, data: _inputs.LabeledData, batch_size: int, *, shuffle: bool, name: str
    ) -> tf.data.Dataset:
        if isinstance(data, (str, os.PathLike)):
            data = self._from_folder(data, batch_size, name)
        self._check_class_names(getattr(data, "class_names", None), name)
        return _inputs.as_labeled_dataset(
            data,
            image_size=self.image_size,
            num_classes=self.num_classes,
            batch_size=batch_size,
            shuffle=shuffle,
            name=name,
        )

    def _from_folder(
        self, path: str | os.PathLike[str], batch_size: int, name: str
    ) -> tf.data.Dataset:
        folder = from_directory(
            path, self.image_size, batch_size, seed=None, class_names=self.class_names
        )
        if folder.validation is not None or folder.test is not None:
            msg = (
                f"{name} is a folder of train/ and validation/ (or test/) folders; pass one "
                f"of them, such as {os.path.join(path, 'train')!r}, or load them all with "
                f"transferkit.data.from_directory(). Received: {name}={os.fspath(path)!r}"
            )
            raise DataError(msg)
        return folder.train

    def _check_class_names(self, found: Sequence[str] | None, name: str) -> None:
        # Datasets made from folders carry their class names (Keras' do too): labels are
        # indices into them, so they must be the classifier's, in the same order.
        if found is None:
            return
        names = [str(n) for n in found]
        if self.class_names is None and len(names) == self.num_classes:
            self.class_names = names
        elif names != self.class_names:
            msg = (
                f"{name} has the classes {names} but this classifier has "
                f"{self.class_names or f'{self.num_classes} classes'}; labels are indices into "
                "the class names, so they must be the same names in the same order (load "
                "folders with class_names=clf.class_names). "
                f"Received: {name} with class_names={names}"
            )
            raise ClassNamesMismatchError(msg)

    def _optional_labeled(
        self, data: _inputs.LabeledData | None, batch_size: int
    ) -> tf.data.Dataset | None:
        if data is None:
            return None
        return self._labeled(data, batch_size, shuffle=False, name="validation_data")

    def __repr__(self) -> str:
        state = "frozen" if self._unfrozen_from is None else f"unfrozen from {self._unfrozen_from}"
        return (
            f"TransferClassifier({self.spec.name!r}, num_classes={self.num_classes}, "
            f"image_size={self.image_size}, backbone {state})"
        )


def load_classifier(
    path: str | os.PathLike[str], *, strategy: tf.distribute.Strategy | None = None
) -> TransferClassifier:
    """Loads a classifier written by :meth:`TransferClassifier.save`.

    The model loads with Keras' ``safe_mode=True``; class names, backbone, freezing state
    and history come back as they were saved.

    Args:
        path: a ``.keras`` file written by :meth:`TransferClassifier.save`.
        strategy: a ``tf.distribute.Strategy`` to load the model under, or None.

    Returns:
        The classifier.

    Raises:
        DataError: the file does not exist or was not written by transferkit.
    """
    source = Path(path)
    if not source.is_file():
        msg = f"No saved classifier at {os.fspath(path)!r}. Received: path={os.fspath(path)!r}"
        raise DataError(msg)
    try:
        with zipfile.ZipFile(source) as archive:
            metadata = json.loads(archive.read(METADATA_ENTRY))
    except (zipfile.BadZipFile, KeyError) as exc:
        msg = (
            f"{os.fspath(path)!r} is not a classifier saved by transferkit (no "
            f"{METADATA_ENTRY} inside). A plain Keras model loads with "
            "keras.saving.load_model()."
        )
        raise DataError(msg) from exc
    if metadata.get("format") != _METADATA_FORMAT:
        msg = (
            f"{os.fspath(path)!r} was saved in transferkit file format "
            f"{metadata.get('format')!r}; this version reads format {_METADATA_FORMAT}."
        )
        raise DataError(msg)
    scope = strategy.scope() if strategy is not None else contextlib.nullcontext()
    with scope:
        model = keras.saving.load_model(source, compile=False, safe_mode=True)
    return TransferClassifier._from_saved(model, metadata, strategy)


# ---------------------------------------------------------------------- module helpers


def _build_model(
    spec: Backbone,
    backbone: keras.Model,
    augmentation: keras.Sequential | None,
    num_classes: int,
    dropout: float,
) -> keras.Model:
    inputs = keras.Input(shape=(*backbone.input_shape[1:3], 3), name="image")
    x = augmentation(inputs) if augmentation is not None else inputs
    x = spec.preprocessing_layer()(x)
    x = backbone(x)
    x = keras.layers.GlobalAveragePooling2D(name="pooling")(x)
    x = keras.layers.Dropout(dropout, name="dropout")(x)
    # float32 logits even under a mixed-precision policy, for a stable loss.
    outputs = keras.layers.Dense(
        1 if num_classes == 2 else num_classes, name="logits", dtype="float32"
    )(x)
    return keras.Model(inputs, outputs, name=f"transferkit_{spec.name}")


@contextlib.contextmanager
def _global_dtype_policy(policy: str | None) -> Iterator[None]:
    # keras.applications constructors take no dtype argument: they read the global policy.
    if policy is None:
        yield
        return
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(policy)
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)


def _resolve_classes(
    num_classes: int | None, class_names: Sequence[str] | None
) -> tuple[list[str] | None, int]:
    names: list[str] | None = None
    if class_names is not None:
        if isinstance(class_names, str) or not all(isinstance(n, str) for n in class_names):
            msg = f"class_names must be a list of strings. Received: class_names={class_names!r}"
            raise InvalidArgumentError(msg)
        names = list(class_names)
        if len(set(names)) != len(names):
            msg = f"class_names must be unique. Received: class_names={names!r}"
            raise InvalidArgumentError(msg)
    if num_classes is None:
        if names is None:
            msg = "Pass num_classes or class_names. Received: neither"
            raise InvalidArgumentError(msg)
        num_classes = len(names)
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
        msg = f"num_classes must be an int of at least 2. Received: num_classes={num_classes!r}"
        raise InvalidArgumentError(msg)
    if names is not None and len(names) != num_classes:
        msg = (
            f"num_classes and class_names disagree. "
            f"Received: num_classes={num_classes}, class_names={names!r}"
        )
        raise InvalidArgumentError(msg)
    return names, num_classes


def _probabilities(logits: np.ndarray, binary: bool) -> np.ndarray:
    if binary:
        positive = 1.0 / (1.0 + np.exp(-logits[:, 0]))
        return np.stack([1.0 - positive, positive], axis=-1).astype(np.float32)
    shifted = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return (shifted / shifted.sum(axis=-1, keepdims=True)).astype(np.float32)


def _check_positive_int(name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        msg = f"{name} must be a positive int. Received: {name}={value!r}"
        raise InvalidArgumentError(msg)


def _check_jit_compile(value: object) -> None:
    if not isinstance(value, bool) and value != "auto":
        msg = f"jit_compile must be True, False or 'auto'. Received: jit_compile={value!r}"
        raise InvalidArgumentError(msg)


def _check_learning_rate(value: object) -> None:
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not math.isfinite(value)
        or value <= 0
    ):
        msg = f"learning_rate must be a positive number. Received: learning_rate={value!r}"
        raise InvalidArgumentError(msg)


def _choose_optimizer(
    optimizer: keras.optimizers.Optimizer | None,
    learning_rate: float | None,
    *,
    default: Any,
    default_rate: float,
    strategy: tf.distribute.Strategy | None,
) -> keras.optimizers.Optimizer:
    if optimizer is None:
        # Its variables (the step counter, moments) must live under the model's strategy.
        with strategy.scope() if strategy is not None else contextlib.nullcontext():
            return default(learning_rate if learning_rate is not None else default_rate)
    if learning_rate is not None:
        msg = (
            "Pass either optimizer or learning_rate, not both (set the rate on the optimizer). "
            f"Received: optimizer={optimizer!r}, learning_rate={learning_rate!r}"
        )
        raise InvalidArgumentError(msg)
    if not isinstance(optimizer, keras.optimizers.Optimizer):
        msg = f"optimizer must be a keras.optimizers.Optimizer. Received: optimizer={optimizer!r}"
        raise InvalidArgumentError(msg)
    # TF records on each variable the strategy it was created under; there is no public getter.
    created_under = getattr(optimizer.iterations.value, "_distribute_strategy", None)
    if strategy is not None and created_under is not strategy:
        msg = (
            "The optimizer was created outside the classifier's strategy scope, so its "
            "variables cannot be updated by that strategy. Create it inside the scope: "
            "`with clf.strategy.scope(): optimizer = keras.optimizers.Adam(...)`. "
            f"Received: optimizer={optimizer!r}"
        )
        raise InvalidArgumentError(msg)
    return optimizer
