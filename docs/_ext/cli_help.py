"""A Sphinx directive that prints the ``transferkit`` command's ``--help`` at build time.

``.. transferkit-help::`` renders the help of the command and of every subcommand it has, so
the reference part of the command-line page cannot drift from the parser.
"""

from __future__ import annotations

import argparse
import os
from typing import Any

from docutils import nodes
from sphinx.application import Sphinx
from sphinx.util.docutils import SphinxDirective

from transferkit.cli import app as _cli

# argparse wraps its help to the terminal width; fix it so the pages do not depend on the
# machine that builds them.
_WIDTH = "88"


def help_texts() -> dict[str, str]:
    """The ``--help`` text of ``transferkit`` (key ``""``) and of each subcommand, in order."""
    previous = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = _WIDTH
    try:
        parser = _cli._parser()
        texts = {"": parser.format_help()}
        for action in parser._actions:  # argparse has no public way to list subcommands
            if isinstance(action, argparse._SubParsersAction):
                texts.update({name: sub.format_help() for name, sub in action.choices.items()})
    finally:
        if previous is None:
            del os.environ["COLUMNS"]
        else:
            os.environ["COLUMNS"] = previous
    return texts


class TransferkitHelp(SphinxDirective):
    """The help of the command and of each subcommand, each under a rubric."""

    def run(self) -> list[nodes.Node]:
        result: list[nodes.Node] = []
        for name, text in help_texts().items():
            command = f"transferkit {name} --help" if name else "transferkit --help"
            result.append(nodes.rubric(text=command))
            block = nodes.literal_block(text, text)
            block["language"] = "text"
            result.append(block)
        return result


def setup(app: Sphinx) -> dict[str, Any]:
    """Registers the directive."""
    app.add_directive("transferkit-help", TransferkitHelp)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
