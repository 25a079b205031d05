"""The ``train`` and ``lr-find`` subcommands: a classifier from a folder or a CSV table.

``train`` uses :meth:`~transferkit.TransferClassifier.fit` by default, or the tutorial's two
stages at their fixed settings with ``--recipe``; ``lr-find`` prints the learning-rate finder's
suggestion for a new head. Each subcommand is an ``_add_<name>`` / ``_<name>`` pair that
:mod:`transferkit.cli.app` lists.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

from transferkit.cli.options import (
    _backbone_options,
    _batch_size_option,
    _check_data_source,
    _checkpoint_dir,
    _fraction,
    _image_size_option,
    _label_options,
    _layer,
    _log_dir,
    _non_negative_int,
    _positive_int,
    _read_table,
    _regularization,
    _regularization_options,
    _table_options,
    _tune_thresholds,
)
from transferkit.errors import InvalidArgumentError, MissingDependencyError, TransferkitWarning

if TYPE_CHECKING:
    import keras

    from transferkit.backbones.spec import Backbone
    from transferkit.classifier import TransferClassifier
    from transferkit.data import DirectoryData
    from transferkit.history import Stage
    from transferkit.training.regularization import Regularization

__all__ = ["_add_lr_find", "_add_train", "_lr_find", "_train"]

# The recipe's epochs for each stage (--recipe), and fit()'s validation split in the CLI.
_RECIPE_EPOCHS = 10
_FIT_VALIDATION_SPLIT = 0.2

# ---------------------------------------------------------------------- train


def _add_train(subparsers: Any) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "train",
        parents=[
            _backbone_options(),
            _image_size_option(),
            _batch_size_option(),
            _table_options(),
            _label_options(),
            _regularization_options(),
        ],
        help="train a classifier on a folder of images or a CSV table of them",
        description=(
            "Train a classifier on DATA_DIR: a folder with one subfolder of images per class, "
            "or train/ and validation/ (and test/) folders of them; or on --csv, a table of "
            "image file names and their labels (several per image for a multi-label "
            "classifier). By default with "
            "TransferClassifier.fit(): the head at the learning-rate finder's rate, then the "
            "whole backbone fine-tuned, with early stopping on a validation set (held out of "
            "the images when there is no validation/ folder). With --recipe, the tutorial's "
            "fixed settings instead: 10 head epochs at Adam 1e-4, then 10 epochs of RMSprop "
            "1e-5 from --unfreeze-from. The model is saved to --output, with its history "
            "plot beside it."
        ),
    )
    parser.add_argument("data_dir", type=Path, nargs="?", help="the folder of images")
    _add_training_options(parser)
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


def _add_training_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--recipe",
        action="store_true",
        help="train with the tutorial's fixed settings (fit_head, unfreeze, fine_tune) "
        "instead of fit()",
    )
    parser.add_argument(
        "--epochs",
        type=_positive_int,
        help="fit(): fine-tuning epochs (default: a budget of optimizer steps); "
        "--recipe: head epochs (default: 10)",
    )
    parser.add_argument(
        "--fine-tune-epochs",
        type=_non_negative_int,
        help="--recipe only: fine-tuning epochs; 0 skips fine-tuning (default: 10)",
    )
    parser.add_argument(
        "--unfreeze-from",
        type=_layer,
        help="--recipe only: the backbone layer (index or name) fine-tuning starts at "
        "(default: the whole backbone; the recipe uses 100 for mobilenet_v2)",
    )
    parser.add_argument(
        "--log-dir",
        type=_log_dir,
        metavar="DIR",
        help="write TensorBoard logs of both stages to DIR (fine-tuning's epochs continue "
        "the head's); view them with `tensorboard --logdir DIR` (pip install tensorboard)",
    )
    parser.add_argument(
        "--checkpoint-dir",
        type=_checkpoint_dir,
        metavar="DIR",
        help="save every epoch to DIR; run the same command again to resume an interrupted "
        "run where it stopped (on every machine of a multi-process run: a shared folder)",
    )


def _train(args: argparse.Namespace) -> int:
    from transferkit.classifier import TransferClassifier

    # Check everything cheap before reading the images, and those before training.
    spec, image_size, weights = _checked_setup(args)
    regularization = _regularization(args)
    callbacks = _log_callbacks(args.log_dir)
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
        pooling=args.pooling,
        loss=args.loss,
    )
    # Keras' progress bar on a terminal; one line per epoch in a log file.
    verbose = 1 if sys.stdout.isatty() else 2
    if args.recipe:
        _train_recipe(clf, data, args, verbose, callbacks, regularization)
    else:
        print("Training with fit(): finder, head, whole backbone fine-tuned", flush=True)
        clf.fit(
            data.train,
            validation_data=data.validation,
            epochs=args.epochs,
            seed=args.seed,
            class_weight=args.class_weight,
            regularization=regularization,
            callbacks=callbacks,
            verbose=verbose,
            batch_size=args.batch_size,
            checkpoint_dir=args.checkpoint_dir,
        )
    thresholds = _tune_thresholds(args, clf, data.validation)
    test = clf.evaluate(data.test) if data.test is not None else None
    clf.save(args.output)
    summary = [
        ("backbone", f"{spec.name}, {image_size[0]}x{image_size[1]}, weights {args.weights}"),
        ("classes", ", ".join(data.class_names) + (" (multi-label)" if multi_label else "")),
        ("images", counts),
    ]
    _print_summary(clf, args, summary, thresholds, test, _history_plot(clf, args.output))
    return 0


def _checked_setup(args: argparse.Namespace) -> tuple[Backbone, tuple[int, int], str | None]:
    """The backbone, image size and weights of ``train``, every argument checked."""
    from transferkit.backbones.registry import get_backbone

    _check_data_source(args)
    if not args.recipe and (args.fine_tune_epochs is not None or args.unfreeze_from is not None):
        msg = (
            "--fine-tune-epochs and --unfreeze-from set the recipe's stages: add --recipe, or "
            "leave them out to let fit() decide. Received: "
            f"--fine-tune-epochs={args.fine_tune_epochs}, --unfreeze-from={args.unfreeze_from}"
        )
        raise InvalidArgumentError(msg)
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
    return spec, image_size, weights


def _print_summary(
    clf: TransferClassifier,
    args: argparse.Namespace,
    summary: list[tuple[str, str]],
    thresholds: str | None,
    test: dict[str, float] | None,
    plot_path: str,
) -> None:
    """What was trained and written, one line each."""
    if args.class_weight is not None:
        summary.append(("class weight", str(args.class_weight)))
    regularizers = _regularization(args).describe()
    if regularizers is not None:
        shown = ", ".join(f"{key} {value}" for key, value in regularizers.items() if value)
        summary.append(("regularizers", shown))
    stages: tuple[tuple[Stage, str], ...] = (("head", "head"), ("fine_tune", "fine-tuning"))
    for stage, label in stages:
        if stage in clf.history.stages:
            summary.append((label, _last_epoch(clf, stage)))
    if thresholds is not None:
        summary.append(("thresholds", thresholds))
    if test is not None:
        summary.append(("test", ", ".join(f"{k} {v:.4f}" for k, v in sorted(test.items()))))
    summary.append(("model", os.fspath(args.output)))
    summary.append(("history plot", plot_path))
    if args.log_dir is not None:
        summary.append(("logs", f"{os.fspath(args.log_dir)} (tensorboard --logdir)"))
    print("\nSummary")
    for key, value in summary:
        print(f"  {key:<13}{value}")


def _log_callbacks(log_dir: Path | None) -> list[keras.callbacks.Callback]:
    """Keras' TensorBoard callback for ``--log-dir``, shared by both stages."""
    if log_dir is None:
        return []
    if importlib.util.find_spec("tensorboard") is None:
        # TensorFlow no longer installs it, and tf.summary needs it to write anything.
        msg = (
            "--log-dir writes TensorBoard logs, which need the tensorboard package: "
            f"pip install tensorboard. Received: --log-dir={os.fspath(log_dir)!r}"
        )
        raise MissingDependencyError(msg)
    import keras

    # One run: the stages number their epochs globally, so fine-tuning continues the curves.
    return [keras.callbacks.TensorBoard(log_dir=os.fspath(log_dir))]


