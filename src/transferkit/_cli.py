"""The ``transferkit`` command: list backbones, train on a folder, predict, evaluate, export.

Each subcommand is a pair of functions: ``_add_<name>`` declares its arguments and
``_<name>`` runs it; ``_SUBCOMMANDS`` lists the pairs in the order ``--help`` shows them, so
a new subcommand (an ``export``, say) is one more pair and one more entry. Options that
several subcommands take (the model file, ``--batch-size``, ``--image-size``) are declared
once, in the parent parsers of the "shared options" section, and passed as ``parents=``.

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
import functools
import json
import os
import re
import sys
import tempfile
import warnings
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from transferkit import _cli_reports, _validation
from transferkit.errors import (
    DataError,
    InvalidArgumentError,
    MissingDependencyError,
    TransferkitError,
    TransferkitWarning,
)

if TYPE_CHECKING:
    from transferkit.classifier import TransferClassifier
    from transferkit.history import Stage

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


# ---------------------------------------------------------------------- shared options
# Parent parsers (add_help=False) for options several subcommands take; cached so each is
# built once per process.


@functools.cache
def _model_option() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("model", type=Path, help="a .keras file written by transferkit")
    return parser


@functools.cache
def _batch_size_option() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument(
        "--batch-size", type=_positive_int, default=32, help="images per batch (default: 32)"
    )
    return parser


@functools.cache
def _image_size_option() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument(
        "--image-size",
        type=_image_size,
        help="N or HxW (default: the backbone's size, 224 for mobilenet_v2)",
    )
    return parser


# ---------------------------------------------------------------------- backbones


def _add_backbones(subparsers: Any) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "backbones",
        help="list the backbones",
        description="List the registered backbones (built-in and plugins) as a table.",
    )
    parser.add_argument(
        "pattern", nargs="?", default="*", help="an fnmatch pattern such as 'efficientnet*'"
    )
    return parser


def _backbones(args: argparse.Namespace) -> int:
    from transferkit._registry import get_backbone, list_backbones

    names = list_backbones(args.pattern)
    if not names:
        msg = f"No backbone matches {args.pattern!r}. Received: pattern={args.pattern!r}"
        raise InvalidArgumentError(msg)
    rows = [("NAME", "SIZE", "PARAMETERS", "PREPROCESSING")]
    for name in names:
        spec = get_backbone(name)
        parameters = f"{spec.parameters:,}" if spec.parameters is not None else "-"
        rows.append((name, str(spec.default_image_size), parameters, spec.preprocessing))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        name, size, parameters, preprocessing = row
        print(
            f"{name:<{widths[0]}}  {size:>{widths[1]}}  {parameters:>{widths[2]}}  {preprocessing}"
        )
    return 0


# ---------------------------------------------------------------------- train


def _add_train(subparsers: Any) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "train",
        parents=[_image_size_option(), _batch_size_option(), _table_options(), _label_options()],
        help="train a classifier on a folder of images or a CSV table of them",
        description=(
            "Train a classifier on DATA_DIR: a folder with one subfolder of images per class, "
            "or train/ and validation/ (and test/) folders of them; or on --csv, a table of "
            "image file names and their labels (several per image for a multi-label "
            "classifier). Stage one trains a new head on the frozen backbone; stage two "
            "fine-tunes the top of the backbone. The model is saved to --output, with its "
            "history plot beside it."
        ),
    )
    parser.add_argument("data_dir", type=Path, nargs="?", help="the folder of images")
    parser.add_argument(
        "--backbone", default="mobilenet_v2", help="a backbone name (default: mobilenet_v2)"
    )
    parser.add_argument(
        "--weights",
        default="imagenet",
        help="'imagenet', 'none' (random) or the path of a weights file (default: imagenet)",
    )
    parser.add_argument(
        "--epochs", type=_positive_int, default=10, help="head epochs (default: 10)"
    )
    parser.add_argument(
        "--fine-tune-epochs",
        type=_non_negative_int,
        default=10,
        help="fine-tuning epochs; 0 skips fine-tuning (default: 10)",
    )
    parser.add_argument(
        "--unfreeze-from",
        type=_layer,
        help="the backbone layer (index or name) fine-tuning starts at (default: the whole "
        "backbone; the recipe uses 100 for mobilenet_v2)",
    )
    parser.add_argument(
        "--validation-split",
        type=_fraction,
        help="fraction of the images to validate on, when there is no validation/ folder",
    )
    parser.add_argument(
        "--test-split",
        type=_fraction,
        help="fraction of the validation images to move into a test set (the recipe: 0.2)",
    )
    parser.add_argument(
        "--seed", type=int, default=0, help="seed of the splits and shuffling (default: 0)"
    )
    parser.add_argument(
        "--output",
        type=Path,
        default=Path("model.keras"),
        help="the .keras file to write (default: model.keras)",
    )
    return parser


def _train(args: argparse.Namespace) -> int:
    from transferkit import _freezing
    from transferkit._registry import get_backbone
    from transferkit.classifier import TransferClassifier

    # Check everything cheap before reading the images, and those before training.
    _check_data_source(args)
    spec = get_backbone(args.backbone)
    image_size = spec.resolve_image_size(args.image_size)
    weights = None if args.weights == "none" else args.weights
    with warnings.catch_warnings():  # building warns again, where it matters
        warnings.simplefilter("ignore", TransferkitWarning)
        spec.check_weights(weights, image_size)
    output: Path = args.output
    if output.suffix != ".keras" or not output.parent.is_dir():
        msg = (
            "--output must be a .keras file in an existing folder. "
            f"Received: --output={os.fspath(output)!r}"
        )
        raise InvalidArgumentError(msg)
    data = _training_data(args, image_size)
    multi_label = data.train.element_spec[1].shape.rank == 2  # multi-hot targets
    if args.tune_thresholds and not multi_label:
        msg = (
            "--tune-thresholds is for multi-label classifiers, but every row of the table "
            "has one label; pass --multi-label too. Received: --tune-thresholds"
        )
        raise InvalidArgumentError(msg)
    counts = ", ".join(f"{split} {count}" for split, count in data.counts.items())
    print(f"Images: {counts}; classes: {', '.join(data.class_names)}", flush=True)

    clf = TransferClassifier(
        spec,
        class_names=data.class_names,
        image_size=image_size,
        weights=weights,
        multi_label=multi_label,
    )
    unfreeze_from = (
        _freezing.resolve_layer_index(clf.backbone, args.unfreeze_from)
        if args.fine_tune_epochs
        else None
    )
    # Keras' progress bar on a terminal; one line per epoch in a log file.
    verbose = 1 if sys.stdout.isatty() else 2
    print(f"Stage 1: training the head for {_epochs(args.epochs)}", flush=True)
    clf.fit_head(
        data.train,
        validation_data=data.validation,
        epochs=args.epochs,
        class_weight=args.class_weight,
        verbose=verbose,
    )
    if unfreeze_from is not None:
        clf.unfreeze(unfreeze_from)
        print(
            f"Stage 2: fine-tuning from backbone layer {unfreeze_from} of "
            f"{len(clf.backbone.layers)} for {_epochs(args.fine_tune_epochs)}",
            flush=True,
        )
        clf.fine_tune(
            data.train,
            validation_data=data.validation,
            epochs=args.fine_tune_epochs,
            class_weight=args.class_weight,
            verbose=verbose,
        )
    thresholds = _tune_thresholds(args, clf, data.validation)
    test = clf.evaluate(data.test) if data.test is not None else None
    clf.save(output)
    plot_path = _history_plot(clf, output)

    summary = [
        ("backbone", f"{spec.name}, {image_size[0]}x{image_size[1]}, weights {args.weights}"),
        ("classes", ", ".join(data.class_names) + (" (multi-label)" if multi_label else "")),
        ("images", counts),
    ]
    if args.class_weight is not None:
        summary.append(("class weight", str(args.class_weight)))
    stages: tuple[tuple[Stage, str], ...] = (("head", "head"), ("fine_tune", "fine-tuning"))
    for stage, label in stages:
        if stage in clf.history.stages:
            summary.append((label, _last_epoch(clf, stage)))
    if thresholds is not None:
        summary.append(("thresholds", thresholds))
    if test is not None:
        summary.append(("test", ", ".join(f"{k} {v:.4f}" for k, v in sorted(test.items()))))
    summary.append(("model", os.fspath(output)))
    summary.append(("history plot", plot_path))
    print("\nSummary")
    for key, value in summary:
        print(f"  {key:<13}{value}")
    return 0


def _last_epoch(clf: TransferClassifier, stage: Stage) -> str:
    import numpy as np

    last = max(i for i, s in enumerate(clf.history.stages) if s == stage)
    count = clf.history.stages.count(stage)
    metrics = ", ".join(
        f"{name} {values[last]:.4f}"
        for name, values in sorted(clf.history.metrics.items())
        if not np.isnan(values[last])
    )
    return f"{_epochs(count)}; last: {metrics}"


def _epochs(count: int) -> str:
    return f"{count} epoch" if count == 1 else f"{count} epochs"


def _history_plot(clf: TransferClassifier, output: Path) -> str:
    from transferkit import plot

    target = output.with_suffix(".history.png")
    try:
        plot.history(clf, target)
    except MissingDependencyError as exc:
        return f"not written: {exc}"
    return os.fspath(target)


# ---------------------------------------------------------------------- tables and labels
# CSV tables of labeled images, multi-label classifiers and class weights, for `train`
# (and the table options for `evaluate`).


@functools.cache
def _table_options() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(add_help=False)
    group = parser.add_argument_group("a CSV table of images instead of DATA_DIR")
    group.add_argument(
        "--csv",
        type=Path,
        help="a CSV file with a column of image file names and one of their labels, "
        "separated by spaces (several labels make a multi-label table)",
    )
    group.add_argument(
        "--images",
        type=Path,
        help="the folder the CSV's file names are relative to (default: the CSV's folder)",
    )
    group.add_argument(
        "--filename-column", default="filename", help="(default: filename)", metavar="NAME"
    )
    group.add_argument("--label-column", default="labels", help="(default: labels)", metavar="NAME")
    group.add_argument(
        "--label-delimiter", default=" ", help="what separates labels (default: a space)"
    )
    return parser


@functools.cache
def _label_options() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(add_help=False)
    group = parser.add_argument_group("labels")
    group.add_argument(
        "--multi-label",
        action="store_true",
        help="train a multi-label classifier (an independent yes/no per class); implied "
        "when a CSV row has several labels",
    )
    group.add_argument(
        "--class-weight",
        type=_class_weight,
        help="'balanced' (each class weighs the inverse of its frequency) or "
        "NAME=WEIGHT,... (other classes weigh 1) (default: no weights)",
    )
    group.add_argument(
        "--tune-thresholds",
        action="store_true",
        help="multi-label: pick each class's threshold for the best F1 score on the "
        "validation images (default: 0.5 for every class)",
    )
    return parser


def _check_data_source(args: argparse.Namespace) -> None:
    """Refuses contradictory data options before anything is loaded."""
    if (args.data_dir is None) == (args.csv is None):
        msg = (
            "Pass either DATA_DIR (a folder of class folders) or --csv (a table of images "
            f"and labels). Received: DATA_DIR={_shown(args.data_dir)}, --csv={_shown(args.csv)}"
        )
        raise InvalidArgumentError(msg)
    if args.images is not None and args.csv is None:
        msg = (
            "--images is the folder of a --csv table's images; with DATA_DIR, leave it out. "
            f"Received: --images={_shown(args.images)}"
        )
        raise InvalidArgumentError(msg)
    if getattr(args, "multi_label", False) and args.csv is None:
        msg = (
            "--multi-label needs --csv: a folder of class folders gives one class per image. "
            f"Received: DATA_DIR={_shown(args.data_dir)}"
        )
        raise InvalidArgumentError(msg)
    if getattr(args, "tune_thresholds", False) and (args.csv is None or not args.validation_split):
        msg = (
            "--tune-thresholds picks thresholds on validation images of a multi-label --csv "
            "table: pass --csv and --validation-split. "
            f"Received: --csv={_shown(args.csv)}, --validation-split={args.validation_split}"
        )
        raise InvalidArgumentError(msg)


def _shown(path: Path | None) -> str:
    return "None" if path is None else repr(os.fspath(path))


def _training_data(args: argparse.Namespace, image_size: tuple[int, int]) -> Any:
    from transferkit import data

    if args.csv is None:
        return data.from_directory(
            args.data_dir,
            image_size,
            args.batch_size,
            validation_split=args.validation_split,
            test_split=args.test_split,
            seed=args.seed,
        )
    return _read_table(
        args,
        image_size,
        validation_split=args.validation_split,
        test_split=args.test_split,
        seed=args.seed,
        multi_label=True if args.multi_label else None,
    )


def _read_table(args: argparse.Namespace, image_size: tuple[int, int], **options: Any) -> Any:
    from transferkit.data import from_csv

    return from_csv(
        args.csv,
        args.images if args.images is not None else args.csv.parent,
        image_size=image_size,
        filename_column=args.filename_column,
        label_column=args.label_column,
        label_delimiter=args.label_delimiter,
        batch_size=args.batch_size,
        **options,
    )


def _tune_thresholds(
    args: argparse.Namespace, clf: TransferClassifier, validation: Any
) -> str | None:
    if not args.tune_thresholds:
        return None
    thresholds = clf.tune_thresholds(validation, batch_size=args.batch_size)
    return ", ".join(
        f"{name} {value:.3f}" for name, value in zip(clf.class_names or [], thresholds, strict=True)
    )


def _class_weight(text: str) -> str | dict[str, float]:
    if text == "balanced":
        return text
    weights: dict[str, float] = {}
    try:
        for pair in text.split(","):
            name, _, value = pair.partition("=")
            if not name.strip() or name.strip() in weights:
                raise ValueError(name)
            weights[name.strip()] = _validation.positive_float("weight", float(value))
    except ValueError:
        msg = f"must be 'balanced' or NAME=WEIGHT pairs such as cat=1,dog=4, not {text!r}"
        raise argparse.ArgumentTypeError(msg) from None
    return weights


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
    from transferkit.interpret import interpret

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
    if clf.multi_label:
        if args.report is not None:
            msg = (
                "--report writes single-label reports; per-label reports of multi-label "
                f"models are not available yet. Received: --report={os.fspath(args.report)!r}"
            )
            raise InvalidArgumentError(msg)
        results = clf.evaluate(data, batch_size=args.batch_size, tta=args.tta)
        print("  ".join(f"{name} {value:.4f}" for name, value in sorted(results.items())))
        return 0
    # One pass gives the loss and accuracy evaluate() gives, and the report's numbers.
    result = interpret(clf, data, batch_size=args.batch_size, tta=args.tta)
    print(f"accuracy {result.accuracy:.4f}  loss {result.loss:.4f}")
    if args.report is not None:
        _cli_reports.write_report(result, args.report)
    return 0


# ---------------------------------------------------------------------- export


def _add_export(subparsers: Any) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "export",
        parents=[_model_option()],
        help="write a saved model for serving (SavedModel or TFLite)",
        description=(
            "Write MODEL for serving: a TensorFlow SavedModel folder or a TFLite file that "
            "takes raw uint8 images and returns class probabilities (signature "
            "'serving_default', input 'images', output 'probabilities')."
        ),
    )
    parser.add_argument(
        "--format",
        choices=("saved_model", "tflite"),
        default="saved_model",
        help="the artifact to write (default: saved_model)",
    )
    parser.add_argument(
        "--output",
        "-o",
        type=Path,
        required=True,
        help="the SavedModel folder to create, or a file name ending in .tflite",
    )
    parser.add_argument(
        "--quantize",
        choices=("dynamic_range",),
        default=None,
        help="store TFLite weights as int8 (default: float weights)",
    )
    return parser


def _export(args: argparse.Namespace) -> int:
    from transferkit.classifier import load_classifier

    clf = load_classifier(args.model)
    print(os.fspath(clf.export(args.output, format=args.format, quantize=args.quantize)))
    return 0


# ---------------------------------------------------------------------- argument types


# Each parses the text, checks the value with transferkit's own checks (_validation) and
# says what was expected in argparse's usage error.


def _positive_int(text: str) -> int:
    try:
        return _validation.positive_int("value", int(text))
    except ValueError:  # InvalidArgumentError is a ValueError too
        msg = f"must be a positive integer, not {text!r}"
        raise argparse.ArgumentTypeError(msg) from None


def _non_negative_int(text: str) -> int:
    try:
        return _validation.non_negative_int("value", int(text))
    except ValueError:
        msg = f"must be an integer of 0 or more, not {text!r}"
        raise argparse.ArgumentTypeError(msg) from None


def _fraction(text: str) -> float:
    try:
        return _validation.fraction("value", float(text))
    except ValueError:
        msg = f"must be a number between 0 and 1 (exclusive), not {text!r}"
        raise argparse.ArgumentTypeError(msg) from None


def _image_size(text: str) -> tuple[int, int]:
    try:
        sides = [int(part) for part in text.lower().split("x")]
        return _validation.image_size(sides[0] if len(sides) == 1 else sides)
    except ValueError:
        msg = f"must be N or HxW of positive integers (such as 160 or 192x256), not {text!r}"
        raise argparse.ArgumentTypeError(msg) from None


def _layer(text: str) -> int | str:
    try:
        return int(text)
    except ValueError:
        return text


_SUBCOMMANDS: tuple[
    tuple[Callable[[Any], argparse.ArgumentParser], Callable[[argparse.Namespace], int]], ...
] = (
    (_add_backbones, _backbones),
    (_add_train, _train),
    (_add_predict, _predict),
    (_add_evaluate, _evaluate),
    (_add_export, _export),
)
