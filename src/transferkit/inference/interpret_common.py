"""What single- and multi-label interpretations share: losses, kept images, report rows.

Both kinds are made in one streaming pass that keeps, for every example, its
log-probabilities, its label and its loss; the pixels of the :data:`MAX_PLOTTED`
highest-loss examples are kept too, for plotting. Reports follow scikit-learn's
``classification_report(output_dict=True)`` with ``zero_division=0``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import tensorflow as tf

from transferkit import _validation
from transferkit.errors import InvalidArgumentError

if TYPE_CHECKING:
    from collections.abc import Iterator, Sequence


__all__ = [
    "MAX_PLOTTED",
    "InterpretationBase",
    "TopImages",
    "class_rows",
    "loss_order",
    "pairs",
    "ratio",
    "report_table",
    "scores",
]

#: How many of the highest-loss images an interpretation keeps for plotting.
MAX_PLOTTED = 64


class InterpretationBase:
    """Losses per example, the images of the highest ones, and what follows from them."""

    class_names: tuple[str, ...]
    losses: np.ndarray
    paths: tuple[str, ...] | None
    views: int
    _top_images: dict[int, np.ndarray]

    @property
    def num_classes(self) -> int:
        """The number of classes."""
        return len(self.class_names)

    @property
    def loss(self) -> float:
        """The mean loss, as ``evaluate`` reports it."""
        return float(self.losses.mean()) if len(self.losses) else float("nan")

    def top_loss_images(self, k: int) -> np.ndarray:
        """The raw pixels (uint8) of the ``k`` highest-loss examples, highest first.

        Raises:
            InvalidArgumentError: ``k`` exceeds the images kept (:data:`MAX_PLOTTED`).
        """
        indices = self._top_indices(k)
        missing = [i for i in indices if int(i) not in self._top_images]
        if missing:
            msg = (
                f"Only the images of the {len(self._top_images)} highest losses are kept "
                f"(at most {MAX_PLOTTED}); ask for fewer. Received: k={k}"
            )
            raise InvalidArgumentError(msg)
        return np.stack([self._top_images[int(i)] for i in indices])

    def plot_top_losses(self, k: int, path: str | os.PathLike[str]) -> Path:
        """Draws the ``k`` highest-loss images; see :func:`transferkit.plot.top_losses`."""
        from transferkit import plot

        return plot.top_losses(self, k, path)  # type: ignore[arg-type]  # one of the two kinds

    def _top_indices(self, k: int) -> np.ndarray:
        k = _validation.positive_int("k", k)
        return loss_order(self.losses, np.arange(len(self.losses)))[:k]

    def _path(self, index: int) -> str | None:
        return None if self.paths is None else self.paths[index]

    def __len__(self) -> int:
        return len(self.losses)


# ---------------------------------------------------------------------- reports


def class_rows(
    class_names: Sequence[str],
    true_positives: np.ndarray,
    false_positives: np.ndarray,
    false_negatives: np.ndarray,
) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """Per-class rows of a report, and their macro and weighted averages."""
    support = true_positives + false_negatives
    precision = ratio(true_positives, true_positives + false_positives)
    recall = ratio(true_positives, support)
    f1 = ratio(2 * true_positives, 2 * true_positives + false_positives + false_negatives)
    rows: dict[str, Any] = {
        name: scores(precision[i], recall[i], f1[i], int(support[i]))
        for i, name in enumerate(class_names)
    }
    total = int(support.sum())
    macro = scores(precision.mean(), recall.mean(), f1.mean(), total)
    weights = support / total if total else np.zeros_like(precision)
    weighted = scores(
        (precision * weights).sum(), (recall * weights).sum(), (f1 * weights).sum(), total
    )
    return rows, macro, weighted


def report_table(
    report: dict[str, Any],
    class_names: Sequence[str],
    averages: Sequence[str],
    digits: int,
    accuracy: str | None = None,
) -> str:
    """A report as a text table, laid out like scikit-learn's.

    ``accuracy`` names the report's single-number entry shown before the averages
    (single-label reports have ``"accuracy"``).
    """
    digits = _validation.non_negative_int("digits", digits)
    width = max(len("weighted avg"), *(len(name) for name in [*class_names, *averages]))
    header = f"{'':>{width}}  {'precision':>9}  {'recall':>9}  {'f1-score':>9}  {'support':>9}"
    lines = [header, ""]

    def row(name: str) -> str:
        values = report[name]
        numbers = "  ".join(
            f"{values[key]:>9.{digits}f}" for key in ("precision", "recall", "f1-score")
        )
        return f"{name:>{width}}  {numbers}  {values['support']:>9}"

    lines += [row(name) for name in class_names]
    lines.append("")
    if accuracy is not None:
        total = report[averages[0]]["support"]
        value = f"{report[accuracy]:.{digits}f}"
        lines.append(f"{accuracy:>{width}}  {'':>9}  {'':>9}  {value:>9}  {total:>9}")
    lines += [row(name) for name in averages]
    return "\n".join(lines)


def ratio(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    """``numerator / denominator``, 0 where the denominator is 0 (``zero_division=0``)."""
    numerator = np.asarray(numerator, np.float64)
    safe = np.where(denominator > 0, denominator, 1)
    return np.where(denominator > 0, numerator / safe, 0.0)


def scores(precision: float, recall: float, f1: float, support: int) -> dict[str, Any]:
    """One row of a report."""
    return {
        "precision": float(precision),
        "recall": float(recall),
        "f1-score": float(f1),
        "support": support,
    }


# ---------------------------------------------------------------------- the pass


class TopImages:
    """The images of the highest losses seen so far, in the order of ``top_losses()``."""

    def __init__(self, size: int) -> None:
        self._size = size
        self._indices = np.zeros(0, np.int64)
        self._losses = np.zeros(0, np.float64)
        self._images: list[np.ndarray] = []

    def update(self, losses: np.ndarray, offset: int, images: Any) -> None:
        """Offers one batch: its losses, its first index, its raw pixels."""
        indices = np.concatenate([self._indices, offset + np.arange(len(losses))])
        all_losses = np.concatenate([self._losses, losses])
        keep = loss_order(all_losses, indices)[: self._size]
        pixels = np.asarray(images)
        pool = self._images + [None] * len(losses)  # new images converted only if kept
        self._images = [
            pool[j] if j < len(self._indices) else _uint8(pixels[j - len(self._indices)])
            for j in keep
        ]
        self._indices, self._losses = indices[keep], all_losses[keep]

    def images(self) -> dict[int, np.ndarray]:
        """The kept images by example index."""
        return {int(i): image for i, image in zip(self._indices, self._images, strict=True)}


def loss_order(losses: np.ndarray, indices: np.ndarray) -> np.ndarray:
    """Positions sorted by highest loss first, then by index."""
    return np.lexsort((indices, -losses))


def _uint8(image: np.ndarray) -> np.ndarray:
    return np.clip(np.round(image), 0, 255).astype(np.uint8)


def pairs(dataset: tf.data.Dataset) -> Iterator[tuple[Any, Any]]:
    """The (images, labels) of each batch; a third element (sample weights) is ignored."""
    for element in dataset:
        yield element[0], element[1]
