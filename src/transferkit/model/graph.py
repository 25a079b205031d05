"""The classifier's Keras graph: raw pixels → augmentation → preprocessing → backbone → head.

Two registered layers make the recipe's intent hold on Keras 3:

* :class:`InferenceMode` runs the backbone with an explicit ``training=False``. Keras 3
  overrides a ``training=False`` recorded in a functional graph with the ``training=True`` of
  ``fit`` (keras-team/keras#20285); an explicit argument inside a layer's ``call`` wins. So
  Dropout (and stochastic depth) inside a backbone never drops features, frozen or not: the
  tutorial's ``base_model(x, training=False)`` on Keras 2, where the whole base ran in
  inference mode during fine-tuning too. BatchNormalization layers are also kept
  ``trainable=False`` (see :mod:`transferkit.backbones.freezing`), so their statistics never move.
* :class:`Probabilities` turns logits into per-class probabilities, shared by
  :meth:`~transferkit.TransferClassifier.predict` and the exported serving signature.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator
from typing import Any

import keras

from transferkit.backbones.spec import Backbone
from transferkit.model.config import ClassifierConfig

__all__ = [
    "BACKBONE_LAYER",
    "HEAD_LAYERS",
    "InferenceMode",
    "Probabilities",
    "build_model",
    "global_dtype_policy",
]

#: The name of the top-level layer that holds the backbone.
BACKBONE_LAYER = "backbone"
#: The names of the layers after the backbone, in order.
HEAD_LAYERS = ("pooling", "dropout", "logits")


@keras.saving.register_keras_serializable(package="transferkit")
class InferenceMode(keras.layers.Wrapper):
    """Calls the wrapped layer (a backbone) with ``training=False``, whatever the caller says.

    Args:
        layer: the layer or model to run in inference mode.
        **kwargs: base layer arguments (``name``, ``dtype``).
    """

    def call(self, inputs: Any) -> Any:
        """Runs the wrapped layer in inference mode."""
        return self.layer(inputs, training=False)


@keras.saving.register_keras_serializable(package="transferkit")
class Probabilities(keras.layers.Layer):
    """Per-class probabilities from the classifier's logits.

    One logit (two classes) gives ``[1 - sigmoid, sigmoid]``; one logit per class gives the
    softmax. Rows sum to 1 either way. A multi-label head gives each class's own sigmoid:
    independent yes/no probabilities.

    Args:
        binary: bool. Whether the logits are the single logit of a two-class head.
        multi_label: bool. Whether each logit is an independent class. Defaults to False.
        temperature: float. The logits are divided by it first (temperature scaling, as
            ``TransferClassifier.calibrate`` fits it). Defaults to 1.0.
        **kwargs: base layer arguments.
    """

    def __init__(
        self, binary: bool, multi_label: bool = False, temperature: float = 1.0, **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        self.binary = bool(binary)
        self.multi_label = bool(multi_label)
        self.temperature = float(temperature)

    def call(self, logits: Any) -> Any:
        """Probabilities for a batch of logits."""
        logits = keras.ops.cast(logits, "float32") / self.temperature
        if self.multi_label:
            return keras.ops.sigmoid(logits)
        if self.binary:
            positive = keras.ops.sigmoid(logits)
            return keras.ops.concatenate([1.0 - positive, positive], axis=-1)
        return keras.ops.softmax(logits, axis=-1)

    def log_probabilities(self, logits: Any) -> Any:
        """The log of the same probabilities, in float64, for losses that never underflow.

        Test-time augmentation averages views in this form and interpretation reads each
        example's loss from it, as training's cross-entropy computes it from the logits.

        Returns:
            ``(batch, num_classes)`` log-probabilities (two columns for a binary head: the
            log of ``1 - sigmoid`` and of ``sigmoid``); for a multi-label head
            ``(batch, num_classes, 2)``: each class's ``log(1 - p)`` and ``log p``.
        """
        logits = keras.ops.cast(logits, "float64") / self.temperature
        if self.multi_label:
            return keras.ops.stack(
                [keras.ops.log_sigmoid(-logits), keras.ops.log_sigmoid(logits)], axis=-1
            )
        if self.binary:
            return keras.ops.concatenate(
                [keras.ops.log_sigmoid(-logits), keras.ops.log_sigmoid(logits)], axis=-1
            )
        return keras.ops.log_softmax(logits, axis=-1)

    def compute_output_shape(self, input_shape: tuple[int | None, ...]) -> tuple[int | None, ...]:
        """``(batch, 2)`` for a binary head, the input shape otherwise."""
        return (input_shape[0], 2) if self.binary else tuple(input_shape)

    def get_config(self) -> dict[str, Any]:
        """The layer's constructor arguments."""
        return {
            **super().get_config(),
            "binary": self.binary,
            "multi_label": self.multi_label,
            "temperature": self.temperature,
        }


def build_model(
    config: ClassifierConfig,
    spec: Backbone,
    backbone: keras.Model,
    augmentation: keras.Sequential | None,
) -> keras.Model:
    """The recipe's graph: augmentation → preprocessing → backbone → pooling → dropout → dense.

    The pooling is the config's: global averaging of a feature map, or the class token or
    mean patch token of a transformer (see :mod:`transferkit.pooling`).

    Args:
        config: the classifier's settings (classes, image size, dropout).
        spec: the backbone's spec (for its preprocessing and pooling layers).
        backbone: the built backbone model.
        augmentation: the augmentation model, or None.

    Returns:
        A model from raw pixels to logits (one logit for two single-label classes, one per
        class otherwise).
    """
    inputs = keras.Input(shape=(*config.image_size, 3), name="image")
    x = augmentation(inputs) if augmentation is not None else inputs
    x = spec.preprocessing_layer()(x)
    x = InferenceMode(backbone, name=BACKBONE_LAYER)(x)
    x = spec.pooling_layer(backbone, config.pooling, name="pooling")(x)
    x = keras.layers.Dropout(config.dropout, name="dropout")(x)
    # float32 logits even under a mixed-precision policy, for a stable loss.
    units = 1 if config.num_classes == 2 and not config.multi_label else config.num_classes
    outputs = keras.layers.Dense(units, name="logits", dtype="float32")(x)
    # Keras names take no "/" (a keras-hub preset folder's path is a backbone name).
    return keras.Model(inputs, outputs, name="transferkit_" + re.sub(r"\W", "_", spec.name))


@contextlib.contextmanager
def global_dtype_policy(policy: str | None) -> Iterator[None]:
    """Sets Keras' global dtype policy while the model is built (None means float32).

    ``keras.applications`` constructors take no dtype argument: they read the global policy.
    None pins float32, so a global mixed policy set by the user does not leak in.
    """
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(policy or "float32")
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)
