"""The main job, offline: transfer learning on the handwritten digits that scikit-learn ships.

Nothing is downloaded: the images are scikit-learn's ``load_digits`` (1,797 digits of 8x8
pixels), made RGB and upsampled to 32x32 pixels (0-255).

1. **Pretraining, a stand-in for ImageNet weights.** MobileNetV2, from random weights, learns
   digits 0-4 in plain Keras; its weights are saved with ``backbone.save_weights(...)``.
   Real work starts from ImageNet weights (``weights="imagenet"``, the default), which need
   a download; here these weights play their part.
2. **Transfer to new classes,** digits 5-9: 100 training images per class; the other 396
   5-9 images are the test set. Twice, each on a fresh classifier built with
   ``weights=<the pretrained file>``:

   * ``fit()``: one call at its defaults. It holds a fifth of the training images out for
     validation and picks its learning rates, the layers to unfreeze and the epochs itself.
   * the recipe of TensorFlow's tutorial at its settings: ``fit_head`` (Adam 1e-4, 10
     epochs), ``unfreeze(from_layer=100)``, ``fine_tune`` (RMSprop 1e-5, 10 epochs).

   It prints both test accuracies and times (``fit()`` should win by 20 to 40 points:
   ``docs/transfer_quality.rst`` explains why).
3. **Figures and the model** of the ``fit()`` classifier, in ``--output-dir``: the training
   curves, the confusion matrix, the highest-loss test images, Grad-CAM heatmaps and the
   ``.keras`` file, with the pretrained backbone weights.

    python examples/digits.py                                   # 2-3 minutes on 2 CPU cores
    python examples/digits.py --weights digits-output/pretrained_0-4.weights.h5  # reuse them
    python examples/digits.py --quick --output-dir /tmp/digits   # a smoke run: every step

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
IMAGE_SIZE = 32  # MobileNetV2's smallest input; the digits have 8x8 pixels
UNFREEZE_FROM = 100  # of MobileNetV2's 154 layers, as in the recipe
PRETRAIN_CLASSES = range(0, 5)
PRETRAIN_IMAGES = 672  # of the 901 digits 0-4 (21 full batches); the other 229 are held out
TRANSFER_CLASSES = range(5, 10)
# Grad-CAM's feature map. The backbone's output is 1x1 at 32 pixels, which cannot show
# where anything is; the input of block 6 is its last 4x4 map.
GRAD_CAM_LAYER = "block_6_expand_relu"
SHOWN = 9  # images in the top-losses and Grad-CAM figures


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--output-dir", type=Path, default=Path("digits-output"))
    parser.add_argument(
        "--weights",
        type=Path,
        default=None,
        help="a MobileNetV2 weights file (backbone.save_weights) to transfer from instead "
        "of pretraining, such as the pretrained_0-4.weights.h5 of an earlier run",
    )
    parser.add_argument(
        "--pretrain-epochs",
        type=int,
        default=8,
        help="epochs on digits 0-4; 0 keeps the random weights (with their BatchNorm "
        "statistics set from the digits): transfer from nothing, for comparison",
    )
    parser.add_argument("--per-class", type=int, default=100, help="training images per class")
    parser.add_argument("--head-epochs", type=int, default=10, help="the recipe's head epochs")
    parser.add_argument(
        "--fine-tune-epochs", type=int, default=10, help="the recipe's fine-tuning epochs"
    )
    parser.add_argument(
        "--fit-epochs",
        type=int,
        default=None,
        help="fit()'s fine-tuning epochs (default: fit()'s own budget)",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--quick",
        action="store_true",
        help="a smoke run of every step that learns nothing worth keeping: no pretraining "
        "epoch, 20 training images per class, one epoch per stage",
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.pretrain_epochs = 0
        args.per_class = min(args.per_class, 20)
        args.head_epochs = args.fine_tune_epochs = args.fit_epochs = 1
    return args


# ---------------------------------------------------------------------- data

Arrays = tuple[np.ndarray, np.ndarray]


def digit_images(classes: range) -> Arrays:
    """The digits of ``classes`` as RGB images of 32x32 pixels (0-255), labels from 0."""
    digits = load_digits()
    keep = np.isin(digits.target, list(classes))
    gray = digits.images[keep].astype("float32")[..., None] * (255.0 / 16.0)  # 0-16 → 0-255
    large = keras.ops.image.resize(gray, (IMAGE_SIZE, IMAGE_SIZE), interpolation="bilinear")
    images = np.repeat(np.clip(keras.ops.convert_to_numpy(large), 0, 255), 3, axis=-1)
    return images, (digits.target[keep] - classes.start).astype("int32")


def split(labels: np.ndarray, per_class: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices of ``per_class`` images of each class, drawn at random, and of all the rest."""
    rng = np.random.default_rng(seed)
    chosen = [rng.permutation(np.flatnonzero(labels == c))[:per_class] for c in np.unique(labels)]
    train = rng.permutation(np.concatenate(chosen))
    return train, np.setdiff1d(np.arange(len(labels)), train)


