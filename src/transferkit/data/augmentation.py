"""Data augmentation: Keras preprocessing layers inside the model, active only in training."""

from __future__ import annotations

from collections.abc import Sequence

import keras

from transferkit.errors import InvalidArgumentError

__all__ = ["Augmentation", "build_augmentation", "default_augmentation"]

#: ``"default"``, None (off), or a sequence of Keras layers.
Augmentation = str | Sequence[keras.layers.Layer] | None


def default_augmentation() -> list[keras.layers.Layer]:
    """The reference recipe's augmentation: horizontal flips and rotations up to 20% of a turn.

    Returns:
        New ``RandomFlip("horizontal")`` and ``RandomRotation(0.2)`` layers.
    """
    return [keras.layers.RandomFlip("horizontal"), keras.layers.RandomRotation(0.2)]


def build_augmentation(augmentation: Augmentation) -> keras.Sequential | None:
    """Validates an ``augmentation`` argument and returns it as one Sequential (or None).

    Raises:
        InvalidArgumentError: the argument is none of ``"default"``, None or a sequence of
            Keras layers.
    """
    if augmentation is None:
        return None
    if isinstance(augmentation, str):
        if augmentation != "default":
            msg = (
                "augmentation must be 'default', None or a list of Keras layers. "
                f"Received: augmentation={augmentation!r}"
            )
            raise InvalidArgumentError(msg)
        layers = default_augmentation()
    else:
        layers = list(augmentation)
        bad = [layer for layer in layers if not isinstance(layer, keras.layers.Layer)]
        if bad:
            msg = (
                "augmentation must be 'default', None or a list of Keras layers. "
                f"Received: non-layer items {bad!r}"
            )
            raise InvalidArgumentError(msg)
        if not layers:
            return None
    return keras.Sequential(layers, name="augmentation")
