"""transferkit: transfer learning of image classifiers on Keras 3, short, correct and fast.

Pick a pretrained backbone by name, train a new head, unfreeze the top of the backbone,
fine-tune, predict, save and ship::

    import transferkit as tk

    clf = tk.TransferClassifier("mobilenet_v2", class_names=["cat", "dog"], image_size=160)
    clf.fit_head(train, validation_data=val, epochs=10)
    clf.unfreeze(from_layer=100)
    clf.fine_tune(train, validation_data=val, epochs=10)
    clf.save("cats_dogs.keras")

``import transferkit`` itself is cheap: the public names below are imported on first use
(PEP 562), so the ``transferkit`` command answers ``--help`` without loading TensorFlow.
Using any of them (``tk.TransferClassifier``, ``from transferkit import load_classifier``)
imports Keras and registers transferkit's Keras layers.
"""

from __future__ import annotations

import importlib
from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # what type checkers and IDEs see; at run time these load on first use
    from transferkit import data, discriminative, interpret, lr_finder, plot, schedules
    from transferkit._grad_cam import grad_cam, tokens_to_map
    from transferkit._registry import get_backbone, list_backbones, register_backbone
    from transferkit.backbone import Backbone
    from transferkit.classifier import TransferClassifier, load_classifier
    from transferkit.history import TrainingHistory
    from transferkit.interpret import Interpretation, MultiLabelInterpretation
    from transferkit.lr_finder import LearningRateFinderResult

try:
    __version__ = version("transferkit")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0+unknown"

# Public name -> the module that defines it. A name that is its module's own name is the
# submodule itself: every public submodule is reachable as an attribute (tk.errors, ...),
# as it was when this file imported them all.
_LAZY = {
    "Backbone": "transferkit.backbone",
    "Interpretation": "transferkit.interpret",
    "LearningRateFinderResult": "transferkit.lr_finder",
    "MultiLabelInterpretation": "transferkit.interpret",
    "TrainingHistory": "transferkit.history",
    "TransferClassifier": "transferkit.classifier",
    "get_backbone": "transferkit._registry",
    "grad_cam": "transferkit._grad_cam",
    "interpret": "transferkit.interpret",
    "list_backbones": "transferkit._registry",
    "load_classifier": "transferkit.classifier",
    "register_backbone": "transferkit._registry",
    "tokens_to_map": "transferkit._grad_cam",
    **{
        name: f"transferkit.{name}"
        for name in (
            "augmentation",
            "backbone",
            "classifier",
            "data",
            "discriminative",
            "errors",
            "export",
            "history",
            "lr_finder",
            "plot",
            "preprocessing",
            "schedules",
        )
    },
}

__all__ = [
    "Backbone",
    "Interpretation",
    "LearningRateFinderResult",
    "MultiLabelInterpretation",
    "TrainingHistory",
    "TransferClassifier",
    "__version__",
    "data",
    "discriminative",
    "get_backbone",
    "grad_cam",
    "interpret",
    "list_backbones",
    "load_classifier",
    "lr_finder",
    "plot",
    "register_backbone",
    "schedules",
    "tokens_to_map",
]


def __getattr__(name: str) -> Any:
    module_name = _LAZY.get(name)
    if module_name is None:
        msg = f"module {__name__!r} has no attribute {name!r}"
        raise AttributeError(msg)
    module = importlib.import_module(module_name)
    value = module if module_name.rpartition(".")[2] == name else getattr(module, name)
    globals()[name] = value  # later lookups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
