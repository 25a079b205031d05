"""Full-integer TFLite against float TFLite: file size and accuracy on the digits transfer task.

Reuses the digits task of ``quality_tasks.py`` (``transfer_quality.py``'s): scikit-learn's
bundled digits (nothing is downloaded), upsampled to 32x32 RGB; a backbone pretrained on digits
0-4 and transferred to digits 5-9 with 100 training images per class. The pretraining is plain
Keras, as ``examples/digits.py`` does it: the backbone with its preprocessing in front and a
throwaway head behind, everything trained, BatchNormalization included, whose statistics are
then set from the pretraining images. For each seed, one classifier is trained from those
weights (head, then the whole backbone fine-tuned, BatchNormalization frozen) and exported as:

* ``float``: ``format="tflite"``, float32 weights and activations;
* ``dynamic_range``: ``quantize="dynamic_range"``, int8 weights;
* ``int8``: ``quantize="int8"``, int8 weights and activations, calibrated on the training
  images (at most ``CALIBRATION_IMAGES`` of them); uint8 pixels in, float32 out;
* ``int8_integer_output``: the same with ``integer_output=True`` (uint8 probabilities).

Each file runs the test set (about 400 images) in ``tf.lite.Interpreter``: its accuracy, its
agreement with ``clf.predict``'s top class, the largest probability difference from
``predict``, its size and the time to run the test set (one thread, after a warm-up call).

    python benchmarks/int8_export.py --output benchmarks/results/int8-export-2cpu.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
import warnings
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras
import numpy as np
import tensorflow as tf
from quality_tasks import digit_images, transfer_split

import transferkit as tk
from transferkit.backbones.freezing import batch_norm_layers
from transferkit.export import export_classifier

VARIANTS: dict[str, dict[str, Any]] = {
    "float": {},
    "dynamic_range": {"quantize": "dynamic_range"},
    "int8": {"quantize": "int8"},
    "int8_integer_output": {"quantize": "int8", "integer_output": True},
}


def pretrain(args: argparse.Namespace, path: str) -> dict[str, Any]:
    """Trains the backbone on digits 0-4 in plain Keras and saves its weights."""
    images, labels = digit_images(range(0, 5), args.image_size)
    order = np.random.default_rng(1234).permutation(len(labels))
    held_out, train = order[:200], order[200:]
    keras.utils.set_random_seed(1234)
    spec = tk.get_backbone(args.backbone)
    backbone = spec.build((args.image_size, args.image_size), weights=None)
    inputs = keras.Input((args.image_size, args.image_size, 3))
    features = keras.layers.GlobalAveragePooling2D()(backbone(spec.preprocessing_layer()(inputs)))
    model = keras.Model(inputs, keras.layers.Dense(5)(features))
    model.compile(
        optimizer=keras.optimizers.Adam(args.pretrain_lr),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    started = time.perf_counter()
    history = model.fit(
        images[train], labels[train], epochs=args.pretrain_epochs, batch_size=32, verbose=0
    )
    # The moving statistics lag behind the batch statistics after a few hundred steps; set
    # them from all pretraining images at once, so that inference mode is sound.
    layers = batch_norm_layers(backbone)
    momentums = [layer.momentum for layer in layers]
    for layer in layers:
        layer.momentum = 0.0
    model(images[train], training=True)
    for layer, momentum in zip(layers, momentums, strict=True):
        layer.momentum = momentum
    seconds = time.perf_counter() - started
    _, accuracy = model.evaluate(images[held_out], labels[held_out], verbose=0)
    backbone.save_weights(path)
    return {
        "epochs": args.pretrain_epochs,
        "train_accuracy": float(history.history["accuracy"][-1]),
        "held_out_accuracy": float(accuracy),
        "seconds": seconds,
    }


def train(args: argparse.Namespace, weights: str, train_set: Any, seed: int) -> Any:
    keras.utils.set_random_seed(seed)
    clf = tk.TransferClassifier(
        args.backbone, num_classes=5, image_size=args.image_size, weights=weights,
        augmentation=None,
    )  # fmt: skip
    clf.fit_head(train_set, epochs=args.head_epochs, learning_rate=args.head_lr, verbose=0)
    clf.unfreeze(None)
    clf.fine_tune(
        train_set, epochs=args.tune_epochs, optimizer=keras.optimizers.Adam(args.tune_lr),
        verbose=0,
    )  # fmt: skip
    return clf


def run_tflite(path: str, images: np.ndarray) -> tuple[np.ndarray, float]:
    """The probabilities a TFLite file gives (dequantized when uint8) and the seconds taken."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tf.lite.Interpreter's deprecation notice
        interpreter = tf.lite.Interpreter(model_path=path, num_threads=1)
    runner = interpreter.get_signature_runner("serving_default")
    runner(images=images[:1])  # allocates and warms up
    started = time.perf_counter()
    output = runner(images=images)["probabilities"]
    seconds = time.perf_counter() - started
    if output.dtype == np.uint8:
        scale, zero_point = runner.get_output_details()["probabilities"]["quantization"]
        output = (output.astype(np.float32) - zero_point) * scale
    return output, seconds


