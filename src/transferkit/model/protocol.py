"""What the layers below the classifier may read of a classifier: its public, read-only face.

Public functions that take a classifier (:func:`transferkit.interpret.interpret`,
:func:`transferkit.grad_cam`, :func:`transferkit.export.export_classifier`) are typed with
:class:`ClassifierLike`, so that they never import :mod:`transferkit.classifier` (which sits
above them) and never read its private state. Only the classifier changes itself.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

from transferkit.data.resolve import Expected

if TYPE_CHECKING:
    import keras

    from transferkit.backbones.spec import Backbone
    from transferkit.model.config import ClassifierConfig

__all__ = ["ClassifierLike", "expected"]


class ClassifierLike(Protocol):
    """The read-only attributes of a :class:`~transferkit.TransferClassifier`."""

    @property
    def model(self) -> keras.Model:
        """The Keras model: raw pixels in, logits out."""

    @property
    def backbone(self) -> keras.Model:
        """The backbone nested in :attr:`model`."""

    @property
    def spec(self) -> Backbone:
        """The backbone's spec."""

    @property
    def config(self) -> ClassifierConfig:
        """The classifier's settings."""

    @property
    def class_names(self) -> list[str] | None:
        """The class names in label order, or None."""

    @property
    def num_classes(self) -> int:
        """The number of classes."""

    @property
    def image_size(self) -> tuple[int, int]:
        """The ``(height, width)`` of the images the model takes."""

    @property
    def is_binary(self) -> bool:
        """Whether the head is one logit."""

    @property
    def multi_label(self) -> bool:
        """Whether each class is an independent yes/no answer."""

    @property
    def thresholds(self) -> tuple[float, ...] | None:
        """A multi-label classifier's per-class thresholds, or None."""

    @property
    def temperature(self) -> float:
        """The temperature predictions divide the logits by (1 until calibrated)."""

    @property
    def strategy(self) -> Any:
        """The ``tf.distribute.Strategy`` the model lives under, or None."""

    @property
    def head_layers(self) -> list[keras.layers.Layer]:
        """The layers after the backbone."""


def expected(classifier: ClassifierLike) -> Expected:
    """What the classifier's model takes, for :mod:`transferkit.data.resolve`."""
    names = classifier.class_names
    return Expected(
        classifier.image_size,
        classifier.num_classes,
        None if names is None else tuple(names),
        classifier.multi_label,
    )
