"""Training under ``tf.distribute`` strategies, for real, on CPU devices.

Each scenario runs in its own interpreter so that splitting the CPU into logical devices
(which must happen before TensorFlow touches a device) and starting a cluster never leak into
other tests. The scripts print one JSON line of measurements; the tests assert on them.

* ``MirroredStrategy`` over two logical CPU devices: the whole recipe (``fit_head`` with and
  without cached features, ``unfreeze``, ``fine_tune``, ``predict``, ``evaluate``,
  save/load, export), compared step for step with the same training on one device, with
  the freezing invariants checked on the mirrored variables.
* ``MultiWorkerMirroredStrategy`` with two worker processes on 127.0.0.1: the cluster forms
  and serves predictions; training is refused with a clear error because Keras 3 cannot run
  ``fit`` there (a canary checks that this is still so).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.tensorflow_only(reason="tf.distribute strategies")
TESTS = Path(__file__).parent
# Mirrored and single-device float32 training differ by summation order only.
TRAINING_TOLERANCE = 1e-5


def environment() -> dict[str, str]:
    return {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONPATH": str(TESTS)}


def last_json_line(output: str) -> dict[str, Any]:
    result: dict[str, Any] = json.loads(output.strip().splitlines()[-1])
    return result


# ---------------------------------------------------------------------- MirroredStrategy

MIRRORED_SCRIPT = """
import json
import sys

import tensorflow as tf

# Two logical CPU devices, before anything else touches TensorFlow's devices.
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)

import keras
import numpy as np
from conftest import TINY_BACKBONE, separable_images

import transferkit as tk
from transferkit.backbones import freezing as _freezing
from transferkit.errors import InvalidArgumentError

UNFREEZE_FROM = "conv2"  # conv2, dwconv3 and conv4 train; conv1 and every BN stay
folder = sys.argv[1]
strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
images, labels = separable_images(64)
data = tf.data.Dataset.from_tensor_slices((images, labels)).batch(16)  # global batches
result = {"replicas": strategy.num_replicas_in_sync}


def build(strategy):
    keras.utils.set_random_seed(0)
    return tk.TransferClassifier(
        TINY_BACKBONE, num_classes=2, weights=None, augmentation=None, dropout=0.0,
        strategy=strategy,
    )


def mirrored(clf):
    return all(isinstance(v.value, tf.distribute.DistributedValues) for v in clf.model.weights)


def max_difference(first, second):
    pairs = zip(first.model.get_weights(), second.model.get_weights(), strict=True)
    return max(float(np.max(np.abs(a - b))) for a, b in pairs)


def values(layers):
    return [[np.array(w) for w in layer.get_weights()] for layer in layers]


def identical(before, after):
    return all(
        np.array_equal(a, b) for old, new in zip(before, after, strict=True)
        for a, b in zip(old, new, strict=True)
    )


