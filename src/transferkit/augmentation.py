"""Data augmentation: Keras preprocessing layers inside the model, active only in training.

The public face of ``transferkit.data.augmentation``, where the code lives (the contributing
guide shows the package's layers).
"""

from transferkit.data.augmentation import (
    Augmentation,
    build_augmentation,
    default_augmentation,
)

__all__ = [
    "Augmentation",
    "build_augmentation",
    "default_augmentation",
]
