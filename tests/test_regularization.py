"""Regularization: label smoothing, weight EMA, MixUp, CutMix and the greedy soup of epochs."""

from __future__ import annotations

import itertools
import json
import zipfile

import keras
import numpy as np
import pytest
import tensorflow as tf

import transferkit as tk
from conftest import TINY_BACKBONE, separable_images
from images import write_class_folders
from transferkit.cli.app import main
from transferkit.errors import InvalidArgumentError, TransferkitWarning
from transferkit.model import compile as _compile
from transferkit.model.config import ClassifierConfig
from transferkit.training import regularization as reg


def _config(num_classes: int, *, multi_label: bool = False) -> ClassifierConfig:
    spec = tk.get_backbone(TINY_BACKBONE)
    return ClassifierConfig.create(
        spec, num_classes=num_classes, class_names=None, image_size=None, dropout=0.0,
        dtype_policy=None, multi_label=multi_label,
    )  # fmt: skip


def _classifier(num_classes: int = 3) -> tk.TransferClassifier:
    return tk.TransferClassifier(
        TINY_BACKBONE, num_classes=num_classes, weights=None, augmentation=None
    )


def _log_softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


# ---------------------------------------------------------------------- the options


@pytest.mark.parametrize(
    "kwargs",
    [
        {"label_smoothing": 1.0},
        {"label_smoothing": -0.1},
        {"ema": 1.0},
        {"ema": 0},
        {"mixup": 1.5},
        {"cutmix": -1},
        {"soup": -1},
        {"soup": 2.5},
        {"mixup": 0.2, "cutmix": 1.0},
    ],
    ids=str,
)
def test_out_of_range_regularizers_are_refused_with_the_value(kwargs):
    with pytest.raises(InvalidArgumentError, match="Received: "):
        tk.Regularization(**kwargs)


def test_every_regularizer_is_off_by_default():
    assert not tk.Regularization().active
    assert tk.Regularization(soup=3).active


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"regularization": {"ema": 0.9}}, "must be a transferkit.Regularization"),
        (
            {"regularization": tk.Regularization(ema=0.9), "optimizer": keras.optimizers.SGD()},
            "create it with use_ema=True",
        ),
        ({"regularization": tk.Regularization(soup=3)}, "needs validation_data"),
    ],
    ids=["not-a-regularization", "ema-with-own-optimizer", "soup-without-validation"],
)
def test_bad_regularization_is_refused_before_training(kwargs, message):
    clf = _classifier()
    before = clf.model.get_weights()
    x, y = separable_images(8, num_classes=3)

    with pytest.raises(InvalidArgumentError, match=message):
        clf.fit_head((x, y), epochs=1, verbose=0, **kwargs)

    assert clf.history.epochs == []
    assert all(np.array_equal(a, b) for a, b in zip(before, clf.model.get_weights(), strict=True))


# ---------------------------------------------------------------------- label smoothing


def test_label_smoothing_of_sparse_targets_is_the_smoothed_cross_entropy():
    logits = np.array([[2.0, -1.0, 0.5], [0.1, 0.2, 3.0]], np.float32)
    labels = np.array([0, 2])
    smoothing = 0.2

    loss = _compile.loss(_config(3), label_smoothing=smoothing)
    value = float(loss(labels, logits))

    targets = np.eye(3)[labels] * (1 - smoothing) + smoothing / 3
    expected = -(targets * _log_softmax(logits)).sum(axis=-1).mean()
    assert value == pytest.approx(expected, rel=1e-5)
    assert value != pytest.approx(float(_compile.loss(_config(3))(labels, logits)))


def test_label_smoothing_of_sigmoid_heads_is_keras_binary_smoothing():
    logits = np.array([[2.0, -1.0], [0.1, 3.0]], np.float32)
    targets = np.array([[1.0, 0.0], [0.0, 1.0]], np.float32)

    loss = _compile.loss(_config(2, multi_label=True), label_smoothing=0.1)

    keras_loss = keras.losses.BinaryCrossentropy(from_logits=True, label_smoothing=0.1)
    assert float(loss(targets, logits)) == pytest.approx(float(keras_loss(targets, logits)))


