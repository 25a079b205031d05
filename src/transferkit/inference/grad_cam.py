"""Grad-CAM: which parts of an image a classifier's score comes from.

Grad-CAM (Selvaraju et al., 2017) weights each channel of a convolutional feature map by the
mean gradient of a class's score over that channel, sums the weighted channels, keeps the
positive part and scales it to [0, 1]. The score is the class's logit (for a binary head,
``+logit`` for class 1 and ``-logit`` for class 0), so the map shows evidence *for* the class.

The feature map is, by default, the backbone's output: for every ``keras.applications``
backbone built with ``include_top=False`` that is its last convolutional feature map, after
its last activation. A plugin backbone whose output is not that map (or a user who wants an
earlier, finer one) names a backbone layer with ``layer=``. Backbones whose output is a
sequence of tokens ``(batch, tokens, channels)`` (vision transformers) are turned into a
map by ``to_spatial``; the default is the backbone spec's own grid
(:meth:`~transferkit.Backbone.patch_grid`: keras-hub ViT, DeiT, DINOv2, SigLIP, CLIP, Swin,
special tokens left out) and, for tokens whose layout names no patch size,
:func:`tokens_to_map`, which guesses the special tokens from the token count. With a
class-token head (``pooling="cls"``) the map is the *input* of the backbone's last block: the
score reads the class token alone, so the output's patch tokens get no gradient at all, and
they reach the class token through that block's attention (as pytorch-grad-cam does for
ViTs).

The maps are computed with ``keras.ops`` on the classifier's own layers (the backbone in
inference mode, then its pooling, dropout and logits layers), so they need no copy of the
weights and work on every backend that ``transferkit._backend.gradients`` can differentiate
on (TensorFlow, JAX). A map inside the backbone (``layer=``, or a class-token head's last
block) is read by probing that layer's call: the gradient with respect to an offset added
to the map, at zero, is the gradient with respect to the map. The classifier is left
unchanged.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import keras
import numpy as np

from transferkit import _backend, _validation
from transferkit.backbones.pooling import PatchGrid, TokenPooling
from transferkit.data import inputs as _inputs
from transferkit.errors import InvalidArgumentError, UnknownLayerError
from transferkit.inference import tta as _tta
from transferkit.model.protocol import ClassifierLike

if TYPE_CHECKING:
    import os  # noqa: F401  # named by _inputs.Images, for Sphinx to resolve the hint

    from transferkit.backbones.spec import Backbone

__all__ = ["SpatialFn", "grad_cam", "tokens_to_map"]

#: Turns a backbone layer's output into a ``(batch, rows, columns, channels)`` map.
SpatialFn = Callable[[Any, tuple[int, int]], Any]
_MAX_PREFIX_TOKENS = 8


def grad_cam(
    classifier: ClassifierLike,
    images: _inputs.Images,
    class_index: int | Sequence[int] | None = None,
    *,
    layer: str | None = None,
    to_spatial: SpatialFn | None = None,
    batch_size: int = 32,
) -> np.ndarray:
    """Grad-CAM heatmaps of images, at the input size, in [0, 1].

    Args:
        classifier: a :class:`~transferkit.TransferClassifier`.
        images: raw pixels (0-255) of shape ``(n, height, width, 3)`` at the classifier's
            size (or one image), a ``tf.data.Dataset`` of image batches, or the path of an
            image file or a folder of them.
        class_index: the class whose evidence to show: an int for every image, one int
            per image, or None for each image's predicted class. Defaults to None.
        layer: str. The name of a layer of ``classifier.backbone`` whose output is the
            feature map to use. Defaults to the backbone's output (its last feature map
            for every built-in backbone).
        to_spatial: a function ``(output, (height, width)) -> map`` that turns the layer's
            output into a ``(batch, rows, columns, channels)`` map, given the input size.
            It must only select and rearrange values (it is applied to the gradient too).
            Defaults to the output itself when it is 4D; for a sequence of tokens, to the
            backbone's patch grid (:meth:`~transferkit.Backbone.patch_grid`), or to
            :func:`tokens_to_map` where its layout names no patch size.
        batch_size: int. Images per gradient computation. Defaults to 32.

    Returns:
        A float32 array of shape ``(n, height, width)``: for each image, the positive part
        of the class-weighted feature map, resized (bilinearly) to the input size and
        divided by its maximum; all zeros where no position speaks for the class.

    Raises:
        InvalidArgumentError: ``class_index`` is not a class (or not one per image), or the
            feature map is not 4D after ``to_spatial``.
        UnknownLayerError: the backbone has no layer named ``layer``.
        ImageShapeError: the images do not have the classifier's size.
    """
    batch_size = _validation.positive_int("batch_size", batch_size)
    inputs = _inputs.as_image_input(images, image_size=classifier.image_size, batch_size=batch_size)
    classes = _class_indices(class_index, classifier.num_classes)
    if isinstance(classes, np.ndarray) and isinstance(inputs, np.ndarray):
        _check_class_count(len(classes), len(inputs), exact=True)  # before any work
    cam = _CamModel(classifier, layer, to_spatial)
    heatmaps = []
    seen = 0
    for batch in _tta.image_batches(inputs, batch_size):
        size = int(batch.shape[0])
        if classes is None or isinstance(classes, int):
            wanted = None if classes is None else np.full(size, classes, np.int64)
        else:
            wanted = classes[seen : seen + size]
            _check_class_count(len(classes), seen + size, exact=False)
        heatmaps.append(cam(batch, wanted))
        seen += size
    if isinstance(classes, np.ndarray):
        _check_class_count(len(classes), seen, exact=True)
    height, width = classifier.image_size
    return np.concatenate(heatmaps) if heatmaps else np.zeros((0, height, width), np.float32)


def tokens_to_map(tokens: Any, image_size: tuple[int, int]) -> Any:
    """Lays a sequence of patch tokens out as a grid, dropping leading extra tokens.

    Vision transformers put 0 to a few class or register tokens before the patch tokens.
    This takes the fewest leading tokens (at most 8) whose removal leaves a grid of the
    image's aspect ratio: 197 tokens of a 224x224 image are 1 class token and 14x14
    patches.

    Args:
        tokens: a tensor ``(batch, tokens, channels)``.
        image_size: the ``(height, width)`` of the input images.

    Returns:
        A tensor ``(batch, rows, columns, channels)``.

    Raises:
        InvalidArgumentError: no such grid exists.

    Example:
        >>> import numpy as np
        >>> tuple(tokens_to_map(np.zeros((2, 197, 8), "float32"), (224, 224)).shape)
        (2, 14, 14, 8)
    """
    total = int(tokens.shape[1])
    height, width = image_size
    for prefix in range(min(_MAX_PREFIX_TOKENS, total - 1) + 1):
        patches = total - prefix
        columns = round(math.sqrt(patches * width / height))
        if columns > 0 and patches % columns == 0:
            rows = patches // columns
            if rows * width == columns * height:  # the patches tile the image's shape
                return PatchGrid(rows, columns)(tokens)  # the last rows x columns tokens
    msg = (
        f"Cannot lay {total} tokens out as a grid of a {height}x{width} image after "
        f"dropping up to {_MAX_PREFIX_TOKENS} leading tokens; pass to_spatial= to say how. "
        f"Received: tokens of shape {tuple(tokens.shape)}"
    )
    raise InvalidArgumentError(msg)


# ---------------------------------------------------------------------- helpers


class _CamModel:
    """Preprocessing, the backbone (probed at the feature map) and the head, as callables."""

    def __init__(
        self, classifier: ClassifierLike, layer: str | None, to_spatial: SpatialFn | None
    ) -> None:
        backbone = classifier.backbone
        self._backbone: keras.Model = backbone
        self._image_size = classifier.image_size
        self._binary = classifier.num_classes == 2
        self._preprocess = classifier.spec.preprocessing_layer()
        self._head = classifier.head_layers
        # Where the map is taken: the backbone's output (no probe), a named layer's output,
        # or, for a class-token head, the input of the backbone's last block. A class-token
        # head reads one token of the output, so the output's patch tokens get no gradient;
        # they reach the score through the last block's attention (pytorch-grad-cam's choice
        # for ViTs: the last block's first norm).
        self._probe: _Probe | None = None
        if layer is not None:
            names = [inner.name for inner in backbone.layers]
            if layer not in names:
                msg = (
                    f"The backbone {backbone.name!r} has no layer named {layer!r}; pass one "
                    f"of the names in [l.name for l in clf.backbone.layers]. "
                    f"Received: layer={layer!r}"
                )
                raise UnknownLayerError(msg)
            self._probe = _Probe(backbone.get_layer(layer), at_input=False)
        elif isinstance(self._head[0], TokenPooling) and self._head[0].mode == "cls":
            last_block = classifier.spec.layout_of(backbone).blocks[-1][0]
            self._probe = _Probe(last_block, at_input=True)
        self._to_spatial = to_spatial or _default_to_spatial(classifier.spec, backbone, layer)

    def __call__(self, images: Any, classes: np.ndarray | None) -> np.ndarray:
        # Eager: tracing a graph of the backbone costs more than a few eager batches.
        pixels = self._preprocess(keras.ops.cast(np.asarray(images), "float32"))
        wanted = None if classes is None else keras.ops.convert_to_tensor(classes, "int32")
        raw_map, gradient = self._map_and_gradient(pixels, wanted)
        return np.asarray(keras.ops.convert_to_numpy(self._heatmaps(raw_map, gradient)))

    def _map_and_gradient(self, pixels: Any, classes: Any) -> tuple[Any, Any]:
        """The feature map, and the gradient of the classes' scores with respect to it."""
        if self._probe is None:
            raw_map = self._backbone(pixels, training=False)
            (gradient,), _ = _backend.gradients(
                lambda feature_map: (self._scores(feature_map, classes), None), [raw_map]
            )
            return raw_map, gradient
        # The map is inside the backbone: one pass reads it, and the gradient with respect
        # to an offset added to it (at zero) is the gradient with respect to the map.
        raw_map, _ = self._probe.run(self._backbone, pixels)
        probe = self._probe

        def scores(offset: Any) -> tuple[Any, Any]:
            _, output = probe.run(self._backbone, pixels, offset)
            return self._scores(output, classes), None

        (gradient,), _ = _backend.gradients(scores, [keras.ops.zeros_like(raw_map)])
        return raw_map, gradient

    def _heatmaps(self, raw_map: Any, gradient: Any) -> Any:
        # to_spatial only selects and rearranges, so it maps the gradient the same way.
        gradients = self._to_spatial(gradient, self._image_size)
        feature_map = self._to_spatial(raw_map, self._image_size)
        if len(feature_map.shape) != 4:
            msg = (
                "The feature map must be 4D (batch, rows, columns, channels); name a layer "
                "with a 4D output (layer=) or pass to_spatial=. "
                f"Received: a feature map of shape {tuple(feature_map.shape)}"
            )
            raise InvalidArgumentError(msg)
        ops = keras.ops
        feature_map = ops.cast(feature_map, "float32")
        weights = ops.mean(ops.cast(gradients, "float32"), axis=(1, 2), keepdims=True)
        cam = ops.relu(ops.sum(weights * feature_map, axis=-1, keepdims=True))
        cam = ops.image.resize(cam, self._image_size, interpolation="bilinear")[..., 0]
        peak = ops.max(cam, axis=(1, 2), keepdims=True)
        return ops.divide_no_nan(cam, peak)

    def _scores(self, features: Any, classes: Any) -> Any:
        """The summed scores of the wanted classes (each image's predicted one for None)."""
        ops = keras.ops
        logits = features
        for head_layer in self._head:
            logits = head_layer(logits, training=False)
        logits = ops.cast(logits, "float32")
        if self._binary:
            wanted = ops.cast(logits[:, 0] > 0, "int32") if classes is None else classes
            sign = ops.cast(2 * wanted - 1, "float32")
            return ops.sum(sign * logits[:, 0])
        wanted = ops.argmax(logits, axis=-1) if classes is None else classes
        wanted = ops.expand_dims(ops.cast(wanted, "int32"), -1)
        return ops.sum(ops.take_along_axis(logits, wanted, axis=1))


