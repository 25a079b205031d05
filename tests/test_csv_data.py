"""transferkit.data.from_csv / from_dataframe: tables of real image files, and every bad table."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import tensorflow as tf

from images import uniform_pixels, write_image, write_text_file, write_truncated_jpeg
from transferkit import data
from transferkit.errors import DataError, InvalidArgumentError


def _write_table(
    root: Path, rows: Sequence[tuple[str, str]], header: str = "filename,labels"
) -> Path:
    """Writes one-color images (value 10, 20, ... identifies row i) and a CSV listing them."""
    for i, (filename, _) in enumerate(rows):
        write_image(root / filename, uniform_pixels(10 * (i + 1)))
    lines = [header, *(f"{name},{labels}" for name, labels in rows)]
    path = root / "labels.csv"
    path.write_text("\n".join(lines) + "\n")
    return path


def _contents(dataset: tf.data.Dataset) -> dict[int, np.ndarray]:
    """Each image's identity (its pixel value) mapped to its target."""
    found = {}
    for images, targets in dataset:
        for image, target in zip(images.numpy(), targets.numpy(), strict=True):
            found[round(float(image[0, 0, 0]))] = target
    return found


_PETS = [("a.png", "cat"), ("b.png", "dog"), ("c.png", "cat"), ("sub/d.png", "bird")]
_TAGS = [("a.png", "cat"), ("b.png", "cat dog"), ("c.png", "dog"), ("d.png", "bird dog")]


# ---------------------------------------------------------------------- single and multi-label


def test_single_label_rows_give_int32_class_indices_like_folders(tmp_path):
    table = _write_table(tmp_path, _PETS)

    loaded = data.from_csv(table, tmp_path, image_size=32, batch_size=3)

    assert loaded.class_names == ("bird", "cat", "dog")
    assert loaded.counts == {"train": 4}
    assert loaded.validation is None
    assert loaded.test is None
    assert loaded.train.element_spec[1].dtype == tf.int32
    assert loaded.train.class_names == ["bird", "cat", "dog"]
    assert {k: int(v) for k, v in _contents(loaded.train).items()} == {10: 1, 20: 2, 30: 1, 40: 0}


def test_any_row_with_several_labels_gives_multi_hot_float_targets(tmp_path):
    table = _write_table(tmp_path, _TAGS)

    loaded = data.from_csv(table, tmp_path, image_size=32)
    targets = {k: v.tolist() for k, v in _contents(loaded.train).items()}

    assert loaded.class_names == ("bird", "cat", "dog")
    assert loaded.train.element_spec[1].dtype == tf.float32
    assert targets == {10: [0, 1, 0], 20: [0, 1, 1], 30: [0, 0, 1], 40: [1, 0, 1]}


def test_multi_label_true_makes_single_labels_multi_hot(tmp_path):
    table = _write_table(tmp_path, _PETS)

    loaded = data.from_csv(table, tmp_path, image_size=32, multi_label=True)

    assert _contents(loaded.train)[20].tolist() == [0, 0, 1]


def test_multi_label_false_refuses_rows_with_several_labels(tmp_path):
    table = _write_table(tmp_path, _TAGS)

    with pytest.raises(DataError, match=r"line 3 \(b.png: cat dog\).*multi_label=False"):
        data.from_csv(table, tmp_path, image_size=32, multi_label=False)


def test_pixels_are_those_load_images_reads_at_a_non_square_size(tmp_path):
    rng = np.random.default_rng(0)
    for name in ("x.png", "y.jpg"):
        write_image(tmp_path / name, rng.integers(0, 255, (30, 50, 3), np.uint8))
    (tmp_path / "t.csv").write_text("filename,labels\nx.png,a\ny.jpg,b\n")

    loaded = data.from_csv(tmp_path / "t.csv", tmp_path, image_size=(20, 36))
    images = np.concatenate([x.numpy() for x, _ in loaded.train])
    expected = data.load_images([tmp_path / "x.png", tmp_path / "y.jpg"], (20, 36))

    assert images.shape == (2, 20, 36, 3)
    # train is shuffled; match images by their sums
    assert sorted(images.sum(axis=(1, 2, 3))) == pytest.approx(sorted(expected.sum(axis=(1, 2, 3))))


def test_column_names_delimiter_and_class_names_are_honoured(tmp_path):
    rows = [("a.png", "red;round"), ("b.png", "round"), ("c.png", "red")]
    table = _write_table(tmp_path, rows, header="image,tags")

    loaded = data.from_csv(
        table,
        tmp_path,
        image_size=32,
        filename_column="image",
        label_column="tags",
        label_delimiter=";",
        class_names=["round", "red"],
    )

    assert loaded.class_names == ("round", "red")
    assert {k: v.tolist() for k, v in _contents(loaded.train).items()} == {
        10: [1, 1],
        20: [1, 0],
        30: [0, 1],
    }


# ---------------------------------------------------------------------- splits


def test_validation_and_test_splits_partition_the_rows_the_same_way_every_run(tmp_path):
    rows = [(f"{i}.png", "ab"[i % 2]) for i in range(20)]
    table = _write_table(tmp_path, rows)

    def splits() -> list[set[int]]:
        loaded = data.from_csv(
            table, tmp_path, image_size=8, validation_split=0.5, test_split=0.2, batch_size=4
        )
        assert loaded.counts == {"train": 10, "validation": 8, "test": 2}
        return [set(_contents(d)) for d in (loaded.train, loaded.validation, loaded.test)]

    train, validation, test = splits()

    assert (len(train), len(validation), len(test)) == (10, 8, 2)
    assert train | validation | test == {10 * (i + 1) for i in range(20)}
    assert splits() == [train, validation, test]


