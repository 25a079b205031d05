"""Transfer quality in every regime: few images, many, multi-label, on two offline tasks.

Tasks, regimes and pretraining are in ``quality_tasks.py`` (digits 0-4 → 5-9 from
scikit-learn's bundled digits; rendered textures, five source kinds → five others); nothing is
downloaded. Per regime and seed, every method gets the same training images and is scored on
the same test images (40 per class, held out first): accuracy, or macro ROC AUC for
multi-label. Methods, each on a fresh classifier built with ``weights=<pretrained file>``:

* ``recipe``: the tutorial's settings: ``fit_head`` (Adam 1e-4, 10 epochs), ``unfreeze`` from
  the recipe's fraction of the layers (100 of MobileNetV2's 154), ``fine_tune`` (RMSprop 1e-5,
  10 epochs).
* ``fit``: ``clf.fit(train)`` at its defaults (it holds its own validation split out).
* ``fit[LABEL]``: ``clf.fit(train, **kwargs)`` for each ``--fit-kwargs JSON --label LABEL``.
* ``probe``: logistic regression (scikit-learn) on the frozen backbone's pooled features,
  standardized, C (1e-4, 1e-3, ..., 1) chosen by stratified 3-fold cross-validation on the
  training images (log loss; for multi-label one probe per class, by ROC AUC).
* ``parts`` (multi-label only): the probe trained on the halves of the training images (one
  digit each, single-label), applied to both halves of each test image; a class's score is
  ``1 - (1 - p_left) (1 - p_right)``. What multi-label should approach.
* ``sweep`` (the best hand-tuned fine-tune, a ceiling): a head (Adam 3e-3, cosine, about
  150 steps on cached features), then the whole backbone (BatchNormalization frozen) with
  Adam and a cosine schedule with warmup, at each rate of ``--sweep-rates`` for each multiple
  of ``--sweep-lengths`` of 0.1's fine-tuning budget (about 80 steps, 3 to 30 epochs). The
  first seed tries every cell, the other seeds the first seed's best (``--full-sweep``: every
  cell on every seed, the best mean); chosen on test scores, so an upper bound.

    python benchmarks/transfer_quality.py                        # digits regimes, seeds 0 1 2
    python benchmarks/transfer_quality.py --quick --regime digits-multilabel   # smoke run
    python benchmarks/transfer_quality.py --methods fit --label ema \\
        --fit-kwargs '{"regularization": {"tk.Regularization": {"ema": true}}}'
    python benchmarks/transfer_quality.py --table benchmarks/results/transfer-quality-regimes.json

See ``docs/transfer_quality.rst``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import keras
import numpy as np
import tensorflow as tf
from quality_tasks import (
    REGIMES,
    Arrays,
    Regime,
    Task,
    compose_pairs,
    make_task,
    pretrain_backbone,
    regime_split,
)
from sklearn.linear_model import LogisticRegressionCV
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import StratifiedKFold
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

import transferkit as tk
from transferkit.errors import TransferkitWarning

__all__ = ["main", "table"]

RECIPE_FRACTION = 100 / 154  # the recipe unfreezes MobileNetV2 from layer 100 of 154
BUDGET_STEPS, MIN_EPOCHS, MAX_EPOCHS = 80, 3, 30  # 0.1's fine-tuning budget
HEAD_STEPS, HEAD_RATE = 150, 3e-3  # the sweep's head
RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")


@dataclass(frozen=True)
class Setup:
    """One regime on one seed: what every method gets."""

    regime: Regime
    args: argparse.Namespace
    weights: str
    train: Arrays
    test: Arrays
    seed: int
    parts: tuple[Arrays, Arrays] | None = None  # training and test halves (multi-label)


# ---------------------------------------------------------------------- scoring


def score(model: keras.Model, setup: Setup) -> float:
    """Test accuracy, or macro ROC AUC for multi-label (logits rank as probabilities do)."""
    logits = model.predict(setup.test[0], batch_size=256, verbose=0)
    if setup.regime.multi_label:
        return float(roc_auc_score(setup.test[1], logits, average="macro"))
    return float(np.mean(np.argmax(logits, -1) == setup.test[1]))


def new_classifier(setup: Setup, image_size: Any = None) -> tk.TransferClassifier:
    keras.utils.set_random_seed(setup.seed)
    return tk.TransferClassifier(
        setup.args.backbone,
        num_classes=5,
        image_size=image_size or setup.test[0].shape[1:3],
        weights=setup.weights,
        augmentation=None,  # flips and rotations change digits
        multi_label=setup.regime.multi_label,
    )


def timed(run: Callable[[Setup], dict[str, Any]], setup: Setup) -> dict[str, Any]:
    started = time.perf_counter()
    result = run(setup)
    return {**result, "seconds": time.perf_counter() - started}


# ---------------------------------------------------------------------- methods


def recipe(setup: Setup) -> dict[str, Any]:
    clf = new_classifier(setup)
    clf.fit_head(setup.train, epochs=10, verbose=0)
    head = score(clf.model, setup)
    layer = round(RECIPE_FRACTION * len(clf.backbone.layers))
    clf.unfreeze(layer)
    clf.fine_tune(setup.train, epochs=10, verbose=0)
    return {"score": score(clf.model, setup), "head_score": head, "unfreeze_from": layer}


def fit_with(setup: Setup, kwargs: dict[str, Any]) -> dict[str, Any]:
    clf = new_classifier(setup)
    clf.fit(setup.train, verbose=0, **resolve_kwargs(kwargs))
    decisions = getattr(clf.history, "decisions", [])
    return {"score": score(clf.model, setup), "decisions": decisions}


def resolve_kwargs(value: Any) -> Any:
    """JSON to keyword arguments: ``{"tk.Name": {...}}`` becomes ``tk.Name(**{...})``."""
    if isinstance(value, dict):
        if len(value) == 1 and next(iter(value)).startswith("tk."):
            name, inner = next(iter(value.items()))
            return getattr(tk, name[3:])(**resolve_kwargs(inner))
        return {key: resolve_kwargs(item) for key, item in value.items()}
    return value


def pooled_features(setup: Setup, *images: np.ndarray) -> list[np.ndarray]:
    """The frozen pretrained backbone's pooled features of each array, as the head sees them."""
    model = new_classifier(setup, images[0].shape[1:3]).model
    extractor = keras.Model(model.inputs, model.get_layer("pooling").output)
    return [np.asarray(extractor.predict(x, batch_size=256, verbose=0)) for x in images]


