"""Files saved by release 0.1.0 (tests/fixtures, made by make_release_files.py) still load.

They were written before the package was laid out in subpackages: loading them proves that
the registered serializable names and the file format did not move with the code.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import transferkit as tk

FIXTURES = Path(__file__).parent / "fixtures"
EXPECTED = np.load(FIXTURES / "release-0.1.0-expected.npz")
LABELS = json.loads((FIXTURES / "release-0.1.0-labels.json").read_text())


@pytest.mark.parametrize("kind", ["single", "multi"])
def test_a_release_file_predicts_what_it_predicted_when_saved(kind: str) -> None:
    name = "single" if kind == "single" else "multi-label"
    clf = tk.load_classifier(FIXTURES / f"release-0.1.0-{name}.keras")
    probabilities = clf.predict(EXPECTED["images"])
    np.testing.assert_allclose(probabilities, EXPECTED[kind], atol=1e-6, rtol=0)
    assert clf.predict_labels(EXPECTED["images"]) == LABELS[kind]


def test_a_release_file_keeps_its_training_state() -> None:
    single = tk.load_classifier(FIXTURES / "release-0.1.0-single.keras")
    assert single.class_names == ["a", "b", "c"]
    assert single.history.stages.count("head") == 2
    assert single.unfrozen_from is not None
    multi = tk.load_classifier(FIXTURES / "release-0.1.0-multi-label.keras")
    assert multi.thresholds == pytest.approx((0.4, 0.6))


def test_a_release_file_loads_in_a_process_without_its_backbone_registered() -> None:
    # The tiny backbone is registered by conftest here; the file must not need it.
    code = (
        "import numpy as np, transferkit as tk, sys\n"
        f"clf = tk.load_classifier({str(FIXTURES / 'release-0.1.0-single.keras')!r})\n"
        f"d = np.load({str(FIXTURES / 'release-0.1.0-expected.npz')!r})\n"
        "np.testing.assert_allclose(clf.predict(d['images']), d['single'], atol=1e-6, rtol=0)\n"
        "print('ok')\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().endswith("ok")
