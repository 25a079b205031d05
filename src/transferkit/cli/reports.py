"""The command line's interpretation options: ``--report``, ``--grad-cam`` and ``--tta``.

``transferkit evaluate MODEL DATA_DIR --report OUT_DIR`` writes ``report.json``,
``confusion_matrix.png`` (``confusion_matrices.png`` for a multi-label model) and
``top_losses.png`` and prints the per-class table;
``transferkit predict MODEL IMAGE --grad-cam OUT.png`` overlays Grad-CAM heatmaps on the
images. Like :mod:`transferkit.cli.app`, this module imports only the standard library at the
top, so ``--help`` never loads TensorFlow.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from transferkit import _validation
from transferkit.errors import InvalidArgumentError, MissingDependencyError

if TYPE_CHECKING:
    from transferkit.classifier import TransferClassifier
    from transferkit.inference.interpret import Interpretation, MultiLabelInterpretation

__all__ = [
    "GRAD_CAM_IMAGES",
    "add_grad_cam_option",
    "add_report_option",
    "check_grad_cam_path",
    "prepare_report_folder",
    "tta_option",
    "write_grad_cam",
    "write_report",
]

#: The most images ``--grad-cam`` draws (the first ones given).
GRAD_CAM_IMAGES = 16
_TOP_LOSSES = 9


@functools.cache
def tta_option() -> argparse.ArgumentParser:
    """The parent parser of ``--tta N``."""
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument(
        "--tta",
        type=_views,
        default=1,
        metavar="N",
        help="test-time augmentation: average the probabilities of N views of each image, "
        "2 being the image and its mirror image (up to 12: crops, see the docs; "
        "default: 1, none)",
    )
    return parser


def add_report_option(parser: argparse.ArgumentParser) -> None:
    """Adds ``--report OUT_DIR`` to ``evaluate``."""
    parser.add_argument(
        "--report",
        type=Path,
        metavar="OUT_DIR",
        help="write report.json, confusion_matrix.png (confusion_matrices.png for a "
        "multi-label model) and top_losses.png into OUT_DIR (created if missing) and print "
        "the per-class table",
    )


def add_grad_cam_option(parser: argparse.ArgumentParser) -> None:
    """Adds ``--grad-cam OUT.png`` to ``predict``."""
    parser.add_argument(
        "--grad-cam",
        type=Path,
        metavar="OUT.png",
        help=f"draw Grad-CAM heatmaps of the predicted classes over the images (the first "
        f"{GRAD_CAM_IMAGES}) into this image file",
    )


def prepare_report_folder(folder: Path) -> None:
    """Creates the ``--report`` folder (before any work); its parent must exist."""
    if folder.exists() and not folder.is_dir():
        msg = f"--report must be a folder, not a file. Received: --report={os.fspath(folder)!r}"
        raise InvalidArgumentError(msg)
    if not folder.parent.is_dir():
        msg = (
            "The folder --report is created in does not exist. "
            f"Received: --report={os.fspath(folder)!r}"
        )
        raise InvalidArgumentError(msg)
    folder.mkdir(exist_ok=True)


def check_grad_cam_path(path: Path) -> None:
    """Raises before any work if the ``--grad-cam`` file cannot be written."""
    if not path.parent.is_dir():
        msg = (
            "The folder to write --grad-cam into does not exist. "
            f"Received: --grad-cam={os.fspath(path)!r}"
        )
        raise InvalidArgumentError(msg)


def write_report(
    interpretation: Interpretation | MultiLabelInterpretation, folder: Path
) -> list[Path]:
    """Writes ``report.json`` and, with matplotlib, the two figures; prints the table.

    ``report.json`` holds the loss, the views averaged, the class names, the
    scikit-learn-style report, the most confused pairs and the top losses (with file
    paths); for a single-label model also the accuracy and the confusion matrix (rows
    true, columns predicted), for a multi-label one the exact-match ratio, the
    thresholds and each class's ``[[TN, FP], [FN, TP]]`` counts. The figures are
    ``confusion_matrix.png`` (``confusion_matrices.png`` for multi-label) and
    ``top_losses.png``.

    Returns:
        The files written.
    """
    from transferkit.inference.interpret import MultiLabelInterpretation

    top = interpretation.top_losses(_TOP_LOSSES)
    content: dict[str, Any] = {
        "loss": interpretation.loss,
        "examples": len(interpretation),
        "tta_views": interpretation.views,
        "class_names": list(interpretation.class_names),
    }
    if isinstance(interpretation, MultiLabelInterpretation):
        content["exact_match"] = interpretation.exact_match
        content["thresholds"] = list(interpretation.thresholds)
        content["confusion_matrices"] = interpretation.confusion_matrices.tolist()
        figure = "confusion_matrices.png"
    else:
        content["accuracy"] = interpretation.accuracy
        content["confusion_matrix"] = interpretation.confusion_matrix.tolist()
        figure = "confusion_matrix.png"
    content["report"] = interpretation.report()
    content["most_confused"] = [list(pair) for pair in interpretation.most_confused()]
    content["top_losses"] = [vars(row) for row in top]
    written = [folder / "report.json"]
    from transferkit import _backend  # loads Keras: not before a command runs

    if _backend.is_process_zero():  # once in a multi-process run
        written[0].write_text(json.dumps(content, indent=2) + "\n")
    try:
        if isinstance(interpretation, MultiLabelInterpretation):
            written.append(interpretation.plot_confusion_matrices(folder / figure))
        else:
            written.append(interpretation.plot_confusion_matrix(folder / figure))
        written.append(interpretation.plot_top_losses(len(top), folder / "top_losses.png"))
    except MissingDependencyError as exc:
        print(f"figures not written: {exc}", file=sys.stderr)
    print(interpretation.report_table())
    return written


def write_grad_cam(
    clf: TransferClassifier, files: Sequence[Path], path: Path, *, quiet: bool = False
) -> Path:
    """Draws the Grad-CAM overlay of the first :data:`GRAD_CAM_IMAGES` files into ``path``."""
    from transferkit import plot
    from transferkit.data import load_images

    shown = list(files[:GRAD_CAM_IMAGES])
    target = plot.grad_cam(clf, load_images(shown, clf.image_size), path)
    note = f" (the first {len(shown)} of {len(files)} images)" if len(files) > len(shown) else ""
    print(f"Grad-CAM: {os.fspath(target)}{note}", file=sys.stderr if quiet else sys.stdout)
    return target


def _views(text: str) -> int:
    try:
        views = _validation.positive_int("value", int(text))
    except ValueError:
        views = 0
    if not 1 <= views <= 12:
        msg = f"must be a number of views from 1 to 12, not {text!r}"
        raise argparse.ArgumentTypeError(msg)
    return views
