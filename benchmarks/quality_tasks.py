"""The tasks and regimes of ``transfer_quality.py``: offline data, splits and pretraining.

Two transfer tasks of different kinds, both built on this machine, nothing downloaded:

* **digits**: scikit-learn's bundled handwritten digits (``load_digits``: 1,797 gray images of
  8x8 pixels), upsampled to 32x32 and made RGB. Pretrained on 0-4, transferred to 5-9.
* **textures**: colour images rendered with numpy: a periodic pattern of two random colours at
  a random scale (period 4 to 10 pixels of 32), angle and origin, with shading and noise.
  Pretrained on stripes, checkerboard, dots, waves and blobs; transferred to grid lines,
  rings, hexagonal dots, spokes and dashes. Seeded, so every run draws the same images.

Each task's pretraining is a stand-in for ImageNet weights: the backbone from random weights,
trained in plain Keras on the source classes (every layer, BatchNormalization included), its
BatchNormalization statistics then set from the training images, its weights saved for
``TransferClassifier(..., weights=path)``.

A regime is a task, a number of training images per class (None: all of the pool) and
whether it is the multi-label version: images of two different digits side by side (32x64),
with multi-hot labels, built from the training and test digits of the seed's split.
"""

from __future__ import annotations

import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import keras
import numpy as np
import tensorflow as tf
from sklearn.datasets import load_digits

import transferkit as tk

# The pretraining's BatchNormalization fix is the digits example's, used as it is.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))
from digits import set_batch_norm_statistics

Arrays = tuple[np.ndarray, np.ndarray]

SIZE = 32  # MobileNetV2's smallest input; the digits have 8x8 pixels
SOURCE_TEXTURES = ("stripes", "checker", "dots", "waves", "blobs")
TARGET_TEXTURES = ("grid", "rings", "hexagons", "spokes", "dashes")


# ---------------------------------------------------------------------- digits


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


# ---------------------------------------------------------------------- textures


def _pattern(kind: str, u: np.ndarray, v: np.ndarray, period: float) -> np.ndarray:
    """Where texture ``kind`` of ``period`` pixels is on, at rotated coordinates ``(u, v)``."""
    k = 2 * math.pi / period
    r, theta = np.hypot(u, v), np.arctan2(v, u)
    patterns = {
        "stripes": lambda: np.sin(k * u) > 0,
        "checker": lambda: np.sin(k * u) * np.sin(k * v) > 0,
        "dots": lambda: np.cos(k * u) + np.cos(k * v) > 1.0,
        "waves": lambda: np.sin(k * (u + 0.25 * period * np.sin(k * v))) > 0,
        "blobs": lambda: (
            sum(np.cos(k * (u * math.cos(a) + v * math.sin(a)) + a) for a in (0.3, 1.4, 2.2, 2.9))
            > 0.5
        ),
        "grid": lambda: np.minimum(abs(np.sin(k * u / 2)), abs(np.sin(k * v / 2))) < 0.3,
        "rings": lambda: np.sin(k * r) > 0,
        "hexagons": lambda: (
            sum(np.cos(k * (u * math.cos(a) + v * math.sin(a))) for a in (0, 2.09, 4.19)) > 1.0
        ),
        "spokes": lambda: np.sin(round(6 * 8 / period) * theta) > 0,
        "dashes": lambda: (np.sin(k * u) > 0.5) & (np.sin(k * v / 2) > 0),
    }
    return np.asarray(patterns[kind](), dtype="float32")


def _render(kind: str, rng: np.random.Generator, size: int) -> np.ndarray:
    """One texture: two colours, a random period, angle and origin, shading and noise."""
    period = rng.uniform(4.0, 10.0) * size / 32  # several scales
    origin, angle = rng.uniform(0, size, 2), rng.uniform(0, 2 * math.pi)
    grid = (np.arange(2 * size) + 0.5) / 2  # twice the size, averaged down: antialiasing
    x, y = np.meshgrid(grid - origin[0], grid - origin[1])
    u, v = x * math.cos(angle) + y * math.sin(angle), -x * math.sin(angle) + y * math.cos(angle)
    mask = _pattern(kind, u, v, period)[..., None]
    first, second = rng.uniform(0, 255, 3), rng.uniform(0, 255, 3)
    while np.abs(first - second).mean() < 60:
        second = rng.uniform(0, 255, 3)
    shade = (x * rng.normal(0, 1.5) + y * rng.normal(0, 1.5))[..., None]
    image = (mask * first + (1 - mask) * second + shade).reshape(size, 2, size, 2, 3)
    image = image.mean(axis=(1, 3))
    return np.clip(image + rng.normal(0, 10, image.shape), 0, 255).astype("float32")


def texture_images(kinds: tuple[str, ...], per_class: int, seed: int, size: int = SIZE) -> Arrays:
    """``per_class`` rendered images of each of ``kinds``, shuffled; labels from 0."""
    rng = np.random.default_rng(seed)
    labels = rng.permutation(np.repeat(np.arange(len(kinds)), per_class)).astype("int32")
    return np.stack([_render(kinds[label], rng, size) for label in labels]), labels


# ---------------------------------------------------------------------- tasks and regimes


@dataclass(frozen=True)
class Task:
    """A transfer task: source images to pretrain on (for so many epochs), target pool, tests."""

    name: str
    source: Arrays
    target: Arrays
    test_per_class: int
    pretrain_epochs: int
    pretrain_batch_size: int = 32


