"""Freezing and unfreezing a backbone, with BatchNormalization always in inference mode.

Keras 3 passes the outer ``training=True`` of ``fit`` into a nested backbone even when the
backbone was called with ``training=False`` (keras-team/keras#20285), so a trainable BN layer
would normalize with batch statistics and drift its moving mean and variance. A BN layer whose
``trainable`` is False runs in inference mode whatever ``training`` says, so that flag, set here
on every BN layer at every stage, is what keeps the statistics fixed.

Unfreezing works on *blocks*, the backbone's :class:`~transferkit.backbone.BackboneLayout`:
for ``keras.applications`` networks every top-level layer is a block (so ``from_layer`` is a
layer index), for a keras-hub ViT the patch embedding and then each transformer block.
LayerNormalization has no moving statistics and is not special-cased: its scale and offset
train exactly when the block holding it is unfrozen, and a norm after the last block (ViT's
final norm) trains whenever any block does.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterator, Sequence

import keras

from transferkit._validation import as_int
from transferkit.errors import UnknownLayerError

__all__ = ["batch_norm_layers", "freeze", "resolve_layer_index", "unfreeze_from"]

#: A freezable block: layers frozen and unfrozen together.
Block = Sequence[keras.layers.Layer]


def _sublayers(layer: keras.layers.Layer) -> Iterator[keras.layers.Layer]:
    # Keras has no public recursive walk; _flatten_layers is what Layer.trainable itself uses.
    yield from layer._flatten_layers(include_self=True, recursive=True)


def batch_norm_layers(model: keras.layers.Layer) -> list[keras.layers.BatchNormalization]:
    """Every BatchNormalization layer in ``model``, nested ones included."""
    return [
        layer for layer in _sublayers(model) if isinstance(layer, keras.layers.BatchNormalization)
    ]


def freeze(backbone: keras.Model) -> None:
    """Makes every layer of the backbone non-trainable."""
    backbone.trainable = False
    # A deserialized functional model does not cascade the flag to its input layer; set
    # every listed layer so a loaded classifier reports exactly what a fresh one does.
    for layer in backbone.layers:
        layer.trainable = False


def _blocks(backbone: keras.Model, blocks: Sequence[Block] | None) -> Sequence[Block]:
    return [(layer,) for layer in backbone.layers] if blocks is None else blocks


def unfreeze_from(backbone: keras.Model, index: int, blocks: Sequence[Block] | None = None) -> None:
    """Makes ``blocks[index:]`` trainable except BatchNormalization layers.

    Args:
        backbone: the backbone model.
        index: a non-negative index into ``blocks``.
        blocks: the freezable blocks; None for one block per layer of ``backbone.layers``.
    """
    backbone.trainable = True  # the flag cascades to every sublayer; narrow it down below
    for position, block in enumerate(_blocks(backbone, blocks)):
        for layer in block:
            layer.trainable = position >= index
    for layer in batch_norm_layers(backbone):
        layer.trainable = False


def resolve_layer_index(
    backbone: keras.Model, from_layer: int | str | None, blocks: Sequence[Block] | None = None
) -> int:
    """Turns ``unfreeze``'s argument into a non-negative index into the blocks.

    Args:
        backbone: the backbone model.
        from_layer: an index of any integer type (negative counts from the top), the name
            of a block's first layer, or None for the whole backbone.
        blocks: the freezable blocks; None for one block per layer of ``backbone.layers``.

    Raises:
        UnknownLayerError: the index is out of range or the name is not a block's.
    """
    kind = "layers" if blocks is None else "blocks"
    blocks = _blocks(backbone, blocks)
    count = len(blocks)
    if from_layer is None:
        return 0
    index = as_int(from_layer)
    if index is None and not isinstance(from_layer, str):
        msg = (
            "from_layer must be a layer index, a layer name or None. "
            f"Received: from_layer={from_layer!r}"
        )
        raise UnknownLayerError(msg)
    if index is not None:
        if not -count <= index < count:
            msg = (
                f"from_layer is out of range: the backbone {backbone.name!r} has {count} "
                f"{kind}, so valid indices are {-count} to {count - 1}. "
                f"Received: from_layer={from_layer}"
            )
            raise UnknownLayerError(msg)
        return index % count
    names = [block[0].name for block in blocks]
    if from_layer in names:
        return names.index(from_layer)
    listing = (
        "List them with [layer.name for layer in clf.backbone.layers]. "
        if kind == "layers"
        else f"Its blocks start with the layers {names}. "
    )
    near = difflib.get_close_matches(from_layer, names, n=3)
    hint = f"Did you mean {', '.join(map(repr, near))}? " if near else ""
    msg = (
        f"The backbone {backbone.name!r} has no layer named {from_layer!r}. {hint}"
        f"{listing}Received: from_layer={from_layer!r}"
    )
    raise UnknownLayerError(msg)
