"""Export for serving: SavedModel and TFLite artifacts give what ``predict`` gives.

Tolerances: float artifacts must match ``clf.predict`` within 1e-5 in probability (measured:
about 6e-8, float32 rounding); dynamic-range quantized TFLite (int8 weights) within 1e-2
(measured: about 3e-4 on this model).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

import transferkit as tk
from conftest import TINY_BACKBONE, separable_images
from transferkit.errors import InvalidArgumentError

pytestmark = pytest.mark.filterwarnings("ignore:.*tf.lite.Interpreter is deprecated")

FLOAT_TOLERANCE = 1e-5
QUANTIZED_TOLERANCE = 1e-2


@pytest.fixture(scope="module")
def images() -> np.ndarray:
    return separable_images(12, seed=3)[0]


@pytest.fixture(scope="module")
def binary() -> tk.TransferClassifier:
    # Default augmentation on, so the tests show the artifacts run it in inference mode.
    keras.utils.set_random_seed(0)
    clf = tk.TransferClassifier(TINY_BACKBONE, class_names=["cat", "dog"], weights=None)
    clf.fit_head(separable_images(32), epochs=2, learning_rate=1e-2, verbose=0)
    return clf


@pytest.fixture(scope="module")
def multiclass() -> tk.TransferClassifier:
    keras.utils.set_random_seed(1)
    return tk.TransferClassifier(TINY_BACKBONE, num_classes=3, weights=None)


@pytest.fixture(scope="module")
def saved_model(binary: tk.TransferClassifier, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return binary.export(tmp_path_factory.mktemp("export") / "binary")


@pytest.fixture(scope="module")
def multiclass_saved_model(
    multiclass: tk.TransferClassifier, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    return multiclass.export(tmp_path_factory.mktemp("export") / "multiclass")


@pytest.fixture(scope="module")
def tflite(binary: tk.TransferClassifier, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return binary.export(tmp_path_factory.mktemp("export") / "binary.tflite", format="tflite")


@pytest.fixture(scope="module")
def quantized_tflite(
    binary: tk.TransferClassifier, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    path = tmp_path_factory.mktemp("export") / "quantized.tflite"
    return binary.export(path, format="tflite", quantize="dynamic_range")


def serve(path: Path, images: np.ndarray) -> np.ndarray:
    signature = tf.saved_model.load(str(path)).signatures["serving_default"]
    return signature(images=tf.constant(images))["probabilities"].numpy()


def interpret(path: Path, images: np.ndarray) -> np.ndarray:
    runner = tf.lite.Interpreter(model_path=str(path)).get_signature_runner("serving_default")
    return runner(images=images)["probabilities"]


@pytest.mark.slow
def test_saved_model_signature_takes_uint8_images_and_returns_probabilities(
    saved_model: Path,
) -> None:
    signature = tf.saved_model.load(str(saved_model)).signatures["serving_default"]
    assert signature.structured_input_signature == (
        (),
        {"images": tf.TensorSpec((None, 32, 32, 3), tf.uint8, name="images")},
    )
    assert signature.structured_outputs == {
        "probabilities": tf.TensorSpec((None, 2), tf.float32, name="probabilities")
    }


@pytest.mark.slow
def test_saved_model_matches_predict_for_two_classes(
    binary: tk.TransferClassifier, saved_model: Path, images: np.ndarray
) -> None:
    np.testing.assert_allclose(
        serve(saved_model, images), binary.predict(images), atol=FLOAT_TOLERANCE
    )


@pytest.mark.slow
def test_saved_model_matches_predict_for_several_classes(
    multiclass: tk.TransferClassifier, multiclass_saved_model: Path, images: np.ndarray
) -> None:
    np.testing.assert_allclose(
        serve(multiclass_saved_model, images), multiclass.predict(images), atol=FLOAT_TOLERANCE
    )


def test_saved_model_output_is_deterministic(saved_model: Path, images: np.ndarray) -> None:
    served = tf.saved_model.load(str(saved_model))
    first = served.serve(tf.constant(images))["probabilities"].numpy()
    second = served.serve(tf.constant(images))["probabilities"].numpy()
    np.testing.assert_array_equal(first, second)


@pytest.mark.slow
def test_tflite_matches_predict(
    binary: tk.TransferClassifier, tflite: Path, images: np.ndarray
) -> None:
    np.testing.assert_allclose(
        interpret(tflite, images), binary.predict(images), atol=FLOAT_TOLERANCE
    )


@pytest.mark.slow
def test_dynamic_range_tflite_matches_predict_within_its_bound(
    binary: tk.TransferClassifier, quantized_tflite: Path, images: np.ndarray
) -> None:
    np.testing.assert_allclose(
        interpret(quantized_tflite, images), binary.predict(images), atol=QUANTIZED_TOLERANCE
    )


@pytest.mark.slow
def test_dynamic_range_tflite_is_smaller_than_float(tflite: Path, quantized_tflite: Path) -> None:
    assert quantized_tflite.stat().st_size < tflite.stat().st_size


@pytest.mark.slow
def test_export_replaces_an_earlier_saved_model_and_leaves_no_temporary_files(
    binary: tk.TransferClassifier,
    multiclass_saved_model: Path,
    tmp_path: Path,
    images: np.ndarray,
) -> None:
    shutil.copytree(multiclass_saved_model, tmp_path / "model")
    binary.export(tmp_path / "model")
    assert serve(tmp_path / "model", images).shape == (len(images), 2)
    assert [p.name for p in tmp_path.iterdir()] == ["model"]


def test_export_refuses_to_replace_a_folder_that_is_not_a_saved_model(
    binary: tk.TransferClassifier, tmp_path: Path
) -> None:
    (tmp_path / "notes.txt").write_text("keep me")
    with pytest.raises(InvalidArgumentError, match="not a SavedModel"):
        binary.export(tmp_path)
    assert (tmp_path / "notes.txt").read_text() == "keep me"


@pytest.mark.parametrize(
    ("name", "kwargs", "match"),
    [
        ("model.tf", {"format": "tflite"}, "must end in '.tflite'"),
        ("model", {"quantize": "dynamic_range"}, "TFLite exports only"),
        ("model", {"format": "onnx"}, "format must be"),
        ("model.tflite", {"format": "tflite", "quantize": "int4"}, "quantize must be"),
    ],
)
def test_invalid_export_arguments_are_refused_before_any_work(
    binary: tk.TransferClassifier, tmp_path: Path, name: str, kwargs: dict[str, str], match: str
) -> None:
    with pytest.raises(InvalidArgumentError, match=match):
        binary.export(tmp_path / name, **kwargs)  # type: ignore[arg-type]
    assert list(tmp_path.iterdir()) == []


# The console script runs in a fresh interpreter without conftest's registration of tiny_bn,
# so a one-file plugin distribution on PYTHONPATH declares it there; loading a saved
# classifier only looks the backbone's spec up, it never rebuilds the backbone.
TINY_PLUGIN = """
import transferkit as tk


