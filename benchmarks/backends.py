"""TensorFlow against JAX on this machine's CPU: ``fit_head``, ``fine_tune`` and ``predict``.

The same classifier (MobileNetV2 with random weights: timing does not depend on them), the
same images and the same settings on each Keras backend. A backend is chosen when Keras is
imported, so each timing runs in a fresh process: ``--rounds`` rounds, each running both
backends one after the other, the order alternating from round to round so that drift in
the machine's load favours neither; the best of the rounds is kept for each backend.

In one process, in order:

* **fit_head**: the head on cached features (the default), ``--head-epochs`` epochs: mostly
  one forward pass of the backbone over the images;
* **fine_tune per epoch**: the whole backbone unfrozen; one epoch of ``--images`` images,
  timed after a first epoch (which includes tracing and compiling);
* **predict per image**: ``clf.predict`` on all the images, after one warm-up call.

    python benchmarks/backends.py                     # about 5 minutes on 2 CPU cores
    python benchmarks/backends.py --output benchmarks/results/backends.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from typing import Any

BACKENDS = ("tensorflow", "jax")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--backbone", default="mobilenet_v2")
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--images", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--head-epochs", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=2, help="best of N per backend")
    parser.add_argument("--output", help="write the results as JSON to this file")
    parser.add_argument("--child", help=argparse.SUPPRESS)  # a backend, in a child process
    return parser.parse_args(argv)


def measure(args: argparse.Namespace) -> dict[str, float]:
    """Runs in a child process whose KERAS_BACKEND is set: the three timings, in seconds."""
    import keras
    import numpy as np

    import transferkit as tk

    rng = np.random.default_rng(0)
    size = args.image_size
    images = rng.integers(0, 256, (args.images, size, size, 3)).astype(np.uint8)
    labels = (np.arange(args.images) % 2).astype(np.int32)
    keras.utils.set_random_seed(0)
    clf = tk.TransferClassifier(
        args.backbone, class_names=["a", "b"], image_size=size, weights=None
    )
    common: dict[str, Any] = {"batch_size": args.batch_size, "verbose": 0}
    start = time.perf_counter()
    clf.fit_head((images, labels), epochs=args.head_epochs, learning_rate=1e-3, **common)
    head = time.perf_counter() - start
    clf.unfreeze(None)
    clf.fine_tune((images, labels), epochs=1, learning_rate=1e-5, **common)  # traces
    start = time.perf_counter()
    clf.fine_tune((images, labels), epochs=1, learning_rate=1e-5, **common)
    epoch = time.perf_counter() - start
    clf.predict(images[: args.batch_size], batch_size=args.batch_size)  # traces
    start = time.perf_counter()
    clf.predict(images, batch_size=args.batch_size)
    per_image = (time.perf_counter() - start) / args.images
    return {"fit_head_s": head, "fine_tune_epoch_s": epoch, "predict_ms_per_image": 1e3 * per_image}


def run_child(backend: str, args: argparse.Namespace) -> dict[str, float]:
    env = {**os.environ, "KERAS_BACKEND": backend, "TF_CPP_MIN_LOG_LEVEL": "3"}
    settings = ["backbone", "image_size", "images", "batch_size", "head_epochs"]
    argv = [f"--{name.replace('_', '-')}={getattr(args, name)}" for name in settings]
    done = subprocess.run(
        [sys.executable, __file__, *argv, "--child", backend],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        msg = f"{backend} run failed:\n{done.stderr[-3000:]}"
        raise RuntimeError(msg)
    result: dict[str, float] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def main(argv: list[str] | None = None) -> dict[str, Any] | None:
    args = parse_args(argv)
    if args.child:
        print(json.dumps(measure(args)), flush=True)
        return None
    runs: dict[str, list[dict[str, float]]] = {backend: [] for backend in BACKENDS}
    for round_ in range(args.rounds):
        order = BACKENDS if round_ % 2 == 0 else BACKENDS[::-1]
        for backend in order:
            runs[backend].append(run_child(backend, args))
            print(f"round {round_} {backend}: {runs[backend][-1]}", flush=True)
    best = {
        backend: {key: min(run[key] for run in results) for key in results[0]}
        for backend, results in runs.items()
    }
    ratios = {key: best["jax"][key] / best["tensorflow"][key] for key in best["jax"]}
    result = {
        "settings": {k: v for k, v in vars(args).items() if k not in ("output", "child")},
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count()},
        "best": best,
        "jax_over_tensorflow": ratios,
        "runs": runs,
    }
    print("\n| measure | TensorFlow | JAX | JAX / TF |\n|---|---|---|---|")
    for key, ratio in ratios.items():
        print(f"| {key} | {best['tensorflow'][key]:.3g} | {best['jax'][key]:.3g} | {ratio:.2f}x |")
    if args.output:
        with open(args.output, "w") as file:
            json.dump(result, file, indent=2)
    return result


if __name__ == "__main__":
    main()
