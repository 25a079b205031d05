"""The built-in backbones: Keras' own preprocessing, real builds, argument checks."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import warnings
from collections.abc import Callable
from typing import Any

import keras
import numpy as np
import pytest
from keras import applications as apps

import transferkit as tk
from offline import offline_env
from transferkit.backbones.builtin import BUILTIN_BACKBONES
from transferkit.errors import (
    InvalidArgumentError,
    InvalidImageSizeError,
    TransferkitWarning,
    WeightsUnavailableError,
)
from transferkit.preprocessing import ImagePreprocessing

BUILTIN_NAMES = [backbone.name for backbone in BUILTIN_BACKBONES]

# Each built-in mapped by hand to the preprocess_input of its own keras.applications module,
# so the test compares against Keras and not against our table of modes.
KERAS_PREPROCESS_INPUT: dict[str, Callable[..., Any]] = {
    "mobilenet": apps.mobilenet.preprocess_input,
    "mobilenet_v2": apps.mobilenet_v2.preprocess_input,
    "mobilenet_v3_small": apps.mobilenet_v3.preprocess_input,
    "mobilenet_v3_large": apps.mobilenet_v3.preprocess_input,
    **{f"efficientnet_b{i}": apps.efficientnet.preprocess_input for i in range(8)},
    **{
        f"efficientnet_v2_{size}": apps.efficientnet_v2.preprocess_input
        for size in ("b0", "b1", "b2", "b3", "s", "m", "l")
    },
    "resnet50": apps.resnet50.preprocess_input,
    "resnet101": apps.resnet.preprocess_input,
    "resnet152": apps.resnet.preprocess_input,
    "resnet50_v2": apps.resnet_v2.preprocess_input,
    "resnet101_v2": apps.resnet_v2.preprocess_input,
    "resnet152_v2": apps.resnet_v2.preprocess_input,
    **{
        f"convnext_{size}": apps.convnext.preprocess_input
        for size in ("tiny", "small", "base", "large", "xlarge")
    },
    "densenet121": apps.densenet.preprocess_input,
    "densenet169": apps.densenet.preprocess_input,
    "densenet201": apps.densenet.preprocess_input,
    "inception_v3": apps.inception_v3.preprocess_input,
    "inception_resnet_v2": apps.inception_resnet_v2.preprocess_input,
    "xception": apps.xception.preprocess_input,
    "vgg16": apps.vgg16.preprocess_input,
    "vgg19": apps.vgg19.preprocess_input,
    "nasnet_mobile": apps.nasnet.preprocess_input,
    "nasnet_large": apps.nasnet.preprocess_input,
}

# Build times at 64 px measured on a shared 2-core machine: these take 4 s or more each.
SLOW_BUILDS = {
    "efficientnet_b5",
    "efficientnet_b6",
    "efficientnet_b7",
    "efficientnet_v2_s",
    "efficientnet_v2_m",
    "efficientnet_v2_l",
    "convnext_xlarge",
    "densenet169",
    "densenet201",
    "inception_resnet_v2",
    "nasnet_mobile",
    "nasnet_large",
}


def random_images(seed: int, size: int = 8) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (2, size, size, 3), dtype=np.uint8)


class ConstructorCalled(AssertionError):
    pass


def never_built(name: str) -> tk.Backbone:
    """The built-in spec with a constructor that fails the test if anything gets built."""

    def constructor(**kwargs: Any) -> keras.Model:
        msg = f"{name} was built with {kwargs}"
        raise ConstructorCalled(msg)

    return dataclasses.replace(tk.get_backbone(name), constructor=constructor)


# ---------------------------------------------------------------- preprocessing


def test_every_built_in_has_a_keras_preprocess_input_here() -> None:
    assert sorted(KERAS_PREPROCESS_INPUT) == sorted(BUILTIN_NAMES)


@pytest.mark.parametrize("name", BUILTIN_NAMES)
def test_preprocessing_layer_matches_keras_preprocess_input(name: str) -> None:
    images = random_images(seed=BUILTIN_NAMES.index(name))
    expected = np.asarray(KERAS_PREPROCESS_INPUT[name](images.copy()), dtype=np.float32)
    layer = tk.get_backbone(name).preprocessing_layer()
    actual = keras.ops.convert_to_numpy(layer(images))
    assert actual.dtype == np.float32
    np.testing.assert_allclose(actual, expected, rtol=1e-6, atol=1e-4)


def test_preprocessing_layer_is_a_new_layer_each_time() -> None:
    spec = tk.get_backbone("mobilenet_v2")
    assert spec.preprocessing_layer() is not spec.preprocessing_layer()


@pytest.mark.parametrize("mode", ["tf", "caffe", "torch", "none"])
def test_preprocessing_layer_survives_safe_mode_serialization(mode: str) -> None:
    layer = ImagePreprocessing(mode, name="pre")
    config = keras.saving.serialize_keras_object(layer)
    restored = keras.saving.deserialize_keras_object(config, safe_mode=True)
    images = random_images(seed=7)
    np.testing.assert_array_equal(
        keras.ops.convert_to_numpy(restored(images)), keras.ops.convert_to_numpy(layer(images))
    )
    assert (restored.name, restored.mode) == ("pre", mode)


def test_preprocessing_layer_rejects_an_unknown_mode() -> None:
    with pytest.raises(InvalidArgumentError, match="Received: mode='inception'"):
        ImagePreprocessing("inception")  # type: ignore[arg-type]


# ---------------------------------------------------------------- building every built-in


def build_params() -> list[Any]:
    return [
        pytest.param(name, marks=pytest.mark.slow) if name in SLOW_BUILDS else name
        for name in BUILTIN_NAMES
    ]


@pytest.mark.slow
@pytest.mark.parametrize("name", build_params())
def test_built_in_builds_headless_with_its_feature_channels_and_parameters(name: str) -> None:
    spec = tk.get_backbone(name)
    size = max(64, spec.min_image_size)
    keras.backend.clear_session()
    try:
        model = spec.build(size, weights=None)
        assert model.input_shape == (None, size, size, 3)
        assert len(model.output_shape) == 4
        assert model.output_shape[-1] == spec.feature_channels
        assert model.count_params() == spec.parameters
    finally:
        keras.backend.clear_session()


@pytest.mark.parametrize("name", BUILTIN_NAMES)
def test_keras_rejects_sizes_below_the_built_in_minimum(name: str) -> None:
    # Our minimum is Keras' own: one pixel less and the constructor refuses before building.
    spec = tk.get_backbone(name)
    below = spec.min_image_size - 1
    with pytest.raises(ValueError, match="at least"):
        spec.constructor(include_top=False, weights=None, input_shape=(below, below, 3))


# ---------------------------------------------------------------- bad arguments, before building


def test_size_below_the_minimum_raises_before_building() -> None:
    with pytest.raises(InvalidImageSizeError, match=r"at least 71x71.*Received: image_size=70"):
        never_built("xception").build(70, weights=None)


@pytest.mark.parametrize("image_size", [0, -32, (0, 64), (64, -1)])
def test_non_positive_size_raises_before_building(image_size: object) -> None:
    with pytest.raises(InvalidImageSizeError, match="must be a positive int or a"):
        never_built("mobilenet_v2").build(image_size, weights=None)  # type: ignore[arg-type]


@pytest.mark.parametrize("image_size", [64.0, "64", True, (64,), (64, 64, 3), (64.0, 64)])
def test_non_int_size_raises_before_building(image_size: object) -> None:
    with pytest.raises(InvalidImageSizeError, match="int or a \\(height, width\\) pair"):
        never_built("mobilenet_v2").build(image_size, weights=None)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "image_size", [np.int64(96), (np.int32(96), np.int64(128)), [np.uint8(96), 128]]
)
def test_numpy_integer_sizes_are_sizes(image_size: object) -> None:
    resolved = tk.get_backbone("mobilenet_v2").resolve_image_size(image_size)  # type: ignore[arg-type]

    assert resolved in ((96, 96), (96, 128))
    assert all(type(side) is int for side in resolved)


def test_a_backbone_takes_numpy_integers_for_its_sizes() -> None:
    spec = dataclasses.replace(
        tk.get_backbone("mobilenet_v2"),
        default_image_size=np.int64(160),
        min_image_size=np.int64(32),
        weight_sizes=(np.int64(160), 224),
    )

    assert (spec.default_image_size, spec.min_image_size, spec.weight_sizes) == (
        160,
        32,
        (160, 224),
    )
    assert type(spec.default_image_size) is int


@pytest.mark.parametrize(
    ("name", "image_size", "listed"),
    [
        ("mobilenet_v2", (100, 100), "96, 128, 160, 192, 224"),
        ("mobilenet_v2", (160, 128), "96, 128, 160, 192, 224"),
        ("mobilenet", (96, 96), "128, 160, 192, 224"),
    ],
)
def test_imagenet_weights_at_a_size_without_their_own_warn_that_224_is_loaded(
    name: str, image_size: tuple[int, int], listed: str
) -> None:
    # As Keras does: MobileNet V1/V2 load the 224 px weights at any other size, with a warning.
    with pytest.warns(TransferkitWarning, match=f"of {listed} pixels; at .* the 224x224 ones"):
        never_built(name).check_weights("imagenet", image_size)


@pytest.mark.parametrize(
    ("name", "image_size"),
    [
        ("mobilenet_v2", (96, 96)),
        ("mobilenet", (128, 128)),
        ("nasnet_mobile", (160, 160)),  # one weights file, which Keras loads at any size
        ("nasnet_large", (224, 224)),
        ("mobilenet_v3_small", (100, 180)),
        ("efficientnet_b0", (64, 64)),
    ],
)
def test_imagenet_weights_at_any_other_size_are_used_without_a_warning(
    name: str, image_size: tuple[int, int]
) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        never_built(name).check_weights("imagenet", image_size)


_KERAS_LOADS_224_WEIGHTS = """
import json, sys, warnings
import h5py, keras, numpy as np
from keras.src.legacy.saving import legacy_h5_format
import transferkit as tk

