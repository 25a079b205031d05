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
from typing import TYPE_CHECKING, Any

from transferkit._version import __version__

if TYPE_CHECKING:  # what type checkers and IDEs see; at run time these load on first use
    from transferkit import (
        augmentation,
        backbone,
        classifier,
        data,
        discriminative,
        errors,
        export,
        history,
        interpret,
        lr_finder,
        plot,
        pooling,
        preprocessing,
        schedules,
    )
    from transferkit.backbone import Backbone
    from transferkit.backbones.registry import get_backbone, list_backbones, register_backbone
    from transferkit.classifier import TransferClassifier, load_classifier
    from transferkit.history import TrainingHistory
    from transferkit.inference.grad_cam import grad_cam, tokens_to_map
    from transferkit.interpret import Interpretation, MultiLabelInterpretation
    from transferkit.lr_finder import LearningRateFinderResult
    from transferkit.training.regularization import Regularization


#: The public modules: each is reachable as an attribute (``tk.pooling``) and importable
#: (``import transferkit.pooling``). The code lives in the subpackages below them.
_PUBLIC_MODULES = (
    "augmentation",
    "backbone",
    "classifier",
    "data",
    "discriminative",
    "errors",
    "export",
    "history",
    "interpret",
    "lr_finder",
    "plot",
    "pooling",
    "preprocessing",
    "schedules",
)

# Public name -> the module that defines it. A name that is its module's own name is the
# module itself.
_LAZY = {
    "Backbone": "transferkit.backbone",
    "Interpretation": "transferkit.interpret",
    "LearningRateFinderResult": "transferkit.lr_finder",
    "MultiLabelInterpretation": "transferkit.interpret",
    "Regularization": "transferkit.training.regularization",
    "TrainingHistory": "transferkit.history",
    "TransferClassifier": "transferkit.classifier",
    "get_backbone": "transferkit.backbones.registry",
    "grad_cam": "transferkit.inference.grad_cam",
    "list_backbones": "transferkit.backbones.registry",
    "load_classifier": "transferkit.classifier",
    "register_backbone": "transferkit.backbones.registry",
    "tokens_to_map": "transferkit.inference.grad_cam",
    **{name: f"transferkit.{name}" for name in _PUBLIC_MODULES},
}

__all__ = [
    "Backbone",
    "Interpretation",
    "LearningRateFinderResult",
    "MultiLabelInterpretation",
    "Regularization",
    "TrainingHistory",
    "TransferClassifier",
    "__version__",
    "augmentation",
    "backbone",
    "classifier",
    "data",
    "discriminative",
    "errors",
    "export",
    "get_backbone",
    "grad_cam",
    "history",
    "interpret",
    "list_backbones",
    "load_classifier",
    "lr_finder",
    "plot",
    "pooling",
    "preprocessing",
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
    value = module if name in _PUBLIC_MODULES else getattr(module, name)
    globals()[name] = value  # later lookups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