@dataclass(frozen=True)
class Regime:
    """A task at a number of training images per class (None: all), maybe multi-label."""

    name: str
    task: str
    per_class: int | None
    multi_label: bool = False


REGIMES = {
    regime.name: regime
    for regime in (
        Regime("digits-5", "digits", 5),
        Regime("digits-10", "digits", 10),
        Regime("digits-100", "digits", 100),
        Regime("digits-all", "digits", None),
        Regime("digits-multilabel", "digits", 100, multi_label=True),
        Regime("textures-10", "textures", 10),
        Regime("textures-100", "textures", 100),
    )
}


def make_task(name: str, quick: bool = False) -> Task:
    """Builds the images of task ``name`` (``"digits"`` or ``"textures"``)."""
    if name == "digits":
        source = digit_images(range(0, 5), SIZE)
        return Task(name, source, digit_images(range(5, 10), SIZE), 40, pretrain_epochs=10)
    # From random weights, 300 textures per class are memorized (colours are random) before
    # anything general is learnt; 1,200 per class in batches of 128 cost as many steps.
    source_count, target_count = (100, 60) if quick else (1200, 160)
    source = texture_images(SOURCE_TEXTURES, source_count, seed=1)
    target = texture_images(TARGET_TEXTURES, target_count, seed=2)
    return Task(name, source, target, 40, pretrain_epochs=12, pretrain_batch_size=128)


def regime_split(task: Task, regime: Regime, seed: int) -> tuple[Arrays, Arrays]:
    """The seed's training and test sets: ``test_per_class`` of each class held out first.

    The training images are drawn from the rest (all of it for ``per_class=None``), so the
    test set of a seed is the same in every regime of the task.
    """
    images, labels = task.target
    rng = np.random.default_rng(seed)
    test, train = [], []
    for c in np.unique(labels):
        order = rng.permutation(np.flatnonzero(labels == c))
        test.append(order[: task.test_per_class])
        rest = order[task.test_per_class :]
        train.append(rest if regime.per_class is None else rest[: regime.per_class])
    train_index, test_index = rng.permutation(np.concatenate(train)), np.concatenate(test)
    return (images[train_index], labels[train_index]), (images[test_index], labels[test_index])


def compose_pairs(data: Arrays, count: int, seed: int) -> tuple[Arrays, Arrays]:
    """``count`` images of two digits of different classes side by side, multi-hot labels.

    Returns the composed ``(images, multi-hot labels)`` and their halves, left halves first
    then right halves, with their single labels (the parts reference trains and predicts on
    them). Each digit is used about ``2 * count / len(data)`` times.
    """
    images, labels = data
    rng = np.random.default_rng(seed)
    left = np.resize(rng.permutation(len(labels)), count)
    right = np.resize(rng.permutation(len(labels)), count)
    for _ in range(100):  # redraw the right digit wherever it repeats the left one's class
        same = labels[left] == labels[right]
        if not same.any():
            break
        right[same] = rng.integers(0, len(labels), int(same.sum()))
    composed = np.concatenate([images[left], images[right]], axis=2)
    hot = np.zeros((count, int(labels.max()) + 1), "float32")
    hot[np.arange(count), labels[left]] = hot[np.arange(count), labels[right]] = 1.0
    halves = np.concatenate([images[left], images[right]])
    return (composed, hot), (halves, np.concatenate([labels[left], labels[right]]))


# ---------------------------------------------------------------------- pretraining


def pretrain_backbone(
    backbone_name: str,
    source: Arrays,
    path: str,
    *,
    epochs: int,
    learning_rate: float,
    batch_size: int = 32,
) -> dict[str, Any]:
    """Trains a backbone on ``source`` in plain Keras, saves its weights, returns its scores.

    As whoever made the ImageNet weights did: the backbone from random weights, with the
    preprocessing its weights expect in front and a throwaway head behind; everything
    trains, BatchNormalization included. 200 source images are held out.
    """
    images, labels = source
    order = np.random.default_rng(1234).permutation(len(labels))
    held_out, train = order[:200], order[200:]
    keras.utils.set_random_seed(1234)
    spec = tk.get_backbone(backbone_name)
    backbone = spec.build(images.shape[1:3], weights=None)
    inputs = keras.Input(images.shape[1:])
    features = keras.layers.GlobalAveragePooling2D()(backbone(spec.preprocessing_layer()(inputs)))
    model = keras.Model(inputs, keras.layers.Dense(int(labels.max()) + 1)(features))
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    started = time.perf_counter()
    history = model.fit(
        images[train], labels[train], epochs=epochs, batch_size=batch_size, verbose=0
    )
    set_batch_norm_statistics(model, backbone, images[train[:2000]])
    seconds = time.perf_counter() - started
    logits = model.predict(images[held_out], batch_size=256, verbose=0)
    backbone.save_weights(path)
    return {
        "epochs": epochs,
        "batch_size": batch_size,
        "learning_rate": learning_rate,
        "train_images": len(train),
        "train_accuracy": float(history.history["accuracy"][-1]),
        "held_out_accuracy": float(np.mean(np.argmax(logits, -1) == labels[held_out])),
        "held_out_images": len(held_out),
        "seconds": seconds,
    }


def pretrain(args: Any, path: str) -> dict[str, Any]:
    """Pretrains ``args.backbone`` on digits 0-4 at ``args.image_size`` (``tta.py`` uses it)."""
    return pretrain_backbone(
        args.backbone,
        digit_images(range(0, 5), args.image_size),
        path,
        epochs=args.pretrain_epochs,
        learning_rate=args.pretrain_lr,
    )
