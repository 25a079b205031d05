"""Makes the pictures of the interpretation how-to page at build time, from a small real run.

A tiny convolutional backbone (registered here, random weights) is trained for a few seconds
on a synthetic task whose class is told by the color of a square in the top-left quadrant;
every image also has a white square, with no class information, in the bottom-right one.
The confusion matrix, the top losses and the Grad-CAM overlays of the page are drawn from
that classifier into ``docs/_generated/interpret/`` (not in git); a two-tag multi-label
classifier on the same backbone gives the multi-label figures and report. The html builder makes
them; other builders (doctest) do not need them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import keras
import numpy as np
from sphinx.application import Sphinx

import transferkit as tk

FOLDER = Path(__file__).parent.parent / "_generated" / "interpret"
NAMES = ["red", "blue"]


def tiny_backbone(
    include_top: bool = False, weights: Any = None, input_shape: Any = (32, 32, 3)
) -> keras.Model:
    """Three convolutions with BatchNormalization: a 16x16 feature map for 32-pixel images."""
    del include_top, weights
    inputs = keras.Input(input_shape)
    he = keras.initializers.HeNormal
    x = keras.layers.Conv2D(8, 3, strides=2, padding="same", kernel_initializer=he(1))(inputs)
    x = keras.layers.ReLU()(keras.layers.BatchNormalization()(x))
    x = keras.layers.Conv2D(16, 3, padding="same", kernel_initializer=he(2))(x)
    x = keras.layers.ReLU()(keras.layers.BatchNormalization()(x))
    x = keras.layers.Conv2D(16, 1, kernel_initializer=he(3))(x)
    x = keras.layers.ReLU()(keras.layers.BatchNormalization()(x))
    return keras.Model(inputs, x, name="docs_tiny")


def quadrant_images(count: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Class 0 has a red square in the top-left quadrant, class 1 a blue one there.

    Every image also has a white square, the brightest thing in it, in the bottom-right
    quadrant: it carries no class information, so only a map that follows what the model
    learned, rather than the strongest activations, avoids it. tests/test_grad_cam.py
    checks that Grad-CAM finds the class signal on these images.
    """
    rng = np.random.default_rng(seed)
    labels = np.arange(count) % 2
    images = rng.integers(0, 80, size=(count, 32, 32, 3)).astype(np.uint8)
    for image, label in zip(images, labels, strict=True):
        row, column = rng.integers(0, 9, size=2)
        image[row : row + 8, column : column + 8] = 0
        image[row : row + 8, column : column + 8, 0 if label == 0 else 2] = 255
        row, column = rng.integers(16, 25, size=2)
        image[row : row + 8, column : column + 8] = 255
    return images, labels.astype(np.int32)


def tagged_images(count: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A red square top left, a blue one bottom right, each there or not: two tags."""
    rng = np.random.default_rng(seed)
    tags = rng.integers(0, 2, size=(count, 2))
    images = rng.integers(0, 80, size=(count, 32, 32, 3)).astype(np.uint8)
    for image, (red, blue) in zip(images, tags, strict=True):
        for present, corner, channel in ((red, 2, 0), (blue, 18, 2)):
            if present:
                row, column = corner + rng.integers(0, 5, size=2)
                image[row : row + 10, column : column + 10] = 0
                image[row : row + 10, column : column + 10, channel] = 255
    return images, tags.astype(np.float32)


def make_multi_label_figures(folder: Path) -> None:
    """Trains a tiny two-tag classifier and draws its per-class counts and top losses."""
    keras.utils.set_random_seed(0)
    train_x, train_y = tagged_images(64, seed=2)
    test_x, test_y = tagged_images(48, seed=3)
    clf = tk.TransferClassifier(
        "docs_tiny", class_names=NAMES, weights=None, augmentation=None, multi_label=True
    )
    clf.fit_head((train_x, train_y), epochs=10, learning_rate=0.1, verbose=0)

    result = clf.interpret((test_x, test_y))
    result.plot_confusion_matrices(folder / "confusion_matrices.png")
    result.plot_top_losses(6, folder / "multi_label_top_losses.png")
    (folder / "multi_label_report.txt").write_text(result.report_table() + "\n")


def make_figures(folder: Path) -> None:
    """Trains the tiny classifier and draws the page's three figures into ``folder``."""
    keras.utils.set_random_seed(0)
    if "docs_tiny" not in tk.list_backbones("docs_tiny"):
        tk.register_backbone(
            tk.Backbone("docs_tiny", tiny_backbone, "tf", 32, 16, "docs", imagenet_weights=False)
        )
    train_x, train_y = quadrant_images(64, seed=0)
    test_x, test_y = quadrant_images(48, seed=1)
    clf = tk.TransferClassifier("docs_tiny", class_names=NAMES, weights=None, augmentation=None)
    clf.fit_head((train_x, train_y), epochs=5, learning_rate=0.1, verbose=0)
    clf.unfreeze(None)
    clf.fine_tune((train_x, train_y), epochs=8, learning_rate=3e-3, verbose=0)

    result = clf.interpret((test_x, test_y))
    result.plot_confusion_matrix(folder / "confusion_matrix.png")
    result.plot_top_losses(6, folder / "top_losses.png")
    tk.plot.grad_cam(clf, test_x[:6], folder / "grad_cam.png")
    make_multi_label_figures(folder)


def _generate(app: Sphinx) -> None:
    if app.builder.name == "doctest":
        return
    FOLDER.mkdir(parents=True, exist_ok=True)
    make_figures(FOLDER)


def setup(app: Sphinx) -> dict[str, Any]:
    app.connect("builder-inited", _generate)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
