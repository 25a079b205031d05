"""examples/cats_dogs.py runs as written, offline, on a tiny folder of real image files."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from PIL import Image

import transferkit as tk
from images import write_split_folders

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "cats_dogs.py"


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