class Steps(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.count = 0

    def on_train_batch_end(self, batch, logs=None):
        self.count += 1


clf, single = build(strategy), build(None)
single.model.set_weights(clf.model.get_weights())
result["variables_mirrored"] = mirrored(clf)

# Stage one, full pass through the model, then with cached features (the default).
backbone_before = values([clf.backbone])
steps = Steps()
for model in (clf, single):
    model.fit_head(data, epochs=1, learning_rate=1e-2, cache_features=False, verbose=0,
                   callbacks=[steps] if model is clf else [])
result["steps_per_epoch"] = steps.count
result["head_difference"] = max_difference(clf, single)
# Cached features are reshuffled every epoch, in an order that differs under a strategy;
# one batch of all 64 images makes the step independent of that order.
for model in (clf, single):
    model.fit_head(data.unbatch().batch(64), epochs=1, learning_rate=1e-2, verbose=0)
result["cached_head_difference"] = max_difference(clf, single)
result["head_backbone_unchanged"] = identical(backbone_before, values([clf.backbone]))

# Stage two.
for model in (clf, single):
    model.unfreeze(UNFREEZE_FROM)
index = clf.unfrozen_from
layers = clf.backbone.layers
batch_norm = _freezing.batch_norm_layers(clf.backbone)
frozen_before = values(layers[:index])
bn_before = values(batch_norm)
unfrozen = [layer for layer in layers[index:] if layer.trainable_weights]
unfrozen_before = values(unfrozen)
for model in (clf, single):
    model.fine_tune(data, epochs=1, learning_rate=1e-3, verbose=0)
result["tune_difference"] = max_difference(clf, single)
result["tune_frozen_unchanged"] = identical(frozen_before, values(layers[:index]))
result["tune_batch_norm_unchanged"] = identical(bn_before, values(batch_norm))
result["tune_unfrozen_layers"] = len(unfrozen)
result["tune_unfrozen_all_changed"] = all(
    not identical([old], [new])
    for old, new in zip(unfrozen_before, values(unfrozen), strict=True)
)
result["replicas_in_sync"] = all(
    all(np.array_equal(local.numpy(), locals_[0].numpy()) for local in locals_)
    for locals_ in (strategy.experimental_local_results(v.value) for v in clf.model.weights)
)
# Copies: the discriminative fine-tuning below appends to the history.
result["history_epochs"] = list(clf.history.epochs)
result["history_stages"] = list(clf.history.stages)

# Inference, persistence, export.
expected = single.predict(images)
result["predict_difference"] = float(np.max(np.abs(clf.predict(images) - expected)))
scores, single_scores = clf.evaluate(data), single.evaluate(data)
result["evaluate_difference"] = max(abs(scores[k] - single_scores[k]) for k in single_scores)
loaded = tk.load_classifier(clf.save(f"{folder}/clf.keras"), strategy=strategy)
result["reloaded_variables_mirrored"] = mirrored(loaded)
result["reloaded_predict_difference"] = float(
    np.max(np.abs(loaded.predict(images) - expected))
)
result["reloaded_unfrozen_from"] = loaded.unfrozen_from == clf.unfrozen_from
served = tf.saved_model.load(str(clf.export(f"{folder}/served")))
probabilities = served.serve(tf.constant(images))["probabilities"].numpy()
result["export_difference"] = float(np.max(np.abs(probabilities - expected)))

# Discriminative rates (one optimizer per block, in a MultiOptimizer) with a schedule, and
# the learning-rate finder, which must leave every mirrored variable as it was.
for model in (clf, single):
    model.fine_tune(data, epochs=1, learning_rate=(1e-4, 1e-2), schedule="one_cycle", verbose=0)
result["discriminative_tune_difference"] = max_difference(clf, single)
before_sweep = [np.array(w) for w in clf.model.get_weights()]
sweep = clf.find_learning_rate(data, steps=10)
result["sweep_suggestion_positive"] = sweep.suggestion > 0
result["sweep_left_weights"] = all(
    np.array_equal(a, b) for a, b in zip(before_sweep, clf.model.get_weights(), strict=True)
)

try:
    clf.fine_tune(data, epochs=1, optimizer=keras.optimizers.Adam(), verbose=0)
    result["outside_optimizer_error"] = None
except InvalidArgumentError as error:
    result["outside_optimizer_error"] = str(error)

print(json.dumps(result))
"""


@pytest.fixture(scope="module")
def mirrored(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    completed = subprocess.run(
        [
            sys.executable,
            "-c",
            textwrap.dedent(MIRRORED_SCRIPT),
            str(tmp_path_factory.mktemp("mirrored")),
        ],
        env=environment(),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    return last_json_line(completed.stdout)


@pytest.mark.slow
def test_mirrored_strategy_runs_on_two_logical_cpu_devices(mirrored: dict[str, Any]) -> None:
    assert mirrored["replicas"] == 2


@pytest.mark.slow
def test_mirrored_classifier_variables_are_mirrored(mirrored: dict[str, Any]) -> None:
    assert mirrored["variables_mirrored"]


def test_mirrored_batch_size_is_the_global_batch(mirrored: dict[str, Any]) -> None:
    # 64 images in batches of 16: 4 steps, each splitting 16 images over the 2 replicas.
    assert mirrored["steps_per_epoch"] == 4


@pytest.mark.parametrize("stage", ["head", "cached_head", "tune", "discriminative_tune"])
def test_mirrored_training_matches_single_device_training(
    mirrored: dict[str, Any], stage: str
) -> None:
    assert mirrored[f"{stage}_difference"] <= TRAINING_TOLERANCE


def test_mirrored_learning_rate_sweep_suggests_and_changes_nothing(
    mirrored: dict[str, Any],
) -> None:
    assert mirrored["sweep_suggestion_positive"]
    assert mirrored["sweep_left_weights"]


def test_mirrored_head_training_leaves_the_backbone_unchanged(mirrored: dict[str, Any]) -> None:
    assert mirrored["head_backbone_unchanged"]


def test_mirrored_fine_tuning_leaves_frozen_layers_unchanged(mirrored: dict[str, Any]) -> None:
    assert mirrored["tune_frozen_unchanged"]


def test_mirrored_fine_tuning_leaves_batch_norm_unchanged(mirrored: dict[str, Any]) -> None:
    assert mirrored["tune_batch_norm_unchanged"]


def test_mirrored_fine_tuning_changes_every_unfrozen_layer(mirrored: dict[str, Any]) -> None:
    assert mirrored["tune_unfrozen_layers"] > 0
    assert mirrored["tune_unfrozen_all_changed"]


def test_mirrored_replicas_stay_in_sync(mirrored: dict[str, Any]) -> None:
    assert mirrored["replicas_in_sync"]


def test_mirrored_history_numbers_epochs_across_stages(mirrored: dict[str, Any]) -> None:
    assert mirrored["history_epochs"] == [0, 1, 2]
    assert mirrored["history_stages"] == ["head", "head", "fine_tune"]


@pytest.mark.parametrize("check", ["predict", "evaluate", "reloaded_predict", "export"])
def test_mirrored_inference_matches_single_device(mirrored: dict[str, Any], check: str) -> None:
    assert mirrored[f"{check}_difference"] <= TRAINING_TOLERANCE


def test_classifier_loaded_under_a_strategy_is_mirrored(mirrored: dict[str, Any]) -> None:
    assert mirrored["reloaded_variables_mirrored"]
    assert mirrored["reloaded_unfrozen_from"]


def test_optimizer_created_outside_the_strategy_scope_is_refused(
    mirrored: dict[str, Any],
) -> None:
    assert "outside the classifier's strategy scope" in mirrored["outside_optimizer_error"]


# ---------------------------------------------------------------------- two workers

WORKER_SCRIPT = """
import json
import os

import tensorflow as tf

# Reads TF_CONFIG and joins the cluster; must come before other TensorFlow work.
strategy = tf.distribute.MultiWorkerMirroredStrategy()

import keras
import numpy as np
from conftest import TINY_BACKBONE, separable_images

import transferkit as tk
from transferkit.errors import UnsupportedStrategyError

images, labels = separable_images(16)
keras.utils.set_random_seed(int(json.loads(os.environ["TF_CONFIG"])["task"]["index"]))
clf = tk.TransferClassifier(
    TINY_BACKBONE, num_classes=2, weights=None, augmentation=None, strategy=strategy
)
result = {
    "replicas": strategy.num_replicas_in_sync,
    # Seeds differ per worker: equal sums show the strategy synced the initial values.
    "weights_sum": float(sum(np.abs(w).sum() for w in clf.model.get_weights())),
    "predictions": clf.predict(images).round(6).tolist(),
}
for name, call in [
    ("fit_head", lambda: clf.fit_head((images, labels), epochs=1, verbose=0)),
    ("evaluate", lambda: clf.evaluate((images, labels))),
]:
    try:
        call()
        result[name] = None
    except UnsupportedStrategyError as error:
        result[name] = str(error)

# Canary: plain Keras fit under this strategy. When it starts to work, Keras has fixed
# tensorflow/tensorflow#72388 and transferkit's guard can go.
with strategy.scope():
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)])
    model.compile("sgd", "mse")
