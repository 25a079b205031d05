"""Head training on cached backbone features, jit_compile and mixed precision."""

from __future__ import annotations

import tempfile
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

import transferkit as tk
from conftest import TINY_BACKBONE, separable_images
from transferkit.errors import DataError, InvalidArgumentError
from transferkit.training import features as _features

METRICS = {"loss", "accuracy", "val_loss", "val_accuracy"}


def classifier(augmentation: str | None = None, **kwargs: object) -> tk.TransferClassifier:
    return tk.TransferClassifier(
        TINY_BACKBONE, num_classes=2, weights=None, augmentation=augmentation, **kwargs
    )


def pooled_features(clf: tk.TransferClassifier, images: np.ndarray) -> np.ndarray:
    pooling = keras.Model(clf.model.input, clf.model.get_layer("pooling").output)
    return np.asarray(pooling.predict(images, batch_size=32, verbose=0))


def in_order(images: np.ndarray, labels: np.ndarray) -> tf.data.Dataset:
    return tf.data.Dataset.from_tensor_slices((images, labels)).batch(32)


def backbone_values(clf: tk.TransferClassifier) -> list[np.ndarray]:
    return [keras.ops.convert_to_numpy(v) for v in clf.backbone.variables]


def head_values(clf: tk.TransferClassifier) -> list[np.ndarray]:
    return [keras.ops.convert_to_numpy(v) for v in clf.model.get_layer("logits").variables]


def fit_quickly(clf: tk.TransferClassifier, **kwargs: object) -> tk.TrainingHistory:
    x, y = separable_images(64)
    xv, yv = separable_images(32, seed=1)
    options: dict[str, object] = {"epochs": 2, "learning_rate": 0.05, "verbose": 0}
    options.update(kwargs)
    return clf.fit_head((x, y), validation_data=(xv, yv), batch_size=16, **options)


# ---------------------------------------------------------------------- exactness


@pytest.mark.slow
def test_cached_features_equal_the_models_own_pooled_features() -> None:
    clf = classifier()
    x, y = separable_images(48)
    with _features.cache_features(
        clf.model, clf.backbone, in_order(x, y), None, views=1, augment=False
    ) as cached:
        np.testing.assert_allclose(cached.train.views[0], pooled_features(clf, x), atol=1e-6)
        np.testing.assert_array_equal(cached.train.targets[0], y)


@pytest.mark.slow
def test_full_model_after_cached_fit_head_equals_head_applied_to_features() -> None:
    clf = classifier()
    fit_quickly(clf)
    x, _ = separable_images(40, seed=2)
    head_logits = clf.model.get_layer("logits")(pooled_features(clf, x))
    full_logits = clf.model.predict(x, verbose=0)
    np.testing.assert_allclose(full_logits, np.asarray(head_logits), rtol=1e-5, atol=1e-6)


@pytest.mark.slow
def test_cached_validation_metrics_equal_evaluating_the_full_model() -> None:
    clf = classifier()
    history = fit_quickly(clf)
    evaluated = clf.evaluate(separable_images(32, seed=1))
    assert history.metrics["val_loss"][-1] == pytest.approx(evaluated["loss"], rel=1e-5)
    assert history.metrics["val_accuracy"][-1] == evaluated["accuracy"]


def test_cached_fit_head_trains_the_full_models_own_head_layers() -> None:
    clf = classifier()
    before = head_values(clf)
    fit_quickly(clf)
    after = head_values(clf)
    assert all(not np.array_equal(old, new) for old, new in zip(before, after, strict=True))


def test_cached_fit_head_leaves_every_backbone_variable_bit_identical() -> None:
    clf = classifier(augmentation="default")
    before = backbone_values(clf)
    fit_quickly(clf)
    for old, new in zip(before, backbone_values(clf), strict=True):
        np.testing.assert_array_equal(old, new)


def test_cached_fit_head_learns_separable_data() -> None:
    clf = classifier()
    history = fit_quickly(clf, epochs=4, learning_rate=0.1)
    assert history.metrics["val_accuracy"][-1] >= 0.9


# ---------------------------------------------------------------------- training loop


@pytest.mark.slow
def test_cached_history_has_the_plain_metric_names_and_numbers_epochs_on() -> None:
    clf = classifier()
    fit_quickly(clf, epochs=2)
    history = fit_quickly(clf, epochs=2)
    assert set(history.metrics) == METRICS
    assert history.epochs == [0, 1, 2, 3]
    assert history.stages == ["head"] * 4