def _train_recipe(
    clf: TransferClassifier,
    data: DirectoryData,
    args: argparse.Namespace,
    verbose: int,
    callbacks: list[keras.callbacks.Callback],
    regularization: Regularization,
) -> None:
    """The tutorial's two stages at its fixed settings (``--recipe``)."""
    from transferkit.backbones import freezing as _freezing

    head_epochs = args.epochs or _RECIPE_EPOCHS
    tune_epochs = _RECIPE_EPOCHS if args.fine_tune_epochs is None else args.fine_tune_epochs
    # --unfreeze-from counts the blocks clf.unfreeze counts (a keras-hub transformer's blocks).
    layout = clf.spec.layout_of(clf.backbone)
    blocks = layout.blocks
    unfreeze_from = (
        _freezing.resolve_layer_index(clf.backbone, args.unfreeze_from, blocks)
        if tune_epochs
        else None
    )
    print(f"Stage 1: training the head for {_epochs(head_epochs)}", flush=True)
    clf.fit_head(
        data.train,
        validation_data=data.validation,
        epochs=head_epochs,
        class_weight=args.class_weight,
        regularization=regularization,
        callbacks=callbacks,
        verbose=verbose,
        batch_size=args.batch_size,
        checkpoint_dir=args.checkpoint_dir,
    )
    if unfreeze_from is None:
        return
    clf.unfreeze(unfreeze_from)
    unit = "layer" if layout.per_layer else "block"
    print(
        f"Stage 2: fine-tuning from backbone {unit} {unfreeze_from} of {len(blocks)} "
        f"for {_epochs(tune_epochs)}",
        flush=True,
    )
    clf.fine_tune(
        data.train,
        validation_data=data.validation,
        epochs=tune_epochs,
        class_weight=args.class_weight,
        regularization=regularization,
        callbacks=callbacks,
        verbose=verbose,
        batch_size=args.batch_size,
        checkpoint_dir=args.checkpoint_dir,
    )


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