def measure(
    clf: Any, train_set: Any, test: tuple[np.ndarray, np.ndarray], folder: str, seed: int
) -> list[dict[str, Any]]:
    expected = clf.predict(test[0], verbose=0)
    rows = [{"seed": seed, "variant": "keras", "accuracy": float(np.mean(
        expected.argmax(1) == test[1]))}]  # fmt: skip
    for name, options in VARIANTS.items():
        path = os.path.join(folder, f"{name}-{seed}.tflite")
        if options.get("quantize") == "int8":
            options = {**options, "representative_data": train_set[0]}
        started = time.perf_counter()
        export_classifier(clf, path, format="tflite", **options)
        export_seconds = time.perf_counter() - started
        probabilities, seconds = run_tflite(path, test[0])
        rows.append({
            "seed": seed,
            "variant": name,
            "accuracy": float(np.mean(probabilities.argmax(1) == test[1])),
            "top_class_agreement": float(np.mean(probabilities.argmax(1) == expected.argmax(1))),
            "max_probability_difference": float(np.abs(probabilities - expected).max()),
            "bytes": os.path.getsize(path),
            "export_seconds": export_seconds,
            "test_seconds": seconds,
            "test_images": len(test[1]),
        })  # fmt: skip
        print(json.dumps(rows[-1]), flush=True)
    return rows


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
    parser.add_argument("--output", default=None, help="write the results here as JSON")
    return parser.parse_args(argv)


def summarize(runs: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    summary = {}
    for variant in ["keras", *VARIANTS]:
        rows = [r for r in runs if r["variant"] == variant]
        keys = [k for k in rows[0] if k not in ("seed", "variant")]
        summary[variant] = {key: float(np.mean([r[key] for r in rows])) for key in keys}
        summary[variant]["accuracy_min"] = float(min(r["accuracy"] for r in rows))
    return summary


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    runs: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as folder:
        weights, pretraining = args.weights, None
        if weights is None:
            weights = os.path.join(folder, "backbone.weights.h5")
            pretraining = pretrain(args, weights)
            print("pretraining", json.dumps(pretraining), flush=True)
        images, labels = digit_images(range(5, 10), args.image_size)
        images = np.round(images).astype(np.uint8)  # what a served model is given
        for seed in args.seeds:
            train_set, test = transfer_split(images, labels, args.per_class, seed)
            clf = train(args, weights, train_set, seed)
            runs += measure(clf, train_set, test, folder, seed)
    result = {
        "settings": vars(args),
        "calibration_images": tk.export.CALIBRATION_IMAGES,
        "pretraining": pretraining,
        "runs": runs,
        "mean_by_variant": summarize(runs),
        "machine": {
            "platform": platform.platform(),
            "processor": platform.processor(),
            "cpus": os.cpu_count(),
            "tensorflow": tf.__version__,
        },
    }
    print(json.dumps(result["mean_by_variant"], indent=2))
    if args.output:
        temporary = f"{args.output}.partial"
        with open(temporary, "w") as file:
            json.dump(result, file, indent=2)
        os.replace(temporary, args.output)
    return result


if __name__ == "__main__":
    main()
