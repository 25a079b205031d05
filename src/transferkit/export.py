"""Exporting a classifier for serving: a TensorFlow SavedModel, a TFLite flatbuffer or ONNX.

The public face of ``transferkit.serving.export``, where the code lives (the contributing
guide shows the package's layers).
"""

from transferkit.serving.export import (
    CALIBRATION_IMAGES,
    INPUT_NAME,
    LABELS_NAME,
    OUTPUT_NAME,
    SIGNATURE_KEY,
    ExportFormat,
    Quantization,
    export_classifier,
)

__all__ = [
    "CALIBRATION_IMAGES",
    "INPUT_NAME",
    "LABELS_NAME",
    "OUTPUT_NAME",
    "SIGNATURE_KEY",
    "ExportFormat",
    "Quantization",
    "export_classifier",
]
