"""Compiling a classifier's model: its loss (class-weighted when asked) and its metrics.

The loss is cross-entropy on the logits: sparse categorical for one logit per class, binary for
the one logit of two classes, and per class (sigmoid) for multi-label heads. Training, the
learning-rate finder and evaluation all compile through :func:`compile_model`, so they agree.
"""

from __future__ import annotations

from typing import Any

import keras

from transferkit import _backend
from transferkit.model import class_weights as _class_weights
from transferkit.model.config import ClassifierConfig

__all__ = ["SigmoidF1Score", "compile_model", "loss", "metrics"]

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


def multi_label_metrics() -> list[keras.metrics.Metric]:
    """The metrics of a multi-label head, computed from its logits.

    ``binary_accuracy`` is the fraction of correct yes/no answers over every image and
    class (at probability 0.5), ``macro_f1`` the mean of the classes' F1 scores and ``auc``
    the mean of the classes' ROC AUCs (``keras.metrics.AUC(multi_label=True)``).
    """
    return [
        keras.metrics.BinaryAccuracy(threshold=0.0, name="binary_accuracy"),  # logit 0 = p 0.5
        SigmoidF1Score(average="macro", threshold=_THRESHOLD, name="macro_f1"),
        keras.metrics.AUC(multi_label=True, from_logits=True, name="auc"),
    ]


def metrics(config: ClassifierConfig) -> list[keras.metrics.Metric]:
    """The metrics a classifier reports: accuracy, or the multi-label ones."""
    if config.multi_label:
        return multi_label_metrics()
    if config.num_classes == 2:
        return [keras.metrics.BinaryAccuracy(threshold=0.0, name="accuracy")]
    return [keras.metrics.SparseCategoricalAccuracy(name="accuracy")]


def loss(
    config: ClassifierConfig, class_weights: _class_weights.ClassWeights | None = None
) -> keras.losses.Loss:
    """The classifier's training loss: cross-entropy on the logits, optionally class-weighted."""
    kind: _class_weights.Kind = (
        "multi_label" if config.multi_label else "binary" if config.num_classes == 2 else "sparse"
    )
    return _class_weights.make_loss(kind, class_weights)


def compile_model(
    model: keras.Model,
    config: ClassifierConfig,
    optimizer: keras.optimizers.Optimizer,
    *,
    strategy: Any = None,
    jit_compile: bool | str = "auto",
    class_weights: _class_weights.ClassWeights | None = None,
) -> None:
    """Compiles ``model`` with the classifier's loss and metrics, in the strategy's scope."""
    with _backend.scope(strategy):
        model.compile(
            optimizer=optimizer,
            loss=loss(config, class_weights),
            metrics=metrics(config),
            jit_compile=jit_compile,
        )