@dataclass(frozen=True)
class _Probe:
    """Reads (and offsets) a backbone layer's first input or its output during a call."""

    layer: keras.layers.Layer
    at_input: bool

    def run(self, backbone: keras.Model, pixels: Any, offset: Any = None) -> tuple[Any, Any]:
        """Runs the backbone in inference mode; returns ``(map, backbone output)``.

        The map is the layer's first input (``at_input``) or its output, plus ``offset``
        where one is given, as the rest of the backbone sees it.
        """
        seen: list[Any] = []
        call = self.layer.call

        def probed(first: Any, *args: Any, **kwargs: Any) -> Any:
            if self.at_input:
                first = first if offset is None else first + offset
                seen.append(first)
                return call(first, *args, **kwargs)
            result = call(first, *args, **kwargs)
            result = result if offset is None else result + offset
            seen.append(result)
            return result

        self.layer.call = probed  # Layer.__call__ looks `call` up on the instance first
        try:
            output = backbone(pixels, training=False)
        finally:
            del self.layer.call
        return seen[0], output


def _default_to_spatial(spec: Backbone, backbone: keras.Model, layer: str | None) -> SpatialFn:
    output = backbone.output if layer is None else backbone.get_layer(layer).output
    if len(output.shape) != 3:
        return lambda values, image_size: values
    grid = spec.patch_grid(backbone) if spec.layout_of(backbone).patch_size else None
    if layer is None and grid is not None:  # the backbone's own: its special tokens are known
        return lambda values, image_size: grid(values)
    return tokens_to_map


def _class_indices(
    class_index: int | Sequence[int] | None, num_classes: int
) -> int | np.ndarray | None:
    if class_index is None:
        return None
    single = _validation.as_int(class_index)
    if single is not None:
        values: list[int | None] = [single]
    elif isinstance(class_index, (Sequence, np.ndarray)) and not isinstance(class_index, str):
        values = [_validation.as_int(v) for v in class_index]
    else:
        values = [None]
    if any(v is None or not 0 <= v < num_classes for v in values):
        msg = (
            f"class_index must be None, a class index in [0, {num_classes - 1}] or one such "
            f"index per image. Received: class_index={class_index!r}"
        )
        raise InvalidArgumentError(msg)
    return single if single is not None else np.asarray(values, np.int64)


def _check_class_count(given: int, images: int, *, exact: bool) -> None:
    if given < images or (exact and given != images):
        msg = (
            f"class_index must give one class per image; there are "
            f"{'at least ' if not exact else ''}{images} images. "
            f"Received: class_index of length {given}"
        )
        raise InvalidArgumentError(msg)