def fit_probe(features: np.ndarray, labels: np.ndarray, seed: int) -> Callable[..., np.ndarray]:
    """Logistic regression, C by cross-validation; returns its probability function."""

    def one(target: np.ndarray, scoring: str, folds: int) -> Any:
        folds = min(folds, int(np.bincount(target.astype(int)).min()))
        cv = StratifiedKFold(folds, shuffle=True, random_state=seed)
        # Standardized features of 1,280 dimensions: C above 1 only overfits, and L-BFGS
        # would run to its limit there on separable data; 300 iterations are plenty below.
        model = LogisticRegressionCV(
            Cs=list(np.logspace(-4, 0, 5)), cv=cv, scoring=scoring, max_iter=300, tol=1e-3
        )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # convergence at the largest C; sklearn's futures
            return make_pipeline(StandardScaler(), model).fit(features, target)

    if labels.ndim == 1:
        return one(labels, "neg_log_loss", 3).predict_proba
    models = [one(labels[:, c], "roc_auc", 3) for c in range(labels.shape[1])]
    return lambda x: np.stack([m.predict_proba(x)[:, 1] for m in models], axis=-1)


def probe(setup: Setup) -> dict[str, Any]:
    train, test = pooled_features(setup, setup.train[0], setup.test[0])
    probabilities = fit_probe(train, setup.train[1], setup.seed)(test)
    if setup.regime.multi_label:
        return {"score": float(roc_auc_score(setup.test[1], probabilities, average="macro"))}
    return {"score": float(np.mean(np.argmax(probabilities, -1) == setup.test[1]))}


def parts(setup: Setup) -> dict[str, Any]:
    """The probe on single digits (the halves), combined over both halves of a test image."""
    assert setup.parts is not None
    (train_halves, train_labels), (test_halves, test_labels) = setup.parts
    train, test = pooled_features(setup, train_halves, test_halves)
    left, right = np.split(fit_probe(train, train_labels, setup.seed)(test), 2)
    combined = 1.0 - (1.0 - left) * (1.0 - right)
    halves = float(np.mean(np.argmax(np.concatenate([left, right]), -1) == test_labels))
    auc = float(roc_auc_score(setup.test[1], combined, average="macro"))
    return {"score": auc, "halves_accuracy": halves}


