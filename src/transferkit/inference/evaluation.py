"""Evaluating a model on labeled batches: the training loss (never class-weighted) and metrics."""

from __future__ import annotations

from typing import Any

import keras
import tensorflow as tf

from transferkit import _backend
from transferkit.data.image_files import undecodable_files_named
from transferkit.model.compile import compile_model
from transferkit.model.config import ClassifierConfig
from transferkit.model.losses import ClassifierLoss

__all__ = ["evaluate"]


def evaluate(
    model: keras.Model,
    config: ClassifierConfig,
    dataset: tf.data.Dataset,
    *,
    strategy: Any,
    verbose: int | str,
) -> dict[str, float]:
    """Keras' ``evaluate`` with the classifier's unweighted loss and its metrics.

    A model compiled for training keeps its optimizer (and that optimizer's state) for the
    training that may follow; only a class-weighted or smoothed loss is swapped for the plain one.
    """
    _backend.check_strategy_can_train(strategy)
    if not model.compiled or (isinstance(model.loss, ClassifierLoss) and model.loss.for_training):
        optimizer = getattr(model, "optimizer", None)
        if optimizer is None:
            with _backend.scope(strategy):
                optimizer = keras.optimizers.Adam()
        compile_model(model, config, optimizer, strategy=strategy)
    with undecodable_files_named(dataset), _backend.local_batches():
        results = model.evaluate(dataset, verbose=verbose, return_dict=True)
    return {name: float(value) for name, value in results.items()}
