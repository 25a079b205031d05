"""transferkit-tiny-convnet: an example transferkit backbone plugin.

The package defines a network constructor in the style of ``keras.applications`` and
describes it as a :class:`transferkit.Backbone`; its ``pyproject.toml`` points the
``transferkit.backbones`` entry point at that description. transferkit imports this module the
first time someone asks for ``"tiny_convnet"``, not before.
"""

from __future__ import annotations

import keras

import transferkit as tk

__all__ = ["tiny_convnet", "tiny_convnet_model"]


def tiny_convnet_model(
    include_top: bool = True,
    weights: str | None = None,
    input_shape: tuple[int, int, int] = (64, 64, 3),
    width: int = 16,
) -> keras.Model:
    """Three convolution blocks (convolution, BatchNormalization, ReLU), halving the size each.

    transferkit calls it with ``include_top=False`` and ``weights=None``; it loads a weights
    file itself, after building. Extra keyword arguments (here ``width``) come from the
    classifier's ``backbone_kwargs``.

    Args:
        include_top: bool. This network has no classifier on top; only False is accepted.
        weights: None. It ships no pretrained weights.
        input_shape: ``(height, width, 3)``.
        width: int. Channels of the first block; each block doubles them. Defaults to 16.

    Returns:
        A ``keras.Model`` from preprocessed images to a feature map of ``4 * width`` channels.
    """
    if include_top or weights is not None:
        msg = (
            "tiny_convnet has neither a classifier top nor pretrained weights. "
            f"Received: include_top={include_top!r}, weights={weights!r}"
        )
        raise ValueError(msg)
    inputs = keras.Input(input_shape)
    x = inputs
    for block in range(3):
        x = keras.layers.Conv2D(
            width * 2**block,
            3,
            strides=2,
            padding="same",
            use_bias=False,
            name=f"block{block}_conv",
        )(x)
        x = keras.layers.BatchNormalization(name=f"block{block}_bn")(x)
        x = keras.layers.ReLU(name=f"block{block}_relu")(x)
    return keras.Model(inputs, x, name="tiny_convnet")


tiny_convnet = tk.Backbone(
    name="tiny_convnet",  # must equal the entry point's name
    constructor=tiny_convnet_model,
    preprocessing="tf",  # pixels scaled to [-1, 1] before the network
    default_image_size=64,
    feature_channels=64,  # 4 * width at the default width
    family="tiny_convnet",
    min_image_size=8,
    imagenet_weights=False,
)
