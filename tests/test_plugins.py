"""Backbone plugins, installed as real distributions (``.dist-info`` on ``PYTHONPATH``).

Discovery happens once per process, so each scenario runs in a fresh interpreter; related
checks share one script to keep the number of (TensorFlow-importing) subprocesses small.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

# ---------------------------------------------------------------- helpers: writing plugins

GOOD_MODULE = """
import keras
import transferkit as tk


def _build(include_top=False, weights=None, input_shape=(32, 32, 3)):
    inputs = keras.Input(input_shape)
    x = keras.layers.Conv2D(6, 3, strides=2, padding="same")(inputs)
    return keras.Model(inputs, x)


def _spec(name):
    return tk.Backbone(
        name, _build, "tf", 32, 6, "plugin", min_image_size=8, imagenet_weights=False
    )


plug_object = _spec("plug_object")


def make_plug_callable():
    return _spec("plug_callable")


def make_misnamed():
    return _spec("not_the_entry_point_name")


not_a_backbone = 42
"""

BROKEN_MODULE = """
import transferkit_no_such_dependency  # the plugin's missing dependency
"""

# Importing it would be a bug: a clashing entry point is skipped without being loaded.
CLASH_MODULE = """
raise RuntimeError("the clashing plugin must never be imported")
"""


def write_distribution(
    site: Path, dist_name: str, module_name: str, source: str, entry_points: dict[str, str]
) -> None:
    """Installs a one-module distribution into ``site`` the way pip lays it out."""
    (site / f"{module_name}.py").write_text(textwrap.dedent(source))
    info = site / f"{dist_name.replace('-', '_')}-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist_name}\nVersion: 0.1\n")
    lines = [f"{name} = {target}" for name, target in entry_points.items()]
    (info / "entry_points.txt").write_text("[transferkit.backbones]\n" + "\n".join(lines) + "\n")
    (info / "RECORD").write_text("")


def run_script(site: Path, script: str, **env: str) -> dict[str, Any]:
    """Runs ``script`` in a fresh interpreter that has ``site`` on its path; returns its JSON."""
    environment = {k: v for k, v in os.environ.items() if k != "TRANSFERKIT_DISABLE_PLUGINS"}
    paths = [str(site), *filter(None, [environment.get("PYTHONPATH")])]
    environment.update(PYTHONPATH=os.pathsep.join(paths), TF_CPP_MIN_LOG_LEVEL="3", **env)
    completed = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script)],
        env=environment,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    result: dict[str, Any] = json.loads(completed.stdout.strip().splitlines()[-1])
    return result


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder holding three installed plugin distributions: good, broken and clashing."""
    site = tmp_path_factory.mktemp("site")
    write_distribution(
        site,
        "tk-plugin-good",
        "tk_plugin_good",
        GOOD_MODULE,
        {
            "plug_object": "tk_plugin_good:plug_object",
            "plug_callable": "tk_plugin_good:make_plug_callable",
            "plug_misnamed": "tk_plugin_good:make_misnamed",
            "plug_not_backbone": "tk_plugin_good:not_a_backbone",
        },
    )
    write_distribution(
        site,
        "tk-plugin-broken",
        "tk_plugin_broken",
        BROKEN_MODULE,
        {"plug_broken": "tk_plugin_broken:backbone"},
    )
    write_distribution(
        site,
        "tk-plugin-clash",
        "tk_plugin_clash",
        CLASH_MODULE,
        {"mobilenet_v2": "tk_plugin_clash:backbone"},
    )
    return site


# ---------------------------------------------------------------- plugins enabled

ENABLED_SCRIPT = """
import json
import sys
import warnings

import keras

import transferkit as tk
from transferkit.errors import PluginLoadError, TransferkitWarning

result = {}
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    result["listed"] = tk.list_backbones("plug_*")
result["warnings"] = [
    str(w.message) for w in caught if issubclass(w.category, TransferkitWarning)
]
result["imported_when_listed"] = "tk_plugin_good" in sys.modules

for name in ("plug_object", "plug_callable"):
    model = tk.get_backbone(name).build(16, weights=None)
    result[name] = list(model.output_shape)
clf = tk.TransferClassifier("plug_object", num_classes=3, weights=None, augmentation=None)
result["classifier_output"] = list(clf.model.output_shape)

for name in ("plug_broken", "plug_misnamed", "plug_not_backbone"):
    messages = []
    for _ in range(2):
        try:
            tk.get_backbone(name)
        except PluginLoadError as exc:
            messages.append(str(exc))
            result[name + "_is_import_error"] = isinstance(exc, ImportError)
    result[name] = messages

spec = tk.get_backbone("mobilenet_v2")
result["builtin_kept"] = spec.constructor is keras.applications.MobileNetV2
result["builtin_builds"] = tk.get_backbone("mobilenet_v2").build(32, weights=None).output_shape[-1]
result["listed_after_failures"] = tk.list_backbones("plug_*")
result["clash_imported"] = "tk_plugin_clash" in sys.modules
print(json.dumps(result))
"""


