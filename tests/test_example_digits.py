"""examples/digits.py, the main job, runs end to end offline and writes what it promises.

One quick run (``--quick``: every step, small settings) in a subprocess where every download
fails, shared by the tests below.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

import transferkit as tk
from offline import offline_env

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "digits.py"
RESULT_LINE = re.compile(r"^ +(fit\(\)|recipe) +test accuracy (\S+) \((\S+) s\)$", re.M)
FIGURES = ("history.png", "confusion_matrix.png", "top_losses.png", "grad_cam.png")


@pytest.fixture(scope="module")
def quick_run(
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[subprocess.CompletedProcess[str], Path]:
    work = tmp_path_factory.mktemp("digits")
    output = work / "out"
    result = subprocess.run(
        [sys.executable, os.fspath(EXAMPLE), "--quick", "--output-dir", os.fspath(output)],
        capture_output=True, text=True, timeout=600, check=False,
        env=offline_env(work / "keras_home", TF_CPP_MIN_LOG_LEVEL="2"),
    )  # fmt: skip
    return result, output


@pytest.mark.slow
def test_runs_to_the_end_offline(quick_run):
    result, _ = quick_run
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Traceback" not in result.stderr


@pytest.mark.slow
def test_prints_the_test_accuracy_and_time_of_fit_and_of_the_recipe(quick_run):
    result, _ = quick_run
    found = {
        name: (accuracy, seconds) for name, accuracy, seconds in RESULT_LINE.findall(result.stdout)
    }
    assert set(found) == {"fit()", "recipe"}, result.stdout[-3000:]
    for accuracy, seconds in found.values():
        assert 0.0 <= float(accuracy) <= 1.0
        assert float(seconds) >= 0.0


@pytest.mark.slow
def test_says_the_pretrained_weights_stand_in_for_imagenet_weights(quick_run):
    result, output = quick_run
    assert "Pretrained mobilenet_v2 on digits 0-4" in result.stdout
    assert "stand in for ImageNet weights, which need a download" in result.stdout
    assert (output / "pretrained_0-4.weights.h5").is_file()


@pytest.mark.slow
@pytest.mark.parametrize("name", FIGURES)
def test_writes_each_figure_as_a_png(quick_run, name):
    _, output = quick_run
    with Image.open(output / name) as image:
        assert image.format == "PNG"
        image.verify()


@pytest.mark.slow
def test_saves_the_fit_classifier_with_the_new_classes_and_both_stages(quick_run):
    _, output = quick_run
    clf = tk.load_classifier(output / "digits.keras")
    assert clf.class_names == ["5", "6", "7", "8", "9"]
    assert clf.image_size == (32, 32)
    assert set(clf.history.stages) == {"head", "fine_tune"}
    assert "head_learning_rate" in [decision["name"] for decision in clf.history.decisions]
