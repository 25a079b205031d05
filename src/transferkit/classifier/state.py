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

import numpy as np

from transferkit.data import inputs, resolve
from transferkit.history import TrainingHistory
from transferkit.model.graph import Probabilities
from transferkit.model.protocol import ClassifierLike
from transferkit.training import stages

__all__ = ["ClassifierState"]


class ClassifierState(ClassifierLike, Protocol):
    """The state of a :class:`~transferkit.TransferClassifier`, as its methods see it.

    The public read-only attributes are :class:`~transferkit.model.protocol.ClassifierLike`'s;
    these are what the method groups read besides.
    """

    history: TrainingHistory
    _head_learning_rate: float
    _probabilities: Probabilities

    @property
    def unfrozen_from(self) -> int | None:
        """The first trainable block, or None."""

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
