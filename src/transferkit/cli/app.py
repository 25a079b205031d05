"""The ``transferkit`` command: list backbones, train on a folder, predict, evaluate, export.

Each subcommand is a pair of functions: ``_add_<name>`` declares its arguments and
``_<name>`` runs it; ``_SUBCOMMANDS`` lists the pairs in the order ``--help`` shows them, so
a new subcommand (an ``export``, say) is one more pair and one more entry. Options that
several subcommands take (the model file, ``--batch-size``, ``--image-size``) are declared
once, as parent parsers in :mod:`transferkit.cli.options`, and passed as ``parents=``.
``train`` and ``lr-find`` live in :mod:`transferkit.cli.train`, the report and Grad-CAM
options of ``evaluate`` and ``predict`` in :mod:`transferkit.cli.reports`.

The command is quick to answer: this module imports only the standard library and
transferkit's pure-Python modules at the top, so ``--help`` and usage errors never load
TensorFlow; each ``_<name>`` imports what it needs. TensorFlow's C++ start-up logging is
quieted unless the user set ``TF_CPP_MIN_LOG_LEVEL`` (see :func:`_start_tensorflow`).

Errors transferkit raises on purpose (a bad folder, an unknown backbone, a class mismatch,
weights that cannot be downloaded) and the expected OS errors reach the user as one line,
``transferkit: error: ...``, with exit status 1. Anything else is a bug and keeps its
traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import tempfile
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from transferkit.cli import reports as _cli_reports
from transferkit.cli.options import (
    _batch_size_option,
    _check_data_source,
    _model_option,
    _positive_int,
    _read_table,
    _table_options,
)
from transferkit.cli.train import _add_lr_find, _add_train, _lr_find, _train
from transferkit.errors import (
    DataError,
    InvalidArgumentError,
    TransferkitError,
)

if TYPE_CHECKING:
    from transferkit.classifier import TransferClassifier

__all__ = ["main"]

_PROG = "transferkit"
_MAX_TOP_K = 5
# Images decoded at a time by `predict`, so a large folder never sits in memory at once.
_PREDICT_CHUNK = 256
# The level TF_CPP_MIN_LOG_LEVEL gets when the user has not set it: errors only.
_TF_LOG_LEVEL = "2"
# What TensorFlow logs while it loads, before its log level applies (absl writes everything
# to stderr until it is initialized): INFO/WARNING lines, absl's notice about it, the CPU
# feature notice, and the cuInit error every machine without an NVIDIA driver gets (the
# INFO line "Could not find cuda drivers" already says it).
_LOG_PREFIX = r"\d{4} [\d:.]+ +\d+ \S+:\d+\] "  # absl's: I0000 00:00:1795.1 9867 port.cc:153]
_STARTUP_NOISE = re.compile(
    rf"[IW]{_LOG_PREFIX}"
    r"|WARNING: All log messages before absl::InitializeLog\(\) is called"
    r"|To enable the following instructions:"
    rf"|E{_LOG_PREFIX}failed call to cuInit"
)


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the ``transferkit`` command line.

    Args:
        argv: the arguments, without the program name. Defaults to ``sys.argv[1:]``.

    Returns:
        The exit status: 0 on success, 1 on an error, 2 on a usage error (from argparse).
    """
    args = _parser().parse_args(argv)  # --help and usage errors exit here, before TensorFlow
    try:
        _start_tensorflow()
        _join_distribution()
        status: int = args.run(args)
    except (TransferkitError, OSError) as exc:
        message = " ".join(str(exc).split())  # one line, whatever the message holds
        print(f"{_PROG}: error: {message}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"{_PROG}: interrupted", file=sys.stderr)
        return 130
    return status


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=_PROG,
        description="Transfer learning of image classifiers on Keras 3.",
    )
    subparsers = parser.add_subparsers(title="commands", dest="command", required=True)
    for add, run in _SUBCOMMANDS:
        add(subparsers).set_defaults(run=run)
    return parser


def _join_distribution() -> None:
    """Joins the multi-process run ``KERAS_DISTRIBUTION_*`` describe, if they are set.

    The same command then runs on every machine, data-parallel; process 0 alone prints and
    writes files (other processes print errors only).
    """
    from transferkit import _backend

    if _backend.distribute_from_environment() and not _backend.is_process_zero():
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115  # for the rest of the process


def _start_tensorflow() -> None:
    """Imports TensorFlow, hiding its start-up logging unless ``TF_CPP_MIN_LOG_LEVEL`` is set.

    ``TF_CPP_MIN_LOG_LEVEL`` quiets TensorFlow's C++ logging only once it is running: the
    lines it writes while it loads (oneDNN, CUDA drivers, CPU features) bypass it. So the
    import runs with file descriptor 2 sent to a temporary file, and what it wrote is passed
    on without those lines; anything else (a Python warning, an error) still shows.
    """
    if "tensorflow" in sys.modules or "TF_CPP_MIN_LOG_LEVEL" in os.environ:
        return
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = _TF_LOG_LEVEL
    sys.stderr.flush()
    try:
        saved = os.dup(2)
    except OSError:  # no stderr to redirect
        import tensorflow  # noqa: F401

        return
    with tempfile.TemporaryFile() as capture:
        os.dup2(capture.fileno(), 2)
        try:
            import tensorflow as tf

            tf.config.list_physical_devices()  # device discovery logs at start-up too
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            capture.seek(0)
            written = capture.read().decode(errors="replace").splitlines(keepends=True)
            sys.stderr.write("".join(line for line in written if not _STARTUP_NOISE.match(line)))


