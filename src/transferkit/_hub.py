"""keras-hub backbones (``"keras_hub:<preset>"`` and local preset folders) as transferkit specs.

keras-hub is an optional extra (``pip install 'transferkit[hub]'``), imported only when a
keras-hub name is looked up or listed. Listing reads keras-hub's preset metadata (description,
parameters) and downloads nothing; building goes through keras-hub's own ``from_preset`` for
the weights, the config and the image converter.

The model :meth:`Backbone.build` returns for a preset is ``images (0-255) -> ImageRescaling
(the converter's scale and offset) -> the keras-hub network``, so its preprocessing is inside,
as for the ``keras.applications`` networks whose preprocessing is ``"none"``. For SigLIP and
CLIP only the vision tower is used; SigLIP's tokens are taken before its attention-pooling
head, which was trained to match text.
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import os
import re
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import keras

from transferkit.backbone import Backbone, BackboneLayout
from transferkit.errors import (
    InvalidArgumentError,
    InvalidImageSizeError,
    MissingDependencyError,
    UnknownBackboneError,
    WeightsUnavailableError,
)
from transferkit.preprocessing import ImageRescaling

__all__ = [
    "PREFIX",
    "available",
    "backbone",
    "import_keras_hub",
    "is_hub_name",
    "layout",
    "names",
    "preset_rows",
]

#: The registry prefix of keras-hub backbones.
PREFIX = "keras_hub:"
_INSTALL = "pip install 'transferkit[hub]'"
_DEFAULT_SIZE = 224


@dataclass(frozen=True)
class _Family:
    """How transferkit uses one keras-hub backbone class (one row of :data:`_FAMILIES`)."""

    name: str
    pooling: str  # the default pooling, documented per family in docs/backbones_hub.rst
    # Position embeddings learned for one size: pretrained weights exist at the preset's size only.
    fixed_size: bool = False
    shape_argument: str | None = "image_shape"  # the constructor argument of the input shape
    vision_tower: bool = False  # a two-tower (image-text) model: use its vision encoder
    tokens_from: str | None = None  # take the tokens from this layer, before a pooling head
    # Class names or layer-name suffixes of the layers before the first block (the stem) and
    # of the blocks; empty blocks means one block per layer of the keras-hub network.
    stem: tuple[str, ...] = ()
    blocks: tuple[str, ...] = ()
    # The special tokens before the patch tokens, from the network's configuration.
    prefix_tokens: Callable[[Callable[[str], Any]], int] = lambda config: 0


# fmt: off
_FAMILIES: dict[str, _Family] = {
    "ViTBackbone": _Family(
        "vit", "cls", fixed_size=True, stem=("ViTPatchingAndEmbedding",),
        blocks=("ViTEncoderBlock",), prefix_tokens=lambda c: int(c("use_class_token"))),
    "DeiTBackbone": _Family(
        "deit", "cls", fixed_size=True, stem=("DeiTEmbeddings",), blocks=("DeiTEncoderBlock",),
        prefix_tokens=lambda c: 2),  # class and distillation tokens
    "DINOV2Backbone": _Family(
        "dinov2", "cls", stem=("DINOV2Embedding",), blocks=("DINOV2Layer",),
        prefix_tokens=lambda c: 1 + c("num_register_tokens")),
    "DINOV3Backbone": _Family(
        "dinov3", "cls", stem=("DINOV3Embedding",), blocks=("DINOV3Layer",),
        prefix_tokens=lambda c: 1 + c("num_register_tokens")),
    "SigLIPBackbone": _Family(
        "siglip", "mean", fixed_size=True, shape_argument=None, vision_tower=True,
        tokens_from="post_layer_norm", stem=("SigLIPVisionEmbedding",),
        blocks=("SigLIPEncoderLayer",)),
    "CLIPBackbone": _Family(
        "clip", "cls", fixed_size=True, shape_argument=None, vision_tower=True,
        stem=("CLIPVisionEmbedding", "pre_layer_norm"), blocks=("CLIPEncoderLayer",),
        prefix_tokens=lambda c: 1),
    "ResNetBackbone": _Family("resnet", "avg"),
    "EfficientNetBackbone": _Family("efficientnet", "avg", shape_argument="input_shape"),
    "MobileNetBackbone": _Family("mobilenet", "avg"),
    "DenseNetBackbone": _Family("densenet", "avg"),
    "VGGBackbone": _Family("vgg", "avg"),
    "XceptionBackbone": _Family("xception", "avg"),
}
# fmt: on


def available() -> bool:
    """Whether keras-hub is installed, without importing it."""
    if sys.modules.get("keras_hub", False) is None:  # import blocked on purpose
        return False
    try:
        return importlib.util.find_spec("keras_hub") is not None
    except (ImportError, ValueError):
        return False


def import_keras_hub(reason: str) -> ModuleType:
    """Imports keras-hub, or raises :class:`MissingDependencyError` naming the extra."""
    try:
        return importlib.import_module("keras_hub")
    except ImportError as exc:
        msg = (
            f"{reason} needs keras-hub, an optional dependency of transferkit. Install it "
            f"with: {_INSTALL}"
        )
        raise MissingDependencyError(msg) from exc


def is_hub_name(name: str) -> bool:
    """Whether ``name`` is a keras-hub name: ``"keras_hub:..."`` or a local preset folder."""
    return name.startswith(PREFIX) or _is_preset_folder(name)


def _is_preset_folder(path: str) -> bool:
    return bool(path) and Path(path, "config.json").is_file()


def could_match(pattern: str) -> bool:
    """Whether an fnmatch pattern could match a ``keras_hub:`` name (to skip the import)."""
    literal = re.split(r"[*?\[]", pattern, maxsplit=1)[0]
    return PREFIX.startswith(literal) or literal.startswith(PREFIX)


def _presets() -> tuple[tuple[str, dict[str, Any], str], ...]:
    """(preset, metadata, backbone class name) of every image preset transferkit supports."""
    keras_hub = import_keras_hub("Listing keras-hub backbones")
    return _presets_of(keras_hub)


@functools.cache
def _presets_of(keras_hub: ModuleType) -> tuple[tuple[str, dict[str, Any], str], ...]:
    # keras-hub registers its presets once, at import; reading them scans its classes.
    return tuple(
        (preset, entry.get("metadata", {}), class_name)
        for class_name in _FAMILIES
        for preset, entry in getattr(keras_hub.models, class_name).presets.items()
    )


def names() -> list[str]:
    """The ``keras_hub:<preset>`` names of every supported image preset, sorted."""
    return sorted(PREFIX + preset for preset, _, _ in _presets())


def preset_rows() -> list[dict[str, Any]]:
    """One dict per supported preset, for the docs: name, family, sizes and metadata."""
    rows = []
    for preset, metadata, class_name in sorted(_presets()):
        spec = _spec_from_metadata(preset, metadata, class_name)
        rows.append(
            {
                "name": spec.name,
                "family": spec.family,
                "default_image_size": spec.default_image_size,
                "parameters": spec.parameters,
                "pooling": spec.pooling,
                "fixed_size": _FAMILIES[class_name].fixed_size,
                "description": " ".join(str(metadata.get("description", "")).split()),
                "model_card": metadata.get("model_card"),
            }
        )
    return rows


def backbone(name: str) -> Backbone:
    """The spec of a keras-hub preset: ``"keras_hub:<preset>"`` or a preset folder path.

    Raises:
        MissingDependencyError: keras-hub is not installed.
        UnknownBackboneError: keras-hub has no such image preset.
        InvalidArgumentError: the folder is not a keras-hub preset of a supported family.
    """
    keras_hub = import_keras_hub(f"The backbone {name!r}")
    preset = name.removeprefix(PREFIX)
    if _is_preset_folder(preset):
        return _spec_from_folder(keras_hub, preset)
    for known, metadata, class_name in _presets():
        if known == preset:
            return _spec_from_metadata(preset, metadata, class_name)
    import difflib

    near = difflib.get_close_matches(PREFIX + preset, names(), n=3, cutoff=0.6)
    hint = f"Did you mean {' or '.join(map(repr, near))}? " if near else ""
    msg = (
        f"Unknown keras-hub backbone {name!r}: not an image preset of a supported family "
        f"({', '.join(sorted(f.name for f in _FAMILIES.values()))}) nor a local preset folder. "
        f"{hint}See transferkit.list_backbones('keras_hub:*'). Received: backbone={name!r}"
    )
    raise UnknownBackboneError(msg)


def _size_from_name(preset: str, fixed_size: bool) -> int:
    # Fixed-size presets name their resolution (vit_base_patch16_384_imagenet, siglip_..._256);
    # in CNN names a number is a depth (resnet_101), so only an explicit "_r240_" counts there.
    pattern = r"_(\d{3})(?=_|$)" if fixed_size else r"_r(\d{3})(?=_|$)"
    found = re.findall(pattern, preset)
    return int(found[-1]) if found else _DEFAULT_SIZE


def _spec_from_metadata(preset: str, metadata: dict[str, Any], class_name: str) -> Backbone:
    size = _size_from_name(preset, _FAMILIES[class_name].fixed_size)
    return _spec(PREFIX + preset, preset, class_name, size, metadata.get("params"))


def _spec_from_folder(keras_hub: ModuleType, folder: str) -> Backbone:
    config = _folder_config(folder)
    class_name = str(config.get("class_name", ""))
    if class_name not in _FAMILIES:
        msg = (
            f"The preset folder {folder!r} holds a {class_name or 'non-keras-hub'} model; "
            f"transferkit uses keras-hub image backbones of the classes "
            f"{', '.join(sorted(_FAMILIES))}. Received: backbone={folder!r}"
        )
        raise InvalidArgumentError(msg)
    inner = config.get("config", {})
    if _FAMILIES[class_name].vision_tower:
        inner = inner.get("vision_encoder", {}).get("config", {})
    shape = inner.get("image_shape") or inner.get("input_shape") or (None,)
    size = shape[0] if isinstance(shape[0], int) else _DEFAULT_SIZE
    path = os.path.abspath(folder)
    return _spec(PREFIX + path, path, class_name, size, None)


def _folder_config(folder: str) -> dict[str, Any]:
    import json

    with open(Path(folder, "config.json"), encoding="utf-8") as file:
        config: dict[str, Any] = json.load(file)
    return config


def _spec(name: str, preset: str, class_name: str, size: int, params: Any) -> Backbone:
    family = _FAMILIES[class_name]
    return Backbone(
        name=name,
        constructor=_Constructor(preset, class_name, size),
        # The converter's scaling is inside the built model, as ImageRescaling.
        preprocessing="none",
        default_image_size=size,
        # Unknown before the network is built (the metadata does not say).
        feature_channels=None,
        family=family.name,
        min_image_size=min(32, size),
        # Not weight_sizes: a fixed-size family cannot load its weights at another size at
        # all, which the constructor checks, rather than load the default size's with a warning.
        weight_sizes=None,
        parameters=params if isinstance(params, int) and params > 0 else None,
        pooling=family.pooling,  # type: ignore[arg-type]
        layout=layout,
    )


@dataclass(frozen=True)
class _Constructor:
    """Builds a preset's network with keras-hub's ``from_preset``, preprocessing inside."""

    preset: str
    class_name: str
    preset_size: int

    def __call__(
        self,
        include_top: bool = False,
        weights: str | None = None,
        input_shape: tuple[int, int, int] = (_DEFAULT_SIZE, _DEFAULT_SIZE, 3),
        **kwargs: Any,
    ) -> keras.Model:
        keras_hub = import_keras_hub(f"The backbone {self.preset!r}")
        family = _FAMILIES[self.class_name]
        height, width = int(input_shape[0]), int(input_shape[1])
        load_weights = weights is not None
        # Position embeddings learned at one size: the weights load at that size only (and a
        # vision tower is built at it only). Checked before anything is read or downloaded.
        fixed = family.shape_argument is None or (family.fixed_size and load_weights)
        if fixed and (height, width) != (self.preset_size,) * 2:
            what = "built" if family.shape_argument is None else "pretrained"
            msg = (
                f"The {family.name} backbone {self.preset!r} is {what} at its preset's size "
                f"only, {self.preset_size}x{self.preset_size} pixels; pick that size"
                f"{'' if family.shape_argument is None else ' or pass weights=None'}. "
                f"Received: image_size={(height, width)}"
            )
            raise InvalidImageSizeError(msg)
        if family.shape_argument is not None:
            kwargs[family.shape_argument] = (height, width, 3)
        try:
            network = keras_hub.models.Backbone.from_preset(
                self.preset, load_weights=load_weights, **kwargs
            )
            converter = keras_hub.layers.ImageConverter.from_preset(self.preset)
        except Exception as exc:
            raise _loading_error(self.preset, (height, width), exc) from exc
        if family.vision_tower:
            network = network.vision_encoder
        if family.tokens_from is not None:
            tokens = network.get_layer(_full_name(network, family.tokens_from)).output
            network = keras.Model(network.input, tokens, name=f"{network.name}_tokens")
        inputs = keras.Input((height, width, 3), name="images")
        x = ImageRescaling(converter.scale, converter.offset, name="converter_rescaling")(inputs)
        # Some networks take a dict of one input ("images", or DINOv3's "pixel_values").
        outputs = network({next(iter(network.input)): x} if isinstance(network.input, dict) else x)
        return keras.Model(inputs, outputs, name=_model_name(self.preset))


def _full_name(network: keras.Model, suffix: str) -> str:
    # SigLIP prefixes its layer names with the encoder's name.
    return next(str(layer.name) for layer in network.layers if layer.name.endswith(suffix))


def _model_name(preset: str) -> str:
    return re.sub(r"\W", "_", Path(preset).name or preset).strip("_") or "keras_hub_backbone"


def _loading_error(preset: str, size: tuple[int, int], exc: Exception) -> Exception:
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else repr(exc)
    cause = f"{type(exc).__name__}: {first}"
    if not isinstance(exc, OSError):  # requests' and kagglehub's network errors are OSErrors
        return InvalidArgumentError(
            f"keras-hub could not build the preset {preset!r} at image size {size} ({cause}). "
            "Transformers need sides that are multiples of their patch size, and DINOv2 "
            "square images. "
            f"Received: backbone={preset!r}, image_size={size}"
        )
    if os.path.isdir(preset):
        return WeightsUnavailableError(
            f"keras-hub could not read the preset folder {preset!r} ({cause}). "
            f"Received: backbone={preset!r}"
        )
    return WeightsUnavailableError(
        f"Could not download the keras-hub preset {preset!r} ({cause}). "
        "keras-hub downloads presets from Kaggle on first use into its cache "
        "(~/.cache/kagglehub, or $KAGGLEHUB_CACHE). To work offline, on a machine online run "
        f"keras_hub.models.Backbone.from_preset({preset!r}).save_to_preset('folder') and "
        f"keras_hub.layers.ImageConverter.from_preset({preset!r}).save_to_preset('folder'), "
        "copy the folder here and pass its path as the backbone. "
        f"Received: backbone={PREFIX + preset!r}"
    )


def layout(model: keras.Model) -> BackboneLayout:
    """The blocks and special tokens of a keras-hub backbone built (or loaded) by transferkit.

    The family is recognized from the model itself (the keras-hub class, or its block
    layers), so a classifier loaded from a file finds its blocks without the preset.
    """
    network = _network(model)
    family = _FAMILIES.get(type(network).__name__) or next(
        (f for f in _FAMILIES.values() if f.blocks and _has_layer(network, f.blocks)), None
    )
    if family is None or not family.blocks:
        return BackboneLayout(blocks=tuple((layer,) for layer in network.layers))
    stem: list[keras.layers.Layer] = []
    blocks: list[tuple[keras.layers.Layer, ...]] = []
    for layer in _walk(network):
        if _matches(layer, family.stem):
            stem.append(layer)
        elif _matches(layer, family.blocks):
            blocks.append((layer,))
    patch = _attribute(network, "patch_size")
    return BackboneLayout(
        blocks=((tuple(stem),) if stem else ()) + tuple(blocks),
        prefix_tokens=family.prefix_tokens(lambda name: _attribute(network, name)),
        patch_size=(patch, patch) if isinstance(patch, int) else tuple(patch),
    )


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
