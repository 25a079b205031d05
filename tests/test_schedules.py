"""Learning-rate schedules: values step by step against their formulas, serialization, resume."""

from __future__ import annotations

import math
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

from transferkit.errors import DataError, InvalidArgumentError
from transferkit.schedules import OneCycle, make_schedule, steps_per_epoch

PEAK = 1e-2
STEPS = 40


def _anneal(start: float, end: float, progress: float) -> float:
    return end + (start - end) * (1 + math.cos(math.pi * progress)) / 2


def _values(schedule: object, steps: int) -> np.ndarray:
    return np.array([float(schedule(step)) for step in range(steps + 3)])  # type: ignore[operator]


def test_constant_schedule_is_the_rate_itself() -> None:
    assert make_schedule("constant", PEAK, STEPS) == PEAK


def test_one_cycle_follows_its_formula_at_every_step() -> None:
    warmup = 10  # 25% of 40
    start, end = PEAK / 25, PEAK / 25 / 1e5
    expected = [
        _anneal(start, PEAK, s / warmup)
        if s < warmup
        else _anneal(PEAK, end, (min(s, STEPS) - warmup) / (STEPS - warmup))
        for s in range(STEPS + 3)
    ]
    schedule = make_schedule("one_cycle", PEAK, STEPS)
    np.testing.assert_allclose(_values(schedule, STEPS), expected, rtol=1e-5)


def test_one_cycle_peaks_at_the_rate_after_a_quarter_of_the_steps() -> None:
    values = _values(OneCycle(PEAK, STEPS), STEPS)
    assert int(np.argmax(values)) == 10
    assert values.max() == pytest.approx(PEAK, rel=1e-6)


def test_cosine_warms_up_linearly_then_decays_to_zero() -> None:
    warmup = 2  # 5% of 40
    start = PEAK / 25
    expected = [
        start + (PEAK - start) * s / warmup
        if s < warmup
        else PEAK * (1 + math.cos(math.pi * (min(s, STEPS) - warmup) / (STEPS - warmup))) / 2
        for s in range(STEPS + 3)
    ]
    schedule = make_schedule("cosine", PEAK, STEPS)
    assert isinstance(schedule, keras.optimizers.schedules.CosineDecay)  # Keras' own class
    np.testing.assert_allclose(_values(schedule, STEPS), expected, rtol=1e-5, atol=1e-12)


@pytest.mark.parametrize("kind", ["one_cycle", "cosine"])
def test_schedules_of_a_single_step_give_a_finite_positive_rate(kind: str) -> None:
    value = float(make_schedule(kind, PEAK, 1)(0))  # type: ignore[operator]
    assert 0 < value <= PEAK


def test_one_cycle_round_trips_through_keras_serialization() -> None:
    schedule = OneCycle(PEAK, STEPS, warmup_fraction=0.3)
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(schedule))
    assert isinstance(restored, OneCycle)
    np.testing.assert_array_equal(_values(restored, STEPS), _values(schedule, STEPS))


def test_optimizer_with_one_cycle_saves_and_loads_in_a_model(tmp_path: Path) -> None:
    inputs = keras.Input((3,))
    model = keras.Model(inputs, keras.layers.Dense(1)(inputs))
    model.compile(keras.optimizers.Adam(OneCycle(PEAK, STEPS)), "mse")
    model.fit(np.ones((8, 3)), np.ones((8, 1)), batch_size=4, epochs=1, verbose=0)
    model.save(tmp_path / "m.keras")
    loaded = keras.saving.load_model(tmp_path / "m.keras", safe_mode=True)
    assert int(loaded.optimizer.iterations) == 2
    # The loaded optimizer's rate is the schedule's at the step it had reached.
    expected = float(OneCycle(PEAK, STEPS)(2))
    assert float(loaded.optimizer.learning_rate) == pytest.approx(expected, rel=1e-6)


@pytest.mark.slow
def test_schedule_value_after_restoring_weights_equals_the_uninterrupted_value(
    tmp_path: Path,
) -> None:
    # Checkpoints are save_weights files: the step counter comes back with them, so the
    # schedule resumes at the step it had reached.
    def model_at(steps: int) -> keras.Model:
        keras.utils.set_random_seed(0)
        inputs = keras.Input((3,))
        model = keras.Model(inputs, keras.layers.Dense(1)(inputs))
        model.compile(keras.optimizers.Adam(make_schedule("one_cycle", PEAK, STEPS)), "mse")
        x, y = np.arange(24.0).reshape(8, 3) / 24, np.ones((8, 1))
        model.fit(x, y, batch_size=2, epochs=steps // 4, shuffle=False, verbose=0)
        return model

    uninterrupted = model_at(12)
    interrupted = model_at(4)
    interrupted.save_weights(tmp_path / "c.weights.h5")
    resumed = model_at(0)
    resumed.optimizer.build(resumed.trainable_variables)
    resumed.load_weights(tmp_path / "c.weights.h5")
    assert int(resumed.optimizer.iterations) == 4
    x, y = np.arange(24.0).reshape(8, 3) / 24, np.ones((8, 1))
    resumed.fit(x, y, batch_size=2, epochs=2, shuffle=False, verbose=0)
    assert int(resumed.optimizer.iterations) == int(uninterrupted.optimizer.iterations) == 12
    assert float(resumed.optimizer.learning_rate) == float(uninterrupted.optimizer.learning_rate)
    for a, b in zip(resumed.get_weights(), uninterrupted.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)


def test_steps_per_epoch_reads_the_cardinality_of_a_batched_dataset() -> None:
    data = tf.data.Dataset.range(10).batch(3)
    assert steps_per_epoch(data) == 4


def test_steps_per_epoch_refuses_a_dataset_of_unknown_length() -> None:
    data = tf.data.Dataset.range(10).filter(lambda x: x > 2).batch(3)
    with pytest.raises(DataError, match="assert_cardinality"):
        steps_per_epoch(data)


def test_steps_per_epoch_refuses_an_infinite_dataset() -> None:
    with pytest.raises(DataError, match="repeats forever"):
        steps_per_epoch(tf.data.Dataset.range(10).batch(3).repeat())


@pytest.mark.parametrize(
    ("args", "name"),
    [
        (("linear", PEAK, STEPS), "schedule"),
        (("cosine", 0.0, STEPS), "learning_rate"),
        (("one_cycle", PEAK, 0), "total_steps"),
        (("one_cycle", PEAK, 2.5), "total_steps"),
    ],
)
def test_make_schedule_refuses_invalid_arguments(args: tuple[object, ...], name: str) -> None:
    with pytest.raises(InvalidArgumentError, match=f"Received: {name}="):
        make_schedule(*args)  # type: ignore[arg-type]