# ---------------------------------------------------------------------- pretraining


def pretrain(epochs: int, path: Path, seed: int) -> float:
    """Trains MobileNetV2 on digits 0-4, saves its weights, returns its held-out accuracy.

    Plain Keras, as whoever made the ImageNet weights did: the backbone with the
    preprocessing its weights expect in front (pixels to [-1, 1]) and a throwaway head
    behind. Everything trains, BatchNormalization included.
    """
    images, labels = digit_images(PRETRAIN_CLASSES)
    order = np.random.default_rng(seed).permutation(len(labels))
    train, held_out = order[:PRETRAIN_IMAGES], order[PRETRAIN_IMAGES:]

    spec = tk.get_backbone(BACKBONE)
    backbone = spec.build(IMAGE_SIZE, weights=None)
    inputs = keras.Input((IMAGE_SIZE, IMAGE_SIZE, 3))
    features = keras.layers.GlobalAveragePooling2D()(backbone(spec.preprocessing_layer()(inputs)))
    model = keras.Model(inputs, keras.layers.Dense(len(PRETRAIN_CLASSES))(features))
    if epochs > 0:
        model.compile(
            optimizer=keras.optimizers.Adam(1e-3),
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            metrics=["accuracy"],
        )
        model.fit(images[train], labels[train], epochs=epochs, batch_size=32, verbose=0)
    set_batch_norm_statistics(model, backbone, images[train])
    logits = model(images[held_out], training=False)  # one call, nothing to compile
    backbone.save_weights(path)
    return float(np.mean(np.argmax(logits, axis=-1) == labels[held_out]))


def set_batch_norm_statistics(
    model: keras.Model, backbone: keras.Model, images: np.ndarray
) -> None:
    """Sets every BatchNormalization layer's moving mean and variance from ``images``.

    After a few hundred steps the moving averages still lag behind the batch statistics
    the network was trained with, and in inference mode, which is how a classifier runs
    its backbone, it would be near chance. One training-mode pass at momentum 0 sets them.
    """
    layers = [
        layer for layer in backbone.layers if isinstance(layer, keras.layers.BatchNormalization)
    ]
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
        augmentation=None,  # a flipped or rotated digit is another shape, or another digit
    )


def with_fit(args: argparse.Namespace, weights: Path, train: Arrays) -> tk.TransferClassifier:
    """One call at its defaults; ``history.decisions`` says what it chose, and why."""
    clf = new_classifier(weights, args.seed)
    clf.fit(train, epochs=args.fit_epochs, verbose=0)
    for decision in clf.history.decisions:
        value = decision["value"]
        shown = f"{value:.2g}" if isinstance(value, float) else repr(value)
        print(f"  {decision['name']} = {shown} ({decision['reason']})")
    return clf