@pytest.mark.slow
def test_label_smoothing_reaches_the_stage_loss():
    clf = _classifier()
    x, y = separable_images(12, num_classes=3)

    clf.fit_head((x, y), epochs=1, verbose=0, regularization=tk.Regularization(label_smoothing=0.1))

    assert clf.model.loss.label_smoothing == pytest.approx(0.1)
    # evaluate() reports the classifier's own (unsmoothed) loss.
    plain = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    expected = float(plain(y, clf.model.predict(x, verbose=0)))
    assert clf.evaluate((x, y))["loss"] == pytest.approx(expected, rel=1e-4)


# ---------------------------------------------------------------------- EMA


class _Recorder(keras.callbacks.Callback):
    """Records the model's weights at each epoch's end and after each training batch."""

    def __init__(self) -> None:
        super().__init__()
        self.epoch_end: list[list[np.ndarray]] = []
        self.last_batch: list[np.ndarray] = []
        self.val_loss: list[float] = []

    def on_train_batch_end(self, batch, logs=None):
        # JAX holds the training state outside the variables until the epoch ends.
        if keras.backend.backend() != "jax":
            self.last_batch = [v.numpy() for v in self.model.trainable_variables]

    def on_epoch_end(self, epoch, logs=None):
        self.epoch_end.append([v.numpy() for v in self.model.trainable_variables])
        self.val_loss.append(float((logs or {}).get("val_loss", np.nan)))


@pytest.mark.slow
@pytest.mark.parametrize("cache_features", [True, False], ids=["cached", "full"])
def test_ema_weights_are_validated_and_kept(cache_features):
    clf = _classifier()
    x, y = separable_images(32, num_classes=3)
    recorder = _Recorder()

    clf.fit_head(
        (x, y), validation_data=(x[:12], y[:12]), epochs=2, learning_rate=0.05, batch_size=8,
        verbose=0, callbacks=[recorder], cache_features=cache_features,
        regularization=tk.Regularization(ema=0.5),
    )  # fmt: skip

    optimizer = clf.model.optimizer
    averages = [v.numpy() for v in optimizer._model_variables_moving_average]
    kept = [v.numpy() for v in clf.model.trainable_variables]
    # Callbacks see the EMA weights at an epoch's end, and the model keeps them...
    np.testing.assert_allclose(recorder.epoch_end[-1][0], averages[0], rtol=1e-6)
    np.testing.assert_allclose(kept[0], averages[0], rtol=1e-6)
    # ...not the raw weights that training stepped.
    assert not recorder.last_batch or not np.allclose(recorder.last_batch[0], averages[0])
    # The validation loss of the last epoch is that of the weights kept.
    assert clf.history.metrics["val_loss"][-1] == pytest.approx(
        clf.evaluate((x[:12], y[:12]))["loss"], rel=1e-4
    )


# ---------------------------------------------------------------------- MixUp and CutMix


def _batch(count: int, size: int = 8) -> tuple[np.ndarray, np.ndarray]:
    # Image i is flat at 10 * (i + 1), of class i: a mixed pixel tells its sources.
    images = np.stack([np.full((size, size, 3), 10.0 * (i + 1), np.float32) for i in range(count)])
    return images, np.arange(count, dtype=np.int32)


def _mixed(data: tf.data.Dataset) -> tuple[np.ndarray, np.ndarray]:
    images, labels = next(iter(data))
    return np.asarray(images), np.asarray(labels)


def test_mixup_images_are_the_convex_combinations_their_labels_say():
    images, labels = _batch(6)
    data = tf.data.Dataset.from_tensors((images, labels))

    mixed, targets = _mixed(reg.mix_batches(data, tk.Regularization(mixup=1.0), _config(6)))

    assert targets.shape == (6, 6)
    np.testing.assert_allclose(targets.sum(axis=1), 1.0, rtol=1e-6)
    expected = targets @ images.reshape(6, -1)  # distinct classes: a label row is the mix
    np.testing.assert_allclose(mixed.reshape(6, -1), expected, rtol=1e-5)
    assert not np.allclose(targets, np.eye(6))  # really mixed