def _training_data(args: argparse.Namespace, image_size: tuple[int, int]) -> DirectoryData:
    """The folder's or table's splits; fit() holds validation images out when there is none."""
    from transferkit import data

    def load(validation_split: float | None) -> DirectoryData:
        if args.csv is None:
            return data.from_directory(
                args.data_dir,
                image_size,
                args.batch_size,
                validation_split=validation_split,
                test_split=args.test_split,
                seed=args.seed,
            )
        return _read_table(  # type: ignore[no-any-return]
            args,
            image_size,
            validation_split=validation_split,
            test_split=args.test_split,
            seed=args.seed,
            multi_label=True if args.multi_label else None,
        )

    loaded = load(args.validation_split)
    if args.recipe or loaded.validation is not None:
        return loaded
    # fit() validates on a split of the images when there is no validation split; have the
    # loader make it, so the images stream rather than sit in memory.
    return load(_FIT_VALIDATION_SPLIT)


# ---------------------------------------------------------------------- lr-find


def _add_lr_find(subparsers: Any) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "lr-find",
        parents=[_backbone_options(), _image_size_option(), _batch_size_option()],
        help="suggest a learning rate for the head",
        description=(
            "Run the learning-rate finder on the head of a new classifier for DATA_DIR (its "
            "train/ folder if it has one): train a few batches at exponentially growing "
            "rates, on cached backbone features, and print the suggested rate (fastai's "
            "valley rule). Nothing is saved but the --plot."
        ),
    )
    parser.add_argument("data_dir", type=Path, help="the folder of images")
    parser.add_argument(
        "--steps", type=_positive_int, default=100, help="batches to sweep (default: 100)"
    )
    parser.add_argument("--plot", type=Path, help="draw the loss against the rate to this PNG")
    return parser


def _lr_find(args: argparse.Namespace) -> int:
    from transferkit.backbones.registry import get_backbone
    from transferkit.classifier import TransferClassifier
    from transferkit.data import from_directory

    spec = get_backbone(args.backbone)
    image_size = spec.resolve_image_size(args.image_size)
    weights = None if args.weights == "none" else args.weights
    spec.check_weights(weights, image_size)
    data = from_directory(args.data_dir, image_size, args.batch_size)
    clf = TransferClassifier(
        spec, class_names=data.class_names, image_size=image_size, weights=weights
    )
    result = clf.find_learning_rate(data.train, stage="head", steps=args.steps)
    lowest = result.learning_rates[min(range(len(result.losses)), key=result.losses.__getitem__)]
    print(f"Suggested learning rate: {result.suggestion:.2e}")
    stopped = ", stopped: the loss diverged" if result.stopped_early else ""
    print(
        f"  rates tried  {result.learning_rates[0]:.1e} to {result.learning_rates[-1]:.1e}"
        f" ({len(result.learning_rates)} batches{stopped})"
    )
    print(f"  lowest loss  at {lowest:.1e}")
    if args.plot is not None:
        try:
            print(f"  plot         {os.fspath(result.plot(args.plot))}")
        except MissingDependencyError as exc:
            print(f"  plot         not written: {exc}")
    return 0
