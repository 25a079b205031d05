"""transferkit: transfer learning of image classifiers on Keras 3, short, correct and fast.

Pick a pretrained backbone by name, train a new head, unfreeze the top of the backbone,
fine-tune, predict, save and ship::

    import transferkit as tk

    clf = tk.TransferClassifier("mobilenet_v2", class_names=["cat", "dog"], image_size=160)
    clf.fit_head(train, validation_data=val, epochs=10)
    clf.unfreeze(from_layer=100)
    clf.fine_tune(train, validation_data=val, epochs=10)
    clf.save("cats_dogs.keras")
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

# Submodules with public functions, reachable as tk.data.from_directory and tk.plot.history.
from transferkit import data, interpret, plot
from transferkit._grad_cam import grad_cam, tokens_to_map
from transferkit._registry import get_backbone, list_backbones, register_backbone
from transferkit.backbone import Backbone
from transferkit.classifier import TransferClassifier, load_classifier
from transferkit.history import TrainingHistory
from transferkit.interpret import Interpretation

try:
    __version__ = version("transferkit")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0+unknown"

__all__ = [
    "Backbone",
    "Interpretation",
    "TrainingHistory",
    "TransferClassifier",
    "__version__",
    "data",
    "get_backbone",
    "grad_cam",
    "interpret",
    "list_backbones",
    "load_classifier",
    "plot",
    "register_backbone",
    "tokens_to_map",
]