# ---------------------------------------------------------------------- backbones


def _add_backbones(subparsers: Any) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "backbones",
        help="list the backbones",
        description=(
            "List the registered backbones (built-in, plugins and, with the hub extra, "
            "keras-hub presets) as a table."
        ),
    )
    parser.add_argument(
        "pattern", nargs="?", default="*", help="an fnmatch pattern such as 'efficientnet*'"
    )
    return parser


def _backbones(args: argparse.Namespace) -> int:
    from transferkit.backbones.registry import get_backbone, list_backbones

    names = list_backbones(args.pattern)
    if not names:
        msg = f"No backbone matches {args.pattern!r}. Received: pattern={args.pattern!r}"
        raise InvalidArgumentError(msg)
    rows = [("NAME", "FAMILY", "SIZE", "PARAMETERS", "PREPROCESSING")]
    for name in names:
        spec = get_backbone(name)
        parameters = f"{spec.parameters:,}" if spec.parameters is not None else "-"
        rows.append(
            (name, spec.family, str(spec.default_image_size), parameters, spec.preprocessing)
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for name, family, size, parameters, preprocessing in rows:
        print(
            f"{name:<{widths[0]}}  {family:<{widths[1]}}  {size:>{widths[2]}}  "
            f"{parameters:>{widths[3]}}  {preprocessing}"
        )
    return 0


# ---------------------------------------------------------------------- predict


def _add_predict(subparsers: Any) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "predict",
        parents=[_model_option(), _batch_size_option(), _cli_reports.tta_option()],
        help="classify image files",
        description=(
            "Classify image files with a saved model. Folders are searched for .bmp, .gif, "
            ".jpeg, .jpg and .png files. Images are resized to the model's size."
        ),
    )
    parser.add_argument("images", nargs="+", type=Path, help="image files or folders")
    parser.add_argument("--json", action="store_true", help="print JSON instead of text")
    parser.add_argument(
        "--top-k",
        type=_positive_int,
        help=f"classes to show per image, most probable first (default: up to {_MAX_TOP_K}); "
        "a multi-label model shows every class above its threshold instead",
    )
    _cli_reports.add_grad_cam_option(parser)
    return parser


def _predict(args: argparse.Namespace) -> int:
    from transferkit.classifier import load_classifier
    from transferkit.data import check_images, list_images

    files: list[Path] = []
    for path in args.images:
        found = list_images(path)
        if not found:
            msg = f"No image files in {os.fspath(path)!r}. Received: {os.fspath(path)!r}"
            raise DataError(msg)
        files.extend(found)
    check_images(files)  # every file, before any prediction is printed
    if args.grad_cam is not None:
        _cli_reports.check_grad_cam_path(args.grad_cam)
    clf = load_classifier(args.model)
    names = clf.class_names or [str(i) for i in range(clf.num_classes)]
    if clf.multi_label:
        results = _predict_multi_label(args, clf, files, names)
    else:
        results = _predict_single_label(args, clf, files, names)
    if args.json:
        print(json.dumps(results, indent=2))
    if args.grad_cam is not None:
        _cli_reports.write_grad_cam(clf, files, args.grad_cam, quiet=args.json)
    return 0


def _predicted(
    clf: TransferClassifier, files: list[Path], args: argparse.Namespace
) -> Iterator[Any]:
    """Each file with its probabilities, decoding a chunk of files at a time."""
    from transferkit.data import load_images

    for start in range(0, len(files), _PREDICT_CHUNK):
        chunk = files[start : start + _PREDICT_CHUNK]
        probabilities = clf.predict(
            load_images(chunk, clf.image_size), batch_size=args.batch_size, tta=args.tta
        )
        yield from zip(chunk, probabilities, strict=True)


def _predict_single_label(
    args: argparse.Namespace, clf: TransferClassifier, files: list[Path], names: list[str]
) -> list[dict[str, Any]]:
    import numpy as np

    top_k = args.top_k if args.top_k is not None else min(_MAX_TOP_K, clf.num_classes)
    if top_k > clf.num_classes:
        msg = (
            f"--top-k cannot exceed the model's {clf.num_classes} classes. "
            f"Received: --top-k={top_k}"
        )
        raise InvalidArgumentError(msg)
    results = []
    for file, row in _predicted(clf, files, args):
        best = np.argsort(-row, kind="stable")[:top_k]
        ranked = [(names[i], float(row[i])) for i in best]
        if args.json:
            results.append(
                {
                    "path": os.fspath(file),
                    "class_name": ranked[0][0],
                    "predictions": [{"class_name": name, "probability": p} for name, p in ranked],
                }
            )
        else:
            shown = "  ".join(f"{name} {p:.3f}" for name, p in ranked)
            print(f"{os.fspath(file)}  {shown}", flush=True)
    return results


