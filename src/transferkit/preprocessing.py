"""The preprocessing layer that maps raw pixels to what a backbone's weights expect.

The public face of ``transferkit.backbones.preprocessing``, where the code lives (the
contributing guide shows the package's layers).
"""

from transferkit.backbones.preprocessing import (
    PREPROCESSING_MODES,
    ImagePreprocessing,
    ImageRescaling,
    PreprocessingMode,
)

__all__ = [
    "PREPROCESSING_MODES",
    "ImagePreprocessing",
    "ImageRescaling",
    "PreprocessingMode",
]