def test_callbacks_see_the_full_model_and_can_stop_cached_training() -> None:
    clf = classifier()
    seen: list[keras.Model] = []

    class StopAfterFirstEpoch(keras.callbacks.Callback):
        def on_epoch_end(self, epoch: int, logs: dict[str, float] | None = None) -> None:
            seen.append(self.model)
            self.model.stop_training = True

    history = fit_quickly(clf, epochs=5, callbacks=[StopAfterFirstEpoch()])
    assert seen == [clf.model]
    assert history.epochs == [0]


class CacheRequested(Exception):
    """Raised instead of computing features, once fit_head has said what it would cache."""


def record_cache_requests(monkeypatch: pytest.MonkeyPatch) -> list[tuple[object, object]]:
    calls: list[tuple[object, object]] = []

    def record(*args: object, **kwargs: object) -> None:
        calls.append((kwargs["views"], kwargs["augment"]))
        raise CacheRequested

    monkeypatch.setattr(_features, "cache_features", record)
    return calls


def test_default_caches_one_augmented_view_per_image(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls = record_cache_requests(monkeypatch)
    with pytest.raises(CacheRequested):
        fit_quickly(classifier(augmentation="default"), epochs=3)
    assert calls == [(1, True)]


def test_augmented_views_are_capped_at_the_number_of_epochs(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls = record_cache_requests(monkeypatch)
    for epochs in (2, 5):
        with pytest.raises(CacheRequested):
            fit_quickly(classifier(augmentation="default"), epochs=epochs, augmented_views=3)
    assert calls == [(2, True), (3, True)]


def test_without_augmentation_one_exact_view_is_cached(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = record_cache_requests(monkeypatch)
    with pytest.raises(CacheRequested):
        fit_quickly(classifier(augmentation=None), epochs=3, augmented_views=3)
    assert calls == [(1, False)]


def test_augmented_views_differ_from_each_other_and_from_the_plain_features() -> None:
    clf = classifier(augmentation="default")
    x, y = separable_images(32)
    with _features.cache_features(
        clf.model, clf.backbone, in_order(x, y), None, views=2, augment=True
    ) as cached:
        first, second = cached.train.views
        assert not np.allclose(first, second)
        assert not np.allclose(first, pooled_features(clf, x))


def test_each_epoch_reads_every_row_of_the_next_view_in_turn() -> None:
    rows = 10
    # Row i of view v holds v + i / 100, so a batch shows which view and rows it came from.
    row_marks = np.arange(rows, dtype=np.float32)[:, None] / 100
    views = [np.full((rows, 2), view, np.float32) + row_marks for view in range(3)]
    split = _features.CachedSplit(views, (np.arange(rows),), batch_size=4)
    batches = list(split.dataset(first_epoch=2, epochs=4))
    assert len(batches) == 4 * split.steps
    for epoch, start in zip(range(2, 6), range(0, len(batches), split.steps), strict=True):
        features = np.concatenate([f for f, _ in batches[start : start + split.steps]])
        labels = np.concatenate([y for _, y in batches[start : start + split.steps]])
        assert sorted(labels) == list(range(rows))
        np.testing.assert_allclose(features[:, 0], epoch % 3 + labels / 100, atol=1e-6)


@pytest.mark.slow
def test_cached_fit_head_with_augmented_views_learns_separable_data() -> None:
    clf = classifier(augmentation="default")
    history = fit_quickly(clf, epochs=4, learning_rate=0.1, augmented_views=3)
    assert history.metrics["val_accuracy"][-1] >= 0.9


def test_empty_training_data_raises_before_training() -> None:
    clf = classifier()
    x, y = separable_images(8)
    empty = in_order(x, y).take(0)
    with pytest.raises(DataError, match="no images"):
        clf.fit_head(empty, epochs=1, verbose=0)


# ---------------------------------------------------------------------- memory limit


def test_features_past_the_memory_limit_stream_through_disk_during_training(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    files_seen: list[int] = []

    class ListCacheFiles(keras.callbacks.Callback):
        def on_epoch_end(self, epoch: int, logs: dict[str, float] | None = None) -> None:
            files_seen.append(len(list(tmp_path.glob("transferkit-features-*/*.f32"))))

    fit_quickly(classifier(), feature_memory_limit=0, callbacks=[ListCacheFiles()])
    assert files_seen == [2, 2]  # training and validation features
    assert list(tmp_path.iterdir()) == []


def test_disk_cache_holds_the_same_features_as_the_memory_cache() -> None:
    clf = classifier()
    x, y = separable_images(40)
    with _features.cache_features(
        clf.model, clf.backbone, in_order(x, y), None, views=1, augment=False
    ) as in_memory:
        expected = np.array(in_memory.train.views[0])
        assert not in_memory.on_disk
    with _features.cache_features(
        clf.model, clf.backbone, in_order(x, y), None, views=1, augment=False, memory_limit=0
    ) as on_disk:
        assert on_disk.on_disk
        np.testing.assert_array_equal(on_disk.train.views[0], expected)


@pytest.mark.slow
def test_disk_cache_trains_the_head_like_the_memory_cache() -> None:
    results = []
    for limit in (_features.DEFAULT_MEMORY_LIMIT, 0):
        # A new classifier each time: its epochs (which pick the shuffles) start at 0 again.
        keras.utils.set_random_seed(7)
        clf = classifier(dropout=0.0)
        fit_quickly(clf, feature_memory_limit=limit)
        results.append(head_values(clf))
    for memory, disk in zip(*results, strict=True):
        np.testing.assert_allclose(memory, disk, rtol=1e-6, atol=1e-7)


# ---------------------------------------------------------------------- options


def test_jit_compile_is_passed_to_keras_compile() -> None:
    clf = classifier()
    fit_quickly(clf, epochs=1, jit_compile=True)
    assert clf.model.jit_compile is True


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("jit_compile", "yes"),
        ("cache_features", "auto"),
        ("augmented_views", 0),
        ("feature_memory_limit", -1),
    ],
)
def test_invalid_fit_head_options_raise_naming_the_value(option: str, value: object) -> None:
    with pytest.raises(InvalidArgumentError, match=f"Received: {option}="):
        fit_quickly(classifier(), **{option: value})


@pytest.mark.slow
@pytest.mark.parametrize(
    ("policy", "compute_dtype"), [("mixed_bfloat16", "bfloat16"), ("mixed_float16", "float16")]
)
def test_mixed_precision_keeps_float32_logits_and_trains_on_cpu(
    policy: str, compute_dtype: str
) -> None:
    clf = classifier(dtype_policy=policy)
    x, _ = separable_images(8)
    assert clf.backbone.get_layer("conv1").compute_dtype == compute_dtype
    assert clf.model.predict(x, verbose=0).dtype == np.float32
    history = fit_quickly(clf, epochs=1)
    assert np.isfinite(history.metrics["loss"]).all()


def test_dtype_policy_leaves_the_global_policy_unchanged() -> None:
    classifier(dtype_policy="mixed_float16")
    assert keras.config.dtype_policy().name == "float32"


def test_dtype_policy_none_builds_float32_under_a_global_mixed_policy() -> None:
    keras.config.set_dtype_policy("mixed_bfloat16")
    try:
        clf = classifier(dtype_policy=None)
    finally:
        keras.config.set_dtype_policy("float32")
    assert clf.dtype_policy is None
    assert {layer.compute_dtype for layer in clf.backbone.layers[1:]} == {"float32"}
    assert clf.model.get_layer("logits").compute_dtype == "float32"


def test_cached_head_epochs_are_reshuffled_and_seeded_runs_repeat() -> None:
    def orders(seed: int) -> list[list[int]]:
        split = _features.CachedSplit(
            views=[np.zeros((10, 1), np.float32)], targets=(np.arange(10),), batch_size=10
        )
        return [rows.numpy().tolist() for _, rows in split.dataset(epochs=3, seed=seed)]

    first = orders(seed=1)
    assert len({tuple(epoch) for epoch in first}) == 3  # a new order every epoch
    assert orders(seed=1) == first  # the same seed, the same orders
    assert orders(seed=2) != first


@pytest.mark.slow
def test_seeded_cached_head_training_repeats_bit_for_bit() -> None:
    def trained() -> list[np.ndarray]:
        keras.utils.set_random_seed(11)
        clf = classifier()
        fit_quickly(clf, epochs=3)
        return clf.model.get_layer("logits").get_weights()

    for got, want in zip(trained(), trained(), strict=True):
        np.testing.assert_array_equal(got, want)


def test_dtype_policy_survives_save_and_load(tmp_path: Path) -> None:
    clf = classifier(dtype_policy="mixed_bfloat16")
    loaded = tk.load_classifier(clf.save(tmp_path / "model.keras"))
    assert loaded.dtype_policy == "mixed_bfloat16"
    assert loaded.backbone.get_layer("conv1").compute_dtype == "bfloat16"


def test_unknown_dtype_policy_raises_naming_the_value() -> None:
    with pytest.raises(InvalidArgumentError, match="Received: dtype_policy='float16'"):
        classifier(dtype_policy="float16")