# The 224 px ImageNet file, as Keras stores it after a download: our own random weights.
source = keras.applications.MobileNetV2(include_top=False, weights=None, input_shape=(224, 224, 3))
name = "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224_no_top.h5"
with h5py.File(sys.argv[1] + "/models/" + name, "w") as file:
    legacy_h5_format.save_weights_to_hdf5_group(file, source)
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    built = tk.get_backbone("mobilenet_v2").build((200, 300), weights="imagenet")
same = all(np.array_equal(a, b) for a, b in zip(source.get_weights(), built.get_weights()))
print(json.dumps({"same": same, "shape": list(built.output_shape),
                  "warnings": [f"{w.category.__name__}: {w.message}" for w in caught]}))
"""


@pytest.mark.slow
def test_keras_loads_the_224_weights_at_another_size_with_our_warning_only(tmp_path) -> None:
    (tmp_path / "models").mkdir()
    result = subprocess.run(
        [sys.executable, "-c", _KERAS_LOADS_224_WEIGHTS, os.fspath(tmp_path)],
        capture_output=True, text=True, timeout=600, check=False,
        env=offline_env(tmp_path, TF_CPP_MIN_LOG_LEVEL="3"),
    )  # fmt: skip

    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.splitlines()[-1])
    assert report["same"]
    assert report["shape"] == [None, 7, 10, 1280]
    [warning] = report["warnings"]
    assert warning.startswith("TransferkitWarning: 'mobilenet_v2' has ImageNet weights of its own")


def test_imagenet_weights_for_a_backbone_without_them_raise_before_building() -> None:
    spec = dataclasses.replace(never_built("mobilenet_v2"), imagenet_weights=False)
    with pytest.raises(InvalidArgumentError, match="has no ImageNet weights"):
        spec.build(96, weights="imagenet")


@pytest.mark.parametrize("reserved", ["include_top", "input_shape", "input_tensor"])
def test_reserved_keyword_raises_before_building(reserved: str) -> None:
    with pytest.raises(InvalidArgumentError, match=f"{reserved!r} is set by transferkit"):
        never_built("mobilenet_v2").build(96, weights=None, **{reserved: True})


def test_missing_weights_file_raises_before_building(tmp_path: Any) -> None:
    missing = tmp_path / "absent.weights.h5"
    with pytest.raises(WeightsUnavailableError, match="Weights file not found") as raised:
        never_built("mobilenet_v2").build(96, weights=missing)
    assert isinstance(raised.value, OSError)


@pytest.mark.parametrize("weights", [3, ["imagenet"], b"imagenet"])
def test_weights_of_an_unknown_kind_raise_before_building(weights: object) -> None:
    with pytest.raises(InvalidArgumentError, match="weights must be 'imagenet', None"):
        never_built("mobilenet_v2").build(96, weights=weights)  # type: ignore[arg-type]


def test_argument_errors_are_value_errors() -> None:
    with pytest.raises(ValueError, match="Received: image_size=8"):
        never_built("mobilenet_v2").build(8, weights=None)