def test_mixup_of_cached_features_mixes_the_vectors_as_the_labels():
    features = np.random.default_rng(0).normal(size=(5, 7)).astype(np.float32)
    labels = np.eye(5, dtype=np.float32)  # multi-hot rows, one class each
    data = tf.data.Dataset.from_tensors((features, labels))
    config = _config(5, multi_label=True)

    mixed, targets = _mixed(
        reg.mix_batches(data, tk.Regularization(mixup=1.0), config, features=True)
    )

    np.testing.assert_allclose(mixed, targets @ features, rtol=1e-5, atol=1e-6)


def test_cutmix_pastes_a_patch_and_mixes_labels_by_its_area():
    images, labels = _batch(6, size=32)
    data = tf.data.Dataset.from_tensors((images, labels))

    mixed, targets = _mixed(reg.mix_batches(data, tk.Regularization(cutmix=1.0), _config(6)))

    for index in range(6):
        values = mixed[index, :, :, 0]
        sources = np.unique(values)
        assert set(sources) <= set(images[:, 0, 0, 0])  # pixels are cut, not blended
        own = np.mean(values == images[index, 0, 0, 0])
        if own < 1.0:  # pasted from another image: its label weight is the patch's area
            assert targets[index, index] == pytest.approx(own, abs=0.08)


def test_binary_labels_mix_as_one_column():
    images, _ = _batch(4)
    data = tf.data.Dataset.from_tensors((images, np.array([0, 1, 0, 1])))

    _, targets = _mixed(reg.mix_batches(data, tk.Regularization(mixup=1.0), _config(2)))

    assert targets.shape == (4, 1)
    assert np.all((targets >= 0) & (targets <= 1))


@pytest.mark.slow
@pytest.mark.parametrize("cache_features", [True, False], ids=["cached", "full"])
def test_mixup_trains_and_the_saved_model_loads_without_it(cache_features, tmp_path):
    clf = _classifier()
    x, y = separable_images(24, num_classes=3)

    clf.fit_head(
        (x, y), validation_data=(x[:6], y[:6]), epochs=2, verbose=0,
        cache_features=cache_features, regularization=tk.Regularization(mixup=0.4),
    )  # fmt: skip
    clf.save(tmp_path / "mixup.keras")
    loaded = tk.load_classifier(tmp_path / "mixup.keras")

    assert not any("mix" in layer.name for layer in loaded.model.layers)
    np.testing.assert_allclose(loaded.predict(x[:4]), clf.predict(x[:4]), rtol=1e-5)
    assert set(clf.history.metrics) >= {"loss", "accuracy", "val_loss", "val_accuracy"}


@pytest.mark.slow
def test_cutmix_on_cached_features_trains_the_full_model_with_a_warning():
    clf = _classifier()
    x, y = separable_images(12, num_classes=3)

    with pytest.warns(TransferkitWarning, match="CutMix mixes patches"):
        clf.fit_head((x, y), epochs=1, verbose=0, regularization=tk.Regularization(cutmix=1.0))

    assert clf.history.epochs == [0]


# ---------------------------------------------------------------------- the greedy soup


def test_greedy_soup_adds_an_epoch_only_if_the_validation_loss_holds():
    variable = keras.Variable(np.zeros(2, np.float32))
    ranked = [
        reg._Ingredient(1.0, 4, [np.array([0.0, 0.0], np.float32)]),
        reg._Ingredient(2.0, 2, [np.array([2.0, 2.0], np.float32)]),
        reg._Ingredient(3.0, 7, [np.array([10.0, 10.0], np.float32)]),
    ]

    def evaluate() -> float:  # lowest at 1: the average of the first two
        return float(np.abs(variable.numpy() - 1.0).mean())

    result = reg.greedy_soup([variable], ranked, evaluate)

    assert result.epochs == [4, 2]
    assert result.loss == 0.0
    np.testing.assert_array_equal(variable.numpy(), [1.0, 1.0])