def budget_epochs(setup: Setup, multiple: float) -> tuple[int, int]:
    """Epochs of ``multiple`` times 0.1's fine-tuning budget on all the training images."""
    steps = math.ceil(len(setup.train[1]) / 32)
    epochs = min(max(math.ceil(BUDGET_STEPS / steps), MIN_EPOCHS), MAX_EPOCHS)
    return max(1, round(multiple * epochs)), steps


def sweep(setup: Setup, cells: list[tuple[float, float]]) -> dict[str, Any]:
    """The sweep's head once, then each (rate, length) cell from it; scores and seconds."""
    clf = new_classifier(setup)
    started = time.perf_counter()
    steps = math.ceil(len(setup.train[1]) / 32)
    head_epochs = min(max(math.ceil(HEAD_STEPS / steps), 10), 100)
    clf.fit_head(
        setup.train, epochs=head_epochs, learning_rate=HEAD_RATE, schedule="cosine", verbose=0
    )
    head_weights, head_seconds = clf.model.get_weights(), time.perf_counter() - started
    result: dict[str, Any] = {"head_score": score(clf.model, setup), "cells": {}}
    for rate, multiple in cells:
        clf = new_classifier(setup)
        clf.model.set_weights(head_weights)
        epochs, steps = budget_epochs(setup, multiple)
        started = time.perf_counter()
        clf.unfreeze(None)
        schedule = tk.schedules.make_schedule("cosine", rate, epochs * steps)
        with warnings.catch_warnings():  # the head was trained, on another classifier
            warnings.simplefilter("ignore", TransferkitWarning)
            clf.fine_tune(
                setup.train, epochs=epochs, optimizer=keras.optimizers.Adam(schedule), verbose=0
            )
        seconds = head_seconds + time.perf_counter() - started
        result["cells"][cell_name(rate, multiple)] = {
            "score": score(clf.model, setup),
            "epochs": epochs,
            "seconds": seconds,
        }
    return result


def cell_name(rate: float, multiple: float) -> str:
    return f"{rate:g} x {multiple:g}"


# ---------------------------------------------------------------------- one regime


def summary(values: list[float]) -> dict[str, Any]:
    return {
        "mean": float(np.mean(values)),
        "sd": float(np.std(values, ddof=1)) if len(values) > 1 else 0.0,
        "values": values,
    }


def rows(args: argparse.Namespace, regime: Regime) -> dict[str, Callable[[Setup], Any]]:
    """The methods run on every seed, by row name."""
    methods: dict[str, Callable[[Setup], Any]] = {}
    if "recipe" in args.methods:
        methods["recipe"] = recipe
    if "fit" in args.methods:
        methods["fit"] = lambda setup: fit_with(setup, args.default_fit_kwargs)
    for label, kwargs in zip(args.label, args.fit_kwargs, strict=True):
        methods[f"fit[{label}]"] = lambda setup, kwargs=kwargs: fit_with(setup, kwargs)
    if "probe" in args.methods:
        methods["probe"] = probe
    if "parts" in args.methods and regime.multi_label:
        methods["parts"] = parts
    return methods


