"""The documentation's code runs: page snippets, docstring examples and the plugin example.

Snippets in the pages run under Sphinx's doctest builder; docstring examples run with
:mod:`doctest`; the example plugin package is installed into a temporary folder and used from
a fresh interpreter. Each runs in a subprocess so that what the examples register (backbones,
environment variables, working directories) cannot leak into other tests.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

import transferkit as tk

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
PLUGIN_EXAMPLE = ROOT / "examples" / "plugin_example"
PLUGIN_ENV_VAR = "TRANSFERKIT_DISABLE_PLUGINS"


def _python(
    code: str, *, pythonpath: Path | None = None, cwd: Path = ROOT
) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    env.pop(PLUGIN_ENV_VAR, None)
    if pythonpath is not None:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(pythonpath), env.get("PYTHONPATH")]))
    return subprocess.run(
        [sys.executable, "-c", code], env=env, cwd=cwd, capture_output=True, text=True, check=False
    )


def _load(path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"_docs_{path.stem}", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# ---------------------------------------------------------------------------- page snippets


@pytest.mark.slow
def test_every_runnable_snippet_in_the_pages_passes(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "sphinx", "-q", "-b", "doctest", str(DOCS), str(tmp_path)],
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
        capture_output=True,
        text=True,
        check=False,
    )
    report = (tmp_path / "output.txt").read_text() if (tmp_path / "output.txt").exists() else ""
    assert result.returncode == 0, report + result.stdout[-4000:] + result.stderr[-4000:]
    summary = re.search(r"(\d+) tests\s+(\d+) failures? in tests", report)
    assert summary is not None, report
    tests, failures = int(summary[1]), int(summary[2])
    assert tests >= 20, report
    assert failures == 0, report


# ---------------------------------------------------------------------------- docstrings

_RUN_DOCSTRING_EXAMPLES = """
import doctest, importlib, json, pkgutil
import transferkit

results = {}
flags = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE
for info in pkgutil.walk_packages(transferkit.__path__, "transferkit."):
    module = importlib.import_module(info.name)
    outcome = doctest.testmod(module, optionflags=flags, report=True)
    if outcome.attempted:
        results[info.name] = [outcome.attempted, outcome.failed]
print(json.dumps(results))
"""


@pytest.fixture(scope="module")
def docstring_examples() -> tuple[dict[str, list[int]], str]:
    result = _python(_RUN_DOCSTRING_EXAMPLES)
    assert result.returncode == 0, result.stderr[-4000:]
    *failures, summary = result.stdout.strip().splitlines()
    return json.loads(summary), "\n".join(failures)


@pytest.mark.slow
def test_docstring_examples_pass(docstring_examples: tuple[dict[str, list[int]], str]) -> None:
    results, failure_report = docstring_examples
    failed = {name: counts for name, counts in results.items() if counts[1]}
    assert not failed, failure_report


@pytest.mark.slow
def test_docstring_examples_are_found_in_the_public_modules(
    docstring_examples: tuple[dict[str, list[int]], str],
) -> None:
    results, _ = docstring_examples
    assert {
        "transferkit.backbones.registry",
        "transferkit.classifier.transfer_classifier",
    } <= set(results)


# ---------------------------------------------------------------------------- plugin example

_USE_PLUGIN = """
import json, sys
import numpy as np
import transferkit as tk

listed = tk.list_backbones("tiny*")
imported_when_listed = "transferkit_tiny_convnet" in sys.modules
spec = tk.get_backbone("tiny_convnet")
clf = tk.TransferClassifier("tiny_convnet", num_classes=2, image_size=32, weights=None,
                            backbone_kwargs={"width": 4})
rng = np.random.default_rng(0)
images = rng.integers(0, 256, size=(8, 32, 32, 3), dtype=np.uint8)
clf.fit_head((images, np.arange(8) % 2), epochs=1, verbose=0)
clf.save("plugin.keras")
restored = tk.load_classifier("plugin.keras")
print(json.dumps({
    "listed": listed,
    "imported_when_listed": imported_when_listed,
    "module": spec.constructor.__module__,
    "feature_shape": list(clf.backbone.output_shape),
    "same_predictions": bool(np.allclose(restored.predict(images), clf.predict(images))),
}))
"""


@pytest.fixture(scope="module")
def plugin_site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The example package installed as a user would, into a folder of its own."""
    work = tmp_path_factory.mktemp("plugin")
    source = work / "plugin_example"
    # Build from a copy so that no build output lands in the repository.
    shutil.copytree(PLUGIN_EXAMPLE, source, ignore=shutil.ignore_patterns("build", "*.egg-info"))
    site = work / "site"
    subprocess.run(
        [
            sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-index",
            "--no-build-isolation", "--target", str(site), str(source),
        ],
        check=True,
        capture_output=True,
        text=True,
    )  # fmt: skip
    return site


@pytest.mark.slow
def test_plugin_example_declares_its_entry_point(plugin_site: Path) -> None:
    (dist_info,) = plugin_site.glob("transferkit_tiny_convnet-*.dist-info")
    entry_points = (dist_info / "entry_points.txt").read_text()
    assert "[transferkit.backbones]" in entry_points
    assert "tiny_convnet = transferkit_tiny_convnet:tiny_convnet" in entry_points


@pytest.mark.slow
def test_installed_plugin_example_is_listed_built_trained_and_reloaded(
    plugin_site: Path, tmp_path: Path
) -> None:
    result = _python(_USE_PLUGIN, pythonpath=plugin_site, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-4000:]
    outcome = json.loads(result.stdout.strip().splitlines()[-1])
    assert outcome["listed"] == ["tiny_convnet"]
    assert outcome["imported_when_listed"] is False
    assert outcome["module"] == "transferkit_tiny_convnet"
    assert outcome["feature_shape"] == [None, 4, 4, 16]  # three stride-2 blocks, 4 * width
    assert outcome["same_predictions"] is True


# ---------------------------------------------------------------------------- generated parts


def test_shipped_inventories_are_what_the_generator_writes() -> None:
    generate = _load(DOCS / "_inventories" / "generate.py")
    for name, project, version, objects in (
        ("python.inv", "Python", "3", generate.PYTHON),
        ("numpy.inv", "NumPy", "stable", generate.NUMPY),
    ):
        shipped = (DOCS / "_inventories" / name).read_bytes()
        assert shipped == generate.inventory(project, version, objects), name


def test_backbone_table_has_one_row_per_registered_backbone_from_its_spec() -> None:
    backbone_table = _load(DOCS / "_ext" / "backbone_table.py")
    rows = {row[0]: row for row in backbone_table.backbone_rows()}
    assert sorted(rows) == tk.list_backbones()
    spec = tk.get_backbone("mobilenet_v2")
    assert rows["mobilenet_v2"][2] == str(spec.default_image_size)
    assert rows["mobilenet_v2"][3] == ", ".join(map(str, spec.weight_sizes or ()))
    assert rows["mobilenet_v2"][5] == f"{spec.parameters:,}"
