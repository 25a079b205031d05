"""The command line's shared options: parent parsers, table and label options, argument types.

Options that several subcommands take are declared once here and passed as ``parents=``;
argument types check values through :mod:`transferkit._validation`, so the command line and
the library accept and refuse the same things. Imports only the standard library at the top,
so ``--help`` never loads TensorFlow.
"""

from __future__ import annotations

import argparse
import functools
import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from transferkit import _validation
from transferkit.errors import InvalidArgumentError

if TYPE_CHECKING:
    from transferkit.classifier import TransferClassifier

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


@functools.cache
def _backbone_options() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument(
        "--backbone", default="mobilenet_v2", help="a backbone name (default: mobilenet_v2)"
    )
    parser.add_argument(
        "--weights",
        default="imagenet",
        help="'imagenet', 'none' (random) or the path of a weights file (default: imagenet)",
    )
    return parser


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


@functools.cache
def _regularization_options() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(add_help=False)
    group = parser.add_argument_group(
        "regularization and loss (see the regularization guide; all off by default)"
    )
    group.add_argument(
        "--label-smoothing", type=_from_zero, default=0.0, metavar="E", help="in [0, 1)"
    )
    group.add_argument(
        "--ema",
        type=_fraction,
        metavar="MOMENTUM",
        help="keep an exponential moving average of the weights (such as 0.99)",
    )
    group.add_argument(
        "--mixup", type=_unit, default=0.0, metavar="ALPHA", help="MixUp's alpha (such as 0.2)"
    )
    group.add_argument(
        "--cutmix", type=_unit, default=0.0, metavar="FACTOR", help="CutMix's factor (such as 1)"
    )
    group.add_argument(
        "--soup",
        type=_non_negative_int,
        default=0,
        metavar="K",
        help="average the weights of up to K best epochs greedily (needs validation images)",
    )
    group.add_argument(
        "--loss",
        choices=("crossentropy", "focal", "asymmetric"),
        default="crossentropy",
        help="focal and asymmetric: multi-label or two classes (default: crossentropy)",
    )
    group.add_argument(
        "--pooling",
        choices=("avg", "max", "avgmax", "cls", "mean"),
        help="how the backbone's output is pooled (default: the backbone's own, avg for CNNs)",
    )
    return parser


def _regularization(args: argparse.Namespace) -> Any:
    """The ``Regularization`` of the flags (checked: not --mixup and --cutmix both)."""
    from transferkit.training.regularization import Regularization

    return Regularization(
        label_smoothing=args.label_smoothing,
        ema=args.ema,
        mixup=args.mixup,
        cutmix=args.cutmix,
        soup=args.soup,
    )


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


def _from_zero(text: str) -> float:
    try:
        return _validation.fraction("value", float(text), low_inclusive=True)
    except ValueError:
        msg = f"must be a number from 0 up to (not including) 1, not {text!r}"
        raise argparse.ArgumentTypeError(msg) from None


def _unit(text: str) -> float:
    try:
        return _validation.fraction("value", float(text), low_inclusive=True, high_inclusive=True)
    except ValueError:
        msg = f"must be a number from 0 to 1, not {text!r}"
        raise argparse.ArgumentTypeError(msg) from None


def _image_size(text: str) -> tuple[int, int]:
    try:
        sides = [int(part) for part in text.lower().split("x")]
        return _validation.image_size(sides[0] if len(sides) == 1 else sides)
    except ValueError:
        msg = f"must be N or HxW of positive integers (such as 160 or 192x256), not {text!r}"
        raise argparse.ArgumentTypeError(msg) from None


def _folder_for(contents: str) -> Callable[[str], Path]:
    """An argparse type: a folder (existing or not) that is not a file, named in the error."""

    def folder(text: str) -> Path:
        path = Path(text)
        if path.exists() and not path.is_dir():
            msg = f"must be a folder for {contents}, not the file {text!r}"
            raise argparse.ArgumentTypeError(msg)
        return path

    return folder


_log_dir = _folder_for("TensorBoard's logs")
_checkpoint_dir = _folder_for("the checkpoints")


def _layer(text: str) -> int | str:
    try:
        return int(text)
    except ValueError:
        return text
