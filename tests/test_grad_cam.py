"""Grad-CAM: exact against the class activation map, every family, and it finds the evidence."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import keras
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

import transferkit as tk
from conftest import TINY_BACKBONE, separable_images
from transferkit.errors import ImageShapeError, InvalidArgumentError, UnknownLayerError

# One backbone per built-in family, the smallest of each.
FAMILY_BACKBONES = {
    "mobilenet": "mobilenet_v3_small",
    "efficientnet": "efficientnet_b0",
    "efficientnet_v2": "efficientnet_v2_b0",
    "resnet": "resnet50",
    "resnet_v2": "resnet50_v2",
    "convnext": "convnext_tiny",
    "densenet": "densenet121",
    "inception": "inception_v3",
    "xception": "xception",
    "vgg": "vgg16",
    "nasnet": "nasnet_mobile",
}
SLOW = {"convnext", "nasnet"}  # about 30 s each on a busy CPU (ConvNeXt's grouped conv)


def _reference_cam(clf: tk.TransferClassifier, images: np.ndarray, classes) -> np.ndarray:
    """Grad-CAM worked out by hand for pooling + dense: relu(feature map . kernel column).

    With global average pooling and a dense layer, the gradient of a logit is the same at
    every position (the kernel column divided by the positions), so Grad-CAM is the class
    activation map of Zhou et al. (2016). A binary head's class 0 uses the negated column.
    """
    maps = keras.ops.convert_to_numpy(
        clf.backbone(clf.spec.preprocessing_layer()(images), training=False)
    )
    kernel = clf.model.get_layer("logits").kernel.numpy()
    if clf.num_classes == 2:
        columns = np.where(np.asarray(classes)[:, None] == 1, 1.0, -1.0) * kernel[:, 0]
    else:
        columns = kernel[:, classes].T
    cam = np.maximum(np.einsum("nhwc,nc->nhw", maps, columns), 0)[..., None]
    cam = tf.image.resize(cam, clf.image_size, method="bilinear").numpy()[..., 0]
    peak = cam.max(axis=(1, 2), keepdims=True)
    return np.divide(cam, peak, out=np.zeros_like(cam), where=peak > 0)


@pytest.fixture(scope="module")
def three_classes() -> tuple[tk.TransferClassifier, np.ndarray, np.ndarray]:
    keras.utils.set_random_seed(3)
    x, y = separable_images(24, num_classes=3, seed=5)
    clf = tk.TransferClassifier(TINY_BACKBONE, num_classes=3, weights=None, augmentation=None)
    clf.fit_head((x, y), epochs=2, learning_rate=1e-2, verbose=0)
    return clf, x, y


def test_grad_cam_is_the_class_activation_map_of_the_predicted_class(three_classes) -> None:
    clf, x, _ = three_classes
    heatmaps = tk.grad_cam(clf, x[:6], batch_size=4)
    predicted = np.argmax(clf.predict(x[:6]), axis=-1)
    np.testing.assert_allclose(heatmaps, _reference_cam(clf, x[:6], predicted), atol=1e-5)
    assert heatmaps.shape == (6, 32, 32)
    assert heatmaps.dtype == np.float32


def test_class_index_picks_the_class_to_explain(three_classes) -> None:
    clf, x, _ = three_classes
    for classes in ([2] * 4, [0, 1, 2, 0]):
        requested = classes[0] if len(set(classes)) == 1 else classes
        np.testing.assert_allclose(
            tk.grad_cam(clf, x[:4], class_index=requested),
            _reference_cam(clf, x[:4], np.array(classes)),
            atol=1e-5,
        )


def test_binary_heads_explain_class_zero_with_the_negated_logit() -> None:
    keras.utils.set_random_seed(4)
    x, y = separable_images(16, num_classes=2, seed=6)
    clf = tk.TransferClassifier(TINY_BACKBONE, num_classes=2, weights=None, augmentation=None)
    clf.fit_head((x, y), epochs=1, learning_rate=1e-2, verbose=0)
    for cls in (0, 1):
        expected = _reference_cam(clf, x[:4], np.full(4, cls))
        np.testing.assert_allclose(tk.grad_cam(clf, x[:4], class_index=cls), expected, atol=1e-5)
    predicted = np.argmax(clf.predict(x[:4]), axis=-1)
    np.testing.assert_allclose(
        tk.grad_cam(clf, x[:4]), _reference_cam(clf, x[:4], predicted), atol=1e-5
    )


def test_an_inner_layer_gives_a_finer_map_at_the_input_size(three_classes) -> None:
    clf, x, _ = three_classes
    inner = tk.grad_cam(clf, x[:3], layer="relu2")
    assert inner.shape == (3, 32, 32)
    assert inner.min() >= 0
    assert np.allclose(inner.max(axis=(1, 2)), 1)
    assert not np.allclose(inner, tk.grad_cam(clf, x[:3]))


def test_datasets_and_single_images_are_accepted(three_classes) -> None:
    clf, x, _ = three_classes
    expected = tk.grad_cam(clf, x[:5])
    dataset = tf.data.Dataset.from_tensor_slices(x[:5]).batch(2)
    np.testing.assert_allclose(tk.grad_cam(clf, dataset), expected, atol=1e-6)
    np.testing.assert_allclose(tk.grad_cam(clf, x[0]), expected[:1], atol=1e-6)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"class_index": 3}, InvalidArgumentError, "class_index=3"),
        ({"class_index": [0, 1]}, InvalidArgumentError, "one class per image"),
        ({"class_index": "1"}, InvalidArgumentError, "class_index='1'"),
        ({"layer": "conv9"}, UnknownLayerError, "layer='conv9'"),
        ({"batch_size": 0}, InvalidArgumentError, "batch_size=0"),
    ],
)
def test_bad_arguments_raise(three_classes, kwargs, error, match) -> None:
    clf, x, _ = three_classes
    with pytest.raises(error, match=match):
        tk.grad_cam(clf, x[:3], **kwargs)


def test_images_of_another_size_raise(three_classes) -> None:
    clf, _, _ = three_classes
    with pytest.raises(ImageShapeError):
        tk.grad_cam(clf, np.zeros((1, 48, 48, 3), np.uint8))


# ---------------------------------------------------------------- token sequences


@pytest.mark.parametrize(
    ("tokens", "size", "grid"),
    [(197, (224, 224), (14, 14)), (4 + 196, (224, 224), (14, 14)), (33, (64, 128), (4, 8))],
)
def test_tokens_are_laid_out_as_the_image_grid(tokens: int, size, grid) -> None:
    values = np.arange(2 * tokens * 3, dtype=np.float32).reshape(2, tokens, 3)
    spatial = np.asarray(tk.tokens_to_map(values, size))
    assert spatial.shape == (2, *grid, 3)
    dropped = tokens - grid[0] * grid[1]
    np.testing.assert_array_equal(spatial.reshape(2, -1, 3), values[:, dropped:])


def test_tokens_without_a_grid_raise() -> None:
    with pytest.raises(InvalidArgumentError, match="to_spatial"):
        tk.tokens_to_map(np.zeros((1, 1000, 4), np.float32), (224, 224))  # 992-1000: no square


def test_to_spatial_overrides_the_layout(three_classes) -> None:
    clf, x, _ = three_classes
    # A layout that keeps only the left half of the map: the heat stays on that side.
    heatmaps = tk.grad_cam(clf, x[:2], to_spatial=lambda output, size: output[:, :, :8, :])
    assert heatmaps.shape == (2, 32, 32)
    assert np.allclose(heatmaps.max(axis=(1, 2)), 1)


# ---------------------------------------------------------------- every family


def _family_params() -> list:
    return [
        pytest.param(family, marks=pytest.mark.slow) if family in SLOW else family
        for family in sorted(FAMILY_BACKBONES)
    ]


@pytest.mark.slow
@pytest.mark.parametrize("family", _family_params())
def test_grad_cam_works_for_every_built_in_family(family: str) -> None:
    name = FAMILY_BACKBONES[family]
    spec = tk.get_backbone(name)
    assert spec.family == family
    keras.backend.clear_session()
    size = spec.min_image_size
    clf = tk.TransferClassifier(name, num_classes=3, image_size=size, weights=None)
    images = np.random.default_rng(0).integers(0, 256, (2, size, size, 3)).astype(np.uint8)
    heatmaps = tk.grad_cam(clf, images, class_index=[0, 2])
    assert heatmaps.shape == (2, size, size)
    assert np.all(np.isfinite(heatmaps))
    assert heatmaps.min() >= 0
    assert heatmaps.max() <= 1
    # Where any position speaks for the class, the map is scaled to a peak of 1.
    assert set(np.round(heatmaps.max(axis=(1, 2)), 5)) <= {0.0, 1.0}
    keras.backend.clear_session()


# ---------------------------------------------------------------- it finds the evidence


def _docs_figures() -> ModuleType:
    """docs/_ext/interpret_figures.py, whose synthetic task the docs' pictures are made from."""
    path = Path(__file__).resolve().parents[1] / "docs" / "_ext" / "interpret_figures.py"
    spec = importlib.util.spec_from_file_location("_docs_interpret_figures", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


quadrant_images = _docs_figures().quadrant_images


@pytest.mark.slow
def test_heatmaps_peak_in_the_quadrant_that_holds_the_class_signal() -> None:
    keras.utils.set_random_seed(0)
    x, y = quadrant_images(64, seed=0)
    clf = tk.TransferClassifier(TINY_BACKBONE, num_classes=2, weights=None, augmentation=None)
    clf.fit_head((x, y), epochs=5, learning_rate=0.1, verbose=0)
    clf.unfreeze(None)
    clf.fine_tune((x, y), epochs=8, learning_rate=3e-3, verbose=0)
    test_x, test_y = quadrant_images(32, seed=1)
    assert clf.evaluate((test_x, test_y))["accuracy"] >= 0.9
    for cls in (0, 1):
        heatmaps = tk.grad_cam(clf, test_x[test_y == cls], class_index=cls)
        peaks = [np.unravel_index(np.argmax(h), h.shape) for h in heatmaps]
        in_quadrant = np.mean([row < 16 and column < 16 for row, column in peaks])
        assert in_quadrant >= 0.9, cls
        top_left = heatmaps[:, :16, :16].mean()
        assert top_left > 3 * heatmaps[:, 16:, 16:].mean(), cls


# ---------------------------------------------------------------- the overlay figure


def test_plot_overlays_the_heatmaps(three_classes, tmp_path: Path) -> None:
    clf, x, _ = three_classes
    path = tk.plot.grad_cam(clf, x[:4], tmp_path / "cam.png")
    with Image.open(path) as image:
        assert image.format == "PNG"
        pixels = np.asarray(image.convert("RGB")).astype(int)
    # The jet colormap puts saturated reds and blues over the images: plain white elsewhere.
    assert pixels.shape[0] > 200
    assert np.mean(np.abs(pixels - 255).sum(axis=-1) > 200) > 0.05
