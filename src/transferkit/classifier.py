"""``TransferClassifier``: the two-stage transfer-learning recipe as one object.

Stage one trains a new head on a frozen backbone (:meth:`TransferClassifier.fit_head`); stage
two unfreezes the top of the backbone (:meth:`TransferClassifier.unfreeze`) and fine-tunes it
at a lower learning rate (:meth:`TransferClassifier.fine_tune`). The backbone always runs in
inference mode and its BatchNormalization layers stay frozen (see :mod:`transferkit._graph`
and :mod:`transferkit._freezing` for why that takes more than ``training=False`` on Keras 3).

The pieces live in modules of their own: the settings in :mod:`transferkit._config`, the
graph in :mod:`transferkit._graph`, the training stages in :mod:`transferkit._stages`, saving
and loading in :mod:`transferkit._persistence`.
"""

from __future__ import annotations

import contextlib
import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from transferkit import (
    _class_weights,
    _features,
    _fit,
    _freezing,
    _graph,
    _inputs,
    _multi_label,
    _persistence,
    _stages,
    _training,
    _tta,
    _validation,
    lr_finder,
)
from transferkit import interpret as _interpret
from transferkit._class_weights import ClassWeight
from transferkit._config import ClassifierConfig, DtypePolicy
from transferkit._multi_label import ThresholdMetric
from transferkit._registry import get_backbone
from transferkit._stages import JitCompile, Verbose
from transferkit.augmentation import Augmentation, build_augmentation
from transferkit.backbone import Backbone, ImageSize, Weights
from transferkit.errors import InvalidArgumentError, NotUnfrozenError, TransferkitWarning
from transferkit.export import ExportFormat, Quantization, export_classifier
from transferkit.history import Stage, TrainingHistory
from transferkit.pooling import Pooling
from transferkit.schedules import Schedule

__all__ = ["TransferClassifier", "load_classifier"]

# The recipe's rates: Adam 1e-4 for the head, RMSprop at a tenth of that for fine-tuning.
_HEAD_LEARNING_RATE = 1e-4
_FINE_TUNE_RATE_FACTOR = 0.1


