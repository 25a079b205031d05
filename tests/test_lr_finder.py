"""The learning-rate finder: a suggestion inside the range that trains, early stop, no trace.

The synthetic task: three Gaussian clusters in 8 dimensions and a small MLP trained with Adam.
Its workable range is measured here, not assumed: a rate "trains" when three epochs at it
bring the loss below half of where it started. On this task 1e-4 is too low, 1e-3 to 1e-1
train, and 10 diverges, so a sweep to 10 must stop early.
"""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

import transferkit as tk
from transferkit.errors import InvalidArgumentError
from transferkit.lr_finder import (
    LearningRateFinderResult,
    find_learning_rate,
    suggest_learning_rate,
)

LOSS = keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def _clusters() -> tf.data.Dataset:
    rng = np.random.default_rng(0)
    labels = np.arange(384) % 3
    centers = rng.normal(size=(3, 8)) * 2.0
    points = (centers[labels] + rng.normal(size=(384, 8))).astype("float32")
    return tf.data.Dataset.from_tensor_slices((points, labels)).shuffle(384, seed=0).batch(32)


def _mlp() -> keras.Model:
    keras.utils.set_random_seed(7)
    inputs = keras.Input((8,))
    hidden = keras.layers.Dense(32, activation="relu")(inputs)
    return keras.Model(inputs, keras.layers.Dense(3)(hidden))


class _Trainer:
    """Trains the MLP from the same start at any rate, tracing Keras' functions only once."""

    def __init__(self) -> None:
        self.model = _mlp()
        self.start = self.model.get_weights()
        self.optimizer = keras.optimizers.Adam(1e-3)
        self.model.compile(self.optimizer, LOSS)
        self.optimizer.build(self.model.trainable_variables)

    def loss_after(self, rate: float, epochs: int) -> float:
        self.model.set_weights(self.start)
        for variable in self.optimizer.variables:  # a fresh Adam: no steps, no moments
            variable.assign(np.zeros(variable.shape, variable.dtype))
        self.optimizer.learning_rate = rate
        if epochs:
            self.model.fit(_clusters(), epochs=epochs, verbose=0)
        return float(self.model.evaluate(_clusters(), verbose=0))


@pytest.fixture(scope="module")
def sweep() -> LearningRateFinderResult:
    keras.utils.set_random_seed(1234)
    return find_learning_rate(_mlp(), _clusters(), loss=LOSS, min_lr=1e-7, max_lr=10.0)


def test_suggestion_lies_inside_the_range_that_trains(sweep: LearningRateFinderResult) -> None:
    trainer = _Trainer()
    start = trainer.loss_after(1e-3, epochs=0)
    rates = [1e-4, 1e-3, 1e-1, 10.0]
    trains = [trainer.loss_after(rate, epochs=3) < start / 2 for rate in rates]
    assert trains == [False, True, True, False]  # the measured ends of the workable range
    assert 1e-3 <= sweep.suggestion <= 1e-1
    assert trainer.loss_after(sweep.suggestion, epochs=3) < start / 2


def test_sweep_stops_early_once_the_loss_diverges(sweep: LearningRateFinderResult) -> None:
    assert sweep.stopped_early
    assert len(sweep.learning_rates) == len(sweep.losses) < 100
    assert sweep.learning_rates[-1] < 10.0
    assert sweep.losses[-1] > 4 * min(sweep.losses)


def test_sweep_rates_grow_exponentially_from_min_lr(sweep: LearningRateFinderResult) -> None:
    rates = np.array(sweep.learning_rates)
    assert rates[0] == pytest.approx(1e-7)
    np.testing.assert_allclose(rates[1:] / rates[:-1], (1e8) ** (1 / 99), rtol=1e-9)


# Restoring every variable bit for bit is tested on a classifier, for both stages, in
# test_learning_rates.py.


def test_valley_rule_picks_the_middle_of_the_longest_descent() -> None:
    rates = [10.0 ** (k / 4 - 6) for k in range(25)]
    flat, falling, rising = [1.0] * 8, [0.9 - 0.1 * k for k in range(9)], [2.0] * 8
    # The valley runs from the last flat point (index 7) to the lowest (16): middle is 11.
    assert suggest_learning_rate(rates, flat + falling + rising) == rates[11]


def test_without_any_descent_the_suggestion_is_a_tenth_of_the_lowest_losss_rate() -> None:
    rates = [1e-3, 1e-2, 1e-1]
    assert suggest_learning_rate(rates, [1.0, 1.0, 1.0]) == pytest.approx(1e-4)


def test_plot_writes_an_image(sweep: LearningRateFinderResult, tmp_path: Path) -> None:
    written = sweep.plot(tmp_path / "lr.png")
    assert written.read_bytes().startswith(b"\x89PNG")
    assert tk.plot.learning_rates(sweep, tmp_path / "lr.svg").stat().st_size > 0


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"min_lr": 1.0, "max_lr": 0.1}, "min_lr must be below max_lr"),
        ({"min_lr": 0.0}, "Received: min_lr=0.0"),
        ({"steps": 5}, "at least 10"),
        ({"steps": 20.5}, "Received: steps=20.5"),
    ],
)
def test_invalid_sweep_arguments_are_refused(kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(InvalidArgumentError, match=match):
        find_learning_rate(_mlp(), _clusters(), loss=LOSS, **kwargs)  # type: ignore[arg-type]