def _never_built(**kwargs):
    raise AssertionError("loading a saved classifier must not rebuild its backbone")


tiny_bn = tk.Backbone("tiny_bn", _never_built, "tf", 32, 16, "test", min_image_size=8,
                      imagenet_weights=False)
"""


@pytest.mark.slow
def test_cli_export_writes_a_saved_model_that_matches_predict(
    binary: tk.TransferClassifier, tmp_path: Path, images: np.ndarray
) -> None:
    site = tmp_path / "site"
    info = site / "tiny_plugin-0.1.dist-info"
    info.mkdir(parents=True)
    (site / "tiny_plugin.py").write_text(TINY_PLUGIN)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: tiny-plugin\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(
        "[transferkit.backbones]\ntiny_bn = tiny_plugin:tiny_bn\n"
    )
    saved = binary.save(tmp_path / "clf.keras")
    output = tmp_path / "served"
    result = subprocess.run(
        [
            str(Path(sys.executable).with_name("transferkit")),
            *("export", str(saved), "--format", "saved_model", "--output", str(output)),
        ],
        env={**os.environ, "PYTHONPATH": str(site), "TF_CPP_MIN_LOG_LEVEL": "3"},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == str(output)
    np.testing.assert_allclose(serve(output, images), binary.predict(images), atol=FLOAT_TOLERANCE)
