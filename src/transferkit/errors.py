"""The exceptions and warnings transferkit raises.

Every error subclasses :class:`TransferkitError` and the built-in exception a caller would
catch without knowing transferkit (``ValueError``, ``KeyError``, ...), so both
``except transferkit.errors.InvalidImageSizeError`` and ``except ValueError`` work.
"""

from __future__ import annotations

__all__ = [
    "BackboneExistsError",
    "ClassNamesMismatchError",
    "DataError",
    "ImageShapeError",
    "InvalidArgumentError",
    "InvalidImageSizeError",
    "MissingDependencyError",
    "NotUnfrozenError",
    "PluginLoadError",
    "TrainingDivergedError",
    "TransferkitError",
    "TransferkitWarning",
    "UnknownBackboneError",
    "UnknownLayerError",
    "UnsupportedBackendError",
    "UnsupportedStrategyError",
    "WeightsUnavailableError",
]


class TransferkitError(Exception):
    """Base class of every error raised by transferkit."""


class TransferkitWarning(UserWarning):
    """Base class of the warnings transferkit emits (filter them with this class)."""


class InvalidArgumentError(TransferkitError, ValueError):
    """An argument has a value transferkit cannot use."""


class UnknownBackboneError(TransferkitError, KeyError):
    """No backbone is registered under the requested name."""

    def __str__(self) -> str:
        # KeyError's str() wraps the message in quotes; show it as written.
        return str(self.args[0]) if self.args else ""


class BackboneExistsError(TransferkitError, ValueError):
    """A backbone is already registered under that name."""


class InvalidImageSizeError(TransferkitError, ValueError):
    """An image size is not allowed for a backbone (too small, non-positive, no weights)."""


class ImageShapeError(TransferkitError, ValueError):
    """Images given to a classifier do not have the shape it was built for."""


class UnknownLayerError(TransferkitError, ValueError):
    """``unfreeze`` was given a layer index or name the backbone does not have."""


class NotUnfrozenError(TransferkitError, RuntimeError):
    """``fine_tune`` was called while the whole backbone is still frozen."""


class DataError(TransferkitError, ValueError):
    """Training or prediction data is missing, empty, unreadable or malformed."""


class ClassNamesMismatchError(DataError):
    """Data carries class names that differ from the ones the classifier was trained on."""


class WeightsUnavailableError(TransferkitError, OSError):
    """Pretrained weights could not be downloaded or read."""


class MissingDependencyError(TransferkitError, ImportError):
    """An optional dependency is not installed; the message names the extra to install."""


class PluginLoadError(TransferkitError, ImportError):
    """A backbone plugin (entry point in ``transferkit.backbones``) failed to load."""


class TrainingDivergedError(TransferkitError, RuntimeError):
    """The loss became NaN or infinite; the last good weights were restored."""


class UnsupportedBackendError(TransferkitError, NotImplementedError):
    """The Keras backend in use cannot do what was asked (see the message for which can)."""


class UnsupportedStrategyError(TransferkitError, NotImplementedError):
    """The ``tf.distribute`` strategy cannot run the requested work (see the message)."""
