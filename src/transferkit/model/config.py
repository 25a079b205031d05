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
from transferkit.backbones.pooling import Pooling
from transferkit.backbones.spec import Backbone, ImageSize
from transferkit.errors import InvalidArgumentError

__all__ = ["DTYPE_POLICIES", "ClassifierConfig", "DtypePolicy"]

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
        pooling: how the backbone's output becomes one vector per image: ``"avg"`` for a
            feature map, ``"cls"`` or ``"mean"`` for a transformer's tokens.
    """

    backbone: str
    num_classes: int
    class_names: tuple[str, ...] | None
    image_size: tuple[int, int]
    dropout: float = 0.2
    dtype_policy: DtypePolicy = None
    multi_label: bool = False
    pooling: Pooling = "avg"

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
        return cls(
            backbone=spec.name,
            num_classes=count,
            class_names=names,
            image_size=spec.resolve_image_size(image_size),
            dropout=rate,
            dtype_policy=dtype_policy,  # type: ignore[arg-type]  # checked just above
            multi_label=bool(multi_label),
            pooling=_pooling(spec, pooling),
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
        )


def _pooling(spec: Backbone, pooling: object) -> Pooling:
    # A feature map is averaged; a token sequence is pooled by its class token or its mean.
    if pooling is None:
        return spec.pooling
    fits = ("avg",) if spec.pooling == "avg" else ("cls", "mean")
    _validation.choice("pooling", pooling, fits)
    return pooling  # type: ignore[return-value]  # checked just above
