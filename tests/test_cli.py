"""The ``transferkit`` command, run as users run it: the installed script on real image files.

Each run of the script pays for importing TensorFlow (seconds), so the script runs a few
times only: one ``train`` (mobilenet_v2 at 32x32, random weights) whose model the
``predict`` and ``evaluate`` runs reuse. Behaviours that need no separate process (help,
options, error lines) call ``main()`` in this process, where the tiny test backbone exists.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

import transferkit as tk
from conftest import TINY_BACKBONE
from images import write_class_folders, write_split_folders, write_truncated_jpeg
from offline import offline_env
from transferkit import data
from transferkit.cli.app import main

SCRIPT = Path(sys.executable).with_name("transferkit")


def run_script(*args: object, log_level: str | None = "2") -> subprocess.CompletedProcess[str]:
    """Runs the console script; ``log_level=None`` leaves TF_CPP_MIN_LOG_LEVEL unset."""
    assert SCRIPT.is_file(), f"no console script at {SCRIPT}; run pip install -e ."
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    if log_level is not None:
        env["TF_CPP_MIN_LOG_LEVEL"] = log_level
    return subprocess.run(
        [os.fspath(SCRIPT), *map(str, args)],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
        check=False,
    )


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("transferkit:")]


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> SimpleNamespace:
    """One real `transferkit train` run, with both stages and a test split."""
    root = tmp_path_factory.mktemp("cli")
    folder = write_split_folders(root / "data", {"cat": 4, "dog": 4}, {"cat": 3, "dog": 3})
    model = root / "model.keras"
    result = run_script(
        "train", folder,
        "--backbone", "mobilenet_v2", "--image-size", "32", "--weights", "none",
        "--recipe", "--epochs", "1", "--fine-tune-epochs", "1", "--unfreeze-from", "100",
        "--test-split", "0.2", "--batch-size", "4", "--output", model,
    )  # fmt: skip
    return SimpleNamespace(folder=folder, model=model, result=result)


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> SimpleNamespace:
    """A three-class model of the tiny backbone, trained by main() in this process."""
    root = tmp_path_factory.mktemp("cli_tiny")
    folder = write_class_folders(root / "data", {"blue": 4, "green": 4, "red": 4})
    model = root / "tiny.keras"
    status = main(
        ["train", str(folder), "--backbone", TINY_BACKBONE, "--weights", "none", "--recipe",
         "--epochs", "1", "--fine-tune-epochs", "0", "--batch-size", "4", "--output", str(model)]
    )  # fmt: skip
    assert status == 0
    return SimpleNamespace(folder=folder, model=model)


# ---------------------------------------------------------------------- the installed script


@pytest.mark.slow
def test_train_writes_a_model_that_loads_with_the_folder_classes(trained):
    assert trained.result.returncode == 0, trained.result.stderr[-3000:]

    clf = tk.load_classifier(trained.model)

    assert clf.class_names == ["cat", "dog"]
    assert clf.spec.name == "mobilenet_v2"
    assert clf.image_size == (32, 32)
    assert clf.history.stages == ["head", "fine_tune"]
    assert clf.unfrozen_from == 100


@pytest.mark.slow
def test_train_prints_both_stages_and_a_summary(trained):
    out = trained.result.stdout

    assert "Images: train 8, validation 5, test 1; classes: cat, dog" in out
    assert "Stage 1: training the head for 1 epoch" in out
    assert "Stage 2: fine-tuning from backbone layer 100 of 154 for 1 epoch" in out
    summary = out.split("\nSummary\n")[1]
    assert "test         accuracy " in summary
    assert f"model        {trained.model}" in summary


def test_train_writes_the_history_plot_next_to_the_model(trained):
    plot_path = trained.model.with_suffix(".history.png")

    with Image.open(plot_path) as image:
        assert image.format == "PNG"
        assert image.size == (800, 800)
    assert f"history plot {plot_path}" in trained.result.stdout


@pytest.mark.slow
def test_predict_json_gives_probabilities_summing_to_one_best_first(trained):
    folder = trained.folder / "validation" / "cat"
    single = trained.folder / "train" / "dog" / "dog0.png"

    result = run_script("predict", trained.model, folder, single, "--json")
    predictions = json.loads(result.stdout)

    assert result.returncode == 0, result.stderr[-3000:]
    assert [p["path"] for p in predictions] == [str(f) for f in data.list_images(folder)] + [
        str(single)
    ]
    for prediction in predictions:
        probabilities = [c["probability"] for c in prediction["predictions"]]
        assert {c["class_name"] for c in prediction["predictions"]} == {"cat", "dog"}
        assert sum(probabilities) == pytest.approx(1.0, abs=1e-5)
        assert probabilities == sorted(probabilities, reverse=True)
        assert prediction["class_name"] == prediction["predictions"][0]["class_name"]


@pytest.mark.slow
def test_evaluate_prints_accuracy_and_loss(trained):
    result = run_script("evaluate", trained.model, trained.folder / "validation")
    printed = dict(zip(*[iter(result.stdout.split())] * 2, strict=True))

    assert result.returncode == 0, result.stderr[-3000:]
    assert sorted(printed) == ["accuracy", "loss"]
    # 6 images in validation/: accuracy is a multiple of 1/6, printed to 4 decimals.
    accuracy = float(printed["accuracy"])
    assert accuracy * 6 == pytest.approx(round(accuracy * 6), abs=6e-4)
    assert float(printed["loss"]) > 0


@pytest.mark.slow
def test_an_error_is_one_line_on_stderr_and_exit_status_1(tmp_path):
    result = run_script("predict", tmp_path / "model.keras", tmp_path / "missing.png")

    assert result.returncode == 1
    assert error_lines(result.stderr) == [
        f"transferkit: error: No such file or folder: '{tmp_path / 'missing.png'}'. "
        f"Received: path='{tmp_path / 'missing.png'}'"
    ]
    assert "Traceback" not in result.stderr


@pytest.mark.slow
def test_a_command_prints_no_tensorflow_start_up_logging(tmp_path):
    # TF_CPP_MIN_LOG_LEVEL unset, as users run it: only transferkit's own line on stderr.
    result = run_script("backbones", "nothing*", log_level=None)

    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        "transferkit: error: No backbone matches 'nothing*'. Received: pattern='nothing*'"
    ]


@pytest.mark.slow
def test_train_offline_with_imagenet_weights_is_one_error_line(tmp_path):
    folder = write_class_folders(tmp_path / "data", {"a": 2, "b": 2})
    model = tmp_path / "m.keras"

    result = subprocess.run(
        [os.fspath(SCRIPT), "train", os.fspath(folder), "--image-size", "96",
         "--recipe", "--epochs", "1", "--fine-tune-epochs", "0", "--output", os.fspath(model)],
        capture_output=True, text=True, timeout=600, check=False,
        env=offline_env(tmp_path / "keras_home", TF_CPP_MIN_LOG_LEVEL="2"),
    )  # fmt: skip

    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    [line] = error_lines(result.stderr)
    assert line.startswith(
        "transferkit: error: Could not download the ImageNet weights for 'mobilenet_v2'"
    )
    assert "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_96_no_top.h5" in line
    assert not model.exists()


_MODULES_AFTER_MAIN = """
import sys
from transferkit.cli.app import main
try:
    main(sys.argv[1:])
