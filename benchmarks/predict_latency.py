"""Latency of ``clf.predict(x)`` against ``clf.model.predict_on_batch(x)`` on small arrays.

``predict_on_batch`` is Keras' cheapest way to run a model on an array already in memory: one
compiled call, no ``tf.data`` pipeline, no callbacks, no progress bar. ``clf.predict`` adds
what transferkit does around the model (checking and converting the input, batching, the
probabilities). On one image or a few, that overhead is the whole difference a user sees.

For each size (1, 8 and 256 images by default) at 160x160 pixels, on MobileNetV2 with random
weights (timing does not depend on the weights):

* **steady state**: best (and median) of ``--repeats`` timings of each side, the two sides
  alternating which goes first from one repeat to the next, so that drift in machine load
  favours neither. A timing is a loop of calls (more for small sizes, so the clock's
  resolution does not matter), divided by its count. The predict functions are traced once
  before timing.
* **first call** (``--cold``, on by default): the first call on a freshly built classifier,
  so it includes tracing; each side on its own classifier, the order alternating over sizes.

Both sides must agree: ``predict``'s probabilities are checked against the softmax of
``predict_on_batch``'s logits. The ratio is ``predict / predict_on_batch`` (1.0 = no overhead).

    python benchmarks/predict_latency.py                      # 2-4 minutes on 2 CPU cores
    python benchmarks/predict_latency.py --output benchmarks/results/predict-latency.json \\
        --note "after the compiled predict"
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import time
from collections.abc import Callable
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras
import numpy as np
import tensorflow as tf

import transferkit as tk

Runner = Callable[[], Any]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--backbone", default="mobilenet_v2")
    parser.add_argument("--image-size", type=int, default=160)
    parser.add_argument("--sizes", type=int, nargs="+", default=[1, 8, 256])
    parser.add_argument("--repeats", type=int, default=7, help="best of N timings per side")
    parser.add_argument(
        "--min-seconds",
        type=float,
        default=0.2,
        help="each timing loops calls until about this long (at least one call)",
    )
    parser.add_argument(
        "--no-cold", dest="cold", action="store_false", help="skip the first-call timings"
    )
    parser.add_argument("--note", default="", help="free text kept in the JSON (which code)")
    parser.add_argument("--output", default=None, help="write the results here as JSON")
    return parser.parse_args(argv)


def new_classifier(args: argparse.Namespace) -> tk.TransferClassifier:
    keras.utils.set_random_seed(0)
    return tk.TransferClassifier(
        args.backbone, class_names=["a", "b", "c"], image_size=args.image_size, weights=None
    )


def images(size: int, image_size: int) -> np.ndarray:
    rng = np.random.default_rng(size)
    return rng.integers(0, 256, size=(size, image_size, image_size, 3)).astype("uint8")


def sides(clf: tk.TransferClassifier, x: np.ndarray) -> dict[str, Runner]:
    return {
        "predict": lambda: clf.predict(x),
        "predict_on_batch": lambda: clf.model.predict_on_batch(x),
    }


def check_agreement(clf: tk.TransferClassifier, x: np.ndarray) -> float:
    """The largest difference between the two sides' probabilities (should be ~1e-7)."""
    probabilities = clf.predict(x)
    logits = clf.model.predict_on_batch(x)
    reference = keras.ops.convert_to_numpy(keras.ops.softmax(logits, axis=-1))
    difference = float(np.max(np.abs(probabilities - reference)))
    if difference > 1e-4:
        msg = f"predict and predict_on_batch disagree by {difference:.2g} on {len(x)} images"
        raise AssertionError(msg)
    return difference


def calls_per_timing(run: Runner, min_seconds: float) -> int:
    """How many calls make a timing of about ``min_seconds`` (one call's time, measured)."""
    started = time.perf_counter()
    run()
    once = time.perf_counter() - started
    return max(1, round(min_seconds / max(once, 1e-6)))


def time_per_call(run: Runner, calls: int) -> float:
    started = time.perf_counter()
    for _ in range(calls):
        run()
    return (time.perf_counter() - started) / calls


def steady_state(clf: tk.TransferClassifier, x: np.ndarray, args: argparse.Namespace) -> dict:
    runs = sides(clf, x)
    for run in runs.values():  # trace both predict functions outside the timing
        run()
    calls = {name: calls_per_timing(run, args.min_seconds) for name, run in runs.items()}
    seconds: dict[str, list[float]] = {name: [] for name in runs}
    order = list(runs)
    for repeat in range(args.repeats):
        for name in order if repeat % 2 == 0 else order[::-1]:
            seconds[name].append(time_per_call(runs[name], calls[name]))
    result: dict[str, Any] = {"calls_per_timing": calls}
    for name, values in seconds.items():
        result[name] = {
            "best_ms": 1e3 * min(values),
            "median_ms": 1e3 * statistics.median(values),
            "all_ms": [1e3 * v for v in values],
        }
    result["ratio_best"] = result["predict"]["best_ms"] / result["predict_on_batch"]["best_ms"]
    result["ratio_median"] = (
        result["predict"]["median_ms"] / result["predict_on_batch"]["median_ms"]
    )
    return result


def first_calls(args: argparse.Namespace) -> dict[str, dict[str, float]]:
    """Seconds of the first call on a fresh classifier, per size and side."""
    results: dict[str, dict[str, float]] = {}
    names = ["predict", "predict_on_batch"]
    for index, size in enumerate(args.sizes):
        x = images(size, args.image_size)
        results[str(size)] = {}
        for name in names if index % 2 == 0 else names[::-1]:
            clf = new_classifier(args)
            run = sides(clf, x)[name]
            started = time.perf_counter()
            run()
            results[str(size)][name] = time.perf_counter() - started
            del clf
            keras.backend.clear_session()
    return results


def machine() -> dict[str, Any]:
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=False
        ).stdout.strip()
    except OSError:
        commit = ""
    return {
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "devices": sorted({d.device_type for d in tf.config.list_physical_devices()}),
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "transferkit": tk.__version__,
        "transferkit_file": tk.__file__,
        "working_tree_git_head": commit,  # the code run may differ: see transferkit_file
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    started = time.perf_counter()
    results: dict[str, Any] = {"settings": vars(args), "machine_before": machine()}
    clf = new_classifier(args)
    results["steady_state"] = {}
    for size in args.sizes:
        x = images(size, args.image_size)
        difference = check_agreement(clf, x)
        row = steady_state(clf, x, args)
        row["max_probability_difference"] = difference
        results["steady_state"][str(size)] = row
        print(
            f"{size:4d} images: predict {row['predict']['best_ms']:8.2f} ms, "
            f"predict_on_batch {row['predict_on_batch']['best_ms']:8.2f} ms "
            f"(best of {args.repeats}) → ratio {row['ratio_best']:.2f} "
            f"(medians: {row['ratio_median']:.2f})",
            flush=True,
        )
    if args.cold:
        results["first_call_seconds"] = first_calls(args)
        for size, row in results["first_call_seconds"].items():
            print(
                f"{int(size):4d} images, first call on a new classifier: "
                f"predict {row['predict']:.2f} s, predict_on_batch {row['predict_on_batch']:.2f} s"
            )
    results["machine_after"] = machine()
    results["total_seconds"] = time.perf_counter() - started
    print(f"total {results['total_seconds']:.0f} s")
    if args.output:
        with open(args.output, "w", encoding="utf-8") as file:
            json.dump(results, file, indent=2)
            file.write("\n")
        print(f"wrote {args.output}")
    return results


if __name__ == "__main__":
    main()
