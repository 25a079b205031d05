"""Compiling a classifier's model: its loss (class-weighted when asked) and its metrics.

The loss is cross-entropy on the logits: sparse categorical for one logit per class, binary for
the one logit of two classes, and per class (sigmoid) for multi-label heads; or, as the
classifier's ``loss`` says, the focal or asymmetric loss of a sigmoid head
(:mod:`transferkit.model.losses`). Training, the learning-rate finder and evaluation all
compile through :func:`compile_model`, so they agree.
"""

from __future__ import annotations

from typing import Any

import keras

from transferkit import _backend
from transferkit.model import class_weights as _class_weights
from transferkit.model.config import ClassifierConfig
from transferkit.model.losses import ClassifierLoss

__all__ = [
    "MixedAccuracy",
    "MixedBinaryAccuracy",
    "SigmoidF1Score",
    "compile_model",
    "loss",
    "metrics",
]

#: The probability threshold of the multi-label metrics (logit 0).
_THRESHOLD = 0.5


@keras.saving.register_keras_serializable(package="transferkit")
class SigmoidF1Score(keras.metrics.F1Score):
    """Keras' F1 score, fed with logits: a sigmoid turns them into probabilities first.

    Keras' ``F1Score`` thresholds probabilities (its threshold must lie in (0, 1]), while a
    transferkit head outputs logits.
    """

    def update_state(self, y_true: Any, y_pred: Any, sample_weight: Any = None) -> None:
        """Accumulates the counts for logits ``y_pred``."""
        probabilities = keras.ops.sigmoid(keras.ops.cast(y_pred, self.dtype))
        super().update_state(y_true, probabilities, sample_weight)


def multi_label_metrics(*, soft_targets: bool = False) -> list[keras.metrics.Metric]:
    """The metrics of a multi-label head, computed from its logits.

    ``binary_accuracy`` is the fraction of correct yes/no answers over every image and
    class (at probability 0.5), ``macro_f1`` the mean of the classes' F1 scores and ``auc``
    the mean of the classes' ROC AUCs (``keras.metrics.AUC(multi_label=True)``). With
    ``soft_targets`` (MixUp, CutMix) the accuracy rounds the mixed targets.
    """
    accuracy = MixedBinaryAccuracy if soft_targets else keras.metrics.BinaryAccuracy
    return [
        accuracy(threshold=0.0, name="binary_accuracy"),  # logit 0 = p 0.5
        SigmoidF1Score(average="macro", threshold=_THRESHOLD, name="macro_f1"),
        keras.metrics.AUC(multi_label=True, from_logits=True, name="auc"),
    ]


@keras.saving.register_keras_serializable(package="transferkit")
class MixedAccuracy(keras.metrics.SparseCategoricalAccuracy):
    """Keras' sparse categorical accuracy, whose labels may also be rows of probabilities.

    MixUp and CutMix train on mixed labels; a row counts as the class it weighs most.
    """

    def update_state(self, y_true: Any, y_pred: Any, sample_weight: Any = None) -> None:
        """Accumulates the accuracy of ``y_pred`` on class indices or rows of them."""
        if len(y_true.shape) == 2 and y_true.shape[-1] == y_pred.shape[-1]:
            y_true = keras.ops.argmax(y_true, axis=-1)
        super().update_state(y_true, y_pred, sample_weight)


@keras.saving.register_keras_serializable(package="transferkit")
class MixedBinaryAccuracy(keras.metrics.BinaryAccuracy):
    """Keras' binary accuracy, whose mixed targets (MixUp, CutMix) count as the nearer of 0, 1."""

    def update_state(self, y_true: Any, y_pred: Any, sample_weight: Any = None) -> None:
        """Accumulates the accuracy of ``y_pred`` on rounded targets."""
        super().update_state(keras.ops.round(y_true), y_pred, sample_weight)


def metrics(config: ClassifierConfig, *, soft_targets: bool = False) -> list[keras.metrics.Metric]:
    """The metrics a classifier reports: accuracy, or the multi-label ones.

    ``soft_targets`` (MixUp, CutMix) makes a softmax head's accuracy take rows of class
    probabilities, and binary accuracies round mixed targets (F1 and AUC take them as they
    are).
    """
    if config.multi_label:
        return multi_label_metrics(soft_targets=soft_targets)
    if config.num_classes == 2:
        accuracy = MixedBinaryAccuracy if soft_targets else keras.metrics.BinaryAccuracy
        return [accuracy(threshold=0.0, name="accuracy")]
    if soft_targets:
        return [MixedAccuracy(name="accuracy")]
    return [keras.metrics.SparseCategoricalAccuracy(name="accuracy")]


def loss(
    config: ClassifierConfig,
    class_weights: _class_weights.ClassWeights | None = None,
    *,
    label_smoothing: float = 0.0,
    soft_targets: bool = False,
) -> keras.losses.Loss:
    """The classifier's training loss on the logits (``config.loss``).

    Keras' own cross-entropy when nothing more is asked; otherwise a
    :class:`~transferkit.model.losses.ClassifierLoss` with the class weights, the label
    smoothing, and targets that may be soft (``soft_targets``: MixUp, CutMix).
    """
    kind: _class_weights.Kind = (
        "multi_label" if config.multi_label else "binary" if config.num_classes == 2 else "sparse"
    )
    if config.loss == "crossentropy" and not (label_smoothing or soft_targets):
        return _class_weights.make_loss(kind, class_weights)
    positive = negative = None
    if class_weights is not None:
        positive = list(class_weights.positive)
        negative = None if class_weights.negative is None else list(class_weights.negative)
    return ClassifierLoss(
        kind, form=config.loss, positive=positive, negative=negative,
        label_smoothing=label_smoothing,
    )  # fmt: skip


def compile_model(
    model: keras.Model,
    config: ClassifierConfig,
    optimizer: keras.optimizers.Optimizer,
    *,
    strategy: Any = None,
    jit_compile: bool | str = "auto",
    class_weights: _class_weights.ClassWeights | None = None,
    label_smoothing: float = 0.0,
    soft_targets: bool = False,
) -> None:
    """Compiles ``model`` with the classifier's loss and metrics, in the strategy's scope.

    ``label_smoothing`` and ``soft_targets`` are a training stage's (see :func:`loss`).
    """
    with _backend.scope(strategy):
        model.compile(
            optimizer=optimizer,
            loss=loss(
                config, class_weights, label_smoothing=label_smoothing, soft_targets=soft_targets
            ),
            metrics=metrics(config, soft_targets=soft_targets),
            jit_compile=jit_compile,
        )
