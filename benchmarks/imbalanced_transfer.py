"""Class weights on an imbalanced transfer task: does class_weight="balanced" help the rare class?

The task ships offline, built from scikit-learn's bundled handwritten digits
(``load_digits``: 1,797 images of 8x8 pixels):

1. **Pretraining.** A small convolutional backbone (registered here as ``digits_cnn``, a
   plugin-style :class:`transferkit.Backbone`) is trained with plain Keras on digits 0-4,
   BatchNormalization statistics included, and its weights are saved: the stand-in for
   pretrained weights.
2. **Transfer, 10:1 imbalanced.** A :class:`transferkit.TransferClassifier` on those weights
   learns digits 5-9. One digit is the minority class: 10 training images, against 100 for
   each of the other four (10:1). Every other 5-9 image is the test set. Each of the five
   digits takes its turn as the minority, for each seed.
3. For each draw, two classifiers from the same weights train their head the same way
   (``fit_head``, cached features, Adam) with ``class_weight=None`` and with
   ``class_weight="balanced"``; the test set gives the minority class's recall, the mean
   recall of the four majority classes, and the accuracy (on a test set where the minority
   digit has about 170 images and each other digit about 80).

Run ``python benchmarks/imbalanced_transfer.py --output results.json`` (about ten minutes on
two busy CPU cores, one of pretraining). See ``docs/howto/multi_label.rst`` for the results.
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
from sklearn.datasets import load_digits

import transferkit as tk

BACKBONE = "digits_cnn"


def digits_cnn(
    include_top: bool = False, weights: str | None = None, input_shape: Any = (32, 32, 3)
) -> keras.Model:
    """A small convolutional backbone with BatchNormalization (headless)."""
    del include_top, weights  # transferkit loads a weights file itself
    inputs = keras.Input(input_shape)
    x = inputs
    for i, filters in enumerate((16, 32, 64)):
        x = keras.layers.Conv2D(filters, 3, padding="same", name=f"conv{i}")(x)
        x = keras.layers.BatchNormalization(momentum=0.9, name=f"bn{i}")(x)
        x = keras.layers.ReLU(name=f"relu{i}")(x)
        x = keras.layers.MaxPooling2D(name=f"pool{i}")(x)
    return keras.Model(inputs, x, name=BACKBONE)


def register() -> None:
    """Registers ``digits_cnn`` (once per process)."""
    if BACKBONE not in tk.list_backbones(BACKBONE):
        tk.register_backbone(
            tk.Backbone(
                name=BACKBONE,
                constructor=digits_cnn,
                preprocessing="tf",
                default_image_size=32,
                feature_channels=64,
                family="benchmark",
                imagenet_weights=False,
            )
        )


def digit_images(digits: range, size: int) -> tuple[np.ndarray, np.ndarray]:
    """The images of ``digits`` as RGB pixels (0-255) of ``size``, labels counted from 0."""
    data = load_digits()
    keep = np.isin(data.target, list(digits))
    images = data.images[keep].astype("float32")[..., None] * (255.0 / 16.0)
    images = tf.image.resize(images, (size, size), method="bilinear").numpy()
    labels = (data.target[keep] - digits.start).astype("int32")
    return np.repeat(np.clip(images, 0, 255), 3, axis=-1), labels


def pretrain(size: int, epochs: int, path: str) -> float:
    """Trains the backbone on digits 0-4 with plain Keras; returns held-out accuracy."""
    images, labels = digit_images(range(5), size)
    order = np.random.default_rng(0).permutation(len(labels))
    held_out, train = order[:150], order[150:]
    keras.utils.set_random_seed(0)
    backbone = digits_cnn(input_shape=(size, size, 3))
    inputs = keras.Input((size, size, 3))
    x = keras.layers.Rescaling(1 / 127.5, offset=-1)(inputs)  # the "tf" preprocessing
    x = keras.layers.GlobalAveragePooling2D()(backbone(x))
    model = keras.Model(inputs, keras.layers.Dense(5)(x))
    model.compile(
        keras.optimizers.Adam(1e-3),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    model.fit(images[train], labels[train], epochs=epochs, batch_size=32, verbose=0)
    backbone.save_weights(path)
    return float(model.evaluate(images[held_out], labels[held_out], verbose=0)[1])


def imbalanced_split(
    labels: np.ndarray, minority: int, majority_count: int, minority_count: int, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Training rows (``minority_count`` of the minority class, ``majority_count`` of the
    others, drawn at random) and the test rows (all the rest)."""
    rng = np.random.default_rng(seed)
    train = []
    for label in np.unique(labels):
        count = minority_count if label == minority else majority_count
        train.extend(rng.permutation(np.flatnonzero(labels == label))[:count])
    train_rows = np.sort(np.array(train))
    return train_rows, np.setdiff1d(np.arange(len(labels)), train_rows)


