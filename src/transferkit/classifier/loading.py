"""Loading a classifier from the ``.keras`` archive that :meth:`~TransferClassifier.save` wrote."""

from __future__ import annotations

import os

import tensorflow as tf

from transferkit.classifier.transfer_classifier import TransferClassifier
from transferkit.serving import saving

__all__ = ["load_classifier"]


def load_classifier(
    path: str | os.PathLike[str], *, strategy: tf.distribute.Strategy | None = None
) -> TransferClassifier:
    """Loads a classifier written by :meth:`TransferClassifier.save`.

    The model loads with Keras' ``safe_mode=True``; class names, backbone, freezing state and
    history come back as they were saved. The backbone need not be registered in this
    process: its facts are read from the file.

    Args:
        path: a ``.keras`` file written by :meth:`TransferClassifier.save`.
        strategy: a ``tf.distribute.Strategy`` to load the model under, or None.

    Returns:
        The classifier.

    Raises:
        DataError: the file does not exist or was not written by transferkit.
    """
    saved = saving.read(path, strategy)
    classifier = TransferClassifier.__new__(TransferClassifier)
    classifier._attach(
        saved.config, saved.spec, saved.model, strategy, saved.history, saved.head_learning_rate
    )
    classifier._set_temperature(saved.temperature)
    if saved.thresholds is not None:
        classifier.thresholds = saved.thresholds
    if saved.unfrozen_from is None:
        classifier.freeze()
    else:
        classifier.unfreeze(saved.unfrozen_from)
    return classifier
