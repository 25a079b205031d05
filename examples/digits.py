"""The main job, offline: transfer learning on the handwritten digits that scikit-learn ships.

Nothing is downloaded: the images are scikit-learn's ``load_digits`` (1,797 digits of 8x8
pixels), made RGB and upsampled to 32x32.

1. **Pretraining, a stand-in for ImageNet weights.** A MobileNetV2 from random weights
   learns digits 0-4 in plain Keras, and its weights are saved with
   ``backbone.save_weights(...)``. Real work starts from ImageNet weights
   (``weights="imagenet"``, the default), which need a download; these play their part.
2. **Transfer to new classes,** digits 5-9: 100 training images per class; the other 5-9
   images (about 400) are the test set. Twice, each on a fresh classifier built with
   ``weights=<the pretrained file>``:

   * the recipe of TensorFlow's tutorial: ``fit_head`` (Adam 1e-4, 10 epochs),
     ``unfreeze(from_layer=100)``, ``fine_tune`` (RMSprop 1e-5, 10 epochs);
   * ``fit()``: one call at its defaults (it holds a fifth of the training images out
     for validation and picks its rates and epochs itself).

3. **Figures and the model** of the ``fit()`` classifier, in ``--output-dir``: the training
   curves, the confusion matrix and the highest-loss test images, Grad-CAM heatmaps, and the
   ``.keras`` file.

    python examples/digits.py                                  # about 3 minutes on 2 CPU cores
    python examples/digits.py --quick --output-dir /tmp/digits  # a smoke run of seconds

It needs scikit-learn and matplotlib: ``pip install -e ".[examples]"``.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's start-up chatter

import keras
import numpy as np
from sklearn.datasets import load_digits

import transferkit as tk

BACKBONE = "mobilenet_v2"
BACKBONE_KWARGS = {"alpha": float(__import__("os").environ.get("ALPHA", "1.0"))}
IMAGE_SIZE = 32  # MobileNetV2's smallest size: the 8x8 digits hold little more
UNFREEZE_FROM = 100  # of MobileNetV2's 154 layers, as in the recipe
# Grad-CAM's feature map. The backbone's own output is 1x1 at 32 pixels (one cell cannot
# show where), so the heatmaps come from the input of block 13, the last 2x2 map.
GRAD_CAM_LAYER = "block_13_expand_relu"
PRETRAIN_CLASSES = range(0, 5)
PRETRAIN_IMAGES = 672  # of the 901 digits 0-4
TRANSFER_CLASSES = range(5, 10)
SHOWN = 9  # images in the top-losses and Grad-CAM figures


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog="--quick: 20 training images per class, 3 pretraining epochs, one epoch per "
        "stage; every step runs, in seconds, but nothing worth keeping is learned.",
    )
    parser.add_argument("--output-dir", type=Path, default=Path("digits-output"))
    parser.add_argument(
        "--per-class", type=int, default=100, help="training images per class (default: 100)"
    )
    parser.add_argument(
        "--pretrain-epochs", type=int, default=15, help="epochs on digits 0-4 (default: 15)"
    )
    parser.add_argument(
        "--head-epochs", type=int, default=10, help="the recipe's head epochs (default: 10)"
    )
    parser.add_argument(
        "--fine-tune-epochs",
        type=int,
        default=10,
        help="the recipe's fine-tuning epochs (default: 10)",
    )
    parser.add_argument(
        "--fit-epochs",
        type=int,
        default=None,
        help="fit()'s fine-tuning epochs (default: fit()'s own budget)",
    )
    parser.add_argument(
        "--weights",
        type=Path,
        default=None,
        help="a MobileNetV2 weights file (save_weights) to start from instead of pretraining, "
        "such as the pretrained_0-4.weights.h5 of an earlier run",
    )
    parser.add_argument("--quick", action="store_true", help="small settings: a smoke run")
    parser.add_argument("--seed", type=int, default=0, help="(default: 0)")
    args = parser.parse_args(argv)
    if args.quick:
        args.per_class = min(args.per_class, 20)
        args.pretrain_epochs = min(args.pretrain_epochs, 3)
        args.head_epochs = args.fine_tune_epochs = args.fit_epochs = 1
    return args


# ---------------------------------------------------------------------- data


def digit_images(classes: range) -> tuple[np.ndarray, np.ndarray]:
    """The digits of ``classes`` as raw RGB pixels (0-255) of 32x32, labels counted from 0."""
    digits = load_digits()
    keep = np.isin(digits.target, list(classes))
    gray = digits.images[keep].astype("float32")[..., None] * (255.0 / 16.0)  # 0-16 → 0-255
    large = keras.ops.image.resize(gray, (IMAGE_SIZE, IMAGE_SIZE), interpolation="bilinear")
    images = np.repeat(np.clip(keras.ops.convert_to_numpy(large), 0, 255), 3, axis=-1)
    return images, (digits.target[keep] - classes.start).astype("int32")


def split(labels: np.ndarray, per_class: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices of ``per_class`` images of each class drawn at random, and of all the others."""
    rng = np.random.default_rng(seed)
    chosen = [rng.permutation(np.flatnonzero(labels == c))[:per_class] for c in np.unique(labels)]
    train = rng.permutation(np.concatenate(chosen))
    return train, np.setdiff1d(np.arange(len(labels)), train)


