"""Two Keras callbacks for every training stage, run by :mod:`~transferkit.training.checkpoints`.

:class:`DivergenceGuard` stops at the first non-finite loss or weights and keeps the last good
weights; :class:`EarlyStopping` is Keras' early stopping with a state that a resumed run can
set.
"""

from __future__ import annotations

import math
from typing import Any

import keras
import numpy as np

__all__ = ["DivergenceGuard", "EarlyStopping"]


class DivergenceGuard(keras.callbacks.Callback):
    """Stops training at the first non-finite loss and keeps the last good weights.

    The loss is checked after every batch; the weights after every epoch (an update can
    overflow them in an epoch's last batch, before any loss shows it). "Good" weights are
    those at the end of the last epoch whose loss and weights were all finite, or the
    weights training started from if no epoch was.
    """

    # Only reads logs and sets flags, so Keras may run it off the training thread.
    async_safe = True

    def __init__(self) -> None:
        super().__init__()
        self.diverged_epoch: int | None = None
        self.diverged_batch: int | None = None
        self.diverged_loss = math.nan
        self.good_epoch: int | None = None
        self._good_weights: list[np.ndarray] = []
        self._epoch = 0

    @property
    def diverged(self) -> bool:
        """Whether training hit a non-finite loss or non-finite weights."""
        return self.diverged_epoch is not None

    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
        """Keeps the starting weights, the good ones until an epoch completes."""
        self._good_weights = self.model.get_weights()

    def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        """Notes the epoch, for the error message."""
        self._epoch = epoch

    def on_train_batch_end(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        """Stops training if the loss is no longer finite."""
        loss = (logs or {}).get("loss")
        if self.diverged or loss is None or math.isfinite(float(loss)):
            return
        self.diverged_epoch, self.diverged_batch = self._epoch, batch
        self.diverged_loss = float(loss)
        self.model.stop_training = True

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        """Keeps the weights if they are all finite; stops training otherwise."""
        if self.diverged:
            return
        weights = self.model.get_weights()
        if all(np.isfinite(w).all() for w in weights if np.issubdtype(w.dtype, np.floating)):
            self._good_weights = weights
            self.good_epoch = epoch
            return
        self.diverged_epoch = epoch
        self.diverged_loss = float((logs or {}).get("loss", math.nan))
        self.model.stop_training = True

    def restore(self) -> None:
        """Puts the last good weights back into the model."""
        self.model.set_weights(self._good_weights)


class EarlyStopping(keras.callbacks.Callback):
    """Stops after ``patience`` epochs without a lower ``monitor``; restores the best weights.

    Like ``keras.callbacks.EarlyStopping(restore_best_weights=True)``, with its state
    (best value, best epoch, epochs waited, best weights) settable so that a resumed run
    goes on counting where the interrupted one stopped. A non-finite value never counts as
    an improvement. The best weights are restored when training ends, stopped early or not.

    Args:
        monitor: the log to minimize (``"val_loss"`` or ``"loss"``).
        patience: epochs without improvement before stopping.
    """

    def __init__(self, monitor: str, patience: int) -> None:
        super().__init__()
        self.monitor = monitor
        self.patience = patience
        self.best: float | None = None
        self.best_epoch: int | None = None
        self.wait = 0
        self.best_weights: list[np.ndarray] | None = None

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        """Records an improvement or counts an epoch without one."""
        value = (logs or {}).get(self.monitor)
        if value is not None and math.isfinite(value) and (self.best is None or value < self.best):
            self.best, self.best_epoch, self.wait = float(value), epoch, 0
            self.best_weights = self.model.get_weights()
            return
        self.wait += 1
        if self.wait >= self.patience:
            self.model.stop_training = True

    def on_train_end(self, logs: dict[str, Any] | None = None) -> None:
        """Restores the best epoch's weights."""
        if self.best_weights is not None:
            self.model.set_weights(self.best_weights)

    def state(self) -> dict[str, Any]:
        """The JSON-ready state, without the weights (those are in a checkpoint file)."""
        return {"best": self.best, "best_epoch": self.best_epoch, "wait": self.wait}