try:
    model.fit(np.ones((8, 4), "float32"), np.ones((8, 1), "float32"), batch_size=4, verbose=0)
    result["keras_fit_error"] = None
except Exception as error:
    result["keras_fit_error"] = type(error).__name__

print(json.dumps(result))
"""


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@pytest.fixture(scope="module")
def workers() -> list[dict[str, Any]]:
    cluster = {"worker": [f"127.0.0.1:{free_port()}" for _ in range(2)]}
    processes = []
    for index in range(2):
        config = {"cluster": cluster, "task": {"type": "worker", "index": index}}
        processes.append(
            subprocess.Popen(
                [sys.executable, "-c", textwrap.dedent(WORKER_SCRIPT)],
                env={**environment(), "TF_CONFIG": json.dumps(config)},
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        )
    results = []
    try:
        for process in processes:
            stdout, stderr = process.communicate(timeout=240)
            assert process.returncode == 0, stderr[-3000:]
            results.append(last_json_line(stdout))
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.communicate()
    return results


@pytest.mark.slow
def test_two_workers_form_one_cluster(workers: list[dict[str, Any]]) -> None:
    assert [result["replicas"] for result in workers] == [2, 2]


@pytest.mark.slow
def test_two_workers_start_from_the_same_variables(workers: list[dict[str, Any]]) -> None:
    first, second = workers
    assert first["weights_sum"] == second["weights_sum"]


def test_two_workers_predict_the_same(workers: list[dict[str, Any]]) -> None:
    first, second = workers
    assert first["predictions"] == second["predictions"]


@pytest.mark.parametrize("call", ["fit_head", "evaluate"])
def test_training_under_two_workers_is_refused_with_a_clear_error(
    workers: list[dict[str, Any]], call: str
) -> None:
    for result in workers:
        assert "Keras 3 cannot train or evaluate" in result[call]
        assert "2 workers" in result[call]


def test_keras_fit_still_fails_under_two_workers(workers: list[dict[str, Any]]) -> None:
    # If this fails, Keras now trains under MultiWorkerMirroredStrategy: remove
    # transferkit.training.checkpoints.check_strategy_can_train and the refusal tests above.
    assert [result["keras_fit_error"] for result in workers] == ["ValueError", "ValueError"]
