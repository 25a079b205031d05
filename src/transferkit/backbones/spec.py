"""``Backbone``: what transferkit knows about one pretrained network, as data.

A backbone is a frozen dataclass: the ``keras.applications``-style constructor plus the facts
that constructor does not tell you (the preprocessing its weights expect, its input sizes and
limits, the width of its features). :meth:`Backbone.build` validates every argument before it
builds anything.
"""

from __future__ import annotations

import os
import urllib.error
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

import keras

from transferkit import _validation
from transferkit.backbones import pooling as _pooling
from transferkit.backbones.preprocessing import (
    PREPROCESSING_MODES,
    ImagePreprocessing,
    PreprocessingMode,
)
from transferkit.errors import (
    InvalidArgumentError,
    InvalidImageSizeError,
    TransferkitWarning,
    WeightsUnavailableError,
)

__all__ = ["Backbone", "BackboneLayout", "ImageSize", "Weights"]

#: An image size, as one int for square images or as ``(height, width)``.
ImageSize = int | Sequence[int]
#: ``"imagenet"``, ``None`` (random initialization) or the path of a weights file.
Weights = str | os.PathLike[str] | None


@dataclass(frozen=True)
class BackboneLayout:
    """What a built backbone model is made of, for freezing and pooling.

    Args:
        blocks: the freezable blocks, input side first; each block is a tuple of layers
            that are frozen and unfrozen together. ``unfreeze(-4)`` unfreezes the last four.
            Layers in no block (containers, a final normalization after the last block)
            train whenever any block does.
        prefix_tokens: int. For a backbone ending in a token sequence, the number of
            special tokens (class, distillation, registers) before the patch tokens.
            Defaults to 0.
        patch_size: ``(height, width)`` of the pixels each output token stands for, for a
            token sequence (a hierarchical transformer's last stage spans several
            patches); None for a feature map. Defaults to None.
        per_layer: bool. Whether the blocks are single layers (``keras.applications``),
            which discriminative learning rates group into blocks by name
            (:func:`~transferkit.discriminative.block_groups`); False when they are the
            network's own blocks or stages, one learning-rate group each. Defaults to True.
    """

    blocks: tuple[tuple[keras.layers.Layer, ...], ...]
    prefix_tokens: int = 0
    patch_size: tuple[int, int] | None = None
    per_layer: bool = True


