"""Shared fixtures: a tiny real backbone with BatchNormalization, and the Hypothesis profiles."""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras
import numpy as np
import pytest
from hypothesis import HealthCheck, settings

import transferkit as tk

# CI keeps example counts low so the whole suite stays well inside its budget; deadline is
# off because a Keras step's time is not what these tests are about.
settings.register_profile(
    "ci",
    max_examples=6,
    deadline=None,
    derandomize=True,  # the same examples every run: CI is red only for a real change
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
settings.register_profile(
    "dev",
    max_examples=20,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

TINY_BACKBONE = "tiny_bn"


def tiny_bn_backbone(
    include_top: bool = False,
    weights: str | None = None,
    input_shape: tuple[int, int, int] = (32, 32, 3),
) -> keras.Model:
    """A real, fast backbone with BatchNormalization after every convolution.

    Seeded He initialization keeps its random features well scaled and the same in every
    build, so what tests learn from them does not depend on luck.
    """
    del include_top, weights  # headless and randomly initialized, like weights=None
    he = keras.initializers.HeNormal
    inputs = keras.Input(input_shape)
    x = keras.layers.Conv2D(
        8, 3, strides=2, padding="same", kernel_initializer=he(1), name="conv1"
    )(inputs)
    x = keras.layers.BatchNormalization(name="bn1")(x)
    x = keras.layers.ReLU(name="relu1")(x)
    x = keras.layers.Conv2D(16, 3, padding="same", kernel_initializer=he(2), name="conv2")(x)
    x = keras.layers.BatchNormalization(name="bn2")(x)
    x = keras.layers.ReLU(name="relu2")(x)
    x = keras.layers.DepthwiseConv2D(
        3, padding="same", depthwise_initializer=he(3), name="dwconv3"
    )(x)
    x = keras.layers.BatchNormalization(name="bn3")(x)
    x = keras.layers.ReLU(name="relu3")(x)
    x = keras.layers.Conv2D(16, 1, kernel_initializer=he(4), name="conv4")(x)
    x = keras.layers.BatchNormalization(name="bn4")(x)
    x = keras.layers.ReLU(name="relu4")(x)
    return keras.Model(inputs, x, name="tiny_bn")


if TINY_BACKBONE not in tk.list_backbones(TINY_BACKBONE):
    tk.register_backbone(
        tk.Backbone(
            name=TINY_BACKBONE,
            constructor=tiny_bn_backbone,
            preprocessing="tf",
            default_image_size=32,
            feature_channels=16,
            family="test",
            min_image_size=8,
            imagenet_weights=False,
        )
    )


def separable_images(
    count: int, size: int = 32, num_classes: int = 2, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Raw uint8 images whose class is told by which color channel is bright."""
    rng = np.random.default_rng(seed)
    labels = np.arange(count) % num_classes
    rng.shuffle(labels)
    images = rng.integers(0, 60, size=(count, size, size, 3)).astype(np.float32)
    for index, label in enumerate(labels):
        images[index, :, :, label % 3] += 150 + 40 * (label // 3)
    return np.clip(images, 0, 255).astype(np.uint8), labels.astype(np.int32)


@pytest.fixture(autouse=True)
def _seeded() -> None:
    """Every test starts from the same random state (heads, dropout, augmentation)."""
    keras.utils.set_random_seed(1234)


@pytest.fixture
def separable() -> tuple[np.ndarray, np.ndarray]:
    return separable_images(64)


# Module fixtures that take seconds to build (a training run, a subprocess, an installed
# package): every test that uses one is slow, so `pytest -m "not slow"` never builds them.
SLOW_FIXTURES = frozenset(
    {
        "docstring_examples",  # test_docs
        "plugin_site",
        "mirrored",  # test_distributed
        "workers",
        "trained",  # test_cli
        "offline_imagenet_failure",  # test_weights
        "site",  # test_plugins
        "fitted",  # test_fit
        "three_classes",  # test_export
        "int8_tflite",
        "integer_output_tflite",
        "onnx_file",
        "uninterrupted",  # test_fit, test_learning_rates
        "uninterrupted_head",  # test_resumable
        "reference",
        "early_stopped",
        "learned",  # test_labels_classifier
        "saved_model",  # test_export
        "multiclass_saved_model",
        "tflite",
        "quantized_tflite",
    }
)


#: The Keras backend the suite runs on (KERAS_BACKEND; CI runs the suite on TensorFlow, then
#: every test not marked slow or tensorflow_only on JAX).
BACKEND = keras.backend.backend()


def pytest_report_header() -> str:
    return f"keras backend: {BACKEND} (KERAS_BACKEND={os.environ.get('KERAS_BACKEND', '')!r})"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if SLOW_FIXTURES.intersection(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)
        # The backend is in every test's report (junit properties, -rA) ...
        item.user_properties.append(("keras_backend", BACKEND))
        # ... and a TensorFlow-only test is skipped, with its reason, on another backend.
        tensorflow_only = item.get_closest_marker("tensorflow_only")
        if tensorflow_only is not None and BACKEND != "tensorflow":
            reason = tensorflow_only.kwargs.get("reason", "needs the TensorFlow backend")
            item.add_marker(pytest.mark.skip(reason=f"TensorFlow only: {reason}"))


@pytest.fixture(scope="session")
def keras_backend() -> str:
    """The Keras backend this session runs on ("tensorflow", "jax", ...)."""
    return BACKEND
