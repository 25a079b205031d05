"""Exporting a classifier for serving: a TensorFlow SavedModel or a TFLite flatbuffer.

The public face of :mod:`transferkit.serving.export`, where the code lives (the contributing
guide shows the package's layers).
"""

from transferkit.serving.export import (
    INPUT_NAME,
    LABELS_NAME,
    OUTPUT_NAME,
    SIGNATURE_KEY,
    ExportFormat,
    Quantization,
    export_classifier,
)

__all__ = [
    "INPUT_NAME",
    "LABELS_NAME",
    "OUTPUT_NAME",
    "SIGNATURE_KEY",
    "ExportFormat",
    "Quantization",
    "export_classifier",
]
