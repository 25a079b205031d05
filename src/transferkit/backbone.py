"""``Backbone``: what transferkit knows about one pretrained network, as data.

The public face of ``transferkit.backbones.spec``, where the code lives (the contributing
guide shows the package's layers).
"""

from transferkit.backbones.spec import (
    Backbone,
    BackboneLayout,
    ImageSize,
    Weights,
)

__all__ = [
    "Backbone",
    "BackboneLayout",
    "ImageSize",
    "Weights",
]
