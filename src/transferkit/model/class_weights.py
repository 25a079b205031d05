"""Class weights: the ``class_weight`` argument of every training call, and the loss it makes.

``class_weight`` is None, ``"balanced"`` or a dict from class (name or index) to weight.

- Single-label: the loss of an image of class ``c`` is multiplied by ``w[c]``, as Keras'
  ``fit(class_weight=...)`` does. ``"balanced"`` is scikit-learn's rule,
  ``w[c] = n / (k * count[c])`` for ``n`` images of ``k`` classes, so every class adds the
  same total weight to an epoch.
- Multi-label: each class is its own yes/no question, so weights are per label. A dict
  weighs the *positive* term of that class's binary cross-entropy (as PyTorch's
  ``pos_weight`` does); ``"balanced"`` applies scikit-learn's rule to each label as a
  two-class problem: positives weigh ``n / (2 * positives[c])`` and negatives
  ``n / (2 * (n - positives[c]))``.

The weights are applied inside the loss (:class:`ClassWeightedCrossentropy`), not through
Keras' ``fit(class_weight=...)``, because Keras' argument cannot weigh multi-hot targets and
does not reach the cached-feature path. A weighted loss works the same on every path, under
every strategy, and the loss reported for validation data is weighed the same way as the
training loss, so the two stay comparable.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Union

import keras
import numpy as np

from transferkit import _validation
from transferkit.errors import DataError, InvalidArgumentError
from transferkit.model.losses import ClassifierLoss, Kind

__all__ = [
    "ClassWeight",
    "ClassWeightedCrossentropy",
    "ClassWeights",
    "Kind",
    "check",
    "label_counts",
    "resolve",
]

#: The ``class_weight`` argument: None, ``"balanced"``, or ``{class name or index: weight}``.
ClassWeight = Union[Literal["balanced"], Mapping[Union[str, int], float], None]  # noqa: UP007  # a runtime alias, documented by Sphinx


@dataclass(frozen=True)
class ClassWeights:
    """Resolved weights, one per class (and, for multi-label, one per class's negatives).

    Attributes:
        positive: the weight of an image of class ``c`` (single-label), or of class
            ``c``'s positive term (multi-label).
        negative: multi-label only: the weight of class ``c``'s negative term; None
            elsewhere.
    """

    positive: tuple[float, ...]
    negative: tuple[float, ...] | None = None

    def describe(self, class_names: Sequence[str] | None) -> dict[str, Any]:
        """A JSON-ready record, keyed by class name (or index), for history and checkpoints."""
        keys = list(class_names) if class_names is not None else range(len(self.positive))
        record: dict[str, Any] = {"positive": dict(zip(map(str, keys), self.positive, strict=True))}
        if self.negative is not None:
            record["negative"] = dict(zip(map(str, keys), self.negative, strict=True))
        return record


def check(class_weight: object) -> ClassWeight:
    """Checks the form of ``class_weight`` (before any data is read).

    Returns:
        ``class_weight`` unchanged: None, ``"balanced"``, or a dict whose keys are strings
        or integers and whose values are positive numbers.

    Raises:
        InvalidArgumentError: it is none of these.
    """
    if class_weight is None or class_weight == "balanced":
        return class_weight
    if not isinstance(class_weight, Mapping) or not class_weight:
        msg = (
            "class_weight must be None, 'balanced' or a non-empty dict from class name or "
            f"index to weight. Received: class_weight={class_weight!r}"
        )
        raise InvalidArgumentError(msg)
    for key, value in class_weight.items():
        if not isinstance(key, str) and _validation.as_int(key) is None:
            msg = (
                "class_weight keys must be class names (str) or class indices (int). "
                f"Received: class_weight={dict(class_weight)!r}"
            )
            raise InvalidArgumentError(msg)
        _validation.positive_float(f"class_weight[{key!r}]", value)
    return class_weight


def label_counts(
    labels: np.ndarray, num_classes: int, *, multi_label: bool
) -> tuple[int, np.ndarray]:
    """The number of images and of images of each class (positives, for multi-hot labels).

    Args:
        labels: class indices of shape ``(n,)`` (or ``(n, 1)``), or multi-hot targets of
            shape ``(n, num_classes)``.
        num_classes: the number of classes.
        multi_label: whether ``labels`` are multi-hot.

    Returns:
        ``(n, counts)`` with ``counts`` an int array of length ``num_classes``.
    """
    array = np.asarray(labels)
    if multi_label:
        array = array.reshape(-1, num_classes)
        return len(array), (array > 0.5).sum(axis=0).astype(np.int64)
    indices = array.reshape(-1).astype(np.int64)
    return len(indices), np.bincount(indices, minlength=num_classes)[:num_classes]


def resolve(
    class_weight: ClassWeight,
    *,
    class_names: Sequence[str] | None,
    num_classes: int,
    multi_label: bool,
    counts: tuple[int, np.ndarray] | None = None,
) -> ClassWeights | None:
    """Turns a ``class_weight`` argument into one weight per class.

    Args:
        class_weight: None, ``"balanced"``, or a dict (see the module documentation).
        class_names: the classifier's class names, or None (then keys must be indices).
        num_classes: the number of classes.
        multi_label: whether labels are multi-hot (per-label weights).
        counts: ``label_counts(...)`` of the training labels; needed for ``"balanced"``.

    Returns:
        The weights, or None for ``class_weight=None``.

    Raises:
        InvalidArgumentError: a key names no class, or two keys name the same class.
        DataError: ``"balanced"`` with a class that has no training images (or, for
            multi-label, a label on every image).
    """
    check(class_weight)
    if class_weight is None:
        return None
    if class_weight == "balanced":
        if counts is None:
            msg = "class_weight='balanced' needs the training labels' counts."
            raise ValueError(msg)
        return _balanced(counts, class_names, multi_label)
    assert isinstance(class_weight, Mapping)  # narrowed by check()
    weights = [1.0] * num_classes
    given: dict[int, object] = {}
    for key, value in class_weight.items():
        index = _class_index(key, class_names, num_classes, class_weight)
        if index in given:
            msg = (
                f"class_weight names class {index} twice ({given[index]!r} and {key!r}). "
                f"Received: class_weight={dict(class_weight)!r}"
            )
            raise InvalidArgumentError(msg)
        given[index] = key
        weights[index] = float(value)
    return ClassWeights(tuple(weights), (1.0,) * num_classes if multi_label else None)


def _class_index(
    key: str | int, class_names: Sequence[str] | None, num_classes: int, given: Mapping[Any, Any]
) -> int:
    if isinstance(key, str):
        if class_names is not None and key in class_names:
            return list(class_names).index(key)
        known = f"the class names are {list(class_names)}" if class_names else "use indices"
        msg = (
            f"class_weight names an unknown class {key!r} ({known}). "
            f"Received: class_weight={dict(given)!r}"
        )
        raise InvalidArgumentError(msg)
    index = _validation.as_int(key)
    if index is None or not 0 <= index < num_classes:
        msg = (
            f"class_weight has class index {key!r}, outside 0-{num_classes - 1}. "
            f"Received: class_weight={dict(given)!r}"
        )
        raise InvalidArgumentError(msg)
    return index


def _balanced(
    counts: tuple[int, np.ndarray], class_names: Sequence[str] | None, multi_label: bool
) -> ClassWeights:
    total, per_class = counts[0], np.asarray(counts[1], np.float64)
    names = list(class_names) if class_names is not None else list(range(len(per_class)))
    empty = [names[i] for i in np.flatnonzero(per_class == 0)]
    if empty:
        msg = (
            f"class_weight='balanced' needs at least one training image of every class; "
            f"none of {total} images has {empty}. Received: class_weight='balanced'"
        )
        raise DataError(msg)
    if not multi_label:
        return ClassWeights(tuple(float(w) for w in total / (len(per_class) * per_class)))
    everywhere = [names[i] for i in np.flatnonzero(per_class == total)]
    if everywhere:
        msg = (
            f"class_weight='balanced' weighs each label's positives against its negatives, "
            f"but every one of {total} images has {everywhere}. Received: class_weight='balanced'"
        )
        raise DataError(msg)
    positive = total / (2.0 * per_class)
    negative = total / (2.0 * (total - per_class))
    return ClassWeights(tuple(map(float, positive)), tuple(map(float, negative)))


# ---------------------------------------------------------------------- the loss


@keras.saving.register_keras_serializable(package="transferkit")
class ClassWeightedCrossentropy(ClassifierLoss):
    """Cross-entropy on logits with a weight per class, as one loss for every head.

    A :class:`~transferkit.model.losses.ClassifierLoss` whose class weights are required.

    Args:
        kind: ``"sparse"`` (one logit per class, integer labels), ``"binary"`` (one logit
            for two classes, labels 0/1) or ``"multi_label"`` (one logit per class,
            multi-hot labels).
        positive: list of float. The weight of each class (of each class's positives for
            multi-label).
        negative: list of float. Multi-label only: the weight of each class's negatives.
        name: str. The loss name. Defaults to ``"class_weighted_crossentropy"``.
        **kwargs: passed to :class:`~transferkit.model.losses.ClassifierLoss`.
    """

    def __init__(
        self,
        kind: Kind,
        positive: Sequence[float],
        negative: Sequence[float] | None = None,
        name: str = "class_weighted_crossentropy",
        **kwargs: Any,
    ) -> None:
        if (negative is None) == (kind == "multi_label"):
            msg = f"negative weights are given for multi_label only. Received: kind={kind!r}"
            raise InvalidArgumentError(msg)
        super().__init__(kind, positive=positive, negative=negative, name=name, **kwargs)


def make_loss(kind: Kind, weights: ClassWeights | None) -> keras.losses.Loss:
    """The loss of a head of ``kind``: plain cross-entropy, or weighted by ``weights``."""
    if weights is not None:
        negative = list(weights.negative) if weights.negative is not None else None
        return ClassWeightedCrossentropy(kind, list(weights.positive), negative)
    if kind == "sparse":
        return keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    return keras.losses.BinaryCrossentropy(from_logits=True)
