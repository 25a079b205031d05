"""The keras-hub backbone families transferkit supports, and the blocks of a built one.

One row of :data:`FAMILIES` per keras-hub backbone class says how transferkit uses it: its
default pooling, how its input size is set, where its features are taken, and how to find its
freezable blocks in the built network (:func:`layout`). The family is recognized from the
network itself, so a classifier loaded from a file finds its blocks without the preset.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import keras

from transferkit.backbones.spec import BackboneLayout
from transferkit.errors import InvalidArgumentError

__all__ = ["FAMILIES", "Family", "features_of", "layout"]

#: A configuration value of a keras-hub network, by name.
Config = Callable[[str], Any]


@dataclass(frozen=True)
class Family:
    """How transferkit uses one keras-hub backbone class (one row of :data:`FAMILIES`)."""

    name: str
    pooling: str  # the default pooling, documented per family in docs/howto/choose_backbone.rst
    # Position embeddings learned for one size: pretrained weights exist at the preset's size only.
    fixed_size: bool = False
    # Preset names end in their resolution (mit_b0_ade20k_512); else 224, or an "_r240_" tag.
    size_in_name: bool = False
    default_size: int | None = None  # the size when names do not tell
    shape_argument: str | None = "image_shape"  # the constructor argument of the input shape
    vision_tower: bool = False  # a two-tower (image-text) model: use its vision encoder
    tokens_from: str | None = None  # take the tokens from this layer, before a pooling head
    # For a network with a dict of outputs (one feature map per stage): the key to use.
    output: Callable[[keras.Model], str] | None = None
    # Class names or layer-name suffixes of the layers before the first block (the stem) and
    # of the blocks, found anywhere in the network.
    stem: tuple[str, ...] = ()
    blocks: tuple[str, ...] = ()
    # For a flat network: a regular expression whose group 1, matched on the names of its
    # layers, names the block (stage) each belongs to; a layer it does not match joins the
    # block before it. Neither this nor ``blocks``: one block per layer of the network.
    stages: str | None = None
    # The special tokens before the patch tokens, and the pixels per output token per side.
    prefix_tokens: Callable[[Config], int] = lambda config: 0
    patch: Callable[[Config], Any] = lambda config: config("patch_size")


# fmt: off
FAMILIES: dict[str, Family] = {
    "ViTBackbone": Family(
        "vit", "cls", fixed_size=True, stem=("ViTPatchingAndEmbedding",),
        blocks=("ViTEncoderBlock",), prefix_tokens=lambda c: int(c("use_class_token"))),
    "DeiTBackbone": Family(
        "deit", "cls", fixed_size=True, stem=("DeiTEmbeddings",), blocks=("DeiTEncoderBlock",),
        prefix_tokens=lambda c: 2),  # class and distillation tokens
    "DINOV2Backbone": Family(
        "dinov2", "cls", stem=("DINOV2Embedding",), blocks=("DINOV2Layer",),
        prefix_tokens=lambda c: 1 + c("num_register_tokens")),
    "DINOV3Backbone": Family(
        "dinov3", "cls", stem=("DINOV3Embedding",), blocks=("DINOV3Layer",),
        prefix_tokens=lambda c: 1 + c("num_register_tokens")),
    "SigLIPBackbone": Family(
        "siglip", "mean", fixed_size=True, shape_argument=None, vision_tower=True,
        tokens_from="post_layer_norm", stem=("SigLIPVisionEmbedding",),
        blocks=("SigLIPEncoderLayer",)),
    "CLIPBackbone": Family(
        "clip", "cls", fixed_size=True, shape_argument=None, vision_tower=True,
        stem=("CLIPVisionEmbedding", "pre_layer_norm"), blocks=("CLIPEncoderLayer",),
        prefix_tokens=lambda c: 1),
    "MetaCLIP2Backbone": Family(
        "metaclip2", "cls", fixed_size=True, shape_argument=None, vision_tower=True,
        stem=("MetaCLIP2VisionEmbedding", "pre_layer_norm"), blocks=("MetaCLIP2EncoderLayer",),
        prefix_tokens=lambda c: 1),
    # Hierarchical: 2x fewer tokens per side after each stage but the last, no class token.
    "SwinTransformerBackbone": Family(
        "swin", "mean", fixed_size=True, stem=("PatchEmbedding",),
        blocks=("SwinTransformerStage",),
        patch=lambda c: c("patch_size") * 2 ** (len(c("depths")) - 1)),
    "MiTBackbone": Family(
        "mit", "avg", size_in_name=True,
        stages=r"^(?:patch_and_embed|hierarchical_encoder|output_level)_(\d+)"),
    "ResNetBackbone": Family("resnet", "avg"),
    "EfficientNetBackbone": Family("efficientnet", "avg", shape_argument="input_shape"),
    "MobileNetBackbone": Family("mobilenet", "avg"),
    # Its blocks (edge residual, inverted residual, attention) are its top-level layers. Gemma
    # 3n, which it was trained in, feeds it 768x768 images (keras-hub's Gemma3n examples).
    "MobileNetV5Backbone": Family("mobilenetv5", "avg", default_size=768),
    "HGNetV2Backbone": Family(
        "hgnetv2", "avg", output=lambda network: network.stage_names[-1],
        stem=("HGNetV2Embeddings",), blocks=("HGNetV2Stage",)),
    "CSPNetBackbone": Family("cspnet", "avg", stages=r"^(csp_stem|stage_\d+)_"),
    "DenseNetBackbone": Family("densenet", "avg"),
    "VGGBackbone": Family("vgg", "avg"),
    "XceptionBackbone": Family("xception", "avg"),
}
# fmt: on


def features_of(network: keras.Model, family: Family) -> keras.Model:
    """The part of a keras-hub network whose output transferkit pools."""
    if family.vision_tower:
        network = network.vision_encoder
    if family.tokens_from is not None:
        tokens = network.get_layer(_full_name(network, family.tokens_from)).output
        return keras.Model(network.input, tokens, name=f"{network.name}_tokens")
    if family.output is not None:
        last = network.output[family.output(network)]
        return keras.Model(network.input, last, name=f"{network.name}_features")
    return network


def _full_name(network: keras.Model, suffix: str) -> str:
    # SigLIP prefixes its layer names with the encoder's name.
    return next(str(layer.name) for layer in network.layers if layer.name.endswith(suffix))


def layout(model: keras.Model) -> BackboneLayout:
    """The blocks and special tokens of a keras-hub backbone built (or loaded) by transferkit.

    The family is recognized from the model itself (the keras-hub class, or its block
    layers), so a classifier loaded from a file finds its blocks without the preset.
    """
    network = _network(model)
    family = FAMILIES.get(type(network).__name__) or next(
        (f for f in FAMILIES.values() if f.blocks and _has_layer(network, f.blocks)), None
    )
    if family is not None and family.stages is not None:
        return BackboneLayout(blocks=_stages(network, family.stages), per_layer=False)
    if family is None or not family.blocks:
        return BackboneLayout(blocks=tuple((layer,) for layer in network.layers))
    stem: list[keras.layers.Layer] = []
    blocks: list[tuple[keras.layers.Layer, ...]] = []
    for layer in _walk(network):
        if _matches(layer, family.stem):
            stem.append(layer)
        elif _matches(layer, family.blocks):
            blocks.append((layer,))
    patch_size = None
    if len(network.output.shape) == 3:  # tokens: laid out on a grid of patches
        patch = family.patch(lambda name: _attribute(network, name))
        patch_size = (patch, patch) if isinstance(patch, int) else (patch[0], patch[1])
    return BackboneLayout(
        blocks=((tuple(stem),) if stem else ()) + tuple(blocks),
        prefix_tokens=family.prefix_tokens(lambda name: _attribute(network, name)),
        patch_size=patch_size,
        per_layer=False,
    )


def _stages(network: keras.Model, pattern: str) -> tuple[tuple[keras.layers.Layer, ...], ...]:
    blocks: list[list[keras.layers.Layer]] = []
    keys: list[str] = []
    for layer in network.layers:
        match = re.match(pattern, layer.name)
        if match and (not keys or keys[-1] != match.group(1)):
            blocks.append([])
            keys.append(match.group(1))
        if blocks:  # before the first block: the input layer
            blocks[-1].append(layer)
    return tuple(tuple(block) for block in blocks)


def _has_layer(network: keras.Model, keys: tuple[str, ...]) -> bool:
    return any(_matches(layer, keys) for layer in _walk(network))


def _network(model: keras.Model) -> keras.Model:
    # The built model is images -> ImageRescaling -> the keras-hub network (one nested model).
    nested = [layer for layer in model.layers if isinstance(layer, keras.Model)]
    if len(nested) != 1:
        msg = (
            f"Expected a keras-hub backbone built by transferkit (one nested network). "
            f"Received: model={model.name!r} with {len(nested)} nested models"
        )
        raise InvalidArgumentError(msg)
    return nested[0]


def _walk(layer: keras.layers.Layer) -> Iterator[keras.layers.Layer]:
    # Depth first in the order the layers were created; Keras' own recursive walk is not.
    for sublayer in layer._flatten_layers(include_self=False, recursive=False):
        yield sublayer
        yield from _walk(sublayer)


def _matches(layer: keras.layers.Layer, keys: tuple[str, ...]) -> bool:
    return type(layer).__name__ in keys or any(layer.name.endswith(k) for k in keys)


def _attribute(network: keras.Model, name: str) -> Any:
    # A configuration value of the keras-hub network, or of its first sublayer that has it:
    # a SigLIP token cut is a plain functional model whose embedding layer knows its patches.
    for layer in (network, *_walk(network)):
        if hasattr(layer, name):
            return getattr(layer, name)
    msg = f"The keras-hub network {network.name!r} has no {name!r}. Received: {network!r}"
    raise InvalidArgumentError(msg)
