"""Figures of a classifier: the training curves of both stages, and a grid of predictions.

matplotlib is an optional extra (``pip install "transferkit[plot]"``), imported on first
use. Figures are drawn on matplotlib's Agg canvas straight into image files: no window, no
pyplot state, nothing that needs a display.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from transferkit.classifier import TransferClassifier
from transferkit.data import list_images, load_images
from transferkit.errors import DataError, InvalidArgumentError, MissingDependencyError
from transferkit.history import TrainingHistory
from transferkit.lr_finder import LearningRateFinderResult

__all__ = ["history", "learning_rates", "predictions"]

_RIGHT = "tab:green"
_WRONG = "tab:red"


def history(source: TransferClassifier | TrainingHistory, path: str | os.PathLike[str]) -> Path:
    """Plots accuracy and loss of both training stages, as the reference recipe does.

    One figure, accuracy above loss, training and validation curves over the epochs of
    :meth:`~transferkit.TransferClassifier.fit_head` and
    :meth:`~transferkit.TransferClassifier.fine_tune`, with a vertical line where
    fine-tuning started.

    Args:
        source: a trained :class:`~transferkit.TransferClassifier`, or its
            :class:`~transferkit.TrainingHistory`.
        path: the image file to write; the suffix picks the format (``.png``, ``.svg``,
            ``.pdf``).

    Returns:
        The path written.

    Raises:
        MissingDependencyError: matplotlib is not installed.
        InvalidArgumentError: nothing was trained yet, or the folder of ``path`` does
            not exist.
    """
    new_figure = _figure_maker()
    record = source.history if isinstance(source, TransferClassifier) else source
    if not isinstance(record, TrainingHistory):
        msg = (
            "history() takes a TransferClassifier or a TrainingHistory. "
            f"Received: {type(source).__name__}"
        )
        raise InvalidArgumentError(msg)
    if not record.epochs:
        msg = "There is no training history to plot yet: call fit_head() first. Received: 0 epochs"
        raise InvalidArgumentError(msg)
    target = _target(path)

    epochs = [epoch + 1 for epoch in record.epochs]  # numbered from 1, as Keras prints them
    figure = new_figure(figsize=(8, 8))
    accuracy_axes, loss_axes = figure.subplots(2, 1, sharex=True)
    for axes, metric, title in (
        (accuracy_axes, "accuracy", "Accuracy"),
        (loss_axes, "loss", "Loss"),
    ):
        for key, label in ((metric, "Training"), (f"val_{metric}", "Validation")):
            values = record.metrics.get(key)
            if values is not None and not all(math.isnan(v) for v in values):
                axes.plot(epochs, values, marker="o", markersize=3, label=f"{label} {metric}")
        start = record.fine_tune_start
        if start is not None:
            # Between the last head epoch and the first fine-tuning epoch.
            axes.axvline(start + 0.5, color="gray", linestyle="--", label="Start fine-tuning")
        axes.set_title(f"{title} (training and validation)")
        axes.set_ylabel(title)
        axes.legend(loc="best")
        axes.grid(alpha=0.3)
    loss_axes.set_xlabel("Epoch")
    loss_axes.xaxis.get_major_locator().set_params(integer=True)
    figure.savefig(target, dpi=100)
    return target


def predictions(
    clf: TransferClassifier,
    images: Any,
    path: str | os.PathLike[str],
    labels: Sequence[int] | Sequence[str] | np.ndarray | None = None,
) -> Path:
    """Draws a grid of images, each titled with its predicted class and probability.

    With ``labels``, each title also gives the true class, in green when the prediction
    is right and in red when it is wrong. Every image given is drawn; pass a handful
    (nine make the recipe's 3x3 grid).

    Args:
        clf: the classifier that predicts.
        images: raw pixels (0-255) of shape ``(n, height, width, 3)`` at the classifier's
            size, or the path of an image file or a folder of them.
        path: the image file to write; the suffix picks the format.
        labels: the true classes, as class indices or class names, one per image.

    Returns:
        The path written.

    Raises:
        MissingDependencyError: matplotlib is not installed.
        InvalidArgumentError: ``labels`` do not match the images or the classes, or the
            folder of ``path`` does not exist.
        DataError: there are no images.
    """
    new_figure = _figure_maker()
    if isinstance(images, (str, os.PathLike)):
        pixels = load_images(list_images(images), clf.image_size)
    else:
        pixels = np.asarray(images)
        if pixels.ndim == 3:
            pixels = pixels[np.newaxis]
    if len(pixels) == 0:
        msg = "There are no images to plot. Received: 0 images"
        raise DataError(msg)
    names = clf.class_names or [str(i) for i in range(clf.num_classes)]
    truth = None if labels is None else _label_indices(labels, names, len(pixels))
    target = _target(path)
    probabilities = clf.predict(pixels)

    columns = math.ceil(math.sqrt(len(pixels)))
    rows = math.ceil(len(pixels) / columns)
    figure = new_figure(figsize=(2.6 * columns, 2.9 * rows))
    grid = figure.subplots(rows, columns, squeeze=False).ravel()
    for index, axes in enumerate(grid):
        axes.axis("off")
        if index >= len(pixels):
            continue
        axes.imshow(np.clip(pixels[index], 0, 255).astype(np.uint8))
        predicted = int(np.argmax(probabilities[index]))
        title = f"{names[predicted]} ({probabilities[index, predicted]:.0%})"
        color = "black"
        if truth is not None:
            title += f"\ntrue: {names[truth[index]]}"
            color = _RIGHT if truth[index] == predicted else _WRONG
        axes.set_title(title, color=color, fontsize=10)
    figure.savefig(target, dpi=100)
    return target


def learning_rates(result: LearningRateFinderResult, path: str | os.PathLike[str]) -> Path:
    """Plots a learning-rate sweep: smoothed loss against learning rate, with the suggestion.

    Args:
        result: what :meth:`~transferkit.TransferClassifier.find_learning_rate` returned.
        path: the image file to write; the suffix picks the format.

    Returns:
        The path written.

    Raises:
        MissingDependencyError: matplotlib is not installed.
        InvalidArgumentError: the folder of ``path`` does not exist.
    """
    new_figure = _figure_maker()
    target = _target(path)
    figure = new_figure(figsize=(7, 4.5))
    axes = figure.subplots()
    axes.plot(result.learning_rates, result.losses, label="Smoothed training loss")
    axes.axvline(
        result.suggestion, color="tab:red", linestyle="--",
        label=f"Suggestion: {result.suggestion:.2g}",
    )  # fmt: skip
    axes.set_xscale("log")
    axes.set_xlabel("Learning rate")
    axes.set_ylabel("Loss")
    title = "Learning-rate sweep" + (
        " (stopped: the loss diverged)" if result.stopped_early else ""
    )
    axes.set_title(title)
    axes.legend(loc="best")
    axes.grid(alpha=0.3, which="both")
    figure.savefig(target, dpi=100)
    return target


def _figure_maker() -> Callable[..., Any]:
    """A function making Agg-backed figures; raises first if matplotlib is missing."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as exc:
        msg = (
            'Plotting needs matplotlib, which is an optional extra: pip install "transferkit[plot]"'
        )
        raise MissingDependencyError(msg) from exc

    def new_figure(**kwargs: Any) -> Any:
        figure = Figure(layout="constrained", **kwargs)
        FigureCanvasAgg(figure)  # draw with Agg, without pyplot's global state
        return figure

    return new_figure


def _target(path: str | os.PathLike[str]) -> Path:
    target = Path(path)
    if not target.parent.is_dir():
        msg = f"The folder to save into does not exist. Received: path={os.fspath(path)!r}"
        raise InvalidArgumentError(msg)
    return target


def _label_indices(labels: Any, names: Sequence[str], count: int) -> list[int]:
    values = list(np.asarray(labels).reshape(-1).tolist())
    if len(values) != count:
        msg = (
            f"labels must give one class per image ({count} images). Received: {len(values)} labels"
        )
        raise InvalidArgumentError(msg)
    indices = []
    for value in values:
        if isinstance(value, str):
            if value not in names:
                msg = (
                    f"Unknown class name in labels; the classes are {list(names)}. "
                    f"Received: {value!r}"
                )
                raise InvalidArgumentError(msg)
            indices.append(names.index(value))
        elif isinstance(value, int) and 0 <= value < len(names):
            indices.append(value)
        else:
            msg = (
                f"labels must be class indices in [0, {len(names) - 1}] or class names. "
                f"Received: {value!r}"
            )
            raise InvalidArgumentError(msg)
    return indices
