"""Safe, resumable training: divergence guard, early stopping and per-epoch checkpoints.

Every ``fit_head`` and ``fine_tune`` call runs under a :class:`SafeRun`, which adds up to
three Keras callbacks to the user's:

* ``DivergenceGuard`` (:mod:`~transferkit.training.callbacks`) stops training at the first
  non-finite loss (or non-finite weights) and keeps the weights from the end of the last good
  epoch.
* ``EarlyStopping`` (``early_stopping=patience``, also in
  :mod:`~transferkit.training.callbacks`) stops when the monitored loss has not improved for
  ``patience`` epochs and restores the best epoch's weights at the end.
* :class:`Checkpoint` (``checkpoint_dir=...``) saves after every epoch, so that running the
  same calls again resumes where an interrupted run stopped (see :func:`open_run`).

A checkpoint directory holds one folder per run (one ``fit_head`` or ``fine_tune`` call),
named for its stage and first global epoch: ``head-from-epoch-0``,
``fine_tune-from-epoch-10``. After every epoch the folder gets the model's weights with the
optimizer's state (``epoch-00003.weights.h5``), then ``state.json``: the classifier's
history, the run's settings, the early-stopping state and the random state (the shuffling
seed, and the state of every ``keras.random.SeedGenerator`` in the model: those of dropout and
augmentation, which ``save_weights`` leaves out). ``state.json`` is replaced
atomically and names only weight files written before it, so a run killed at any moment
leaves a consistent checkpoint. A finished run keeps its final weights, so running the same
calls again replays it without training. In a multi-process run only process 0 writes; the
directory must be one that every process can read (a shared file system) to resume.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import keras
import numpy as np

from transferkit import _backend
from transferkit.errors import (
    InvalidArgumentError,
    TrainingDivergedError,
)
from transferkit.history import Stage, TrainingHistory
from transferkit.training.callbacks import DivergenceGuard, EarlyStopping

__all__ = [
    "Checkpoint",
    "Run",
    "SafeRun",
    "check_checkpoint_dir",
    "open_run",
]

_STATE_FILE = "state.json"
_FINAL_WEIGHTS = "final.weights.h5"


# ---------------------------------------------------------------------- argument checks


def check_checkpoint_dir(value: object) -> None:
    """Raises unless ``value`` is None or a path that is not an existing file."""
    if value is None:
        return
    if not isinstance(value, (str, os.PathLike)) or not os.fspath(value):
        msg = f"checkpoint_dir must be a folder path or None. Received: checkpoint_dir={value!r}"
        raise InvalidArgumentError(msg)
    if Path(value).exists() and not Path(value).is_dir():
        msg = (
            "checkpoint_dir must be a folder (it is created if missing), but a file is there. "
            f"Received: checkpoint_dir={os.fspath(value)!r}"
        )
        raise InvalidArgumentError(msg)


# ---------------------------------------------------------------------- callbacks


class Checkpoint(keras.callbacks.Callback):
    """Writes the run's weights, optimizer state and classifier state after every epoch.

    Args:
        run: the :class:`Run` to write into; its history is the classifier's as ``fit``
            starts (resumed epochs included).
        stage: ``"head"`` or ``"fine_tune"``.
        guard: the run's divergence guard; nothing is written once it has tripped.
        stopper: the run's early stopping, or None.
    """

    def __init__(
        self,
        run: Run,
        stage: Stage,
        guard: DivergenceGuard,
        stopper: EarlyStopping | None,
    ) -> None:
        super().__init__()
        self._run = run
        self._stage: Stage = stage
        self._history = TrainingHistory.from_dict(run.history.to_dict())
        self._guard = guard
        self._stopper = stopper
        #: The class weights the epochs train with, as the history records them.
        self.class_weights: dict[str, Any] | None = None

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        """Saves this epoch, unless training diverged in it."""
        if self._guard.diverged:
            return
        metrics = {k: [v] for k, v in (logs or {}).items()}
        self._history.append(self._stage, [epoch], metrics, class_weights=self.class_weights)
        self._run.save(self.model, _weights_name(epoch), self._history, self._stopper)

    def on_train_end(self, logs: dict[str, Any] | None = None) -> None:
        """Saves the final weights (the best epoch's, with early stopping) as finished."""
        if self._guard.diverged:
            return
        self._run.save(self.model, _FINAL_WEIGHTS, self._history, self._stopper, finished=True)


# ---------------------------------------------------------------------- checkpoints


def _random_states(model: keras.Model) -> list[keras.Variable]:
    # Keras' `variables` are its `weights` plus the state of every SeedGenerator (dropout
    # masks, augmentations), in an order fixed by how the model was built.
    weights = {id(weight) for weight in model.weights}
    return [variable for variable in model.variables if id(variable) not in weights]


def _weights_name(epoch: int) -> str:
    return f"epoch-{epoch:05d}.weights.h5"


def _write_atomically(path: Path, text: str) -> None:
    temporary = path.with_name(f".partial-{path.name}")
    temporary.write_text(text)
    os.replace(temporary, path)


class Run:
    """One run's checkpoint folder, and what it held when opened.

    Args:
        folder: the run's folder inside the checkpoint directory.
        settings: what identifies the run (stage, epochs, backbone, optimizer, ...).
        start_history: the classifier's history when the run started.
        state: the parsed ``state.json``, or None for a run not started yet.
    """

    def __init__(
        self,
        folder: Path,
        settings: dict[str, Any],
        start_history: TrainingHistory,
        state: dict[str, Any] | None,
    ) -> None:
        self.folder = folder
        self.settings = settings
        self.start_history = start_history
        self.state = state
        #: The run's shuffling seed: drawn when it starts, kept in its state for a resume.
        self.shuffle_seed: int | None = None if state is None else state.get("shuffle_seed")

    @property
    def completed(self) -> int:
        """Epochs of this run already trained and saved."""
        return 0 if self.state is None else int(self.state["completed"])

    @property
    def finished(self) -> bool:
        """Whether the run ran to its end (all epochs, or stopped early)."""
        return self.state is not None and bool(self.state["finished"])

    @property
    def history(self) -> TrainingHistory:
        """The classifier's history as last saved."""
        if self.state is None:
            return self.start_history
        return TrainingHistory.from_dict(self.state["history"])

    def restore(self, model: keras.Model, stopper: EarlyStopping | None) -> None:
        """Loads the saved weights and optimizer state into a compiled, built model.

        Args:
            model: the classifier's model; its optimizer must be built.
            stopper: the run's early stopping, given back its state and best weights.
        """
        if self.state is None:
            return
        if stopper is not None:
            early = self.state["early_stopping"]
            stopper.best, stopper.best_epoch, stopper.wait = (
                early["best"],
                early["best_epoch"],
                early["wait"],
            )
            if self.state["best_weights"] is not None:
                model.load_weights(self.folder / self.state["best_weights"])
                stopper.best_weights = model.get_weights()
        model.load_weights(self.folder / self.state["weights"])

    def restore_random_state(self, model: keras.Model) -> None:
        """Puts the model's random state (dropout, augmentation) back as last saved.

        Raises:
            InvalidArgumentError: the model has other random layers than the saved one.
        """
        if self.state is None or "random_states" not in self.state:
            return
        saved = self.state["random_states"]
        variables = _random_states(model)
        if len(saved) != len(variables):
            msg = (
                f"The checkpoint in {os.fspath(self.folder)!r} holds the state of "
                f"{len(saved)} random generators, but the model has {len(variables)}: it was "
                "built with other augmentation or dropout layers. Build the classifier as "
                "the interrupted run did, or use a new checkpoint_dir. "
                f"Received: a model with {len(variables)} random generators"
            )
            raise InvalidArgumentError(msg)
        for variable, value in zip(variables, saved, strict=True):
            variable.assign(np.asarray(value, dtype=variable.dtype))

    def save(
        self,
        model: keras.Model,
        weights_name: str,
        history: TrainingHistory,
        stopper: EarlyStopping | None,
        *,
        finished: bool = False,
    ) -> None:
        """Writes the weights file, then ``state.json``, then deletes stale weight files.

        In a multi-process run (``keras.distribution`` on JAX) every process holds the same
        weights and keeps the state; process 0 alone writes the files.
        """
        writer = _backend.is_process_zero()
        with _backend.written_by_process_zero(self.folder) as folder:
            # Every process serializes: reading the weights synchronizes the processes.
            temporary = folder / f".partial-{weights_name}"
            model.save_weights(temporary)
            if writer:
                os.replace(temporary, self.folder / weights_name)
        best = None
        if stopper is not None and stopper.best_epoch is not None:
            best = _weights_name(stopper.best_epoch)
        self.state = {
            "settings": self.settings,
            "start_history": self.start_history.to_dict(),
            "completed": len(history.epochs) - len(self.start_history.epochs),
            "finished": finished,
            "weights": weights_name,
            "best_weights": best,
            "early_stopping": None if stopper is None else stopper.state(),
            "history": history.to_dict(),
            "shuffle_seed": self.shuffle_seed,
            "random_states": [np.asarray(v).tolist() for v in _random_states(model)],
        }
        if not writer:
            return
        _write_atomically(self.folder / _STATE_FILE, json.dumps(self.state, indent=1))
        for stale in self.folder.glob("*.weights.h5"):
            if stale.name not in (weights_name, best):
                with contextlib.suppress(FileNotFoundError):
                    stale.unlink()


def open_run(
    directory: str | os.PathLike[str],
    *,
    stage: Stage,
    history: TrainingHistory,
    settings: dict[str, Any],
) -> Run:
    """Finds (or creates) the folder of the run that starts at the history's next epoch.

    Runs are told apart by stage and first global epoch, so the same sequence of
    ``fit_head`` / ``unfreeze`` / ``fine_tune`` calls on an equally built classifier (or on
    one loaded from a save made before the interrupted run) finds its runs again.

    Args:
        directory: the checkpoint directory.
        stage: ``"head"`` or ``"fine_tune"``.
        history: the classifier's history now, before the run.
        settings: what must match for a saved run to be resumed.

    Returns:
        The :class:`Run`, holding its saved state if it has one.

    Raises:
        InvalidArgumentError: the directory holds a different run at this epoch.
    """
    root = Path(directory)
    start = history.next_epoch
    folder = root / f"{stage}-from-epoch-{start}"
    for other in root.glob(f"*-from-epoch-{start}"):
        if other != folder:
            msg = (
                f"checkpoint_dir holds a {other.name.split('-from-')[0]} run from epoch "
                f"{start}, not a {stage} run: it belongs to another sequence of calls. Use a "
                "new folder, or delete this one to start over. "
                f"Received: checkpoint_dir={os.fspath(directory)!r}"
            )
            raise InvalidArgumentError(msg)
    folder.mkdir(parents=True, exist_ok=True)
    state_file = folder / _STATE_FILE
    if not state_file.is_file():
        return Run(folder, settings, history, None)
    state = json.loads(state_file.read_text())
    saved_start = TrainingHistory.from_dict(state["start_history"])
    differences = {
        key: (state["settings"].get(key), value)
        for key, value in settings.items()
        if state["settings"].get(key) != value
    }
    if (saved_start.epochs, saved_start.stages) != (history.epochs, history.stages):
        differences["history"] = (saved_start.epochs, history.epochs)
    if differences:
        changes = ", ".join(
            f"{k}: saved {old!r}, now {new!r}" for k, (old, new) in differences.items()
        )
        msg = (
            f"checkpoint_dir holds a {stage} run from epoch {start} made with other settings "
            f"({changes}), so it cannot be resumed. Repeat the interrupted calls exactly, or "
            "use a new folder (or delete this one) to start over. "
            f"Received: checkpoint_dir={os.fspath(directory)!r}"
        )
        raise InvalidArgumentError(msg)
    return Run(folder, settings, history, state)


# ---------------------------------------------------------------------- one safe run


class SafeRun:
    """The callbacks that guard one ``fit`` call, and what to do with its outcome.

    Args:
        stage: ``"head"`` or ``"fine_tune"``.
        early_stopping: a patience in epochs, or None.
        monitor: the loss early stopping watches.
        run: the checkpoint run, or None.
    """

    def __init__(
        self,
        stage: Stage,
        *,
        early_stopping: int | None,
        monitor: str,
        run: Run | None,
    ) -> None:
        self.stage: Stage = stage
        self.guard = DivergenceGuard()
        self.stopper = None if early_stopping is None else EarlyStopping(monitor, early_stopping)
        self.run = run
        self.checkpoint = None if run is None else Checkpoint(run, stage, self.guard, self.stopper)
        # Drawn from NumPy's global generator, so keras.utils.set_random_seed fixes it; a
        # resumed run uses the seed its first part drew. Drawn either way, so that the calls
        # after a resumed (or replayed) one draw what they drew in an uninterrupted script.
        self.shuffle_seed = int(np.random.randint(0, 2**31 - 1))
        if run is not None and run.shuffle_seed is not None:
            self.shuffle_seed = run.shuffle_seed
        elif run is not None:
            run.shuffle_seed = self.shuffle_seed

    @property
    def completed(self) -> int:
        """Epochs of this run trained before (0 without a checkpoint)."""
        return 0 if self.run is None else self.run.completed

    def restore_checkpoint(self, model: keras.Model) -> None:
        """Loads the run's checkpoint, if any, into the model and early stopping."""
        if self.run is not None:
            self.run.restore(model, self.stopper)

    def restore_random_state(self, model: keras.Model) -> None:
        """Puts the model's random state back as the checkpoint left it, if there is one.

        Separate from :meth:`restore_checkpoint`: caching features augments the images with
        the state the run started with, so it is restored after caching, just before fit.
        """
        if self.run is not None:
            self.run.restore_random_state(model)

    @property
    def callbacks(self) -> list[keras.callbacks.Callback]:
        """Guard, early stopping and checkpoint, in the order they must run."""
        callbacks: list[keras.callbacks.Callback] = [self.guard]
        if self.stopper is not None:
            callbacks.append(self.stopper)
        if self.checkpoint is not None:
            callbacks.append(self.checkpoint)
        return callbacks

    def kept(
        self, epochs: Sequence[int], metrics: dict[str, list[float]]
    ) -> tuple[list[int], dict[str, list[float]]]:
        """The epochs (and their metrics) to record: all but a diverged one."""
        count = len(epochs)
        if self.guard.diverged_epoch is not None:
            count = sum(1 for epoch in epochs if epoch < self.guard.diverged_epoch)
        return list(epochs[:count]), {name: list(v[:count]) for name, v in metrics.items()}

    def divergence(self) -> TrainingDivergedError | None:
        """If training diverged: restores the last good weights and returns the error to raise."""
        guard = self.guard
        if guard.diverged_epoch is None:
            return None
        guard.restore()
        where = f"epoch {guard.diverged_epoch}"
        if guard.diverged_batch is not None:
            where += f", batch {guard.diverged_batch}"
        kept = (
            f"the weights from the end of epoch {guard.good_epoch} (the last finite one)"
            if guard.good_epoch is not None
            else "the weights from before this training call"
        )
        msg = (
            f"Training diverged: the {self.stage} stage's loss became {guard.diverged_loss} at "
            f"{where}. The model holds {kept} again. Lower the learning rate, and check the "
            "images for NaN or infinite pixel values. "
            f"Received: loss={guard.diverged_loss} at {where}"
        )
        return TrainingDivergedError(msg)
