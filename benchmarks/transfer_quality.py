"""Transfer quality on a real task that ships offline: handwritten digits 0-4 → 5-9.

The task is built from scikit-learn's bundled handwritten digits (``load_digits``: 1,797
images of 8x8 pixels, 0-16): nothing is downloaded.

1. **Pretraining.** A registry backbone (MobileNetV2 by default) with ``weights=None`` is
   trained on digits 0-4 (the whole backbone, BatchNormalization included), and its
   BatchNormalization statistics are then set from the pretraining images, so that the
   backbone is sound in inference mode, as pretrained weights are. Its weights are saved with
   ``clf.backbone.save_weights`` and used by every classifier below as ``weights=<path>``.
   The pretraining accuracy (on held-out 0-4 images, inference mode) is reported.
2. **Transfer** to digits 5-9 (labels 0-4): for each seed, 100 training images per class,
   drawn at random; every other 5-9 image is the test set (about 396). Images are upsampled
   to the image size (bilinear), made RGB, with pixels in 0-255 as transferkit expects.
   Every method sees the same 500 training images and nothing else: the recipe and the
   ceilings train on all 500 (they use no validation data); ``fit()`` gets the 500 without
   ``validation_data`` and splits its own validation set off them. No augmentation (flips
   and rotations change digits).

Methods, each on a fresh classifier, test accuracy and wall time per seed:

* ``recipe``: the tutorial's settings: ``fit_head`` (Adam 1e-4, 10 epochs), unfreeze from the
  recipe's fraction of the layers (100 of MobileNetV2's 154), ``fine_tune`` (RMSprop 1e-5,
  10 epochs).
* ``fit``: ``clf.fit(images, labels)`` at its defaults.
* ``linear_head`` ceiling: the head alone, a sweep of Adam rates x epochs; the best mean
  test accuracy (chosen on the test set, so an upper bound for a head).
* ``full_fine_tune`` ceiling: the best linear head, then the whole backbone unfrozen
  (``unfreeze(None)``, BatchNormalization frozen) and fine-tuned with Adam, a sweep of rates
  x epochs, the best mean test accuracy (also chosen on the test set).

See ``benchmarks/README.md`` and ``docs/transfer_quality.rst``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
import warnings
from collections.abc import Callable
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras
import numpy as np
import tensorflow as tf
from sklearn.datasets import load_digits

import transferkit as tk
from transferkit.backbones.freezing import batch_norm_layers

Arrays = tuple[np.ndarray, np.ndarray]
RECIPE_FRACTION = 100 / 154  # the recipe unfreezes MobileNetV2 from layer 100 of 154


# ---------------------------------------------------------------------- data


def digit_images(classes: range, size: int) -> Arrays:
    """The digits of ``classes`` as RGB images of ``size`` pixels (0-255), labels from 0."""
    digits = load_digits()
    keep = np.isin(digits.target, list(classes))
    images = digits.images[keep].astype("float32")[..., None] * (255.0 / 16.0)
    images = tf.image.resize(images, (size, size), method="bilinear").numpy()
    labels = (digits.target[keep] - classes.start).astype("int32")
    return np.repeat(np.clip(images, 0, 255), 3, axis=-1), labels


def transfer_split(
    images: np.ndarray, labels: np.ndarray, per_class: int, seed: int
) -> tuple[Arrays, Arrays]:
    """``per_class`` training images of each class drawn at random; the rest is the test set."""
    rng = np.random.default_rng(seed)
    train = np.concatenate(
        [rng.permutation(np.flatnonzero(labels == c))[:per_class] for c in np.unique(labels)]
    )
    train = rng.permutation(train)
    test = np.setdiff1d(np.arange(len(labels)), train)
    return (images[train], labels[train]), (images[test], labels[test])


# ---------------------------------------------------------------------- pretraining


def pretrain(args: argparse.Namespace, path: str) -> dict[str, Any]:
    """Trains the backbone on digits 0-4 and saves its weights; returns its accuracy."""
    images, labels = digit_images(range(0, 5), args.image_size)
    rng = np.random.default_rng(1234)
    order = rng.permutation(len(labels))
    held_out, train = order[:200], order[200:]
    keras.utils.set_random_seed(1234)
    clf = tk.TransferClassifier(
        args.backbone,
        num_classes=5,
        image_size=args.image_size,
        weights=None,
        augmentation=None,
    )
    # Everything trains, BatchNormalization too: from random weights it must learn its
    # statistics (frozen at their initial values, a deep network's activations saturate).
    clf.backbone.trainable = True
    for layer in clf.backbone.layers:
        layer.trainable = True
    clf.model.compile(
        optimizer=keras.optimizers.Adam(args.pretrain_lr),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    started = time.perf_counter()
    history = clf.model.fit(
        images[train], labels[train], epochs=args.pretrain_epochs, batch_size=32, verbose=0
    )
    # A few hundred steps leave the moving statistics far from the batch statistics the
    # network was trained with; set them from all training images at once.
    layers = batch_norm_layers(clf.backbone)
    momentums = [layer.momentum for layer in layers]
    for layer in layers:
        layer.momentum = 0.0
    clf.model(images[train], training=True)
    for layer, momentum in zip(layers, momentums, strict=True):
        layer.momentum = momentum
    seconds = time.perf_counter() - started
    _, accuracy = clf.model.evaluate(images[held_out], labels[held_out], verbose=0)
    clf.backbone.save_weights(path)
    return {
        "epochs": args.pretrain_epochs,
        "learning_rate": args.pretrain_lr,
        "train_accuracy": float(history.history["accuracy"][-1]),
        "held_out_accuracy": float(accuracy),
        "held_out_images": len(held_out),
        "seconds": seconds,
    }


# ---------------------------------------------------------------------- methods


class TestAccuracyAt(keras.callbacks.Callback):  # type: ignore[misc]
    """Evaluates the full model on the test set at the end of the given global epochs."""

    def __init__(self, test: Arrays, epochs: list[int]) -> None:
        super().__init__()
        self.test, self.epochs = test, set(epochs)
        self.accuracy: dict[int, float] = {}

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        if epoch + 1 in self.epochs:
            self.accuracy[epoch + 1] = accuracy(self.model, self.test)


def accuracy(model: keras.Model, test: Arrays) -> float:
    logits = model.predict(test[0], batch_size=128, verbose=0)
    return float(np.mean(np.argmax(logits, -1) == test[1]))


def new_classifier(args: argparse.Namespace, seed: int) -> tk.TransferClassifier:
    keras.utils.set_random_seed(seed)
    return tk.TransferClassifier(
        args.backbone,
        num_classes=5,
        image_size=args.image_size,
        weights=args.weights,
        augmentation=None,
    )


def recipe(args: argparse.Namespace, train: Arrays, test: Arrays, seed: int) -> dict[str, Any]:
    clf = new_classifier(args, seed)
    started = time.perf_counter()
    clf.fit_head(train, epochs=10, verbose=0)
    head = accuracy(clf.model, test)
    layer = round(RECIPE_FRACTION * len(clf.backbone.layers))
    clf.unfreeze(layer)
    clf.fine_tune(train, epochs=10, verbose=0)
    seconds = time.perf_counter() - started
    return {
        "accuracy": accuracy(clf.model, test),
        "head_accuracy": head,
        "seconds": seconds,
        "unfreeze_from": layer,
    }


def fit_default(args: argparse.Namespace, train: Arrays, test: Arrays, seed: int) -> dict[str, Any]:
    clf = new_classifier(args, seed)
    started = time.perf_counter()
    clf.fit(train, verbose=0)  # type: ignore[attr-defined]
    seconds = time.perf_counter() - started
    result = {"accuracy": accuracy(clf.model, test), "seconds": seconds}
    decisions = getattr(clf.history, "decisions", None)
    if decisions is not None:
        result["decisions"] = decisions
    return result


def linear_head(args: argparse.Namespace, train: Arrays, test: Arrays, seed: int) -> dict[str, Any]:
    """Test accuracy of the head alone, per Adam rate, at each epoch count of the sweep."""
    results: dict[str, Any] = {}
    for rate in args.head_rates:
        clf = new_classifier(args, seed)
        probe = TestAccuracyAt(test, args.head_epochs)
        started = time.perf_counter()
        clf.fit_head(
            train, epochs=max(args.head_epochs), learning_rate=rate, callbacks=[probe], verbose=0
        )
        results[f"{rate:g}"] = {
            "accuracy": {str(e): a for e, a in probe.accuracy.items()},
            "seconds": time.perf_counter() - started,
        }
    return results


def full_fine_tune(
    args: argparse.Namespace, train: Arrays, test: Arrays, seed: int, head: tuple[float, int]
) -> dict[str, Any]:
    """The best head, then the whole backbone (BN frozen) with Adam, per rate and epochs."""
    results: dict[str, Any] = {}
    for rate in args.tune_rates:
        clf = new_classifier(args, seed)
        started = time.perf_counter()
        clf.fit_head(train, epochs=head[1], learning_rate=head[0], verbose=0)
        clf.unfreeze(None)
        start = clf.history.next_epoch
        probe = TestAccuracyAt(test, [start + e for e in args.tune_epochs])
        clf.fine_tune(
            train,
            epochs=max(args.tune_epochs),
            optimizer=keras.optimizers.Adam(rate),
            callbacks=[probe],
            verbose=0,
        )
        results[f"{rate:g}"] = {
            "accuracy": {str(e - start): a for e, a in probe.accuracy.items()},
            "seconds": time.perf_counter() - started,
        }
    return results


def best_of_sweep(per_seed: list[dict[str, Any]]) -> dict[str, Any]:
    """The (rate, epochs) with the best mean test accuracy over seeds."""
    table: dict[tuple[str, str], list[float]] = {}
    for result in per_seed:
        for rate, row in result.items():
            for epochs, value in row["accuracy"].items():
                table.setdefault((rate, epochs), []).append(value)
    (rate, epochs), values = max(table.items(), key=lambda item: np.mean(item[1]))
    return {
        "learning_rate": float(rate),
        "epochs": int(epochs),
        **summary(values),
        "all": {f"{r} x {e}": float(np.mean(v)) for (r, e), v in sorted(table.items())},
    }


def summary(values: list[float]) -> dict[str, Any]:
    return {
        "mean": float(np.mean(values)),
        "sd": float(np.std(values, ddof=1)) if len(values) > 1 else 0.0,
        "values": values,
    }


# ---------------------------------------------------------------------- main


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backbone", default="mobilenet_v2")
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--weights", default=None, help="pretrained backbone weights to reuse")
    parser.add_argument("--save-weights", default=None, help="keep the pretrained weights here")
    parser.add_argument("--pretrain-epochs", type=int, default=15)
    parser.add_argument("--pretrain-lr", type=float, default=1e-3)
    parser.add_argument("--per-class", type=int, default=100)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument(
        "--methods", nargs="+", default=["recipe", "fit", "linear_head", "full_fine_tune"]
    )
    parser.add_argument("--head-rates", type=float, nargs="+", default=[1e-3, 3e-3, 1e-2])
    parser.add_argument("--head-epochs", type=int, nargs="+", default=[10, 30, 60])
    parser.add_argument("--tune-rates", type=float, nargs="+", default=[3e-4, 1e-3])
    parser.add_argument("--tune-epochs", type=int, nargs="+", default=[4, 6, 8])
    parser.add_argument(
        "--ceiling-head-rate",
        type=float,
        default=1e-2,
        help="the head's Adam rate before the full fine-tune sweep",
    )
    parser.add_argument("--ceiling-head-epochs", type=int, default=10)
    parser.add_argument(
        "--plot", default=None, help="draw the learning-rate finder's sweep (seed 0's head) here"
    )
    parser.add_argument(
        "--merge",
        nargs="+",
        default=None,
        help="combine results files written by --output into --output",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="one seed, smaller sweeps: a smoke run of a few minutes",
    )
    parser.add_argument("--output", default=None, help="write the results here as JSON")
    args = parser.parse_args(argv)
    if args.quick:
        args.seeds = args.seeds[:1]
        args.head_rates, args.head_epochs = [1e-2], [10, 30]
        args.tune_rates, args.tune_epochs = [1e-3], [3, 6]
        args.pretrain_epochs = min(args.pretrain_epochs, 8)
    return args


METHODS: dict[str, Callable[..., dict[str, Any]]] = {"recipe": recipe, "fit": fit_default}


def merge(paths: list[str], output: str) -> None:
    """Combines results files of runs over different methods into one."""
    results: dict[str, Any] = {"merged_from": paths}
    for path in paths:
        with open(path, encoding="utf-8") as file:
            part = json.load(file)
        results["settings " + os.path.basename(path)] = part.pop("settings")
        results.update(part)
    with open(output, "w", encoding="utf-8") as file:
        json.dump(results, file, indent=2)
        file.write("\n")


def main(argv: list[str] | None = None) -> dict[str, Any] | None:
    args = parse_args(argv)
    if args.merge:
        merge(args.merge, args.output)
        return None
    warnings.filterwarnings("ignore", message="`shuffle=True` was passed")
    started = time.perf_counter()
    results: dict[str, Any] = {"settings": dict(vars(args))}
    with tempfile.TemporaryDirectory() as folder:
        if args.weights is None:
            args.weights = args.save_weights or os.path.join(folder, "backbone.weights.h5")
            results["pretraining"] = pretrain(args, args.weights)
            print("pretraining:", _short(results["pretraining"]))
        images, labels = digit_images(range(5, 10), args.image_size)
        splits = {seed: transfer_split(images, labels, args.per_class, seed) for seed in args.seeds}
        # Seed by seed, the methods alternating, so drift in machine load favours neither.
        timed = [name for name in ("recipe", "fit") if name in args.methods]
        rows: dict[str, list[dict[str, Any]]] = {name: [] for name in timed}
        for index, seed in enumerate(args.seeds):
            for name in timed if index % 2 == 0 else timed[::-1]:
                rows[name].append(METHODS[name](args, *splits[seed], seed))
                print(f"{name} seed {seed}:", _short(rows[name][-1]), flush=True)
        for name in timed:
            results[name] = {
                **summary([row["accuracy"] for row in rows[name]]),
                "seconds": summary([row["seconds"] for row in rows[name]]),
                "runs": rows[name],
            }
        if args.plot:
            clf = new_classifier(args, args.seeds[0])
            finder = clf.find_learning_rate(splits[args.seeds[0]][0], stage="head")
            finder.plot(args.plot)
            results["finder"] = {"suggestion": finder.suggestion, "plot": args.plot}
        head = (args.ceiling_head_rate, args.ceiling_head_epochs)
        if "linear_head" in args.methods:
            sweep = [linear_head(args, *splits[seed], seed) for seed in args.seeds]
            results["linear_head"] = {**best_of_sweep(sweep), "runs": sweep}
            print("linear_head:", _short(results["linear_head"]))
        if "full_fine_tune" in args.methods:
            sweep = [full_fine_tune(args, *splits[seed], seed, head) for seed in args.seeds]
            results["full_fine_tune"] = {**best_of_sweep(sweep), "head": head, "runs": sweep}
            print("full_fine_tune:", _short(results["full_fine_tune"]))
    results["test_images"] = len(splits[args.seeds[0]][1][1])
    results["machine"] = {
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "transferkit": tk.__version__,
    }
    results["total_seconds"] = time.perf_counter() - started
    print(f"total {results['total_seconds']:.0f} s")
    if args.output:
        with open(args.output, "w", encoding="utf-8") as file:
            json.dump(results, file, indent=2)
            file.write("\n")
    return results


def _short(result: dict[str, Any]) -> str:
    return json.dumps(
        {k: v for k, v in result.items() if k not in ("runs", "all", "values")}, default=str
    )


if __name__ == "__main__":
    main()
