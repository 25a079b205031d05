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

The maps are computed with ``tf.GradientTape`` on sub-models built from the classifier's
own layers (the backbone in inference mode, then its pooling, dropout and logits layers),
so they need no copy of the weights, and the classifier is left unchanged.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

import keras
import numpy as np
import tensorflow as tf

from transferkit import _validation
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
    """Preprocessing, the backbone up to the feature map and on, and the head, as callables."""

    def __init__(
        self, classifier: ClassifierLike, layer: str | None, to_spatial: SpatialFn | None
    ) -> None:
        backbone = classifier.backbone
        self._image_size = classifier.image_size
        self._binary = classifier.num_classes == 2
        self._preprocess = classifier.spec.preprocessing_layer()
        if layer is None:
            self._features: keras.Model = backbone
            self._split = False
        else:
            names = [inner.name for inner in backbone.layers]
            if layer not in names:
                msg = (
                    f"The backbone {backbone.name!r} has no layer named {layer!r}; pass one "
                    f"of the names in [l.name for l in clf.backbone.layers]. "
                    f"Received: layer={layer!r}"
                )
                raise UnknownLayerError(msg)
            # One sub-model with two outputs: the map, and the backbone's output computed
            # from it, so the gradient reaches the map through the rest of the backbone.
            self._features = keras.Model(
                backbone.inputs, [backbone.get_layer(layer).output, backbone.output]
            )
            self._split = True
        self._head = classifier.head_layers
        # A class-token head reads one token of the output, so the output's patch tokens get
        # no gradient; they reach the score through the last block's attention. Its input is
        # the map then (pytorch-grad-cam's choice for ViTs: the last block's first norm).
        self._last_block = None
        pooling = self._head[0]
        if layer is None and isinstance(pooling, TokenPooling) and pooling.mode == "cls":
            self._last_block = classifier.spec.layout_of(backbone).blocks[-1][0]
        self._to_spatial = to_spatial or _default_to_spatial(classifier.spec, backbone, layer)

    def __call__(self, images: Any, classes: np.ndarray | None) -> np.ndarray:
        # Eager: tracing a graph of the backbone costs more than a few eager batches.
        pixels = tf.cast(images, tf.float32)
        wanted = None if classes is None else tf.constant(classes, tf.int64)
        return np.asarray(self._heatmaps(pixels, wanted), dtype=np.float32)

    def _heatmaps(self, images: Any, classes: Any) -> Any:
        pixels = self._preprocess(images)
        with tf.GradientTape() as tape:
            # The backbone is frozen (nothing watched by default): record from the input on.
            tape.watch(pixels)
            with _recording_input(self._last_block, tape) as block_inputs:
                if self._split:
                    raw_map, output = self._features(pixels, training=False)
                else:
                    raw_map = output = self._features(pixels, training=False)
            if block_inputs:
                raw_map = block_inputs[0]
            logits = output
            for head_layer in self._head:
                logits = head_layer(logits, training=False)
            scores = self._scores(tf.cast(logits, tf.float32), classes)
        # to_spatial only selects and rearranges, so it maps the gradient the same way.
        gradients = self._to_spatial(tape.gradient(scores, raw_map), self._image_size)
        feature_map = self._to_spatial(raw_map, self._image_size)
        if len(feature_map.shape) != 4:
            msg = (
                "The feature map must be 4D (batch, rows, columns, channels); name a layer "
                "with a 4D output (layer=) or pass to_spatial=. "
                f"Received: a feature map of shape {tuple(feature_map.shape)}"
            )
            raise InvalidArgumentError(msg)
        feature_map = tf.cast(feature_map, tf.float32)
        weights = tf.reduce_mean(tf.cast(gradients, tf.float32), axis=(1, 2), keepdims=True)
        cam = tf.nn.relu(tf.reduce_sum(weights * feature_map, axis=-1, keepdims=True))
        cam = keras.ops.image.resize(cam, self._image_size, interpolation="bilinear")[..., 0]
        peak = tf.reduce_max(cam, axis=(1, 2), keepdims=True)
        return tf.math.divide_no_nan(cam, peak)

    def _scores(self, logits: Any, classes: Any) -> Any:
        if self._binary:
            wanted = tf.cast(logits[:, 0] > 0, tf.int64) if classes is None else classes
            sign = tf.cast(2 * wanted - 1, tf.float32)
            return tf.reduce_sum(sign * logits[:, 0])
        wanted = tf.argmax(logits, axis=-1) if classes is None else classes
        return tf.reduce_sum(tf.gather(logits, wanted, axis=1, batch_dims=1))


@contextlib.contextmanager
def _recording_input(
    layer: keras.layers.Layer | None, tape: tf.GradientTape
) -> Iterator[list[Any]]:
    """Watches and collects the first input of each (eager) call of ``layer``."""
    inputs: list[Any] = []
    if layer is None:
        yield inputs
        return
    call = layer.call

    def recording(first: Any, *args: Any, **kwargs: Any) -> Any:
        tape.watch(first)
        inputs.append(first)
        return call(first, *args, **kwargs)

    layer.call = recording  # Layer.__call__ looks `call` up on the instance first
    try:
        yield inputs
    finally:
        del layer.call


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
