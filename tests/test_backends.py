"""Keras backends: what only one backend can do (``transferkit._backend``), and files that cross.

The suite itself runs on TensorFlow and, in CI, on JAX (every test not marked slow or
tensorflow_only). These tests cover what a single-backend run cannot: a ``.keras`` file saved
under one backend and loaded under the other, each in its own interpreter (the backend is
fixed at import), predicting the same.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

import transferkit as tk
from transferkit import _backend
from transferkit.data import sharding
from transferkit.errors import (
    InvalidArgumentError,
    UnsupportedBackendError,
    UnsupportedStrategyError,
)

TESTS = Path(__file__).parent
# The same float32 graph on two backends: the kernels differ, the results agree this far.
CROSS_BACKEND_TOLERANCE = 1e-5

CHILD = """
import sys

import keras
import numpy as np
from conftest import TINY_BACKBONE, separable_images

import transferkit as tk

mode, path, out = sys.argv[1:4]
images, labels = separable_images(24, num_classes=3)
if mode == "save":
    keras.utils.set_random_seed(0)
    clf = tk.TransferClassifier(TINY_BACKBONE, num_classes=3, weights=None)
    clf.fit_head((images, labels), epochs=1, batch_size=8, verbose=0)
    clf.save(path)
else:
    clf = tk.load_classifier(path)
np.save(out, clf.predict(images))
print(keras.backend.backend())
"""


def run_child(backend: str, *args: str) -> str:
    env = {
        **os.environ,
        "KERAS_BACKEND": backend,
        "TF_CPP_MIN_LOG_LEVEL": "3",
        "PYTHONPATH": str(TESTS),
    }
    done = subprocess.run(
        [sys.executable, "-c", CHILD, *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout.strip().splitlines()[-1]


@pytest.mark.slow
@pytest.mark.parametrize(
    ("saved_on", "loaded_on"),
    [("tensorflow", "jax"), ("jax", "tensorflow")],
    ids=["tensorflow-to-jax", "jax-to-tensorflow"],
)
def test_a_keras_file_predicts_the_same_on_the_other_backend(
    tmp_path: Path, saved_on: str, loaded_on: str
) -> None:
    path = str(tmp_path / "clf.keras")
    assert run_child(saved_on, "save", path, str(tmp_path / "saved.npy")) == saved_on
    assert run_child(loaded_on, "load", path, str(tmp_path / "loaded.npy")) == loaded_on
    saved = np.load(tmp_path / "saved.npy")
    loaded = np.load(tmp_path / "loaded.npy")
    assert saved.shape == (24, 3)
    np.testing.assert_allclose(loaded, saved, atol=CROSS_BACKEND_TOLERANCE)


def test_gradients_are_those_of_the_function_on_this_backend() -> None:
    x = np.array([[1.0, -2.0], [0.5, 3.0]], np.float32)
    y = np.array([2.0, 1.0], np.float32)

    def function(a: object, b: object) -> tuple[object, object]:
        value = keras.ops.sum(keras.ops.square(a) * b)
        return value, keras.ops.stop_gradient(value)

    (grad_x, grad_y), aux = _backend.gradients(function, [x, y])
    np.testing.assert_allclose(keras.ops.convert_to_numpy(grad_x), 2 * x * y, rtol=1e-6)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(grad_y), (x**2).sum(0), rtol=1e-6)
    assert float(keras.ops.convert_to_numpy(aux)) == pytest.approx(float((x**2 * y).sum()))


def test_a_single_process_is_process_zero_and_writes() -> None:
    assert _backend.process_index() == 0
    assert _backend.process_count() == 1
    assert _backend.is_process_zero()


def test_the_backend_is_the_one_keras_reports(keras_backend: str) -> None:
    assert _backend.name() == keras_backend == keras.backend.backend()


def test_a_tf_distribute_strategy_is_taken_on_tensorflow_only(keras_backend: str) -> None:
    def build() -> tk.TransferClassifier:
        return tk.TransferClassifier(
            "tiny_bn",
            num_classes=2,
            weights=None,
            strategy=tf.distribute.OneDeviceStrategy("/cpu:0"),
        )

    if keras_backend == "tensorflow":
        assert build().strategy is not None
        return
    with pytest.raises(UnsupportedStrategyError, match=r"keras\.distribution.*strategy="):
        build()


def test_a_single_process_trains_on_whole_batches() -> None:
    assert _backend.data_shard() is None
    assert sharding.steps_per_epoch(10, 4) == 3  # the partial batch is trained on
    rows = sharding.row_batcher(4)(tf.data.Dataset.range(10))
    assert [batch.tolist() for batch in rows.as_numpy_iterator()] == [
        [0, 1, 2, 3],
        [4, 5, 6, 7],
        [8, 9],
    ]
    dataset = tf.data.Dataset.range(10).batch(3)
    assert sharding.share_of_batches(dataset, 4) is dataset
    with _backend.local_batches():  # nothing to switch off
        pass


def test_a_global_batch_that_does_not_divide_among_the_processes_is_refused() -> None:
    with pytest.raises(InvalidArgumentError, match=r"multiple of 4.*batch_size=10"):
        sharding._local_size(10, 4)
    assert sharding._local_size(12, 4) == 3


def test_no_distribution_variables_means_no_multi_process_run(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for variable in _backend.DISTRIBUTION_VARIABLES:
        monkeypatch.delenv(variable, raising=False)
    assert _backend.distribute_from_environment() is False
    assert keras.distribution.distribution() is None


def test_distribution_variables_that_cannot_start_a_run_are_refused_clearly(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for variable in _backend.DISTRIBUTION_VARIABLES:
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setenv("KERAS_DISTRIBUTION_NUM_PROCESSES", "2")
    with pytest.raises(UnsupportedBackendError, match="KERAS_DISTRIBUTION_PROCESS_ID"):
        _backend.distribute_from_environment()
    assert keras.distribution.distribution() is None