@pytest.mark.slow
def test_soup_keeps_an_average_of_the_best_epochs_weights():
    clf = _classifier()
    x, y = separable_images(32, num_classes=3)
    recorder = _Recorder()

    clf.fit_head(
        (x, y), validation_data=(x[:12], y[:12]), epochs=4, learning_rate=0.05, batch_size=8,
        verbose=0, callbacks=[recorder], regularization=tk.Regularization(soup=3),
    )  # fmt: skip

    best = list(np.argsort(recorder.val_loss)[:3])
    kept = [v.numpy() for v in clf.model.trainable_variables]
    averages = [
        [np.mean([recorder.epoch_end[e][i] for e in (best[0], *others)], axis=0) for i in range(2)]
        for size in range(3)
        for others in itertools.combinations(best[1:], size)
    ]
    # The soup holds the best epoch and any of the next two, averaged.
    assert any(all(np.allclose(k, a, atol=1e-6) for k, a in zip(kept, avg, strict=True))
               for avg in averages)  # fmt: skip
    assert clf.evaluate((x[:12], y[:12]))["loss"] <= min(recorder.val_loss) + 1e-5


class _LossSeen(keras.callbacks.Callback):
    def __init__(self) -> None:
        super().__init__()
        self.smoothing: list[float] = []

    def on_train_begin(self, logs=None):
        self.smoothing.append(getattr(self.model.loss, "label_smoothing", 0.0))


@pytest.mark.slow
def test_fit_passes_the_regularization_to_both_stages():
    clf = _classifier()
    x, y = separable_images(30, num_classes=3)
    seen = _LossSeen()

    clf.fit(
        (x, y), epochs=1, learning_rate=1e-2, batch_size=4, verbose=0, callbacks=[seen],
        regularization=tk.Regularization(label_smoothing=0.2),
    )  # fmt: skip

    assert set(clf.history.stages) == {"head", "fine_tune"}
    assert seen.smoothing == [pytest.approx(0.2), pytest.approx(0.2)]


# ---------------------------------------------------------------------- the command line


@pytest.mark.slow
def test_cli_flags_reach_the_stages(tmp_path, capsys):
    folder = write_class_folders(tmp_path / "data", {"blue": 6, "green": 6, "red": 6})
    model = tmp_path / "reg.keras"

    status = main(
        ["train", str(folder), "--backbone", TINY_BACKBONE, "--weights", "none", "--recipe",
         "--epochs", "2", "--fine-tune-epochs", "0", "--batch-size", "4",
         "--validation-split", "0.3", "--label-smoothing", "0.1", "--ema", "0.9",
         "--mixup", "0.2", "--soup", "2", "--pooling", "avgmax", "--output", str(model)]
    )  # fmt: skip

    assert status == 0
    assert "regularizers" in capsys.readouterr().out
    with zipfile.ZipFile(model) as archive:
        compiled = json.loads(archive.read("config.json"))["compile_config"]
    loss = compiled["loss"]["config"]
    assert (loss["label_smoothing"], compiled["optimizer"]["config"]["use_ema"]) == (0.1, True)
    assert tk.load_classifier(model).config.pooling == "avgmax"


def test_cli_refuses_mixup_and_cutmix_together(tmp_path, capsys):
    write_class_folders(tmp_path, {"a": 2, "b": 2})

    status = main(["train", str(tmp_path), "--backbone", TINY_BACKBONE, "--weights", "none",
                   "--mixup", "0.2", "--cutmix", "1"])  # fmt: skip

    assert status == 1
    assert "Pass mixup or cutmix, not both" in capsys.readouterr().err


def test_cli_refuses_label_smoothing_of_one():
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "x", "--label-smoothing", "1"])
    assert exit_info.value.code == 2