def setup_for(
    args: argparse.Namespace, task: Task, regime: Regime, weights: str, seed: int
) -> Setup:
    train, test = regime_split(task, regime, seed)
    if not regime.multi_label:
        return Setup(regime, args, weights, train, test, seed)
    train_pairs, train_halves = compose_pairs(train, max(len(train[1]) // 2, 20), seed)
    test_pairs, test_halves = compose_pairs(test, len(test[1]), seed + 1000)
    return Setup(regime, args, weights, train_pairs, test_pairs, seed, (train_halves, test_halves))


def run_regime(
    args: argparse.Namespace, task: Task, regime: Regime, weights: str
) -> dict[str, Any]:
    """Every method on every seed, in an order that alternates between seeds."""
    methods = rows(args, regime)
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in methods}
    sweeps: list[dict[str, Any]] = []
    cells = [(r, m) for r in args.sweep_rates for m in args.sweep_lengths]
    for index, seed in enumerate(args.seeds):
        setup = setup_for(args, task, regime, weights, seed)
        names = list(methods) if index % 2 == 0 else list(methods)[::-1]
        for name in names:
            runs[name].append({"seed": seed, **timed(methods[name], setup)})
            print(f"{regime.name} {name} seed {seed}:", short(runs[name][-1]), flush=True)
        if (
            "sweep" in args.methods
            and regime.name in args.sweep_regimes
            and index < args.sweep_seeds
        ):
            sweeps.append({"seed": seed, **sweep(setup, cells)})
            scores = {name: round(cell["score"], 3) for name, cell in sweeps[-1]["cells"].items()}
            print(f"{regime.name} sweep seed {seed}:", short(sweeps[-1]), scores, flush=True)
            if index == 0 and not args.full_sweep:
                best = max(sweeps[0]["cells"].items(), key=lambda item: item[1]["score"])[0]
                cells = [c for c in cells if cell_name(*c) == best]
    result: dict[str, Any] = {
        "metric": "macro ROC AUC" if regime.multi_label else "accuracy",
        "train_images": len(setup.train[1]),
        "test_images": len(setup.test[1]),
        "methods": {},
    }
    for name, values in runs.items():
        result["methods"][name] = {
            **summary([v["score"] for v in values]),
            "seconds": summary([v["seconds"] for v in values]),
            "runs": values,
        }
    if sweeps:
        result["methods"]["sweep"] = best_of_sweep(sweeps)
    return result


def best_of_sweep(sweeps: list[dict[str, Any]]) -> dict[str, Any]:
    """The cell with the best mean score over the seeds that ran it (all, or the first)."""
    table: dict[str, list[dict[str, Any]]] = {}
    for run in sweeps:
        for name, cell in run["cells"].items():
            table.setdefault(name, []).append(cell)
    complete = {n: v for n, v in table.items() if len(v) == len(sweeps)} or table
    best = max(complete, key=lambda n: np.mean([c["score"] for c in complete[n]]))
    return {
        "cell": best,
        **summary([c["score"] for c in table[best]]),
        "seconds": summary([c["seconds"] for c in table[best]]),
        "head_score": summary([run["head_score"] for run in sweeps]),
        "first_seed": {n: v[0]["score"] for n, v in table.items()},
        "runs": sweeps,
    }


# ---------------------------------------------------------------------- tables


def table(results: list[dict[str, Any]], rst: bool = False) -> str:
    """A markdown (or reStructuredText list-table) of the score and seconds of every row."""
    merged: dict[str, dict[str, Any]] = {}
    for result in results:
        for name, regime in result["regimes"].items():
            merged.setdefault(name, {"metric": regime["metric"], "methods": {}})
            merged[name]["methods"].update(regime["methods"])
    columns = list(dict.fromkeys(m for r in merged.values() for m in r["methods"]))
    header = ["regime", "metric", *columns]
    lines = []
    for name, regime in merged.items():
        cells = [name, regime["metric"]]
        for column in columns:
            row = regime["methods"].get(column)
            cells.append("-" if row is None else cell_text(column, row))
        lines.append(cells)
    if rst:
        body = [".. list-table::", "   :header-rows: 1", ""]
        for line in [header, *lines]:
            body += [f"   * - {line[0]}"] + [f"     - {cell}" for cell in line[1:]]
        return "\n".join(body)
    rule = ["---"] * len(header)
    return "\n".join("| " + " | ".join(line) + " |" for line in [header, rule, *lines])


def cell_text(column: str, row: dict[str, Any]) -> str:
    text = f"{row['mean']:.3f} ± {row['sd']:.3f} ({row['seconds']['mean']:.0f} s)"
    if len(row["values"]) == 1:
        text = f"{row['mean']:.3f} ({row['seconds']['mean']:.0f} s, one seed)"
    return f"{text} [{row['cell']}]" if column == "sweep" else text


def short(result: dict[str, Any]) -> str:
    hidden = ("runs", "values", "decisions", "cells")
    return json.dumps({k: v for k, v in result.items() if k not in hidden}, default=str)


# ---------------------------------------------------------------------- main


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    # Textures only when named: every method was at chance there (docs/transfer_quality.rst).
    digits = [name for name in REGIMES if name.startswith("digits")]
    parser.add_argument("--regime", nargs="+", choices=sorted(REGIMES), default=digits)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    methods = ["recipe", "fit", "probe", "parts", "sweep"]
    parser.add_argument("--methods", nargs="+", choices=methods, default=methods)
    parser.add_argument("--fit-kwargs", action="append", default=[], type=json.loads,
                        help="a JSON object of fit() options: a row (repeatable)")  # fmt: skip
    parser.add_argument("--label", action="append", default=[], help="each row's name")
    parser.add_argument("--sweep-rates", type=float, nargs="+", default=[3e-4, 1e-3, 3e-3])
    parser.add_argument("--sweep-lengths", type=float, nargs="+", default=[1.0, 2.0])
    parser.add_argument("--sweep-regimes", nargs="+", choices=sorted(REGIMES), default=None)
    parser.add_argument("--full-sweep", action="store_true", help="every cell on every seed")
    parser.add_argument("--sweep-seeds", type=int, default=None, help="sweep the first N seeds")
    parser.add_argument("--backbone", default="mobilenet_v2")
    parser.add_argument("--weights-dir", default=None,
                        help="reuse (or keep) pretrained TASK.weights.h5 here")  # fmt: skip
    parser.add_argument("--pretrain-epochs", type=int, default=None, help="default: the task's")
    parser.add_argument("--pretrain-lr", type=float, default=1e-3)
    parser.add_argument("--output", default=None, help="JSON results (default: in results/)")
    parser.add_argument("--table", nargs="+", default=None, help="print the table of these")
    parser.add_argument("--rst", action="store_true", help="the table as an RST list-table")
    parser.add_argument("--quick", action="store_true", help="a smoke run: tiny, one seed")
    args = parser.parse_args(argv)
    if len(args.label) != len(args.fit_kwargs):
        parser.error(f"give one --label per --fit-kwargs. Received: label={args.label}")
    args.default_fit_kwargs = {}
    args.sweep_regimes = args.sweep_regimes or args.regime
    args.sweep_seeds = args.sweep_seeds or len(args.seeds)
    if args.quick:
        args.seeds, args.pretrain_epochs = args.seeds[:1], 2
        args.sweep_rates, args.sweep_lengths = args.sweep_rates[1:2], [0.1]
        args.default_fit_kwargs = {"epochs": 1}
    elif args.output is None:
        args.output = os.path.join(RESULTS, "transfer-quality-regimes.json")
    return args


def pretrained(args: argparse.Namespace, task: Task, folder: str) -> tuple[str, dict[str, Any]]:
    """The task's pretrained backbone weights: reused from ``--weights-dir``, or made."""
    path = os.path.join(args.weights_dir or folder, f"{task.name}.weights.h5")
    if args.weights_dir and os.path.isfile(path):
        return path, {"reused": path}
    source = task.source
    if args.quick:
        source = (source[0][:500], source[1][:500])
    epochs = args.pretrain_epochs or task.pretrain_epochs
    result = pretrain_backbone(
        args.backbone, source, path, epochs=epochs, learning_rate=args.pretrain_lr,
        batch_size=task.pretrain_batch_size,
    )  # fmt: skip
    print(f"pretraining {task.name}:", short(result), flush=True)
    return path, result


def main(argv: list[str] | None = None) -> dict[str, Any] | None:
    args = parse_args(argv)
    if args.table:
        loaded = []
        for path in args.table:
            with open(path, encoding="utf-8") as file:
                loaded.append(json.load(file))
        print(table(loaded, rst=args.rst))
        return None
    warnings.filterwarnings("ignore", message="`shuffle=True` was passed")
    started = time.perf_counter()
    results: dict[str, Any] = {"settings": dict(vars(args)), "pretraining": {}, "regimes": {}}
    tasks: dict[str, tuple[Task, str]] = {}
    with tempfile.TemporaryDirectory() as folder:
        if args.weights_dir:
            os.makedirs(args.weights_dir, exist_ok=True)
        for name in args.regime:
            regime = replace(REGIMES[name], per_class=5) if args.quick else REGIMES[name]
            if regime.task not in tasks:
                task = make_task(regime.task, quick=args.quick)
                if args.quick:
                    task = replace(task, test_per_class=10)
                path, results["pretraining"][task.name] = pretrained(args, task, folder)
                tasks[regime.task] = (task, path)
            task, path = tasks[regime.task]
            results["regimes"][name] = run_regime(args, task, regime, path)
            write(args.output, results, started)  # what is done so far, in case of a stop
    write(args.output, results, started)
    print(table([results]))
    print(f"total {results['total_seconds']:.0f} s")
    return results


def write(path: str | None, results: dict[str, Any], started: float) -> None:
    results["machine"] = {
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "load_average": os.getloadavg(),
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "backend": keras.backend.backend(),
        "transferkit": tk.__version__,
    }
    results["total_seconds"] = time.perf_counter() - started
    if path:
        with open(path, "w", encoding="utf-8") as file:
            json.dump(results, file, indent=2, default=str)
            file.write("\n")


if __name__ == "__main__":
    main()
