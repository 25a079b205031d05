"""examples/cats_dogs.py runs as written, offline, on a tiny folder of real image files."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

import transferkit as tk
from images import write_split_folders
from offline import offline_env

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "cats_dogs.py"


@pytest.mark.slow
def test_cats_dogs_example_trains_saves_and_plots(tmp_path):
    data_dir = write_split_folders(tmp_path / "data", {"cat": 3, "dog": 3}, {"cat": 3, "dog": 3})
    output = tmp_path / "out"

    result = subprocess.run(
        [sys.executable, os.fspath(EXAMPLE), "--data-dir", os.fspath(data_dir),
         "--weights", "none", "--epochs", "1", "--fine-tune-epochs", "1",
         "--image-size", "32", "--output-dir", os.fspath(output)],
        capture_output=True, text=True, timeout=600, check=False,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
    )  # fmt: skip

    assert result.returncode == 0, result.stderr[-3000:]
    assert (
        "Classes ['cat', 'dog']; images {'train': 6, 'validation': 5, 'test': 1}" in result.stdout
    )
    assert "Test accuracy: " in result.stdout
    clf = tk.load_classifier(output / "cats_dogs.keras")
    assert clf.class_names == ["cat", "dog"]
    assert clf.history.stages == ["head", "fine_tune"]
    assert clf.unfrozen_from == 100
    for name in ("history.png", "predictions.png"):
        with Image.open(output / name) as image:
            assert image.format == "PNG"
            image.verify()


@pytest.mark.slow
def test_offline_without_a_data_dir_is_one_line_saying_how_to_pass_one(tmp_path):
    result = subprocess.run(
        [sys.executable, os.fspath(EXAMPLE), "--output-dir", os.fspath(tmp_path / "out")],
        capture_output=True, text=True, timeout=600, check=False,
        env=offline_env(tmp_path / "keras_home", TF_CPP_MIN_LOG_LEVEL="3"),
    )  # fmt: skip

    lines = [line for line in result.stderr.splitlines() if line.startswith("cats_dogs.py:")]
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert len(lines) == 1
    assert lines[0].startswith("cats_dogs.py: error: could not download the cats and dogs images")
    assert "pass --data-dir with a folder of train/ and validation/ class folders" in lines[0]


@pytest.mark.slow
def test_offline_with_imagenet_weights_is_one_line_naming_the_weights_file(tmp_path):
    data_dir = write_split_folders(tmp_path / "data", {"cat": 3, "dog": 3}, {"cat": 3, "dog": 3})

    result = subprocess.run(
        [sys.executable, os.fspath(EXAMPLE), "--data-dir", os.fspath(data_dir),
         "--image-size", "96", "--output-dir", os.fspath(tmp_path / "out")],
        capture_output=True, text=True, timeout=600, check=False,
        env=offline_env(tmp_path / "keras_home", TF_CPP_MIN_LOG_LEVEL="3"),
    )  # fmt: skip

    lines = [line for line in result.stderr.splitlines() if line.startswith("cats_dogs.py:")]
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert len(lines) == 1
    assert "Could not download the ImageNet weights for 'mobilenet_v2'" in lines[0]
    assert "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_96_no_top.h5" in lines[0]
