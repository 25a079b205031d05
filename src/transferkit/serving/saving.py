"""Saving and loading a classifier: one Keras ``.keras`` archive with transferkit's metadata.

The archive is what ``model.save`` writes, plus a ``transferkit.json`` entry with the
classifier's config, the backbone's facts, the freezing state and the history. The backbone's
facts travel with the file, so a model saved from a backbone registered in code (or by a plugin)
loads in a process where that name is not registered: the whole model is in the archive.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import keras
import tensorflow as tf

from transferkit import _backend
from transferkit._version import __version__
from transferkit.backbones import hub
from transferkit.backbones.registry import get_backbone
from transferkit.backbones.spec import Backbone
from transferkit.errors import DataError, InvalidArgumentError, UnknownBackboneError
from transferkit.history import TrainingHistory
from transferkit.model.config import ClassifierConfig

__all__ = ["METADATA_ENTRY", "Saved", "read", "write"]

#: The name of the transferkit metadata entry inside a saved ``.keras`` archive.
METADATA_ENTRY = "transferkit.json"
_FORMAT = 2
# The Backbone fields a loaded classifier needs when the name is not registered here.
_SPEC_FIELDS = (
    "name",
    "preprocessing",
    "default_image_size",
    "feature_channels",
    "family",
    "min_image_size",
    "parameters",
    "pooling",
)


@dataclass(frozen=True)
class Saved:
    """What a saved classifier is made of: its model and the state the classifier restores."""

    model: keras.Model
    config: ClassifierConfig
    spec: Backbone
    history: TrainingHistory
    unfrozen_from: int | None
    head_learning_rate: float
    thresholds: tuple[float, ...] | None
    temperature: float = 1.0


def write(saved: Saved, path: str | os.PathLike[str]) -> Path:
    """Writes a classifier to ``path`` through a temporary file renamed into place.

    In a multi-process run (``keras.distribution`` on JAX) only process 0 writes; every
    process holds the same weights and gets the path back.
    """
    target = Path(path)
    if target.suffix != ".keras":
        msg = f"The file name must end in '.keras'. Received: path={os.fspath(path)!r}"
        raise InvalidArgumentError(msg)
    if not target.parent.is_dir():
        msg = f"The folder to save into does not exist. Received: path={os.fspath(path)!r}"
        raise InvalidArgumentError(msg)
    with _backend.written_by_process_zero(target.parent) as folder:
        descriptor, temporary = tempfile.mkstemp(
            suffix=".keras", prefix=f".{target.stem}-", dir=folder
        )
        os.close(descriptor)
        try:
            # Every process serializes: reading the weights synchronizes the processes.
            saved.model.save(temporary)
            if _backend.is_process_zero():
                with zipfile.ZipFile(temporary, "a") as archive:
                    archive.writestr(METADATA_ENTRY, json.dumps(_metadata(saved), indent=2))
                os.replace(temporary, target)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.remove(temporary)
            raise
    return target


def read(path: str | os.PathLike[str], strategy: tf.distribute.Strategy | None) -> Saved:
    """Reads an archive written by :func:`write`, loading the model in the strategy's scope.

    Raises:
        DataError: the file does not exist or was not written by transferkit.
    """
    source = Path(path)
    if not source.is_file():
        msg = f"No saved classifier at {os.fspath(path)!r}. Received: path={os.fspath(path)!r}"
        raise DataError(msg)
    metadata = _read_metadata(source)
    if hub.is_hub_name(metadata["config"]["backbone"]):
        hub.import_keras_hub(f"Loading {os.fspath(path)!r}")  # registers its classes
    with _backend.scope(strategy):
        model = keras.saving.load_model(source, compile=False, safe_mode=True)
    unfrozen = metadata["unfrozen_from"]
    thresholds = metadata.get("thresholds")
    return Saved(
        model=model,
        config=ClassifierConfig.from_dict(metadata["config"]),
        spec=_spec(metadata["backbone_spec"]),
        history=TrainingHistory.from_dict(metadata["history"]),
        unfrozen_from=None if unfrozen is None else int(unfrozen),
        head_learning_rate=float(metadata["head_learning_rate"]),
        thresholds=None if thresholds is None else tuple(float(v) for v in thresholds),
        temperature=float(metadata.get("temperature", 1.0)),  # files before calibrate(): 1
    )


def _read_metadata(source: Path) -> dict[str, Any]:
    try:
        with zipfile.ZipFile(source) as archive:
            metadata: dict[str, Any] = json.loads(archive.read(METADATA_ENTRY))
    except (zipfile.BadZipFile, KeyError) as exc:
        msg = (
            f"{os.fspath(source)!r} is not a classifier saved by transferkit (no "
            f"{METADATA_ENTRY} inside). A plain Keras model loads with "
            "keras.saving.load_model()."
        )
        raise DataError(msg) from exc
    if metadata.get("format") != _FORMAT:
        msg = (
            f"{os.fspath(source)!r} was saved in transferkit file format "
            f"{metadata.get('format')!r}; this version reads format {_FORMAT}. Load it with "
            f"the transferkit version that wrote it ({metadata.get('transferkit_version')})."
        )
        raise DataError(msg)
    return metadata


def _metadata(saved: Saved) -> dict[str, Any]:
    return {
        "format": _FORMAT,
        "transferkit_version": __version__,
        "config": saved.config.to_dict(),
        "backbone_spec": {name: getattr(saved.spec, name) for name in _SPEC_FIELDS},
        "unfrozen_from": saved.unfrozen_from,
        "head_learning_rate": saved.head_learning_rate,
        "thresholds": None if saved.thresholds is None else list(saved.thresholds),
        "temperature": saved.temperature,
        "history": saved.history.to_dict(),
    }


def _spec(facts: dict[str, Any]) -> Backbone:
    # The registered spec if there is one (it can build new models); else the saved facts.
    try:
        return get_backbone(facts["name"])
    except UnknownBackboneError:
        # A keras-hub preset folder that is gone: its blocks are still found in the model.
        layout = hub.layout if hub.is_hub_name(facts["name"]) else None
        return Backbone(constructor=_not_registered(facts["name"]), layout=layout, **facts)


def _not_registered(name: str) -> Any:
    def constructor(**_: Any) -> keras.Model:
        msg = (
            f"The backbone {name!r} of this loaded classifier is not registered in this "
            "process, so a new one cannot be built; the loaded model itself works. Register "
            f"it (or install its plugin) to build new classifiers. Received: backbone={name!r}"
        )
        raise UnknownBackboneError(msg)

    return constructor