@dataclass(frozen=True)
class Backbone:
    """A pretrained image network that transferkit can put under a new head.

    Args:
        name: str. The registry name, snake_case (``"mobilenet_v2"``).
        constructor: callable. A ``keras.applications``-style constructor that accepts
            ``include_top``, ``weights`` and ``input_shape`` keyword arguments and returns a
            ``keras.Model`` whose output is a 4D feature map.
        preprocessing: str. The preprocessing its weights expect, one of ``"tf"``,
            ``"caffe"``, ``"torch"`` or ``"none"`` (see
            :class:`~transferkit.preprocessing.ImagePreprocessing`).
        default_image_size: int. The input size the network was trained at.
        feature_channels: int or None. Channels of the last feature map at the default
            settings; None where unknown before building (keras-hub presets).
        family: str. The model family (``"mobilenet"``, ``"efficientnet"``, ...).
        min_image_size: int. The smallest height or width the network accepts.
            Defaults to 32.
        weight_sizes: tuple of int, or None. The square sizes that have ImageNet weights of
            their own, for a network published with one weights file per size (MobileNet
            V1 and V2). At any other size the constructor loads the weights of the default
            size, as Keras does, and :meth:`check_weights` warns. ``None``: one set of
            weights, used at every size. Defaults to None.
        imagenet_weights: bool. Whether ``weights="imagenet"`` is available.
            Defaults to True.
        parameters: int or None. Parameter count of the headless network at the default
            settings, for tables. Defaults to None.
        pooling: str. The default pooling of the network's output (see
            :data:`~transferkit.pooling.POOLINGS`): ``"avg"`` for a feature map, ``"cls"``
            or ``"mean"`` for a token sequence. Defaults to ``"avg"``.
        layout: callable or None. Maps a built backbone model to its
            :class:`~transferkit.backbone.BackboneLayout`; None means every top-level
            layer is a block (as for ``keras.applications``) and there are no special
            tokens. Defaults to None.
    """

    name: str
    constructor: Callable[..., keras.Model] = field(repr=False)
    preprocessing: PreprocessingMode
    default_image_size: int
    feature_channels: int | None
    family: str
    min_image_size: int = 32
    weight_sizes: tuple[int, ...] | None = None
    imagenet_weights: bool = True
    parameters: int | None = None
    pooling: _pooling.Pooling = "avg"
    layout: Callable[[keras.Model], BackboneLayout] | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        self._check_identity()
        self._check_sizes()
        self._check_optional_facts()

    def _refuse(self, what: str, received: str) -> NoReturn:
        msg = f"Backbone {self.name!r}: {what}. Received: {received}"
        raise InvalidArgumentError(msg)

    def _check_identity(self) -> None:
        # Name, constructor, preprocessing, family, pooling: what every spec must have.
        if not self.name or not isinstance(self.name, str):
            msg = f"A backbone needs a non-empty string name. Received: name={self.name!r}"
            raise InvalidArgumentError(msg)
        if not callable(self.constructor):
            self._refuse("constructor must be callable", f"constructor={self.constructor!r}")
        if self.preprocessing not in PREPROCESSING_MODES:
            self._refuse(
                f"preprocessing must be one of {sorted(PREPROCESSING_MODES)}",
                f"preprocessing={self.preprocessing!r}",
            )
        if not isinstance(self.family, str) or not self.family:
            self._refuse("family must be a non-empty string", f"family={self.family!r}")
        if self.pooling not in _pooling.POOLINGS:
            self._refuse(
                f"pooling must be one of {sorted(_pooling.POOLINGS)}", f"pooling={self.pooling!r}"
            )

    def _check_sizes(self) -> None:
        for attribute in ("default_image_size", "min_image_size", "feature_channels"):
            value = getattr(self, attribute)
            if value is None and attribute == "feature_channels":
                continue
            if not _is_int(value) or value <= 0:
                self._refuse(f"{attribute} must be a positive int", f"{attribute}={value!r}")
            object.__setattr__(self, attribute, int(value))  # a numpy int becomes an int
        if self.default_image_size < self.min_image_size:
            self._refuse(
                "default_image_size is below min_image_size",
                f"default_image_size={self.default_image_size}, "
                f"min_image_size={self.min_image_size}",
            )
        if self.weight_sizes is not None:
            sizes = self.weight_sizes
            if isinstance(sizes, (str, bytes)) or not isinstance(sizes, Sequence):
                sizes = ()
            if not sizes or not all(_is_int(size) and size > 0 for size in sizes):
                self._refuse(
                    "weight_sizes must be None or a non-empty sequence of positive ints",
                    f"weight_sizes={self.weight_sizes!r}",
                )
            # A list would stay mutable inside the frozen spec; store a tuple of ints.
            object.__setattr__(self, "weight_sizes", tuple(int(size) for size in sizes))

    def _check_optional_facts(self) -> None:
        if self.parameters is not None and not (_is_int(self.parameters) and self.parameters > 0):
            self._refuse(
                "parameters must be None or a positive int", f"parameters={self.parameters!r}"
            )
        if self.layout is not None and not callable(self.layout):
            self._refuse("layout must be None or a callable", f"layout={self.layout!r}")

    def preprocessing_layer(self, name: str = "preprocessing") -> ImagePreprocessing:
        """Returns a new layer mapping raw pixels (0-255) to what this network expects.

        Args:
            name: str. The layer's name. Defaults to ``"preprocessing"``.

        Returns:
            A serializable :class:`~transferkit.preprocessing.ImagePreprocessing` layer.
        """
        return ImagePreprocessing(self.preprocessing, name=name)

    def layout_of(self, model: keras.Model) -> BackboneLayout:
        """Returns the blocks and special tokens of a model built by :meth:`build`.

        Args:
            model: the backbone model (also one loaded from a saved classifier).

        Returns:
            The :class:`~transferkit.backbone.BackboneLayout`; without a ``layout``
            callable, one block per top-level layer.
        """
        if self.layout is None:
            return BackboneLayout(blocks=tuple((layer,) for layer in model.layers))
        return self.layout(model)

    def pooling_layer(
        self, model: keras.Model, pooling: str | None = None, name: str = "pooling"
    ) -> keras.layers.Layer:
        """Returns a new layer pooling the output of ``model`` into one vector per image.

        Args:
            model: the backbone model built by :meth:`build`.
            pooling: ``"avg"``, ``"cls"``, ``"mean"``, or None for this backbone's default.
            name: str. The layer's name. Defaults to ``"pooling"``.

        Returns:
            ``GlobalAveragePooling2D`` for a feature map, a
            :class:`~transferkit.pooling.TokenPooling` for a token sequence.

        Raises:
            InvalidArgumentError: the pooling is unknown or does not fit the output.
        """
        chosen = self.pooling if pooling is None else pooling
        prefix = self.layout_of(model).prefix_tokens if len(model.output.shape) == 3 else 0
        return _pooling.pooling_layer(len(model.output.shape), chosen, prefix, name=name)

    def patch_grid(self, model: keras.Model) -> _pooling.PatchGrid | None:
        """Returns the layer laying the output tokens of ``model`` out on their grid.

        Args:
            model: the backbone model built by :meth:`build`.

        Returns:
            A :class:`~transferkit.pooling.PatchGrid` (rows and columns: the input size
            over the layout's patch size; the special tokens left out), or None when the
            output is a feature map already.

        Raises:
            InvalidArgumentError: the output is tokens but the layout names no patch size.
        """
        if len(model.output.shape) == 4:
            return None
        patch = self.layout_of(model).patch_size
        if patch is None:
            msg = (
                f"Backbone {self.name!r} ends in tokens but its layout names no patch size, "
                "so its tokens cannot be laid out on a grid. Received: patch_size=None"
            )
            raise InvalidArgumentError(msg)
        rows, columns = model.input.shape[1] // patch[0], model.input.shape[2] // patch[1]
        return _pooling.PatchGrid(rows, columns, name="patch_grid")

    def feature_map(self, model: keras.Model) -> keras.Model:
        """Returns a model from the backbone's input to a 4D feature map, for Grad-CAM.

        A convolutional backbone is returned as it is; for a token sequence, the patch
        tokens are laid out on their grid by :meth:`patch_grid`.

        Args:
            model: the backbone model built by :meth:`build`.

        Returns:
            A ``keras.Model`` sharing the backbone's layers and weights.
        """
        grid = self.patch_grid(model)
        if grid is None:
            return model
        return keras.Model(model.input, grid(model.output), name=f"{model.name}_feature_map")

    def resolve_image_size(self, image_size: ImageSize | None = None) -> tuple[int, int]:
        """Validates an image size and returns it as ``(height, width)``.

        Args:
            image_size: int, ``(height, width)``, or None for the default size.

        Returns:
            The size as a ``(height, width)`` tuple.

        Raises:
            InvalidImageSizeError: the size is not two positive ints, or is below the
                network's minimum.
        """
        if image_size is None:
            return (self.default_image_size, self.default_image_size)
        height, width = _validation.image_size(image_size)
        if min(height, width) < self.min_image_size:
            msg = (
                f"Backbone {self.name!r} needs images of at least "
                f"{self.min_image_size}x{self.min_image_size} pixels. "
                f"Received: image_size={image_size!r}"
            )
            raise InvalidImageSizeError(msg)
        return (height, width)

    def check_weights(self, weights: Weights, image_size: tuple[int, int]) -> None:
        """Raises if ``weights`` cannot be used at ``image_size``; builds nothing.

        ImageNet weights can be used at every size the network accepts. Where they come in
        one file per size (``weight_sizes``) and ``image_size`` has none, Keras loads
        the weights of the default size; this warns that it will
        (:class:`~transferkit.errors.TransferkitWarning`).

        Args:
            weights: ``"imagenet"``, None, or the path of a weights file.
            image_size: ``(height, width)`` as returned by :meth:`resolve_image_size`.

        Raises:
            InvalidArgumentError: ``weights`` is none of the accepted kinds, or ImageNet
                weights do not exist for this backbone.
            WeightsUnavailableError: a weights path does not exist.
        """
        if weights is None:
            return
        if weights == "imagenet":
            if not self.imagenet_weights:
                msg = (
                    f"Backbone {self.name!r} has no ImageNet weights; pass weights=None or "
                    f"the path of a weights file. Received: weights='imagenet'"
                )
                raise InvalidArgumentError(msg)
            height, width = image_size
            if self.weight_sizes is not None and (
                height != width or height not in self.weight_sizes
            ):
                default = self.default_image_size
                warnings.warn(
                    f"{self.name!r} has ImageNet weights of its own for square images of "
                    f"{', '.join(map(str, self.weight_sizes))} pixels; at {height}x{width} "
                    f"Keras loads the {default}x{default} ones, which work but were trained "
                    "at another size. Pick one of those sizes for weights trained at it. "
                    f"Received: image_size={image_size}",
                    TransferkitWarning,
                    stacklevel=2,
                )
            return
        if isinstance(weights, (str, os.PathLike)):
            if not Path(weights).is_file():
                msg = (
                    f"Weights file not found: {os.fspath(weights)!r}. Pass 'imagenet', None, "
                    f"or the path of an existing weights file. Received: weights={weights!r}"
                )
                raise WeightsUnavailableError(msg)
            return
        msg = (
            "weights must be 'imagenet', None, or the path of a weights file. "
            f"Received: weights={weights!r}"
        )
        raise InvalidArgumentError(msg)

    def build(
        self,
        image_size: ImageSize | None = None,
        weights: Weights = "imagenet",
        **kwargs: Any,
    ) -> keras.Model:
        """Builds the headless network (``include_top=False``).

        Args:
            image_size: int, ``(height, width)``, or None for ``default_image_size``.
            weights: ``"imagenet"`` (downloaded once by Keras into ``~/.keras/models``),
                None for random initialization, or the path of a weights file written by
                ``model.save_weights(...)`` for the same backbone and arguments.
            **kwargs: Forwarded to the constructor (for instance ``alpha=0.35``).

        Returns:
            A ``keras.Model`` from raw-preprocessed images to a 4D feature map.

        Raises:
            InvalidImageSizeError: the size is not allowed (checked before building).
            WeightsUnavailableError: the weights cannot be downloaded or read.
        """
        for reserved in ("include_top", "weights", "input_shape", "input_tensor"):
            if reserved in kwargs:
                msg = (
                    f"{reserved!r} is set by transferkit and cannot be passed through. "
                    f"Received: {reserved}={kwargs[reserved]!r}"
                )
                raise InvalidArgumentError(msg)
        height, width = self.resolve_image_size(image_size)
        self.check_weights(weights, (height, width))
        keras_weights = "imagenet" if weights == "imagenet" else None
        try:
            with warnings.catch_warnings():
                # check_weights has said so already, with the sizes and what to do.
                warnings.filterwarnings("ignore", "`input_shape` is undefined or non-square")
                model = self.constructor(
                    include_top=False,
                    weights=keras_weights,
                    input_shape=(height, width, 3),
                    **kwargs,
                )
        except Exception as exc:
            if keras_weights == "imagenet" and _is_download_failure(exc):
                msg = (
                    f"Could not download the ImageNet weights for {self.name!r} "
                    f"({_first_line(exc)}). To work offline, pass weights=<path of a weights "
                    "file> (for instance one written by backbone.save_weights("
                    "'backbone.weights.h5') on a machine online), or download the file named "
                    "above elsewhere and copy it into ~/.keras/models (or $KERAS_HOME/models), "
                    "where Keras looks before downloading. Received: weights='imagenet'"
                )
                raise WeightsUnavailableError(msg) from exc
            raise
        if weights is not None and weights != "imagenet":
            try:
                model.load_weights(os.fspath(weights))
            except Exception as exc:
                msg = (
                    f"Could not load weights file {os.fspath(weights)!r} into backbone "
                    f"{self.name!r} at image size {(height, width)} ({_first_line(exc)}). "
                    "The file must be written by save_weights() of the same backbone built "
                    f"with the same arguments. Received: weights={weights!r}"
                )
                raise WeightsUnavailableError(msg) from exc
        return model


def _is_int(value: object) -> bool:
    return _validation.as_int(value) is not None


def _first_line(exc: BaseException) -> str:
    # Keras' loading errors run to hundreds of lines; the chained cause keeps them all.
    return str(exc).strip().splitlines()[0].rstrip(".:") if str(exc).strip() else repr(exc)


def _is_download_failure(exc: BaseException) -> bool:
    # keras.utils.get_file turns network errors into a bare Exception("URL fetch failure ...").
    if isinstance(exc, (urllib.error.URLError, ConnectionError, TimeoutError)):
        return True
    return "URL fetch failure" in str(exc)
