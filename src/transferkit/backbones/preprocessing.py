"""The preprocessing layer that maps raw pixels to what a backbone's weights expect.

It lives inside the model (not in the input pipeline), so a saved model takes raw pixels and
cannot be fed with the wrong scaling. It is a registered, serializable Keras layer, so models
load with ``safe_mode=True``.
"""

from __future__ import annotations

from types import MappingProxyType
from typing import Any, Literal

import keras
from keras import ops

from transferkit.errors import InvalidArgumentError

__all__ = ["PREPROCESSING_MODES", "ImagePreprocessing", "ImageRescaling", "PreprocessingMode"]

#: The preprocessing modes of :class:`ImagePreprocessing`.
PreprocessingMode = Literal["tf", "caffe", "torch", "none"]

#: What each mode does, in words (shown by ``transferkit backbones`` and the docs); read-only.
PREPROCESSING_MODES: MappingProxyType[str, str] = MappingProxyType(
    {
        "tf": "scale to [-1, 1]",
        "caffe": "RGB to BGR, subtract ImageNet mean",
        "torch": "scale to [0, 1], normalize by ImageNet mean/std",
        "none": "inside the network (raw 0-255)",
    }
)

_CAFFE_BGR_MEAN = (103.939, 116.779, 123.68)
_TORCH_MEAN = (0.485, 0.456, 0.406)
_TORCH_STD = (0.229, 0.224, 0.225)


@keras.saving.register_keras_serializable(package="transferkit")
class ImagePreprocessing(keras.layers.Layer):
    """Maps raw RGB pixels (0-255, channels last) to a backbone's expected input.

    The modes reproduce ``keras.applications.imagenet_utils.preprocess_input``:

    * ``"tf"``: ``x / 127.5 - 1`` (MobileNet, ResNetV2, Inception, Xception, NASNet).
    * ``"caffe"``: RGB to BGR, then subtract the ImageNet BGR mean (ResNet, VGG).
    * ``"torch"``: ``x / 255``, then subtract the ImageNet mean and divide by its standard
      deviation (DenseNet).
    * ``"none"``: cast to float only; the network normalizes inside (EfficientNet,
      EfficientNetV2, ConvNeXt, MobileNetV3).

    Args:
        mode: str. One of ``"tf"``, ``"caffe"``, ``"torch"``, ``"none"``.
        **kwargs: Passed to ``keras.layers.Layer`` (``name``, ``dtype``, ...).

    Example:
        >>> import numpy as np
        >>> layer = ImagePreprocessing("tf")
        >>> layer(np.array([[[[0.0, 127.5, 255.0]]]])).numpy().tolist()
        [[[[-1.0, 0.0, 1.0]]]]
    """

    def __init__(self, mode: PreprocessingMode, **kwargs: Any) -> None:
        if mode not in PREPROCESSING_MODES:
            msg = (
                f"Unknown preprocessing mode {mode!r}; expected one of "
                f"{sorted(PREPROCESSING_MODES)}. Received: mode={mode!r}"
            )
            raise InvalidArgumentError(msg)
        super().__init__(**kwargs)
        self.mode = mode

    def call(self, inputs: Any) -> Any:
        """Applies the preprocessing to a batch of images."""
        x = ops.cast(inputs, self.compute_dtype)
        if self.mode == "tf":
            return x / 127.5 - 1.0
        if self.mode == "caffe":
            return ops.flip(x, axis=-1) - ops.convert_to_tensor(_CAFFE_BGR_MEAN, self.compute_dtype)
        if self.mode == "torch":
            mean = ops.convert_to_tensor(_TORCH_MEAN, self.compute_dtype)
            std = ops.convert_to_tensor(_TORCH_STD, self.compute_dtype)
            return (x / 255.0 - mean) / std
        return x

    def compute_output_shape(self, input_shape: tuple[int | None, ...]) -> tuple[int | None, ...]:
        """The output has the input's shape."""
        return input_shape

    def get_config(self) -> dict[str, Any]:
        """Returns the layer's constructor arguments."""
        return {**super().get_config(), "mode": self.mode}


#: A scale or offset: one number for every channel, one per channel, or None for none.
ChannelValues = float | tuple[float, ...] | None


def _channel_values(name: str, value: object) -> ChannelValues:
    if value is None:
        return None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if (
        isinstance(value, (list, tuple))
        and value
        and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)
    ):
        return tuple(float(v) for v in value)
    msg = f"{name} must be a number, a list of numbers or None. Received: {name}={value!r}"
    raise InvalidArgumentError(msg)


@keras.saving.register_keras_serializable(package="transferkit")
class ImageRescaling(keras.layers.Layer):
    """Computes ``pixels * scale + offset``, per channel or for all channels.

    This is the arithmetic of a keras-hub image converter (its resizing is done by
    transferkit's input pipeline), so a keras-hub backbone's preprocessing lives inside the
    model as a plain serializable layer.

    Args:
        scale: float, a tuple of one float per channel, or None for no scaling.
        offset: float, a tuple of one float per channel, or None for no offset.
        **kwargs: Passed to ``keras.layers.Layer`` (``name``, ``dtype``, ...).

    Example:
        >>> import numpy as np
        >>> layer = ImageRescaling(scale=1 / 127.5, offset=-1.0)
        >>> layer(np.array([[[[0.0, 127.5, 255.0]]]])).numpy().tolist()
        [[[[-1.0, 0.0, 1.0]]]]
    """

    def __init__(self, scale: ChannelValues = None, offset: ChannelValues = None, **kwargs: Any):
        scale = _channel_values("scale", scale)
        offset = _channel_values("offset", offset)
        super().__init__(**kwargs)
        self.scale = scale
        self.offset = offset

    def call(self, inputs: Any) -> Any:
        """Rescales a batch of images (channels last)."""
        x = ops.cast(inputs, self.compute_dtype)
        if self.scale is not None:
            x = x * ops.convert_to_tensor(self.scale, self.compute_dtype)
        if self.offset is not None:
            x = x + ops.convert_to_tensor(self.offset, self.compute_dtype)
        return x

    def compute_output_shape(self, input_shape: tuple[int | None, ...]) -> tuple[int | None, ...]:
        """The output has the input's shape."""
        return input_shape

    def get_config(self) -> dict[str, Any]:
        """Returns the layer's constructor arguments."""
        scale = list(self.scale) if isinstance(self.scale, tuple) else self.scale
        offset = list(self.offset) if isinstance(self.offset, tuple) else self.offset
        return {**super().get_config(), "scale": scale, "offset": offset}