@pytest.fixture(scope="module")
def enabled(site: Path) -> dict[str, Any]:
    return run_script(site, ENABLED_SCRIPT)


@pytest.mark.slow
def test_installed_plugins_are_listed(enabled: dict[str, Any]) -> None:
    assert enabled["listed"] == [
        "plug_broken",
        "plug_callable",
        "plug_misnamed",
        "plug_not_backbone",
        "plug_object",
    ]


@pytest.mark.slow
def test_listing_does_not_import_plugins(enabled: dict[str, Any]) -> None:
    assert enabled["imported_when_listed"] is False


def test_plugin_given_as_a_backbone_builds(enabled: dict[str, Any]) -> None:
    assert enabled["plug_object"] == [None, 8, 8, 6]


def test_plugin_given_as_a_zero_argument_callable_builds(enabled: dict[str, Any]) -> None:
    assert enabled["plug_callable"] == [None, 8, 8, 6]


def test_plugin_backbone_works_in_a_classifier(enabled: dict[str, Any]) -> None:
    assert enabled["classifier_output"] == [None, 3]


def test_broken_plugin_raises_plugin_load_error_naming_entry_point_and_distribution(
    enabled: dict[str, Any],
) -> None:
    message = enabled["plug_broken"][0]
    assert "entry point 'plug_broken' = 'tk_plugin_broken:backbone'" in message
    assert "from tk-plugin-broken 0.1" in message
    assert "transferkit_no_such_dependency" in message
    assert "TRANSFERKIT_DISABLE_PLUGINS=1" in message


def test_plugin_load_error_is_an_import_error(enabled: dict[str, Any]) -> None:
    assert enabled["plug_broken_is_import_error"] is True


def test_broken_plugin_fails_the_same_way_every_time(enabled: dict[str, Any]) -> None:
    first, second = enabled["plug_broken"]
    assert first == second


def test_broken_plugin_leaves_built_ins_working(enabled: dict[str, Any]) -> None:
    assert enabled["builtin_builds"] == 1280


def test_broken_plugin_leaves_listing_working(enabled: dict[str, Any]) -> None:
    assert enabled["listed_after_failures"] == enabled["listed"]


def test_plugin_whose_backbone_name_differs_from_the_entry_point_is_rejected(
    enabled: dict[str, Any],
) -> None:
    message = enabled["plug_misnamed"][0]
    assert "'not_the_entry_point_name'" in message
    assert "must match" in message


def test_plugin_naming_something_else_than_a_backbone_is_rejected(
    enabled: dict[str, Any],
) -> None:
    message = enabled["plug_not_backbone"][0]
    assert "must name a transferkit.Backbone" in message
    assert message.endswith("Received: 42")


def test_plugin_named_like_a_built_in_is_skipped_with_a_warning(enabled: dict[str, Any]) -> None:
    [warning] = enabled["warnings"]
    assert "Skipping backbone plugin (entry point 'mobilenet_v2'" in warning
    assert "from tk-plugin-clash 0.1" in warning


def test_plugin_named_like_a_built_in_leaves_the_built_in(enabled: dict[str, Any]) -> None:
    assert enabled["builtin_kept"] is True
    assert enabled["clash_imported"] is False


# ---------------------------------------------------------------- plugins disabled

DISABLED_SCRIPT = """
import json
import warnings

import transferkit as tk
from transferkit.errors import TransferkitWarning, UnknownBackboneError

with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    listed = tk.list_backbones("plug_*")
try:
    tk.get_backbone("plug_object")
    unknown = None
except UnknownBackboneError as exc:
    unknown = str(exc)
print(json.dumps({
    "listed": listed,
    "unknown": unknown,
    "has_builtin": "mobilenet_v2" in tk.list_backbones(),
    "warnings": [str(w.message) for w in caught if issubclass(w.category, TransferkitWarning)],
}))
"""


@pytest.fixture(scope="module")
def disabled(site: Path) -> dict[str, Any]:
    return run_script(site, DISABLED_SCRIPT, TRANSFERKIT_DISABLE_PLUGINS="1")


@pytest.mark.slow
def test_disable_variable_hides_installed_plugins(disabled: dict[str, Any]) -> None:
    assert disabled["listed"] == []
    assert disabled["unknown"].startswith("Unknown backbone 'plug_object'")


@pytest.mark.slow
def test_disable_variable_keeps_the_built_ins(disabled: dict[str, Any]) -> None:
    assert disabled["has_builtin"] is True
    assert disabled["warnings"] == []