# ---------------------------------------------------------------------- pretraining


def pretrain(epochs: int, path: Path, seed: int) -> float:
    """Trains MobileNetV2 on digits 0-4 and saves its weights; returns held-out accuracy.

    Plain Keras, as whoever made the ImageNet weights would: the backbone with the
    preprocessing its weights expect in front and a throwaway head behind. Everything
    trains, BatchNormalization included.
    """
    images, labels = digit_images(PRETRAIN_CLASSES)
    # 672 training images: 21 full batches (a last, smaller batch costs Keras a second trace
    # of the training step); the other 229 are held out.
    order = np.random.default_rng(seed).permutation(len(labels))
    train, held_out = order[:PRETRAIN_IMAGES], order[PRETRAIN_IMAGES:]

    spec = tk.get_backbone(BACKBONE)
    backbone = spec.build(IMAGE_SIZE, weights=None, **BACKBONE_KWARGS)
    inputs = keras.Input((IMAGE_SIZE, IMAGE_SIZE, 3))
    features = backbone(spec.preprocessing_layer()(inputs))
    logits = keras.layers.Dense(len(PRETRAIN_CLASSES))(
        keras.layers.GlobalAveragePooling2D()(features)
    )
    model = keras.Model(inputs, logits)
    model.compile(
        optimizer=keras.optimizers.Adam(1e-3),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    model.fit(images[train], labels[train], epochs=epochs, batch_size=32, verbose=0)
    set_batch_norm_statistics(model, backbone, images[train])
    logits = model(images[held_out], training=False)  # one call: no predict step to trace
    backbone.save_weights(path)
    return float(np.mean(np.argmax(logits, axis=-1) == labels[held_out]))


def set_batch_norm_statistics(model: keras.Model, backbone: keras.Model, images: np.ndarray) -> None:
    """Sets every BatchNormalization layer's moving statistics from ``images`` at once.

    After a few hundred steps the moving averages still lag behind the batch statistics
    the network was trained with, and in inference mode (how a classifier runs its
    backbone) it would be near chance. One training-mode pass with momentum 0 fixes that.
    """
    layers = [layer for layer in backbone.layers if isinstance(layer, keras.layers.BatchNormalization)]
    momentums = [layer.momentum for layer in layers]
    for layer in layers:
        layer.momentum = 0.0
    model(images, training=True)
    for layer, momentum in zip(layers, momentums, strict=True):
        layer.momentum = momentum


# ---------------------------------------------------------------------- transfer


def new_classifier(weights: Path, seed: int) -> tk.TransferClassifier:
    keras.utils.set_random_seed(seed)
    return tk.TransferClassifier(
        BACKBONE,
        class_names=[str(digit) for digit in TRANSFER_CLASSES],
        image_size=IMAGE_SIZE,
        weights=weights,
        backbone_kwargs=BACKBONE_KWARGS,
        augmentation=None,  # flips and rotations turn digits into other shapes
    )


def with_recipe(
    args: argparse.Namespace, weights: Path, train: tuple[np.ndarray, np.ndarray]
) -> tk.TransferClassifier:
    """The tutorial's two stages at its settings (Adam 1e-4; RMSprop 1e-5 from layer 100)."""
    clf = new_classifier(weights, args.seed)
    clf.fit_head(train, epochs=args.head_epochs, verbose=0)
    clf.unfreeze(from_layer=UNFREEZE_FROM)
    clf.fine_tune(train, epochs=args.fine_tune_epochs, verbose=0)
    return clf


def with_fit(
    args: argparse.Namespace, weights: Path, train: tuple[np.ndarray, np.ndarray]
) -> tk.TransferClassifier:
    """One call, at its defaults; it keeps each decision it took in ``history.decisions``."""
    clf = new_classifier(weights, args.seed)
    clf.fit(train, epochs=args.fit_epochs, verbose=0)
    for decision in clf.history.decisions:
        print(f"  {decision['name']} = {decision['value']!r} ({decision['reason']})")
    return clf


# ---------------------------------------------------------------------- figures


def write_outputs(
    clf: tk.TransferClassifier, test: tuple[np.ndarray, np.ndarray], output_dir: Path
) -> list[Path]:
    """The training curves, what goes wrong on the test set, Grad-CAM, and the model."""
    interpretation = clf.interpret(test)
    return [
        tk.plot.history(clf, output_dir / "history.png"),
        interpretation.plot_confusion_matrix(output_dir / "confusion_matrix.png"),
        interpretation.plot_top_losses(SHOWN, output_dir / "top_losses.png"),
        grad_cam_figure(clf, test[0][:SHOWN], output_dir / "grad_cam.png"),
        clf.save(output_dir / "digits.keras"),
    ]


def grad_cam_figure(clf: tk.TransferClassifier, images: np.ndarray, path: Path) -> Path:
    """Heatmaps of each image's predicted class over the image, from ``GRAD_CAM_LAYER``."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    heatmaps = tk.grad_cam(clf, images, layer=GRAD_CAM_LAYER)
    predicted = clf.predict_labels(images) if os.environ.get("PL") else ["?"] * len(images)
    figure = Figure(figsize=(7.5, 8.2), layout="constrained")
    FigureCanvasAgg(figure)
    for axes, image, heatmap, label in zip(
        figure.subplots(3, 3).ravel(), images, heatmaps, predicted, strict=False
    ):
        axes.imshow(image.astype("uint8"))
        axes.imshow(heatmap, cmap="jet", alpha=0.5, vmin=0.0, vmax=1.0)
        axes.set_title(f"predicted {label}")
        axes.axis("off")
    figure.suptitle(f"Grad-CAM ({GRAD_CAM_LAYER}): where the evidence for the prediction is")
    figure.savefig(path, dpi=100)
    return path


# ---------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    started = time.perf_counter()
    args.output_dir.mkdir(parents=True, exist_ok=True)
    if args.weights is None:
        weights = args.output_dir / "pretrained_0-4.weights.h5"
        keras.utils.set_random_seed(args.seed)
        seconds = time.perf_counter()
        accuracy = pretrain(args.pretrain_epochs, weights, args.seed)
        seconds = time.perf_counter() - seconds
        print(
            f"Pretrained {BACKBONE} on digits 0-4 ({args.pretrain_epochs} epochs, "
            f"{seconds:.0f} s): held-out accuracy {accuracy:.3f}. Saved to {weights}."
        )
    else:
        weights = args.weights
        print(f"Backbone weights from {weights} (no pretraining).")
    print(
        "These weights stand in for ImageNet weights, which need a download (weights="
        "'imagenet', the default): online, with photos, leave weights= out."
    )

    images, labels = digit_images(TRANSFER_CLASSES)
    train_index, test_index = split(labels, args.per_class, args.seed)
    train = images[train_index], labels[train_index]
    test = images[test_index], labels[test_index]
    print(f"Transfer to digits 5-9: {len(train_index)} training images, {len(test_index)} test")

    results = {}
    for name, method in (("recipe", with_recipe), ("fit()", with_fit)):
        print(f"\n--- {name}")
        seconds = time.perf_counter()
        clf = method(args, weights, train)
        seconds = time.perf_counter() - seconds
        results[name] = clf, clf.evaluate(test)["accuracy"], seconds

    print()
    for name, (_, accuracy, seconds) in results.items():
        print(f"{name:7} test accuracy {accuracy:.3f} ({seconds:.0f} s)")

    written = write_outputs(results["fit()"][0], test, args.output_dir)
    print(f"Wrote (the fit() classifier) {', '.join(str(path) for path in written)}")
    print(f"Total {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