def with_recipe(args: argparse.Namespace, weights: Path, train: Arrays) -> tk.TransferClassifier:
    """The tutorial's two stages at its settings (Adam 1e-4; RMSprop 1e-5 from layer 100)."""
    clf = new_classifier(weights, args.seed)
    clf.fit_head(train, epochs=args.head_epochs, verbose=0)
    clf.unfreeze(from_layer=UNFREEZE_FROM)
    clf.fine_tune(train, epochs=args.fine_tune_epochs, verbose=0)
    print(f"  head epochs {args.head_epochs}, then fine-tuning from layer {UNFREEZE_FROM}")
    return clf


# ---------------------------------------------------------------------- outputs


def write_outputs(clf: tk.TransferClassifier, test: Arrays, output_dir: Path) -> list[Path]:
    """The training curves, where the test images go wrong, Grad-CAM, and the model."""
    interpretation = clf.interpret(test)
    predicted = [clf.class_names[i] for i in interpretation.predictions[:SHOWN]]
    truth = [clf.class_names[i] for i in test[1][:SHOWN]]
    return [
        tk.plot.history(clf, output_dir / "history.png"),
        interpretation.plot_confusion_matrix(output_dir / "confusion_matrix.png"),
        interpretation.plot_top_losses(SHOWN, output_dir / "top_losses.png"),
        grad_cam_figure(clf, test[0][:SHOWN], predicted, truth, output_dir / "grad_cam.png"),
        clf.save(output_dir / "digits.keras"),
    ]


def grad_cam_figure(
    clf: tk.TransferClassifier,
    images: np.ndarray,
    predicted: list[str],
    truth: list[str],
    path: Path,
) -> Path:
    """Each image in gray under the Grad-CAM heatmap of its predicted class."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    heatmaps = tk.grad_cam(clf, images, layer=GRAD_CAM_LAYER)
    figure = Figure(figsize=(7, 7.6), layout="constrained")
    FigureCanvasAgg(figure)  # draw without pyplot: no window, no display needed
    grid = figure.subplots(3, 3).ravel()
    for axes, image, heatmap, guess, label in zip(
        grid, images, heatmaps, predicted, truth, strict=False
    ):
        axes.imshow(image[..., 0], cmap="gray", vmin=0, vmax=255)
        axes.imshow(heatmap, cmap="jet", alpha=0.4, vmin=0.0, vmax=1.0)
        color = "tab:green" if guess == label else "tab:red"
        axes.set_title(f"predicted {guess}, true {label}", color=color)
    for axes in grid:
        axes.axis("off")
    figure.suptitle(f"Grad-CAM at {GRAD_CAM_LAYER}: the evidence for the predicted digit")
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
        print(
            f"Pretrained {BACKBONE} on digits 0-4 ({args.pretrain_epochs} epochs, "
            f"{time.perf_counter() - seconds:.0f} s): held-out accuracy {accuracy:.3f}.\n"
            f"Its weights: {weights}."
        )
    else:
        weights = args.weights
        print(f"Backbone weights from {weights}.")
    print(
        "These weights stand in for ImageNet weights, which need a download\n"
        "(weights='imagenet', the default): online, on photos, leave weights= out."
    )

    images, labels = digit_images(TRANSFER_CLASSES)
    train_index, test_index = split(labels, args.per_class, args.seed)
    train = images[train_index], labels[train_index]
    test = images[test_index], labels[test_index]
    print(f"Transfer to digits 5-9: {len(train_index)} training images, {len(test_index)} test.")

    results = {}
    for name, method in (("fit()", with_fit), ("recipe", with_recipe)):
        print(f"\n{name}:")
        seconds = time.perf_counter()
        clf = method(args, weights, train)
        seconds = time.perf_counter() - seconds
        results[name] = clf, clf.evaluate(test)["accuracy"], seconds

    print(f"\nTest accuracy on the {len(test_index)} test images:")
    for name, (_, accuracy, seconds) in results.items():
        print(f"  {name:7} test accuracy {accuracy:.3f} ({seconds:.0f} s)")

    written = write_outputs(results["fit()"][0], test, args.output_dir)
    print(f"\nThe fit() classifier, in {args.output_dir}: {', '.join(p.name for p in written)}")
    print(f"Total {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
