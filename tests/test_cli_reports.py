"""The command line's --report, --grad-cam and --tta, run through main() in this process."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

import transferkit as tk
from conftest import TINY_BACKBONE, separable_images
from images import write_class_folders
from transferkit.cli.app import main
from transferkit.interpret import interpret


@pytest.fixture(scope="module")
def saved(tmp_path_factory) -> SimpleNamespace:
    root = tmp_path_factory.mktemp("cli_reports")
    folder = write_class_folders(root / "data", {"blue": 4, "green": 4, "red": 3})
    x, y = separable_images(24, num_classes=3, seed=9)
    clf = tk.TransferClassifier(
        TINY_BACKBONE, class_names=["blue", "green", "red"], weights=None, augmentation=None
    )
    clf.fit_head((x, y), epochs=1, learning_rate=3e-3, verbose=0)
    model = clf.save(root / "tiny.keras")
    return SimpleNamespace(folder=folder, model=model, clf=clf)


def _png_size(path) -> tuple[int, int]:
    with Image.open(path) as image:
        assert image.format == "PNG"
        return image.size


@pytest.mark.slow
def test_evaluate_report_writes_the_json_the_figures_and_prints_the_table(
    saved, tmp_path, capsys
) -> None:
    out = tmp_path / "report"
    status = main(["evaluate", str(saved.model), str(saved.folder), "--report", str(out)])
    assert status == 0, capsys.readouterr().err
    printed = capsys.readouterr().out.splitlines()
    expected = interpret(saved.clf, saved.folder)
    assert printed[0] == f"accuracy {expected.accuracy:.4f}  loss {expected.loss:.4f}"
    assert "\n".join(printed[1:]) == expected.report_table()

    content = json.loads((out / "report.json").read_text())
    assert content["report"] == expected.report()  # JSON keeps floats exactly
    assert content["confusion_matrix"] == expected.confusion_matrix.tolist()
    assert content["examples"] == 11
    assert content["tta_views"] == 1
    top = content["top_losses"][0]
    assert top["path"].startswith(str(saved.folder))
    assert top["loss"] == pytest.approx(expected.top_losses(1)[0].loss)
    assert _png_size(out / "confusion_matrix.png")[0] > 200
    assert _png_size(out / "top_losses.png")[0] > 200


@pytest.mark.slow
def test_evaluate_tta_averages_the_mirror_image(saved, capsys) -> None:
    status = main(["evaluate", str(saved.model), str(saved.folder), "--tta", "2"])
    assert status == 0
    expected = interpret(saved.clf, saved.folder, tta=True)
    assert capsys.readouterr().out.strip() == (
        f"accuracy {expected.accuracy:.4f}  loss {expected.loss:.4f}"
    )


def test_predict_grad_cam_writes_the_overlay(saved, tmp_path, capsys) -> None:
    image = next((saved.folder / "red").iterdir())
    target = tmp_path / "cam.png"
    status = main(["predict", str(saved.model), str(image), "--grad-cam", str(target)])
    assert status == 0
    assert f"Grad-CAM: {target}" in capsys.readouterr().out
    assert _png_size(target)[0] > 100


@pytest.mark.slow
def test_predict_json_with_grad_cam_keeps_stdout_json(saved, tmp_path, capsys) -> None:
    image = next((saved.folder / "blue").iterdir())
    args = ["predict", str(saved.model), str(image), "--json", "--tta", "2"]
    status = main([*args, "--grad-cam", str(tmp_path / "cam.png")])
    assert status == 0
    captured = capsys.readouterr()
    result = json.loads(captured.out)
    pixels = np.asarray(Image.open(image).convert("RGB"), np.float32)[np.newaxis]
    mirrored = (saved.clf.predict(pixels) + saved.clf.predict(pixels[:, :, ::-1])) / 2
    assert result[0]["predictions"][0]["probability"] == pytest.approx(mirrored.max(), abs=1e-6)
    assert "Grad-CAM:" in captured.err


@pytest.mark.parametrize("value", ["0", "13", "two"])
def test_tta_outside_one_to_twelve_is_a_usage_error(saved, value, capsys) -> None:
    with pytest.raises(SystemExit) as raised:
        main(["evaluate", str(saved.model), str(saved.folder), "--tta", value])
    assert raised.value.code == 2
    assert "number of views from 1 to 12" in capsys.readouterr().err


def test_grad_cam_into_a_missing_folder_fails_before_predicting(saved, tmp_path, capsys) -> None:
    image = next((saved.folder / "red").iterdir())
    target = tmp_path / "missing" / "cam.png"
    status = main(["predict", str(saved.model), str(image), "--grad-cam", str(target)])
    assert status == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "--grad-cam=" in captured.err
