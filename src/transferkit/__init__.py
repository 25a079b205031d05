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
from transferkit import data, discriminative, lr_finder, plot, schedules
from transferkit._registry import get_backbone, list_backbones, register_backbone
from transferkit.backbone import Backbone
from transferkit.classifier import TransferClassifier, load_classifier
from transferkit.history import TrainingHistory
from transferkit.lr_finder import LearningRateFinderResult

try:
    __version__ = version("transferkit")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0+unknown"

__all__ = [
    "Backbone",
    "LearningRateFinderResult",
    "TrainingHistory",
    "TransferClassifier",
    "__version__",
    "data",
    "discriminative",
    "get_backbone",
    "list_backbones",
    "load_classifier",
    "lr_finder",
    "plot",
    "register_backbone",
    "schedules",
]