def _predict_multi_label(
    args: argparse.Namespace, clf: TransferClassifier, files: list[Path], names: list[str]
) -> list[dict[str, Any]]:
    if args.top_k is not None:
        msg = (
            "--top-k ranks the classes of a single-label model; a multi-label model shows "
            f"every class above its threshold. Received: --top-k={args.top_k}"
        )
        raise InvalidArgumentError(msg)
    thresholds = clf.thresholds or ()
    results = []
    for file, row in _predicted(clf, files, args):
        above = [k for k in range(len(names)) if row[k] >= thresholds[k]]
        if args.json:
            results.append(
                {
                    "path": os.fspath(file),
                    "labels": [names[k] for k in above],
                    "probabilities": {name: float(p) for name, p in zip(names, row, strict=True)},
                }
            )
        else:
            shown = "  ".join(f"{names[k]} {row[k]:.3f}" for k in above) or "(no label)"
            print(f"{os.fspath(file)}  {shown}", flush=True)
    return results


# ---------------------------------------------------------------------- evaluate


def _add_evaluate(subparsers: Any) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "evaluate",
        parents=[
            _model_option(),
            _batch_size_option(),
            _cli_reports.tta_option(),
            _table_options(),
        ],
        help="measure loss and accuracy on a folder of images or a CSV table of them",
        description=(
            "Measure a saved model's loss and metrics on DATA_DIR, a folder with one "
            "subfolder of images per class, or on --csv, a table of images and labels; the "
            "classes must be the model's."
        ),
    )
    parser.add_argument("data_dir", type=Path, nargs="?", help="the folder of class subfolders")
    _cli_reports.add_report_option(parser)
    return parser


def _evaluate(args: argparse.Namespace) -> int:
    from transferkit.classifier import load_classifier
    from transferkit.inference.interpret import interpret

    _check_data_source(args)
    if args.report is not None:
        _cli_reports.prepare_report_folder(args.report)
    clf = load_classifier(args.model)
    data = args.data_dir
    if args.csv is not None:
        table = _read_table(
            args, clf.image_size, class_names=clf.class_names, multi_label=clf.multi_label
        )
        data = table.train
    # One pass gives the numbers evaluate() gives, and the report's.
    result = interpret(clf, data, batch_size=args.batch_size, tta=args.tta)
    print("  ".join(f"{name} {value:.4f}" for name, value in sorted(result.scores().items())))
    if args.report is not None:
        _cli_reports.write_report(result, args.report)
    return 0


# ---------------------------------------------------------------------- export


def _add_export(subparsers: Any) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "export",
        parents=[_model_option()],
        help="write a saved model for serving (SavedModel, TFLite or ONNX)",
        description=(
            "Write MODEL for serving: a TensorFlow SavedModel folder, a TFLite file or an "
            "ONNX file that takes raw images and returns class probabilities (signature "
            "'serving_default', input 'images', output 'probabilities')."
        ),
    )
    parser.add_argument(
        "--format",
        choices=("saved_model", "tflite", "onnx"),
        default="saved_model",
        help="the artifact to write (default: saved_model)",
    )
    parser.add_argument(
        "--output",
        "-o",
        type=Path,
        required=True,
        help="the SavedModel folder to create, or a file name ending in .tflite or .onnx",
    )
    parser.add_argument(
        "--quantize",
        choices=("dynamic_range", "int8"),
        default=None,
        help="TFLite only: int8 weights (dynamic_range), or int8 weights and activations "
        "calibrated on --representative (int8) (default: float)",
    )
    parser.add_argument(
        "--representative",
        type=Path,
        help="with --quantize int8: a folder of a few hundred training images to calibrate on",
    )
    return parser


def _export(args: argparse.Namespace) -> int:
    from transferkit.classifier import load_classifier

    if (args.quantize == "int8") != (args.representative is not None):
        msg = (
            "--quantize int8 calibrates on images, and only it does: give --representative "
            "DIR with it, and not without it. "
            f"Received: --quantize={args.quantize}, --representative={args.representative}"
        )
        raise InvalidArgumentError(msg)
    clf = load_classifier(args.model)
    exported = clf.export(
        args.output,
        format=args.format,
        quantize=args.quantize,
        representative_data=args.representative,
    )
    print(os.fspath(exported))
    return 0


_SUBCOMMANDS: tuple[
    tuple[Callable[[Any], argparse.ArgumentParser], Callable[[argparse.Namespace], int]], ...
] = (
    (_add_backbones, _backbones),
    (_add_train, _train),
    (_add_lr_find, _lr_find),
    (_add_predict, _predict),
    (_add_evaluate, _evaluate),
    (_add_export, _export),
)
