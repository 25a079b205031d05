"""A crash at a chosen epoch, for the resume tests."""

from __future__ import annotations

from typing import Any

import keras


class Interrupted(Exception):
    """Stands for a crash, a kill or a preempted machine in the middle of training."""


class InterruptAt(keras.callbacks.Callback):
    """Raises :class:`Interrupted` as the given global epoch begins (the ones before are done)."""

    def __init__(self, epoch: int) -> None:
        super().__init__()
        self.epoch = epoch

    def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        if epoch == self.epoch:
            raise Interrupted(epoch)
