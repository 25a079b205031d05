"""Test-time augmentation against plain prediction, on the digits transfer task.

Reuses the digits task of ``quality_tasks.py`` (``transfer_quality.py``'s): a backbone
pretrained on digits 0-4 from scikit-learn's bundled digits, transferred to digits 5-9 with 100
training images per class; nothing is downloaded. For each seed, one classifier is trained
(head, then the whole backbone fine-tuned, BatchNormalization frozen) and its test set is
predicted with each ``tta`` setting through :func:`transferkit.interpret.interpret`: accuracy,
loss and prediction time per setting (after one untimed pass that traces the batch shapes).

Handwritten digits are not symmetric under a horizontal flip (a mirrored 2 is no 2), so
this task is a hard case for the flip views; crops keep the digit's shape.

    python benchmarks/tta.py --output benchmarks/results/tta.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras
import numpy as np
import tensorflow as tf
from quality_tasks import digit_images, pretrain, transfer_split

import transferkit as tk
from transferkit.interpret import interpret


def train(args: argparse.Namespace, weights: str, train_set: Any, seed: int) -> Any:
    keras.utils.set_random_seed(seed)
    clf = tk.TransferClassifier(
        args.backbone,
        num_classes=5,
        image_size=args.image_size,
        weights=weights,
        augmentation=None,
    )
    clf.fit_head(train_set, epochs=args.head_epochs, learning_rate=args.head_lr, verbose=0)
    if args.tune_epochs:
        clf.unfreeze(None)
        clf.fine_tune(
            train_set,
            epochs=args.tune_epochs,
            optimizer=keras.optimizers.Adam(args.tune_lr),
            verbose=0,
        )
    return clf


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", default="mobilenet_v2")
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--weights", default=None, help="pretrained backbone weights to reuse")
    parser.add_argument("--pretrain-epochs", type=int, default=15)
    parser.add_argument("--pretrain-lr", type=float, default=1e-3)
    parser.add_argument("--per-class", type=int, default=100)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--head-epochs", type=int, default=30)
    parser.add_argument("--head-lr", type=float, default=3e-3)
    parser.add_argument("--tune-epochs", type=int, default=10)
    parser.add_argument("--tune-lr", type=float, default=1e-4)
    parser.add_argument("--views", type=int, nargs="+", default=[1, 2, 3, 4, 12])
    parser.add_argument("--output", default=None, help="write the results here as JSON")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    with tempfile.TemporaryDirectory() as folder:
        weights = args.weights
        pretraining = None
        if weights is None:
            weights = os.path.join(folder, "backbone.weights.h5")
            pretraining = pretrain(args, weights)
            print("pretraining", json.dumps(pretraining), flush=True)
        images, labels = digit_images(range(5, 10), args.image_size)
        runs = []
        for seed in args.seeds:
            train_set, (test_x, test_y) = transfer_split(images, labels, args.per_class, seed)
            clf = train(args, weights, train_set, seed)
            for views in args.views:
                interpret(clf, (test_x, test_y), tta=views)  # traces the batch shapes first
                started = time.perf_counter()
                result = interpret(clf, (test_x, test_y), tta=views)
                seconds = time.perf_counter() - started
                runs.append(
                    {
                        "seed": seed,
                        "views": views,
                        "accuracy": result.accuracy,
                        "loss": result.loss,
                        "seconds": seconds,
                        "test_images": len(test_y),
                    }
                )
                print(json.dumps(runs[-1]), flush=True)
    summary = {}
    for views in args.views:
        rows = [r for r in runs if r["views"] == views]
        summary[str(views)] = {
            key: float(np.mean([r[key] for r in rows])) for key in ("accuracy", "loss", "seconds")
        }
        summary[str(views)]["accuracy_std"] = float(np.std([r["accuracy"] for r in rows]))
    result = {
        "settings": vars(args),
        "pretraining": pretraining,
        "runs": runs,
        "mean_by_views": summary,
        "machine": {
            "platform": platform.platform(),
            "processor": platform.processor(),
            "cpus": os.cpu_count(),
            "tensorflow": tf.__version__,
        },
    }
    print(json.dumps(summary, indent=2))
    if args.output:
        with open(args.output, "w") as file:
            json.dump(result, file, indent=2)
    return result


if __name__ == "__main__":
    main()