def test_a_split_holding_no_rows_is_refused(tmp_path):
    table = _write_table(tmp_path, _PETS)

    with pytest.raises(DataError, match=r"validation_split=0.1 of 4 rows.*holds out none"):
        data.from_csv(table, tmp_path, image_size=8, validation_split=0.1)


def test_test_split_without_validation_split_is_refused(tmp_path):
    table = _write_table(tmp_path, _PETS)

    with pytest.raises(InvalidArgumentError, match=r"Received: test_split=0\.5"):
        data.from_csv(table, tmp_path, image_size=8, test_split=0.5)


# ---------------------------------------------------------------------- bad tables


def test_missing_columns_are_named_with_the_columns_present(tmp_path):
    table = _write_table(tmp_path, _PETS, header="file,label")

    with pytest.raises(DataError, match=r"'filename' or 'labels'.*\['file', 'label'\]"):
        data.from_csv(table, tmp_path, image_size=32)


def test_rows_whose_file_does_not_exist_are_listed_with_their_lines(tmp_path):
    table = _write_table(tmp_path, _PETS)
    (tmp_path / "b.png").unlink()
    (tmp_path / "sub" / "d.png").unlink()

    with pytest.raises(DataError, match=r"2 rows .* line 3 \(b.png\), line 5 \(sub/d.png\)"):
        data.from_csv(table, tmp_path, image_size=32)


def test_empty_label_cells_are_listed(tmp_path):
    table = _write_table(tmp_path, [*_PETS, ("e.png", ""), ("f.png", "  ")])

    with pytest.raises(DataError, match=r"empty label cell: line 6 \(e.png\), line 7 \(f.png\)"):
        data.from_csv(table, tmp_path, image_size=32)


def test_undecodable_images_fail_before_any_dataset_is_built(tmp_path):
    table = _write_table(tmp_path, _PETS)
    write_truncated_jpeg(tmp_path / "a.png")
    write_text_file(tmp_path / "c.png")

    with pytest.raises(DataError, match="2 files cannot be decoded") as raised:
        data.from_csv(table, tmp_path, image_size=32)

    assert "a.png (truncated or corrupt JPEG)" in str(raised.value)
    assert "c.png (not a JPEG, PNG" in str(raised.value)


def test_a_file_listed_twice_is_refused(tmp_path):
    table = _write_table(tmp_path, _PETS)
    with table.open("a") as file:
        file.write("a.png,dog\n")

    with pytest.raises(DataError, match=r"a.png \(line 2 and line 6\)"):
        data.from_csv(table, tmp_path, image_size=32)


def test_labels_outside_class_names_are_refused(tmp_path):
    table = _write_table(tmp_path, _PETS)

    with pytest.raises(DataError, match=r"include \['bird'\], which are not in class_names"):
        data.from_csv(table, tmp_path, image_size=32, class_names=["cat", "dog"])


def test_a_table_with_one_label_is_refused(tmp_path):
    table = _write_table(tmp_path, [("a.png", "cat"), ("b.png", "cat")])

    with pytest.raises(DataError, match="at least two classes"):
        data.from_csv(table, tmp_path, image_size=32)


def test_missing_csv_file_and_bad_arguments_are_refused(tmp_path):
    with pytest.raises(DataError, match="No such CSV file"):
        data.from_csv(tmp_path / "nope.csv", tmp_path, image_size=32)
    table = _write_table(tmp_path, _PETS)
    with pytest.raises(InvalidArgumentError, match="Received: label_delimiter=''"):
        data.from_csv(table, tmp_path, image_size=32, label_delimiter="")
    with pytest.raises(InvalidArgumentError, match="Received: batch_size=0"):
        data.from_csv(table, tmp_path, image_size=32, batch_size=0)
    with pytest.raises(DataError, match="image_dir must be the folder"):
        data.from_csv(table, tmp_path / "missing", image_size=32)


# ---------------------------------------------------------------------- DataFrames


def test_dataframe_cells_may_be_strings_or_lists_of_labels(tmp_path):
    _write_table(tmp_path, _TAGS)
    frame = pd.DataFrame(
        {
            "filename": ["a.png", "b.png", "c.png", "d.png"],
            "labels": ["cat", ["cat", "dog"], "dog", "bird dog"],
        }
    )

    loaded = data.from_dataframe(frame, tmp_path, image_size=32)

    assert loaded.class_names == ("bird", "cat", "dog")
    assert _contents(loaded.train)[20].tolist() == [0, 1, 1]


def test_dataframe_rows_without_labels_are_named_by_index(tmp_path):
    _write_table(tmp_path, _PETS)
    frame = pd.DataFrame(
        {"filename": ["a.png", "b.png", "c.png"], "labels": ["cat", None, "dog"]},
        index=["r1", "r2", "r3"],
    )

    with pytest.raises(DataError, match=r"empty label cell: index 'r2' \(b.png\)"):
        data.from_dataframe(frame, tmp_path, image_size=32)


def test_from_dataframe_refuses_anything_but_a_dataframe(tmp_path):
    with pytest.raises(InvalidArgumentError, match="Received: frame=dict"):
        data.from_dataframe({"filename": ["a.png"]}, tmp_path, image_size=32)
