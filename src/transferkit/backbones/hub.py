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
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import keras

from transferkit.backbones.hub_families import FAMILIES, features_of, layout
from transferkit.backbones.preprocessing import ImageRescaling
from transferkit.backbones.spec import Backbone
from transferkit.errors import (
    InvalidArgumentError,
    InvalidImageSizeError,
    MissingDependencyError,
    UnknownBackboneError,
    WeightsUnavailableError,
)

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
        for class_name in FAMILIES
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
                "fixed_size": FAMILIES[class_name].fixed_size,
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
        f"({', '.join(sorted(f.name for f in FAMILIES.values()))}) nor a local preset folder. "
        f"{hint}See transferkit.list_backbones('keras_hub:*'). Received: backbone={name!r}"
    )
    raise UnknownBackboneError(msg)


def _size_from_name(preset: str, class_name: str) -> int:
    # Fixed-size presets name their resolution (vit_base_patch16_384_imagenet, siglip_..._256,
    # mit_b0_cityscapes_1024); in CNN names a number is a depth (resnet_101), so only an
    # explicit "_r240_" counts there.
    family = FAMILIES[class_name]
    named = family.fixed_size or family.size_in_name
    pattern = r"_(\d{3,4})(?=_|$)" if named else r"_r(\d{3})(?=_|$)"
    found = re.findall(pattern, preset)
    return int(found[-1]) if found else family.default_size or _DEFAULT_SIZE


def _spec_from_metadata(preset: str, metadata: dict[str, Any], class_name: str) -> Backbone:
    size = _size_from_name(preset, class_name)
    return _spec(PREFIX + preset, preset, class_name, size, metadata.get("params"))


def _spec_from_folder(keras_hub: ModuleType, folder: str) -> Backbone:
    config = _folder_config(folder)
    class_name = str(config.get("class_name", ""))
    if class_name not in FAMILIES:
        msg = (
            f"The preset folder {folder!r} holds a {class_name or 'non-keras-hub'} model; "
            f"transferkit uses keras-hub image backbones of the classes "
            f"{', '.join(sorted(FAMILIES))}. Received: backbone={folder!r}"
        )
        raise InvalidArgumentError(msg)
    inner = config.get("config", {})
    if FAMILIES[class_name].vision_tower:
        inner = inner.get("vision_encoder", {}).get("config", {})
    shape = inner.get("image_shape") or inner.get("input_shape") or (None,)
    default = FAMILIES[class_name].default_size or _DEFAULT_SIZE
    size = shape[0] if isinstance(shape[0], int) else default
    path = os.path.abspath(folder)
    return _spec(PREFIX + path, path, class_name, size, None)


def _folder_config(folder: str) -> dict[str, Any]:
    import json

    with open(Path(folder, "config.json"), encoding="utf-8") as file:
        config: dict[str, Any] = json.load(file)
    return config


def _spec(name: str, preset: str, class_name: str, size: int, params: Any) -> Backbone:
    family = FAMILIES[class_name]
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
        family = FAMILIES[self.class_name]
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
        network = features_of(network, family)
        inputs = keras.Input((height, width, 3), name="images")
        x = ImageRescaling(converter.scale, converter.offset, name="converter_rescaling")(inputs)
        # Some networks take a dict of one input ("images", or DINOv3's "pixel_values").
        outputs = network({next(iter(network.input)): x} if isinstance(network.input, dict) else x)
        return keras.Model(inputs, outputs, name=_model_name(self.preset))


def _model_name(preset: str) -> str:
    return re.sub(r"\W", "_", Path(preset).name or preset).strip("_") or "keras_hub_backbone"


def _loading_error(preset: str, size: tuple[int, int], exc: Exception) -> Exception:
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else repr(exc)
    cause = f"{type(exc).__name__}: {first}"
    if not isinstance(exc, OSError):  # requests' and kagglehub's network errors are OSErrors
        return InvalidArgumentError(
            f"keras-hub could not build the preset {preset!r} at image size {size} ({cause}). "
            "Transformers need sides that are multiples of their patch size, hierarchical "
            "ones (MiT, Swin) sides that halve evenly at every stage (multiples of 32 for the "
            "presets), and DINOv2 square images. "
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
