"""transferkit.data: datasets from folders of real image files, and every bad input."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

import transferkit as tk
from conftest import TINY_BACKBONE
from images import (
    encode,
    uniform_pixels,
    write_class_folders,
    write_image,
    write_split_folders,
    write_text_file,
    write_truncated_jpeg,
)
from transferkit import data
from transferkit.errors import (
    ClassNamesMismatchError,
    DataError,
    InvalidArgumentError,
    InvalidImageSizeError,
    TransferkitWarning,
)


def _images_and_labels(dataset: tf.data.Dataset) -> tuple[np.ndarray, np.ndarray]:
    images, labels = zip(*((x.numpy(), y.numpy()) for x, y in dataset), strict=True)
    return np.concatenate(images), np.concatenate(labels)


def _write_numbered(root: Path, per_class: int) -> Path:
    """Class folders of one-color images whose value (2, 4, 6, ...) identifies each image."""
    value = 0
    for name in ("a", "b"):
        for i in range(per_class):
            value += 2
            write_image(root / name / f"{i}.png", uniform_pixels(value))
    return root


def _identities(dataset: tf.data.Dataset) -> list[int]:
    images, _ = _images_and_labels(dataset)
    return sorted(int(v) for v in images[:, 0, 0, 0])


# ---------------------------------------------------------------------- layouts and splits


def test_class_folders_give_sorted_class_names_and_labels_by_folder(tmp_path):
    write_class_folders(tmp_path, {"dog": 3, "cat": 5})

    folder = data.from_directory(tmp_path, 32, batch_size=4)
    images, labels = _images_and_labels(folder.train)

    assert folder.class_names == ("cat", "dog")
    assert folder.counts == {"train": 8}
    assert folder.validation is None
    assert folder.test is None
    assert sorted(labels.tolist()) == [0] * 5 + [1] * 3
    # write_class_folders makes class k's channel k bright: labels follow the folders.
    assert np.all(np.argmax(images.mean(axis=(1, 2)), axis=-1) == labels)


def test_batches_are_float_rgb_pixels_in_0_255_and_int32_labels(tmp_path):
    write_class_folders(tmp_path, {"cat": 5, "dog": 5}, size=40)

    folder = data.from_directory(tmp_path, (24, 32), batch_size=4)
    sizes = [int(x.shape[0]) for x, _ in folder.train]

    images_spec, labels_spec = folder.train.element_spec
    assert images_spec.shape.as_list() == [None, 24, 32, 3]
    assert images_spec.dtype == tf.float32
    assert labels_spec.dtype == tf.int32
    assert sizes == [4, 4, 2]
    images, _ = _images_and_labels(folder.train)
    assert images.min() >= 0
    assert 150 < images.max() <= 255


def test_validation_split_holds_out_that_fraction(tmp_path):
    write_class_folders(tmp_path, {"cat": 10, "dog": 10})

    folder = data.from_directory(tmp_path, 32, batch_size=4, validation_split=0.25)

    assert folder.counts == {"train": 15, "validation": 5}
    assert len(_images_and_labels(folder.train)[1]) == 15
    assert len(_images_and_labels(folder.validation)[1]) == 5


def test_test_split_moves_a_fraction_of_the_validation_images(tmp_path):
    write_class_folders(tmp_path, {"cat": 10, "dog": 10})

    folder = data.from_directory(tmp_path, 32, batch_size=4, validation_split=0.5, test_split=0.2)

    assert folder.counts == {"train": 10, "validation": 8, "test": 2}
    assert len(_images_and_labels(folder.validation)[1]) == 8
    assert len(_images_and_labels(folder.test)[1]) == 2


def test_splits_never_share_an_image_and_keep_it_across_epochs(tmp_path):
    _write_numbered(tmp_path, per_class=10)

    folder = data.from_directory(tmp_path, 32, batch_size=3, validation_split=0.5, test_split=0.4)
    train, validation, test = (
        _identities(folder.train),
        _identities(folder.validation),
        _identities(folder.test),
    )

    assert sorted(train + validation + test) == list(range(2, 42, 2))
    # A second pass (a second epoch) sees the same images in each split.
    assert _identities(folder.validation) == validation
    assert _identities(folder.test) == test


def test_the_same_seed_gives_the_same_split(tmp_path):
    _write_numbered(tmp_path, per_class=8)

    first = data.from_directory(tmp_path, 32, validation_split=0.5, seed=3)
    second = data.from_directory(tmp_path, 32, validation_split=0.5, seed=3)

    assert _identities(first.validation) == _identities(second.validation)


def test_recipe_layout_reads_train_and_validation_folders(tmp_path):
    write_split_folders(tmp_path, {"cat": 4, "dog": 3}, {"cat": 2, "dog": 2})

    folder = data.from_directory(tmp_path, 32, batch_size=2)

    assert folder.class_names == ("cat", "dog")
    assert folder.counts == {"train": 7, "validation": 4}
    assert sorted(_images_and_labels(folder.validation)[1].tolist()) == [0, 0, 1, 1]


def test_recipe_layout_test_split_carves_the_test_set_from_validation(tmp_path):
    write_split_folders(tmp_path, {"cat": 3, "dog": 3}, {"cat": 5, "dog": 5})

    folder = data.from_directory(tmp_path, 32, batch_size=4, test_split=0.2)

    assert folder.counts == {"train": 6, "validation": 8, "test": 2}
    assert len(_images_and_labels(folder.test)[1]) == 2


def test_recipe_layout_reads_a_test_folder(tmp_path):
    write_split_folders(tmp_path, {"cat": 2, "dog": 2}, {"cat": 1, "dog": 1})
    write_class_folders(tmp_path / "test", {"cat": 3, "dog": 1})

    folder = data.from_directory(tmp_path, 32)

    assert folder.counts == {"train": 4, "validation": 2, "test": 4}


def test_a_val_folder_is_the_validation_set(tmp_path):
    write_class_folders(tmp_path / "train", {"cat": 2, "dog": 2})
    write_class_folders(tmp_path / "val", {"cat": 1, "dog": 2})

    folder = data.from_directory(tmp_path, 32)

    assert folder.counts == {"train": 4, "validation": 3}


def test_a_class_named_train_is_a_class_not_a_split(tmp_path):
    write_class_folders(tmp_path, {"bus": 2, "train": 3})

    folder = data.from_directory(tmp_path, 32)

    assert folder.class_names == ("bus", "train")


def test_class_names_set_the_label_order(tmp_path):
    write_class_folders(tmp_path, {"cat": 2, "dog": 4})

    folder = data.from_directory(tmp_path, 32, class_names=["dog", "cat"])

    assert folder.class_names == ("dog", "cat")
    assert sorted(_images_and_labels(folder.train)[1].tolist()) == [0, 0, 0, 0, 1, 1]


def test_datasets_carry_their_class_names(tmp_path):
    write_class_folders(tmp_path, {"cat": 4, "dog": 4})

    folder = data.from_directory(tmp_path, 32, validation_split=0.5, test_split=0.5)

    for dataset in (folder.train, folder.validation, folder.test):
        assert dataset.class_names == ["cat", "dog"]


def test_hidden_folders_are_not_classes(tmp_path):
    write_class_folders(tmp_path, {"cat": 2, "dog": 2})
    write_image(tmp_path / ".ipynb_checkpoints" / "x.png", uniform_pixels(9))

    assert data.from_directory(tmp_path, 32).class_names == ("cat", "dog")


# ---------------------------------------------------------------------- color modes


@pytest.mark.parametrize(
    ("mode", "suffix"), [("L", ".png"), ("LA", ".png"), ("P", ".png"), ("L", ".jpg")]
)
def test_grayscale_and_palette_images_are_read_as_rgb(tmp_path, mode, suffix):
    write_image(tmp_path / "a" / f"x{suffix}", uniform_pixels(200), mode=mode)
    write_image(tmp_path / "b" / "y.png", uniform_pixels(40))

    images, labels = _images_and_labels(data.from_directory(tmp_path, 32).train)

    gray = images[labels == 0][0]
    assert gray.shape == (32, 32, 3)
    np.testing.assert_allclose(gray, 200, atol=2)


def test_rgba_images_are_read_as_rgb_without_alpha(tmp_path):
    pixels = np.zeros((32, 32, 4), np.uint8)
    pixels[...] = (10, 120, 230, 77)
    write_image(tmp_path / "a" / "x.png", pixels)
    write_image(tmp_path / "b" / "y.png", uniform_pixels(40))

    images, labels = _images_and_labels(data.from_directory(tmp_path, 32).train)

    np.testing.assert_array_equal(
        images[labels == 0][0], np.broadcast_to([10, 120, 230], (32, 32, 3))
    )


# ---------------------------------------------------------------------- bad folders


def test_a_missing_folder_is_an_error_naming_it(tmp_path):
    with pytest.raises(DataError, match=r"No such folder: '.*nowhere'"):
        data.from_directory(tmp_path / "nowhere", 32)


def test_a_file_instead_of_a_folder_is_an_error(tmp_path):
    image = write_image(tmp_path / "x.png", uniform_pixels(1))

    with pytest.raises(DataError, match="is a file; pass a folder"):
        data.from_directory(image, 32)


def test_images_without_class_subfolders_are_an_error_that_counts_them(tmp_path):
    for i in range(3):
        write_image(tmp_path / f"{i}.png", uniform_pixels(i))

    with pytest.raises(DataError, match=r"no class subfolders.*It holds 3 images directly"):
        data.from_directory(tmp_path, 32)


def test_a_single_class_is_an_error(tmp_path):
    write_class_folders(tmp_path, {"cat": 3})

    with pytest.raises(DataError, match=r"only one class subfolder \('cat'\)"):
        data.from_directory(tmp_path, 32)


def test_an_empty_class_folder_is_an_error_naming_it(tmp_path):
    write_class_folders(tmp_path, {"cat": 3, "dog": 3})
    (tmp_path / "fox").mkdir()
    write_text_file(tmp_path / "fox" / "notes.txt")

    with pytest.raises(DataError, match=r"Class folders with no images in .*: 'fox'"):
        data.from_directory(tmp_path, 32)


@pytest.mark.parametrize(
    ("write", "problem"),
    [
        (lambda p: write_text_file(p), "not a JPEG, PNG, GIF, BMP, WebP or JPEG XL image"),
        (lambda p: write_truncated_jpeg(p), "truncated or corrupt JPEG"),
        (lambda p: p.write_bytes(b""), "empty file"),
        (
            lambda p: p.write_bytes(encode(uniform_pixels(5), ".png")[:-40]),
            "truncated or corrupt PNG",
        ),
    ],
    ids=["text", "truncated-jpeg", "empty", "truncated-png"],
)
def test_a_file_that_cannot_be_decoded_is_an_error_naming_it(tmp_path, write, problem):
    write_class_folders(tmp_path, {"cat": 2, "dog": 2})
    write(tmp_path / "dog" / "broken.jpg")

    with pytest.raises(
        DataError,
        match=rf"1 files in .* cannot be decoded as images: dog/broken\.jpg \({problem}\)",
    ):
        data.from_directory(tmp_path, 32)


def test_a_macos_resource_fork_file_is_named_as_not_an_image(tmp_path):
    write_class_folders(tmp_path, {"cat": 2, "dog": 2})
    (tmp_path / "cat" / "._cat0.png").write_bytes(b"\x00\x05\x16\x07" + bytes(60))

    with pytest.raises(DataError, match=r"cat/\._cat0\.png \(not a JPEG"):
        data.from_directory(tmp_path, 32)


def test_many_bad_files_are_counted_and_the_first_ten_named(tmp_path):
    write_class_folders(tmp_path, {"cat": 2, "dog": 2})
    for i in range(12):
        write_text_file(tmp_path / "cat" / f"bad{i:02d}.jpg")

    with pytest.raises(DataError, match=r"12 files .*bad09\.jpg \(.*\) and 2 more") as error:
        data.from_directory(tmp_path, 32)

    assert "bad10" not in str(error.value)


def test_a_bad_file_in_the_validation_folder_fails_before_any_dataset(tmp_path):
    write_split_folders(tmp_path, {"cat": 2, "dog": 2}, {"cat": 2, "dog": 2})
    write_truncated_jpeg(tmp_path / "validation" / "cat" / "cut.jpg")

    with pytest.raises(DataError, match=r"cat/cut\.jpg \(truncated"):
        data.from_directory(tmp_path, 32)


def test_a_valid_image_with_trailing_bytes_is_accepted(tmp_path):
    write_class_folders(tmp_path, {"cat": 2, "dog": 2})
    jpeg = encode(uniform_pixels(90), ".jpg") + bytes(4000)
    (tmp_path / "cat" / "padded.jpg").write_bytes(jpeg)

    assert data.from_directory(tmp_path, 32).counts == {"train": 5}


def test_a_png_named_jpg_is_read_by_its_content(tmp_path):
    write_class_folders(tmp_path, {"cat": 2, "dog": 2})
    (tmp_path / "cat" / "really_a_png.jpg").write_bytes(encode(uniform_pixels(90), ".png"))

    assert data.from_directory(tmp_path, 32).counts == {"train": 5}


def test_files_of_other_types_are_ignored_with_a_warning_naming_them(tmp_path):
    write_class_folders(tmp_path, {"cat": 2, "dog": 2})
    write_text_file(tmp_path / "cat" / "notes.txt")
    (tmp_path / "dog" / ".DS_Store").write_bytes(b"\x00")

    with pytest.warns(
        TransferkitWarning, match=r"1 files in .* are ignored.*Ignored: cat/notes\.txt$"
    ):
        folder = data.from_directory(tmp_path, 32)

    assert folder.counts == {"train": 4}


def test_validation_classes_that_differ_from_train_are_a_mismatch(tmp_path):
    write_split_folders(tmp_path, {"cat": 2, "dog": 2}, {"cat": 2, "fox": 2})

    with pytest.raises(ClassNamesMismatchError, match=r"missing \['dog'\]; unexpected \['fox'\]"):
        data.from_directory(tmp_path, 32)


def test_class_names_that_differ_from_the_folders_are_a_mismatch(tmp_path):
    write_class_folders(tmp_path, {"cat": 2, "dog": 2})

    with pytest.raises(
        ClassNamesMismatchError, match=r"differ from the class names \['cat', 'cow'\]"
    ):
        data.from_directory(tmp_path, 32, class_names=["cat", "cow"])


def test_a_split_too_small_to_hold_an_image_is_an_error(tmp_path):
    write_class_folders(tmp_path, {"cat": 2, "dog": 2})

    with pytest.raises(DataError, match=r"validation_split=0.1 of the 4 images .* holds out none"):
        data.from_directory(tmp_path, 32, validation_split=0.1)


def test_test_split_without_a_validation_set_is_an_error(tmp_path):
    write_class_folders(tmp_path, {"cat": 2, "dog": 2})

    with pytest.raises(InvalidArgumentError, match="there is no validation set"):
        data.from_directory(tmp_path, 32, test_split=0.2)


def test_validation_split_with_a_validation_folder_is_an_error(tmp_path):
    write_split_folders(tmp_path, {"cat": 2, "dog": 2}, {"cat": 1, "dog": 1})

    with pytest.raises(InvalidArgumentError, match="has a validation/ folder"):
        data.from_directory(tmp_path, 32, validation_split=0.2)


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"image_size": 0}, InvalidImageSizeError),
        ({"image_size": (32,)}, InvalidImageSizeError),
        ({"batch_size": 0}, InvalidArgumentError),
        ({"validation_split": 1.0}, InvalidArgumentError),
        ({"validation_split": 0.2, "test_split": 0}, InvalidArgumentError),
        ({"seed": 1.5}, InvalidArgumentError),
        ({"class_names": "cat"}, InvalidArgumentError),
    ],
)
def test_invalid_arguments_are_rejected_with_the_received_value(tmp_path, kwargs, error):
    write_class_folders(tmp_path, {"cat": 2, "dog": 2})
    arguments = {"image_size": 32, **kwargs}

    with pytest.raises(error, match="Received: "):
        data.from_directory(tmp_path, **arguments)


# ---------------------------------------------------------------------- files for prediction


def test_list_images_walks_a_folder_in_sorted_order(tmp_path):
    write_image(tmp_path / "b.png", uniform_pixels(1))
    write_image(tmp_path / "sub" / "a.JPG", uniform_pixels(1))
    write_text_file(tmp_path / "c.txt")

    assert data.list_images(tmp_path) == [tmp_path / "b.png", tmp_path / "sub" / "a.JPG"]


def test_list_images_of_a_missing_path_is_an_error(tmp_path):
    with pytest.raises(DataError, match=r"No such file or folder: '.*gone'"):
        data.list_images(tmp_path / "gone")


def test_load_images_gives_the_pixels_the_training_datasets_give(tmp_path):
    write_class_folders(tmp_path, {"cat": 1, "dog": 1}, size=50, suffix=".jpg")

    loaded = data.load_images(data.list_images(tmp_path), 32)
    dataset = data.from_directory(tmp_path, 32, class_names=["cat", "dog"])
    images, labels = _images_and_labels(dataset.train)

    assert loaded.shape == (2, 32, 32, 3)
    assert loaded.dtype == np.float32
    np.testing.assert_array_equal(loaded, images[np.argsort(labels)])


def test_load_images_names_a_file_that_cannot_be_decoded(tmp_path):
    bad = write_text_file(tmp_path / "x.png")

    with pytest.raises(DataError, match=r"x\.png \(not a JPEG"):
        data.load_images([bad], 32)


def test_load_images_names_a_missing_file(tmp_path):
    with pytest.raises(DataError, match=r"No such image file: .*gone\.png"):
        data.load_images([tmp_path / "gone.png"], 32)


# ---------------------------------------------------------------------- classifier methods


def _classifier(**kwargs):
    return tk.TransferClassifier(TINY_BACKBONE, image_size=32, weights=None, **kwargs)


@pytest.mark.slow
def test_fit_head_and_evaluate_accept_a_folder_path(tmp_path):
    write_class_folders(tmp_path, {"cat": 6, "dog": 6})
    clf = _classifier(class_names=["cat", "dog"])

    clf.fit_head(tmp_path, validation_data=tmp_path, epochs=1, batch_size=4, verbose=0)
    results = clf.evaluate(tmp_path)

    assert clf.history.epochs == [0]
    assert set(results) == {"loss", "accuracy"}


def test_a_classifier_without_class_names_takes_the_folder_names(tmp_path):
    write_class_folders(tmp_path, {"cat": 2, "dog": 2})
    clf = _classifier(num_classes=2)

    clf.evaluate(tmp_path)

    assert clf.class_names == ["cat", "dog"]


def test_a_folder_with_other_classes_fails_before_training(tmp_path):
    write_class_folders(tmp_path, {"cat": 2, "fox": 2})
    clf = _classifier(class_names=["cat", "dog"])

    with pytest.raises(ClassNamesMismatchError, match=r"missing \['dog'\]; unexpected \['fox'\]"):
        clf.fit_head(tmp_path, epochs=1, verbose=0)

    assert clf.history.epochs == []


def test_fine_tune_on_a_folder_with_other_classes_is_a_mismatch(tmp_path):
    write_class_folders(tmp_path, {"cat": 2, "dog": 2, "fox": 2})
    clf = _classifier(class_names=["cat", "dog"]).unfreeze()

    with pytest.raises(ClassNamesMismatchError, match=r"unexpected \['fox'\]"):
        clf.fine_tune(tmp_path, epochs=1, verbose=0)

    assert clf.history.epochs == []


def test_a_dataset_with_class_names_in_another_order_is_a_mismatch(tmp_path):
    write_class_folders(tmp_path, {"cat": 2, "dog": 2})
    train = data.from_directory(tmp_path, 32).train
    clf = _classifier(class_names=["dog", "cat"])

    with pytest.raises(ClassNamesMismatchError, match=r"same names in the same order"):
        clf.evaluate(train)


def test_a_folder_is_read_in_the_classifiers_class_order(tmp_path):
    write_class_folders(tmp_path, {"cat": 4, "dog": 4})
    clf = _classifier(class_names=["dog", "cat"])

    results = clf.evaluate(tmp_path)

    assert clf.class_names == ["dog", "cat"]
    assert 0.0 <= results["accuracy"] <= 1.0


def test_a_train_validation_folder_passed_as_data_is_an_error_with_a_hint(tmp_path):
    write_split_folders(tmp_path, {"cat": 2, "dog": 2}, {"cat": 1, "dog": 1})
    clf = _classifier(class_names=["cat", "dog"])

    with pytest.raises(DataError, match=r"pass one of them, such as '.*train'"):
        clf.fit_head(tmp_path, epochs=1, verbose=0)


def test_predict_accepts_a_folder_and_an_image_path(tmp_path):
    write_class_folders(tmp_path, {"cat": 2, "dog": 1})
    clf = _classifier(class_names=["cat", "dog"])
    files = data.list_images(tmp_path)

    from_folder = clf.predict(tmp_path)
    from_file = clf.predict(files[2])

    assert from_folder.shape == (3, 2)
    np.testing.assert_allclose(from_folder, clf.predict(data.load_images(files, 32)), atol=1e-6)
    np.testing.assert_allclose(from_file, from_folder[2:], atol=1e-6)


def test_numpy_numbers_are_accepted_wherever_a_number_is_taken(tmp_path):
    write_class_folders(tmp_path, {"cat": 4, "dog": 4})

    folder = data.from_directory(
        tmp_path,
        np.int64(16),
        batch_size=np.int32(2),
        validation_split=np.float64(0.25),
        seed=np.int64(3),
        class_names=["cat", "dog"],
    )
    images, _ = next(iter(folder.train))

    assert images.shape == (2, 16, 16, 3)
    assert folder.counts == {"train": 6, "validation": 2}
    assert data.load_images(data.list_images(tmp_path)[:1], (np.int64(8), np.int16(12))).shape == (
        1,
        8,
        12,
        3,
    )