except SystemExit as exc:
    print("exit", exc.code)
print(sorted(m for m in ("tensorflow", "keras", "numpy") if m in sys.modules))
"""


@pytest.mark.parametrize(
    ("argv", "code"),
    [
        (["--help"], 0),
        (["train", "--help"], 0),
        (["predict", "--help"], 0),
        (["train", "data", "--epochs", "0"], 2),
        (["train", "data", "--validation-split", "1.5"], 2),
        (["frobnicate"], 2),
    ],
    ids=["help", "train-help", "predict-help", "bad-epochs", "bad-split", "no-such-command"],
)
def test_help_and_usage_errors_do_not_import_tensorflow(argv, code):
    result = subprocess.run(
        [sys.executable, "-c", _MODULES_AFTER_MAIN, *argv],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )

    assert result.stdout.splitlines()[-2:] == [f"exit {code}", "[]"], result.stderr


def test_import_transferkit_does_not_import_tensorflow():
    code = """
import sys
import transferkit as tk
print(tk.__version__ != "", "tensorflow" in sys.modules, set(tk.__all__) <= set(dir(tk)))
"""
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False
    )

    assert result.stdout.splitlines() == ["True False True"], result.stderr


def test_the_lazy_names_are_the_objects_their_modules_define():
    from transferkit import TransferClassifier, data, load_classifier
    from transferkit import classifier as classifier_module

    assert TransferClassifier is classifier_module.TransferClassifier
    assert load_classifier is classifier_module.load_classifier
    assert tk.data is data
    assert tk.Backbone is tk.backbone.Backbone


def test_an_unknown_attribute_of_the_package_is_an_attribute_error():
    with pytest.raises(AttributeError, match="has no attribute 'nothing'"):
        _ = tk.nothing


# ---------------------------------------------------------------------- main() in process


def test_backbones_prints_the_registry_as_a_table(capsys):
    status = main(["backbones", "mobilenet*"])
    header, *rows = capsys.readouterr().out.splitlines()

    assert status == 0
    assert header.split() == ["NAME", "FAMILY", "SIZE", "PARAMETERS", "PREPROCESSING"]
    assert [row.split()[0] for row in rows] == tk.list_backbones("mobilenet*")
    for row in rows:
        name, family, size, parameters, preprocessing = row.split()
        spec = tk.get_backbone(name)
        assert (family, int(size), parameters, preprocessing) == (
            spec.family,
            spec.default_image_size,
            f"{spec.parameters:,}",
            spec.preprocessing,
        )


@pytest.mark.parametrize(
    "command", ["backbones", "train", "lr-find", "predict", "evaluate", "export"]
)
def test_every_subcommand_has_help(capsys, command):
    with pytest.raises(SystemExit) as exit_info:
        main([command, "--help"])

    assert exit_info.value.code == 0
    assert capsys.readouterr().out.startswith(f"usage: transferkit {command}")


@pytest.mark.slow
def test_train_with_zero_fine_tune_epochs_skips_stage_two(tiny_model):
    clf = tk.load_classifier(tiny_model.model)

    assert clf.history.stages == ["head"]
    assert clf.unfrozen_from is None
    assert clf.class_names == ["blue", "green", "red"]


def test_predict_text_shows_the_top_k_classes_best_first(tiny_model, capsys):
    files = data.list_images(tiny_model.folder / "red")[:2]

    status = main(["predict", str(tiny_model.model), *map(str, files), "--top-k", "2"])
    lines = capsys.readouterr().out.splitlines()

    assert status == 0
    assert [line.split()[0] for line in lines] == [str(f) for f in files]
    for line in lines:
        _, first, p1, second, p2 = line.split()
        assert {first, second} <= {"blue", "green", "red"}
        assert float(p1) >= float(p2)


def test_predict_top_k_takes_the_most_probable_classes(tiny_model, capsys):
    image = str(data.list_images(tiny_model.folder / "blue")[0])

    main(["predict", str(tiny_model.model), image, "--json"])
    every = json.loads(capsys.readouterr().out)[0]["predictions"]
    main(["predict", str(tiny_model.model), image, "--json", "--top-k", "1"])
    best = json.loads(capsys.readouterr().out)[0]["predictions"]

    probabilities = [c["probability"] for c in every]
    assert len(every) == 3
    assert sum(probabilities) == pytest.approx(1.0, abs=1e-5)
    assert probabilities == sorted(probabilities, reverse=True)
    assert best == every[:1]


def test_train_without_matplotlib_saves_the_model_and_names_the_extra(
    tmp_path, capsys, monkeypatch
):
    for name in [m for m in sys.modules if m.startswith("matplotlib.")]:
        monkeypatch.setitem(sys.modules, name, None)
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    folder = write_class_folders(tmp_path / "data", {"a": 2, "b": 2})
    model = tmp_path / "m.keras"

    status = main(
        ["train", str(folder), "--backbone", TINY_BACKBONE, "--weights", "none", "--recipe",
         "--epochs", "1", "--fine-tune-epochs", "0", "--output", str(model)]
    )  # fmt: skip

    assert status == 0
    assert model.is_file()
    assert not model.with_suffix(".history.png").exists()
    assert "not written: Plotting needs matplotlib" in capsys.readouterr().out


def _train_args(folder: Path, *extra: str) -> list[str]:
    return ["train", str(folder), "--backbone", TINY_BACKBONE, "--weights", "none",
            "--recipe", "--epochs", "1", *extra]  # fmt: skip


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (lambda p: _train_args(p / "nowhere"), "No such folder: '"),
        (
            lambda p: ["train", str(p), "--backbone", "mobilenetv2"],
            "Unknown backbone 'mobilenetv2'. Did you mean 'mobilenet_v2'?",
        ),
        (
            # The weights are checked before the folder is even looked at.
            lambda p: ["train", str(p / "nowhere"), "--weights", str(p / "missing.h5")],
            "Weights file not found: ",
        ),
        (lambda p: _train_args(p, "--output", str(p / "m.h5")), "--output must be a .keras file"),
        (lambda p: _train_args(p, "--unfreeze-from", "999"), "from_layer is out of range"),
        (lambda p: ["backbones", "nothing*"], "No backbone matches 'nothing*'"),
        (
            lambda p: ["train", str(p), "--backbone", TINY_BACKBONE, "--unfreeze-from", "3"],
            "--fine-tune-epochs and --unfreeze-from set the recipe's stages: add --recipe",
        ),
    ],
    ids=[
        "missing-folder",
        "unknown-backbone",
        "weights-size",
        "output",
        "layer",
        "no-match",
        "recipe-only-option",
    ],
)
def test_errors_are_one_line_and_exit_status_1(tmp_path, capsys, argv, message):
    write_class_folders(tmp_path, {"a": 2, "b": 2})

    status = main(argv(tmp_path))
    lines = capsys.readouterr().err.strip().splitlines()

    assert status == 1
    assert len(lines) == 1
    assert lines[0].startswith(f"transferkit: error: {message}")
    assert not list(tmp_path.glob("*.keras"))


def test_a_corrupt_image_in_the_training_folder_is_named_before_training(tmp_path, capsys):
    write_class_folders(tmp_path, {"a": 2, "b": 2})
    write_truncated_jpeg(tmp_path / "b" / "cut.jpg")

    status = main(_train_args(tmp_path, "--output", str(tmp_path / "m.keras")))
    err = capsys.readouterr().err

    assert status == 1
    assert r"b/cut.jpg (truncated or corrupt JPEG)" in err
    assert not (tmp_path / "m.keras").exists()


def test_evaluate_on_other_classes_is_a_class_mismatch(tiny_model, tmp_path, capsys):
    write_class_folders(tmp_path, {"blue": 2, "green": 2, "pink": 2})

    status = main(["evaluate", str(tiny_model.model), str(tmp_path)])

    assert status == 1
    assert capsys.readouterr().err.startswith("transferkit: error: The class folders of "), (
        "expected the ClassNamesMismatchError line"
    )


def test_evaluate_on_a_train_validation_folder_asks_for_one_of_them(tiny_model, tmp_path, capsys):
    write_split_folders(
        tmp_path, {"blue": 1, "green": 1, "red": 1}, {"blue": 1, "green": 1, "red": 1}
    )

    status = main(["evaluate", str(tiny_model.model), str(tmp_path)])

    assert status == 1
    assert "pass one of them, such as" in capsys.readouterr().err


def test_predict_on_a_folder_without_images_is_an_error(tiny_model, tmp_path, capsys):
    status = main(["predict", str(tiny_model.model), str(tmp_path)])

    assert status == 1
    assert "No image files in" in capsys.readouterr().err


def test_predict_top_k_above_the_class_count_is_an_error(tiny_model, capsys):
    image = str(data.list_images(tiny_model.folder)[0])

    status = main(["predict", str(tiny_model.model), image, "--top-k", "4"])

    assert status == 1
    assert "--top-k cannot exceed the model's 3 classes" in capsys.readouterr().err


@pytest.mark.parametrize(
    "argv",
    [
        ["train", ".", "--image-size", "big"],
        ["train", ".", "--image-size", "0x32"],
        ["train", ".", "--epochs", "0"],
        ["train", ".", "--fine-tune-epochs", "-1"],
        ["train", ".", "--test-split", "0"],
        ["predict", "m.keras", "a.png", "--batch-size", "1.5"],
        [],
    ],
    ids=["image-size", "zero-side", "epochs", "fine-tune-epochs", "split", "batch", "no-command"],
)
def test_usage_errors_exit_with_status_2(argv, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)

    assert exit_info.value.code == 2
    assert "usage: transferkit" in capsys.readouterr().err


def test_predict_prints_the_probabilities_the_library_computes(tiny_model, capsys):
    files = data.list_images(tiny_model.folder / "green")

    main(["predict", str(tiny_model.model), str(tiny_model.folder / "green"), "--json"])
    printed = json.loads(capsys.readouterr().out)
    clf = tk.load_classifier(tiny_model.model)
    expected = clf.predict(data.load_images(files, clf.image_size))

    for row, prediction in zip(expected, printed, strict=True):
        by_name = {c["class_name"]: c["probability"] for c in prediction["predictions"]}
        np.testing.assert_allclose([by_name[n] for n in clf.class_names], row, atol=1e-6)


# ---------------------------------------------------------------------- fit() and lr-find


@pytest.mark.slow
def test_train_without_recipe_runs_fit_and_prints_its_decisions(tmp_path, capsys):
    folder = write_class_folders(tmp_path / "data", {"blue": 5, "green": 5, "red": 5})
    model = tmp_path / "fit.keras"

    # Two validation images a class: with one, fit() keeps its probe and does not fine-tune.
    status = main(
        ["train", str(folder), "--backbone", TINY_BACKBONE, "--weights", "none",
         "--epochs", "1", "--batch-size", "4", "--validation-split", "0.4", "--output", str(model)]
    )  # fmt: skip
    out = capsys.readouterr().out

    assert status == 0
    clf = tk.load_classifier(model)
    assert clf.history.stages[-1] == "fine_tune"
    kept = next(d["value"] for d in clf.history.decisions if d["name"] == "kept")
    assert clf.unfrozen_from == (0 if kept == "fine_tuned" else None)
    assert "Images: train 9, validation 6; classes: blue, green, red" in out
    assert [d["name"] for d in clf.history.decisions][:2] == ["validation", "head_learning_rate"]
    printed = [line for line in out.splitlines() if line.startswith("fit: ")]
    assert len(printed) == len(clf.history.decisions)


@pytest.mark.slow
def test_lr_find_prints_the_suggestion_and_draws_the_sweep(tmp_path, capsys):
    folder = write_class_folders(tmp_path / "data", {"a": 4, "b": 4})
    plot = tmp_path / "lr.png"

    status = main(
        ["lr-find", str(folder), "--backbone", TINY_BACKBONE, "--weights", "none",
         "--batch-size", "4", "--steps", "20", "--plot", str(plot)]
    )  # fmt: skip
    lines = capsys.readouterr().out.splitlines()

    assert status == 0
    assert lines[0].startswith("Suggested learning rate: ")
    assert float(lines[0].split(": ")[1]) > 0
    assert f"  plot         {plot}" in lines
    with Image.open(plot) as image:
        assert image.format == "PNG"


# ---------------------------------------------------------------------- --log-dir


def logged_epochs(run: Path, tag: str = "epoch_loss") -> tuple[list[int], int]:
    """The epochs a TensorBoard run folder logged ``tag`` at, and its number of event files."""
    import tensorflow as tf

    files = sorted(run.glob("events.out.tfevents.*"))
    steps = [
        event.step
        for path in files
        for event in tf.compat.v1.train.summary_iterator(str(path))
        for value in event.summary.value
        if value.tag == tag
    ]
    return sorted(steps), len(files)


@pytest.mark.slow
def test_train_recipe_log_dir_writes_tensorboard_logs_of_both_stages(tmp_path, capsys):
    folder = write_split_folders(tmp_path / "data", {"a": 4, "b": 4}, {"a": 2, "b": 2})
    logs = tmp_path / "logs"

    status = main(
        _train_args(folder, "--fine-tune-epochs", "2", "--batch-size", "4",
                    "--output", str(tmp_path / "m.keras"), "--log-dir", str(logs))
    )  # fmt: skip

    assert status == 0
    # One run: the head's epoch 0, then fine-tuning's epochs 1 and 2, one event file each.
    assert logged_epochs(logs / "train") == ([0, 1, 2], 2)
    assert logged_epochs(logs / "validation") == ([0, 1, 2], 2)
    assert f"logs         {logs} (tensorboard --logdir)" in capsys.readouterr().out


@pytest.mark.slow
def test_train_with_fit_log_dir_logs_every_epoch_of_both_stages(tmp_path):
    folder = write_class_folders(tmp_path / "data", {"blue": 5, "green": 5, "red": 5})
    model = tmp_path / "fit.keras"
    logs = tmp_path / "logs"

    status = main(
        ["train", str(folder), "--backbone", TINY_BACKBONE, "--weights", "none", "--epochs", "1",
         "--batch-size", "4", "--validation-split", "0.4", "--output", str(model),
         "--log-dir", str(logs)]
    )  # fmt: skip

    assert status == 0
    stages = tk.load_classifier(model).history.stages
    assert set(stages) == {"head", "fine_tune"}
    steps, files = logged_epochs(logs / "train")
    assert steps == list(range(len(stages)))
    assert files == 2


def test_train_log_dir_that_is_a_file_is_a_usage_error(tmp_path, capsys):
    (tmp_path / "logs").write_text("not a folder")

    with pytest.raises(SystemExit) as exit_info:
        main(["train", str(tmp_path), "--log-dir", str(tmp_path / "logs")])

    assert exit_info.value.code == 2
    assert "must be a folder for TensorBoard's logs" in capsys.readouterr().err


def test_train_log_dir_without_tensorboard_names_it_before_reading_images(
    tmp_path, capsys, monkeypatch
):
    monkeypatch.setitem(sys.modules, "tensorboard", None)  # as if it were not installed

    status = main(_train_args(tmp_path / "nowhere", "--log-dir", str(tmp_path / "logs")))

    assert status == 1
    [line] = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("transferkit: error: --log-dir writes TensorBoard logs")
    assert "pip install tensorboard" in line
    assert not (tmp_path / "logs").exists()


@pytest.mark.slow
def test_train_checkpoint_dir_lets_the_same_command_resume_a_finished_run(tmp_path):
    folder = write_split_folders(tmp_path / "data", {"a": 4, "b": 4}, {"a": 2, "b": 2})
    checkpoints = tmp_path / "checkpoints"

    def train(output: Path) -> int:
        return main(
            _train_args(folder, "--fine-tune-epochs", "2", "--batch-size", "4",
                        "--output", str(output), "--checkpoint-dir", str(checkpoints))
        )  # fmt: skip

    assert train(tmp_path / "first.keras") == 0
    runs = sorted(path.name for path in checkpoints.iterdir())
    assert runs == ["fine_tune-from-epoch-1", "head-from-epoch-0"]
    assert train(tmp_path / "again.keras") == 0  # both stages found finished: nothing retrained
    assert sorted(path.name for path in checkpoints.iterdir()) == runs
    first, again = (
        tk.load_classifier(tmp_path / "first.keras"),
        tk.load_classifier(tmp_path / "again.keras"),
    )
    for saved, resumed in zip(first.model.get_weights(), again.model.get_weights(), strict=True):
        np.testing.assert_array_equal(saved, resumed)
    assert again.history.stages == first.history.stages == ["head", "fine_tune", "fine_tune"]


def test_train_checkpoint_dir_that_is_a_file_is_a_usage_error(tmp_path, capsys):
    (tmp_path / "checkpoints").write_text("not a folder")
    with pytest.raises(SystemExit) as exit_info:
        main(["train", str(tmp_path), "--output", str(tmp_path / "m.keras"),
              "--checkpoint-dir", str(tmp_path / "checkpoints")])  # fmt: skip
    assert exit_info.value.code == 2
    assert "must be a folder for the checkpoints" in capsys.readouterr().err
