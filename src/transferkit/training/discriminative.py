"""Discriminative learning rates: a learning rate per block of the backbone when fine-tuning.

Fine-tuning should move the lower, more general blocks of a pretrained backbone less than the
top ones, and those less than the new head. Scaling the *gradients* of a block does not do
that under Adam or RMSprop, which divide each gradient by its own running magnitude (a
gradient ten times smaller makes the same step), so the *learning rate* must differ: one
optimizer per group of layers, each with its own rate, behind one Keras
:class:`keras.optimizers.MultiOptimizer` (Keras' own, new in Keras 3.15: it is serializable,
``model.fit`` and ``tf.distribute`` work with it, ``save_weights`` keeps every group's state,
and ``ReduceLROnPlateau`` and ``LearningRateScheduler`` act on every group).

Three pieces, each replaceable:

* a grouping, ``(backbone layers, first unfrozen index) -> groups of layers``
  (:data:`LayerGrouping`); :func:`block_groups` is the default for ``keras.applications``
  backbones, :func:`chunk_groups` the fallback; backbones whose layout names their own
  blocks (keras-hub transformers and stage networks) get one group per block instead;
* :func:`group_learning_rates`, the rate of each group (lowest first, head last);
* :func:`discriminative_optimizer`, the Keras optimizer that applies them.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import keras

from transferkit import _validation
from transferkit.errors import InvalidArgumentError

if TYPE_CHECKING:
    from transferkit.backbones.spec import BackboneLayout

__all__ = [
    "LayerGrouping",
    "block_groups",
    "chunk_groups",
    "discriminative_optimizer",
    "group_learning_rates",
    "trainable_groups",
]

#: A function ``(backbone layers, index of the first unfrozen layer) -> groups of layers``,
#: lowest group first. Backbones whose blocks are not told by layer names (a transformer's
#: ``blocks.3``) can bring their own.
LayerGrouping = Callable[[Sequence[keras.layers.Layer], int], list[list[keras.layers.Layer]]]

# The block a keras.applications layer belongs to, from its name; the first match wins.
_BLOCK_PATTERNS = tuple(
    re.compile(pattern)
    for pattern in (
        r"^(conv\d+_block\d+)_",  # ResNet, ResNetV2, DenseNet: conv4_block2_1_conv
        r"^(block\d+_\d+)_",  # InceptionResNetV2: block17_10_conv
        r"^(.*_stage_\d+_block_\d+)_",  # ConvNeXt: convnext_tiny_stage_1_block_2_...
        r"^(block_?\d+[a-z]?)_",  # MobileNetV2 block_13_, EfficientNet block2b_, VGG block3_
        r"^(expanded_conv(?:_\d+)?)_",  # MobileNetV3: expanded_conv_3_expand
        r"^conv_(?:dw|pw|pad)_(\d+)",  # MobileNet: conv_dw_3, conv_pw_3
        r"^(mixed\d+)",  # InceptionV3: mixed5 closes a block
    )
)
#: At most this many groups when layer names give no blocks.
FALLBACK_CHUNKS = 4


def _block_of(name: str) -> str | None:
    for pattern in _BLOCK_PATTERNS:
        match = pattern.match(name)
        if match:
            return match.group(1)
    return None


def block_groups(
    layers: Sequence[keras.layers.Layer], first_unfrozen: int
) -> list[list[keras.layers.Layer]]:
    """Groups the unfrozen backbone layers by block, as told by ``keras.applications`` names.

    A layer's block is the prefix its name shares with the rest of its block:
    ``block_13_`` (MobileNetV2), ``conv4_block2_`` (ResNet, DenseNet), ``block2b_``
    (EfficientNet), ``block3_`` (VGG, Xception), ``block17_10_`` (InceptionResNetV2),
    ``..._stage_1_block_2_`` (ConvNeXt), ``expanded_conv_3_`` (MobileNetV3), ``conv_dw_3`` and
    ``conv_pw_3`` (MobileNet), ``mixed5`` (InceptionV3, whose other layers join the next
    ``mixed`` layer). Consecutive layers of one block form a group; layers of no block join
    the next block (a stem joins the first), and those after the last block (``Conv_1``,
    ``top_conv``) form a last group of their own. When names tell fewer than two blocks
    apart, :func:`chunk_groups` splits the layers instead.

    Args:
        layers: the backbone's layers, in order.
        first_unfrozen: the index of the first unfrozen layer; layers before it are left out.

    Returns:
        The groups, lowest first; empty if no layer is left.
    """
    groups: list[list[keras.layers.Layer]] = []
    keys: list[str] = []
    pending: list[keras.layers.Layer] = []
    for layer in layers[first_unfrozen:]:
        key = _block_of(layer.name)
        if key is None:
            pending.append(layer)
        elif keys and keys[-1] == key and not pending:
            groups[-1].append(layer)
        elif keys and keys[-1] == key:
            groups[-1].extend([*pending, layer])
            pending = []
        else:
            groups.append([*pending, layer])
            keys.append(key)
            pending = []
    if len(set(keys)) < 2:
        return chunk_groups(layers, first_unfrozen)
    if pending:
        groups.append(pending)
    return groups


def chunk_groups(
    layers: Sequence[keras.layers.Layer], first_unfrozen: int
) -> list[list[keras.layers.Layer]]:
    """Splits the unfrozen layers that have weights into up to 4 equal consecutive chunks.

    The fallback of :func:`block_groups` for backbones whose layer names tell no blocks.
    Chunk sizes differ by at most one layer, the lower chunks taking the extra ones.

    Args:
        layers: the backbone's layers, in order.
        first_unfrozen: the index of the first unfrozen layer; layers before it are left out.

    Returns:
        The chunks, lowest first; empty if no unfrozen layer has weights.
    """
    weighted = [layer for layer in layers[first_unfrozen:] if layer.weights]
    count = min(FALLBACK_CHUNKS, len(weighted))
    chunks: list[list[keras.layers.Layer]] = []
    start = 0
    for index in range(count):
        size = len(weighted) // count + (1 if index < len(weighted) % count else 0)
        chunks.append(weighted[start : start + size])
        start += size
    return chunks


def trainable_groups(
    backbone: keras.Model,
    first_unfrozen: int,
    grouping: LayerGrouping = block_groups,
    layout: BackboneLayout | None = None,
) -> list[list[keras.Variable]]:
    """The trainable variables of each group of unfrozen backbone blocks, lowest first.

    Where the blocks are the network's own (a transformer's blocks, a hierarchical
    network's stages: ``layout.per_layer`` is False), each unfrozen block is a group, and
    the other trainable variables (a final norm after the last block) form a last group.
    Where they are single layers, ``grouping`` groups them. Groups without trainable
    variables (pooling, activations, frozen BatchNormalization) are dropped.

    Args:
        backbone: the backbone model, unfrozen from ``first_unfrozen``.
        first_unfrozen: the index of its first unfrozen block.
        grouping: how to group single-layer blocks. Defaults to :func:`block_groups`.
        layout: the backbone's blocks (``clf.spec.layout_of(clf.backbone)``), or None
            for one block per layer of ``backbone.layers``. Defaults to None.

    Returns:
        The variables of each non-empty group.
    """
    groups: list[list[keras.Variable]]
    if layout is not None and not layout.per_layer:
        groups = [
            [v for layer in block for v in layer.trainable_weights]
            for block in layout.blocks[first_unfrozen:]
        ]
        grouped = {id(v) for group in groups for v in group}
        groups.append([v for v in backbone.trainable_weights if id(v) not in grouped])
    else:
        layers = backbone.layers if layout is None else [block[0] for block in layout.blocks]
        groups = [
            [v for layer in members for v in layer.trainable_weights]
            for members in grouping(layers, first_unfrozen)
        ]
    return [group for group in groups if group]


def group_learning_rates(
    count: int,
    learning_rate: float | tuple[float, float],
    *,
    layer_decay: float | None = None,
) -> list[float]:
    """The learning rate of each of ``count`` groups, lowest group first, head last.

    * ``learning_rate=(low, high)``: geometric steps from ``low`` (group 0) to ``high`` (the
      last group): ``low * (high / low) ** (i / (count - 1))``.
    * ``learning_rate=rate, layer_decay=d``: timm's layer-wise decay
      (``param_groups_layer_decay``), ``rate * d ** (count - 1 - i)``: the head trains at
      ``rate``, each group below at ``d`` times the rate of the one above.
    * ``learning_rate=rate`` alone: ``rate`` for every group.

    Args:
        count: int. The number of groups, the head's included.
        learning_rate: a float, or a ``(low, high)`` pair with ``low <= high``.
        layer_decay: float in (0, 1], or None. Not allowed with a ``(low, high)`` pair,
            which already sets every group's rate.

    Returns:
        ``count`` learning rates.

    Raises:
        InvalidArgumentError: an argument is invalid.

    Example:
        >>> from transferkit.training.discriminative import group_learning_rates
        >>> [round(r, 8) for r in group_learning_rates(3, (1e-5, 1e-3))]
        [1e-05, 0.0001, 0.001]
        >>> [round(r, 8) for r in group_learning_rates(3, 1e-3, layer_decay=0.5)]
        [0.00025, 0.0005, 0.001]
    """
    count = _validation.positive_int("count", count)
    if layer_decay is not None:
        layer_decay = _validation.fraction("layer_decay", layer_decay, high_inclusive=True)
    if isinstance(learning_rate, (tuple, list)):
        low, high = check_rate_pair(learning_rate)
        if layer_decay is not None:
            msg = (
                "Pass a (low, high) learning_rate or layer_decay, not both: the pair already "
                "sets every group's rate. "
                f"Received: learning_rate={learning_rate!r}, layer_decay={layer_decay!r}"
            )
            raise InvalidArgumentError(msg)
        if count == 1:
            return [high]
        return [low * (high / low) ** (i / (count - 1)) for i in range(count)]
    rate = _validation.positive_float("learning_rate", learning_rate)
    decay = 1.0 if layer_decay is None else layer_decay
    return [rate * decay ** (count - 1 - i) for i in range(count)]


def check_rate_pair(value: Sequence[object]) -> tuple[float, float]:
    """Returns a ``(low, high)`` learning-rate pair of positive floats with ``low <= high``.

    Raises:
        InvalidArgumentError: it is not one.
    """
    if len(value) != 2:
        msg = (
            "learning_rate must be a float or a (low, high) pair of floats. "
            f"Received: learning_rate={value!r}"
        )
        raise InvalidArgumentError(msg)
    low = _validation.positive_float("learning_rate[0]", value[0])
    high = _validation.positive_float("learning_rate[1]", value[1])
    if low > high:
        msg = (
            "learning_rate=(low, high) gives the lowest block `low` and the head `high`, so "
            f"low must not exceed high. Received: learning_rate={tuple(value)!r}"
        )
        raise InvalidArgumentError(msg)
    return low, high


def discriminative_optimizer(
    groups: Sequence[Sequence[keras.Variable]],
    rates: Sequence[float],
    make_optimizer: Callable[[float], keras.optimizers.Optimizer],
) -> keras.optimizers.MultiOptimizer:
    """One optimizer per group of variables, each at its own rate, as one Keras optimizer.

    Create it in the strategy's scope when training under ``tf.distribute``.

    Args:
        groups: the variables of each backbone group, lowest first (see
            :func:`trainable_groups`).
        rates: one rate per group and one more, last, for every other variable (the head).
        make_optimizer: makes a new optimizer from a rate (or from a schedule built on it),
            such as ``lambda rate: keras.optimizers.RMSprop(rate)``.

    Returns:
        A ``keras.optimizers.MultiOptimizer``; its ``optimizers`` are in group order, the
        head's last.

    Raises:
        InvalidArgumentError: there is not one rate per group plus one for the head.

    Example:
        >>> import keras
        >>> from transferkit.training.discriminative import discriminative_optimizer
        >>> inputs = keras.Input((4,))
        >>> body = keras.layers.Dense(4, name="body")
        >>> model = keras.Model(inputs, keras.layers.Dense(1, name="head")(body(inputs)))
        >>> optimizer = discriminative_optimizer(
        ...     [body.trainable_weights], [1e-3, 1e-2], keras.optimizers.SGD
        ... )
        >>> optimizer.build(model.trainable_variables)
        >>> [round(float(o.learning_rate), 6) for o in optimizer.optimizers]
        [0.001, 0.01]
    """
    if len(rates) != len(groups) + 1:
        msg = (
            "discriminative_optimizer needs one rate per group and one for the head. "
            f"Received: {len(groups)} groups and {len(rates)} rates"
        )
        raise InvalidArgumentError(msg)
    # Keys are regular expressions: one per group, so that each optimizer appears (and is
    # serialized) once; variables in no group go to the default, the head's optimizer.
    mapping = keras.optimizers.OptimizerMap(default_optimizer=make_optimizer(rates[-1]))
    for variables, rate in zip(groups, rates, strict=False):
        mapping["|".join(re.escape(v.path) for v in variables)] = make_optimizer(rate)
    return keras.optimizers.MultiOptimizer(mapping)
