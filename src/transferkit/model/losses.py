"""The classifier's loss when it is more than Keras' plain cross-entropy.

:class:`ClassifierLoss` is one registered Keras loss for every head (softmax, the one sigmoid
logit of two classes, and multi-label sigmoids) with the options the plain losses lack:

* class weights (:mod:`transferkit.model.class_weights`);
* label smoothing, on sparse targets too (Keras' ``SparseCategoricalCrossentropy`` has none):
  ``(1 - e) * one_hot + e / k`` for a softmax head, ``t * (1 - e) + e / 2`` for sigmoids, as
  Keras' ``BinaryCrossentropy(label_smoothing=e)`` does;
* soft targets, as MixUp and CutMix make them: a softmax head's labels may come as class
  indices (validation) or as rows of class probabilities (mixed training batches);
* for sigmoid heads, the focal loss (Lin et al., 2017; Keras'
  ``BinaryFocalCrossentropy``) and the asymmetric loss (Ridnik et al., 2021), which weigh
  down the many easy negatives of a multi-label problem.

Each class's term is averaged over the classes, as Keras' binary cross-entropy does, so the
numbers stay on the scale of the plain loss.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import keras
from keras import ops

from transferkit import _validation
from transferkit.errors import InvalidArgumentError

__all__ = ["LOSSES", "ClassifierLoss", "LossName"]

#: The loss of a classifier (``TransferClassifier(loss=...)``).
LossName = Literal["crossentropy", "focal", "asymmetric"]
#: The losses, in words; focal and asymmetric are for sigmoid heads.
LOSSES = {
    "crossentropy": "cross-entropy (softmax, or binary for sigmoid heads)",
    "focal": "binary focal loss, gamma 2 (sigmoid heads)",
    "asymmetric": "asymmetric loss: gamma 0 for positives, 4 for negatives, margin 0.05",
}
Kind = Literal["sparse", "binary", "multi_label"]

_EPSILON = 1e-8  # the asymmetric loss's log clamp, as in the paper's code


@keras.saving.register_keras_serializable(package="transferkit")
class ClassifierLoss(keras.losses.Loss):
    """Cross-entropy, focal or asymmetric loss on logits, with class weights and smoothing.

    Args:
        kind: ``"sparse"`` (one logit per class, labels as indices or as rows of class
            probabilities), ``"binary"`` (one logit for two classes) or ``"multi_label"``
            (one logit per class, multi-hot targets).
        form: ``"crossentropy"``, ``"focal"`` or ``"asymmetric"`` (sigmoid heads only).
            Defaults to ``"crossentropy"``.
        positive: list of float, or None. Class weights: of each class (single-label; two
            for a binary head), or of each class's positive term (multi-label).
        negative: list of float, or None. Multi-label only: each class's negative weight.
        label_smoothing: float in [0, 1). Defaults to 0.
        gamma: float. The focal loss's focusing exponent. Defaults to 2.
        gamma_positive: float. The asymmetric loss's exponent for positives. Defaults to 0.
        gamma_negative: float. Its exponent for negatives. Defaults to 4.
        margin: float. Its probability margin: a negative whose probability is below it
            adds nothing. Defaults to 0.05.
        name: str. The loss name. Defaults to ``"classifier_loss"``.
        **kwargs: passed to :class:`keras.losses.Loss` (``reduction``, ``dtype``).
    """

    def __init__(
        self,
        kind: Kind,
        *,
        form: LossName = "crossentropy",
        positive: Sequence[float] | None = None,
        negative: Sequence[float] | None = None,
        label_smoothing: float = 0.0,
        gamma: float = 2.0,
        gamma_positive: float = 0.0,
        gamma_negative: float = 4.0,
        margin: float = 0.05,
        name: str = "classifier_loss",
        **kwargs: Any,
    ) -> None:
        super().__init__(name=name, **kwargs)
        _validation.choice("kind", kind, ("sparse", "binary", "multi_label"))
        _validation.choice("form", form, tuple(LOSSES))
        if form != "crossentropy" and kind == "sparse":
            msg = (
                f"The {form} loss is for sigmoid heads (multi-label, or two classes); a "
                f"softmax head uses cross-entropy. Received: form={form!r}, kind={kind!r}"
            )
            raise InvalidArgumentError(msg)
        if negative is not None and kind != "multi_label":
            msg = f"negative weights are given for multi_label only. Received: kind={kind!r}"
            raise InvalidArgumentError(msg)
        self.kind, self.form = kind, form
        self.positive = None if positive is None else [float(w) for w in positive]
        self.negative = None if negative is None else [float(w) for w in negative]
        if kind == "multi_label" and self.positive is not None and self.negative is None:
            self.negative = [1.0] * len(self.positive)
        self.label_smoothing = _validation.fraction(
            "label_smoothing", label_smoothing, low_inclusive=True
        )
        self.gamma, self.gamma_positive = float(gamma), float(gamma_positive)
        self.gamma_negative, self.margin = float(gamma_negative), float(margin)

    @property
    def for_training(self) -> bool:
        """Whether it differs from the classifier's plain loss (weighted or smoothed)."""
        return self.positive is not None or self.label_smoothing > 0

    def call(self, y_true: Any, y_pred: Any) -> Any:
        """The per-image loss (Keras then averages it over the batch)."""
        logits = ops.cast(y_pred, "float32")
        if self.kind == "sparse":
            return self._softmax(y_true, logits)
        target = ops.cast(ops.reshape(y_true, ops.shape(logits)), "float32")
        weights = None
        if self.positive is not None:
            positive = ops.convert_to_tensor(self.positive, "float32")
            if self.kind == "binary":  # the weights of class 0 and class 1
                weights = (1.0 - target) * positive[0] + target * positive[1]
            else:
                negative = ops.convert_to_tensor(self.negative, "float32")
                weights = target * positive + (1.0 - target) * negative
        if self.label_smoothing:
            target = target * (1.0 - self.label_smoothing) + 0.5 * self.label_smoothing
        terms = self._sigmoid_terms(target, logits)
        return ops.mean(terms if weights is None else terms * weights, axis=-1)

    def _softmax(self, y_true: Any, logits: Any) -> Any:
        units = logits.shape[-1]
        if len(y_true.shape) == 2 and y_true.shape[-1] == units:  # rows of probabilities
            target = ops.cast(y_true, "float32")
        else:
            target = ops.one_hot(ops.cast(ops.reshape(y_true, (-1,)), "int32"), units)
        weight = None
        if self.positive is not None:
            weight = ops.sum(target * ops.convert_to_tensor(self.positive, "float32"), axis=-1)
        if self.label_smoothing:
            target = target * (1.0 - self.label_smoothing) + self.label_smoothing / units
        terms = -ops.sum(target * ops.log_softmax(logits, axis=-1), axis=-1)
        return terms if weight is None else terms * weight

    def _sigmoid_terms(self, target: Any, logits: Any) -> Any:
        log_p, log_not_p = ops.log_sigmoid(logits), ops.log_sigmoid(-logits)
        if self.form == "crossentropy":
            return -(target * log_p + (1.0 - target) * log_not_p)
        probability = ops.sigmoid(logits)
        if self.form == "focal":
            p_t = target * probability + (1.0 - target) * (1.0 - probability)
            bce = -(target * log_p + (1.0 - target) * log_not_p)
            return ops.power(1.0 - p_t, self.gamma) * bce
        # Asymmetric: negatives' probabilities shifted down by the margin, then focused.
        shifted = ops.maximum(probability - self.margin, 0.0)
        log_not_shifted = (
            ops.log(ops.maximum(1.0 - shifted, _EPSILON)) if self.margin > 0 else log_not_p
        )
        positive = ops.power(1.0 - probability, self.gamma_positive) * log_p
        negative = ops.power(shifted, self.gamma_negative) * log_not_shifted
        return -(target * positive + (1.0 - target) * negative)

    def get_config(self) -> dict[str, Any]:
        """The constructor arguments, for saving."""
        return {
            **super().get_config(),
            "kind": self.kind,
            "form": self.form,
            "positive": self.positive,
            "negative": self.negative,
            "label_smoothing": self.label_smoothing,
            "gamma": self.gamma,
            "gamma_positive": self.gamma_positive,
            "gamma_negative": self.gamma_negative,
            "margin": self.margin,
        }
