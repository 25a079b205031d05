"""The ``transferkit`` command line.

Parsers live in :mod:`~transferkit.cli.options`, training in :mod:`~transferkit.cli.train` and
reports in :mod:`~transferkit.cli.reports`. Importing it is cheap: TensorFlow loads only when
a subcommand runs.
"""

from transferkit.cli.app import main

__all__ = ["main"]
