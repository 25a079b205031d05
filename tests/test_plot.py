"""transferkit.plot: the history figure and the predictions grid, checked in their pixels."""

from __future__ import annotations

import sys

import numpy as np
import pytest
from PIL import Image

import transferkit as tk
from conftest import TINY_BACKBONE, separable_images
from images import write_class_folders
from transferkit import plot
from transferkit.errors import DataError, InvalidArgumentError, MissingDependencyError

GRAY = (128, 128, 128)  # matplotlib's "gray": the fine-tuning marker
GREEN = (44, 160, 44)  # "tab:green": a right prediction
RED = (214, 39, 40)  # "tab:red": a wrong one


def _history(fine_tune_epochs: int = 2, validation: bool = True) -> tk.TrainingHistory:
    record = tk.TrainingHistory()
    metrics = {"loss": [0.9, 0.6, 0.5], "accuracy": [0.5, 0.7, 0.8]}
    if validation:
        metrics |= {"val_loss": [0.8, 0.6, 0.55], "val_accuracy": [0.55, 0.7, 0.75]}
    record.append("head", [0, 1, 2], metrics)
    if fine_tune_epochs:
        epochs = list(range(3, 3 + fine_tune_epochs))
        record.append(
            "fine_tune", epochs, {k: [v[-1]] * fine_tune_epochs for k, v in metrics.items()}
        )
    return record


def _pixels(path) -> np.ndarray:
    with Image.open(path) as image:
        assert image.format == "PNG"
        return np.asarray(image.convert("RGB")).astype(int)


def _count(pixels: np.ndarray, color: tuple[int, int, int], tolerance: int = 20) -> np.ndarray:
    """How many pixels of each column are within ``tolerance`` of ``color``."""
    return np.all(np.abs(pixels - np.array(color)) <= tolerance, axis=-1).sum(axis=0)


def _vertical_lines(pixels: np.ndarray, color: tuple[int, int, int]) -> list[int]:
    # Text is antialiased into some gray too, but no glyph fills 200 pixels of a column.
    return np.nonzero(_count(pixels, color, tolerance=10) >= 200)[0].tolist()


def _blue_images(count: int) -> np.ndarray:
    # Neither red nor green, so only the titles can hold those colors.
    return np.broadcast_to(np.array([40, 60, 220], np.uint8), (count, 32, 32, 3)).copy()


@pytest.fixture(scope="module")
def clf() -> tk.TransferClassifier:
    return tk.TransferClassifier(
        TINY_BACKBONE, class_names=["red", "green"], image_size=32, weights=None
    )


# ---------------------------------------------------------------------- history


def test_history_writes_one_png_of_accuracy_above_loss(tmp_path):
    path = plot.history(_history(), tmp_path / "history.png")

    assert path == tmp_path / "history.png"
    assert _pixels(path).shape == (800, 800, 3)


def test_history_draws_one_vertical_marker_where_fine_tuning_starts(tmp_path):
    head_only = _pixels(plot.history(_history(fine_tune_epochs=0), tmp_path / "a.png"))
    columns = _vertical_lines(_pixels(plot.history(_history(), tmp_path / "b.png")), GRAY)

    assert columns  # a dashed line down both panels
    assert max(columns) - min(columns) <= 2  # one line, one or two pixels wide
    assert _vertical_lines(head_only, GRAY) == []


def test_history_without_validation_is_drawn(tmp_path):
    path = plot.history(_history(validation=False), tmp_path / "h.png")

    assert _pixels(path).std() > 0


def test_history_takes_a_trained_classifier(tmp_path, clf):
    images, labels = separable_images(8)
    clf.fit_head((images, labels), epochs=1, batch_size=4, verbose=0)

    path = plot.history(clf, tmp_path / "h.png")

    assert _pixels(path).shape == (800, 800, 3)


def test_history_of_an_untrained_classifier_is_an_error(tmp_path):
    untrained = tk.TransferClassifier(TINY_BACKBONE, num_classes=2, image_size=32, weights=None)

    with pytest.raises(InvalidArgumentError, match="call fit_head"):
        plot.history(untrained, tmp_path / "h.png")


def test_history_into_a_missing_folder_is_an_error(tmp_path):
    with pytest.raises(InvalidArgumentError, match="folder to save into does not exist"):
        plot.history(_history(), tmp_path / "missing" / "h.png")


# ---------------------------------------------------------------------- predictions


@pytest.mark.slow
@pytest.mark.parametrize(("count", "size"), [(1, (260, 290)), (5, (780, 580)), (9, (780, 870))])
def test_predictions_lays_images_out_in_a_square_grid(tmp_path, clf, count, size):
    images, _ = separable_images(count)

    path = plot.predictions(clf, images, tmp_path / "grid.png")

    assert _pixels(path).shape == (size[1], size[0], 3)


def test_predictions_titles_right_guesses_in_green(tmp_path, clf):
    images = _blue_images(4)
    predicted = [clf.class_names.index(name) for name in clf.predict_labels(images)]

    pixels = _pixels(plot.predictions(clf, images, tmp_path / "grid.png", labels=predicted))

    assert _count(pixels, GREEN).sum() > 0
    assert _count(pixels, RED).sum() == 0


def test_predictions_titles_wrong_guesses_in_red(tmp_path, clf):
    images = _blue_images(4)
    wrong = ["green" if name == "red" else "red" for name in clf.predict_labels(images)]

    pixels = _pixels(plot.predictions(clf, images, tmp_path / "grid.png", labels=wrong))

    assert _count(pixels, RED).sum() > 0
    assert _count(pixels, GREEN).sum() == 0


def test_predictions_reads_a_folder_of_image_files(tmp_path, clf):
    write_class_folders(tmp_path / "photos", {"a": 2, "b": 2})

    path = plot.predictions(clf, tmp_path / "photos", tmp_path / "grid.png")

    assert _pixels(path).shape == (580, 520, 3)  # 4 images: 2 x 2


def test_predictions_labels_must_match_the_images(tmp_path, clf):
    images, _ = separable_images(3)

    with pytest.raises(InvalidArgumentError, match="one class per image"):
        plot.predictions(clf, images, tmp_path / "grid.png", labels=[0, 1])


def test_predictions_labels_must_be_known_classes(tmp_path, clf):
    images, _ = separable_images(2)

    with pytest.raises(InvalidArgumentError, match="Unknown class name"):
        plot.predictions(clf, images, tmp_path / "grid.png", labels=["red", "blue"])


def test_predictions_of_no_images_is_an_error(tmp_path, clf):
    with pytest.raises(DataError, match="no images to plot"):
        plot.predictions(clf, np.zeros((0, 32, 32, 3), np.uint8), tmp_path / "grid.png")


# ---------------------------------------------------------------------- without matplotlib


@pytest.mark.parametrize("function", ["history", "predictions"])
def test_without_matplotlib_plots_name_the_extra_to_install(tmp_path, clf, monkeypatch, function):
    # None in sys.modules makes every import of matplotlib fail, as if it were not installed.
    for name in [m for m in sys.modules if m == "matplotlib" or m.startswith("matplotlib.")]:
        monkeypatch.setitem(sys.modules, name, None)
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    call = {
        "history": lambda: plot.history(_history(), tmp_path / "h.png"),
        "predictions": lambda: plot.predictions(clf, separable_images(1)[0], tmp_path / "g.png"),
    }[function]

    with pytest.raises(MissingDependencyError, match=r'pip install "transferkit\[plot\]"'):
        call()

    assert not list(tmp_path.iterdir())
