"""transferkit against the reference recipe written in plain Keras, side by side in one process.

Times, on the same data and the same backbone weights:

* 10-epoch head training: the recipe (augmentation → preprocessing → frozen backbone →
  pooling → dropout → dense, Adam 1e-4, validation every epoch) against
  ``TransferClassifier.fit_head`` at its defaults, with augmentation and without;
* ``TransferClassifier.predict`` against ``model.predict`` on the same model;
* one fine-tuning epoch (unfrozen from layer 100, RMSprop 1e-5) against plain Keras.

Prints the ratios and each side's validation accuracy, and writes them as JSON. See
``benchmarks/README.md`` for how to run it and ``docs/performance.rst`` for results.

Nothing is downloaded. Unless ``--weights`` names a backbone weights file, a stand-in for
pretrained weights is made first (and can be kept with ``--save-weights``): the randomly
initialized backbone trained briefly to tell four colours apart at a small size. Random
weights alone give features from which the benchmark's task (red or blue?) is barely
learnable, and accuracy would say nothing.
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
from functools import partial
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras
import numpy as np
import tensorflow as tf

import transferkit as tk


def synthetic_images(
    count: int, size: int, seed: int, colours: int = 2
) -> tuple[np.ndarray, np.ndarray]:
    """Noisy images whose class is a colour cast, with a bright patch placed at random.

    Class ``c`` brightens channel ``c`` (red, blue for two classes; red, green, blue and
    none for four); the patch makes flips and rotations change the image.
    """
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, colours, count).astype(np.int32)
    channels = [0, 2] if colours == 2 else [0, 1, 2]
    images = rng.normal(120, 40, size=(count, size, size, 3))
    for label, channel in enumerate(channels):
        images[labels == label, :, :, channel] += 45
    for image in images:
        top, left = rng.integers(0, size // 2, 2)
        image[top : top + size // 3, left : left + size // 4] += 60
    return np.clip(images, 0, 255).astype(np.uint8), labels


def stand_in_weights(args: argparse.Namespace, spec: tk.Backbone, path: str) -> None:
    """Trains the random backbone briefly on four colour classes and saves its weights.

    Trains at ``--pretrain-size`` (cheap; the convolution weights fit any size), then sets
    every BatchNormalization's moving statistics to those of a batch at the benchmark's
    size, so the backbone is sound in inference mode, as pretrained weights are.
    """
    size = args.pretrain_size
    images, labels = synthetic_images(256, size, args.seed + 2, colours=4)
    base = spec.constructor(include_top=False, weights=None, input_shape=(size, size, 3))
    inputs = keras.Input((size, size, 3))
    x = keras.layers.GlobalAveragePooling2D()(base(preprocessing(spec)(inputs)))
    model = keras.Model(inputs, keras.layers.Dense(4)(x))
    model.compile(
        optimizer=keras.optimizers.Adam(1e-3),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    model.fit(images, labels, epochs=args.pretrain_epochs, batch_size=32, verbose=0)

    size = args.image_size
    target = spec.constructor(include_top=False, weights=None, input_shape=(size, size, 3))
    target.set_weights(base.get_weights())
    images, _ = synthetic_images(128, size, args.seed + 3, colours=4)
    batch_norms = [
        layer for layer in target.layers if isinstance(layer, keras.layers.BatchNormalization)
    ]
    momentums = [layer.momentum for layer in batch_norms]
    for layer in batch_norms:
        layer.momentum = 0.0  # the moving statistics become this batch's statistics
    target(preprocessing(spec)(images.astype("float32")), training=True)
    for layer, momentum in zip(batch_norms, momentums, strict=True):
        layer.momentum = momentum
    target.save_weights(path)


def datasets(
    train: tuple[np.ndarray, np.ndarray], val: tuple[np.ndarray, np.ndarray], batch_size: int
) -> tuple[tf.data.Dataset, tf.data.Dataset]:
    """The recipe's pipelines: shuffled training batches, validation batches, prefetched."""
    train_ds = tf.data.Dataset.from_tensor_slices(train).shuffle(len(train[0]))
    val_ds = tf.data.Dataset.from_tensor_slices(val)
    return (
        train_ds.batch(batch_size).prefetch(tf.data.AUTOTUNE),
        val_ds.batch(batch_size).prefetch(tf.data.AUTOTUNE),
    )


