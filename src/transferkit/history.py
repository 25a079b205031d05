"""``TrainingHistory``: one record of both training stages, epoch by epoch."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Literal

__all__ = ["Stage", "TrainingHistory"]

Stage = Literal["head", "fine_tune"]


@dataclass
class TrainingHistory:
    """Per-epoch metrics of every ``fit_head`` and ``fine_tune`` call, in order.

    Epochs are numbered on across stages, as the reference recipe does with
    ``initial_epoch``: ten head epochs are epochs 0-9 and fine-tuning starts at epoch 10.

    Attributes:
        epochs: list of int. The global index of each recorded epoch.
        stages: list of str. ``"head"`` or ``"fine_tune"`` for each epoch.
        metrics: dict of str to list of float. One list per metric (``loss``,
            ``accuracy``, ``val_loss``, ``val_accuracy``, ...), aligned with ``epochs``; an
            epoch that did not report a metric holds NaN.
        class_weights: list. The class weights each epoch trained with, aligned with
            ``epochs``: None, or ``{"positive": {class: weight}}`` (multi-label weights also
            have ``"negative"``); see ``class_weight`` of ``fit_head``.
    """

    epochs: list[int] = field(default_factory=list)
    stages: list[Stage] = field(default_factory=list)
    metrics: dict[str, list[float]] = field(default_factory=dict)
    class_weights: list[dict[str, Any] | None] = field(default_factory=list)

    @property
    def next_epoch(self) -> int:
        """The global index the next trained epoch will get."""
        return self.epochs[-1] + 1 if self.epochs else 0

    @property
    def fine_tune_start(self) -> int | None:
        """The first fine-tuning epoch, or None if there was no fine-tuning."""
        for epoch, stage in zip(self.epochs, self.stages, strict=True):
            if stage == "fine_tune":
                return epoch
        return None

    def append(
        self,
        stage: Stage,
        epochs: list[int],
        metrics: dict[str, list[float]],
        class_weights: dict[str, Any] | None = None,
    ) -> None:
        """Records the epochs of one Keras ``fit`` call.

        Args:
            stage: ``"head"`` or ``"fine_tune"``.
            epochs: the global epoch indices Keras ran (``History.epoch``).
            metrics: Keras' ``History.history``.
            class_weights: the class weights the epochs trained with, or None.
        """
        before = len(self.epochs)
        for name in metrics.keys() - self.metrics.keys():
            self.metrics[name] = [math.nan] * before
        for name, values in self.metrics.items():
            new = [float(v) for v in metrics.get(name, [math.nan] * len(epochs))]
            values.extend(new)
        self.epochs.extend(int(e) for e in epochs)
        self.stages.extend([stage] * len(epochs))
        self.class_weights.extend([class_weights] * len(epochs))

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready copy (NaN is written as None)."""
        return {
            "epochs": list(self.epochs),
            "stages": list(self.stages),
            "metrics": {
                name: [None if math.isnan(v) else v for v in values]
                for name, values in self.metrics.items()
            },
            "class_weights": list(self.class_weights),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainingHistory:
        """Rebuilds a history written by :meth:`to_dict`."""
        return cls(
            epochs=[int(e) for e in data["epochs"]],
            stages=list(data["stages"]),
            metrics={
                name: [math.nan if v is None else float(v) for v in values]
                for name, values in data["metrics"].items()
            },
            # Files written before class weights existed trained without them.
            class_weights=list(data.get("class_weights", [None] * len(data["epochs"]))),
        )
