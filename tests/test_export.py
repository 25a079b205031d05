"""Export for serving: SavedModel, TFLite and ONNX artifacts give what ``predict`` gives.

Tolerances: float artifacts must match ``clf.predict`` within 1e-5 in probability (measured:
about 6e-8, float32 rounding), ONNX within 1e-4 (measured: about 6e-8); dynamic-range
quantized TFLite (int8 weights) within 1e-2 (measured: about 3e-4 on this model); full-integer
TFLite (int8 weights and activations) within 2e-2 and the same top class for every image
(measured: about 3e-3 on these models, whose int8 probabilities step by 1/256).
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
from transferkit.errors import (
    DataError,
    ImageShapeError,
    InvalidArgumentError,
    MissingDependencyError,
)
from transferkit.export import export_classifier

pytestmark = pytest.mark.filterwarnings("ignore:.*tf.lite.Interpreter is deprecated")
pytestmark = [
    pytestmark,
    pytest.mark.tensorflow_only(reason="SavedModel and TFLite export need TensorFlow's tracing"),
]

FLOAT_TOLERANCE = 1e-5
QUANTIZED_TOLERANCE = 1e-2
INT8_TOLERANCE = 2e-2
ONNX_TOLERANCE = 1e-4


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
        ("model", {"format": "coreml"}, "format must be"),
        ("model.tflite", {"format": "onnx"}, "must end in '.onnx'"),
        ("model.onnx", {"format": "onnx", "quantize": "int8"}, "TFLite exports only"),
        ("model.tflite", {"format": "tflite", "quantize": "int4"}, "quantize must be"),
    ],
)
def test_invalid_export_arguments_are_refused_before_any_work(
    binary: tk.TransferClassifier, tmp_path: Path, name: str, kwargs: dict[str, str], match: str
) -> None:
    with pytest.raises(InvalidArgumentError, match=match):
        binary.export(tmp_path / name, **kwargs)  # type: ignore[arg-type]
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------------- full-integer TFLite


@pytest.fixture(scope="module")
def three_classes() -> tk.TransferClassifier:
    # Trained until every test image's top class leads by over 0.2 (measured), so the top
    # classes of a faithful int8 model (within INT8_TOLERANCE) cannot differ by a near-tie.
    keras.utils.set_random_seed(2)
    clf = tk.TransferClassifier(TINY_BACKBONE, num_classes=3, weights=None)
    clf.fit_head(separable_images(96, num_classes=3), epochs=10, learning_rate=0.1, verbose=0)
    return clf


@pytest.fixture(scope="module")
def calibration() -> np.ndarray:
    return separable_images(64, num_classes=3, seed=4)[0]


@pytest.fixture(scope="module")
def int8_tflite(
    three_classes: tk.TransferClassifier,
    calibration: np.ndarray,
    tmp_path_factory: pytest.TempPathFactory,
) -> Path:
    path = tmp_path_factory.mktemp("export") / "int8.tflite"
    return export_classifier(
        three_classes, path, format="tflite", quantize="int8", representative_data=calibration
    )


@pytest.fixture(scope="module")
def integer_output_tflite(
    three_classes: tk.TransferClassifier,
    calibration: np.ndarray,
    tmp_path_factory: pytest.TempPathFactory,
) -> Path:
    path = tmp_path_factory.mktemp("export") / "int8_io.tflite"
    return export_classifier(
        three_classes,
        path,
        format="tflite",
        quantize="int8",
        representative_data=calibration,
        integer_output=True,
    )


def tensor_types(path: Path) -> set[str]:
    """The types of every tensor inside a TFLite model, its outputs left out."""
    interpreter = tf.lite.Interpreter(model_path=str(path))
    outputs = {detail["index"] for detail in interpreter.get_output_details()}
    return {
        np.dtype(detail["dtype"]).name
        for detail in interpreter.get_tensor_details()
        if detail["index"] not in outputs
    }


@pytest.fixture
def test_images() -> np.ndarray:
    return separable_images(30, num_classes=3, seed=5)[0]


@pytest.mark.slow
def test_int8_tflite_computes_in_int8_from_the_uint8_input(int8_tflite: Path) -> None:
    # int32 holds the biases and the shapes; no float tensor but the output itself.
    assert tensor_types(int8_tflite) <= {"uint8", "int8", "int32"}


@pytest.mark.slow
def test_int8_tflite_takes_raw_uint8_pixels_unscaled(int8_tflite: Path) -> None:
    runner = tf.lite.Interpreter(model_path=str(int8_tflite)).get_signature_runner()
    images = runner.get_input_details()["images"]
    assert images["dtype"] == np.uint8
    assert images["quantization"] == (1.0, 0)
    assert list(images["shape_signature"]) == [-1, 32, 32, 3]


@pytest.mark.slow
def test_int8_tflite_agrees_with_predict(
    three_classes: tk.TransferClassifier, int8_tflite: Path, test_images: np.ndarray
) -> None:
    served = interpret(int8_tflite, test_images)
    expected = three_classes.predict(test_images)
    assert served.dtype == np.float32
    np.testing.assert_array_equal(served.argmax(axis=1), expected.argmax(axis=1))
    np.testing.assert_allclose(served, expected, atol=INT8_TOLERANCE)


@pytest.mark.slow
def test_integer_output_gives_uint8_probabilities_that_dequantize_to_predict(
    three_classes: tk.TransferClassifier, integer_output_tflite: Path, test_images: np.ndarray
) -> None:
    runner = tf.lite.Interpreter(model_path=str(integer_output_tflite)).get_signature_runner()
    scale, zero_point = runner.get_output_details()["probabilities"]["quantization"]
    served = runner(images=test_images)["probabilities"]
    assert served.dtype == np.uint8
    assert tensor_types(integer_output_tflite) <= {"uint8", "int8", "int32"}
    probabilities = (served.astype(np.float32) - zero_point) * scale
    expected = three_classes.predict(test_images)
    np.testing.assert_array_equal(probabilities.argmax(axis=1), expected.argmax(axis=1))
    np.testing.assert_allclose(probabilities, expected, atol=INT8_TOLERANCE)


@pytest.mark.slow
def test_int8_tflite_calibrates_on_a_dataset_of_image_label_batches_as_on_the_array(
    three_classes: tk.TransferClassifier,
    calibration: np.ndarray,
    int8_tflite: Path,
    tmp_path: Path,
) -> None:
    labels = np.zeros(len(calibration), "int32")
    dataset = tf.data.Dataset.from_tensor_slices((calibration, labels)).batch(16)
    path = export_classifier(
        three_classes,
        tmp_path / "from_dataset.tflite",
        format="tflite",
        quantize="int8",
        representative_data=dataset,
    )
    assert path.read_bytes() == int8_tflite.read_bytes()


@pytest.mark.slow
def test_int8_calibration_reads_an_endless_dataset_only_up_to_its_limit(
    three_classes: tk.TransferClassifier, calibration: np.ndarray, tmp_path: Path
) -> None:
    endless = tf.data.Dataset.from_tensor_slices(calibration).repeat()
    path = export_classifier(
        three_classes,
        tmp_path / "endless.tflite",
        format="tflite",
        quantize="int8",
        representative_data=endless,
    )
    assert tk.export.CALIBRATION_IMAGES == 300
    assert interpret(path, calibration[:2]).shape == (2, 3)


@pytest.mark.slow
def test_int8_tflite_of_a_multi_label_classifier_also_returns_the_labels(
    tmp_path: Path, calibration: np.ndarray
) -> None:
    clf = tk.TransferClassifier(TINY_BACKBONE, num_classes=3, weights=None, multi_label=True)
    path = export_classifier(
        clf, tmp_path / "tags.tflite", format="tflite", quantize="int8",
        representative_data=calibration,
    )  # fmt: skip
    runner = tf.lite.Interpreter(model_path=str(path)).get_signature_runner()
    outputs = runner(images=calibration[:8])
    expected = clf.predict(calibration[:8])
    np.testing.assert_allclose(outputs["probabilities"], expected, atol=INT8_TOLERANCE)
    assert outputs["labels"].dtype == np.bool_
    assert outputs["labels"].shape == (8, 3)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"quantize": "int8"}, "Received: representative_data=None"),
        ({"quantize": "dynamic_range", "representative_data": "x"}, "quantize='dynamic_range'"),
        ({"representative_data": "x"}, "Received: quantize=None"),
        ({"integer_output": True}, "pass quantize='int8' too"),
        ({"quantize": "int8", "representative_data": "x", "integer_output": 1}, "True or False"),
    ],
)
def test_int8_arguments_are_refused_before_any_work(
    binary: tk.TransferClassifier, tmp_path: Path, kwargs: dict[str, object], match: str
) -> None:
    with pytest.raises(InvalidArgumentError, match=match):
        export_classifier(binary, tmp_path / "model.tflite", format="tflite", **kwargs)  # type: ignore[arg-type]
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("images", "error", "match"),
    [
        (np.zeros((4, 16, 16, 3), "uint8"), ImageShapeError, "representative_data: .*16, 16"),
        (np.zeros((4, 32, 32, 1), "uint8"), ImageShapeError, "3 \\(RGB\\) channels"),
        (np.zeros((0, 32, 32, 3), "uint8"), DataError, "holds no images"),
    ],
)
def test_int8_representative_images_of_the_wrong_shape_are_refused_before_any_work(
    binary: tk.TransferClassifier,
    tmp_path: Path,
    images: np.ndarray,
    error: type[Exception],
    match: str,
) -> None:
    with pytest.raises(error, match=match):
        export_classifier(
            binary, tmp_path / "model.tflite", format="tflite", quantize="int8",
            representative_data=images,
        )  # fmt: skip
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------------- ONNX


@pytest.fixture(scope="module")
def onnx_file(binary: tk.TransferClassifier, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return binary.export(tmp_path_factory.mktemp("export") / "binary.onnx", format="onnx")


def run_onnx(path: Path, images: np.ndarray) -> dict[str, np.ndarray]:
    import onnxruntime  # in the test extra: the ONNX tests fail loudly without it

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [output.name for output in session.get_outputs()]
    return dict(zip(names, session.run(names, {"images": images}), strict=True))


@pytest.mark.slow
def test_onnx_takes_uint8_images_and_returns_probabilities(onnx_file: Path) -> None:
    import onnxruntime

    session = onnxruntime.InferenceSession(str(onnx_file), providers=["CPUExecutionProvider"])
    [images] = session.get_inputs()
    assert (images.name, images.type, images.shape[1:]) == ("images", "tensor(uint8)", [32, 32, 3])
    assert [(o.name, o.type) for o in session.get_outputs()] == [("probabilities", "tensor(float)")]


@pytest.mark.slow
def test_onnx_matches_predict(
    binary: tk.TransferClassifier, onnx_file: Path, images: np.ndarray
) -> None:
    served = run_onnx(onnx_file, images)["probabilities"]
    np.testing.assert_allclose(served, binary.predict(images), atol=ONNX_TOLERANCE)


@pytest.mark.slow
def test_onnx_of_a_multi_label_classifier_returns_the_labels_at_the_thresholds(
    tmp_path: Path, images: np.ndarray
) -> None:
    clf = tk.TransferClassifier(TINY_BACKBONE, num_classes=3, weights=None, multi_label=True)
    clf.thresholds = (0.3, 0.5, 0.7)
    served = run_onnx(export_classifier(clf, tmp_path / "tags.onnx", format="onnx"), images)
    expected = clf.predict(images)
    np.testing.assert_allclose(served["probabilities"], expected, atol=ONNX_TOLERANCE)
    np.testing.assert_array_equal(served["labels"], expected >= [0.3, 0.5, 0.7])


def test_onnx_without_tf2onnx_names_what_to_install_before_any_work(
    binary: tk.TransferClassifier, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "tf2onnx", None)  # as if it were not installed
    with pytest.raises(MissingDependencyError, match=r"pip install tf2onnx onnx.*without tf2onnx"):
        binary.export(tmp_path / "model.onnx", format="onnx")
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


@pytest.mark.slow
def test_onnx_that_the_exporter_leaves_unservable_is_refused_and_not_written(
    tmp_path: Path,
) -> None:
    # A canary: tf2onnx 1.17 leaves the constants EfficientNet's Normalization layer captured
    # as inputs of the graph (ConvNeXt's depthwise convolutions, as TensorFlow calls). When
    # it learns to freeze them, this test fails: then list EfficientNet as supported.
    clf = tk.TransferClassifier("efficientnet_b0", num_classes=3, weights=None, image_size=32)
    with pytest.raises(
        InvalidArgumentError,
        match=r"left inputs other than 'images'.*"
        r"tf2onnx.convert --saved-model.*backbone='efficientnet_b0'",
    ):
        export_classifier(clf, tmp_path / "model.onnx", format="onnx")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("name", "kwargs", "wanted"),
    [
        ("model.onnx", {"format": "onnx"}, "format='onnx'"),
        (
            "model.tflite",
            {
                "format": "tflite",
                "quantize": "int8",
                "representative_data": np.zeros((1, 32, 32, 3)),
            },
            "quantize='int8'",
        ),
    ],
)
def test_onnx_and_int8_of_a_mixed_precision_classifier_are_refused_before_any_work(
    tmp_path: Path, name: str, kwargs: dict[str, object], wanted: str
) -> None:
    clf = tk.TransferClassifier(
        TINY_BACKBONE, num_classes=3, weights=None, dtype_policy="mixed_bfloat16"
    )
    with pytest.raises(InvalidArgumentError, match=f"{wanted} needs a float32 classifier"):
        export_classifier(clf, tmp_path / name, **kwargs)  # type: ignore[arg-type]
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_cli_export_writes_onnx_and_calibrated_int8_tflite(
    three_classes: tk.TransferClassifier, tmp_path: Path, test_images: np.ndarray
) -> None:
    from PIL import Image

    from transferkit.cli.app import main

    saved = three_classes.save(tmp_path / "clf.keras")
    folder = tmp_path / "representative"
    folder.mkdir()
    for index, image in enumerate(separable_images(48, num_classes=3, seed=2)[0]):
        Image.fromarray(image).save(folder / f"{index}.png")
    onnx_path, int8_path = tmp_path / "clf.onnx", tmp_path / "clf.tflite"
    assert main(["export", str(saved), "--format", "onnx", "--output", str(onnx_path)]) == 0
    int8 = ["--quantize", "int8", "--representative", str(folder)]
    assert (
        main(["export", str(saved), "--format", "tflite", "--output", str(int8_path), *int8]) == 0
    )
    expected = three_classes.predict(test_images)
    served = run_onnx(onnx_path, test_images)["probabilities"]
    np.testing.assert_allclose(served, expected, atol=ONNX_TOLERANCE)
    assert tensor_types(int8_path) <= {"uint8", "int8", "int32"}
    np.testing.assert_allclose(interpret(int8_path, test_images), expected, atol=INT8_TOLERANCE)


def test_cli_int8_export_without_representative_images_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from transferkit.cli.app import main

    output = tmp_path / "clf.tflite"
    status = main(["export", str(tmp_path / "x.keras"), "--format", "tflite", "--quantize", "int8",
                   "--output", str(output)])  # fmt: skip
    assert status == 1
    assert "--representative" in capsys.readouterr().err
    assert not output.exists()