def preprocessing(spec: tk.Backbone) -> keras.layers.Layer:
    if spec.preprocessing == "tf":  # mobilenet_v2.preprocess_input, as a layer
        return keras.layers.Rescaling(1 / 127.5, offset=-1)
    return spec.preprocessing_layer()  # the same arithmetic for caffe/torch backbones


def plain_recipe(
    spec: tk.Backbone, size: int, weights: str, augment: bool
) -> tuple[keras.Model, keras.Model]:
    """The tutorial's recipe in plain Keras, compiled for the head stage."""
    base = spec.constructor(include_top=False, weights=weights, input_shape=(size, size, 3))
    base.trainable = False
    inputs = keras.Input((size, size, 3))
    x = inputs
    if augment:
        x = keras.Sequential(
            [keras.layers.RandomFlip("horizontal"), keras.layers.RandomRotation(0.2)]
        )(x)
    x = preprocessing(spec)(x)
    x = base(x, training=False)
    x = keras.layers.GlobalAveragePooling2D()(x)
    x = keras.layers.Dropout(0.2)(x)
    outputs = keras.layers.Dense(1)(x)
    model = keras.Model(inputs, outputs)
    compile_recipe(model, keras.optimizers.Adam(1e-4))
    return model, base


def compile_recipe(model: keras.Model, optimizer: keras.optimizers.Optimizer) -> None:
    model.compile(
        optimizer=optimizer,
        loss=keras.losses.BinaryCrossentropy(from_logits=True),
        metrics=[keras.metrics.BinaryAccuracy(threshold=0.0, name="accuracy")],
    )


def timed(function: Callable[[], Any]) -> tuple[float, Any]:
    start = time.perf_counter()
    result = function()
    return time.perf_counter() - start, result


def head_training(
    args: argparse.Namespace,
    spec: tk.Backbone,
    train: tf.data.Dataset,
    val: tf.data.Dataset,
    *,
    augment: bool,
) -> tuple[dict[str, Any], tk.TransferClassifier, tuple[keras.Model, keras.Model]]:
    """Times both sides, on fresh models each repeat; the best time and the mean accuracy."""
    epochs = args.epochs
    seconds: dict[str, list[float]] = {"plain": [], "transferkit": []}
    accuracy: dict[str, list[float]] = {"plain": [], "transferkit": []}
    for repeat in range(args.head_repeats):
        clf = tk.TransferClassifier(
            spec,
            num_classes=2,
            image_size=args.image_size,
            weights=args.weights,
            augmentation="default" if augment else None,
        )
        plain, base = plain_recipe(spec, args.image_size, args.weights, augment)
        runs: dict[str, Callable[[], Any]] = {
            "plain": partial(plain.fit, train, validation_data=val, epochs=epochs, verbose=0),
            "transferkit": partial(
                clf.fit_head, train, validation_data=val, epochs=epochs, verbose=0
            ),
        }
        # Alternate which side goes first, so drift in machine load does not favour one.
        order = ["plain", "transferkit"] if (repeat + augment) % 2 else ["transferkit", "plain"]
        for side in order:
            elapsed, history = timed(runs[side])
            metrics = history.history if side == "plain" else history.metrics
            seconds[side].append(elapsed)
            accuracy[side].append(float(metrics["val_accuracy"][-1]))
    result: dict[str, Any] = {
        "plain_seconds": min(seconds["plain"]),
        "transferkit_seconds": min(seconds["transferkit"]),
        "speedup": min(seconds["plain"]) / min(seconds["transferkit"]),
        "plain_val_accuracy": float(np.mean(accuracy["plain"])),
        "transferkit_val_accuracy": float(np.mean(accuracy["transferkit"])),
        "all_seconds": seconds,
        "all_val_accuracy": accuracy,
    }
    if augment and args.full_pass:
        full = tk.TransferClassifier(
            spec, num_classes=2, image_size=args.image_size, weights=args.weights
        )
        result["transferkit_full_pass_seconds"], history = timed(
            lambda: full.fit_head(
                train, validation_data=val, epochs=epochs, verbose=0, cache_features=False
            )
        )
        result["transferkit_full_pass_val_accuracy"] = history.metrics["val_accuracy"][-1]
        result["full_pass_ratio"] = (
            result["transferkit_full_pass_seconds"] / result["plain_seconds"]
        )
    return result, clf, (plain, base)


