"""The head stage with each regularizer, pooling and loss: a small, quick comparison.

On the offline tasks of ``quality_tasks.py`` (digits 0-4 pretrained, transferred to 5-9), a
classifier built on the pretrained weights trains its head alone (``fit_head`` on cached
features, Adam at ``--learning-rate``, cosine schedule, ``--epochs`` epochs, early stopping
with patience 10 on a validation split of 20% of the training images, the same for every
row), once per row and seed, and is scored on the held-out test images: accuracy, or macro ROC
AUC for the multi-label regime (two digits side by side). Rows:

* single-label: no regularizer, ``label_smoothing=0.1``, ``ema=0.99``, ``mixup=0.2``,
  ``soup=3``;
* multi-label: poolings ``avg``, ``max`` and ``avgmax`` with cross-entropy, and ``avg`` and
  ``avgmax`` with the focal and the asymmetric loss.

It measures the head stage only: ``transfer_quality.py --fit-kwargs`` measures whole ``fit()``
runs. ::

    python benchmarks/regularizers.py --weights digits.weights.h5 --regime digits-10
    python benchmarks/regularizers.py --weights digits.weights.h5 --regime digits-multilabel

``--weights`` is a pretrained digits backbone (``transfer_quality.py --weights-dir DIR`` keeps
one as ``DIR/digits.weights.h5``); without it, one is pretrained first (minutes).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import keras
import numpy as np
from quality_tasks import REGIMES, compose_pairs, make_task, pretrain_backbone, regime_split
from sklearn.metrics import roc_auc_score

import transferkit as tk

SINGLE_LABEL_ROWS: dict[str, dict[str, Any]] = {
    "none": {},
    "label_smoothing=0.1": {"regularization": tk.Regularization(label_smoothing=0.1)},
    "ema=0.99": {"regularization": tk.Regularization(ema=0.99)},
    "mixup=0.2": {"regularization": tk.Regularization(mixup=0.2)},
    "soup=3": {"regularization": tk.Regularization(soup=3)},
}
MULTI_LABEL_ROWS: dict[str, dict[str, Any]] = {
    f"{pooling}/{loss}": {"pooling": pooling, "loss": loss}
    for pooling, loss in [
        ("avg", "crossentropy"),
        ("max", "crossentropy"),
        ("avgmax", "crossentropy"),
        ("avg", "focal"),
        ("avg", "asymmetric"),
        ("avgmax", "focal"),
        ("avgmax", "asymmetric"),
    ]
}


def run_row(
    args: argparse.Namespace, row: dict[str, Any], data: dict[str, Any], seed: int
) -> dict[str, Any]:
    """One head stage on a fresh classifier; its test score and time."""
    keras.utils.set_random_seed(seed)
    build = {key: row[key] for key in ("pooling", "loss") if key in row}
    train, validation, test = data["train"], data["validation"], data["test"]
    clf = tk.TransferClassifier(
        "mobilenet_v2", num_classes=5, image_size=test[0].shape[1:3], weights=args.weights,
        augmentation=None, multi_label=data["multi_label"], **build,
    )  # fmt: skip
    started = time.perf_counter()
    clf.fit_head(
        train, validation_data=validation, epochs=args.epochs, learning_rate=args.learning_rate,
        schedule="cosine", early_stopping=10, batch_size=16, verbose=0,
        regularization=row.get("regularization"),
    )  # fmt: skip
    seconds = time.perf_counter() - started
    logits = clf.model.predict(test[0], batch_size=256, verbose=0)
    if data["multi_label"]:
        score = float(roc_auc_score(test[1], logits, average="macro"))
    else:
        score = float(np.mean(np.argmax(logits, -1) == test[1]))
    return {"seed": seed, "score": score, "seconds": seconds, "epochs": len(clf.history.epochs)}


def split(args: argparse.Namespace, seed: int) -> dict[str, Any]:
    """The seed's training, validation (20% of training) and test images."""
    regime = REGIMES[args.regime]
    (images, labels), test = regime_split(make_task(regime.task), regime, seed)
    if regime.multi_label:
        (images, labels), _ = compose_pairs((images, labels), max(len(labels) // 2, 20), seed)
        test, _ = compose_pairs(test, len(test[1]), seed + 1000)
    held = len(labels) // 5
    return {
        "train": (images[held:], labels[held:]),
        "validation": (images[:held], labels[:held]),
        "test": test,
        "multi_label": regime.multi_label,
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--regime", choices=sorted(REGIMES), default="digits-10")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=60)
    parser.add_argument("--learning-rate", type=float, default=3e-3)
    parser.add_argument("--weights", default=None, help="pretrained digits weights (.h5)")
    parser.add_argument("--output", default=None, help="write the results here (JSON)")
    args = parser.parse_args(argv)
    if args.weights is None:
        args.weights = os.path.join(tempfile.mkdtemp(), "digits.weights.h5")
        task = make_task("digits")
        pretrain_backbone(
            "mobilenet_v2", task.source, args.weights, epochs=task.pretrain_epochs,
            learning_rate=1e-3,
        )  # fmt: skip
    rows = MULTI_LABEL_ROWS if REGIMES[args.regime].multi_label else SINGLE_LABEL_ROWS
    results: dict[str, list[dict[str, Any]]] = {name: [] for name in rows}
    for seed in args.seeds:
        data = split(args, seed)
        for name, row in rows.items():
            results[name].append(run_row(args, row, data, seed))
            print(f"{args.regime} {name} seed {seed}: {results[name][-1]}", flush=True)
    print(f"\n{args.regime}: mean test score over seeds {args.seeds} (seconds per run)")
    for name, runs in results.items():
        scores = [run["score"] for run in runs]
        seconds = np.mean([run["seconds"] for run in runs])
        print(f"  {name:<24} {np.mean(scores):.3f} +- {np.std(scores):.3f}  ({seconds:.0f} s)")
    report = {"args": {k: v for k, v in vars(args).items()}, "results": results}
    if args.output:
        with open(args.output, "w") as file:
            json.dump(report, file, indent=1)
    return report


if __name__ == "__main__":
    main()
