"""Pooling a backbone's output into one feature vector, for feature maps and token sequences.

A convolutional network ends in a feature map ``(batch, height, width, channels)``, pooled by
global averaging (``"avg"``), by its global maximum (``"max"``), or by both side by side
(``"avgmax"``, twice the channels): an average dilutes a small object's few strong positions in
a large map, the maximum keeps them, which matters most when an image holds several objects
(multi-label). A vision transformer ends in a token sequence ``(batch, tokens,
channels)`` whose first ``prefix_tokens`` entries are special tokens (the class token, then
DeiT's distillation token or DINOv2's registers) and whose remaining entries are one token per
image patch, in row-major order. It is pooled by taking the class token (``"cls"``) or by
averaging the patch tokens (``"mean"``). The layers here are registered, so a model holding
them loads with ``safe_mode=True``.
"""

from __future__ import annotations

from types import MappingProxyType
from typing import Any, Literal

import keras
from keras import ops

from transferkit.errors import InvalidArgumentError

__all__ = [
    "FEATURE_MAP_POOLINGS",
    "POOLINGS",
    "AvgMaxPooling2D",
    "PatchGrid",
    "Pooling",
    "TokenPooling",
]

#: A pooling of a backbone's output; see :data:`POOLINGS`.
Pooling = Literal["avg", "max", "avgmax", "cls", "mean"]
#: The poolings of a feature map (the others pool token sequences).
FEATURE_MAP_POOLINGS = ("avg", "max", "avgmax")

#: What each pooling does, in words; read-only.
POOLINGS: MappingProxyType[str, str] = MappingProxyType(
    {
        "avg": "global average of a feature map (CNNs, MiT)",
        "max": "global maximum of a feature map",
        "avgmax": "global average and global maximum of a feature map, concatenated",
        "cls": "the class token of a token sequence",
        "mean": "the mean of the patch tokens (class, distillation and register tokens left out)",
    }
)


def _check_prefix(prefix_tokens: object) -> int:
    if isinstance(prefix_tokens, bool) or not isinstance(prefix_tokens, int) or prefix_tokens < 0:
        msg = (
            "prefix_tokens must be a non-negative int (the tokens before the patch tokens). "
            f"Received: prefix_tokens={prefix_tokens!r}"
        )
        raise InvalidArgumentError(msg)
    return prefix_tokens


@keras.saving.register_keras_serializable(package="transferkit")
class TokenPooling(keras.layers.Layer):
    """Pools a token sequence ``(batch, tokens, channels)`` into ``(batch, channels)``.

    Args:
        mode: str. ``"cls"`` takes the first token (the class token); ``"mean"`` averages
            the patch tokens, that is every token after the first ``prefix_tokens``.
        prefix_tokens: int. The number of special tokens before the patch tokens
            (1 for ViT's class token, 2 for DeiT's class and distillation tokens, 1 plus
            the registers for DINOv2 with registers, 0 for SigLIP).
        **kwargs: Passed to ``keras.layers.Layer`` (``name``, ``dtype``, ...).

    Example:
        >>> import numpy as np
        >>> tokens = np.array([[[9.0], [1.0], [3.0]]])  # a class token, then two patches
        >>> TokenPooling("mean", prefix_tokens=1)(tokens).numpy().tolist()
        [[2.0]]
        >>> TokenPooling("cls", prefix_tokens=1)(tokens).numpy().tolist()
        [[9.0]]
    """

    def __init__(self, mode: Literal["cls", "mean"], prefix_tokens: int, **kwargs: Any) -> None:
        if mode not in ("cls", "mean"):
            msg = f"Token pooling must be 'cls' or 'mean'. Received: mode={mode!r}"
            raise InvalidArgumentError(msg)
        prefix_tokens = _check_prefix(prefix_tokens)
        if mode == "cls" and prefix_tokens == 0:
            msg = (
                "pooling='cls' needs a class token, and this backbone's tokens are all patch "
                "tokens; use pooling='mean'. Received: mode='cls', prefix_tokens=0"
            )
            raise InvalidArgumentError(msg)
        super().__init__(**kwargs)
        self.mode = mode
        self.prefix_tokens = prefix_tokens

    def call(self, inputs: Any) -> Any:
        """Pools a batch of token sequences."""
        if self.mode == "cls":
            return inputs[:, 0, :]
        return ops.mean(inputs[:, self.prefix_tokens :, :], axis=1)

    def compute_output_shape(self, input_shape: tuple[int | None, ...]) -> tuple[int | None, ...]:
        """``(batch, channels)``."""
        return (input_shape[0], input_shape[-1])

    def get_config(self) -> dict[str, Any]:
        """Returns the layer's constructor arguments."""
        return {**super().get_config(), "mode": self.mode, "prefix_tokens": self.prefix_tokens}


