# ruff: noqa: E402  (JAX is configured and the processes join before transferkit loads)
"""One process of the multi-process tests: ``python multi_process_worker.py ID COUNT PORT OUT``.

Trains the tiny backbone data-parallel (``keras.distribution.DataParallel`` over COUNT JAX
processes on 127.0.0.1, gloo CPU collectives; COUNT=1 trains alone, without a distribution)
through ``fit_head`` (cached features, then on images), ``unfreeze``, ``fine_tune`` (resumable
from OUT/checkpoints) and ``fit()``. It writes its final weights to OUT/weights-ID.npz, the
rows each training pipeline gave it to OUT/rows-ID.json, and prints one JSON line.
``TK_KILL_AT_EPOCH=E`` ends the process as fine-tuning's global epoch E begins, as a kill would.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

os.environ["KERAS_BACKEND"] = "jax"

import jax

jax.config.update("jax_cpu_collectives_implementation", "gloo")

import keras
import numpy as np

PROCESS, COUNT, PORT, OUT = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], Path(sys.argv[4])
if COUNT > 1:
    keras.distribution.initialize(
        job_addresses=f"127.0.0.1:{PORT}", num_processes=COUNT, process_id=PROCESS
    )
    keras.distribution.set_distribution(keras.distribution.DataParallel())

import transferkit as tk
from conftest import TINY_BACKBONE  # registers the tiny backbone
from transferkit.data import resolve

ROWS, BATCH = 64, 16


def images_and_labels() -> tuple[np.ndarray, np.ndarray]:
    """Row r's image carries r in its first pixel, so a pipeline's rows can be read back."""
    rng = np.random.default_rng(0)
    labels = np.arange(ROWS) % 2
    images = rng.integers(0, 60, size=(ROWS, 32, 32, 3)).astype(np.float32)
    images[np.arange(ROWS), :, :, labels] += 150
    images[:, 0, 0, :] = np.arange(ROWS)[:, None]
    return images, labels.astype(np.int32)


class KillAt(keras.callbacks.Callback):
    """Ends the process, with no cleanup, as the given global epoch begins."""

    def __init__(self, epoch: int) -> None:
        super().__init__()
        self.epoch = epoch

    def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        if epoch == self.epoch:
            os._exit(3)


def rows_fed(clf: tk.TransferClassifier, data: Any) -> list[list[int]]:
    """The rows of every batch this process's training pipeline gives it, for one epoch."""
    expected = resolve.Expected(clf.image_size, clf.num_classes, None, False)
    train, _ = resolve.training(data, expected, batch_size=BATCH)
    epoch, _ = train.epochs(seed=0, first_epoch=0, epochs=1)
    return [[int(v) for v in np.asarray(x)[:, 0, 0, 0]] for x, _ in epoch]


def main() -> None:
    images, labels = images_and_labels()
    train, validation = (images[:48], labels[:48]), (images[48:], labels[48:])
    keras.utils.set_random_seed(7)
    clf = tk.TransferClassifier(
        TINY_BACKBONE, class_names=["a", "b"], image_size=32, weights=None, dropout=0.0
    )
    common: dict[str, Any] = {"validation_data": validation, "batch_size": BATCH, "verbose": 0}
    clf.fit_head(train, epochs=2, learning_rate=1e-2, **common)
    clf.fit_head(train, epochs=1, learning_rate=1e-2, cache_features=False, **common)
    clf.unfreeze(None)
    kill = os.environ.get("TK_KILL_AT_EPOCH")
    clf.fine_tune(
        train,
        epochs=3,
        learning_rate=1e-3,
        checkpoint_dir=OUT / "checkpoints",
        callbacks=[KillAt(int(kill))] if kill else None,
        **common,
    )
    clf.save(OUT / "tuned.keras")
    weights = {f"tuned{i}": w for i, w in enumerate(clf.model.get_weights())}
    result: dict[str, Any] = {"process": jax.process_index(), "processes": jax.process_count()}
    if COUNT == 1:  # the reference for the recipe's stages; fit() is compared across processes
        np.savez(OUT / f"weights-{PROCESS}.npz", **weights)
        (OUT / f"rows-{PROCESS}.json").write_text(json.dumps(rows_fed(clf, train)))
        print(json.dumps(result), flush=True)
        return
    keras.utils.set_random_seed(7)
    one_call = tk.TransferClassifier(
        TINY_BACKBONE, class_names=["a", "b"], image_size=32, weights=None, dropout=0.0
    )
    # The head's rate is given: the finder's sweep reads a shuffled stream that is not cut
    # into shares, so its batches differ from a one-process sweep (it runs just below).
    one_call.fit(
        train, validation_data=validation, batch_size=BATCH, learning_rate=1e-2, epochs=2, verbose=0
    )
    found = one_call.find_learning_rate(train, batch_size=BATCH, steps=20)
    weights |= {f"fit{i}": w for i, w in enumerate(one_call.model.get_weights())}
    np.savez(OUT / f"weights-{PROCESS}.npz", **weights)
    (OUT / f"rows-{PROCESS}.json").write_text(json.dumps(rows_fed(clf, train)))
    result |= {
        "devices": len(jax.devices()),
        "kept": [d["value"] for d in one_call.history.decisions if d["name"] == "kept"],
        "accuracy": clf.evaluate(validation, batch_size=BATCH)["accuracy"],
        "predicted": clf.predict(images[:5]).shape[0],
        "suggestion": found.suggestion,
    }
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
