"""Two choices :func:`~transferkit.training.fit_policy.fit` measures rather than assumes.

* :func:`probe_head`: after the head stage, the head refitted as a linear probe
  (:mod:`~transferkit.training.linear_probe`) on the same frozen features, when the training
  data is small (:data:`PROBE_MAX_IMAGES`): the head alone that fit() falls back to. With
  few images per class the minibatch head stops wherever a handful of validation images
  turned; the probe is the well-regularized convex answer. Fine-tuning still starts from
  the minibatch head.
* :func:`race_fine_tune_rate`: fine-tuning's rate, raced (:mod:`~transferkit.training.rate_race`)
  among multiples of the head's rate on the fine-tuning stage itself.

Both read the classifier through its public face (:class:`~transferkit.model.protocol.
ClassifierLike`) and change only its model's weights; ``fit.json`` (:class:`FitState`) keeps
what a resumed run must not choose again.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from transferkit import _backend
from transferkit.data import resolve
from transferkit.model import class_weights as _class_weights
from transferkit.model.protocol import ClassifierLike, expected
from transferkit.training import features as _features
from transferkit.training import linear_probe, rate_race
from transferkit.training.rate_race import Score

__all__ = ["FitState", "probe_head", "race_fine_tune_rate"]

#: Training images up to which the head is also fitted as a linear probe (above it the
#: minibatch head has data enough, and the full-batch solver would cost more than it gives).
PROBE_MAX_IMAGES = 4096
#: Fine-tuning's candidate rates, as multiples of the head's rate.
RACE_FACTORS = (1.0, 3.0, 10.0, 30.0)
#: Each candidate's run, as a fraction of fine-tuning's optimizer steps.
RACE_FRACTION = 0.2
#: Fewest steps a candidate trains.
MIN_RACE_STEPS = 4

Decide = Callable[[str, Any, str], None]


class FitState:
    """``fit.json`` in the checkpoint folder: choices a resumed run reuses; process 0 writes."""

    NAME = "fit.json"

    def __init__(self, checkpoint_dir: str | os.PathLike[str] | None) -> None:
        self.path = None if checkpoint_dir is None else Path(checkpoint_dir) / self.NAME

    def get(self, key: str) -> Any:
        """The stored value, or None."""
        if self.path is None or not self.path.is_file():
            return None
        return json.loads(self.path.read_text()).get(key)

    def put(self, key: str, value: Any) -> None:
        """Stores a value (every process chose the same; process 0 alone writes it)."""
        if self.path is None or not _backend.is_process_zero():
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        state = json.loads(self.path.read_text()) if self.path.is_file() else {}
        partial = self.path.with_name(f".partial-{self.NAME}")
        partial.write_text(json.dumps({**state, key: value}))
        os.replace(partial, self.path)


def probe_head(
    classifier: ClassifierLike,
    train: Any,
    validation: Any,
    *,
    batch_size: int,
    steps_per_epoch: int,
    class_weight: _class_weights.ClassWeight,
    score: Callable[[], Score],
    decide: Decide,
) -> tuple[Score, list[np.ndarray], int | None]:
    """The head alone: a linear probe when there are at most PROBE_MAX_IMAGES images.

    The probe is the head fit() falls back to; the model is left with the minibatch head,
    which fine-tuning starts from (a strongly regularized probe's small weights pass the
    backbone small gradients: fine-tuning from it measured worse).

    Args:
        classifier: the classifier, its backbone frozen and its head trained.
        train: its training data (resolved as ``fit_head`` does).
        validation: its validation data.
        batch_size: the batch size for arrays and folders.
        steps_per_epoch: batches in the training data: more than PROBE_MAX_IMAGES images'
            worth skips the probe before any feature is computed.
        class_weight: the class weights of the loss.
        score: the validation score of the classifier as it stands.
        decide: records a decision.

    Returns:
        The validation score of the head alone, the model's weights with it, and the
        validation images of the rarest class (None when the probe was skipped: much data).
    """
    head_score = score()
    if steps_per_epoch * batch_size > PROBE_MAX_IMAGES:
        decide("head_probe", "skipped", f"over {PROBE_MAX_IMAGES} training images")
        return head_score, classifier.model.get_weights(), None
    wanted = expected(classifier)
    batches = resolve.labeled(train, wanted, batch_size=batch_size, in_order=True).dataset
    held = resolve.labeled(validation, wanted, batch_size=batch_size, name="validation_data")
    with (
        _backend.scope(classifier.strategy),
        _features.cache_features(
            classifier.model, classifier.backbone, batches, held.dataset, views=1, augment=False
        ) as cached,
    ):
        assert cached.validation is not None  # validation was given
        if len(cached.train) > PROBE_MAX_IMAGES:  # a dataset of larger batches
            decide("head_probe", "skipped", f"over {PROBE_MAX_IMAGES} training images")
            return head_score, classifier.model.get_weights(), None
        probe = _fit_probe(classifier, cached, class_weight)
        rarest = linear_probe.smallest_class(cached.validation.targets[0], _kind(classifier))
    logits = classifier.model.get_layer("logits")
    minibatch = logits.get_weights()
    logits.set_weights([probe.kernel.reshape(minibatch[0].shape), probe.bias])
    probe_score, weights = score(), classifier.model.get_weights()
    logits.set_weights(minibatch)
    # Kept whatever a few validation images say: the strength was chosen on held-out data
    # (cross-validated when validation is tiny), and the minibatch head is not regularized.
    decide(
        "head_probe",
        probe.l2,
        f"L2 strength chosen by {probe.held_out} log-loss; validation {_show(probe_score)}, "
        f"the minibatch head's {_show(head_score)}",
    )
    return probe_score, weights, rarest


def _kind(classifier: ClassifierLike) -> _class_weights.Kind:
    config = classifier.config
    if config.multi_label:
        return "multi_label"
    return "binary" if config.num_classes == 2 else "sparse"


def _fit_probe(
    classifier: ClassifierLike,
    cached: _features.CachedFeatures,
    class_weight: _class_weights.ClassWeight,
) -> linear_probe.Probe:
    assert cached.validation is not None
    config = classifier.config
    labels = cached.train.targets[0]
    counts = None
    if class_weight == "balanced":
        counts = _class_weights.label_counts(
            labels, config.num_classes, multi_label=config.multi_label
        )
    weights = _class_weights.resolve(
        class_weight,
        class_names=config.class_names,
        num_classes=config.num_classes,
        multi_label=config.multi_label,
        counts=counts,
    )
    kind = _kind(classifier)
    return linear_probe.fit_probe(
        (cached.train.views[0], labels),
        (cached.validation.views[0], cached.validation.targets[0]),
        kind=kind,
        num_logits=1 if kind == "binary" else config.num_classes,
        class_weights=weights,
    )


def race_fine_tune_rate(
    classifier: ClassifierLike,
    train: Any,
    validation: Any,
    *,
    base_rate: float,
    total_steps: int,
    batch_size: int,
    seed: int,
    state: FitState,
    decide: Decide,
) -> float:
    """Fine-tuning's rate: the race's winner among multiples of the head's rate.

    Call it with the backbone unfrozen. A rate stored in ``state`` by an earlier run is reused.

    Args:
        classifier: the classifier, unfrozen, its head trained.
        train: its training data.
        validation: its validation data.
        base_rate: the head's rate; the candidates are :data:`RACE_FACTORS` times it.
        total_steps: fine-tuning's optimizer steps; each candidate trains
            :data:`RACE_FRACTION` of them.
        batch_size: the batch size for arrays and folders.
        seed: seeds the order of the batches (the same for every candidate).
        state: ``fit.json``.
        decide: records a decision.

    Returns:
        The chosen rate.
    """
    stored = state.get("fine_tune_race")
    if stored is not None:  # chosen before this run was interrupted
        for rate, metric, loss in stored["candidates"]:
            decide("fine_tune_race", rate, _raced((metric, -loss), stored["steps"]))
        return float(stored["best"])
    steps = max(MIN_RACE_STEPS, math.ceil(RACE_FRACTION * total_steps))
    wanted = expected(classifier)
    data, _ = resolve.training(train, wanted, batch_size=batch_size)
    # At least `steps` batches (arrays: epochs of one batch or more; a dataset: repeated).
    batches, _ = data.epochs(seed=seed, first_epoch=0, epochs=steps)
    held = resolve.labeled(validation, wanted, batch_size=batch_size, name="validation_data")
    result = rate_race.race(
        classifier.model,
        batches.repeat(),
        held.dataset,
        config=classifier.config,
        rates=[base_rate * factor for factor in RACE_FACTORS],
        steps=steps,
        strategy=classifier.strategy,
    )
    candidates = []
    for rate, (metric, loss) in zip(result.rates, result.scores, strict=True):
        decide("fine_tune_race", rate, _raced((metric, loss), steps))
        candidates.append([rate, metric, -loss])
    state.put("fine_tune_race", {"candidates": candidates, "best": result.best, "steps": steps})
    return result.best


def _show(score: Score) -> str:
    return f"(metric {score[0]:.4f}, loss {-score[1]:.4f})"


def _raced(score: Score, steps: int) -> str:
    return f"validation {_show(score)} after {steps} steps from the head"