def best_of(repeats: int, runs: dict[str, Callable[[], Any]]) -> dict[str, float]:
    """The fastest of ``repeats`` runs of each, interleaved, the order flipped every round."""
    best = dict.fromkeys(runs, float("inf"))
    names = list(runs)
    for repeat in range(repeats):
        for name in names if repeat % 2 == 0 else names[::-1]:
            best[name] = min(best[name], timed(runs[name])[0])
    return best


def prediction(
    args: argparse.Namespace, clf: tk.TransferClassifier, images: np.ndarray
) -> dict[str, Any]:
    size = args.batch_size
    runs = {
        "transferkit": lambda: clf.predict(images, batch_size=size),
        "keras": lambda: clf.model.predict(images, batch_size=size, verbose=0),
    }
    for run in runs.values():  # trace the predict function once, outside the timing
        run()
    best = best_of(args.predict_repeats, runs)
    return {
        "images": len(images),
        "transferkit_seconds": best["transferkit"],
        "keras_seconds": best["keras"],
        "transferkit_images_per_second": len(images) / best["transferkit"],
        "keras_images_per_second": len(images) / best["keras"],
        "ratio": best["transferkit"] / best["keras"],
    }


def fine_tuning(
    args: argparse.Namespace,
    clf: tk.TransferClassifier,
    plain: tuple[keras.Model, keras.Model],
    train: tf.data.Dataset,
    val: tf.data.Dataset,
) -> dict[str, Any]:
    model, base = plain
    clf.unfreeze(args.unfreeze_from)
    base.trainable = True
    for layer in base.layers[: args.unfreeze_from]:
        layer.trainable = False
    # As the recipe advises, and as Keras 3 needs (transferkit does it): BatchNormalization stays
    # in inference mode, so both sides run the same computation.
    for layer in base.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.trainable = False

    def plain_epoch() -> keras.callbacks.History:
        # The recipe recompiles once before fine-tuning; fine_tune() compiles at every call.
        compile_recipe(model, keras.optimizers.RMSprop(1e-5))
        return model.fit(train, validation_data=val, epochs=1, verbose=0)

    runs = {
        "transferkit": lambda: clf.fine_tune(train, validation_data=val, epochs=1, verbose=0),
        "plain": plain_epoch,
    }
    best = best_of(args.repeats, runs)
    return {
        "unfreeze_from": args.unfreeze_from,
        "transferkit_seconds": best["transferkit"],
        "plain_seconds": best["plain"],
        "ratio": best["transferkit"] / best["plain"],
        "transferkit_val_accuracy": clf.history.metrics["val_accuracy"][-1],
        "plain_val_accuracy": float(model.history.history["val_accuracy"][-1]),
    }


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backbone", default="mobilenet_v2")
    parser.add_argument(
        "--weights", default=None, help="a backbone weights file (default: make a stand-in)"
    )
    parser.add_argument("--save-weights", default=None, help="keep the stand-in weights here")
    parser.add_argument("--pretrain-size", type=int, default=64)
    parser.add_argument("--pretrain-epochs", type=int, default=2)
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--train-size", type=int, default=640)
    parser.add_argument("--val-size", type=int, default=320)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=3, help="best of N fine-tuning epochs")
    parser.add_argument("--predict-repeats", type=int, default=5, help="best of N predictions")
    parser.add_argument(
        "--head-repeats", type=int, default=1, help="best of N for the 10-epoch timings"
    )
    parser.add_argument("--unfreeze-from", type=int, default=100)
    parser.add_argument(
        "--full-pass",
        action="store_true",
        help="also time fit_head(cache_features=False), transferkit without the cache",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", default=None, help="write the results here as JSON")
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    # Keras warns that fit(shuffle=True) is ignored for a tf.data.Dataset: the plain side.
    warnings.filterwarnings("ignore", message="`shuffle=True` was passed")
    keras.utils.set_random_seed(args.seed)
    spec = tk.get_backbone(args.backbone)
    with tempfile.TemporaryDirectory() as folder:
        args.stand_in_weights = args.weights is None
        if args.stand_in_weights:
            args.weights = args.save_weights or os.path.join(folder, "backbone.weights.h5")
            started = time.perf_counter()
            stand_in_weights(args, spec, args.weights)
            print(f"stand-in backbone weights made in {time.perf_counter() - started:.0f} s")
        results = run(args, spec)
    report(results)
    if args.output:
        with open(args.output, "w", encoding="utf-8") as file:
            json.dump(results, file, indent=2)
            file.write("\n")


def run(args: argparse.Namespace, spec: tk.Backbone) -> dict[str, Any]:
    train_arrays = synthetic_images(args.train_size, args.image_size, args.seed)
    val_arrays = synthetic_images(args.val_size, args.image_size, args.seed + 1)
    train, val = datasets(train_arrays, val_arrays, args.batch_size)

    started = time.perf_counter()
    with_augmentation, clf, plain = head_training(args, spec, train, val, augment=True)
    without_augmentation, _, _ = head_training(args, spec, train, val, augment=False)
    predict = prediction(args, clf, np.concatenate([train_arrays[0], val_arrays[0]]))
    fine_tune = fine_tuning(args, clf, plain, train, val)
    results = {
        "settings": {
            **{key: value for key, value in vars(args).items() if key != "output"},
            "weights": "stand-in" if args.stand_in_weights else args.weights,
        },
        "machine": {
            "platform": platform.platform(),
            "processor": platform.processor(),
            "cpu_count": os.cpu_count(),
            "devices": [device.device_type for device in tf.config.list_physical_devices()],
            "tensorflow": tf.__version__,
            "keras": keras.__version__,
            "transferkit": tk.__version__,
        },
        "fit_head": {
            "augmentation": with_augmentation,
            "no_augmentation": without_augmentation,
        },
        "predict": predict,
        "fine_tune_epoch": fine_tune,
        "total_seconds": time.perf_counter() - started,
    }
    return results


def report(results: dict[str, Any]) -> None:
    settings = results["settings"]
    print(
        f"{settings['backbone']} {settings['image_size']}px, {settings['train_size']} train / "
        f"{settings['val_size']} validation images, weights={settings['weights']}, "
        f"{results['machine']['cpu_count']} CPUs {results['machine']['devices']}"
    )
    for name, row in results["fit_head"].items():
        print(
            f"fit_head, {settings['epochs']} epochs, {name}: plain {row['plain_seconds']:.1f} s, "
            f"transferkit {row['transferkit_seconds']:.1f} s → {row['speedup']:.1f}x faster; "
            f"val accuracy plain {row['plain_val_accuracy']:.3f}, "
            f"transferkit {row['transferkit_val_accuracy']:.3f}"
        )
        if "full_pass_ratio" in row:
            print(
                f"  transferkit without the cache: {row['transferkit_full_pass_seconds']:.1f} s "
                f"({row['full_pass_ratio']:.2f}x the plain time), val accuracy "
                f"{row['transferkit_full_pass_val_accuracy']:.3f}"
            )
    predict = results["predict"]
    print(
        f"predict, {predict['images']} images: clf.predict {predict['transferkit_seconds']:.2f} s, "
        f"model.predict {predict['keras_seconds']:.2f} s → ratio {predict['ratio']:.3f}"
    )
    tune = results["fine_tune_epoch"]
    print(
        f"one fine_tune epoch from layer {tune['unfreeze_from']}: transferkit "
        f"{tune['transferkit_seconds']:.1f} s, plain {tune['plain_seconds']:.1f} s → ratio "
        f"{tune['ratio']:.3f}; val accuracy transferkit {tune['transferkit_val_accuracy']:.3f}, "
        f"plain {tune['plain_val_accuracy']:.3f}"
    )
    print(f"total {results['total_seconds']:.0f} s")


if __name__ == "__main__":
    main()
