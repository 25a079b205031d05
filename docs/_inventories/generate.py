"""Writes the intersphinx inventories the docs build reads offline.

The build machine and CI cannot download ``objects.inv`` from docs.python.org or numpy.org, so
the objects these pages refer to are listed here with their real addresses and written as
Sphinx inventories (format version 2). When the nitpicky build reports an unresolved Python or
NumPy reference, add the object below and run ``python docs/_inventories/generate.py``.
"""

from __future__ import annotations

import zlib
from pathlib import Path

HERE = Path(__file__).parent

# (name, domain:role, page relative to the project's root address). The anchor is the name.
PYTHON = [
    ("object", "py:class", "library/functions.html"),
    ("bool", "py:class", "library/functions.html"),
    ("int", "py:class", "library/functions.html"),
    ("float", "py:class", "library/functions.html"),
    ("str", "py:class", "library/stdtypes.html"),
    ("bytes", "py:class", "library/stdtypes.html"),
    ("list", "py:class", "library/stdtypes.html"),
    ("tuple", "py:class", "library/stdtypes.html"),
    ("dict", "py:class", "library/stdtypes.html"),
    ("set", "py:class", "library/stdtypes.html"),
    ("None", "py:data", "library/constants.html"),
    ("Ellipsis", "py:data", "library/constants.html"),
    ("Exception", "py:exception", "library/exceptions.html"),
    ("ValueError", "py:exception", "library/exceptions.html"),
    ("KeyError", "py:exception", "library/exceptions.html"),
    ("RuntimeError", "py:exception", "library/exceptions.html"),
    ("NotImplementedError", "py:exception", "library/exceptions.html"),
    ("OSError", "py:exception", "library/exceptions.html"),
    ("ImportError", "py:exception", "library/exceptions.html"),
    ("UserWarning", "py:exception", "library/exceptions.html"),
    ("collections.abc.Callable", "py:class", "library/collections.abc.html"),
    ("collections.abc.Iterable", "py:class", "library/collections.abc.html"),
    ("collections.abc.Sequence", "py:class", "library/collections.abc.html"),
    ("collections.abc.Mapping", "py:class", "library/collections.abc.html"),
    ("os.PathLike", "py:class", "library/os.html"),
    ("pathlib.Path", "py:class", "library/pathlib.html"),
    ("tempfile.gettempdir", "py:function", "library/tempfile.html"),
    ("types.MappingProxyType", "py:class", "library/types.html"),
    ("typing.Any", "py:data", "library/typing.html"),
    ("typing.Literal", "py:data", "library/typing.html"),
    ("typing.Union", "py:data", "library/typing.html"),
    ("typing.Optional", "py:data", "library/typing.html"),
    ("doctest", "py:module", "library/doctest.html"),
]

NUMPY = [
    ("numpy.ndarray", "py:class", "reference/generated/numpy.ndarray.html"),
]


def inventory(project: str, version: str, objects: list[tuple[str, str, str]]) -> bytes:
    """The bytes of an ``objects.inv`` listing ``objects``."""
    header = (
        "# Sphinx inventory version 2\n"
        f"# Project: {project}\n"
        f"# Version: {version}\n"
        "# The remainder of this file is compressed using zlib.\n"
    )
    # name domain:role priority uri display-name; "$" in the uri stands for the name, and
    # "-" as display name means the name itself.
    lines = "".join(f"{name} {role} 1 {page}#$ -\n" for name, role, page in sorted(objects))
    return header.encode() + zlib.compress(lines.encode())


def main() -> None:
    """Writes python.inv and numpy.inv next to this file."""
    (HERE / "python.inv").write_bytes(inventory("Python", "3", PYTHON))
    (HERE / "numpy.inv").write_bytes(inventory("NumPy", "stable", NUMPY))


if __name__ == "__main__":
    main()