def measure(
    args: argparse.Namespace,
    images: np.ndarray,
    labels: np.ndarray,
    minority: int,
    seed: int,
    class_weight: str | None,
) -> dict[str, float]:
    """Trains one head and reports recalls on the test set."""
    train, test = imbalanced_split(labels, minority, args.majority, args.minority, seed)
    keras.utils.set_random_seed(seed)
    clf = tk.TransferClassifier(
        BACKBONE,
        num_classes=5,
        image_size=args.image_size,
        weights=args.weights,
        augmentation=None,  # flips and rotations change digits
    )
    clf.fit_head(
        (images[train], labels[train]),
        epochs=args.epochs,
        learning_rate=args.learning_rate,
        class_weight=class_weight,
        verbose=0,
    )
    predicted = np.argmax(clf.predict(images[test], batch_size=256), axis=-1)
    truth = labels[test]
    recalls = [float(np.mean(predicted[truth == k] == k)) for k in range(5)]
    return {
        "minority_recall": recalls[minority],
        "majority_recall": float(np.mean([r for k, r in enumerate(recalls) if k != minority])),
        "accuracy": float(np.mean(predicted == truth)),
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--pretrain-epochs", type=int, default=12)
    parser.add_argument("--weights", default=None, help="reuse pretrained backbone weights")
    parser.add_argument("--majority", type=int, default=100, help="training images per class")
    parser.add_argument("--minority", type=int, default=10, help="minority training images")
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--learning-rate", type=float, default=1e-2)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--output", default=None, help="write the results here as JSON")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    register()
    results: dict[str, Any] = {
        "settings": {k: v for k, v in vars(args).items() if k != "output"},
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
    }
    with tempfile.TemporaryDirectory() as folder:
        if args.weights is None:
            args.weights = os.path.join(folder, "digits_cnn.weights.h5")
            start = time.perf_counter()
            results["pretrain_accuracy"] = pretrain(
                args.image_size, args.pretrain_epochs, args.weights
            )
            print(
                f"pretrained on digits 0-4: held-out accuracy "
                f"{results['pretrain_accuracy']:.3f} ({time.perf_counter() - start:.0f} s)"
            )
        images, labels = digit_images(range(5, 10), args.image_size)
        runs = []
        for seed in args.seeds:
            for minority in range(5):
                row: dict[str, Any] = {"seed": seed, "minority_digit": minority + 5}
                for class_weight in (None, "balanced"):
                    row[str(class_weight)] = measure(
                        args, images, labels, minority, seed, class_weight
                    )
                runs.append(row)
                print(
                    f"seed {seed}, minority digit {minority + 5}: minority recall "
                    f"{row['None']['minority_recall']:.3f} -> "
                    f"{row['balanced']['minority_recall']:.3f}"
                )
    results["runs"] = runs
    for setting in ("None", "balanced"):
        results[f"mean_{setting}"] = {
            metric: float(np.mean([run[setting][metric] for run in runs]))
            for metric in ("minority_recall", "majority_recall", "accuracy")
        }
    results["balanced_raised_minority_recall"] = sum(
        run["balanced"]["minority_recall"] > run["None"]["minority_recall"] for run in runs
    )
    print(json.dumps({k: v for k, v in results.items() if k != "runs"}, indent=1))
    if args.output:
        with open(args.output, "w") as file:
            json.dump(results, file, indent=1)
    return results


if __name__ == "__main__":
    main()
