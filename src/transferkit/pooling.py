"""Pooling a backbone's output into one feature vector, for feature maps and token sequences.

The public face of ``transferkit.backbones.pooling``, where the code lives (the contributing
guide shows the package's layers).
"""

from transferkit.backbones.pooling import (
    POOLINGS,
    AvgMaxPooling2D,
    PatchGrid,
    Pooling,
    TokenPooling,
)

__all__ = [
    "POOLINGS",
    "AvgMaxPooling2D",
    "PatchGrid",
    "Pooling",
    "TokenPooling",
]
