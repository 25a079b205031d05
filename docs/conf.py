"""Sphinx configuration for the transferkit documentation.

Build: ``python -m sphinx -W -n -b html docs docs/_build/html`` (warnings fail, nitpicky).

Code in these pages runs. Snippets in ``.. testcode::``/``.. doctest::`` blocks are executed by
Sphinx's doctest builder (``python -m sphinx -b doctest docs docs/_build/doctest``), which
``tests/test_docs.py`` runs in CI; a snippet that cannot run offline (ImageNet weights, the
cats-and-dogs download) is a plain ``code-block`` and says so in the text. The ``>>>``
examples in the package's docstrings are run by ``tests/test_docs.py`` with :mod:`doctest`,
not here, so each example runs exactly once.
"""

from __future__ import annotations

import os
import sys
import warnings
from importlib.metadata import version as _version
from pathlib import Path
from typing import Any

DOCS = Path(__file__).parent
sys.path.insert(0, str(DOCS / "_ext"))

# The pages document what transferkit ships, not whatever plugins the build machine has.
os.environ["TRANSFERKIT_DISABLE_PLUGINS"] = "1"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

project = "transferkit"
author = "The transferkit developers"
copyright = "The transferkit developers"
release = _version("transferkit")
version = ".".join(release.split(".")[:2])

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinx.ext.intersphinx",
    "sphinx.ext.doctest",
    "sphinx.ext.viewcode",
    "sphinx_autodoc_typehints",
    "backbone_table",
    "cli_help",
    "interpret_figures",
]

# sphinx-autodoc-typehints 3.6 calls a Sphinx API that Sphinx 9 deprecates; nothing to act on.
warnings.filterwarnings("ignore", module=r"sphinx_autodoc_typehints\.")

exclude_patterns = ["_build"]
nitpicky = True

html_theme = "furo"
html_title = f"transferkit {release}"

# -- autodoc, napoleon, type hints ---------------------------------------------------------
autodoc_member_order = "bysource"
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_rtype = False
typehints_defaults = "comma"
always_use_bars_union = True

# -- intersphinx ---------------------------------------------------------------------------
# The build runs offline (here and in CI), so the inventories ship in the repository:
# docs/_inventories/generate.py writes them, listing the objects these pages refer to, with
# the real addresses. Links still point at docs.python.org and numpy.org.
intersphinx_mapping = {
    "python": ("https://docs.python.org/3", "_inventories/python.inv"),
    "numpy": ("https://numpy.org/doc/stable", "_inventories/numpy.inv"),
}

# Keras and TensorFlow publish no Sphinx inventory. Their classes in type hints are shown
# under their public names (not keras.src.models.model.Model or DatasetV2), linked to their
# API pages; any other reference to them (in docstring text, base classes) cannot resolve.
nitpick_ignore_regex = [
    (r"py:.*", r"(keras|tf|tensorflow)\..*"),
]


def _external_types() -> dict[type, tuple[str, str]]:
    import keras
    import tensorflow as tf

    tf_api = "https://www.tensorflow.org/api_docs/python/tf"
    return {
        keras.Model: ("keras.Model", "https://keras.io/api/models/model/"),
        keras.Sequential: ("keras.Sequential", "https://keras.io/api/models/sequential/"),
        keras.layers.Layer: ("keras.layers.Layer", "https://keras.io/api/layers/base_layer/"),
        keras.optimizers.Optimizer: (
            "keras.optimizers.Optimizer",
            "https://keras.io/api/optimizers/",
        ),
        keras.callbacks.Callback: (
            "keras.callbacks.Callback",
            "https://keras.io/api/callbacks/base_callback/",
        ),
        tf.data.Dataset: ("tf.data.Dataset", f"{tf_api}/data/Dataset"),
        tf.distribute.Strategy: ("tf.distribute.Strategy", f"{tf_api}/distribute/Strategy"),
        tf.Tensor: ("tf.Tensor", f"{tf_api}/Tensor"),
    }


_EXTERNAL_TYPES = _external_types()


def _format_external_type(annotation: Any, config: Any) -> str | None:
    try:
        found = _EXTERNAL_TYPES.get(annotation)
    except TypeError:  # an unhashable annotation is none of these classes
        return None
    return None if found is None else f"`{found[0]} <{found[1]}>`__"


typehints_formatter = _format_external_type
# A function cannot be pickled into Sphinx's environment cache, which only means every build
# reads every page again (CI builds from scratch anyway).
suppress_warnings = ["config.cache"]

# -- doctest -------------------------------------------------------------------------------
# ``>>>`` blocks in docstrings are run by tests/test_docs.py, not by the doctest builder.
doctest_test_doctest_blocks = ""
doctest_global_setup = """
import os
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
"""