class TransferClassifier:
    """An image classifier made of a pretrained backbone and a new head.

    The Keras graph is the reference recipe's: raw pixels → augmentation (training only) →
    the backbone's preprocessing → backbone → pooling → dropout → dense
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
            or None for float32 (also when Keras' global policy is a mixed one). The layers
            compute in the half type and keep float32 variables; the dense logits stay
            float32 for a stable loss. Keras' global policy is only changed while the model
            is built. Defaults to None.
        multi_label: bool. Whether an image may have several classes: one sigmoid logit
            per class, binary cross-entropy, multi-hot targets (as
            :func:`transferkit.data.from_csv` gives them), independent per-class
            probabilities and per-class :attr:`thresholds`. Defaults to False.
        pooling: ``"avg"`` (global average of a CNN's feature map), ``"cls"`` (a
            transformer's class token) or ``"mean"`` (the mean of its patch tokens), or
            None for the backbone's default (``Backbone.pooling``). Defaults to None.

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
    ) -> None:
        # Validate everything before building anything.
        spec = backbone if isinstance(backbone, Backbone) else get_backbone(backbone)
        config = ClassifierConfig.create(
            spec,
            num_classes=num_classes,
            class_names=class_names,
            image_size=image_size,
            dropout=dropout,
            dtype_policy=dtype_policy,
            multi_label=multi_label,
            pooling=pooling,
        )
        spec.check_weights(weights, config.image_size)
        if backbone_kwargs is not None and not isinstance(backbone_kwargs, dict):
            msg = f"backbone_kwargs must be a dict. Received: backbone_kwargs={backbone_kwargs!r}"
            raise InvalidArgumentError(msg)
        scope = strategy.scope() if strategy is not None else contextlib.nullcontext()
        with scope, _graph.global_dtype_policy(config.dtype_policy):
            augmentation_model = build_augmentation(augmentation)
            backbone_model = spec.build(
                config.image_size, weights=weights, **(backbone_kwargs or {})
            )
            model = _graph.build_model(config, spec, backbone_model, augmentation_model)
        self._attach(config, spec, model, strategy, TrainingHistory(), _HEAD_LEARNING_RATE)
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
        # The one place a classifier's state is set: by the constructor and by loading.
        self.config = config
        self.spec = spec
        self.model = model
        self.backbone: keras.Model = model.get_layer(_graph.BACKBONE_LAYER).layer
        self.history = history
        self._strategy = strategy
        self._head_learning_rate = head_learning_rate
        self._unfrozen_from: int | None = None
        self._probabilities = _graph.Probabilities(self.is_binary, self.multi_label)
        self._thresholds = (
            (_multi_label.DEFAULT_THRESHOLD,) * config.num_classes if config.multi_label else None
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

        :meth:`predict_labels` gives an image every class whose probability reaches the
        class's threshold. They are 0.5 until :meth:`tune_thresholds` picks them or they
        are set (one number for every class, or one per class), and are saved with the
        classifier.
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
        self._thresholds = _multi_label.check_thresholds(value, self.num_classes)

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
        return [self.model.get_layer(name) for name in _graph.HEAD_LAYERS]

    # ------------------------------------------------------------------ freezing

    def unfreeze(self, from_layer: int | str | None = None) -> TransferClassifier:
        """Makes the backbone trainable from a block on, BatchNormalization excepted.

        Blocks before ``from_layer`` stay frozen; BatchNormalization layers always stay
        frozen (inference mode), so their moving statistics never change. A block is a
        layer of ``clf.backbone.layers`` for ``keras.applications`` backbones, and the patch
        embedding or one transformer block for a keras-hub transformer
        (``clf.spec.layout_of(clf.backbone).blocks``), so ``unfreeze(-4)`` unfreezes its last
        four transformer blocks. LayerNormalization trains with its block. The model is
        recompiled at the next :meth:`fine_tune`, as Keras requires for a change of
        ``trainable`` to take effect.

        Args:
            from_layer: an index into the blocks (any integer type; negative counts from
                the top, as the recipe's ``100`` of MobileNetV2's 154 layers), the name of
                a block's first layer, or None to unfreeze the whole backbone.

        Returns:
            The classifier, for chaining.

        Raises:
            UnknownLayerError: the index is out of range or no layer has that name.
        """
        blocks = self.spec.layout_of(self.backbone).blocks
        index = _freezing.resolve_layer_index(self.backbone, from_layer, blocks)
        _freezing.unfreeze_from(self.backbone, index, blocks)
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
        schedule: Schedule = "constant",
        class_weight: ClassWeight = None,
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
            learning_rate: float. Adam's learning rate (the peak of a ``schedule``).
                Defaults to 1e-4 (the recipe's). :meth:`find_learning_rate` suggests one.
            optimizer: a Keras optimizer to use instead of Adam (then leave
                ``learning_rate`` and ``schedule`` out).
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
                A schedule resumes at the step it had reached.
            schedule: ``"constant"`` (the recipe's), ``"one_cycle"`` or ``"cosine"`` (with
                warmup): how the learning rate changes over the call's ``epochs`` (see
                :mod:`transferkit.schedules`). Schedules need the number of batches per
                epoch, which datasets of unknown length do not know. Defaults to
                ``"constant"``.
            class_weight: None, ``"balanced"`` or a dict from class name (or index) to
                weight. ``"balanced"`` weighs an image of class ``c`` by
                ``n / (k * count[c])`` (scikit-learn's rule), counted on the training
                labels; a dict leaves unnamed classes at 1. Multi-label weights are per
                label (see the imbalanced-data guide). Applied in the loss, so on cached
                features too; the validation loss is weighted the same way. Defaults to
                None.

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
        options = _stages.StageOptions.create(
            epochs=epochs,
            batch_size=batch_size,
            learning_rate=learning_rate,
            optimizer=optimizer,
            callbacks=callbacks,
            verbose=verbose,
            jit_compile=jit_compile,
            early_stopping=early_stopping,
            checkpoint_dir=checkpoint_dir,
            schedule=schedule,
            class_weight=class_weight,
        )
        cache = _stages.CacheOptions.create(
            cache_features=cache_features,
            augmented_views=augmented_views,
            feature_memory_limit=feature_memory_limit,
        )
        if isinstance(options.learning_rate, float):
            self._head_learning_rate = options.learning_rate
        self.freeze()
        return _stages.run(
            self,
            "head",
            data,
            validation_data,
            options,
            default_optimizer=keras.optimizers.Adam,
            default_rate=_HEAD_LEARNING_RATE,
            cache=cache,
        )

    def fine_tune(
        self,
        data: _inputs.LabeledData,
        *,
        validation_data: _inputs.LabeledData | None = None,
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
            learning_rate: float, or a ``(low, high)`` pair. RMSprop's learning rate (the
                peak of a ``schedule``). A pair gives each block of the unfrozen backbone a
                rate of its own, geometrically spaced from ``low`` for the lowest unfrozen
                block to ``high`` for the head (discriminative rates; blocks as
                :func:`transferkit.discriminative.block_groups` tells them). Defaults to a
                tenth of the head stage's rate (1e-5 with the defaults, as in the recipe).
            optimizer: a Keras optimizer to use instead of RMSprop (then leave
                ``learning_rate``, ``schedule`` and ``layer_decay`` out).
            batch_size: int. Batch size for arrays. Defaults to 32.
            callbacks: Keras callbacks, passed through to ``fit``.
            verbose: Keras' progress output: ``"auto"``, 0, 1 or 2.
            jit_compile: as for :meth:`fit_head`.
            early_stopping: as for :meth:`fit_head`.
            checkpoint_dir: as for :meth:`fit_head`; the folder may be the one the head
                stage used.
            schedule: as for :meth:`fit_head`; with discriminative rates, every block
                follows it, scaled to its own peak. Defaults to ``"constant"``.
            layer_decay: float in (0, 1], or None. timm's layer-wise decay: the head
                trains at ``learning_rate`` and each block below at ``layer_decay`` times
                the rate of the block above. Not with a ``(low, high)`` pair. Defaults to
                None (one rate for all).
            class_weight: as for :meth:`fit_head`.

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
        options = _stages.StageOptions.create(
            epochs=epochs,
            batch_size=batch_size,
            learning_rate=learning_rate,
            optimizer=optimizer,
            callbacks=callbacks,
            verbose=verbose,
            jit_compile=jit_compile,
            early_stopping=early_stopping,
            checkpoint_dir=checkpoint_dir,
            schedule=schedule,
            layer_decay=layer_decay,
            by_block=True,
            class_weight=class_weight,
        )
        if "head" not in self.history.stages:
            warnings.warn(
                "fine_tune() before fit_head(): the head is still random, and its gradients "
                "will wreck the pretrained features. Train the head first.",
                TransferkitWarning,
                stacklevel=2,
            )
        return _stages.run(
            self,
            "fine_tune",
            data,
            validation_data,
            options,
            default_optimizer=keras.optimizers.RMSprop,
            default_rate=self._head_learning_rate * _FINE_TUNE_RATE_FACTOR,
        )

    def fit(
        self,
        data: _inputs.LabeledData,
        *,
        validation_data: _inputs.LabeledData | None = None,
        epochs: int | None = None,
        validation_split: float = 0.2,
        learning_rate: float | None = None,
        batch_size: int = 32,
        callbacks: Sequence[keras.callbacks.Callback] | None = None,
        verbose: Verbose = "auto",
        seed: int = 0,
        checkpoint_dir: str | os.PathLike[str] | None = None,
        class_weight: ClassWeight = None,
    ) -> TrainingHistory:
        """The whole job in one call: head, unfreeze, fine-tune, with measured defaults.

        1. Without ``validation_data``, holds out ``validation_split`` of each class
           (seeded; a folder with a ``validation/`` folder uses it; multi-hot labels are
           split by iterative stratification, keeping every label in training).
        2. Trains the head with Adam at the :meth:`find_learning_rate` suggestion, a
           cosine schedule and about 150 optimizer steps, stopping early on the
           validation loss and keeping the best epoch.
        3. Unfreezes the whole backbone (BatchNormalization stays frozen).
        4. Fine-tunes with Adam at the head's rate, a cosine schedule with warmup and
           about 80 optimizer steps, stopping early on the validation loss and keeping
           the best epoch.

        Budgets count optimizer steps, so they scale with the data. Every decision (the
        split, the rates, the layer, the epochs budgeted and run) is recorded in
        ``history.decisions`` and printed, one line each, unless ``verbose=0``. See the
        transfer-quality page of the docs for the measurements behind the defaults;
        :meth:`fit_head` and :meth:`fine_tune` remain for the recipe's fixed settings.

        Args:
            data: as for :meth:`fit_head`.
            validation_data: as for :meth:`fit_head`; None holds a split out of ``data``.
            epochs: int. Fine-tuning epochs, instead of the step budget. Defaults to None.
            validation_split: float in (0, 1). The fraction of each class held out when
                there is no ``validation_data``. Defaults to 0.2.
            learning_rate: float. The head's rate instead of the finder's (fine-tuning's
                follows it). Defaults to None.
            batch_size: int. Batch size for arrays. Defaults to 32.
            callbacks: Keras callbacks, passed to both stages.
            verbose: Keras' progress output, and whether decisions are printed.
            seed: int. Seed of the validation split. Defaults to 0.
            checkpoint_dir: as for :meth:`fit_head`: run the same ``fit`` again with the
                same folder to resume; the finder's suggestion is kept there too.
            class_weight: as for :meth:`fit_head`, in both stages. Defaults to None.

        Returns:
            :attr:`history`, with both stages' epochs and the decisions.

        Raises:
            DataError: a class has too few images to hold one out for validation.
            TrainingDivergedError: as for :meth:`fit_head`.
        """
        return _fit.fit(
            self,
            data,
            validation_data=validation_data,
            epochs=epochs,
            validation_split=validation_split,
            learning_rate=learning_rate,
            batch_size=batch_size,
            callbacks=callbacks,
            verbose=verbose,
            seed=seed,
            checkpoint_dir=checkpoint_dir,
            class_weight=class_weight,
        )

    def find_learning_rate(
        self,
        data: _inputs.LabeledData,
        *,
        stage: Stage = "head",
        min_lr: float = 1e-7,
        max_lr: float = 10.0,
        steps: int = 100,
        batch_size: int = 32,
    ) -> lr_finder.LearningRateFinderResult:
        """Sweeps learning rates over a few batches and suggests one (fastai's ``lr_find``).

        Trains ``steps`` batches while the rate grows exponentially from ``min_lr`` to
        ``max_lr``, stops early once the smoothed loss diverges, and suggests a rate by
        fastai's valley rule (see :mod:`transferkit.lr_finder`). Every weight, statistic and
        random state of the model, and the compiled optimizer's state, are left exactly as
        they were: nothing is trained for good.

        ``stage="head"`` sweeps Adam on the head as :meth:`fit_head` trains it, on cached
        backbone features (the backbone runs once over the data, so it takes seconds).
        ``stage="fine_tune"`` sweeps RMSprop on the full model as :meth:`fine_tune` trains
        it, one rate for every unfrozen layer; call :meth:`unfreeze` first. With
        discriminative rates, use the suggestion as the head's (``high``) rate.

        Args:
            data: as for :meth:`fit_head`; repeated when it has fewer than ``steps``
                batches.
            stage: ``"head"`` or ``"fine_tune"``. Defaults to ``"head"``.
            min_lr: float. The first rate. Defaults to 1e-7.
            max_lr: float. The last rate. Defaults to 10.
            steps: int. Batches to train, at least 10. Defaults to 100.
            batch_size: int. Batch size for arrays. Defaults to 32.

        Returns:
            A :class:`~transferkit.lr_finder.LearningRateFinderResult`: the rates tried,
            the smoothed losses, the ``suggestion``, and ``plot(path)``.

        Raises:
            NotUnfrozenError: ``stage="fine_tune"`` with the whole backbone frozen.
            InvalidArgumentError: an argument is invalid.
        """
        return lr_finder.sweep_classifier(
            self,
            data,
            stage=stage,
            min_lr=min_lr,
            max_lr=max_lr,
            steps=steps,
            batch_size=batch_size,
        )

    # ------------------------------------------------------------------ inference

    def predict(
        self,
        images: _inputs.Images,
        *,
        batch_size: int = 32,
        verbose: Verbose = 0,
        tta: bool | int = False,
    ) -> np.ndarray:
        """Per-class probabilities for raw-pixel images.

        With ``tta`` (test-time augmentation), the probabilities of several views of each
        image are averaged: ``True`` is the image and its horizontal mirror image; an int
        ``n`` (up to 12) takes the first ``n`` of: the image, its mirror image, the central
        crop of 87.5% of the height and width (resized back), that crop mirrored, then the
        four corner crops of that size, each followed by its mirror image (the ten-crop
        evaluation). It costs one forward pass per view.

        Args:
            images: a numpy array or tensor of shape ``(n, height, width, 3)`` (or one
                image of shape ``(height, width, 3)``), a ``tf.data.Dataset`` of image
                batches (``(images, labels)`` batches are accepted; labels are ignored), or
                the path of an image file or of a folder (its image files, recursively, in
                sorted order; see :func:`transferkit.data.list_images`).
            batch_size: int. Batch size for arrays. Defaults to 32.
            verbose: Keras' progress output. Defaults to 0 (silent).
            tta: bool or int. The views to average (see above); False for none.
                Defaults to False.

        Returns:
            A float32 array of shape ``(n, num_classes)`` whose rows sum to 1; for a
            multi-label classifier, each class's own probability (rows need not sum to 1).
        """
        batch_size = _validation.positive_int("batch_size", batch_size)
        views = self._tta_views(tta)
        inputs = _inputs.as_image_input(images, image_size=self.image_size, batch_size=batch_size)
        with _inputs.naming_undecodable_files(inputs):
            if views > 1:
                return _tta.predict_probabilities(
                    self.model,
                    inputs,
                    batch_size=batch_size,
                    count=views,
                    head=self._probabilities,
                    distributed=self._strategy is not None,
                )
            logits = self.model.predict(inputs, batch_size=batch_size, verbose=verbose)
        return np.asarray(keras.ops.convert_to_numpy(self._probabilities(logits)), np.float32)

    def predict_labels(
        self, images: _inputs.Images, *, batch_size: int = 32, tta: bool | int = False
    ) -> list[str] | list[int] | list[list[str]] | list[list[int]]:
        """The most probable class of each image; for multi-label, every class above threshold.

        Args:
            images: as for :meth:`predict`.
            batch_size: int. Batch size for arrays. Defaults to 32.
            tta: bool or int. Test-time augmentation, as for :meth:`predict`.
                Defaults to False.

        Returns:
            Class names when the classifier has them, class indices otherwise; for a
            multi-label classifier, a list of them per image: the classes whose probability
            reaches their :attr:`thresholds`, in class order (possibly none).
        """
        probabilities = self.predict(images, batch_size=batch_size, tta=tta)
        if self._thresholds is not None:
            return _multi_label.labels_above(probabilities, self._thresholds, self.class_names)
        indices = [int(i) for i in np.argmax(probabilities, -1)]
        names = self.class_names
        return indices if names is None else [names[i] for i in indices]

    def tune_thresholds(
        self,
        validation_data: _inputs.LabeledData,
        *,
        metric: ThresholdMetric = "f1",
        batch_size: int = 32,
    ) -> tuple[float, ...]:
        """Picks each class's threshold on labeled data, and sets :attr:`thresholds`.

        For each class, every cut of the images' sorted probabilities is tried and the
        threshold is set halfway between the two probabilities of the best cut (the one
        nearest 0.5 among equally good ones). A class that no image (or every image) has
        keeps 0.5, with a warning. Tune on validation data, not on the training data.

        Args:
            validation_data: multi-label data, in any form :meth:`fit_head` takes.
            metric: ``"f1"`` (each class's F1 score) or ``"accuracy"`` (its yes/no
                accuracy). Defaults to ``"f1"``.
            batch_size: int. Batch size for arrays. Defaults to 32.

        Returns:
            The new thresholds, one per class.

        Raises:
            InvalidArgumentError: the classifier is not multi-label, or an argument is
                invalid.
        """
        _validation.choice("metric", metric, ("f1", "accuracy"))
        batch_size = _validation.positive_int("batch_size", batch_size)
        if not self.multi_label:
            msg = (
                "tune_thresholds() is for multi-label classifiers; a single-label one "
                "predicts its most probable class. Build it with multi_label=True."
            )
            raise InvalidArgumentError(msg)
        dataset = _stages.labeled_data(
            self, validation_data, batch_size, shuffle=False, name="validation_data"
        )
        probabilities, targets = _multi_label.probabilities_and_targets(
            self.model, self._probabilities, dataset
        )
        self._thresholds = _multi_label.tune_thresholds(
            probabilities, targets, metric=metric, class_names=self.class_names
        )
        return self._thresholds

    def evaluate(
        self,
        data: _inputs.LabeledData,
        *,
        batch_size: int = 32,
        verbose: Verbose = 0,
        tta: bool | int = False,
    ) -> dict[str, float]:
        """Loss and accuracy on labeled data.

        Args:
            data: as for :meth:`fit_head`.
            batch_size: int. Batch size for arrays. Defaults to 32.
            verbose: Keras' progress output. Defaults to 0 (silent).
            tta: bool or int. Test-time augmentation, as for :meth:`predict`: the same
                numbers, of the averaged probabilities. Defaults to False.

        Returns:
            ``{"loss": ..., "accuracy": ...}``; for a multi-label classifier
            ``{"loss", "binary_accuracy", "macro_f1", "auc"}``. The loss is never weighted
            by the ``class_weight`` of training.

        Raises:
            UnsupportedStrategyError: the strategy is a MultiWorkerMirroredStrategy over
                several workers, which Keras 3 cannot evaluate under.
        """
        batch_size = _validation.positive_int("batch_size", batch_size)
        if self._tta_views(tta) > 1:
            return self.interpret(data, batch_size=batch_size, tta=tta).scores()
        _training.check_strategy_can_train(self._strategy)
        dataset = _stages.labeled_data(self, data, batch_size, shuffle=False, name="data")
        if not self.model.compiled or isinstance(
            self.model.loss, _class_weights.ClassWeightedCrossentropy
        ):
            # Keep the optimizer of a compiled model (and its state) for later training.
            _stages.compile_model(self, getattr(self.model, "optimizer", None))
        with _inputs.naming_undecodable_files(dataset):
            results = self.model.evaluate(dataset, verbose=verbose, return_dict=True)
        return {name: float(value) for name, value in results.items()}

    def interpret(
        self, data: _inputs.LabeledData, *, batch_size: int = 32, tta: bool | int = False
    ) -> _interpret.Interpretation | _interpret.MultiLabelInterpretation:
        """Where the classifier is wrong on labeled data: confusion matrix, report, top losses.

        One prediction pass over the data, batch by batch; see
        :func:`transferkit.interpret.interpret`. A multi-label classifier gets per-class
        reports and 2x2 confusion counts at its :attr:`thresholds`.

        Args:
            data: as for :meth:`evaluate`.
            batch_size: int. Batch size for arrays and folders. Defaults to 32.
            tta: bool or int. Test-time augmentation, as for :meth:`predict`.
                Defaults to False.

        Returns:
            An :class:`~transferkit.interpret.Interpretation`; for a multi-label classifier
            a :class:`~transferkit.interpret.MultiLabelInterpretation`.
        """
        return _interpret.interpret(self, data, batch_size=batch_size, tta=tta)

    # ------------------------------------------------------------------ persistence

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Saves model, class names, backbone, freezing state and history to one file.

        The file is a Keras ``.keras`` archive (it loads with
        ``keras.saving.load_model(path, safe_mode=True)`` once transferkit is imported) with
        transferkit's metadata added, including the backbone's facts, so it also loads
        where the backbone's name is not registered. It is written to a temporary file
        next to ``path`` and renamed over it, so an interrupted save never leaves a broken
        file behind.

        Args:
            path: where to write; must end in ``.keras``.

        Returns:
            The path written.
        """
        return _persistence.write(self, path)

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

    def _tta_views(self, tta: object) -> int:
        return _tta.view_count(tta)

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
    and history come back as they were saved. The backbone need not be registered in this
    process: its facts are read from the file.

    Args:
        path: a ``.keras`` file written by :meth:`TransferClassifier.save`.
        strategy: a ``tf.distribute.Strategy`` to load the model under, or None.

    Returns:
        The classifier.

    Raises:
        DataError: the file does not exist or was not written by transferkit.
    """
    model, metadata, config, spec = _persistence.read(path, strategy)
    classifier = TransferClassifier.__new__(TransferClassifier)
    classifier._attach(
        config,
        spec,
        model,
        strategy,
        TrainingHistory.from_dict(metadata["history"]),
        float(metadata["head_learning_rate"]),
    )
    if metadata.get("thresholds") is not None:
        classifier.thresholds = metadata["thresholds"]
    if metadata["unfrozen_from"] is None:
        classifier.freeze()
    else:
        classifier.unfreeze(int(metadata["unfrozen_from"]))
    return classifier
