"""The reference recipe, TensorFlow's "Transfer learning and fine-tuning", with transferkit.

Cats vs dogs with MobileNetV2 at 160x160 and ImageNet weights: 10 epochs training a new head
on the frozen backbone, then 10 epochs fine-tuning from backbone layer 100 at a tenth of the
learning rate. It prints the test accuracy (the tutorial reports 0.979), saves the model, and
writes the training curves and a grid of test predictions.

    python examples/cats_dogs.py                    # downloads the data once (68 MB)
    python examples/cats_dogs.py --data-dir ~/data/cats_and_dogs_filtered

A download that fails (offline) ends the program with one line saying how to pass the data
and weights instead; so does any error transferkit reports (a bad folder, say).

Offline, on any folder of train/ and validation/ class folders, in seconds:

    python examples/cats_dogs.py --data-dir tiny/ --weights none --image-size 32 \\
        --epochs 1 --fine-tune-epochs 1 --output-dir /tmp/cats_dogs
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import NoReturn

import keras

import transferkit as tk
from transferkit import data, plot
from transferkit.errors import TransferkitError

URL = "https://storage.googleapis.com/mledu-datasets/cats_and_dogs_filtered.zip"
BACKBONE = "mobilenet_v2"
UNFREEZE_FROM = 100  # of MobileNetV2's 154 layers, as in the recipe
TEST_SPLIT = 0.2  # the recipe moves a fifth of the validation batches into a test set
GRID_IMAGES = 9


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--data-dir",
        type=Path,
        help="a folder with train/ and validation/ class folders (default: download the "
        "recipe's cats_and_dogs_filtered)",
    )
    parser.add_argument(
        "--weights", default="imagenet", help="'imagenet', 'none' or a weights file path"
    )
    parser.add_argument("--epochs", type=int, default=10, help="head epochs (default: 10)")
    parser.add_argument(
        "--fine-tune-epochs", type=int, default=10, help="fine-tuning epochs (default: 10)"
    )
    parser.add_argument("--image-size", type=int, default=160, help="(default: 160)")
    parser.add_argument("--output-dir", type=Path, default=Path("cats_dogs_output"))
    return parser.parse_args(argv)


def download() -> Path:
    # Keras 3 extracts "cats_and_dogs.zip" into "cats_and_dogs_extracted/" and returns it.
    try:
        extracted = Path(keras.utils.get_file("cats_and_dogs.zip", origin=URL, extract=True))
    except Exception as exc:  # Keras turns every network error into a bare Exception
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else repr(exc)
        fail(
            f"could not download the cats and dogs images ({reason}). Offline, pass "
            "--data-dir with a folder of train/ and validation/ class folders (and "
            "--weights none or a weights file)."
        )
    return extracted / "cats_and_dogs_filtered"


def fail(message: str) -> NoReturn:
    """Ends the program with one line on stderr and exit status 1, as a command should."""
    line = f"cats_dogs.py: error: {message}"
    raise SystemExit(line)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    try:
        run(args)
    except TransferkitError as exc:  # a bad folder, weights that cannot be downloaded, ...
        fail(" ".join(str(exc).split()))


def run(args: argparse.Namespace) -> None:
    data_dir = args.data_dir if args.data_dir is not None else download()
    weights = None if args.weights == "none" else args.weights

    # train/ and validation/ folders; a fifth of the validation images become the test set
    # (unless the folder has its own test/). Picked once, so the two never overlap.
    test_split = None if (data_dir / "test").is_dir() else TEST_SPLIT
    folder = data.from_directory(data_dir, args.image_size, batch_size=32, test_split=test_split)
    print(f"Classes {list(folder.class_names)}; images {dict(folder.counts)}")

    clf = tk.TransferClassifier(
        BACKBONE, class_names=folder.class_names, image_size=args.image_size, weights=weights
    )
    before = clf.evaluate(folder.validation)
    print(
        f"Before training: validation loss {before['loss']:.2f}, accuracy {before['accuracy']:.2f}"
    )

    clf.fit_head(folder.train, validation_data=folder.validation, epochs=args.epochs)
    if args.fine_tune_epochs > 0:
        clf.unfreeze(from_layer=UNFREEZE_FROM)
        clf.fine_tune(folder.train, validation_data=folder.validation, epochs=args.fine_tune_epochs)

    test = clf.evaluate(folder.test)
    print(f"Test accuracy: {test['accuracy']:.3f} (loss {test['loss']:.3f})")

    args.output_dir.mkdir(parents=True, exist_ok=True)
    model_path = clf.save(args.output_dir / "cats_dogs.keras")
    history_path = plot.history(clf, args.output_dir / "history.png")
    images, labels = next(iter(folder.test))
    grid_path = plot.predictions(
        clf,
        images[:GRID_IMAGES].numpy(),
        args.output_dir / "predictions.png",
        labels=labels[:GRID_IMAGES].numpy(),
    )
    print(f"Wrote {model_path}, {history_path} and {grid_path}")


if __name__ == "__main__":
    main()
