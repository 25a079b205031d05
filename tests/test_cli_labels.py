"""The command line with CSV tables, multi-label models and class weights (main() in-process)."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

import transferkit as tk
from conftest import TINY_BACKBONE
from images import write_class_folders, write_composed_images
from transferkit import data
from transferkit.cli.app import main


@pytest.fixture(scope="module")
def tags(tmp_path_factory) -> SimpleNamespace:
    """A multi-label model trained by `transferkit train --csv` on composed images."""
    root = tmp_path_factory.mktemp("cli_tags")
    table, _ = write_composed_images(root / "photos", 48, seed=1)
    model = root / "tags.keras"
    status = main(
        ["train", "--csv", str(table), "--backbone", TINY_BACKBONE, "--weights", "none",
         "--image-size", "16x32", "--recipe", "--epochs", "3", "--fine-tune-epochs", "0",
         "--validation-split", "0.25", "--batch-size", "8", "--class-weight", "balanced",
         "--tune-thresholds", "--output", str(model)]
    )  # fmt: skip
    assert status == 0
    return SimpleNamespace(table=table, photos=root / "photos", model=model)


@pytest.mark.slow
def test_train_on_a_csv_table_makes_a_weighted_multi_label_model(tags):
    clf = tk.load_classifier(tags.model)

    assert clf.multi_label
    assert clf.class_names == ["blue", "green", "red"]
    assert clf.image_size == (16, 32)
    assert clf.thresholds is not None
    assert len(clf.thresholds) == 3
    assert clf.history.class_weights[0] is not None
    assert sorted(clf.history.class_weights[0]) == ["negative", "positive"]


@pytest.mark.slow
def test_predict_prints_every_label_above_its_threshold(tags, capsys):
    clf = tk.load_classifier(tags.model)
    files = data.list_images(tags.photos)[:4]
    capsys.readouterr()

    main(["predict", str(tags.model), *map(str, files), "--json"])
    results = json.loads(capsys.readouterr().out)
    main(["predict", str(tags.model), *map(str, files)])
    lines = capsys.readouterr().out.splitlines()

    expected = clf.predict_labels(data.load_images(files, clf.image_size))
    assert [r["labels"] for r in results] == expected
    for result, line in zip(results, lines, strict=True):
        assert sorted(result["probabilities"]) == ["blue", "green", "red"]
        shown = line.split()[1::2]
        assert shown == (result["labels"] or ["(no"])


def test_evaluate_reads_a_csv_table_too(tags, capsys):
    capsys.readouterr()

    status = main(["evaluate", str(tags.model), "--csv", str(tags.table)])
    names = capsys.readouterr().out.split()[::2]

    assert status == 0
    assert names == ["auc", "binary_accuracy", "loss", "macro_f1"]


def test_class_weight_names_and_weights_reach_the_training(tmp_path):
    folder = write_class_folders(tmp_path / "data", {"a": 4, "b": 2})
    model = tmp_path / "m.keras"

    status = main(
        ["train", str(folder), "--backbone", TINY_BACKBONE, "--weights", "none",
         "--recipe", "--epochs", "1", "--fine-tune-epochs", "0", "--class-weight", "b=3.5",
         "--output", str(model)]
    )  # fmt: skip

    assert status == 0
    assert tk.load_classifier(model).history.class_weights == [{"positive": {"a": 1.0, "b": 3.5}}]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["train", "DIR", "--csv", "t.csv"], "Pass either DATA_DIR"),
        (["train"], "Pass either DATA_DIR"),
        (["train", "DIR", "--multi-label"], "--multi-label needs --csv"),
        (["train", "DIR", "--images", "x"], "--images is the folder of a --csv table"),
        (["train", "--csv", "t.csv", "--tune-thresholds"], "pass --csv and --validation-split"),
    ],
)
def test_contradictory_data_options_are_one_line_errors(argv, message, capsys):
    status = main(argv)

    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert status == 1
    assert message in error


def test_a_bad_class_weight_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "DIR", "--class-weight", "b=-1"])

    assert exit_info.value.code == 2
    assert "must be 'balanced' or NAME=WEIGHT pairs" in capsys.readouterr().err


def test_top_k_is_refused_for_a_multi_label_model(tags, capsys):
    image = str(data.list_images(tags.photos)[0])

    status = main(["predict", str(tags.model), image, "--top-k", "2"])

    assert status == 1
    assert "every class above its threshold" in capsys.readouterr().err


def test_tune_thresholds_on_a_single_label_table_is_refused_before_training(tmp_path, capsys):
    write_class_folders(tmp_path / "img", {"a": 3, "b": 3})
    rows = [f"{c}/{c}{i}.png,{c}" for c in "ab" for i in range(3)]
    (tmp_path / "t.csv").write_text("filename,labels\n" + "\n".join(rows) + "\n")

    status = main(
        ["train", "--csv", str(tmp_path / "t.csv"), "--images", str(tmp_path / "img"),
         "--backbone", TINY_BACKBONE, "--weights", "none", "--validation-split", "0.5",
         "--tune-thresholds", "--output", str(tmp_path / "m.keras")]
    )  # fmt: skip

    assert status == 1
    assert "pass --multi-label too" in capsys.readouterr().err
    assert not (tmp_path / "m.keras").exists()
