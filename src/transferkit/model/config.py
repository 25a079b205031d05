"""``ClassifierConfig``: a classifier's settings, defined once.

The constructor validates its arguments into one frozen config; :meth:`~ClassifierConfig.to_dict`
is what a saved file and a checkpoint record, and :meth:`~ClassifierConfig.from_dict` is how
loading gets them back. Adding a setting means adding a field here, nothing more.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any, Literal

from transferkit import _validation
from transferkit.backbones.pooling import FEATURE_MAP_POOLINGS, Pooling
from transferkit.backbones.spec import Backbone, ImageSize
from transferkit.errors import InvalidArgumentError
from transferkit.model.losses import LOSSES, LossName

__all__ = ["DTYPE_POLICIES", "ClassifierConfig", "DtypePolicy", "LossName"]

#: A mixed-precision policy for the classifier's layers, or None for float32.
DtypePolicy = Literal["mixed_float16", "mixed_bfloat16", None]
DTYPE_POLICIES = ("mixed_float16", "mixed_bfloat16", None)


@dataclass(frozen=True)
class ClassifierConfig:
    """What a classifier is, as plain data (no Keras objects).

    Attributes:
        backbone: the backbone's registry name.
        num_classes: the number of classes.
        class_names: the class names in label order, or None until data names them.
        image_size: ``(height, width)`` of the images the model takes.
        dropout: the dropout rate before the dense layer.
        dtype_policy: the mixed-precision policy, or None for float32.
        multi_label: whether each class is an independent yes/no answer (one sigmoid
            logit per class) rather than one class per image.
        pooling: how the backbone's output becomes one vector per image: ``"avg"``,
            ``"max"`` or ``"avgmax"`` for a feature map, ``"cls"`` or ``"mean"`` for a
            transformer's tokens.
        loss: the training loss: ``"crossentropy"``, or ``"focal"`` or ``"asymmetric"`` for
            a sigmoid head (multi-label, or two classes); see :mod:`transferkit.model.losses`.
    """

    backbone: str
    num_classes: int
    class_names: tuple[str, ...] | None
    image_size: tuple[int, int]
    dropout: float = 0.2
    dtype_policy: DtypePolicy = None
    multi_label: bool = False
    pooling: Pooling = "avg"
    loss: LossName = "crossentropy"

    @classmethod
    def create(
        cls,
        spec: Backbone,
        *,
        num_classes: object,
        class_names: Sequence[str] | None,
        image_size: ImageSize | None,
        dropout: object,
        dtype_policy: object,
        multi_label: object = False,
        pooling: object = None,
        loss: object = "crossentropy",
    ) -> ClassifierConfig:
        """Validates the constructor's arguments into a config; raises on the first bad one."""
        names = _validation.class_names(class_names)
        if num_classes is None:
            if names is None:
                msg = "Pass num_classes or class_names. Received: neither"
                raise InvalidArgumentError(msg)
            num_classes = len(names)
        count = _validation.as_int(num_classes)
        if count is None or count < 2:
            msg = f"num_classes must be an int of at least 2. Received: num_classes={num_classes!r}"
            raise InvalidArgumentError(msg)
        if names is not None and len(names) != count:
            msg = (
                "num_classes and class_names disagree. "
                f"Received: num_classes={num_classes}, class_names={list(names)!r}"
            )
            raise InvalidArgumentError(msg)
        rate = _validation.fraction("dropout", dropout, low_inclusive=True)
        _validation.choice("dtype_policy", dtype_policy, DTYPE_POLICIES)
        _validation.choice("multi_label", multi_label, (True, False))
        _check_loss(loss, sigmoid=bool(multi_label) or count == 2)
        return cls(
            backbone=spec.name,
            num_classes=count,
            class_names=names,
            image_size=spec.resolve_image_size(image_size),
            dropout=rate,
            dtype_policy=dtype_policy,  # type: ignore[arg-type]  # checked just above
            multi_label=bool(multi_label),
            pooling=_pooling(spec, pooling),
            loss=loss,  # type: ignore[arg-type]  # checked above
        )

    def with_class_names(self, names: Sequence[str]) -> ClassifierConfig:
        """A copy with the class names set (for a classifier that learns them from data)."""
        return replace(self, class_names=tuple(names))

    def to_dict(self) -> dict[str, Any]:
        """The config as JSON-ready data."""
        data = asdict(self)
        data["class_names"] = None if self.class_names is None else list(self.class_names)
        data["image_size"] = list(self.image_size)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ClassifierConfig:
        """The inverse of :meth:`to_dict`."""
        names = data.get("class_names")
        height, width = data["image_size"]
        return cls(
            backbone=str(data["backbone"]),
            num_classes=int(data["num_classes"]),
            class_names=None if names is None else tuple(names),
            image_size=(int(height), int(width)),
            dropout=float(data.get("dropout", 0.2)),
            dtype_policy=data.get("dtype_policy"),
            multi_label=bool(data.get("multi_label", False)),
            pooling=data.get("pooling", "avg"),
            loss=data.get("loss", "crossentropy"),
        )


def _pooling(spec: Backbone, pooling: object) -> Pooling:
    # A feature map is averaged or maxed; a token sequence is pooled by its class token or mean.
    if pooling is None:
        return spec.pooling
    fits = FEATURE_MAP_POOLINGS if spec.pooling in FEATURE_MAP_POOLINGS else ("cls", "mean")
    _validation.choice("pooling", pooling, fits)
    return pooling  # type: ignore[return-value]  # checked just above


def _check_loss(loss: object, *, sigmoid: bool) -> None:
    _validation.choice("loss", loss, tuple(LOSSES))
    if loss != "crossentropy" and not sigmoid:
        msg = (
            f"The {loss} loss is for sigmoid heads: multi_label=True, or two classes. A "
            f"softmax head over several classes trains with 'crossentropy'. Received: loss={loss!r}"
        )
        raise InvalidArgumentError(msg)