@keras.saving.register_keras_serializable(package="transferkit")
class AvgMaxPooling2D(keras.layers.Layer):
    """Global average and global maximum of a feature map, concatenated: ``2 * channels``.

    Args:
        **kwargs: Passed to ``keras.layers.Layer`` (``name``, ``dtype``, ...).

    Example:
        >>> import numpy as np
        >>> feature_map = np.array([[[[1.0], [3.0]], [[0.0], [8.0]]]])  # 2x2, one channel
        >>> AvgMaxPooling2D()(feature_map).numpy().tolist()
        [[3.0, 8.0]]
    """

    def call(self, inputs: Any) -> Any:
        """Pools a batch of feature maps ``(batch, height, width, channels)``."""
        return ops.concatenate(
            [ops.mean(inputs, axis=(1, 2)), ops.max(inputs, axis=(1, 2))], axis=-1
        )

    def compute_output_shape(self, input_shape: tuple[int | None, ...]) -> tuple[int | None, ...]:
        """``(batch, 2 * channels)``."""
        channels = input_shape[-1]
        return (input_shape[0], None if channels is None else 2 * channels)


@keras.saving.register_keras_serializable(package="transferkit")
class PatchGrid(keras.layers.Layer):
    """Turns patch tokens back into a feature map ``(batch, rows, columns, channels)``.

    The last ``rows * columns`` tokens are the patch tokens, row by row, as ViT, DeiT,
    DINOv2, SigLIP and CLIP order them after their special tokens (and Swin, which has none,
    its last stage's tokens); they are laid out on their grid. This is the "feature map" of
    a transformer for class-activation methods such as Grad-CAM.

    Args:
        rows: int. Patches per column of the image (its height over the patch size).
        columns: int. Patches per row of the image (its width over the patch size).
        **kwargs: Passed to ``keras.layers.Layer``.

    Example:
        >>> import numpy as np
        >>> tokens = np.arange(5.0).reshape(1, 5, 1)  # a class token, then 2x2 patches
        >>> PatchGrid(2, 2)(tokens).numpy()[0, :, :, 0].tolist()
        [[1.0, 2.0], [3.0, 4.0]]
    """

    def __init__(self, rows: int, columns: int, **kwargs: Any) -> None:
        for name, value in (("rows", rows), ("columns", columns)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                msg = f"{name} must be a positive int. Received: {name}={value!r}"
                raise InvalidArgumentError(msg)
        super().__init__(**kwargs)
        self.rows = rows
        self.columns = columns

    def call(self, inputs: Any) -> Any:
        """Reshapes a batch of token sequences into feature maps."""
        patches = inputs[:, -self.rows * self.columns :, :]
        return ops.reshape(patches, (-1, self.rows, self.columns, inputs.shape[-1]))

    def compute_output_shape(self, input_shape: tuple[int | None, ...]) -> tuple[int | None, ...]:
        """``(batch, rows, columns, channels)``."""
        return (input_shape[0], self.rows, self.columns, input_shape[-1])

    def get_config(self) -> dict[str, Any]:
        """Returns the layer's constructor arguments."""
        return {**super().get_config(), "rows": self.rows, "columns": self.columns}


def pooling_layer(
    output_rank: int, pooling: str, prefix_tokens: int, name: str = "pooling"
) -> keras.layers.Layer:
    """The layer pooling a backbone output of rank ``output_rank`` with ``pooling``.

    Raises:
        InvalidArgumentError: the pooling is unknown or does not fit the output (``"avg"``,
            ``"max"``, ``"avgmax"`` on tokens, ``"cls"``/``"mean"`` on a feature map).
    """
    if pooling not in POOLINGS:
        msg = f"pooling must be one of {sorted(POOLINGS)}. Received: pooling={pooling!r}"
        raise InvalidArgumentError(msg)
    if output_rank == 4:
        if pooling not in FEATURE_MAP_POOLINGS:
            msg = (
                "This backbone ends in a feature map, which is pooled with 'avg', 'max' or "
                f"'avgmax'; {pooling!r} is for token sequences (vision transformers). "
                f"Received: pooling={pooling!r}"
            )
            raise InvalidArgumentError(msg)
        if pooling == "max":
            return keras.layers.GlobalMaxPooling2D(name=name)
        if pooling == "avgmax":
            return AvgMaxPooling2D(name=name)
        return keras.layers.GlobalAveragePooling2D(name=name)
    if output_rank == 3:
        if pooling in FEATURE_MAP_POOLINGS:
            msg = (
                "This backbone ends in a token sequence; pool it with 'cls' (the class token) "
                f"or 'mean' (the mean of the patch tokens). Received: pooling={pooling!r}"
            )
            raise InvalidArgumentError(msg)
        return TokenPooling(pooling, prefix_tokens, name=name)  # type: ignore[arg-type]
    msg = (
        "A backbone must end in a feature map (rank 4) or a token sequence (rank 3). "
        f"Received: output rank {output_rank}"
    )
    raise InvalidArgumentError(msg)
