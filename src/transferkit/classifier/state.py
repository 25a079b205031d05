"""What the method groups of the classifier read of it, and the few ways they change it.

:class:`ClassifierState` is the self type of the methods in
:mod:`~transferkit.classifier.one_call`, :mod:`~transferkit.classifier.inference_methods` and
:mod:`~transferkit.classifier.file_methods` (mypy's protocol-typed mixins): they read the
state through it and change it only through the methods that
:class:`~transferkit.classifier.transfer_classifier.TransferClassifier` defines.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

import keras
import numpy as np

from transferkit.backbones.spec import Backbone
from transferkit.data import inputs, resolve
from transferkit.history import TrainingHistory
from transferkit.model.config import ClassifierConfig
from transferkit.model.graph import Probabilities
from transferkit.training import stages

__all__ = ["ClassifierState"]


class ClassifierState(Protocol):
    """The state of a :class:`~transferkit.TransferClassifier`, as its methods see it."""

    model: keras.Model
    backbone: keras.Model
    spec: Backbone
    config: ClassifierConfig
    history: TrainingHistory
    _head_learning_rate: float
    _probabilities: Probabilities

    @property
    def class_names(self) -> list[str] | None:
        """The class names, or None."""

    @property
    def num_classes(self) -> int:
        """The number of classes."""

    @property
    def image_size(self) -> tuple[int, int]:
        """The image size the model takes."""

    @property
    def is_binary(self) -> bool:
        """Whether the head is one logit."""

    @property
    def multi_label(self) -> bool:
        """Whether labels are multi-hot."""

    @property
    def thresholds(self) -> tuple[float, ...] | None:
        """The per-class thresholds of a multi-label classifier."""

    @property
    def temperature(self) -> float:
        """The temperature predictions divide the logits by (1 until calibrated)."""

    @property
    def unfrozen_from(self) -> int | None:
        """The first trainable block, or None."""

    @property
    def strategy(self) -> Any:
        """The ``tf.distribute.Strategy``, or None."""

    @property
    def head_layers(self) -> list[keras.layers.Layer]:
        """The layers after the backbone."""

    # The public methods the groups call on each other, by name (their signatures are the
    # classifier's own).
    @property
    def fit_head(self) -> Callable[..., TrainingHistory]:
        """Stage one."""

    @property
    def fine_tune(self) -> Callable[..., TrainingHistory]:
        """Stage two."""

    @property
    def unfreeze(self) -> Callable[..., Any]:
        """Unfreezes the backbone from a block on."""

    @property
    def find_learning_rate(self) -> Callable[..., Any]:
        """The learning-rate finder."""

    @property
    def predict(self) -> Callable[..., np.ndarray]:
        """Probabilities of images."""

    @property
    def interpret(self) -> Callable[..., Any]:
        """Interpretation of labeled data."""

    @property
    def evaluate(self) -> Callable[..., dict[str, float]]:
        """Loss and metrics on labeled data."""

    @property
    def freeze(self) -> Callable[..., Any]:
        """Freezes the whole backbone."""

    def _target(self) -> stages.Target:
        """What a stage trains."""

    def _set_thresholds(self, value: tuple[float, ...]) -> None:
        """Sets checked thresholds."""

    def _set_temperature(self, temperature: float) -> None:
        """Sets the temperature that predictions divide the logits by."""

    def _labeled(
        self,
        data: inputs.LabeledData,
        batch_size: int,
        *,
        name: str = "data",
        shuffle: bool = False,
        in_order: bool = False,
    ) -> resolve.Labeled:
        """Resolves labeled data, adopting the class names it carries."""
