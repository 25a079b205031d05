"""TransferClassifier: the API of the two-stage recipe, end to end on a tiny real backbone."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

import transferkit as tk
from conftest import TINY_BACKBONE, separable_images
from transferkit.errors import (
    DataError,
    ImageShapeError,
    InvalidArgumentError,
    InvalidImageSizeError,
    NotUnfrozenError,
    TransferkitWarning,
    UnknownBackboneError,
    UnknownLayerError,
)

SIZE = 32


def tiny(num_classes: int = 2, **kwargs: object) -> tk.TransferClassifier:
    options: dict = {"image_size": SIZE, "weights": None, "augmentation": None, **kwargs}
    if "class_names" not in options:
        options["num_classes"] = num_classes
    return tk.TransferClassifier(TINY_BACKBONE, **options)


@pytest.fixture(scope="module")
def trained() -> tuple[tk.TransferClassifier, tuple[np.ndarray, np.ndarray]]:
    """A binary classifier taken through both stages on separable images."""
    train = separable_images(64, size=SIZE, seed=1)
    clf = tiny(class_names=["cat", "dog"])
    clf.fit_head(train, validation_data=train, epochs=8, learning_rate=0.1, verbose=0)
    clf.unfreeze(from_layer=-6)
    clf.fine_tune(train, validation_data=train, epochs=2, verbose=0)
    return clf, train


# ------------------------------------------------------------------ construction


def test_graph_follows_the_recipe() -> None:
    clf = tk.TransferClassifier(TINY_BACKBONE, num_classes=2, image_size=SIZE, weights=None)
    names = [layer.name for layer in clf.model.layers]
    assert names == [
        "image",
        "augmentation",
        "preprocessing",
        "backbone",
        "pooling",
        "dropout",
        "logits",
    ]
    assert clf.model.get_layer("dropout").rate == 0.2
    assert clf.model.get_layer("logits").units == 1
    # The backbone runs inside a layer that calls it with training=False.
    assert clf.backbone is clf.model.get_layer("backbone").layer
    assert clf.backbone.name == "tiny_bn"
    assert clf.spec is tk.get_backbone(TINY_BACKBONE)


def test_multiclass_head_has_one_logit_per_class() -> None:
    assert tiny(num_classes=5).model.get_layer("logits").units == 5


def test_class_names_imply_num_classes() -> None:
    clf = tiny(class_names=["a", "b", "c"])
    assert clf.num_classes == 3
    assert clf.class_names == ["a", "b", "c"]


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({}, "Pass num_classes or class_names"),
        ({"num_classes": 1}, "at least 2"),
        ({"num_classes": 3, "class_names": ["a", "b"]}, "disagree"),
        ({"class_names": ["a", "a"]}, "unique"),
        ({"num_classes": 2, "dropout": 1.0}, "dropout"),
        ({"num_classes": 2, "augmentation": "strong"}, "augmentation"),
        ({"num_classes": 2, "augmentation": ["flip"]}, "non-layer"),
    ],
)
def test_bad_constructor_arguments_raise_clear_errors(kwargs: dict, fragment: str) -> None:
    with pytest.raises(InvalidArgumentError, match=fragment):
        tk.TransferClassifier(TINY_BACKBONE, image_size=SIZE, weights=None, **kwargs)


def test_unknown_backbone_suggests_the_right_name() -> None:
    with pytest.raises(UnknownBackboneError, match="Did you mean 'mobilenet_v2'"):
        tk.TransferClassifier("mobilenetv2", num_classes=2)


def test_a_size_below_the_backbones_minimum_fails_before_building() -> None:
    with pytest.raises(InvalidImageSizeError, match="at least 32x32"):
        tk.TransferClassifier("mobilenet_v2", num_classes=2, image_size=16)


def test_custom_augmentation_layers_are_used() -> None:
    clf = tiny(augmentation=[keras.layers.RandomContrast(0.1)])
    assert [type(layer).__name__ for layer in clf.model.get_layer("augmentation").layers] == [
        "RandomContrast"
    ]


# ------------------------------------------------------------------ training


@pytest.mark.slow
def test_two_stage_training_beats_chance_and_records_one_history(trained) -> None:
    clf, train = trained
    metrics = clf.evaluate(train)
    assert set(metrics) == {"loss", "accuracy"}
    assert metrics["accuracy"] >= 0.9
    assert clf.history.epochs == list(range(10))
    assert clf.history.stages == ["head"] * 8 + ["fine_tune"] * 2
    assert clf.history.fine_tune_start == 8
    assert len(clf.history.metrics["val_accuracy"]) == 10


@pytest.mark.slow
def test_multiclass_training_beats_chance() -> None:
    train = separable_images(90, size=SIZE, num_classes=3, seed=2)
    clf = tiny(num_classes=3)
    clf.fit_head(train, epochs=10, learning_rate=0.1, verbose=0)
    assert clf.evaluate(train)["accuracy"] >= 0.8


@pytest.mark.slow
def test_datasets_train_like_arrays() -> None:
    x, y = separable_images(32, size=SIZE)
    dataset = tf.data.Dataset.from_tensor_slices((x, y)).batch(8)
    clf = tiny()
    clf.fit_head(dataset, validation_data=dataset.unbatch(), epochs=1, verbose=0)
    assert set(clf.history.metrics) == {"loss", "accuracy", "val_loss", "val_accuracy"}


@pytest.mark.slow
def test_stages_default_to_the_recipes_optimizers() -> None:
    data = separable_images(16, size=SIZE)
    clf = tiny()
    clf.fit_head(data, epochs=1, verbose=0)
    assert isinstance(clf.model.optimizer, keras.optimizers.Adam)
    assert float(clf.model.optimizer.learning_rate) == pytest.approx(1e-4)
    clf.unfreeze(None)
    clf.fine_tune(data, epochs=1, verbose=0)
    assert isinstance(clf.model.optimizer, keras.optimizers.RMSprop)
    assert float(clf.model.optimizer.learning_rate) == pytest.approx(1e-5)


@pytest.mark.slow
def test_fine_tune_rate_defaults_to_a_tenth_of_the_head_rate() -> None:
    data = separable_images(16, size=SIZE)
    clf = tiny()
    clf.fit_head(data, epochs=1, learning_rate=3e-3, verbose=0)
    clf.unfreeze(-3).fine_tune(data, epochs=1, verbose=0)
    assert float(clf.model.optimizer.learning_rate) == pytest.approx(3e-4)


def test_a_given_optimizer_and_callbacks_are_used() -> None:
    class EpochRecorder(keras.callbacks.Callback):
        def __init__(self) -> None:
            super().__init__()
            self.epochs: list[int] = []

        def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
            self.epochs.append(epoch)

    recorder = EpochRecorder()
    optimizer = keras.optimizers.SGD(0.01)
    clf = tiny()
    clf.fit_head(
        separable_images(16, size=SIZE),
        epochs=2,
        optimizer=optimizer,
        callbacks=[recorder],
        verbose=0,
    )
    assert clf.model.optimizer is optimizer
    assert recorder.epochs == [0, 1]


def test_optimizer_and_learning_rate_together_are_refused() -> None:
    with pytest.raises(InvalidArgumentError, match="either optimizer or learning_rate"):
        tiny().fit_head(
            separable_images(8, size=SIZE), optimizer=keras.optimizers.SGD(), learning_rate=0.1
        )


def test_fine_tune_with_everything_frozen_raises() -> None:
    clf = tiny()
    with pytest.raises(NotUnfrozenError, match=r"clf.unfreeze\(from_layer=...\)"):
        clf.fine_tune(separable_images(8, size=SIZE))


def test_fine_tune_before_fit_head_warns() -> None:
    clf = tiny().unfreeze(None)
    with pytest.warns(TransferkitWarning, match="Train the head first"):
        clf.fine_tune(separable_images(8, size=SIZE), epochs=1, verbose=0)


@pytest.mark.parametrize(
    ("data", "error", "fragment"),
    [
        ((np.zeros((4, 24, 24, 3)), np.zeros(4)), ImageShapeError, "24x24 but .* 32x32"),
        ((np.zeros((4, SIZE, SIZE, 1)), np.zeros(4)), ImageShapeError, "3 \\(RGB\\) channels"),
        ((np.zeros((4, SIZE, SIZE, 3)), np.array([0, 1, 2, 0])), DataError, r"\[0, 1\]"),
        ((np.zeros((4, SIZE, SIZE, 3)), np.eye(4)), DataError, "1D array"),
        ((np.zeros((4, SIZE, SIZE, 3)), np.zeros(3)), DataError, "4 integer class indices"),
        (42, DataError, "tf.data.Dataset"),
    ],
)
def test_bad_training_data_fails_before_training(data, error, fragment) -> None:
    clf = tiny()
    with pytest.raises(error, match=fragment):
        clf.fit_head(data, epochs=1, verbose=0)
    assert clf.history.epochs == []


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"epochs": 0}, "epochs"),
        ({"learning_rate": -1.0}, "learning_rate"),
        ({"batch_size": 0}, "batch_size"),
    ],
)
def test_bad_training_arguments_are_refused(kwargs: dict, fragment: str) -> None:
    with pytest.raises(InvalidArgumentError, match=fragment):
        tiny().fit_head(separable_images(8, size=SIZE), **kwargs)


def test_images_scaled_to_unit_range_warn() -> None:
    x, y = separable_images(8, size=SIZE)
    with pytest.warns(TransferkitWarning, match="raw pixels"):
        tiny().fit_head((x / 255.0, y), epochs=1, verbose=0)


# ------------------------------------------------------------------ unfreeze


def test_unfreeze_accepts_index_negative_index_name_and_none() -> None:
    clf = tiny()
    count = len(clf.backbone.layers)
    assert clf.unfreeze(3).unfrozen_from == 3
    assert clf.unfreeze(-2).unfrozen_from == count - 2
    assert clf.unfreeze("conv2").unfrozen_from == 4
    assert clf.unfreeze(None).unfrozen_from == 0


def test_unfreeze_out_of_range_names_the_valid_range() -> None:
    clf = tiny()
    count = len(clf.backbone.layers)
    with pytest.raises(UnknownLayerError, match=f"{-count} to {count - 1}"):
        clf.unfreeze(count)


def test_unfreeze_unknown_name_suggests_near_names() -> None:
    with pytest.raises(UnknownLayerError, match="Did you mean 'conv2'"):
        tiny().unfreeze("conv_2")


# ------------------------------------------------------------------ inference


@pytest.mark.slow
def test_predict_returns_probabilities_for_arrays_tensors_datasets_and_single_images(
    trained,
) -> None:
    clf, (x, y) = trained
    probabilities = clf.predict(x)
    assert probabilities.shape == (len(x), 2)
    assert probabilities.dtype == np.float32
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-6)
    np.testing.assert_array_equal(clf.predict(tf.constant(x)), probabilities)
    from_dataset = clf.predict(tf.data.Dataset.from_tensor_slices((x, y)).batch(32))
    np.testing.assert_allclose(from_dataset, probabilities, rtol=1e-6)
    # float32 probabilities near 1 carry ~6e-8 of absolute rounding between batch sizes.
    np.testing.assert_allclose(clf.predict(x[0]), probabilities[:1], rtol=1e-6, atol=1e-6)


def test_predict_of_the_wrong_size_names_both_shapes(trained) -> None:
    clf, _ = trained
    with pytest.raises(ImageShapeError, match=r"Images are 40x40 but .* 32x32"):
        clf.predict(np.zeros((2, 40, 40, 3), "uint8"))


def test_predict_labels_gives_names_or_indices(trained) -> None:
    clf, (x, y) = trained
    labels = clf.predict_labels(x)
    assert set(labels) <= {"cat", "dog"}
    assert np.mean(np.array(labels) == np.array(["cat", "dog"])[y]) >= 0.9
    indices = tiny().predict_labels(x[:3])
    assert all(isinstance(i, int) for i in indices)


def test_multiclass_predict_rows_sum_to_one() -> None:
    probabilities = tiny(num_classes=4).predict(separable_images(5, size=SIZE)[0])
    assert probabilities.shape == (5, 4)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-6)


# ------------------------------------------------------------------ save and load


def test_save_and_load_round_trip_everything(trained, tmp_path: Path) -> None:
    clf, (x, _) = trained
    path = clf.save(tmp_path / "model.keras")
    loaded = tk.load_classifier(path)
    np.testing.assert_array_equal(loaded.predict(x), clf.predict(x))
    assert loaded.class_names == ["cat", "dog"]
    assert loaded.spec.name == TINY_BACKBONE
    assert loaded.unfrozen_from == clf.unfrozen_from
    assert loaded.history == clf.history
    assert [layer.trainable for layer in loaded.backbone.layers] == [
        layer.trainable for layer in clf.backbone.layers
    ]


def test_saved_file_loads_in_plain_keras_with_safe_mode_and_has_no_lambda(trained, tmp_path):
    clf, (x, _) = trained
    path = clf.save(tmp_path / "model.keras")
    model = keras.saving.load_model(path, safe_mode=True)
    assert not [
        layer for layer in model._flatten_layers() if isinstance(layer, keras.layers.Lambda)
    ]
    np.testing.assert_array_equal(model.predict(x, verbose=0), clf.model.predict(x, verbose=0))


@pytest.mark.slow
def test_a_file_loads_where_its_backbone_is_not_registered(trained, tmp_path: Path) -> None:
    # A fresh process has no tiny_bn (tests/conftest.py registers it): the file carries it all.
    clf, (x, _) = trained
    path = clf.save(tmp_path / "model.keras")
    np.save(tmp_path / "x.npy", x[:4])
    code = (
        "import sys, numpy as np, transferkit as tk\n"
        "assert 'tiny_bn' not in tk.list_backbones()\n"
        "clf = tk.load_classifier(sys.argv[1])\n"
        "print(clf.spec.name, clf.spec.family, clf.unfrozen_from)\n"
        "np.save(sys.argv[3], clf.predict(np.load(sys.argv[2])))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code, str(path), str(tmp_path / "x.npy"), str(tmp_path / "p.npy")],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "TRANSFERKIT_DISABLE_PLUGINS": "1"},
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.split() == [TINY_BACKBONE, "test", str(clf.unfrozen_from)]
    np.testing.assert_array_equal(np.load(tmp_path / "p.npy"), clf.predict(x[:4]))


def test_numpy_integers_are_accepted_wherever_an_int_is() -> None:
    clf = tiny(num_classes=np.int64(3))
    assert (clf.num_classes, clf.image_size) == (3, (SIZE, SIZE))
    assert clf.unfreeze(np.int64(-2)).unfrozen_from == len(clf.backbone.layers) - 2
    x, y = separable_images(8, size=SIZE, num_classes=3)
    history = clf.fit_head(
        (x, y), epochs=np.int64(1), batch_size=np.int32(4), augmented_views=np.int8(1), verbose=0
    )
    assert history.epochs == [0]
    assert clf.predict(x, batch_size=np.uint16(3)).shape == (8, 3)


@pytest.mark.slow
def test_a_loaded_classifier_keeps_training(trained, tmp_path: Path) -> None:
    clf, train = trained
    loaded = tk.load_classifier(clf.save(tmp_path / "model.keras"))
    loaded.fine_tune(train, epochs=1, verbose=0)
    assert loaded.history.epochs == list(range(11))


def test_a_failed_save_leaves_the_previous_file_intact(tmp_path: Path) -> None:
    clf = tiny()
    path = clf.save(tmp_path / "model.keras")
    good = path.read_bytes()
    clf.history.metrics["broken"] = [object()]  # type: ignore[list-item]  # not JSON
    with pytest.raises(TypeError):
        clf.save(path)
    assert path.read_bytes() == good
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.keras"]


def test_save_refuses_other_suffixes(tmp_path: Path) -> None:
    with pytest.raises(InvalidArgumentError, match=r"\.keras"):
        tiny().save(tmp_path / "model.h5")


def test_loading_a_plain_keras_file_explains_what_is_missing(tmp_path: Path) -> None:
    path = tmp_path / "plain.keras"
    tiny().model.save(path)
    with pytest.raises(DataError, match="not a classifier saved by transferkit"):
        tk.load_classifier(path)
    with pytest.raises(DataError, match="No saved classifier"):
        tk.load_classifier(tmp_path / "missing.keras")


def test_saved_metadata_is_readable_json(trained, tmp_path: Path) -> None:
    clf, _ = trained
    with zipfile.ZipFile(clf.save(tmp_path / "model.keras")) as archive:
        metadata = json.loads(archive.read("transferkit.json"))
    assert metadata["config"]["backbone"] == TINY_BACKBONE
    assert metadata["config"]["class_names"] == ["cat", "dog"]
    assert metadata["backbone_spec"]["name"] == TINY_BACKBONE
    assert metadata["unfrozen_from"] == clf.unfrozen_from
