"""Every public name and module works as an attribute of ``transferkit``, in a fresh process."""

from __future__ import annotations

import subprocess
import sys
import types
from pathlib import Path

import pytest

import transferkit as tk

PACKAGE = Path(tk.__file__).parent
# The public modules, read off the package's layout: every top-level module without an
# underscore, and the two public subpackages; the other subpackages hold the code.
PUBLIC_MODULES = (*sorted(p.stem for p in PACKAGE.glob("[!_]*.py")), "classifier", "data")


def test_every_public_module_is_in_all() -> None:
    assert set(PUBLIC_MODULES) <= set(tk.__all__)


def test_every_name_in_all_works_as_an_attribute_in_a_fresh_process() -> None:
    code = (
        "import importlib, types, transferkit as tk\n"
        "for name in tk.__all__:\n"
        "    value = getattr(tk, name)\n"
        f"    if name in {PUBLIC_MODULES!r}:\n"
        "        assert isinstance(value, types.ModuleType), name\n"
        "        assert importlib.import_module('transferkit.' + name) is value, name\n"
        "    else:\n"
        "        assert not isinstance(value, types.ModuleType), name\n"
        "print(len(tk.__all__))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert int(result.stdout.strip().splitlines()[-1]) == len(tk.__all__)


def test_each_facade_exports_its_implementation_objects() -> None:
    # A facade re-exports: the same objects, not copies.
    from transferkit.backbones import pooling
    from transferkit.training import schedules

    assert tk.pooling.TokenPooling is pooling.TokenPooling
    assert tk.schedules.OneCycle is schedules.OneCycle
    for name in PUBLIC_MODULES:
        module = getattr(tk, name)
        assert isinstance(module, types.ModuleType)
        for exported in getattr(module, "__all__", ()):
            assert hasattr(module, exported), f"transferkit.{name}.{exported}"


def test_a_wrong_name_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="no_such_thing"):
        tk.no_such_thing  # noqa: B018
