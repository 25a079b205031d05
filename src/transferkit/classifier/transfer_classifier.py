"""``TransferClassifier``: the two-stage transfer-learning recipe as one object.

Stage one trains a new head on a frozen backbone (:meth:`TransferClassifier.fit_head`); stage
two unfreezes the top of the backbone (:meth:`TransferClassifier.unfreeze`) and fine-tunes it
at a lower learning rate (:meth:`TransferClassifier.fine_tune`). The backbone always runs in
inference mode and its BatchNormalization layers stay frozen (:mod:`transferkit.model.graph`
and :mod:`transferkit.backbones.freezing` say why that takes more than ``training=False``).

This module is the one owner of a classifier's state: every attribute is assigned here. The
other method groups read it through :class:`~transferkit.classifier.state.ClassifierState`
and change it only through methods defined here. Data is resolved here
(:mod:`transferkit.data.resolve`); the subpackages get narrow inputs and return results.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from typing import Any

import keras
import tensorflow as tf

from transferkit import _backend, _validation
from transferkit.backbones import freezing
from transferkit.backbones.pooling import Pooling
from transferkit.backbones.registry import get_backbone
from transferkit.backbones.spec import Backbone, ImageSize, Weights
from transferkit.classifier.file_methods import FileMethods
from transferkit.classifier.inference_methods import InferenceMethods
from transferkit.classifier.one_call import OneCallMethods
from transferkit.data import inputs, resolve
from transferkit.data.augmentation import Augmentation, build_augmentation
from transferkit.errors import InvalidArgumentError, NotUnfrozenError, TransferkitWarning
from transferkit.history import Stage, TrainingHistory
from transferkit.inference import thresholds
from transferkit.model import graph
from transferkit.model.class_weights import ClassWeight
from transferkit.model.config import ClassifierConfig, DtypePolicy, LossName
from transferkit.model.protocol import expected
from transferkit.training import features, stages
from transferkit.training.options import CacheOptions, JitCompile, StageOptions, Verbose
from transferkit.training.regularization import Regularization
from transferkit.training.schedules import Schedule

__all__ = ["TransferClassifier"]

# The recipe's rates: Adam 1e-4 for the head, RMSprop at a tenth of that for fine-tuning.
_RECIPE_HEAD_RATE = 1e-4
_RECIPE_FINE_TUNE_FACTOR = 0.1


class TransferClassifier(OneCallMethods, InferenceMethods, FileMethods):
    """An image classifier made of a pretrained backbone and a new head.

    The Keras graph is the reference recipe's: raw pixels → augmentation (training only) →
    the backbone's preprocessing → backbone → pooling → dropout → dense logits (one logit for
    two classes, one per class otherwise). The model takes raw pixels (0-255); every
    preprocessing step is a serializable layer inside it.

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
        dropout: float. Dropout rate before the dense layer, in [0, 1). Defaults to 0.2.
        strategy: a ``tf.distribute.Strategy`` to build and train under, or None. Under a
            strategy, ``batch_size`` (and a dataset's batches) are global batches. See the
            distributed training guide.
        dtype_policy: ``"mixed_float16"`` (GPUs), ``"mixed_bfloat16"`` (TPUs, recent CPUs)
            or None for float32 (also under a mixed global policy). The logits stay float32;
            Keras' global policy is only changed while the model is built. Defaults to None.
        multi_label: bool. Whether an image may have several classes: one sigmoid logit per
            class, binary cross-entropy, multi-hot targets (as
            :func:`transferkit.data.from_csv` gives them) and per-class :attr:`thresholds`.
            Defaults to False.
        pooling: ``"avg"`` (global average of a feature map), ``"max"`` (its maximum),
            ``"avgmax"`` (both, concatenated), ``"cls"`` (a transformer's class token),
            ``"mean"`` (the mean of its patch tokens), or None for the backbone's default
            (``Backbone.pooling``). Defaults to None.
        loss: ``"crossentropy"``, or ``"focal"`` or ``"asymmetric"`` for a sigmoid head
            (multi-label, or two classes; see the regularization guide). Defaults to the first.

    Attributes:
        model: the Keras model (raw pixels in, logits out).
        backbone: the backbone ``keras.Model`` nested in :attr:`model`.
        spec: the :class:`~transferkit.Backbone` it was built from.
        history: a :class:`~transferkit.TrainingHistory` of both stages.
        config: the classifier's settings, a frozen ``ClassifierConfig``.

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
        multi_label: bool = False,
        pooling: Pooling | None = None,
        loss: LossName = "crossentropy",
    ) -> None:
        # Validate everything before building anything.
        spec = backbone if isinstance(backbone, Backbone) else get_backbone(backbone)
        config = ClassifierConfig.create(
            spec, num_classes=num_classes, class_names=class_names, image_size=image_size,
            dropout=dropout, dtype_policy=dtype_policy, multi_label=multi_label, pooling=pooling,
            loss=loss,
        )  # fmt: skip
        spec.check_weights(weights, config.image_size)
        if backbone_kwargs is not None and not isinstance(backbone_kwargs, dict):
            msg = f"backbone_kwargs must be a dict. Received: backbone_kwargs={backbone_kwargs!r}"
            raise InvalidArgumentError(msg)
        with _backend.scope(strategy), graph.global_dtype_policy(config.dtype_policy):
            augmentation_model = build_augmentation(augmentation)
            backbone_model = spec.build(
                config.image_size, weights=weights, **(backbone_kwargs or {})
            )
            model = graph.build_model(config, spec, backbone_model, augmentation_model)
        self._attach(config, spec, model, strategy, TrainingHistory(), _RECIPE_HEAD_RATE)
        self.freeze()

    def _attach(
        self,
        config: ClassifierConfig,
        spec: Backbone,
        model: keras.Model,
        strategy: tf.distribute.Strategy | None,
        history: TrainingHistory,
        head_learning_rate: float,
    ) -> None:
        # Where a classifier's state is set: by the constructor and by loading.
        self.config = config
        self.spec = spec
        self.model = model
        self.backbone: keras.Model = model.get_layer(graph.BACKBONE_LAYER).layer
        self.history = history
        self._strategy = strategy
        self._head_learning_rate = head_learning_rate
        self._unfrozen_from: int | None = None
        self._probabilities = graph.Probabilities(self.is_binary, self.multi_label)
        self._thresholds: tuple[float, ...] | None = (
            (thresholds.DEFAULT_THRESHOLD,) * config.num_classes if config.multi_label else None
        )

    # ------------------------------------------------------------------ properties

    @property
    def class_names(self) -> list[str] | None:
        """The class names in label order, or None while no data has named them."""
        names = self.config.class_names
        return None if names is None else list(names)

    @property
    def num_classes(self) -> int:
        """The number of classes."""
        return self.config.num_classes

    @property
    def image_size(self) -> tuple[int, int]:
        """The ``(height, width)`` of the raw-pixel images the model takes."""
        return self.config.image_size

    @property
    def dtype_policy(self) -> DtypePolicy:
        """The mixed-precision policy the layers were built with, or None for float32."""
        return self.config.dtype_policy

    @property
    def is_binary(self) -> bool:
        """Whether the head is one logit (two single-label classes), not one per class."""
        return self.num_classes == 2 and not self.multi_label

    @property
    def multi_label(self) -> bool:
        """Whether each class is an independent yes/no answer (see ``multi_label``)."""
        return self.config.multi_label

    @property
    def thresholds(self) -> tuple[float, ...] | None:
        """A multi-label classifier's per-class probability thresholds (None otherwise).

        :meth:`predict_labels` gives an image every class whose probability reaches its
        threshold. They are 0.5 until :meth:`tune_thresholds` picks them or they are set
        (one number for every class, or one per class), and are saved with the classifier.
        """
        return self._thresholds

    @thresholds.setter
    def thresholds(self, value: float | Sequence[float]) -> None:
        if not self.multi_label:
            msg = (
                "Only a multi-label classifier has thresholds; a single-label one predicts "
                f"its most probable class. Received: thresholds={value!r}"
            )
            raise InvalidArgumentError(msg)
        self._thresholds = thresholds.check_thresholds(value, self.num_classes)

    @property
    def unfrozen_from(self) -> int | None:
        """The index of the first trainable backbone block, or None while it is all frozen."""
        return self._unfrozen_from

    @property
    def strategy(self) -> tf.distribute.Strategy | None:
        """The ``tf.distribute.Strategy`` the model lives under, if any."""
        return self._strategy

    @property
    def head_layers(self) -> list[keras.layers.Layer]:
        """The layers after the backbone (pooling, dropout and the dense logits)."""
        return [self.model.get_layer(name) for name in graph.HEAD_LAYERS]

    # ------------------------------------------------------------------ freezing

    def unfreeze(self, from_layer: int | str | None = None) -> TransferClassifier:
        """Makes the backbone trainable from a block on, BatchNormalization excepted.

        Blocks before ``from_layer`` stay frozen; BatchNormalization always stays frozen. A
        block is a layer of ``clf.backbone.layers`` (``keras.applications``), or the patch
        embedding or one transformer block of a keras-hub transformer, so ``unfreeze(-4)``
        unfreezes its last four blocks (see ``clf.spec.layout_of(clf.backbone).blocks``).

        Args:
            from_layer: an index into the blocks (any integer type; negative counts from the
                top, as the recipe's ``100`` of MobileNetV2's 154 layers), the name of a
                block's first layer, or None to unfreeze the whole backbone.

        Returns:
            The classifier, for chaining.

        Raises:
            UnknownLayerError: the index is out of range or no layer has that name.
        """
        blocks = self.spec.layout_of(self.backbone).blocks
        index = freezing.resolve_layer_index(self.backbone, from_layer, blocks)
        freezing.unfreeze_from(self.backbone, index, blocks)
        self._unfrozen_from = index
        return self

    def freeze(self) -> TransferClassifier:
        """Freezes the whole backbone again (as for :meth:`fit_head`)."""
        freezing.freeze(self.backbone)
        self._unfrozen_from = None
        return self

    # ------------------------------------------------------------------ training

    def fit_head(
        self,
        data: inputs.LabeledData,
        *,
        validation_data: inputs.LabeledData | None = None,
        epochs: int = 10,
        learning_rate: float | None = None,
        optimizer: keras.optimizers.Optimizer | None = None,
        batch_size: int = 32,
        callbacks: Sequence[keras.callbacks.Callback] | None = None,
        verbose: Verbose = "auto",
        cache_features: bool = True,
        augmented_views: int = 1,
        feature_memory_limit: int = features.DEFAULT_MEMORY_LIMIT,
        jit_compile: JitCompile = "auto",
        early_stopping: int | None = None,
        checkpoint_dir: str | os.PathLike[str] | None = None,
        schedule: Schedule = "constant",
        class_weight: ClassWeight = None,
        regularization: Regularization | None = None,
    ) -> TrainingHistory:
        """Trains the head on the frozen backbone (stage one of the recipe).

        The whole backbone is frozen first, so no backbone variable changes (BatchNorm
        statistics included). By default the backbone runs once, not once per epoch: the
        pooled features of every image are computed up front and the head trains on them,
        with the same optimizer, loss, metrics and history (exact without augmentation; with
        it, each image is augmented ``augmented_views`` times up front). See
        :doc:`/performance`; ``cache_features=False`` gives the recipe's full pass.

        Args:
            data: a ``tf.data.Dataset`` of ``(images, integer labels)`` batches, an ``(x, y)``
                pair of arrays, or the path of a folder with one subfolder of images per
                class. Images are raw pixels of the classifier's size. Data that names its
                classes (folders, tables, Keras' datasets) must have the classifier's, in
                order (:class:`~transferkit.errors.ClassNamesMismatchError`); a classifier
                without class names takes the data's.
            validation_data: the same kinds, evaluated after every epoch.
            epochs: int. Epochs to train. Defaults to 10.
            learning_rate: float. Adam's learning rate (the peak of a ``schedule``).
                Defaults to 1e-4 (the recipe's); :meth:`find_learning_rate` suggests one.
            optimizer: a Keras optimizer instead of Adam (then leave ``learning_rate`` and
                ``schedule`` out).
            batch_size: int. Batch size for arrays and folders. Defaults to 32.
            callbacks: Keras callbacks, passed to ``fit``; they see the full model.
            verbose: Keras' progress output: ``"auto"``, 0, 1 or 2.
            cache_features: bool. Train on cached backbone features. Defaults to True.
            augmented_views: int. Augmented copies of each image to cache. Defaults to 1.
            feature_memory_limit: int. Bytes of cached features held in memory before the
                rest goes to a temporary folder (``TMPDIR``). Defaults to 1 GiB.
            jit_compile: bool or ``"auto"`` (XLA on GPUs only), passed to Keras' ``compile``.
            early_stopping: int. A patience in epochs: stop once the validation loss (the
                training loss without validation data) has not improved for that many
                epochs, and keep the best epoch's weights. None trains every epoch.
            checkpoint_dir: str or path. A folder to checkpoint into after every epoch. After
                an interruption, make the same calls again with the same folder on an equally
                built classifier: finished runs are restored without training and the
                interrupted one resumes (see :doc:`/distributed`). Use a new folder to start
                afresh.
            schedule: ``"constant"`` (the recipe's), ``"one_cycle"`` or ``"cosine"`` (with
                warmup), over the call's ``epochs`` (see :mod:`transferkit.schedules`).
            class_weight: None, ``"balanced"`` (``n / (k * count[c])``, scikit-learn's rule)
                or a dict from class name (or index) to weight, applied in the loss (cached
                features too; the validation loss alike). See the imbalanced-data guide.
            regularization: a :class:`~transferkit.Regularization` (label smoothing, weight
                EMA, MixUp or CutMix, a greedy soup of the best epochs), or None for none.

        Returns:
            :attr:`history`, with this stage's epochs appended.

        Raises:
            TrainingDivergedError: the loss (or the weights) became NaN or infinite; the model
                keeps the last finite epoch's weights and :attr:`history` its epochs.
            UnsupportedStrategyError: a MultiWorkerMirroredStrategy over several workers.
            InvalidArgumentError: an argument is invalid, or ``checkpoint_dir`` holds a run
                made with other settings.
        """
        options = StageOptions.create(
            epochs=epochs, batch_size=batch_size, learning_rate=learning_rate,
            optimizer=optimizer, schedule=schedule, class_weight=class_weight,
            callbacks=callbacks, verbose=verbose, jit_compile=jit_compile,
            early_stopping=early_stopping, checkpoint_dir=checkpoint_dir,
            regularization=regularization,
        )  # fmt: skip
        cache = CacheOptions.create(
            cache_features=cache_features, augmented_views=augmented_views,
            feature_memory_limit=feature_memory_limit,
        )  # fmt: skip
        if isinstance(options.learning_rate, float):
            self._head_learning_rate = options.learning_rate
        self.freeze()
        return self._run_stage("head", data, validation_data, options, _RECIPE_HEAD_RATE, cache)

    def fine_tune(
        self,
        data: inputs.LabeledData,
        *,
        validation_data: inputs.LabeledData | None = None,
        epochs: int = 10,
        learning_rate: float | tuple[float, float] | None = None,
        optimizer: keras.optimizers.Optimizer | None = None,
        batch_size: int = 32,
        callbacks: Sequence[keras.callbacks.Callback] | None = None,
        verbose: Verbose = "auto",
        jit_compile: JitCompile = "auto",
        early_stopping: int | None = None,
        checkpoint_dir: str | os.PathLike[str] | None = None,
        schedule: Schedule = "constant",
        layer_decay: float | None = None,
        class_weight: ClassWeight = None,
        regularization: Regularization | None = None,
    ) -> TrainingHistory:
        """Fine-tunes the unfrozen top of the backbone together with the head (stage two).

        Call :meth:`unfreeze` first (else :class:`~transferkit.errors.NotUnfrozenError`).
        Fine-tuning before :meth:`fit_head` warns: a random head's gradients wreck the
        pretrained features.

        Args:
            data: as for :meth:`fit_head`.
            validation_data: as for :meth:`fit_head`.
            epochs: int. Epochs to train, numbered on from the head stage. Defaults to 10.
            learning_rate: float, or a ``(low, high)`` pair. RMSprop's learning rate (the
                peak of a ``schedule``). A pair gives each unfrozen block its own rate,
                geometrically spaced from ``low`` (lowest block) to ``high`` (the head), as
                :func:`transferkit.discriminative.block_groups` tells the blocks. Defaults
                to a tenth of the head stage's rate (1e-5 with the defaults, the recipe's).
            optimizer: a Keras optimizer instead of RMSprop (then leave ``learning_rate``,
                ``schedule`` and ``layer_decay`` out).
            batch_size: int. Batch size for arrays and folders. Defaults to 32.
            callbacks: Keras callbacks, passed to ``fit``.
            verbose: Keras' progress output: ``"auto"``, 0, 1 or 2.
            jit_compile: as for :meth:`fit_head`.
            early_stopping: as for :meth:`fit_head`.
            checkpoint_dir: as for :meth:`fit_head`; it may be the head stage's folder.
            schedule: as for :meth:`fit_head`; with discriminative rates every block
                follows it, scaled to its own peak.
            layer_decay: float in (0, 1], or None. timm's layer-wise decay: the head trains
                at ``learning_rate`` and each block below at ``layer_decay`` times the rate
                of the block above. Not with a ``(low, high)`` pair. Defaults to None.
            class_weight: as for :meth:`fit_head`.
            regularization: as for :meth:`fit_head`.

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
        options = StageOptions.create(
            epochs=epochs, batch_size=batch_size, learning_rate=learning_rate,
            optimizer=optimizer, schedule=schedule, class_weight=class_weight,
            layer_decay=layer_decay, by_block=True,  # discriminative rates: fine-tuning only
            callbacks=callbacks, verbose=verbose, jit_compile=jit_compile,
            early_stopping=early_stopping, checkpoint_dir=checkpoint_dir,
            regularization=regularization,
        )  # fmt: skip
        if "head" not in self.history.stages:
            warnings.warn(
                "fine_tune() before fit_head(): the head is still random, and its gradients "
                "will wreck the pretrained features. Train the head first.",
                TransferkitWarning,
                stacklevel=2,
            )
        rate = self._head_learning_rate * _RECIPE_FINE_TUNE_FACTOR
        return self._run_stage("fine_tune", data, validation_data, options, rate)

    # ------------------------------------------------------------------ helpers

    def _target(self) -> stages.Target:
        return stages.Target(
            self.model, self.backbone, self.spec, self.config, self._strategy, self._unfrozen_from
        )

    def _set_thresholds(self, value: tuple[float, ...]) -> None:
        self._thresholds = value

    def _set_temperature(self, temperature: float) -> None:
        self._probabilities = graph.Probabilities(self.is_binary, self.multi_label, temperature)

    def _adopt(self, names: Sequence[str] | None) -> None:
        # Data that names its classes names a classifier that has none (checked to fit).
        if names is not None and self.config.class_names is None:
            self.config = self.config.with_class_names(names)

    def _labeled(
        self, data: inputs.LabeledData, batch_size: int, *, name: str = "data",
        shuffle: bool = False, in_order: bool = False,
    ) -> resolve.Labeled:  # fmt: skip
        batch_size = _validation.positive_int("batch_size", batch_size)
        labeled = resolve.labeled(
            data, expected(self), batch_size=batch_size, name=name, shuffle=shuffle,
            in_order=in_order,
        )  # fmt: skip
        self._adopt(labeled.class_names)
        return labeled

    def _run_stage(
        self, stage: Stage, data: inputs.LabeledData, validation_data: inputs.LabeledData | None,
        options: StageOptions, default_rate: float, cache: CacheOptions | None = None,
    ) -> TrainingHistory:  # fmt: skip
        train, names = resolve.training(data, expected(self), batch_size=options.batch_size)
        self._adopt(names)
        validation = None if validation_data is None else self._labeled(
            validation_data, options.batch_size, name="validation_data"
        ).dataset  # fmt: skip
        default = keras.optimizers.Adam if stage == "head" else keras.optimizers.RMSprop
        outcome = stages.run(
            self._target(), stage, train, validation, options, history=self.history,
            default_optimizer=default, default_rate=default_rate, cache=cache,
        )  # fmt: skip
        self.history = outcome.history
        if outcome.diverged is not None:
            raise outcome.diverged
        return self.history

    def __repr__(self) -> str:
        state = "frozen" if self._unfrozen_from is None else f"unfrozen from {self._unfrozen_from}"
        return (
            f"TransferClassifier({self.spec.name!r}, num_classes={self.num_classes}, "
            f"image_size={self.image_size}, backbone {state})"
        )
