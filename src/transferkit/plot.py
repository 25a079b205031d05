"""Figures of a classifier: training curves, predictions, confusion matrix, top losses, Grad-CAM.

matplotlib is an optional extra (``pip install "transferkit[plot]"``), imported on first
use. Figures are drawn on matplotlib's Agg canvas straight into image files (no window, no
pyplot state, no display), by process 0 alone in a multi-process run.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from transferkit import _backend, _validation
from transferkit.classifier import TransferClassifier
from transferkit.data import list_images, load_images
from transferkit.errors import DataError, InvalidArgumentError, MissingDependencyError
from transferkit.history import TrainingHistory
from transferkit.inference import grad_cam as _grad_cam
from transferkit.inference.interpret import Interpretation, MultiLabelInterpretation
from transferkit.training.lr_finder import LearningRateFinderResult

__all__ = [
    "confusion_matrices",
    "confusion_matrix",
    "grad_cam",
    "history",
    "learning_rates",
    "predictions",
    "reliability",
    "top_losses",
]

_RIGHT, _WRONG = "tab:green", "tab:red"


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
    # A multi-label classifier's history has macro F1 where a single-label one has accuracy.
    multi_label = "accuracy" not in record.metrics and "macro_f1" in record.metrics
    score = ("macro_f1", "Macro F1") if multi_label else ("accuracy", "Accuracy")
    for axes, metric, title in ((accuracy_axes, *score), (loss_axes, "loss", "Loss")):
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
    return _save(figure, target)


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

    titles, colors = [], []
    for index in range(len(pixels)):
        predicted = int(np.argmax(probabilities[index]))
        title = f"{names[predicted]} ({probabilities[index, predicted]:.0%})"
        color = "black"
        if truth is not None:
            title += f"\ntrue: {names[truth[index]]}"
            color = _RIGHT if truth[index] == predicted else _WRONG
        titles.append(title)
        colors.append(color)
    figure = _image_grid(new_figure, pixels, titles, colors)
    return _save(figure, target)


def confusion_matrix(
    interpretation: Interpretation, path: str | os.PathLike[str], *, normalize: bool = False
) -> Path:
    """Draws a confusion matrix: rows are true classes, columns predicted ones.

    Args:
        interpretation: an :class:`~transferkit.interpret.Interpretation`.
        path: the image file to write; the suffix picks the format.
        normalize: bool. Show each row as fractions of its true class (so the diagonal is
            each class's recall) instead of counts. Defaults to False.

    Returns:
        The path written.

    Raises:
        MissingDependencyError: matplotlib is not installed.
        InvalidArgumentError: the folder of ``path`` does not exist.
    """
    new_figure = _figure_maker()
    target = _target(path)
    counts = interpretation.confusion_matrix
    values = counts.astype(np.float64)
    if normalize:
        totals = values.sum(axis=1, keepdims=True)
        values = np.divide(values, totals, out=np.zeros_like(values), where=totals > 0)
    names = interpretation.class_names
    side = max(4.0, 0.6 * len(names) + 2.5)
    figure = new_figure(figsize=(side + 1.0, side))
    axes = figure.subplots()
    image = axes.imshow(values, cmap="Blues", vmin=0)
    figure.colorbar(image, ax=axes, fraction=0.046)
    ticks = np.arange(len(names))
    axes.set_xticks(ticks, labels=names, rotation=45, ha="right")
    axes.set_yticks(ticks, labels=names)
    axes.set_xlabel("Predicted")
    axes.set_ylabel("True")
    axes.set_title("Confusion matrix" + (" (fraction of each true class)" if normalize else ""))
    if len(names) <= 30:  # numbers in the cells while they still fit
        threshold = values.max() / 2 if values.size else 0
        for (row, column), value in np.ndenumerate(values):
            text = f"{value:.2f}" if normalize else str(counts[row, column])
            color = "white" if value > threshold else "black"
            axes.text(column, row, text, ha="center", va="center", color=color, fontsize=9)
    return _save(figure, target)


def confusion_matrices(
    interpretation: MultiLabelInterpretation, path: str | os.PathLike[str]
) -> Path:
    """Draws a multi-label classifier's 2x2 counts, one small matrix per class.

    Each class's matrix has the true answer in rows (no, yes) and the predicted one in
    columns, at the class's threshold, titled with its F1 score; colors are fractions of
    the images, so classes compare at a glance.

    Args:
        interpretation: a :class:`~transferkit.interpret.MultiLabelInterpretation`.
        path: the image file to write; the suffix picks the format.

    Returns:
        The path written.

    Raises:
        MissingDependencyError: matplotlib is not installed.
        InvalidArgumentError: the folder of ``path`` does not exist.
    """
    new_figure = _figure_maker()
    target = _target(path)
    counts = interpretation.confusion_matrices
    report = interpretation.report()
    names = interpretation.class_names
    columns = min(len(names), 4)
    rows = math.ceil(len(names) / columns)
    figure = new_figure(figsize=(2.6 * columns, 2.6 * rows))
    total = max(len(interpretation), 1)
    for index, axes in enumerate(figure.subplots(rows, columns, squeeze=False).ravel()):
        if index >= len(names):
            axes.axis("off")
            continue
        axes.imshow(counts[index] / total, cmap="Blues", vmin=0, vmax=1)
        for (row, column), value in np.ndenumerate(counts[index]):
            color = "white" if value / total > 0.5 else "black"
            axes.text(column, row, str(value), ha="center", va="center", color=color)
        axes.set_xticks([0, 1], labels=["no", "yes"])
        axes.set_yticks([0, 1], labels=["no", "yes"])
        axes.set_title(f"{names[index]} (F1 {report[names[index]]['f1-score']:.2f})", fontsize=10)
    figure.supxlabel("Predicted")
    figure.supylabel("True")
    return _save(figure, target)


def top_losses(
    interpretation: Interpretation | MultiLabelInterpretation,
    k: int,
    path: str | os.PathLike[str],
) -> Path:
    """Draws the ``k`` highest-loss images, titled predicted/true/loss/probability.

    Titles are red for a wrong prediction and green for a right one (still among the
    highest losses, with a low probability). A multi-label interpretation's titles give
    the predicted classes, then the true ones and the loss; red unless the two sets are
    equal.

    Args:
        interpretation: an :class:`~transferkit.interpret.Interpretation` or a
            :class:`~transferkit.interpret.MultiLabelInterpretation`.
        k: int. How many images, at most :data:`~transferkit.interpret.MAX_PLOTTED`.
        path: the image file to write; the suffix picks the format.

    Returns:
        The path written.

    Raises:
        MissingDependencyError: matplotlib is not installed.
        InvalidArgumentError: ``k`` is not a positive int or exceeds the images kept, or
            the folder of ``path`` does not exist.
    """
    new_figure = _figure_maker()
    target = _target(path)
    pixels = interpretation.top_loss_images(k)
    if isinstance(interpretation, MultiLabelInterpretation):
        found = interpretation.top_losses(k)
        titles = [
            f"{', '.join(row.predicted) or '(none)'}\ntrue: {', '.join(row.labels) or '(none)'}"
            f", loss {row.loss:.2f}"
            for row in found
        ]
        colors = [_RIGHT if row.labels == row.predicted else _WRONG for row in found]
        heading = "Predicted classes; true classes, loss"
    else:
        rows = interpretation.top_losses(k)
        titles = [
            f"{row.predicted}/{row.label}\nloss {row.loss:.2f}, p {row.probability:.2f}"
            for row in rows
        ]
        colors = [_RIGHT if row.label == row.predicted else _WRONG for row in rows]
        heading = "Prediction/true class, loss, probability of the prediction"
    figure = _image_grid(new_figure, pixels, titles, colors)
    figure.suptitle(heading)
    return _save(figure, target)


def grad_cam(
    clf: TransferClassifier,
    images: Any,
    path: str | os.PathLike[str],
    class_index: int | Sequence[int] | None = None,
    *,
    alpha: float = 0.5,
) -> Path:
    """Overlays Grad-CAM heatmaps on the images, titled with the class they explain.

    Args:
        clf: the classifier.
        images: as for :func:`transferkit.grad_cam`; every image given is drawn.
        path: the image file to write; the suffix picks the format.
        class_index: as for :func:`transferkit.grad_cam` (None: each predicted class).
        alpha: float. Opacity of the heatmap, in (0, 1]. Defaults to 0.5.

    Returns:
        The path written.

    Raises:
        MissingDependencyError: matplotlib is not installed.
        InvalidArgumentError: an argument is invalid, or the folder of ``path`` does not
            exist.
        DataError: there are no images.
    """
    new_figure = _figure_maker()
    alpha = _validation.fraction("alpha", alpha, high_inclusive=True)
    target = _target(path)
    if isinstance(images, (str, os.PathLike)):
        images = load_images(list_images(images), clf.image_size)
    pixels = np.asarray(images)
    if pixels.ndim == 3:
        pixels = pixels[np.newaxis]
    if len(pixels) == 0:
        msg = "There are no images to plot. Received: 0 images"
        raise DataError(msg)
    heatmaps = _grad_cam.grad_cam(clf, pixels, class_index)
    probabilities = clf.predict(pixels)
    shown = np.argmax(probabilities, axis=-1) if class_index is None else class_index
    wanted = np.broadcast_to(np.asarray(shown), (len(pixels),))
    names = clf.class_names or [str(i) for i in range(clf.num_classes)]
    titles = [f"{names[int(c)]} ({probabilities[i, int(c)]:.0%})" for i, c in enumerate(wanted)]
    figure = _image_grid(new_figure, pixels, titles, ["black"] * len(pixels), heatmaps, alpha)
    return _save(figure, target)


def _image_grid(
    new_figure: Callable[..., Any],
    pixels: np.ndarray,
    titles: Sequence[str],
    colors: Sequence[str],
    overlays: np.ndarray | None = None,
    alpha: float = 0.5,
) -> Any:
    columns = math.ceil(math.sqrt(len(pixels)))
    rows = math.ceil(len(pixels) / columns)
    figure = new_figure(figsize=(2.6 * columns, 2.9 * rows))
    grid = figure.subplots(rows, columns, squeeze=False).ravel()
    for index, axes in enumerate(grid):
        axes.axis("off")
        if index >= len(pixels):
            continue
        axes.imshow(np.clip(pixels[index], 0, 255).astype(np.uint8))
        if overlays is not None:
            axes.imshow(overlays[index], cmap="jet", alpha=alpha, vmin=0.0, vmax=1.0)
        axes.set_title(titles[index], color=colors[index], fontsize=10)
    return figure


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
    return _save(figure, target)


def reliability(
    interpretation: Interpretation | MultiLabelInterpretation, path: str | os.PathLike[str]
) -> Path:
    """Draws a reliability diagram: each confidence bin's accuracy against its confidence.

    Bars on the diagonal are calibrated, bars below it overconfident; the title gives the
    expected calibration error (see :meth:`~transferkit.TransferClassifier.calibrate`).

    Args:
        interpretation: what :meth:`~transferkit.TransferClassifier.interpret` returned.
        path: the image file to write; the suffix picks the format.

    Returns:
        The path written.

    Raises:
        MissingDependencyError: matplotlib is not installed.
        InvalidArgumentError: the folder of ``path`` does not exist.
    """
    new_figure = _figure_maker()
    target = _target(path)
    bins = interpretation.reliability()
    figure = new_figure(figsize=(5.0, 5.0))
    axes = figure.subplots()
    width = np.diff(bins.edges)
    shown = bins.counts > 0
    axes.bar(bins.edges[:-1][shown], bins.accuracy[shown], width=width[shown], align="edge",
             edgecolor="black", color="tab:blue", label="accuracy")  # fmt: skip
    axes.plot([0, 1], [0, 1], linestyle="--", color="gray", label="calibrated")
    axes.set(xlim=(0, 1), ylim=(0, 1), xlabel="Confidence", ylabel="Accuracy")
    axes.set_title(f"Reliability (ECE {bins.expected_calibration_error:.3f})")
    axes.legend(loc="upper left")
    return _save(figure, target)


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


def _save(figure: Any, target: Path) -> Path:
    # Once and whole: by process 0 of a multi-process run, through a file renamed into place.
    if _backend.is_process_zero():
        partial = target.with_name(f".partial-{target.name}")
        figure.savefig(partial, dpi=100)
        os.replace(partial, target)
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
