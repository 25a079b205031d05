"""Backbone weights: local files round-trip, wrong files and failed downloads raise ours."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import keras
import numpy as np
import pytest

import transferkit as tk
from conftest import TINY_BACKBONE
from offline import offline_env
from transferkit.errors import WeightsUnavailableError


def variables_of(model: keras.Model) -> list[np.ndarray]:
    return [keras.ops.convert_to_numpy(variable) for variable in model.weights]


@pytest.mark.slow
def test_weights_file_round_trips_bit_identical(tmp_path: Path) -> None:
    spec = tk.get_backbone("mobilenet_v2")
    original = spec.build(32, weights=None)
    path = tmp_path / "b.weights.h5"
    original.save_weights(path)
    fresh = variables_of(spec.build(32, weights=None))
    loaded = variables_of(spec.build(32, weights=path))
    saved = variables_of(original)
    # Random initialization differs, so equality below comes from the file.
    assert not all(np.array_equal(a, b) for a, b in zip(fresh, saved, strict=True))
    assert len(loaded) == len(saved)
    assert all(np.array_equal(a, b) for a, b in zip(loaded, saved, strict=True))


def test_weights_path_may_be_a_string(tmp_path: Path) -> None:
    spec = tk.get_backbone(TINY_BACKBONE)
    original = spec.build(16, weights=None)
    path = tmp_path / "tiny.weights.h5"
    original.save_weights(path)
    loaded = spec.build(16, weights=str(path))
    assert all(
        np.array_equal(a, b)
        for a, b in zip(variables_of(loaded), variables_of(original), strict=True)
    )


@pytest.mark.filterwarnings("ignore:Skipping nested container:UserWarning")
def test_weights_of_another_backbone_raise_weights_unavailable(tmp_path: Path) -> None:
    path = tmp_path / "tiny.weights.h5"
    tk.get_backbone(TINY_BACKBONE).build(32, weights=None).save_weights(path)
    with pytest.raises(WeightsUnavailableError) as raised:
        tk.get_backbone("mobilenet_v2").build(32, weights=path)
    message = str(raised.value)
    assert "into backbone 'mobilenet_v2'" in message
    assert "save_weights() of the same backbone" in message
    assert message.endswith(f"Received: weights={path!r}")


def test_a_file_that_is_not_a_weights_file_raises_weights_unavailable(tmp_path: Path) -> None:
    path = tmp_path / "notes.txt"
    path.write_text("not weights")
    with pytest.raises(WeightsUnavailableError, match="Could not load weights file"):
        tk.get_backbone(TINY_BACKBONE).build(16, weights=path)


OFFLINE_SCRIPT = textwrap.dedent(
    """
    import json
    import transferkit as tk
    from transferkit.errors import WeightsUnavailableError

    try:
        tk.get_backbone("mobilenet_v2").build(96, weights="imagenet")
    except WeightsUnavailableError as exc:
        print(json.dumps({"message": str(exc), "cause": repr(exc.__cause__)}))
    else:
        print(json.dumps({"message": None}))
    """
)


@pytest.fixture(scope="module")
def offline_imagenet_failure(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """What building with ImageNet weights reports when the download cannot happen."""
    keras_home = tmp_path_factory.mktemp("keras_home")
    env = offline_env(keras_home, TF_CPP_MIN_LOG_LEVEL="3")
    completed = subprocess.run(
        [sys.executable, "-c", OFFLINE_SCRIPT],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert "Traceback" not in completed.stderr
    result: dict[str, str] = json.loads(completed.stdout.strip().splitlines()[-1])
    return result


@pytest.mark.slow
def test_failed_imagenet_download_raises_weights_unavailable(
    offline_imagenet_failure: dict[str, str],
) -> None:
    message = offline_imagenet_failure["message"]
    assert message is not None
    assert message.startswith("Could not download the ImageNet weights for 'mobilenet_v2'")
    assert message.endswith("Received: weights='imagenet'")


@pytest.mark.slow
def test_failed_imagenet_download_says_how_to_work_offline(
    offline_imagenet_failure: dict[str, str],
) -> None:
    message = offline_imagenet_failure["message"]
    assert "To work offline, pass weights=<path of a weights file>" in message
    assert "~/.keras/models" in message
    # The file to fetch elsewhere is named, from Keras' own URL.
    assert "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_96_no_top.h5" in message


@pytest.mark.slow
def test_failed_imagenet_download_keeps_the_network_error_as_cause(
    offline_imagenet_failure: dict[str, str],
) -> None:
    assert "URL fetch failure" in offline_imagenet_failure["cause"]
